"""Lambda's Invoke API on a local port: `POST /2015-03-31/functions/NAME/invocations`.

So boto3's `lambda.invoke(endpoint_url=...)` and the watcher's `invoke` trigger mode work with
no AWS. `RequestResponse` runs the handler and answers 200 with its JSON (plus
`X-Amz-Function-Error: Unhandled` when it failed), or 429 when every concurrency slot is busy,
as Lambda throttles; `Event` answers 202 at once and queues the event, retried twice on
failure like Lambda's asynchronous invocations; `DryRun` answers 204.

Unlike Lambda's, this API has no authentication: it binds loopback unless told otherwise, and
runs the function only for events about the configured input bucket (403
AccessDeniedException otherwise), since the function's credentials may reach other buckets.
"""

from __future__ import annotations

import base64
import heapq
import json
import re
import threading
import time
import uuid
from concurrent.futures import Executor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from typing import Any
from urllib.parse import unquote, urlsplit

from hybrid_common.logs import get_logger
from lambda_fn.s3_events import EventFormatError, S3Event, Source, SQSEvent, source_of
from local_stack.emulator.dedupe import DedupeRegistry, object_versions
from local_stack.emulator.environment_pool import Invocation, WorkerPool
from local_stack.emulator.sqs_source import InvocationLogger

log = get_logger(__name__)

_PATH = re.compile(r"/2015-03-31/functions/(?P<name>[^/]+)/invocations")
SYNC_PAYLOAD_LIMIT = 6 * 1024 * 1024  # Lambda's limits on request payloads
ASYNC_PAYLOAD_LIMIT = 256 * 1024
ASYNC_ATTEMPTS = 3  # the first try and Lambda's two retries


def function_name_of(name_or_arn: str) -> str:
    """`NAME`, `NAME:QUALIFIER`, or an ARN `arn:aws:lambda:R:A:function:NAME[:QUALIFIER]`."""
    parts = name_or_arn.split(":")
    if len(parts) >= 7 and parts[0] == "arn":
        return parts[6]
    if len(parts) >= 3 and parts[1] == "function":  # partial ARN `ACCOUNT:function:NAME`
        return parts[2]
    return parts[0]


def buckets_named(event: Any) -> set[str]:
    """Every bucket an S3 or SQS-wrapped S3 event names; records that cannot be read (the
    handler refuses those too) name none."""
    try:
        source = source_of(event)
    except EventFormatError:
        return set()
    if source is Source.TEST:
        return set()
    if source is Source.S3:
        events = [S3Event(event)]
    else:
        events = []
        for message in SQSEvent(event).records:
            try:
                events.append(message.s3_event)
            except EventFormatError:
                continue
    buckets = set()
    for s3_event in events:
        for record in s3_event.records:
            try:
                buckets.add(record.object.bucket)
            except EventFormatError:
                continue
    return buckets


def tail_log(outcome: Invocation) -> str:
    """What `X-Amz-Log-Type: Tail` returns: Lambda's START/END/REPORT lines, base64."""
    init = f"\tInit Duration: {outcome.init_ms:.2f} ms" if outcome.init_ms is not None else ""
    memory = f"\tMax Memory Used: {outcome.max_memory_mb:.0f} MB" if outcome.max_memory_mb else ""
    text = (
        f"START RequestId: {outcome.request_id} Version: $LATEST\n"
        f"END RequestId: {outcome.request_id}\n"
        f"REPORT RequestId: {outcome.request_id}\tDuration: {outcome.duration_ms:.2f} ms"
        f"{memory}{init}\n"
    )
    return base64.b64encode(text.encode()).decode()


@dataclass(order=True)
class _AsyncItem:
    not_before: float
    seq: int
    request_id: str = field(compare=False)
    event_json: str = field(compare=False)
    attempt: int = field(compare=False, default=1)


class AsyncInvoker:
    """Lambda's internal queue for `Event` invocations: run when a slot is free, retry twice."""

    def __init__(
        self,
        pool: WorkerPool,
        executor: Executor,
        dedupe: DedupeRegistry,
        on_invocation: InvocationLogger,
        *,
        timeout_s: int,
        retry_delay_s: float,
    ) -> None:
        self._pool = pool
        self._executor = executor
        self._dedupe = dedupe
        self._on_invocation = on_invocation
        self._timeout_s = timeout_s
        self._retry_delay_s = retry_delay_s
        self._heap: list[_AsyncItem] = []
        self._seq = count()
        self._cond = threading.Condition()

    def submit(self, request_id: str, event: Any) -> None:
        versions = object_versions(event)
        if not self._dedupe.claim(request_id, versions):
            log.info("event.duplicate", request_id=request_id, keys=[v[1] for v in versions])
            return
        self._push(_AsyncItem(time.monotonic(), next(self._seq), request_id, json.dumps(event)))

    def _push(self, item: _AsyncItem) -> None:
        with self._cond:
            heapq.heappush(self._heap, item)
            self._cond.notify()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def run(self, stop: threading.Event) -> None:
        """Dispatch queued events until `stop` is set (what is still queued is lost, logged)."""
        while not stop.is_set():
            with self._cond:
                now = time.monotonic()
                if not self._heap or self._heap[0].not_before > now:
                    wait = self._heap[0].not_before - now if self._heap else 0.5
                    self._cond.wait(min(wait, 0.5))
                    continue
                item = heapq.heappop(self._heap)
            while not self._pool.reserve(0.5):
                if stop.is_set():
                    self._push(item)
                    break
            else:
                self._executor.submit(self._invoke, item)
        if self.pending:
            log.warning("invoke.queue_dropped", events=self.pending)

    def _invoke(self, item: _AsyncItem) -> None:
        try:
            keys = [v[1] for v in object_versions(json.loads(item.event_json))]
            outcome = self._pool.invoke(item.request_id, item.event_json, self._timeout_s)
            self._on_invocation(outcome, "invoke-event", keys)
            if outcome.ok:
                return
            if item.attempt < ASYNC_ATTEMPTS:
                delay = self._retry_delay_s * item.attempt
                log.info(
                    "invoke.retry_scheduled",
                    request_id=item.request_id,
                    attempt=item.attempt,
                    delay_s=delay,
                )
                item.not_before, item.attempt = time.monotonic() + delay, item.attempt + 1
                self._push(item)
            else:
                log.warning("invoke.discarded", request_id=item.request_id, attempts=item.attempt)
        except Exception:  # a thread's error must not vanish
            log.exception("invocation.dispatch_failed", request_id=item.request_id)
        finally:
            self._pool.release()


class InvokeApi:
    """A threading HTTP server answering the Invoke API for one function name."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        function_name: str,
        input_bucket: str,
        pool: WorkerPool,
        invoker: AsyncInvoker,
        on_invocation: InvocationLogger,
        timeout_s: int,
    ) -> None:
        self.function_name = function_name
        self.input_bucket = input_bucket
        self.pool = pool
        self.invoker = invoker
        self.on_invocation = on_invocation
        self.timeout_s = timeout_s
        self._server = _Server((host, port), _Handler)
        self._server.api = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="invoke-api"
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    api: InvokeApi


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        api = self.server.api
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        match = _PATH.fullmatch(urlsplit(self.path).path)
        if match is None:
            self._error(404, "UnknownOperationException", f"Unknown operation {self.path}")
            return
        name = unquote(match["name"])
        if function_name_of(name) != api.function_name:
            self._error(404, "ResourceNotFoundException", f"Function not found: {name}")
            return
        invocation_type = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        limit = ASYNC_PAYLOAD_LIMIT if invocation_type == "Event" else SYNC_PAYLOAD_LIMIT
        if len(body) > limit:
            self._error(413, "RequestTooLargeException", f"payload over {limit} bytes")
            return
        try:
            event = json.loads(body or b"{}")
        except ValueError:
            self._error(400, "InvalidRequestContentException", "Could not parse request body")
            return
        foreign = buckets_named(event) - {api.input_bucket}
        if foreign:
            log.warning("invoke.refused", buckets=sorted(foreign), input_bucket=api.input_bucket)
            self._error(
                403,
                "AccessDeniedException",
                f"this local runtime runs the function only for input bucket "
                f"{api.input_bucket!r}; the event names {sorted(foreign)}",
            )
            return
        request_id = str(uuid.uuid4())
        if invocation_type == "DryRun":
            self._send(204, b"", request_id)
        elif invocation_type == "Event":
            api.invoker.submit(request_id, event)
            self._send(202, b"", request_id)
        elif invocation_type == "RequestResponse":
            self._invoke_sync(api, request_id, event)
        else:
            self._error(400, "InvalidParameterValueException", "Unknown invocation type")

    def _invoke_sync(self, api: InvokeApi, request_id: str, event: Any) -> None:
        if not api.pool.try_reserve():
            self._error(
                429,
                "TooManyRequestsException",
                "Rate Exceeded.",
                Reason="ReservedFunctionConcurrentInvocationLimitExceeded",
            )
            return
        try:
            keys = [v[1] for v in object_versions(event)]
            outcome = api.pool.invoke(request_id, json.dumps(event), api.timeout_s)
        finally:
            api.pool.release()
        api.on_invocation(outcome, "invoke-sync", keys)
        headers = {"X-Amz-Executed-Version": "$LATEST"}
        if not outcome.ok:
            headers["X-Amz-Function-Error"] = "Unhandled"
        if self.headers.get("X-Amz-Log-Type") == "Tail":
            headers["X-Amz-Log-Result"] = tail_log(outcome)
        self._send(200, outcome.payload.encode(), request_id, headers)

    def _error(self, status: int, error_type: str, message: str, **extra: str) -> None:
        body = json.dumps({"Type": "User", "message": message, **extra}).encode()
        self._send(status, body, str(uuid.uuid4()), {"X-Amzn-ErrorType": error_type})

    def _send(
        self, status: int, body: bytes, request_id: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Amzn-RequestId", request_id)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("invoke_api.request", line=format % args)
