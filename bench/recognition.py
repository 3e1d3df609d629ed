#!/usr/bin/env python3
"""Recognition benchmark: the classic implementation and ours, on the same videos, side by side.

Runs ../shared/bench/classic_baseline.py (ffmpeg to JPEG files, face_encodings on every
frame, first compare_faces hit) and `hybrid-lambda process` in both modes, each as a
subprocess of this one invocation (so both see the same machine load), and prints per-video
times, totals, the ratio, peak RSS and the cold-start time. Exits 1 if the answers differ.

Usage: python bench/recognition.py [VIDEO...] [--rounds N] [--workers N] [--json]
Defaults: the 8 course clips, known faces imported (safely) from the course pickle.
The machine is shared and noisy: each mode runs --rounds (default 2) rounds of (classic,
ours), alternating so both see the same load, and the median runs are compared. CPU seconds
are printed too: unlike wall time they do not depend on how busy the machine is.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("HYBRID_SHARED_DATA", REPO.parent / "shared" / "data"))
CLASSIC = REPO.parent / "shared" / "bench" / "classic_baseline.py"
COURSE = SHARED / "cse546"
TARGET_RATIO = 10.0
# Which classic run each of our modes is compared with.
MODES = {"first-match": [], "all": ["--all-frames"]}

COLD_START = """
import time
t = time.perf_counter()
from pathlib import Path
from lambda_fn.faces import models
from lambda_fn.known_faces import KnownFaces
from lambda_fn.recognition import recognise
from lambda_fn.resnet_descriptor import network
models()
network()
KnownFaces.load(Path({faces!r}))
print(time.perf_counter() - t)
"""


def run_measured(argv: list[str]) -> tuple[str, float, float]:
    """Run a command: its stdout, CPU seconds (it and its children) and peak RSS in MiB.

    Reaped with wait4, which reports the child's own resource use (getrusage(CHILDREN) would
    mix the classic run with ours).
    """
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    out_chunks: list[bytes] = []
    err_chunks: list[bytes] = []
    assert proc.stdout is not None and proc.stderr is not None  # noqa: S101 - PIPE given
    # Small outputs: read them fully, then reap with wait4 to get the child's rusage.
    out_chunks.append(proc.stdout.read())
    err_chunks.append(proc.stderr.read())
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):  # `process` exits 1 when a video failed: still a result
        sys.stderr.write(b"".join(err_chunks).decode(errors="replace"))
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(argv)}")
    return b"".join(out_chunks).decode(), usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def classic(videos: list[Path], flags: list[str]) -> dict[str, Any]:
    out, cpu, peak = run_measured(
        [
            sys.executable,
            str(CLASSIC),
            str(COURSE / "encoding"),
            *map(str, videos),
            *flags,
            "--json",
        ]
    )
    data = json.loads(out)
    return {
        "total": data["total_seconds"],
        "cpu": cpu,
        "peak_mib": peak,
        "videos": {
            name: {"people": v["people"], "seconds": v["seconds"]}
            for name, v in data["videos"].items()
        },
    }


def ours(videos: list[Path], faces: Path, mode: str, workers: int | None) -> dict[str, Any]:
    argv = [sys.executable, "-m", "lambda_fn", "process", *map(str, videos)]
    argv += ["--faces", str(faces), "--mode", mode, "--json"]
    if workers is not None:
        argv += ["--workers", str(workers)]
    out, cpu, peak = run_measured(argv)
    data = json.loads(out)
    return {
        "total": data["total_seconds"],
        "cpu": cpu,
        "peak_mib": peak,
        "videos": dict(_our_video(v, data["work"]) for v in data["videos"]),
    }


def _our_video(video: dict[str, Any], work: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(file name, answer and costs) of one video of `hybrid-lambda process --json`."""
    key = video.get("input", {}).get("key")
    counts = work.get(key, {})
    timings = video.get("timings", {})
    failed = "code" in video
    return Path(key or video["input_key"]).name, {
        "people": [f"ERROR {video['code']}"]
        if failed
        else [p["name"] for p in video.get("people", [])],
        "seconds": timings.get("total", 0.0),
        "cpu": timings.get("cpu", 0.0),
        "floor": floor(video, counts.get("faces_encoded", 0)),
        "encoded": counts.get("faces_encoded", 0),
        "tracked": counts.get("faces_tracked", 0),
    }


def floor(video: dict[str, Any], encoded: int) -> float:
    """The floor for one video, from its own stage timings: decoding the sampled frames, the
    detection work done, and one descriptor per distinct face (people plus unknown groups)
    at the run's own cost per descriptor. What is above it: tracking, re-encoding a face
    seen again, matching, frames and overheads."""
    timings = video.get("timings", {})
    per_descriptor = timings.get("encode", 0.0) / max(1, encoded)
    distinct = len(video.get("people", [])) + len(video.get("unknown_faces", []))
    return float(
        timings.get("decode", 0.0) + timings.get("detect", 0.0) + per_descriptor * distinct
    )


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median total (the lower middle one for an even count)."""
    return sorted(runs, key=lambda run: run["total"])[(len(runs) - 1) // 2]


def cold_start(faces: Path, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", COLD_START.format(faces=str(faces))],
            capture_output=True,
            check=True,
            cwd=REPO,
        ).stdout
        times.append(float(out.decode().strip().splitlines()[-1]))
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="*", type=Path)
    parser.add_argument(
        "--rounds", type=int, default=2, help="rounds of (classic, ours) per mode; medians used"
    )
    parser.add_argument("--workers", type=int, help="our processes (default: one per core)")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        raise SystemExit(
            "ffmpeg is not on PATH (the classic baseline needs it): apt-get install ffmpeg"
        )
    videos = args.videos or sorted((COURSE / "test_case_1").glob("*.mp4"))
    with tempfile.TemporaryDirectory() as tmp:
        faces = Path(tmp) / "course_faces.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "lambda_fn",
                "faces",
                "import-pickle",
                str(COURSE / "encoding"),
                "-o",
                str(faces),
            ],
            check=True,
            capture_output=True,
            cwd=REPO,
        )
        report: dict[str, Any] = {"videos": [v.name for v in videos], "cpus": os.cpu_count()}
        report["cold_start_s"] = round(cold_start(faces), 3)
        differ = False
        for mode, flags in MODES.items():
            # Alternate the two, so that both see the same changes of machine load.
            classic_runs, our_runs = [], []
            for _ in range(args.rounds):
                classic_runs.append(classic(videos, flags))
                our_runs.append(ours(videos, faces, mode, args.workers))
            for run in classic_runs + our_runs:  # every run must give the classic answers
                for name, video in run["videos"].items():
                    differ |= video["people"] != classic_runs[0]["videos"][name]["people"]
            theirs, mine = median_run(classic_runs), median_run(our_runs)
            ratio = theirs["total"] / mine["total"] if mine["total"] else float("inf")
            runs = our_runs
            label = f"classic {'--all-frames' if flags else 'first-match'} vs ours --mode {mode}"
            print(f"\n== {label}")
            print(f"{'video':<14}{'classic':>9}{'ours':>8}  {'answer':<24}{'enc/tracked':>12}")
            for name, theirs_video in theirs["videos"].items():
                mine_video = mine["videos"].get(name, {"people": ["MISSING"], "seconds": 0.0})
                same = theirs_video["people"] == mine_video["people"]
                differ |= not same
                answer = "+".join(mine_video["people"]) or "-"
                if not same:
                    answer += f"  DIFFERS (classic: {'+'.join(theirs_video['people']) or '-'})"
                print(
                    f"{name:<14}{theirs_video['seconds']:>8.2f}s{mine_video['seconds']:>7.2f}s  "
                    f"{answer:<24}{mine_video.get('encoded', 0):>7}/{mine_video.get('tracked', 0)}"
                )
            print(
                f"{'total':<14}{theirs['total']:>8.2f}s{mine['total']:>7.2f}s  "
                f"ratio {ratio:.2f}x (target >= {TARGET_RATIO:.0f}x: "
                f"{'met' if ratio >= TARGET_RATIO else 'NOT met'})"
            )
            floor_s = sum(v["floor"] for v in mine["videos"].values())
            print(
                f"floor (our decode + detection + one descriptor per distinct face): "
                f"{floor_s:.2f}s; ours is {mine['total'] / floor_s if floor_s else 0:.2f}x it, "
                f"the classic {theirs['total'] / floor_s if floor_s else 0:.1f}x"
            )
            cpu_ratio = theirs["cpu"] / mine["cpu"] if mine["cpu"] else float("inf")
            rounds = ", ".join(
                f"{c['total']:.2f}s/{o['total']:.2f}s"
                for c, o in zip(classic_runs, our_runs, strict=True)
            )
            print(
                f"rounds (classic/ours): {rounds} (medians shown); peak RSS classic "
                f"{theirs['peak_mib']:.0f} MiB, ours {mine['peak_mib']:.0f} MiB (largest process)"
            )
            work_cpu = sum(v["cpu"] for v in mine["videos"].values())
            print(
                f"CPU seconds (whole run, imports included, all processes): classic "
                f"{theirs['cpu']:.2f}, ours {mine['cpu']:.2f} (of which recognition "
                f"{work_cpu:.2f}), ratio {cpu_ratio:.1f}x"
            )
            report[mode] = {
                "classic_s": theirs["total"],
                "ours_s": mine["total"],
                "classic_runs_s": [r["total"] for r in classic_runs],
                "ours_runs_s": [r["total"] for r in runs],
                "ratio": round(ratio, 2),
                "floor_s": round(floor_s, 3),
                "cpu_s": {"classic": round(theirs["cpu"], 2), "ours": round(mine["cpu"], 2)},
                "peak_rss_mib": {
                    "classic": round(theirs["peak_mib"]),
                    "ours": round(mine["peak_mib"]),
                },
            }
        print(
            f"\ncold start (import + models + known faces, fresh interpreter, median of 3): "
            f"{report['cold_start_s']:.2f}s"
        )
        report["answers_differ"] = differ
        if args.json:
            print(json.dumps(report))
        if differ:
            print("FAILED: the answers differ", file=sys.stderr)
            return 1
        return 0


if __name__ == "__main__":
    sys.exit(main())
