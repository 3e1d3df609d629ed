"""End-to-end workload benchmark: the local pipeline against the classic approach, same clips.

    uv run --frozen --all-extras python bench/workload.py [--repeat N] [--cases DIR] [--json]

Ours: the local cloud (`hybrid-local cloud`, moto's server provisioned with the course
table and known faces) and the local Lambda runtime (`hybrid-local serve`, the real
handler), fed by `hybrid-local workload --direct` (every clip, N times, put straight into the
input bucket; timed from the first put to the last graded result). The baseline: the classic
approach (../shared/bench/classic_baseline.py: ffmpeg to JPEGs, face_encodings per frame)
processing the same clips one after another in one process. Prints videos/min of both and the
ratio; exits 1 if our answers are not all correct.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("HYBRID_SHARED_DATA", REPO.parent / "shared" / "data"))
CLASSIC = REPO.parent / "shared" / "bench" / "classic_baseline.py"
COURSE = SHARED / "cse546"
# Written by `hybrid-local cloud` (local_stack/cloud.py: STATE_FILE, ENV_FILE).
STATE_FILE, ENV_FILE = "local-cloud.json", "local-cloud.env"


sys.path.insert(0, str(REPO))
from hybrid_common.students import read_students  # noqa: E402 -- after the path set-up above
from local_stack.demo import read_env_file  # noqa: E402 -- after the path set-up above
from local_stack.expectations import (  # noqa: E402 -- after the path set-up above
    expected_from_table,
    read_expectations,
    render_mapping,
)


def expectations_in_table_words(mapping: Path, out: Path) -> Path:
    """The course mapping in the students table's own words (it says `freshman` where the
    table says `freshmen`), as `make demo-samples` grades."""
    expected, _notes = expected_from_table(
        read_expectations(mapping), read_students(COURSE / "student_data.json")
    )
    out.write_text(render_mapping(expected), encoding="utf-8")
    return out


def course_faces(out: Path) -> Path:
    """The course's known faces at `out`, converted from its pickle (safely: no code runs)."""
    subprocess.run(
        [sys.executable, "-m", "lambda_fn", "faces", "import-pickle",
         str(COURSE / "encoding"), "-o", str(out)],
        cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    return out


def cannot_run(cases: Path, *, classic: bool = True) -> str | None:
    """Why a bench on the course clips cannot run here (None if it can)."""
    if not (COURSE / "encoding").exists() or not cases.is_dir():
        return f"no course data under {SHARED}"
    if classic and shutil.which("ffmpeg") is None:
        return "the classic baseline needs ffmpeg (apt-get install ffmpeg)"
    return None


class Stack:
    """The local cloud and the function runtime as subprocesses, logs in the work folder."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("HYBRID_")},
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local-not-a-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "HYBRID_STAGING_ROOT": str(work),
            "HYBRID_CONFIG": "",
            "HYBRID_LOG_FORMAT": "json",
        }

    def _start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        with (self.work / f"{name}.log").open("wb") as log:
            self.procs.append(
                subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
            )

    def start(self, known_faces: Path, cloud_args: list[str] | None = None) -> dict[str, str]:
        self._start(
            "local-cloud",
            [sys.executable, "-m", "local_stack", "cloud", "--port", "0",
             "--state-dir", str(self.work), "--known-faces", str(known_faces),
             "--students", str(COURSE / "student_data.json"), *(cloud_args or [])],
            self.env,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while not (self.work / STATE_FILE).exists() or not (self.work / ENV_FILE).exists():
            if self.procs[0].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"local cloud did not start; see {self.work}/local-cloud.log")
            time.sleep(0.1)
        env = {**self.env, **read_env_file(self.work / ENV_FILE)}
        self._start(
            "serve-local",
            # A free port for the Invoke API: a demo or another bench may hold the default.
            [sys.executable, "-m", "local_stack", "serve", "--invoke-port", "0",
             "--cloud-state", str(self.work / STATE_FILE)],
            env,
        )  # fmt: skip
        return env

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def run_ours(env: dict[str, str], cases: Path, expect: Path, repeat: int) -> dict[str, Any]:
    argv = [sys.executable, "-m", "local_stack", "workload", str(cases), "--direct", "--json",
            "--expect", str(expect), "--repeat", str(repeat), "--timeout", "1800"]  # fmt: skip
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, check=False)
    if not done.stdout.strip():
        raise RuntimeError(f"workload printed nothing (exit {done.returncode}):\n{done.stderr!r}")
    report: dict[str, Any] = json.loads(done.stdout)
    report["exit_status"] = done.returncode
    return report


def run_classic(videos: list[Path]) -> dict[str, Any]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(CLASSIC), str(COURSE / "encoding"), *map(str, videos), "--json"],
        cwd=REPO, capture_output=True, check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    if done.returncode:
        raise RuntimeError(f"classic baseline failed:\n{done.stderr.decode()[-2000:]}")
    return {"videos": len(videos), "elapsed_s": round(elapsed, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, default=COURSE / "test_case_1")
    parser.add_argument("--expect", type=Path, default=COURSE / "mapping")
    parser.add_argument("--repeat", type=int, default=4, help="submit each clip N times")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    if reason := cannot_run(args.cases):
        print(f"workload bench skipped: {reason}")
        return 0
    videos = sorted(args.cases.glob("*.mp4"))
    work = Path(tempfile.mkdtemp(prefix="bench-workload-"))
    stack = Stack(work)
    try:
        known = course_faces(work / "known_faces.json")
        expect = expectations_in_table_words(args.expect, work / "expected.mapping")
        env = stack.start(known)
        ours = run_ours(env, args.cases, expect, args.repeat)
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    classic = run_classic(videos * args.repeat)
    ours_rate = 60 * ours["videos"] / ours["elapsed_s"]
    classic_rate = 60 * classic["videos"] / classic["elapsed_s"]
    print(f"{'end-to-end workload':<36} {'videos':>6} {'seconds':>8} {'videos/min':>11}")
    print(
        f"{'classic, sequential, one process':<36} {classic['videos']:>6} "
        f"{classic['elapsed_s']:>8.1f} {classic_rate:>11.1f}"
    )
    print(
        f"{'ours: workload --direct → serve-local':<36} {ours['videos']:>6} "
        f"{ours['elapsed_s']:>8.1f} {ours_rate:>11.1f}"
    )
    print(
        f"ratio {ours_rate / classic_rate:.1f}x; ours {ours['correct']}/{ours['videos']} correct, "
        f"latency p50 {ours['latency_s']['p50']} s, p95 {ours['latency_s']['p95']} s"
    )
    if args.json:
        print(json.dumps({"ours": ours, "classic": classic, "ratio": ours_rate / classic_rate}))
    return 0 if ours["correct"] == ours["videos"] else 1


if __name__ == "__main__":
    sys.exit(main())
