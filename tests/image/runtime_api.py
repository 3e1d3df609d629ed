"""A test-only AWS Lambda Runtime API on loopback: hands out events, collects the answers.

It speaks the same HTTP protocol as Lambda's service and its Runtime Interface Emulator
(`/2018-06-01/runtime/invocation/next`, `.../{id}/response`, `.../{id}/error`,
`/runtime/init/error`), so the runtime interface client inside the image runs unmodified.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "/2018-06-01/runtime"


@dataclass
class Invocation:
    """One event handed to the function and, once it answered, its response or error."""

    request_id: str
    event: Any
    deadline_s: float
    done: threading.Event = field(default_factory=threading.Event)
    response: Any = None
    error: Any = None
    started: float = 0.0
    finished: float = 0.0

    @property
    def seconds(self) -> float:
        return self.finished - self.started


class RuntimeApi:
    """The server and its state; `invoke()` queues an event and waits for the answer."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._pending: queue.Queue[Invocation] = queue.Queue()
        self.invocations: dict[str, Invocation] = {}
        self.init_error: Any = None
        self.init_failed = threading.Event()
        self.polled = threading.Event()  # the client asked for its first event: init is over
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if self.path != f"{PREFIX}/invocation/next":
                    self._reply(404, {"errorMessage": "unknown path"})
                    return
                api.polled.set()
                invocation = api._pending.get()  # blocks, like Lambda's long poll
                invocation.started = time.perf_counter()
                body = json.dumps(invocation.event).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Lambda-Runtime-Aws-Request-Id", invocation.request_id)
                self.send_header(
                    "Lambda-Runtime-Deadline-Ms", str(int(invocation.deadline_s * 1000))
                )
                self.send_header(
                    "Lambda-Runtime-Invoked-Function-Arn",
                    "arn:aws:lambda:us-east-1:123456789012:function:hybridsphere",
                )
                self.send_header("Lambda-Runtime-Trace-Id", f"Root=1-{uuid.uuid4().hex[:24]}")
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                payload = self._json(self.rfile.read(length))
                if self.path == f"{PREFIX}/init/error":
                    api.init_error = payload
                    api.init_failed.set()
                    self._reply(202, {"status": "OK"})
                    return
                parts = self.path.removeprefix(f"{PREFIX}/invocation/").split("/")
                invocation = api.invocations.get(parts[0]) if len(parts) == 2 else None
                if invocation is None or parts[1] not in ("response", "error"):
                    self._reply(404, {"errorMessage": "unknown invocation"})
                    return
                if parts[1] == "response":
                    invocation.response = payload
                else:
                    invocation.error = payload
                invocation.finished = time.perf_counter()
                invocation.done.set()
                self._reply(202, {"status": "OK"})

            def _json(self, data: bytes) -> Any:
                try:
                    return json.loads(data) if data else None
                except json.JSONDecodeError:
                    return data.decode(errors="replace")

            def _reply(self, status: int, document: Any) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.address = f"{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> RuntimeApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def invoke(self, event: Any, timeout_s: float = 300.0) -> Invocation:
        """Queue `event`, wait for the function's answer (raises TimeoutError)."""
        invocation = Invocation(str(uuid.uuid4()), event, time.time() + timeout_s)
        self.invocations[invocation.request_id] = invocation
        self._pending.put(invocation)
        deadline = time.monotonic() + timeout_s
        while not invocation.done.wait(0.2):
            if self.init_failed.is_set():
                raise RuntimeError(f"the function failed to initialise: {self.init_error}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer to invocation {invocation.request_id}")
        return invocation
