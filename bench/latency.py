"""Drop → result latency through the real local stack: LIST polling only vs the result queue.

    uv run --frozen --all-extras python bench/latency.py [--rounds N] [--burst M] [--json]

Both stacks run in this one invocation, one after the other, each a fresh `hybrid-local cloud`
(moto's server), `hybrid-local serve` (the real handler, dlib-bin) and `hybrid-watcher run`:
the baseline without a result queue (the watcher lists the output bucket every
poll_interval_s = 2 s, today's default), then with the output bucket notifying the node's
queue. Singles: each course clip dropped into the inbox alone, the next once its result is in
done/ (drop = the rename into the inbox; result = its CSV in done/, watched every 5 ms); the
first drop warms the function and is not counted. Each result's own function time is read from
its details JSON (`timings.total`). Burst: M clips dropped at once (`--burst 0` skips it).
Cloud requests per result are the watcher's own counts (its /metrics, by operation).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workload import COURSE, Stack, cannot_run, course_faces

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from local_stack.expectations import percentile  # noqa: E402 -- after the path set-up above

_REQUESTS = re.compile(
    r'^hybrid_watcher_cloud_requests_total\{operation="(\w+)",service="(\w+)"\} (\S+)$', re.M
)
_WATCH_S = 0.005


@dataclass
class Run:
    """One stack's figures."""

    name: str
    latencies: list[float] = field(default_factory=list)
    function_s: list[float] = field(default_factory=list)
    requests: dict[str, float] = field(default_factory=dict)
    results: int = 0
    burst: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        over = [lat - fn for lat, fn in zip(self.latencies, self.function_s, strict=True)]
        return {
            "singles": len(self.latencies),
            "p50_s": _r(percentile(self.latencies, 0.5)),
            "p95_s": _r(percentile(self.latencies, 0.95)),
            "function_p50_s": _r(percentile(self.function_s, 0.5)),
            "function_p95_s": _r(percentile(self.function_s, 0.95)),
            "over_function_p95_s": _r(percentile(over, 0.95)),
            "requests_per_result": {
                op: round(n / self.results, 2) for op, n in sorted(self.requests.items()) if n
            },
            "burst": self.burst,
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class Watcher:
    def __init__(self, work: Path, env: dict[str, str], port: int) -> None:
        self.log = work / "watcher.log"
        self.port = port
        env = {**env, "HYBRID_METRICS_PORT": str(port), "HYBRID_ON_DUPLICATE": "reprocess"}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "watcher", "run"], env=env, cwd=REPO,
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def wait_for(self, event: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while f'"event": "{event}"' not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"watcher: no {event}; see {self.log}")
            time.sleep(0.1)

    def requests(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        return {f"{svc}:{op}": float(n) for op, svc, n in _REQUESTS.findall(text)}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def drop(inbox: Path, source: Path, name: str) -> float:
    temp = inbox / f".{name}.part"
    shutil.copyfile(source, temp)
    temp.rename(inbox / name)
    return time.time()


def wait_done(
    done: Path, stems: list[str], procs: list[Any], timeout_s: float = 300
) -> dict[str, float]:
    """When each stem's CSV appeared in done/ (watched every 5 ms)."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while len(seen) < len(stems):
        if any(proc.poll() is not None for proc in procs):
            raise RuntimeError(f"a part of the stack exited; see the logs in {done.parent}")
        for stem in stems:
            if stem not in seen and (done / f"{stem}.csv").exists():
                seen[stem] = time.time()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(stems) - len(seen)} results missing after {timeout_s} s")
        time.sleep(_WATCH_S)
    return seen


def function_time(done: Path, stem: str) -> float:
    details = json.loads((done / f"{stem}.json").read_text())
    return float(details["timings"]["total"])


def measure(name: str, queue: bool, clips: list[Path], rounds: int, burst: int) -> Run:
    work = Path(tempfile.mkdtemp(prefix=f"bench-latency-{name}-"))
    stack = Stack(work)
    stack.env["HYBRID_NODE_ID"] = "bench"
    run = Run(name)
    watcher: Watcher | None = None
    try:
        known = course_faces(work / "known_faces.json")
        env = stack.start(known, cloud_args=[] if queue else ["--no-result-queue"])
        watcher = Watcher(work, env, _free_port())
        watcher.wait_for("intake.started")
        if queue:
            watcher.wait_for("result_queue.answering")
        inbox, done = work / "inbox", work / "done"
        procs = [*stack.procs, watcher.proc]
        drop(inbox, clips[0], "warmup.mp4")
        wait_done(done, ["warmup"], procs)
        before = watcher.requests()
        for r in range(rounds):
            for i, clip in enumerate(clips):
                stem = f"s{r}-{i}"
                dropped = drop(inbox, clip, f"{stem}.mp4")
                arrived = wait_done(done, [stem], procs)[stem]
                run.latencies.append(arrived - dropped)
                run.function_s.append(function_time(done, stem))
        run.results = len(run.latencies)
        after = watcher.requests()
        run.requests = {op: after[op] - before.get(op, 0.0) for op in after}
        if burst:
            stems = [f"b{n:04d}" for n in range(burst)]
            dropped_at = {s: drop(inbox, clips[n % len(clips)], f"{s}.mp4") for n, s in
                          enumerate(stems)}  # fmt: skip
            first = min(dropped_at.values())
            arrived = wait_done(done, stems, procs, timeout_s=60 + 10 * burst)
            lat = [arrived[s] - dropped_at[s] for s in stems]
            fn = [function_time(done, s) for s in stems]
            elapsed = max(arrived.values()) - first
            run.burst = {
                "videos": burst,
                "elapsed_s": round(elapsed, 2),
                "p50_s": _r(percentile(lat, 0.5)),
                "p95_s": _r(percentile(lat, 0.95)),
                "function_p50_s": _r(percentile(fn, 0.5)),
                # Queueing: the last result cannot come before all the work ahead of it is done.
                "videos_per_min": round(60 * burst / elapsed, 1),
            }
    finally:
        if watcher is not None:
            watcher.stop()
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="each clip N times, one at a time")
    parser.add_argument("--burst", type=int, default=0, help="then M clips dropped at once")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    cases = COURSE / "test_case_1"
    if reason := cannot_run(cases, classic=False):
        print(f"latency bench skipped: {reason}")
        return 0
    clips = sorted(cases.glob("*.mp4"))
    runs = [
        measure("polling only (2 s LIST)", False, clips, args.rounds, args.burst),
        measure("result queue + LIST backstop", True, clips, args.rounds, args.burst),
    ]
    print(f"{'drop → result, single videos':<32} {'n':>3} {'p50':>6} {'p95':>6} "
          f"{'fn p50':>7} {'p95 over fn':>11}  requests per result")  # fmt: skip
    figures = {}
    for run in runs:
        s = figures[run.name] = run.summary()
        per = ", ".join(f"{op} {n}" for op, n in s["requests_per_result"].items())
        print(
            f"{run.name:<32} {s['singles']:>3} {s['p50_s']:>6.2f} {s['p95_s']:>6.2f} "
            f"{s['function_p50_s']:>7.3f} {s['over_function_p95_s']:>11.2f}  {per}"
        )
    base, ours = (figures[r.name] for r in runs)
    print(
        f"p95 {base['p95_s'] / ours['p95_s']:.1f}x lower with the queue; goal p95 ≤ function "
        f"+ 0.3 s: {'met' if ours['over_function_p95_s'] <= 0.3 else 'missed'} "
        f"(+{ours['over_function_p95_s']:.2f} s)"
    )
    if args.burst:
        for run in runs:
            b = run.burst
            print(
                f"burst of {b['videos']} ({run.name}): {b['elapsed_s']} s, "
                f"{b['videos_per_min']} videos/min, latency p50 {b['p50_s']} s, p95 {b['p95_s']} s,"
                f" function p50 {b['function_p50_s']} s"
            )
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
