"""Scale on one machine: 100 and 1,000 videos through the whole local stack, and how each grows.

    uv run --frozen --all-extras python bench/scale.py [--sizes 100,1000] [--json]

For each size, a fresh stack (`hybrid-local cloud`, `hybrid-local serve` with the real handler,
`hybrid-watcher run`) takes `hybrid-local workload --count N`: the course clips dropped into the
inbox under distinct names, cycling through the folder, all at once, each graded against the
course's mapping (in the students table's words). The watcher runs with on_duplicate=reprocess
so every copy is processed rather than answered from the journal. Printed per size: correct
videos, throughput (videos/min, and per core of this machine), the watcher's peak RSS (VmHWM),
the journal's size on disk (database + WAL), serve-local's scaling events and most
environments alive, and the machine's CPU busy share during the run; then how each grows from
the smallest size to the largest.

The baseline, in the same invocation and on the same cores: the classic handler
(../shared/bench/classic_baseline.py --all-frames, the mode the handler runs by default) in as
many processes as the machine has cores, over the course clips twice, round-robin. Exits 1 if
any of our answers is not correct.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from latency import Watcher, _free_port
from workload import COURSE, Stack, cannot_run, course_faces, expectations_in_table_words

REPO = Path(__file__).resolve().parent.parent
CLASSIC = REPO.parent / "shared" / "bench" / "classic_baseline.py"


@dataclass
class Size:
    """One size's figures."""

    videos: int
    correct: int
    elapsed_s: float
    videos_per_min: float
    per_core_per_min: float
    latency_p50_s: float | None
    latency_p95_s: float | None
    watcher_peak_rss_mib: float
    journal_bytes: int  # the database after a clean stop
    wal_bytes: int  # its write-ahead log at the end of the run, before the stop
    scale_ups: int
    scale_downs: int
    most_environments: int
    cpu_busy: float  # share of the machine's cores busy during the run, 0..1
    # CPU seconds per video, by process (with its children): where the machine's time went.
    cpu_per_video_s: dict[str, float]


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _peak_rss_mib(pid: int) -> float:
    """The process's high-water mark of resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (which may hold spaces): field 3 onwards."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def _tree_cpu_s(root: int) -> float:
    """CPU seconds of a process and all its descendants, the reaped ones included."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                parents[int(entry.name)] = int(_stat_fields(int(entry.name))[1])
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    ticks = 0
    for pid in tree:
        with contextlib.suppress(OSError):
            fields = _stat_fields(pid)
            # utime, stime, cutime, cstime: fields 14-17 of stat, 12-15 after the name.
            ticks += sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def _wal_bytes(staging: Path) -> int:
    """The journal's write-ahead log while the daemon runs (SQLite checkpoints it at ~4 MiB)."""
    wal = staging / "journal.sqlite3-wal"
    return wal.stat().st_size if wal.exists() else 0


def _scale_events(log: Path) -> list[dict[str, Any]]:
    """serve-local's `scale.changed` lines (JSON), its shutdown's excepted."""
    events = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "scale.changed" and event.get("reason") != "shutdown":
            events.append(event)
    return events


def run_size(videos: int, known: Path, expect: Path, cases: Path) -> Size:
    work = Path(tempfile.mkdtemp(prefix=f"bench-scale-{videos}-"))
    stack = Stack(work)
    watcher: Watcher | None = None
    try:
        shutil.copyfile(known, work / "known_faces.json")
        env = stack.start(work / "known_faces.json")
        watcher = Watcher(work, env, _free_port())
        watcher.wait_for("intake.started")
        timeout = str(60 + 3 * videos)
        argv = [sys.executable, "-m", "local_stack", "workload", str(cases), "--count",
                str(videos), "--expect", str(expect), "--json", "--timeout", timeout]  # fmt: skip
        tops = {"serve-local + workers": stack.procs[1].pid, "watcher": watcher.proc.pid,
                "local cloud (moto)": stack.procs[0].pid}  # fmt: skip
        before = {name: _tree_cpu_s(pid) for name, pid in tops.items()}
        grader0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy0, total0 = _cpu_times()
        done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, check=False)
        busy1, total1 = _cpu_times()
        grader1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = {name: _tree_cpu_s(pid) - before[name] for name, pid in tops.items()}
        cpu["workload grader"] = (grader1.ru_utime - grader0.ru_utime) + (
            grader1.ru_stime - grader0.ru_stime
        )
        if not done.stdout.strip():
            raise RuntimeError(
                f"workload printed nothing (exit {done.returncode}):\n{done.stderr!r}"
            )
        report: dict[str, Any] = json.loads(done.stdout)
        peak = _peak_rss_mib(watcher.proc.pid)
        wal = _wal_bytes(work)
    finally:
        if watcher is not None:
            watcher.stop()
        stack.stop()
    try:
        # After a clean stop: the WAL is checkpointed into the database and truncated.
        journal = (work / "journal.sqlite3").stat().st_size
        scales = _scale_events(work / "serve-local.log")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = float(report["elapsed_s"])
    rate = 60 * report["videos"] / elapsed
    return Size(
        videos=report["videos"],
        correct=report["correct"],
        elapsed_s=round(elapsed, 1),
        videos_per_min=round(rate, 1),
        per_core_per_min=round(rate / _cores(), 1),
        latency_p50_s=report["latency_s"]["p50"],
        latency_p95_s=report["latency_s"]["p95"],
        watcher_peak_rss_mib=round(peak, 1),
        journal_bytes=journal,
        wal_bytes=wal,
        scale_ups=sum(e["concurrency"] > e["previous"] for e in scales),
        scale_downs=sum(e["concurrency"] < e["previous"] for e in scales),
        most_environments=max((e["concurrency"] for e in scales), default=0),
        cpu_busy=round((busy1 - busy0) / max(1, total1 - total0), 2),
        cpu_per_video_s={name: round(s / report["videos"], 3) for name, s in cpu.items()},
    )


def run_classic(clips: list[Path], processes: int) -> dict[str, Any]:
    """The classic handler over `clips` in `processes` processes at once: videos/min."""
    shares = [clips[n::processes] for n in range(processes)]
    started = time.monotonic()
    procs: list[tuple[subprocess.Popen[bytes], Any]] = []
    with contextlib.ExitStack() as files:
        try:
            for share in filter(None, shares):
                argv = [sys.executable, str(CLASSIC), str(COURSE / "encoding"),
                        *map(str, share), "--all-frames", "--json"]  # fmt: skip
                # stderr to a file, not a pipe: a pipe nobody reads yet could stall its writer.
                err = files.enter_context(tempfile.TemporaryFile())
                proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
                procs.append((proc, err))
            for proc, err in procs:
                if proc.wait():
                    err.seek(0)
                    raise RuntimeError(f"classic baseline failed:\n{err.read().decode()[-2000:]}")
        finally:
            for proc, _ in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    elapsed = time.monotonic() - started
    return {
        "videos": len(clips),
        "processes": len(procs),
        "elapsed_s": round(elapsed, 1),
        "videos_per_min": round(60 * len(clips) / elapsed, 1),
    }


def print_report(sizes: list[Size], classic: dict[str, Any]) -> None:
    cores = _cores()
    print(f"\nscale on one machine: {cores} cores, the whole local stack, the handler in mode all")
    head = (
        f"{'videos':>6} {'correct':>7} {'seconds':>8} {'videos/min':>10} {'per core':>8} "
        f"{'p50 s':>6} {'p95 s':>6} {'watcher RSS':>11} {'journal':>9} {'WAL':>9} {'ups/downs':>9} "
        f"{'most env':>8} {'CPU busy':>8}"
    )
    print(head)
    print("-" * len(head))
    for s in sizes:
        print(
            f"{s.videos:>6} {s.correct:>7} {s.elapsed_s:>8.1f} {s.videos_per_min:>10.1f} "
            f"{s.per_core_per_min:>8.1f} {s.latency_p50_s or 0:>6.1f} {s.latency_p95_s or 0:>6.1f} "
            f"{s.watcher_peak_rss_mib:>7.1f} MiB {s.journal_bytes / 1024:>5.0f} KiB "
            f"{s.wal_bytes / 1024:>5.0f} KiB {s.scale_ups:>4}/{s.scale_downs:<4} "
            f"{s.most_environments:>8} {s.cpu_busy:>8.0%}"
        )
    for s in sizes:
        shares = ", ".join(f"{name} {t:.3f}" for name, t in s.cpu_per_video_s.items())
        print(f"CPU-s per video at {s.videos}: {shares}")
    print(
        f"classic --all-frames, {classic['processes']} processes: {classic['videos']} videos in "
        f"{classic['elapsed_s']} s, {classic['videos_per_min']} videos/min"
    )
    for s in sizes:
        ratio = s.videos_per_min / classic["videos_per_min"]
        print(f"throughput ratio at {s.videos} videos: {ratio:.1f}x the classic on the same cores")
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        factor = large.videos / small.videos

        def grew(a: float, b: float) -> str:
            return f"{b / a:.2f}x" if a else "n/a"

        print(f"growth {small.videos} -> {large.videos} videos ({factor:.0f}x the work):")
        print(f"  elapsed {grew(small.elapsed_s, large.elapsed_s)}, "
              f"throughput {grew(small.videos_per_min, large.videos_per_min)}, "
              f"watcher peak RSS {grew(small.watcher_peak_rss_mib, large.watcher_peak_rss_mib)}, "
              f"journal {grew(small.journal_bytes, large.journal_bytes)} "
              f"({small.journal_bytes / small.videos / 1024:.1f} -> "
              f"{large.journal_bytes / large.videos / 1024:.1f} KiB a video), "
              f"scale-ups {small.scale_ups} -> {large.scale_ups}, "
              f"scale-downs {small.scale_downs} -> {large.scale_downs}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000", help="videos per run, comma-separated")
    parser.add_argument("--cases", type=Path, default=COURSE / "test_case_1")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    if reason := cannot_run(args.cases):
        print(f"scale bench skipped: {reason}")
        return 0
    sizes = sorted(int(n) for n in args.sizes.split(","))
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        known = course_faces(work / "known_faces.json")
        expect = expectations_in_table_words(COURSE / "mapping", work / "expected.mapping")
        results = []
        for n in sizes:
            results.append(run_size(n, known, expect, args.cases))
            print(f"{n} videos: {asdict(results[-1])}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    clips = sorted(args.cases.glob("*.mp4"))
    classic = run_classic(clips * 2, _cores())
    print_report(results, classic)
    if args.json:
        print(json.dumps({"sizes": [asdict(s) for s in results], "classic": classic}))
    return 0 if all(s.correct == s.videos for s in results) else 1


if __name__ == "__main__":
    sys.exit(main())
