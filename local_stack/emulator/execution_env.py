"""The inside of one local execution environment: a worker process that runs the handler.

Like a Lambda execution environment it imports the handler once (the init phase), then runs
invocations one at a time, reusing module-level state while warm. It speaks to the runtime
over a pipe; anything it cannot report (a crash, a hang) the runtime sees from outside.
This module is imported in the worker, so it stays light: no boto3, no logging setup.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

Handler = Callable[[Any, Any], Any]

# Messages on the pipe (tuples, pickled by multiprocessing):
#   runtime → worker: ("invoke", request_id, event_json, timeout_ms) | None (shut down)
#   worker → runtime: ("ready", init_ms) | ("init_error", error_json)
#                     ("result", request_id, ok, payload_json, duration_ms, max_rss_kb)
READY = "ready"
INIT_ERROR = "init_error"
RESULT = "result"


@dataclass(frozen=True, slots=True)
class EnvironmentSpec:
    """What a worker needs to start; picklable (spawn start method)."""

    handler: str
    function_name: str
    memory_mb: int
    region: str
    env: dict[str, str]


class InvocationContext:
    """The `context` argument, with the attributes and method of Lambda's Python runtime."""

    function_version = "$LATEST"
    identity = None
    client_context = None

    def __init__(self, spec: EnvironmentSpec, request_id: str, timeout_ms: int) -> None:
        self.aws_request_id = request_id
        self.function_name = spec.function_name
        # awslambdaric passes the environment variable through: a string.
        self.memory_limit_in_mb = str(spec.memory_mb)
        self.invoked_function_arn = (
            f"arn:aws:lambda:{spec.region}:000000000000:function:{spec.function_name}"
        )
        self.log_group_name = f"/aws/lambda/{spec.function_name}"
        self.log_stream_name = f"local/{os.getpid()}"
        self._deadline = time.monotonic() + timeout_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_handler(path: str) -> Handler:
    """Import `package.module.function` (or `module:function`) and return the function."""
    module_name, _, attribute = path.replace(":", ".").rpartition(".")
    function = getattr(importlib.import_module(module_name), attribute)
    if not callable(function):
        raise TypeError(f"{path} is not callable")
    return function  # type: ignore[no-any-return]


def error_payload(error: BaseException, request_id: str) -> str:
    """Lambda's JSON for an unhandled exception."""
    return json.dumps(
        {
            "errorMessage": str(error),
            "errorType": type(error).__name__,
            "requestId": request_id,
            "stackTrace": traceback.format_tb(error.__traceback__),
        }
    )


def _marshal_error(error: Exception, request_id: str) -> str:
    return json.dumps(
        {
            "errorMessage": f"Unable to marshal response: {error}",
            "errorType": "Runtime.MarshalError",
            "requestId": request_id,
            "stackTrace": [],
        }
    )


def _max_rss_kb() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # kilobytes on Linux


def worker_main(conn: Connection, spec: EnvironmentSpec) -> None:
    """Entry point of the worker process (multiprocessing target)."""
    # Own process group: the runtime kills the whole group on a timeout, so processes the
    # handler started die with it; and Ctrl-C on a terminal reaches only the runtime, which
    # lets running invocations finish.
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(spec.env)
    started = time.perf_counter()
    try:
        handler = load_handler(spec.handler)
    except Exception as error:  # anything the import raises is the function's init error
        conn.send((INIT_ERROR, error_payload(error, "")))
        raise SystemExit(1) from error
    conn.send((READY, (time.perf_counter() - started) * 1000))
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the runtime went away: nothing more will come
            return
        if message is None:
            return
        _, request_id, event_json, timeout_ms = message
        conn.send(_invoke(handler, spec, request_id, event_json, timeout_ms))


def _invoke(
    handler: Handler, spec: EnvironmentSpec, request_id: str, event_json: str, timeout_ms: int
) -> tuple[str, str, bool, str, float, int]:
    context = InvocationContext(spec, request_id, timeout_ms)
    started = time.perf_counter()
    try:
        result = handler(json.loads(event_json), context)
    except Exception as error:  # the function's error, reported like Lambda reports it
        payload, ok = error_payload(error, request_id), False
    else:
        try:
            payload, ok = json.dumps(result), True
        except (TypeError, ValueError) as error:
            payload, ok = _marshal_error(error, request_id), False
    duration_ms = (time.perf_counter() - started) * 1000
    return (RESULT, request_id, ok, payload, duration_ms, _max_rss_kb())
