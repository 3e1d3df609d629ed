"""`hybrid-local cloud`: moto's server on loopback, provisioned, until Ctrl-C.

The embedded stand-in for AWS on one laptop: S3, DynamoDB and SQS over real HTTP, with the
input bucket notifying an SQS queue the way the real bucket triggers the function. It writes
the endpoint and resource names to `<state dir>/local-cloud.json` and a shell-sourceable
`local-cloud.env`, where the other commands (and people) find them.
"""

from __future__ import annotations

import shlex
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from hybrid_common.logs import get_logger
from hybrid_common.students import load_students, read_students
from local_stack.provision import Resources, make_clients, provision
from watcher.settings import WatcherSettings

log = get_logger(__name__)

STATE_FILE = "local-cloud.json"
ENV_FILE = "local-cloud.env"


@dataclass(frozen=True, slots=True)
class LocalCloudOptions:
    host: str = "127.0.0.1"
    port: int = 5055
    state_dir: Path = Path("var")
    students_file: Path | None = None
    known_faces_file: Path | None = None
    function_timeout_s: int = 900


def _check_loopback(host: str) -> None:
    # moto accepts any credentials: exposing it beyond this machine would be an open bucket.
    if host not in {"127.0.0.1", "localhost", "::1"} and not host.startswith("127."):
        raise ValueError(f"local-cloud only listens on loopback addresses, not {host!r}")


def write_state(state_dir: Path, resources: Resources) -> Path:
    """Write the JSON state and the `.env` file atomically; returns the JSON path."""
    state_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "HYBRID_ENDPOINT_URL": resources.endpoint_url or "",
        "HYBRID_REGION": resources.region,
        "HYBRID_INPUT_BUCKET": resources.input_bucket,
        "HYBRID_OUTPUT_BUCKET": resources.output_bucket,
        "HYBRID_TABLE": resources.table,
        "HYBRID_QUEUE": resources.queue,
        "HYBRID_KNOWN_FACES": resources.known_faces_uri,
    }
    lines = [f"export {name}={shlex.quote(value)}" for name, value in env.items() if value]
    # The JSON last: readers wait for it, then read both (the .env must already be there).
    for name, text in (
        (ENV_FILE, "\n".join(lines) + "\n"),
        (STATE_FILE, resources.to_json() + "\n"),
    ):
        tmp = state_dir / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(state_dir / name)
    return state_dir / STATE_FILE


class CannotListen(Exception):
    """moto's server could not bind its address."""


class MotoServer:
    """moto's server in a thread of this process, its socket bound before this returns.

    moto's own ThreadedMotoServer binds inside its thread and, if that fails (port taken),
    waits forever for a server that will never be ready: the process neither serves nor exits.
    Binding here raises OSError instead.
    """

    def __init__(self, host: str, port: int) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(
            host, port, app, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto")
        self._thread.daemon = True
        self._thread.start()

    def get_host_and_port(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()


def start_and_provision(
    settings: WatcherSettings, options: LocalCloudOptions
) -> tuple[MotoServer, Resources]:
    """Start moto's server and provision it; returns (server, resources). Caller stops server.

    Raises CannotListen if the port cannot be bound (taken, or not an address of this host).
    """
    _check_loopback(options.host)
    try:
        server = MotoServer(options.host, options.port)
    except OSError as error:
        raise CannotListen(f"{options.host}:{options.port}: {error.strerror or error}") from error
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        clients = make_clients(endpoint, settings.region)
        known = options.known_faces_file.read_bytes() if options.known_faces_file else None
        resources = provision(
            clients,
            Resources(
                endpoint_url=endpoint,
                region=settings.region,
                input_bucket=settings.input_bucket,
                output_bucket=settings.output_bucket,
                table=settings.table,
                queue=settings.queue,
            ),
            function_timeout_s=options.function_timeout_s,
            known_faces=known,
        )
        if options.students_file:
            load_students(clients.dynamodb, settings.table, read_students(options.students_file))
    except BaseException:
        server.stop()
        raise
    return server, resources


def run_local_cloud(settings: WatcherSettings, options: LocalCloudOptions) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit status (1: the port cannot be bound)."""
    try:
        server, resources = start_and_provision(settings, options)
    except CannotListen as error:
        log.error("local_cloud.cannot_listen", error=str(error))
        return 1
    state_path = write_state(options.state_dir, resources)
    stop = threading.Event()
    received: list[str] = []

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        # Only flags here: logging from a signal handler can deadlock on the output lock.
        received.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    log.info(
        "local_cloud.ready",
        endpoint=resources.endpoint_url,
        input_bucket=resources.input_bucket,
        output_bucket=resources.output_bucket,
        table=resources.table,
        queue_url=resources.queue_url,
        known_faces=resources.known_faces_uri or None,
        state=str(state_path),
    )
    try:
        stop.wait()
        log.info("local_cloud.stopping", signal=received[0] if received else None)
    finally:
        server.stop()
    return 0
