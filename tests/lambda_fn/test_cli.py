"""`hybrid-lambda` end to end, as a subprocess: faces import-pickle/build/show and process."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hybrid_common.result_schema import check_details
from lambda_fn.known_faces import KnownFaces
from tests.lambda_fn.test_safe_pickle import malicious_pickle

REPO = Path(__file__).resolve().parents[2]


def hybrid_lambda(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lambda_fn", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


@pytest.fixture(scope="module")
def course_faces(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("faces") / "course.json"
    done = hybrid_lambda("faces", "import-pickle", shared_data / "cse546" / "encoding", "-o", out)
    assert done.returncode == 0, done.stderr
    assert "11 faces of 11 people" in done.stdout
    return out


def test_import_pickle_writes_a_valid_store(course_faces: Path) -> None:
    store = KnownFaces.load(course_faces)
    assert len(store) == 11 and set(store.sources) == {"encoding"}
    shown = hybrid_lambda("faces", "show", course_faces)
    assert shown.returncode == 0 and "floki\t1" in shown.stdout.splitlines()


def test_import_pickle_refuses_a_malicious_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "encoding"
    evil.write_bytes(malicious_pickle(marker))
    done = hybrid_lambda("faces", "import-pickle", evil, "-o", tmp_path / "out.json")
    assert done.returncode == 2
    assert "refused" in done.stderr and "Traceback" not in done.stderr
    assert not marker.exists() and not (tmp_path / "out.json").exists()


@pytest.mark.slow
def test_faces_build_reports_skipped_photos(shared_data: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    (photos / "lin_manuel_miranda").mkdir(parents=True)
    (photos / "lin_manuel_miranda" / "lin.png").symlink_to(
        shared_data / "faces" / "known" / "lin_manuel_miranda" / "lin-manuel-miranda.png"
    )
    (photos / "group").mkdir()
    (photos / "group" / "two.jpg").symlink_to(shared_data / "faces" / "probes" / "two_people.jpg")
    out = tmp_path / "known.json"
    done = hybrid_lambda("faces", "build", photos, "-o", out)
    assert done.returncode == 0, done.stderr
    assert "1 faces of 1 people, 1 photos skipped" in done.stdout
    assert "two.jpg: 2 faces" in done.stderr
    assert KnownFaces.load(out).names == ["lin_manuel_miranda"]


@pytest.mark.slow
def test_process_prints_one_line_per_video_and_fails_on_errors(
    shared_data: Path, course_faces: Path, tmp_path: Path
) -> None:
    clips = shared_data / "cse546" / "test_case_1"
    bogus = tmp_path / "bogus.mp4"
    bogus.write_text("not a video")
    done = hybrid_lambda(
        "process", clips / "test_6.mp4", bogus, clips / "test_0.mp4",
        "--faces", course_faces, "--students", shared_data / "cse546" / "student_data.json",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    lines = [line.split("\t") for line in done.stdout.splitlines()]
    assert [line[:2] for line in lines[:3]] == [
        ["test_6.mp4", "floki"],
        ["bogus.mp4", lines[1][1]],
        ["test_0.mp4", "president_trump"],
    ]
    assert lines[1][1].startswith("ERROR not_a_video")
    assert lines[0][2].endswith("s") and lines[3][0] == "total"


@pytest.mark.slow
def test_process_json_with_students(shared_data: Path, course_faces: Path) -> None:
    clip = shared_data / "cse546" / "test_case_1" / "test_2.mp4"
    done = hybrid_lambda(
        "process", clip, "--faces", course_faces, "--mode", "first-match", "--json",
        "--students", shared_data / "cse546" / "student_data.json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    (video,) = document["videos"]
    assert check_details(video).frames_sampled == 1, "the function's <stem>.json schema"
    assert video["status"] == "ok"
    (person,) = video["people"]
    assert (person["name"], person["major"], person["year"]) == ("mr_bean", "lawyer", "freshmen")
    assert document["options"]["mode"] == "first-match"
    # The known-faces version it used: the file's SHA-256, as the function reports it.
    assert video["known_faces"] == {
        "version": hashlib.sha256(course_faces.read_bytes()).hexdigest(),
        "source": str(course_faces),
    }


def test_bad_faces_file_is_one_readable_line(tmp_path: Path) -> None:
    bad = tmp_path / "faces.json"
    bad.write_text("{}")
    done = hybrid_lambda("process", tmp_path / "x.mp4", "--faces", bad)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"hybrid-lambda: error: {bad}: 'format' must be 'hybridsphere.known-faces'"
    ]


def test_usage_errors_exit_2() -> None:
    done = hybrid_lambda("process")
    assert done.returncode == 2 and "usage: hybrid-lambda process" in done.stderr
