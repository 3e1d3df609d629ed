"""Execution environments as worker processes: spawned on demand, reused warm, reaped idle.

One `multiprocessing.Process` per environment with its own pipe, so a stuck or crashed one can
be killed and replaced alone (a ProcessPoolExecutor cannot kill one worker). The pool counts
reservations (invocations running or about to) against the concurrency limit, and logs
`scale.changed` whenever the number of live environments changes. An environment dies with
the runtime, however the runtime dies (kill -9 included): see `_environment_main`.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from enum import StrEnum
from itertools import count
from multiprocessing.connection import Connection, wait
from typing import Any

from hybrid_common.lifetime import die_with_parent
from hybrid_common.logs import get_logger
from local_stack.emulator.execution_env import (
    INIT_ERROR,
    READY,
    RESULT,
    EnvironmentSpec,
    worker_main,
)

log = get_logger(__name__)

# spawn: a fresh interpreter per environment, like a cold start, and safe from a process
# whose other threads hold locks (fork would copy them locked).
_CONTEXT = multiprocessing.get_context("spawn")
_STOP_JOIN_S = 5.0
_SILENT = object()  # no message before the timeout
_GONE = object()  # the worker died


class Status(StrEnum):
    OK = "ok"
    ERROR = "error"  # the handler raised: the environment stays warm
    CRASH = "crash"  # the process died: replaced
    TIMEOUT = "timeout"  # killed at the time limit: replaced


@dataclass(frozen=True, slots=True)
class Invocation:
    """How one invocation ended, with Lambda's REPORT figures."""

    request_id: str
    status: Status
    payload: str  # the handler's JSON result, or Lambda's error JSON
    duration_ms: float
    cold: bool
    init_ms: float | None = None
    max_memory_mb: float | None = None
    pid: int | None = None

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    @property
    def error_type(self) -> str | None:
        if self.ok:
            return None
        try:
            return str(json.loads(self.payload).get("errorType", "Unhandled"))
        except (ValueError, AttributeError):
            return "Unhandled"


def _environment_main(runtime_pid: int, conn: Connection, spec: EnvironmentSpec) -> None:
    """An environment's entry point: killed by the kernel if the runtime dies.

    Its pipe alone is not enough: a handler busy on a video reads it only when done.
    """
    die_with_parent(signal.SIGKILL, runtime_pid)
    worker_main(conn, spec)


def _runtime_error(request_id: str, error_type: str, message: str) -> str:
    return json.dumps(
        {"errorType": error_type, "errorMessage": f"RequestId: {request_id} Error: {message}"}
    )


class Worker:
    """One execution environment (a worker process) seen from the runtime."""

    _ids = count(1)

    def __init__(self, spec: EnvironmentSpec, init_timeout_s: float) -> None:
        self.number = next(self._ids)
        # Lambda gives each environment its own /tmp, kept while warm: so do we.
        self.tmp_dir = tempfile.mkdtemp(prefix=f"hybrid-lambda-env{self.number}-")
        env = {**spec.env, "HYBRID_TMP_DIR": self.tmp_dir, "TMPDIR": self.tmp_dir}
        # The runtime's concurrency already spreads videos over the cores; an environment's
        # own recognition pool would only oversubscribe them (unless set explicitly).
        env.setdefault("HYBRID_WORKERS", os.environ.get("HYBRID_WORKERS", "1"))
        self._conn, child_conn = _CONTEXT.Pipe()
        self.process = _CONTEXT.Process(
            target=_environment_main,
            args=(os.getpid(), child_conn, replace(spec, env=env)),
            name=f"lambda-env-{self.number}",
        )
        self.process.start()
        child_conn.close()
        self._init_timeout_s = init_timeout_s
        self._ready = False
        self._init_ms: float | None = None
        self.last_used = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def invoke(
        self,
        request_id: str,
        event_json: str,
        timeout_s: float,
        on_cold_start: Callable[[], None] | None = None,
    ) -> Invocation:
        """Run one invocation; blocks until it ends, crashes or times out.

        `on_cold_start` is called once a new environment has finished its init phase, just
        before the handler starts (the SQS source restarts its messages' visibility clock).
        """
        cold = not self._ready
        started = time.perf_counter()
        if not self._ready:
            failure = self._wait_ready(request_id)
            if failure is not None:
                return failure
            if on_cold_start is not None:
                on_cold_start()
            started = time.perf_counter()  # the time limit starts after the init phase
        try:
            self._conn.send(("invoke", request_id, event_json, int(timeout_s * 1000)))
        except OSError:
            return self._crashed(request_id, started, cold)
        message = self._receive(timeout_s)
        if message is _SILENT:
            self.terminate()
            return self._outcome(
                request_id,
                Status.TIMEOUT,
                _runtime_error(
                    request_id, "Sandbox.Timedout", f"Task timed out after {timeout_s:.2f} seconds"
                ),
                (time.perf_counter() - started) * 1000,
                cold,
            )
        if not isinstance(message, tuple) or message[0] != RESULT:
            return self._crashed(request_id, started, cold)
        _, _, ok, payload, duration_ms, max_rss_kb = message
        return self._outcome(
            request_id,
            Status.OK if ok else Status.ERROR,
            payload,
            duration_ms,
            cold,
            max_memory_mb=round(max_rss_kb / 1024, 1),
        )

    def _wait_ready(self, request_id: str) -> Invocation | None:
        started = time.perf_counter()
        message = self._receive(self._init_timeout_s)
        if isinstance(message, tuple) and message[0] == READY:
            self._ready, self._init_ms = True, float(message[1])
            return None
        elapsed = (time.perf_counter() - started) * 1000
        if isinstance(message, tuple) and message[0] == INIT_ERROR:
            error = json.loads(str(message[1]))
            payload = _runtime_error(
                request_id,
                "Runtime.ImportModuleError",
                f"{error.get('errorType')}: {error.get('errorMessage')}",
            )
            self.terminate()
            return self._outcome(request_id, Status.CRASH, payload, elapsed, True)
        if message is _SILENT:
            self.terminate()
            payload = _runtime_error(
                request_id, "Runtime.InitTimeout", f"init exceeded {self._init_timeout_s:.0f} s"
            )
            return self._outcome(request_id, Status.TIMEOUT, payload, elapsed, True)
        return self._crashed(request_id, started, True)

    def _receive(self, timeout_s: float) -> tuple[Any, ...] | object:
        """The worker's next message, or _GONE if it died, or _SILENT after the timeout."""
        # The sentinel matters: a process the handler forked may hold the pipe open, so a
        # dead worker does not always mean end-of-file on the pipe.
        ready = wait([self._conn, self.process.sentinel], timeout_s)
        if not ready:
            return _SILENT
        if self._conn.poll():
            try:
                message: tuple[Any, ...] = self._conn.recv()
            except (EOFError, OSError):
                return _GONE
            return message
        return _GONE

    def _crashed(self, request_id: str, started: float, cold: bool) -> Invocation:
        self.process.join(1.0)
        code = self.process.exitcode
        how = (
            f"signal: {signal.Signals(-code).name}" if code and code < 0 else f"exit status {code}"
        )
        self.terminate()  # the handler's own children, if any
        return self._outcome(
            request_id,
            Status.CRASH,
            _runtime_error(request_id, "Runtime.ExitError", f"Runtime exited with error: {how}"),
            (time.perf_counter() - started) * 1000,
            cold,
        )

    def _outcome(
        self,
        request_id: str,
        status: Status,
        payload: str,
        duration_ms: float,
        cold: bool,
        *,
        max_memory_mb: float | None = None,
    ) -> Invocation:
        self.last_used = time.monotonic()
        return Invocation(
            request_id=request_id,
            status=status,
            payload=payload,
            duration_ms=round(duration_ms, 1),
            cold=cold,
            init_ms=round(self._init_ms, 1) if cold and self._init_ms is not None else None,
            max_memory_mb=max_memory_mb,
            pid=self.pid,
        )

    def stop(self) -> None:
        """Ask the worker to exit after its current invocation; kill it if it does not."""
        with contextlib.suppress(OSError):
            self._conn.send(None)
        self.process.join(_STOP_JOIN_S)
        self.kill()

    def kill(self) -> None:
        """Kill the worker and its process group now; release its pipe and /tmp."""
        self.terminate()
        self._conn.close()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def terminate(self) -> None:
        """Kill the worker's process group; the thread running its invocation sees a crash."""
        pid = self.process.pid
        if pid is None:
            return
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            # Not (yet) a group leader: the worker had not run setpgrp when killed.
            if self.process.exitcode is None:
                self.process.kill()
        self.process.join(_STOP_JOIN_S)


class WorkerPool:
    """Environments for up to `limit` concurrent invocations; thread-safe."""

    def __init__(
        self,
        factory: Callable[[], Worker],
        limit: int,
        idle_scale_down_s: float,
    ) -> None:
        self._factory = factory
        # Environments are started from this one thread, which lives as long as the pool: the
        # kernel's parent-death signal follows the thread that forked, and the threads that
        # invoke come and go (the Invoke API starts one per request).
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="env-spawner")
        self.limit = limit
        self._idle_s = idle_scale_down_s
        self._cond = threading.Condition()
        self._idle: list[Worker] = []  # most recently used last: reused first, like Lambda
        self._all: set[Worker] = set()
        self._live = 0  # environments alive or being started
        self._reserved = 0
        self._closed = False

    # -- capacity ----------------------------------------------------------------------------
    def try_reserve(self) -> bool:
        """Take a concurrency slot if one is free (the synchronous Invoke API: 429 if not)."""
        with self._cond:
            if self._closed or self._reserved >= self.limit:
                return False
            self._reserved += 1
            return True

    def reserve(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for a concurrency slot."""
        with self._cond:
            if not self._cond.wait_for(
                lambda: self._closed or self._reserved < self.limit, timeout_s
            ):
                return False
            if self._closed:
                return False
            self._reserved += 1
            return True

    def wait_for_capacity(self, timeout_s: float) -> bool:
        """True once a slot is free, without taking it (pollers receive only then)."""
        with self._cond:
            return (
                self._cond.wait_for(lambda: self._closed or self._reserved < self.limit, timeout_s)
                and not self._closed
            )

    def release(self) -> None:
        with self._cond:
            self._reserved -= 1
            self._cond.notify_all()

    @property
    def live(self) -> int:
        with self._cond:
            return self._live

    @property
    def reserved(self) -> int:
        with self._cond:
            return self._reserved

    # -- invocations -------------------------------------------------------------------------
    def invoke(
        self,
        request_id: str,
        event_json: str,
        timeout_s: float,
        on_cold_start: Callable[[], None] | None = None,
    ) -> Invocation:
        """Run an invocation in a warm environment, or a new one; caller holds a reservation."""
        with self._cond:
            worker = self._idle.pop() if self._idle else None
            if worker is None:
                self._scale(+1, "backlog")
        if worker is None:
            try:
                worker = self._spawner.submit(self._factory).result()
            except BaseException:
                with self._cond:
                    self._scale(-1, "spawn_failed")
                raise
            with self._cond:
                self._all.add(worker)
        outcome = worker.invoke(request_id, event_json, timeout_s, on_cold_start)
        if outcome.status in (Status.OK, Status.ERROR):
            with self._cond:
                if not self._closed:
                    self._idle.append(worker)
                    return outcome
        self._retire(worker, reason=outcome.status.value)
        return outcome

    def scale_down_idle(self) -> int:
        """Stop environments idle longer than the idle period; returns how many."""
        now = time.monotonic()
        with self._cond:
            expired = [w for w in self._idle if now - w.last_used >= self._idle_s]
            self._idle = [w for w in self._idle if w not in expired]
        for worker in expired:
            self._retire(worker, reason="idle", graceful=True)
        return len(expired)

    def close(self, grace_s: float, abort: Callable[[], bool] = lambda: False) -> None:
        """Refuse new work, wait up to `grace_s` for running invocations (until `abort()`
        says stop waiting), then stop everything."""
        deadline = time.monotonic() + grace_s
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            drained = self._reserved == 0
            while not drained and not abort() and (left := deadline - time.monotonic()) > 0:
                # In slices: a second Ctrl-C only sets a flag, it cannot notify us.
                drained = self._cond.wait_for(lambda: self._reserved == 0, min(left, 0.2))
            idle, self._idle = self._idle, []
            busy = [w for w in self._all if w not in idle]
        if not drained:
            log.warning("serve_local.grace_expired", running=len(busy), grace_s=grace_s)
        for worker in busy:
            # Its invocation ends as a crash (the running thread retires it); the message
            # becomes visible again and is retried by the next runtime.
            worker.terminate()
        for worker in idle:
            self._retire(worker, reason="shutdown", graceful=True)
        # Last: an environment whose spawning thread exits is killed by the kernel.
        self._spawner.shutdown(wait=False)

    def _retire(self, worker: Worker, *, reason: str, graceful: bool = False) -> None:
        if graceful:
            worker.stop()
        else:
            worker.kill()
        with self._cond:
            if worker in self._all:
                self._all.discard(worker)
                self._scale(-1, reason)

    def _scale(self, delta: int, reason: str) -> None:
        """Change the live count and say so; called with the lock held, so events are ordered."""
        previous = self._live
        self._live += delta
        log.info(
            "scale.changed",
            concurrency=self._live,
            previous=previous,
            reason=reason,
            running=self._reserved,
            limit=self.limit,
        )
