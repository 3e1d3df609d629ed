"""README command 1 as a real process tree: `hybrid-local demo`, supervised parts, signals.

However the demo is stopped (Ctrl-C through `uv run`, kill -9, SIGTERM, SIGHUP, a second
Ctrl-C, Ctrl-C during start-up, a port already taken), no process of its tree outlives it:
every descendant seen while it ran is gone a few seconds later, and its port is free again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def known_faces(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("faces") / "known_faces.json"
    subprocess.run(
        [sys.executable, "-m", "lambda_fn", "faces", "import-pickle",
         str(shared_data / "cse546" / "encoding"), "-o", str(out)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return out


# The Invoke API on a free port: the demo's default (9001) may be held by another demo on this
# machine, and these tests are about the demo's own processes.
DEMO_ENV = {**os.environ, "HYBRID_INVOKE_PORT": "0"}


def demo_argv(state_dir: Path, known_faces: Path, shared_data: Path) -> list[str]:
    return [
        sys.executable, "-m", "local_stack", "demo", "--state-dir", str(state_dir), "--port", "0",
        "--known-faces", str(known_faces),
        "--students", str(shared_data / "cse546" / "student_data.json"),
    ]  # fmt: skip


@pytest.mark.shared_data
def test_demo_samples_all_correct(shared_data: Path, known_faces: Path, tmp_path: Path) -> None:
    argv = demo_argv(tmp_path / "var", known_faces, shared_data)
    argv += ["--samples", str(shared_data / "cse546" / "test_case_1")]
    argv += ["--expect", str(shared_data / "cse546" / "mapping"), "--timeout", "300"]
    result = subprocess.run(
        argv, check=False, capture_output=True, text=True, timeout=540, cwd=tmp_path, env=DEMO_ENV
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "correct=8 wrong=0 missing=0" in result.stdout
    assert len(list((tmp_path / "var" / "done").glob("*.csv"))) == 8


def part_pids(log_lines: list[str]) -> dict[str, int]:
    pids = {}
    for line in log_lines:
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == "demo.part_started":
                pids[event["part"]] = event["pid"]  # the latest start wins
    return pids


@pytest.mark.shared_data
def test_killed_watcher_is_restarted_and_the_cloud_keeps_its_state(
    shared_data: Path, known_faces: Path, tmp_path: Path
) -> None:
    state_dir = tmp_path / "var"
    log_path = tmp_path / "demo.log"
    with log_path.open("w") as log_file:
        demo = subprocess.Popen(
            demo_argv(state_dir, known_faces, shared_data),
            stdout=subprocess.DEVNULL, stderr=log_file, cwd=tmp_path, env=DEMO_ENV,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while len(part_pids(log_path.read_text().splitlines())) < 3:
            assert demo.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
        state = json.loads((state_dir / "local-cloud.json").read_text())
        s3 = boto3.client("s3", endpoint_url=state["endpoint_url"], region_name="us-east-1")
        s3.put_object(Bucket=state["output_bucket"], Key="marker", Body=b"kept")

        first = part_pids(log_path.read_text().splitlines())
        os.kill(first["watcher"], signal.SIGKILL)
        while part_pids(log_path.read_text().splitlines())["watcher"] == first["watcher"]:
            assert time.monotonic() < deadline + 60, log_path.read_text()[-3000:]
            time.sleep(0.2)
        after = part_pids(log_path.read_text().splitlines())
        assert after["local-cloud"] == first["local-cloud"]
        assert s3.get_object(Bucket=state["output_bucket"], Key="marker")["Body"].read() == b"kept"
    finally:
        demo.send_signal(signal.SIGINT)
        code = demo.wait(120)
    assert code == 0, log_path.read_text()[-3000:]
    text = log_path.read_text()
    assert text.count('"demo.part_stopped"') == 3


# --- no process left behind -------------------------------------------------------------------

TESTS = REPO / "tests"
# What a demo that has come up runs: its three parts and the runtime's grandchildren (an
# execution environment for the provisioning's s3:TestEvent, and multiprocessing's tracker).
COMPLETE_TREE = (
    "local_stack cloud",
    "local_stack serve",
    "watcher run",
    "spawn_main",
    "resource_tracker",
)
GONE_WITHIN_S = 15.0


def uv() -> str:
    return subprocess.run(
        [str(REPO / "scripts" / "ensure-uv.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()


class DemoTree:
    """`hybrid-local demo` in a session of its own, with every descendant it ever had.

    A thread walks the tree every 50 ms while the test runs: once the supervisor is gone its
    parts are no longer its children, so they must have been seen before.
    """

    def __init__(self, tmp_path: Path, *, via_uv: bool = False, port: int = 0) -> None:
        self.state_dir = tmp_path / "var"
        self.log_path = tmp_path / "demo.log"
        demo = ["demo", "--state-dir", str(self.state_dir), "--port", str(port)]
        # The stand-in handler ignores them, but the demo refuses to start without known faces.
        demo += ["--known-faces", str(REPO / "samples" / "known_faces.json")]
        if via_uv:  # the `make demo` command line: uv forwards the terminal's Ctrl-C once more
            argv = [uv(), "run", "--frozen", "--all-extras", "hybrid-local", *demo]
        else:
            argv = [sys.executable, "-m", "local_stack", *demo]
        env = {
            **os.environ,
            # The stand-in function: the execution environment starts in a blink.
            "HYBRID_HANDLER": "stand_in_handler.handler",
            "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)]),
            "STAND_IN_STATE": str(tmp_path / "stand-in"),
            "HYBRID_INVOKE_PORT": "0",  # as DEMO_ENV
        }
        with self.log_path.open("w") as log_file:
            self.process = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=log_file, cwd=REPO, env=env,
                start_new_session=True,  # as a terminal runs a job: its own process group
            )  # fmt: skip
        self.seen: dict[int, tuple[float, str]] = {}  # pid -> (create time, command line)
        self._stop = False
        self._thread = threading.Thread(target=self._record, daemon=True)
        self._thread.start()

    def _record(self) -> None:
        root = psutil.Process(self.process.pid)
        while not self._stop:
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for proc in tree:
                # Read again each time: a child seen between fork and exec shows its parent's
                # command line.
                with contextlib.suppress(psutil.Error):
                    self.seen[proc.pid] = (proc.create_time(), " ".join(proc.cmdline()))
            time.sleep(0.05)

    @property
    def supervisor(self) -> int:
        """The `hybrid-local demo` process (under `uv run`, uv's child)."""
        for pid, (_, command) in sorted(dict(self.seen).items(), key=lambda item: item[1][0]):
            if " demo --state-dir" in command and "uv run" not in command:
                return pid  # the oldest: its children show the same command until they exec
        raise AssertionError(f"no supervisor among {self.seen}")

    def log(self) -> str:
        return self.log_path.read_text()[-4000:]

    def wait_for(self, *names: str, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(any(n in c for _, c in dict(self.seen).values()) for n in names):
            assert self.process.poll() is None, self.log()
            assert time.monotonic() < deadline, f"{names} not all in {self.seen}\n{self.log()}"
            time.sleep(0.05)

    def port(self) -> int:
        state = json.loads((self.state_dir / "local-cloud.json").read_text())
        return int(state["endpoint_url"].rsplit(":", 1)[1])

    def alive(self) -> list[str]:
        """Descendants seen while it ran that still run (zombies are dead)."""
        left = []
        for pid, (created, command) in dict(self.seen).items():  # copied: the thread adds
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{pid} {command}")
            except psutil.NoSuchProcess:
                pass
        return left

    def assert_nothing_left(self) -> None:
        deadline = time.monotonic() + GONE_WITHIN_S
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert self.alive() == [], self.log()

    def cleanup(self) -> None:
        """Whatever the outcome, nothing of this test keeps running."""
        self._stop = True
        for line in self.alive():
            os.kill(int(line.split()[0]), signal.SIGKILL)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


@pytest.fixture
def demo_trees() -> Iterator[list[DemoTree]]:
    trees: list[DemoTree] = []
    yield trees
    for tree in trees:
        tree.cleanup()


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # As a server binds (moto's too): connections closed a moment ago may linger in
        # TIME_WAIT on the port, which does not stop a new listener.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def assert_port_freed(port: int) -> None:
    """The next demo could listen on `port` (waits a little: the kernel closes late)."""
    deadline = time.monotonic() + 5
    while not port_is_free(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    users = [c for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port]
    assert port_is_free(port), users


def test_ctrl_c_on_uv_run_stops_every_process_and_frees_the_port(
    tmp_path: Path, demo_trees: list[DemoTree]
) -> None:
    demo = DemoTree(tmp_path, via_uv=True)
    demo_trees.append(demo)
    demo.wait_for(*COMPLETE_TREE)
    port = demo.port()
    # A terminal's Ctrl-C: SIGINT to the whole foreground group (uv, and the supervisor, which
    # then gets a second one from uv a moment later).
    os.killpg(demo.process.pid, signal.SIGINT)
    assert demo.process.wait(60) == 0, demo.log()
    demo.assert_nothing_left()
    assert_port_freed(port)
    text = demo.log_path.read_text()
    assert text.count('"demo.part_stopped"') == 3  # an orderly stop, not a forced one
    assert '"demo.forced"' not in text


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP])
def test_supervisor_killed_or_signalled_leaves_no_process(
    tmp_path: Path, demo_trees: list[DemoTree], how: signal.Signals
) -> None:
    demo = DemoTree(tmp_path)
    demo_trees.append(demo)
    demo.wait_for(*COMPLETE_TREE)
    port = demo.port()
    os.kill(demo.supervisor, how)
    demo.process.wait(60)
    demo.assert_nothing_left()
    assert_port_freed(port)


def test_a_second_ctrl_c_later_forces_the_stop_and_still_stops_the_parts(
    tmp_path: Path, demo_trees: list[DemoTree]
) -> None:
    demo = DemoTree(tmp_path)
    demo_trees.append(demo)
    demo.wait_for(*COMPLETE_TREE)
    port = demo.port()
    os.kill(demo.supervisor, signal.SIGINT)
    time.sleep(1.5)  # past the window in which a second SIGINT is the same Ctrl-C
    os.kill(demo.supervisor, signal.SIGINT)
    demo.process.wait(30)
    demo.assert_nothing_left()
    assert_port_freed(port)


def test_ctrl_c_during_start_up_leaves_no_process(
    tmp_path: Path, demo_trees: list[DemoTree]
) -> None:
    demo = DemoTree(tmp_path)
    demo_trees.append(demo)
    demo.wait_for("local-cloud")  # moto is still starting, the other parts are not there yet
    os.killpg(demo.process.pid, signal.SIGINT)
    demo.process.wait(60)
    demo.assert_nothing_left()


def test_a_port_already_taken_fails_the_demo_and_leaves_no_process(
    tmp_path: Path, demo_trees: list[DemoTree]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        demo = DemoTree(tmp_path, port=taken.getsockname()[1])
        demo_trees.append(demo)
        assert demo.process.wait(30) != 0, demo.log()
        demo.assert_nothing_left()
        assert "local-cloud" in demo.log()
