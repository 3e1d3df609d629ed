"""Intake benchmark: a full inbox, and the latency of one atomically renamed file.

    uv run --frozen --all-extras python bench/intake.py [--files 1000,2500,5000,10000]

The real daemon (`python -m watcher run`) uploads to `bench/s3_sink.py`, which discards
everything, so the figures are the daemon's own: for each inbox size, the time from
`service.started` until every file is `uploaded` (intake, hashing, journal, PUT), files/s and
the daemon's peak RSS; then 20 files renamed into the inbox one at a time, each timed from
the rename to its `uploading` journal entry. Targets: time linear in files, peak RSS
<= 150 MB at 10,000 files, drop → upload-started < 200 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from watcher.journal import JournalStore  # noqa: E402 -- after the path set-up above

MP4_HEAD = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_sink() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    sink = subprocess.Popen([sys.executable, str(REPO / "bench" / "s3_sink.py"), str(port)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return sink, f"http://127.0.0.1:{port}"
        time.sleep(0.05)
    raise RuntimeError("the sink did not start")


def daemon_env(root: Path, endpoint: str) -> dict[str, str]:
    return {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "bench-access-key",
        "AWS_SECRET_ACCESS_KEY": "bench-secret-key-not-real",
        "HYBRID_CONFIG": "",
        "HYBRID_ENDPOINT_URL": endpoint,
        "HYBRID_INPUT_BUCKET": "bench-in",
        "HYBRID_OUTPUT_BUCKET": "bench-out",
        "HYBRID_STAGING_ROOT": str(root),
        "HYBRID_NODE_ID": "bench",
        "HYBRID_LOG_FORMAT": "json",
        "HYBRID_LOG_LEVEL": "warning",
        "HYBRID_UPLOAD_CONCURRENCY": "8",
        "HYBRID_ON_DUPLICATE": "reprocess",
    }


def count_uploaded(root: Path) -> int:
    path = root / "journal.sqlite3"
    if not path.exists():
        return 0
    store = JournalStore(path, readonly=True)
    try:
        return store.counts()["uploaded"]
    except sqlite3.OperationalError:  # the daemon has created the file, not yet the tables
        return 0
    finally:
        store.close()


def run_inbox(files: int, endpoint: str, work: Path) -> tuple[float, float]:
    """Seconds from start-up to all `files` uploaded, and the daemon's peak RSS in MiB."""
    root = work / f"inbox-{files}"
    (root / "inbox").mkdir(parents=True)
    for n in range(files):
        (root / "inbox" / f"clip-{n:05d}.mp4").write_bytes(MP4_HEAD + n.to_bytes(8, "big"))
    old = time.time() - 60  # dropped a while ago: stable, as after a restart
    for entry in os.scandir(root / "inbox"):
        os.utime(entry.path, (old, old))
    daemon = subprocess.Popen(
        [sys.executable, "-m", "watcher", "run"], env=daemon_env(root, endpoint), cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    process = psutil.Process(daemon.pid)
    started = time.monotonic()
    peak = 0
    try:
        while count_uploaded(root) < files:
            peak = max(peak, process.memory_info().rss)
            if daemon.poll() is not None:
                raise RuntimeError(f"daemon exited with {daemon.returncode}")
            time.sleep(0.1)
        return time.monotonic() - started, peak / 2**20
    finally:
        daemon.terminate()
        daemon.wait(60)


def run_latency(samples: int, endpoint: str, work: Path) -> list[float]:
    """Milliseconds from rename into the inbox to the `uploading` journal entry."""
    root = work / "latency"
    (root / "inbox").mkdir(parents=True)
    env = daemon_env(root, endpoint) | {"HYBRID_LOG_LEVEL": "info"}
    log = (work / "latency.log").open("wb")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "watcher", "run"], env=env, cwd=REPO, stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        while b"service.started" not in (work / "latency.log").read_bytes():
            time.sleep(0.05)
        latencies = []
        for n in range(samples):
            temp = root / f"clip-{n}.mp4"
            temp.write_bytes(MP4_HEAD + n.to_bytes(8, "big"))
            renamed = time.time()
            temp.rename(root / "inbox" / temp.name)
            latencies.append(1000 * (_uploading_at(root, temp.name) - renamed))
            time.sleep(0.2)
        return latencies
    finally:
        daemon.terminate()
        daemon.wait(60)
        log.close()


def _uploading_at(root: Path, name: str) -> float:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (root / "journal.sqlite3").exists():
            store = JournalStore(root / "journal.sqlite3", readonly=True)
            try:
                for sub in store.find(name):
                    for event in store.events(sub.id, "uploading"):
                        return event.at
            except sqlite3.OperationalError:
                pass  # tables not created yet
            finally:
                store.close()
        time.sleep(0.01)
    raise RuntimeError(f"{name} never started uploading")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", default="1000,2500,5000,10000")
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    sizes = [int(n) for n in args.files.split(",")]
    sink, endpoint = start_sink()
    work = Path(tempfile.mkdtemp(prefix="bench-intake-"))
    results: dict[str, object] = {}
    try:
        print(f"{'files':>7} {'seconds':>8} {'files/s':>8} {'peak RSS MiB':>13}")
        rows = []
        for files in sizes:
            seconds, peak = run_inbox(files, endpoint, work)
            rows.append({"files": files, "seconds": round(seconds, 2), "peak_rss_mib": round(peak)})
            print(f"{files:>7} {seconds:>8.2f} {files / seconds:>8.0f} {peak:>13.0f}")
        results["inbox"] = rows
        latencies = sorted(run_latency(args.samples, endpoint, work))
        p95 = latencies[max(0, round(0.95 * len(latencies)) - 1)]
        print(
            f"rename → uploading: median {statistics.median(latencies):.0f} ms, "
            f"p95 {p95:.0f} ms, max {latencies[-1]:.0f} ms ({len(latencies)} files)"
        )
        results["latency_ms"] = {
            "median": round(statistics.median(latencies), 1), "p95": round(p95, 1),
            "max": round(latencies[-1], 1),
        }  # fmt: skip
        print(json.dumps(results))
    finally:
        sink.terminate()
        sink.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
