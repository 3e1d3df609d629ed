"""`hybrid-local serve`: the Lambda service, locally, around the real handler.

It consumes the SQS queue the input bucket notifies (Lambda's SQS event source mapping) and
serves the Invoke API, running the handler in worker processes that scale with the backlog up
to `max_concurrency` and back to zero when idle. One JSON log line per invocation (request
id, keys, cold/warm, duration, peak memory) and a `scale.changed` line per change of scale.
Lifecycle as in uvicorn: `startup()`, `main_loop()`, `shutdown()`, a `should_exit` flag; the
first SIGTERM/SIGINT drains running invocations for `shutdown_grace_s`, a second SIGINT kills.
"""

from __future__ import annotations

import faulthandler
import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from hybrid_common.logs import get_logger
from local_stack.emulator.dedupe import DedupeRegistry
from local_stack.emulator.environment_pool import Invocation, Worker, WorkerPool
from local_stack.emulator.execution_env import EnvironmentSpec
from local_stack.emulator.invoke_api import AsyncInvoker, InvokeApi
from local_stack.emulator.settings import RuntimeSettings
from local_stack.emulator.sqs_source import SqsEventSource

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

log = get_logger(__name__)

_TICK_S = 0.25
# Environment variables Lambda sets in every execution environment.
_LAMBDA_ENV = ("AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_REGION")


def log_invocation(outcome: Invocation, source: str, keys: list[str]) -> None:
    """One line per invocation, with the figures of Lambda's REPORT line."""
    fields = {
        "request_id": outcome.request_id,
        "source": source,
        "key": keys[0] if len(keys) == 1 else None,
        "keys": keys if len(keys) > 1 else None,
        "cold": outcome.cold,
        "init_ms": outcome.init_ms,
        "duration_ms": outcome.duration_ms,
        "max_memory_mb": outcome.max_memory_mb,
        "pid": outcome.pid,
    }
    fields = {name: value for name, value in fields.items() if value is not None}
    if outcome.ok:
        log.info("invocation.completed", **fields)
    else:
        log.warning(
            "invocation.failed",
            **fields,
            status=outcome.status.value,
            error_type=outcome.error_type,
        )


class LocalRuntime:
    """The poller, the Invoke API and the worker pool, started and stopped together."""

    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings
        self.should_exit = threading.Event()
        self.force_exit = False
        self.exit_signal: str | None = None
        self._threads: list[threading.Thread] = []
        self._poll_stop = threading.Event()
        self.api: InvokeApi | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def run(self) -> int:
        self.install_signal_handlers()
        try:
            if not self.startup():
                return 0
            self.main_loop()
        finally:
            self.shutdown()
        return 0

    def install_signal_handlers(self) -> None:
        # `kill -USR1 PID` prints every thread's stack to stderr: how to see what a stuck
        # runtime is waiting for.
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        signal.signal(signal.SIGTERM, self.handle_exit)
        signal.signal(signal.SIGINT, self.handle_exit)

    def handle_exit(self, signum: int, _frame: FrameType | None) -> None:
        # Only flags here: a signal handler runs between two bytecodes of the main thread,
        # which may be holding the log stream's lock (logging here would deadlock).
        if self.should_exit.is_set() and signum == signal.SIGINT:
            self.force_exit = True
        self.exit_signal = signal.Signals(signum).name
        self.should_exit.set()

    def startup(self) -> bool:
        """Resolve the queue, start the pool, the poller and the API; False if told to stop."""
        s = self.settings
        self.sqs = self._sqs_client()
        queue = self._resolve_queue()
        if queue is None:
            return False
        queue_url, queue_arn, max_receive = queue
        spec = EnvironmentSpec(
            handler=s.handler,
            function_name=s.function_name,
            memory_mb=s.memory_mb,
            region=s.region,
            env=self._function_env(),
        )
        self.pool = WorkerPool(
            lambda: Worker(spec, s.init_timeout_s), s.max_concurrency, s.idle_scale_down_s
        )
        self.executor = ThreadPoolExecutor(s.max_concurrency, thread_name_prefix="invoke")
        dedupe = DedupeRegistry(s.dedupe_capacity)
        source = SqsEventSource(
            self.sqs,
            queue_url,
            queue_arn,
            region=s.region,
            pool=self.pool,
            executor=self.executor,
            dedupe=dedupe,
            on_invocation=log_invocation,
            batch_size=s.batch_size,
            poll_wait_s=s.poll_wait_s,
            function_timeout_s=s.function_timeout_s,
            max_receive_count=max_receive,
        )
        self.invoker = AsyncInvoker(
            self.pool,
            self.executor,
            dedupe,
            log_invocation,
            timeout_s=s.function_timeout_s,
            retry_delay_s=s.async_retry_delay_s,
        )
        self._start_thread("sqs-poller", source.run)
        self._start_thread("async-invoker", self.invoker.run)
        if s.invoke_api:
            self.api = InvokeApi(
                s.invoke_host,
                s.invoke_port,
                function_name=s.function_name,
                input_bucket=s.input_bucket,
                pool=self.pool,
                invoker=self.invoker,
                on_invocation=log_invocation,
                timeout_s=s.function_timeout_s,
            )
            self.api.start()
        log.info(
            "serve_local.ready",
            queue_url=queue_url,
            function_name=s.function_name,
            handler=s.handler,
            invoke_url=self.api.url if self.api else None,
            input_bucket=s.input_bucket,
            max_concurrency=s.max_concurrency,
            function_timeout_s=s.function_timeout_s,
            max_receive_count=max_receive,
        )
        return True

    def main_loop(self) -> None:
        """Scale idle environments down until told to stop (sleeps to the next tick)."""
        next_tick = time.monotonic()
        while not self.should_exit.is_set():
            self.pool.scale_down_idle()
            next_tick += _TICK_S
            self.should_exit.wait(max(0.0, next_tick - time.monotonic()))

    def shutdown(self) -> None:
        """Stop intake, let running invocations finish within the grace period, stop workers."""
        log.info("serve_local.stopping", signal=self.exit_signal, force=self.force_exit)
        self._poll_stop.set()
        if self.api is not None:
            self.api.stop()
        for thread in self._threads:
            # A receive in progress returns within the long-poll wait; its messages go back.
            thread.join(self.settings.poll_wait_s + 1)
        if hasattr(self, "pool"):
            self.pool.close(self.settings.shutdown_grace_s, abort=lambda: self.force_exit)
            self.executor.shutdown(wait=True)
        log.info("serve_local.stopped")

    # -- helpers -----------------------------------------------------------------------------
    def _start_thread(self, name: str, target: object) -> None:
        thread = threading.Thread(target=target, args=(self._poll_stop,), name=name, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _sqs_client(self) -> SQSClient:
        s = self.settings
        config = Config(
            region_name=s.region,
            # Few SDK retries: the poller retries with its own backoff, and a shutdown must
            # not wait behind a long series of reconnection attempts.
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=3,
            # Long polls hold a connection for poll_wait_s; deletes must not wait behind them.
            read_timeout=s.poll_wait_s + 30,
            max_pool_connections=s.max_concurrency + 4,
        )
        return boto3.session.Session().client("sqs", endpoint_url=s.endpoint_url, config=config)

    def _resolve_queue(self) -> tuple[str, str, int | None] | None:
        """(url, arn, maxReceiveCount); waits while the queue does not exist yet."""
        delay = 1.0
        while not self.should_exit.is_set():
            try:
                queue = self.settings.queue
                url = (
                    queue if "://" in queue else self.sqs.get_queue_url(QueueName=queue)["QueueUrl"]
                )
                attributes = self.sqs.get_queue_attributes(
                    QueueUrl=url, AttributeNames=["QueueArn", "RedrivePolicy"]
                )["Attributes"]
                redrive = json.loads(attributes.get("RedrivePolicy") or "{}")
                max_receive = int(redrive["maxReceiveCount"]) if redrive else None
                if max_receive is None:
                    log.warning("queue.no_dead_letter_queue", queue_url=url)
                return url, attributes["QueueArn"], max_receive
            except (BotoCoreError, ClientError) as error:
                log.warning("queue.waiting", queue=self.settings.queue, error=str(error))
                self.should_exit.wait(delay)
                delay = min(delay * 2, 10.0)
        return None

    def _function_env(self) -> dict[str, str]:
        """Lambda's own variables, plus the endpoint and region (set by flag or env): the
        function talks to the same cloud as its runtime."""
        s = self.settings
        values = (s.function_name, str(s.memory_mb), s.region)
        env = {**dict(zip(_LAMBDA_ENV, values, strict=True)), "AWS_DEFAULT_REGION": s.region}
        env["HYBRID_REGION"] = s.region
        if s.endpoint_url:
            env["HYBRID_ENDPOINT_URL"] = s.endpoint_url
        return env
