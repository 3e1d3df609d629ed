"""`hybrid-local demo`: the whole pipeline on one machine, as three supervised processes.

local cloud (moto's server, provisioned) → `hybrid-lambda serve-local` (the real handler in
Lambda-like worker processes) → `hybrid-watcher run` (the daemon, staging root under
`./var`). They run as separate processes, as in production: a part that dies is restarted
while the others keep their state, and Ctrl-C stops all three, watcher first. With
`--samples DIR` it also drops the videos in DIR, waits for their results, prints a table and
exits 0 only if all are correct.

No part outlives the supervisor: each is told by the kernel (parent-death signal) to stop when
the supervisor goes, however it goes (Ctrl-C, SIGTERM, SIGHUP, kill -9), and the runtime's
execution environments likewise die with the runtime.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from hybrid_common.config import EX_CONFIG
from hybrid_common.lifetime import preexec_die_with_parent
from hybrid_common.logs import configure_logging, get_logger
from hybrid_common.students import read_students
from local_stack.cloud import ENV_FILE, STATE_FILE
from local_stack.expectations import (
    ExpectationError,
    expected_from_table,
    read_expectations,
    render_mapping,
)

log = get_logger(__name__)

# The demo's settings for the CLI (watcher.settings.DEMO_CONFIG_FILE is var/ + this name).
WATCHER_CONFIG_FILE = "hybrid-watcher.toml"
RESTART_DELAY_S = 1.0
# A part that keeps dying is a bug to look at, not something to hammer on forever.
MAX_RESTARTS_PER_MINUTE = 5
STOP_TIMEOUT_S = 60.0
# A terminal's Ctrl-C reaches the supervisor twice: from the terminal (the whole foreground
# group gets SIGINT) and again from `uv run`, which forwards it. A SIGINT this soon after the
# first is the same Ctrl-C; only a later one forces the stop.
SAME_CTRL_C_S = 1.0


@dataclass
class Part:
    """One supervised process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self) -> None:
        # Own session: Ctrl-C reaches only the supervisor, which then stops parts in order.
        # SIGTERM when the supervisor dies (even by kill -9): the part stops as if told to.
        # Only the main thread starts parts: the signal follows the thread that forked.
        self.process = subprocess.Popen(  # noqa: S603 - argv is built here from sys.executable
            self.argv,
            env=self.env,
            start_new_session=True,
            preexec_fn=preexec_die_with_parent(signal.SIGTERM),  # noqa: PLW1509 - prctl only
        )
        log.info("demo.part_started", part=self.name, pid=self.process.pid)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("demo.part_killed", part=self.name, after_s=STOP_TIMEOUT_S)
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the part's whole process group (it leads its own session); no waiting."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)


def write_watcher_config(state_dir: Path, cloud_env: dict[str, str]) -> Path:
    """`<state dir>/hybrid-watcher.toml`: the demo's settings, for commands run beside it.

    `hybrid-watcher status|submit|show` and `hybrid-local workload`, run from the folder that
    holds `var/`, find it (watcher.settings' search order) and act on this demo.
    """
    from watcher.settings import WatcherSettings

    values = {"staging_root": str(state_dir)}
    for variable, value in cloud_env.items():
        name = variable.removeprefix("HYBRID_").lower()
        if name in WatcherSettings.model_fields:  # known_faces is the function's, not ours
            values[name] = value
    lines = ["# Written by `hybrid-local demo` at each start; the demo's local cloud and folders."]
    # A JSON string is a valid TOML basic string (same escapes).
    lines += [f"{name} = {json.dumps(value)}" for name, value in values.items()]
    path = state_dir / WATCHER_CONFIG_FILE
    tmp = state_dir / f".{WATCHER_CONFIG_FILE}.tmp"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_env_file(path: Path) -> dict[str, str]:
    """The `export NAME=value` lines local-cloud writes (values are shell-quoted)."""
    env = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            env[name] = value
    return env


class Demo:
    """Starts, watches and stops the three parts."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.state_dir: Path = args.state_dir.resolve()
        self.should_exit = threading.Event()
        self.first_signal_at: float | None = None
        self.parts: list[Part] = []

    def base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        # moto accepts any credentials; dummies keep the SDKs from searching further. Only
        # for this loopback-only demo, and only when none are set.
        env.setdefault("AWS_ACCESS_KEY_ID", "local")
        env.setdefault("AWS_SECRET_ACCESS_KEY", "local-not-a-secret")
        env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        env["HYBRID_STAGING_ROOT"] = str(self.state_dir)
        return env

    def start_cloud(self) -> dict[str, str] | None:
        state = self.state_dir / STATE_FILE
        state.unlink(missing_ok=True)
        (self.state_dir / WATCHER_CONFIG_FILE).unlink(missing_ok=True)  # a stale endpoint
        argv = [sys.executable, "-m", "local_stack", "cloud", "--port", str(self.args.port)]
        argv += ["--state-dir", str(self.state_dir)]
        if self.args.students:
            argv += ["--students", str(self.args.students)]
        if self.args.known_faces:
            argv += ["--known-faces", str(self.args.known_faces)]
        cloud = Part("local-cloud", argv, self.base_env())
        self.parts.append(cloud)  # listed before it runs: a signal now still finds it
        cloud.start()
        deadline = time.monotonic() + 60
        while not state.exists():
            if self.should_exit.is_set():
                return None  # Ctrl-C during start-up: stop now, not once the cloud is up
            if not cloud.running() or time.monotonic() > deadline:
                raise RuntimeError("the local cloud did not come up (see its log above)")
            time.sleep(0.1)
        cloud_env = read_env_file(self.state_dir / ENV_FILE)
        write_watcher_config(self.state_dir, cloud_env)
        return {**self.base_env(), **cloud_env}

    def start(self) -> None:
        env = self.start_cloud()
        if env is None:
            return
        runtime_argv = [sys.executable, "-m", "local_stack", "serve"]
        runtime_argv += ["--cloud-state", str(self.state_dir / STATE_FILE)]
        if self.args.port == 0:
            # Any free port for the cloud, so for the Invoke API too: two demos (tests running
            # side by side) would otherwise both want 9001, and one's runtime would keep dying.
            runtime_argv += ["--invoke-port", "0"]
        self.parts.append(Part("serve-local", runtime_argv, env))
        self.parts.append(Part("watcher", [sys.executable, "-m", "watcher", "run"], env))
        for part in self.parts[1:]:
            part.start()

    def supervise_once(self) -> None:
        """Restart any part that died on its own (the others keep their state)."""
        now = time.monotonic()
        for part in self.parts:
            if part.running() or self.should_exit.is_set():
                continue
            code = part.process.returncode if part.process else None
            part.restarts = [t for t in part.restarts if now - t < 60]
            if len(part.restarts) >= MAX_RESTARTS_PER_MINUTE:
                log.error("demo.part_failing", part=part.name, exit_status=code)
                self.should_exit.set()
                return
            log.warning("demo.part_exited", part=part.name, exit_status=code)
            part.restarts.append(now)
            time.sleep(RESTART_DELAY_S)
            part.start()

    def stop(self) -> None:
        # Watcher first (it drains), then the runtime, then the cloud they both talk to.
        for part in reversed(self.parts):
            code = part.stop()
            # A closed terminal (SIGHUP) makes writing fail: stopping the parts must not.
            with contextlib.suppress(OSError):
                log.info("demo.part_stopped", part=part.name, exit_status=code)

    def handle_signal(self, signum: int) -> None:
        """First signal: stop in order. A SIGINT after the same-Ctrl-C window: force."""
        now = time.monotonic()
        if self.first_signal_at is None:
            self.first_signal_at = now
            self.should_exit.set()
            return
        if signum == signal.SIGINT and now - self.first_signal_at > SAME_CTRL_C_S:
            self.force_stop()

    def force_stop(self) -> None:
        """Second Ctrl-C: kill every part now and leave (no orderly stop, no waiting)."""
        for part in self.parts:
            part.kill()  # the runtime's environments die with it (their parent-death signal)
        # os.write, not print or a log line: we are in a signal handler, and the main thread
        # may be halfway through writing to stderr (a reentrant write raises).
        with contextlib.suppress(OSError):
            os.write(sys.stderr.fileno(), b"demo: forced stop; parts killed\n")
        os._exit(130)

    def status_command(self) -> str:
        """How to reach this demo from another terminal (watcher.settings' search order)."""
        if self.state_dir == (Path.cwd() / "var").resolve():
            return "hybrid-watcher status   (in this folder: it reads var/hybrid-watcher.toml)"
        return f"HYBRID_CONFIG={self.state_dir / WATCHER_CONFIG_FILE} hybrid-watcher status"

    def explain(self) -> None:
        inbox = self.state_dir / "inbox"
        print(
            f"\nHybridSphere is running on this machine.\n"
            f"  Drop videos into   {inbox}\n"
            f"  Results appear in  {self.state_dir / 'done'}  (video + .csv + .json + .faces.jpg)\n"
            f"  Problems go to     {self.state_dir / 'failed'} and {self.state_dir / 'rejected'}\n"
            f"  See progress with  {self.status_command()}\n"
            f"  Stop with Ctrl-C.\n",
            flush=True,
        )


def _expectations_for(args: argparse.Namespace) -> Path | None:
    """Expected answers for --samples, in the table's own words (see `workload`)."""
    given: Path | None = args.expect
    if given is None or args.students is None:
        return given  # nothing to reconcile the mapping with
    expected, notes = expected_from_table(read_expectations(given), read_students(args.students))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    path: Path = args.state_dir / "samples.expected"
    path.write_text(render_mapping(expected), encoding="utf-8")
    return path


HOW_TO_GET_KNOWN_FACES = (
    "use the shipped sample (--known-faces samples/known_faces.json, as `make demo` does "
    "without the course data) or build one: hybrid-lambda faces build PHOTO_DIR -o FILE"
)


def known_faces_problem(path: Path | None) -> str | None:
    """Why the demo cannot start with this known-faces file, or None if it is usable."""
    if path is None:
        return f"no known faces given: {HOW_TO_GET_KNOWN_FACES}"
    from lambda_fn.known_faces import KnownFaces, KnownFacesError

    try:
        known = KnownFaces.load(path)
    except KnownFacesError as error:
        return f"{error}; {HOW_TO_GET_KNOWN_FACES}"
    if not len(known):
        return f"{path} holds no faces; {HOW_TO_GET_KNOWN_FACES}"
    return None


def run_samples(demo: Demo, samples: Path, expect: Path | None) -> int:
    """Drop the samples through the inbox and grade what comes back."""
    from local_stack.workload import Options, print_report, run_workload
    from watcher.settings import WatcherSettings

    env = read_env_file(demo.state_dir / ENV_FILE)
    os.environ.update({**env, "HYBRID_STAGING_ROOT": str(demo.state_dir)})
    settings = WatcherSettings()
    options = Options(cases_dir=samples, expect=expect, timeout_s=demo.args.timeout)
    report = run_workload(settings, options)
    print_report(report)
    return 0 if report.ok else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", type=Path, default=Path("var"), help="staging root")
    parser.add_argument("--port", type=int, default=5055, help="local cloud port (0: any)")
    parser.add_argument("--students", type=Path, help="students JSON for the table")
    parser.add_argument("--known-faces", type=Path, help="known-faces file for the function")
    parser.add_argument(
        "--samples", type=Path, help="drop these videos, print their results, then exit"
    )
    parser.add_argument("--expect", type=Path, help="expected results for --samples")
    parser.add_argument("--timeout", type=float, default=600.0, help="--samples: give up after")


def cmd_demo(args: argparse.Namespace) -> int:
    configure_logging("info", json=None, stream=sys.stderr)
    # Without known faces every video would only come back as an error: say so and stop.
    if (problem := known_faces_problem(args.known_faces)) is not None:
        print(f"demo: {problem}", file=sys.stderr)
        return EX_CONFIG
    args.state_dir.mkdir(parents=True, exist_ok=True)
    try:
        expect = _expectations_for(args) if args.samples else None
    except (ExpectationError, ValueError) as error:
        print(f"demo: {error}", file=sys.stderr)
        return 2
    demo = Demo(args)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        demo.handle_signal(signum)

    # SIGHUP: the terminal closed; stop as for Ctrl-C rather than die and leave the parts.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    status = 0
    try:
        demo.start()
        if args.samples:
            outcome: list[int] = []
            worker = threading.Thread(
                target=lambda: outcome.append(run_samples(demo, args.samples, expect)),
                daemon=True,
            )
            worker.start()
            while worker.is_alive() and not demo.should_exit.is_set():
                demo.supervise_once()
                worker.join(0.5)
            status = outcome[0] if outcome else 1
        else:
            demo.explain()
            while not demo.should_exit.wait(0.5):
                demo.supervise_once()
    except RuntimeError as error:
        print(f"demo: {error}", file=sys.stderr)
        status = 1
    finally:
        demo.stop()
    return status
