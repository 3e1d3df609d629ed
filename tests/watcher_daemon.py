"""Driving the real daemon in tests: `python -m watcher run` as a subprocess, a stand-in function.

`Daemon` starts the watcher with HYBRID_* settings against moto's server and reads its JSON
log lines; every run of one Daemon appends to its own log file, so "logged exactly once" can be
checked across a kill and a restart. `StandInFunction` plays the cloud function: a thread that
lists the input bucket and answers each new video the way the real one does (details JSON and
contact sheet first, the CSV last), or with an error document, or never.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from hybrid_common.keys import ResultKind, result_key
from hybrid_common.results import ErrorDoc, PersonRow, render_csv
from tests.crash_points import KILL_AT_ENV
from watcher.journal import JournalStore, Submission

REPO = Path(__file__).resolve().parent.parent
# A minimal ISO-BMFF header: enough for the daemon's sniffing, and small.
MP4_HEAD = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
PEOPLE = [PersonRow("alice", "physics", "2026"), PersonRow("bob", "cs", "2027")]


def video_bytes(tag: str, size: int = 2048) -> bytes:
    """Distinct content per tag (so no two test files are duplicates of each other)."""
    body = (tag.encode() * (size // max(1, len(tag)) + 1))[: max(0, size - len(MP4_HEAD))]
    return MP4_HEAD + body


def drop(inbox: Path, name: str, data: bytes) -> Path:
    """Drop a file the way careful tools do: write a hidden temp name, then rename."""
    temp = inbox / f".{name}.part"
    temp.write_bytes(data)
    target = inbox / name
    temp.rename(target)
    return target


@dataclass(frozen=True)
class Cloud:
    endpoint: str
    input_bucket: str
    output_bucket: str

    def s3(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def input_keys(self) -> list[str]:
        pages = self.s3().get_paginator("list_objects_v2").paginate(Bucket=self.input_bucket)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


def make_cloud(endpoint: str, name: str) -> Cloud:
    cloud = Cloud(endpoint, f"{name}-in", f"{name}-out")
    s3 = cloud.s3()
    for bucket in (cloud.input_bucket, cloud.output_bucket):
        s3.create_bucket(Bucket=bucket)
    return cloud


class StandInFunction:
    """Answers videos in the input bucket: `never` in a name → no answer, `broken` → error,
    `slow` → answered 2 s late (so a newer video's result overtakes it)."""

    def __init__(self, cloud: Cloud, *, delay_s: float = 0.0) -> None:
        self.cloud = cloud
        self.delay_s = delay_s
        self.answered: Counter[str] = Counter()
        self.csv_written_at: dict[str, float] = {}  # key → time.time() the CSV was put
        self._s3 = cloud.s3()  # botocore clients are thread-safe
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stand-in", daemon=True)
        # Several "function instances" answer at once, as Lambda scales out.
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="stand-in")

    def __enter__(self) -> StandInFunction:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._pool.shutdown(wait=True)

    def _run(self) -> None:
        seen: set[str] = set()
        newest = ""
        paginator = self._s3.get_paginator("list_objects_v2")
        for loop in itertools.count():
            if self._stop.wait(0.05):
                return
            # Mostly what sorts after the newest key seen; now and then everything.
            start = {"StartAfter": newest} if newest and loop % 10 else {}
            for page in paginator.paginate(Bucket=self.cloud.input_bucket, **start):
                for item in page.get("Contents", []):
                    newest = max(newest, item["Key"])
                    if item["Key"] not in seen:
                        seen.add(item["Key"])
                        self._pool.submit(self.answer, item["Key"])

    def answer(self, key: str) -> None:
        name = key.rsplit("/", 1)[-1]
        if "never" in name:
            return
        time.sleep(self.delay_s + (2.0 if "slow" in name else 0.0))
        with self._lock:
            self.answered[key] += 1
        out = self.cloud.output_bucket
        if "broken" in name:
            doc = ErrorDoc("decode_failed", "no video stream", "req-1", key)
            self._s3.put_object(
                Bucket=out, Key=result_key(key, ResultKind.ERROR), Body=doc.to_json()
            )
            return
        details = {"people": [p.name for p in PEOPLE], "timings": {"decode": 0.01, "total": 0.02}}
        self._s3.put_object(
            Bucket=out, Key=result_key(key, ResultKind.DETAILS), Body=json.dumps(details)
        )
        self._s3.put_object(Bucket=out, Key=result_key(key, ResultKind.FACES), Body=b"\xff\xd8jpg")
        self._s3.put_object(
            Bucket=out, Key=result_key(key, ResultKind.CSV), Body=render_csv(PEOPLE)
        )
        self.csv_written_at[key] = time.time()


class Daemon:
    """One watcher node: its staging root, settings, and every run's log."""

    def __init__(self, root: Path, cloud: Cloud, node_id: str = "node-a", **settings: Any) -> None:
        self.root = root
        self.inbox = root / "inbox"
        self.done = root / "done"
        self.failed = root / "failed"
        self.rejected = root / "rejected"
        self.runs = 0
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "HYBRID_CONFIG": "",
            "HYBRID_ENDPOINT_URL": cloud.endpoint,
            "HYBRID_INPUT_BUCKET": cloud.input_bucket,
            "HYBRID_OUTPUT_BUCKET": cloud.output_bucket,
            "HYBRID_STAGING_ROOT": str(root),
            "HYBRID_NODE_ID": node_id,
            "HYBRID_LOG_FORMAT": "json",
            "HYBRID_SETTLE_S": "0.3",
            "HYBRID_POLL_INTERVAL_S": "0.2",
            "HYBRID_POLL_MAX_INTERVAL_S": "0.5",
            "HYBRID_SHUTDOWN_GRACE_S": "10",
            "HYBRID_RETRY_BASE_DELAY_S": "0.05",
            "HYBRID_RETRY_MAX_DELAY_S": "0.2",
        }
        self.env.update({f"HYBRID_{k.upper()}": str(v) for k, v in settings.items()})

    def log_path(self, run: int) -> Path:
        return self.root.parent / f"{self.root.name}-run{run}.log"

    def start(self, **extra_env: str) -> None:
        """Run the daemon; with WATCHER_TEST_KILL_AT=<step> in `extra_env` it is the same daemon
        run by `tests.crash_points`, which SIGKILLs it at that step."""
        self.runs += 1
        module = "tests.crash_points" if KILL_AT_ENV in extra_env else "watcher"
        with self.log_path(self.runs).open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module, "run"],
                env={**self.env, **extra_env}, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
            )  # fmt: skip
        self.wait_for("intake.started", timeout=30)  # watching the inbox from now on

    def events(self, name: str | None = None, *, run: int | None = None) -> list[dict[str, Any]]:
        found = []
        for n in range(1, self.runs + 1) if run is None else [run]:
            path = self.log_path(n)
            for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # not one of ours (a stray library print)
                if isinstance(event, dict) and (name is None or event.get("event") == name):
                    found.append(event)
        return found

    def wait_for(
        self,
        name: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout: float = 20,
    ) -> list[dict[str, Any]]:
        """Wait until the events called `name` (this run) satisfy `predicate`."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(name, run=self.runs)
            if predicate(found):
                return found
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}) waiting for {name}")
            if time.monotonic() > deadline:
                tail = self.log_path(self.runs).read_text(errors="replace")[-3000:]
                raise AssertionError(f"timed out waiting for {name}; log tail:\n{tail}")
            time.sleep(0.05)

    def wait_until(self, check: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self.proc is not None and self.proc.poll() is not None and self.proc.returncode:
                raise AssertionError(f"daemon exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout} s: {self.counts()}")
            time.sleep(0.05)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 20) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @contextmanager
    def journal(self) -> Iterator[JournalStore]:
        store = JournalStore(self.root / "journal.sqlite3")
        try:
            yield store
        finally:
            store.close()

    def submissions(self) -> list[Submission]:
        if not (self.root / "journal.sqlite3").exists():
            return []
        with self.journal() as store:
            return store.latest(100_000)

    def counts(self) -> dict[str, int]:
        if not (self.root / "journal.sqlite3").exists():
            return {}
        with self.journal() as store:
            return {k: v for k, v in store.counts().items() if v}

    def concluded(self, n: int) -> bool:
        """n submissions have reached a final state and been delivered."""
        # A COUNT, not every row: the soak asks this every 50 ms of a 10,000-file journal.
        if not (self.root / "journal.sqlite3").exists():
            return n <= 0
        with self.journal() as store:
            return store.concluded_count() >= n
