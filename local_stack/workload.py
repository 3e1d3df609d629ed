"""`hybrid-local workload CASES_DIR`: drive the pipeline with a folder of videos and grade it.

Drops every video (N times with --repeat; or N videos in all, cycling through the folder, with
--count) into the inbox, atomically, or with --direct uploads
it straight to the input bucket under this node's prefix as the course's workload script did;
waits for every result; compares with an expected-results file (see local_stack.expectations);
prints correct/wrong/missing/failed, throughput and drop→result latency. Exit status 0 only
when every video came back correct (or, without --expect, came back at all).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from hybrid_common.keys import InputKey, ResultKind, result_key, safe_name, split_result_key
from hybrid_common.results import ErrorDoc, PersonRow, parse_csv
from hybrid_common.students import StudentsFileError, read_students
from local_stack.expectations import (
    Expectation,
    ExpectationError,
    build_case2,
    expected_from_table,
    judge,
    percentile,
    read_expectations,
    render_mapping,
)
from watcher.settings import WatcherSettings, load_settings
from watcher.staging import REASON_SUFFIX, Staging

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

Verdict = Literal["correct", "wrong", "missing", "failed", "answered"]
EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2
_POLL_S = 0.25
_UPLOAD_THREADS = 8


@dataclass
class Item:
    """One video of the workload, from drop to verdict."""

    n: int
    source: Path
    video: str  # the name expectations are keyed by
    handle: str = ""  # the input key (direct) or the name dropped into the inbox
    dropped_at: float | None = None
    finished_at: float | None = None
    rows: list[PersonRow] | None = None
    error: str | None = None
    verdict: Verdict = "missing"
    got: str = ""

    @property
    def latency_s(self) -> float | None:
        if self.dropped_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.dropped_at


@dataclass
class Report:
    workload_id: str
    mode: str
    items: list[Item]
    elapsed_s: float
    checked: bool
    notes: list[str] = field(default_factory=list)

    def count(self, verdict: Verdict) -> int:
        return sum(item.verdict == verdict for item in self.items)

    @property
    def ok(self) -> bool:
        return all(item.verdict in ("correct", "answered") for item in self.items)

    def to_dict(self) -> dict[str, Any]:
        latencies = [i.latency_s for i in self.items if i.latency_s is not None]
        finished = sum(i.finished_at is not None for i in self.items)
        return {
            "workload_id": self.workload_id,
            "mode": self.mode,
            "videos": len(self.items),
            "checked": self.checked,
            **{v: self.count(v) for v in ("correct", "wrong", "missing", "failed", "answered")},
            "elapsed_s": round(self.elapsed_s, 3),
            "throughput_per_min": round(60 * finished / self.elapsed_s, 2)
            if self.elapsed_s
            else None,
            "latency_s": {
                name: None if (value := percentile(latencies, q)) is None else round(value, 3)
                for name, q in (("p50", 0.50), ("p95", 0.95), ("max", 1.0))
            },
            "problems": [
                {
                    "video": i.video,
                    "handle": i.handle,
                    "verdict": i.verdict,
                    "got": i.got,
                    "error": i.error,
                }
                for i in self.items
                if i.verdict not in ("correct", "answered")
            ],
            "notes": self.notes,
        }


def workload_id() -> str:
    """Sortable and unique enough to tell runs apart in keys and folder names."""
    return f"wl{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"


def find_videos(cases_dir: Path, extensions: Sequence[str]) -> list[Path]:
    allowed = {f".{e.lower().lstrip('.')}" for e in extensions}
    return sorted(
        p
        for p in cases_dir.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in allowed
    )


# --- the two ways in and out ---


class DirectMode:
    """Upload to the input bucket; results are read from the output bucket."""

    name = "direct"

    def __init__(self, settings: WatcherSettings, run_id: str) -> None:
        self.settings = settings
        self.run_id = run_id
        config = Config(
            region_name=settings.region,
            retries={"max_attempts": 5, "mode": "standard"},
            max_pool_connections=_UPLOAD_THREADS + 2,
            s3={"addressing_style": "path"} if settings.endpoint_url else None,
        )
        self.s3: S3Client = boto3.session.Session().client(
            "s3", endpoint_url=settings.endpoint_url, config=config
        )
        self._by_stem: dict[str, Item] = {}

    def submit(self, items: list[Item]) -> None:
        def upload(item: Item) -> None:
            submission = f"{self.run_id}-{item.n:04d}"
            key = InputKey(
                self.settings.key_prefix, self.settings.node_id, submission, safe_name(item.video)
            ).key
            item.handle = key
            self._by_stem[result_key(key, ResultKind.CSV).removesuffix(".csv")] = item
            self.s3.upload_file(str(item.source), self.settings.input_bucket, key)
            item.dropped_at = time.time()

        with ThreadPoolExecutor(_UPLOAD_THREADS) as pool:
            list(pool.map(upload, items))

    def collect(self, pending: list[Item]) -> None:
        """One listing of this run's results; fetch each new CSV or error document."""
        if not pending:
            return
        prefix = f"{self.settings.key_prefix}/{self.settings.node_id}/{self.run_id}-"
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.settings.output_bucket, Prefix=prefix
        )
        waiting = {id(item) for item in pending}
        for page in pages:
            for entry in page.get("Contents", []):
                parsed = split_result_key(entry["Key"])
                item = self._by_stem.get(parsed[0]) if parsed else None
                if item is None or id(item) not in waiting or parsed is None:
                    continue
                if parsed[1] is ResultKind.CSV:
                    item.rows = parse_csv(self._read(entry["Key"]))
                elif parsed[1] is ResultKind.ERROR:
                    item.error = _error_text(self._read(entry["Key"]))
                else:
                    continue
                item.finished_at = time.time()

    def _read(self, key: str) -> str:
        body = self.s3.get_object(Bucket=self.settings.output_bucket, Key=key)["Body"]
        with body:
            return body.read().decode("utf-8", "replace")


class InboxMode:
    """Drop into the watcher's inbox; results are read from done/, failed/ and rejected/."""

    name = "inbox"

    def __init__(self, settings: WatcherSettings, run_id: str) -> None:
        self.staging = Staging(settings.staging_root.resolve())
        self.run_id = run_id

    def submit(self, items: list[Item]) -> None:
        self.staging.inbox.mkdir(parents=True, exist_ok=True)
        for item in items:
            item.handle = f"{self.run_id}-{item.n:04d}-{safe_name(item.video)}"
            temp = self.staging.inbox / f".{item.handle}.part"
            shutil.copyfile(item.source, temp)
            temp.rename(self.staging.inbox / item.handle)  # the watcher sees it whole or not
            item.dropped_at = time.time()

    def collect(self, pending: list[Item]) -> None:
        # One listing of each folder per poll, not three lookups per pending video: with
        # 1,000 pending those cost the grader more CPU than the watcher spent (bench/scale.py).
        done, failed, rejected = (
            _names(self.staging.done),
            _names(self.staging.failed),
            _names(self.staging.rejected),
        )
        for item in pending:
            stem = item.handle.rpartition(".")[0]
            csv, error = f"{stem}.csv", f"{stem}.error.json"
            reason = f"{item.handle}{REASON_SUFFIX}"
            try:
                if csv in done:
                    text = (self.staging.done / csv).read_text(encoding="utf-8", errors="replace")
                    item.rows = parse_csv(text)
                elif error in failed:
                    text = (self.staging.failed / error).read_text(
                        encoding="utf-8", errors="replace"
                    )
                    item.error = _error_text(text)
                elif reason in rejected:
                    text = (self.staging.rejected / reason).read_text(encoding="utf-8")
                    item.error = "rejected: " + text
                else:
                    continue
            except OSError:
                continue  # moved again between the listing and the read: next poll
            item.finished_at = time.time()

    def stuck_in_inbox(self, items: list[Item]) -> bool:
        return all((self.staging.inbox / item.handle).exists() for item in items)


def _names(folder: Path) -> set[str]:
    """The names in `folder`; none if it does not exist (yet)."""
    try:
        return {entry.name for entry in folder.iterdir()}
    except FileNotFoundError:
        return set()


def _error_text(text: str) -> str:
    try:
        doc = ErrorDoc.from_json(text)
    except ValueError:
        return text.strip()[:300]
    return f"{doc.code}: {doc.message}"


# --- running and grading ---


@dataclass(frozen=True)
class Options:
    cases_dir: Path
    expect: Path | None = None
    repeat: int = 1
    count: int | None = None  # videos in all, cycling through the folder; overrides repeat
    direct: bool = False
    timeout_s: float = 600.0
    progress: bool = False


def run_workload(settings: WatcherSettings, options: Options) -> Report:
    expected = read_expectations(options.expect) if options.expect else None
    videos = find_videos(options.cases_dir, settings.allowed_extensions)
    if not videos:
        raise ExpectationError(f"{options.cases_dir}: no videos with an allowed extension")
    notes = []
    if expected is not None:
        unknown = sorted({v.name for v in videos} - set(expected))
        if unknown:
            notes.append(f"{len(unknown)} videos have no expectation, e.g. {unknown[0]}")
    total = options.count or options.repeat * len(videos)
    if not options.direct:
        notes.extend(_reuse_note(settings, videos, total))
    run_id = workload_id()
    mode: DirectMode | InboxMode = (
        DirectMode(settings, run_id) if options.direct else InboxMode(settings, run_id)
    )
    cycle = (videos[n % len(videos)] for n in range(total))
    items = [Item(n=n, source=path, video=path.name) for n, path in enumerate(cycle, start=1)]
    started = time.monotonic()
    with _progress(options.progress, len(items)) as advance:
        mode.submit(items)
        _wait(mode, items, options.timeout_s, advance, notes)
    elapsed = time.monotonic() - started
    for item in items:
        _grade(item, expected.get(item.video) if expected else None)
    return Report(run_id, mode.name, items, elapsed, expected is not None, notes)


def _reuse_note(settings: WatcherSettings, videos: list[Path], total: int) -> list[str]:
    """Say so when the watcher will answer repeats from its journal instead of processing."""
    if settings.on_duplicate != "reuse":
        return []
    distinct = {hashlib.sha256(path.read_bytes()).digest() for path in videos[:total]}
    repeats = total - len(distinct)
    if not repeats:
        return []
    return [
        f"{repeats} of {total} videos repeat another's content: with "
        "on_duplicate=reuse the watcher answers them from earlier results (set "
        "HYBRID_ON_DUPLICATE=reprocess for the daemon to measure processing)"
    ]


def _wait(
    mode: DirectMode | InboxMode,
    items: list[Item],
    timeout_s: float,
    advance: Callable[[int], None],
    notes: list[str],
) -> None:
    deadline = time.monotonic() + timeout_s
    warned = False
    next_poll = time.monotonic()
    while pending := [i for i in items if i.finished_at is None]:
        if time.monotonic() > deadline:
            notes.append(f"{len(pending)} results still missing after {timeout_s:.0f} s")
            return
        try:
            mode.collect(pending)
        except (BotoCoreError, ClientError) as error:
            notes.append(f"listing results failed once: {error}")
        advance(len(pending) - sum(i.finished_at is None for i in pending))
        if (
            isinstance(mode, InboxMode)
            and not warned
            and time.monotonic() - (deadline - timeout_s) > 30
            and mode.stuck_in_inbox(pending)
        ):
            warned = True
            print(
                "nothing has left the inbox for 30 s: is `hybrid-watcher run` running?",
                file=sys.stderr,
            )
        next_poll += _POLL_S  # drift-free: sleep to the next tick, not a fixed delay
        time.sleep(max(0.0, next_poll - time.monotonic()))


def _grade(item: Item, expectation: Expectation | None) -> None:
    if item.finished_at is None:
        item.verdict = "missing"
    elif item.rows is None:
        item.verdict, item.got = "failed", item.error or ""
    elif expectation is None:
        item.verdict, item.got = "answered", "+".join(r.name for r in item.rows) or "-"
    else:
        correct, got = judge(expectation, item.rows)
        item.verdict, item.got = ("correct" if correct else "wrong"), got
        if not correct:
            item.error = f"expected {expectation.describe()}"


@contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda _n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), transient=True) as progress:
        task = progress.add_task("results", total=total)
        yield lambda n: progress.advance(task, n) if n else None


def print_report(report: Report) -> None:
    data = report.to_dict()
    for problem in data["problems"]:
        detail = problem["error"] or ""
        got = f" got {problem['got']}" if problem["got"] else ""
        print(
            f"{problem['verdict'].upper():8} {problem['video']} ({problem['handle']}){got} {detail}"
        )
    for note in report.notes:
        print(f"note: {note}")
    counts = " ".join(
        f"{v}={data[v]}"
        for v in ("correct", "wrong", "missing", "failed", "answered")
        if data[v] or v in ("correct", "wrong", "missing")
    )
    latency = data["latency_s"]
    shown = " ".join(f"{k}={v:.2f}s" if v is not None else f"{k}=-" for k, v in latency.items())
    print(f"workload {report.workload_id} ({report.mode}): {data['videos']} videos: {counts}")
    print(
        f"elapsed {data['elapsed_s']:.1f}s, throughput {data['throughput_per_min']} videos/min, "
        f"drop→result latency {shown}"
    )


# --- command line ---


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cases_dir", type=Path, nargs="?", metavar="CASES_DIR")
    parser.add_argument(
        "--expect",
        type=Path,
        metavar="FILE",
        help="expected results: `video.mp4:major,year` lines (the course's mapping) or "
        "`video.mp4<TAB>name+name` lines ('-' for nobody known)",
    )
    parser.add_argument("--repeat", type=int, default=1, metavar="N", help="submit each N times")
    parser.add_argument(
        "--count",
        type=int,
        metavar="N",
        help="submit N videos in all, cycling through the folder (instead of --repeat)",
    )
    parser.add_argument(
        "--direct",
        action="store_true",
        help="upload straight to the input bucket instead of dropping into the inbox",
    )
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument(
        "--timeout", type=float, default=600.0, metavar="S", help="stop waiting after S s"
    )
    parser.add_argument(
        "--build-case2",
        type=Path,
        metavar="OUT_DIR",
        help="build the course's 100-video test_case_2 in OUT_DIR (from --index) with an "
        "expected.mapping taken from the students table file, then exit",
    )
    parser.add_argument(
        "--index",
        type=Path,
        default=Path("../shared/data/cse546/test_case_2.index"),
        help="test_case_2.index; its folder also holds test_case_1/, mapping, student_data.json",
    )


def cmd_workload(args: argparse.Namespace) -> int:
    if args.build_case2 is not None:
        return _cmd_build_case2(args.index, args.build_case2)
    if args.cases_dir is None or not args.cases_dir.is_dir():
        print("workload: CASES_DIR must be a folder of videos", file=sys.stderr)
        return EXIT_USAGE
    if args.repeat < 1 or (args.count is not None and args.count < 1):
        print("workload: --repeat and --count must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    settings = load_settings()
    options = Options(
        cases_dir=args.cases_dir,
        expect=args.expect,
        repeat=args.repeat,
        count=args.count,
        direct=args.direct,
        timeout_s=args.timeout,
        progress=sys.stdout.isatty() and not args.json,
    )
    try:
        report = run_workload(settings, options)
    except ExpectationError as error:
        print(f"workload: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report)
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def _cmd_build_case2(index: Path, out_dir: Path) -> int:
    data = index.parent
    try:
        count = build_case2(index, data / "test_case_1", out_dir)
        mapping = read_expectations(data / "mapping")
        expected, notes = expected_from_table(mapping, read_students(data / "student_data.json"))
    except (ExpectationError, StudentsFileError, OSError) as error:
        print(f"workload: {error}", file=sys.stderr)
        return EXIT_USAGE
    (out_dir / "expected.mapping").write_text(render_mapping(expected), encoding="utf-8")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {count} videos and expected.mapping (from the students table) to {out_dir}")
    print(f"run: hybrid-local workload {out_dir} --expect {out_dir / 'expected.mapping'}")
    return EXIT_OK
