"""`hybrid-local workload`: expectations and grading, the course's test_case_2, and real runs
(a subprocess) through `hybrid-local serve` with the stand-in handler, directly to the bucket and
through the real watcher daemon's inbox.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hybrid_common.results import PersonRow
from hybrid_common.students import Student
from local_stack.expectations import (
    ExpectationError,
    build_case2,
    expected_from_table,
    judge,
    parse_expectations,
    percentile,
    read_expectations,
)
from local_stack.provision import Resources
from tests.servers import REPO, ServeLocal, provision_stack
from tests.watcher_daemon import Cloud, Daemon, video_bytes

HYBRID_LOCAL = [sys.executable, "-m", "local_stack"]
BEAN = PersonRow("mr_bean", "lawyer", "freshmen")
BIDEN = PersonRow("president_biden", "history", "sophomore")


# --- expectations and grading ---


def test_both_formats_parse_and_judge_as_documented() -> None:
    expected = parse_expectations(
        "# course format\n"
        "a.mp4:lawyer,freshmen\n"
        "b.mp4\tpresident_biden+mr_bean\n"
        "c.mp4\t-\n"
        "\n"
        "d.mp4 : History , Sophomore\n"
    )
    assert judge(expected["a.mp4"], [BEAN, BIDEN]) == (True, "lawyer,freshmen")
    assert judge(expected["a.mp4"], [BIDEN, BEAN])[0] is False, "only the first row counts"
    assert judge(expected["a.mp4"], []) == (False, "(nobody known)")
    assert judge(expected["b.mp4"], [BEAN, BIDEN])[0] is True, "names compare as a set"
    assert judge(expected["b.mp4"], [BEAN])[0] is False
    assert judge(expected["c.mp4"], []) == (True, "-")
    assert judge(expected["c.mp4"], [BEAN])[0] is False
    assert judge(expected["d.mp4"], [BIDEN])[0] is True, "spaces and case are folded"


def test_nothing_else_is_normalised() -> None:
    expected = parse_expectations("a.mp4:lawyer,freshman\n")
    assert judge(expected["a.mp4"], [BEAN]) == (False, "lawyer,freshmen")


@pytest.mark.parametrize(
    "text", ["a.mp4 lawyer freshmen\n", "a.mp4:lawyer\n", ":x,y\n", "a.mp4:x,y\na.mp4:x,y\n"]
)
def test_malformed_expectations_name_the_line(text: str) -> None:
    with pytest.raises(ExpectationError, match=r"expectations:\d"):
        parse_expectations(text)


def test_percentiles_use_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.95) == 95
    assert percentile(values, 1.0) == 100
    assert percentile([3.0], 0.95) == 3.0
    assert percentile([], 0.5) is None


def test_expectations_from_the_table_follow_the_table_and_report_disagreements() -> None:
    students = [
        Student("ann", "chemistry", "senior"),
        Student("bob", "physics", "junior"),
        Student("cy", "physics", "senior"),
    ]
    mapping = parse_expectations("1.mp4:chemistry,seniors\n2.mp4:physics,junior\n3.mp4:physics,x\n")
    with pytest.raises(ExpectationError, match=r"3\.mp4"):
        expected_from_table(mapping, students)  # two physics students: no guessing
    del mapping["3.mp4"]
    expected, notes = expected_from_table(mapping, students)
    assert expected == {"1.mp4": ("chemistry", "senior"), "2.mp4": ("physics", "junior")}
    assert len(notes) == 1 and "ann" in notes[0] and "chemistry,seniors" in notes[0]


@pytest.mark.shared_data
def test_the_course_test_case_2_is_built_from_its_index(shared_data: Path, tmp_path: Path) -> None:
    data = shared_data / "cse546"
    out = tmp_path / "case2"
    assert build_case2(data / "test_case_2.index", data / "test_case_1", out) == 100
    for line in (data / "test_case_2.index").read_text().splitlines():
        target, source = line.split()
        assert (out / target).read_bytes() == (data / "test_case_1" / source).read_bytes()

    index = str(data / "test_case_2.index")
    done = subprocess.run(
        [*HYBRID_LOCAL, "workload", "--build-case2", str(out), "--index", index],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "lawyer,freshman" in done.stderr and "freshmen" in done.stderr
    table = read_expectations(out / "expected.mapping")
    course = read_expectations(data / "mapping")
    assert set(table) == set(course) and len(table) == 100
    changed = {v for v in table if table[v] != course[v]}
    assert {course[v].describe() for v in changed} == {"lawyer,freshman"}
    assert {table[v].describe() for v in changed} == {"lawyer,freshmen"}


# --- real runs ---


ANSWERS = {
    "bean.mp4": [["mr_bean", "lawyer", "freshmen"]],
    "pair.mp4": [["president_biden", "history", "sophomore"], ["mr_bean", "lawyer", "freshmen"]],
    "empty.mp4": [],
}
EXPECT = "bean.mp4:lawyer,freshmen\npair.mp4\tmr_bean+president_biden\nempty.mp4\t-\n"


@pytest.fixture
def stack(moto_endpoint: str, unique_name: str) -> Resources:
    return provision_stack(moto_endpoint, unique_name, function_timeout_s=5)


def _cases(tmp_path: Path, names: list[str]) -> Path:
    cases = tmp_path / "cases"
    cases.mkdir()
    for name in names:
        (cases / name).write_bytes(video_bytes(name))
    (cases / "notes.txt").write_text("not a video: ignored")
    return cases


def _serve(stack: Resources, tmp_path: Path, answers: dict[str, list[list[str]]]) -> ServeLocal:
    answers_file = tmp_path / "answers.json"
    answers_file.write_text(json.dumps(answers))
    return ServeLocal(
        stack,
        tmp_path / "stand-in",
        extra_env={
            "STAND_IN_ANSWERS": str(answers_file),
            "STAND_IN_SLEEP_S": "0.1",
            "HYBRID_FUNCTION_TIMEOUT_S": "5",
        },
    )


def _workload(stack: Resources, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRID_")}
    env.update(
        {
            "HYBRID_CONFIG": "",
            "HYBRID_ENDPOINT_URL": stack.endpoint_url or "",
            "HYBRID_INPUT_BUCKET": stack.input_bucket,
            "HYBRID_OUTPUT_BUCKET": stack.output_bucket,
            "HYBRID_STAGING_ROOT": str(tmp_path / "staging"),
            "HYBRID_NODE_ID": "node-w",
        }
    )
    return subprocess.run(
        [*HYBRID_LOCAL, "workload", *args, "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize(("how_many", "videos"), [(["--repeat", "2"], 6), (["--count", "5"], 5)])
def test_a_direct_workload_graded_correct_exits_0(
    stack: Resources, tmp_path: Path, how_many: list[str], videos: int
) -> None:
    cases = _cases(tmp_path, list(ANSWERS))
    (tmp_path / "expect").write_text(EXPECT)
    runtime = _serve(stack, tmp_path, ANSWERS)
    try:
        done = _workload(
            stack,
            tmp_path,
            str(cases),
            "--direct",
            *how_many,
            "--expect",
            str(tmp_path / "expect"),
            "--timeout",
            "60",
        )
    finally:
        assert runtime.stop() == 0
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    counts = (report["videos"], report["correct"], report["wrong"], report["missing"])
    assert counts == (videos, videos, 0, 0)
    assert (
        0 < report["latency_s"]["p50"] <= report["latency_s"]["p95"] <= report["latency_s"]["max"]
    )
    assert report["throughput_per_min"] > 0
    keys = {e.get("key") for e in runtime.named("invocation.completed")}
    assert any(k and k.startswith(f"videos/node-w/{report['workload_id']}-") for k in keys)


@pytest.mark.slow
def test_wrong_and_missing_answers_exit_non_zero_and_are_listed(
    stack: Resources, tmp_path: Path
) -> None:
    cases = _cases(tmp_path, [*ANSWERS, "fail-always.mp4"])
    (tmp_path / "expect").write_text(EXPECT + "fail-always.mp4:math,senior\n")
    wrong = {**ANSWERS, "pair.mp4": [["president_biden", "history", "sophomore"]]}
    runtime = _serve(stack, tmp_path, wrong)
    try:
        done = _workload(
            stack,
            tmp_path,
            str(cases),
            "--direct",
            "--expect",
            str(tmp_path / "expect"),
            "--timeout",
            "5",
        )
    finally:
        assert runtime.stop() == 0
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert (report["correct"], report["wrong"], report["missing"]) == (2, 1, 1)
    problems = {p["video"]: p for p in report["problems"]}
    assert problems["pair.mp4"]["got"] == "president_biden"
    assert problems["pair.mp4"]["error"] == "expected mr_bean+president_biden"
    assert problems["fail-always.mp4"]["verdict"] == "missing"


@pytest.mark.slow
def test_an_inbox_workload_goes_through_the_watcher_daemon(
    stack: Resources, tmp_path: Path
) -> None:
    cases = _cases(tmp_path, list(ANSWERS))
    (tmp_path / "expect").write_text(EXPECT)
    runtime = _serve(stack, tmp_path, ANSWERS)
    daemon = Daemon(
        tmp_path / "staging",
        Cloud(stack.endpoint_url or "", stack.input_bucket, stack.output_bucket),
        node_id="node-w",
    )
    daemon.start()
    try:
        done = _workload(
            stack, tmp_path, str(cases), "--expect", str(tmp_path / "expect"), "--timeout", "60"
        )
    finally:
        daemon.stop()
        assert runtime.stop() == 0
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert (report["mode"], report["correct"], report["videos"]) == ("inbox", 3, 3)
    assert len(list((tmp_path / "staging" / "done").glob(f"{report['workload_id']}-*.csv"))) == 3
