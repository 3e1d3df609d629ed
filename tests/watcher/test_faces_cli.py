"""`hybrid-watcher faces`: pull, list, enrol from a result's unknown group, remove, push with a
verified checksum, keep the previous version, roll back; refusals that lose nothing."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from hybrid_common.known_faces_file import Face, KnownFacesFile
from watcher.cli import main
from watcher.journal import JournalStore, State

KEY = "_assets/known_faces.json"
SID = "20260101T000000Z-0000aaaa"


def descriptor(seed: float) -> list[float]:
    return [round(seed + i / 1000, 6) for i in range(128)]


def write_result(done: Path, stem: str, groups: Any) -> Path:
    """A done/ group as the function writes it, with unknown groups in the contract's shape."""
    done.mkdir(parents=True, exist_ok=True)
    (done / f"{stem}.mp4").write_bytes(b"video")
    (done / f"{stem}.csv").write_text("name,major,year\n")
    details = done / f"{stem}.json"
    doc = {"format": "hybridsphere.result", "people": [], "unknown_faces": groups,
           "known_faces": {"version": "abc", "source": f"s3://b/{KEY}"}}  # fmt: skip
    details.write_text(json.dumps(doc))
    return details


def group(gid: str, seed: float, nearest: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": gid, "first_seen_s": 1.0, "last_seen_s": 4.5, "samples": 3,
            "descriptor": descriptor(seed), "nearest": nearest}  # fmt: skip


@pytest.fixture
def cloud(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moto_endpoint: str, unique_name: str
) -> Any:
    """A bucket on moto's server, and the watcher's settings pointing at it."""
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=unique_name)
    monkeypatch.setenv("HYBRID_STAGING_ROOT", str(tmp_path / "staging"))
    monkeypatch.setenv("HYBRID_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("HYBRID_KNOWN_FACES_URI", f"s3://{unique_name}/{KEY}")
    (tmp_path / "staging").mkdir()
    s3.bucket = unique_name  # type: ignore[attr-defined]
    return s3


def cloud_set(s3: Any, key: str = KEY) -> KnownFacesFile:
    body = s3.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    return KnownFacesFile.from_bytes(body)


def test_enrol_push_rollback_round(
    cloud: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "staging"
    groups = [group("u1", 0.1, {"name": "x", "distance": 0.6}), group("u2", 0.3)]
    details = write_result(root / "done", "party", groups)
    assert main(["faces", "pull"]) == 0  # nothing in the cloud yet: an empty set
    assert KnownFacesFile.load(root / "known_faces.json") == KnownFacesFile()
    assert main(["faces", "unknown"]) == 0
    listed = capsys.readouterr().out
    assert "u1: 1.0-4.5 s, 3 samples, looks like x at 0.6" in listed and "u2" in listed

    assert main(["faces", "enrol", "ada_lovelace", str(details), "--face", "u1"]) == 0
    assert main(["faces", "push"]) == 0
    first = cloud_set(cloud)
    assert first.people == ["ada_lovelace"]
    assert first.faces[0].encoding == tuple(descriptor(0.1))
    assert "party.json u1" in first.faces[0].source
    # S3 stored (and verified) the SHA-256 the push sent.
    head = cloud.head_object(Bucket=cloud.bucket, Key=KEY, ChecksumMode="ENABLED")
    digest = base64.b64encode(hashlib.sha256(first.to_bytes()).digest()).decode()
    assert head["ChecksumSHA256"] == digest
    # The version it prints is the one results made with it will name (SHA-256 of the bytes).
    assert f"version {hashlib.sha256(first.to_bytes()).hexdigest()} " in capsys.readouterr().out

    assert main(["faces", "enrol", "bo", str(details), "--face", "u2"]) == 0
    assert main(["faces", "push"]) == 0
    assert cloud_set(cloud).people == ["ada_lovelace", "bo"]
    assert cloud_set(cloud, KEY + ".previous") == first

    capsys.readouterr()
    assert main(["faces", "list"]) == 0
    out = capsys.readouterr().out
    assert "2 people, 2 vectors" in out and "ada_lovelace  (1 vector)" in out
    assert "party.json u2" in out

    assert main(["faces", "rollback"]) == 0
    assert cloud_set(cloud) == first
    assert cloud_set(cloud, KEY + ".previous").people == ["ada_lovelace", "bo"]
    assert KnownFacesFile.load(root / "known_faces.json") == first  # the working copy follows
    assert main(["faces", "rollback"]) == 0  # undoes the rollback
    assert cloud_set(cloud).people == ["ada_lovelace", "bo"]


def test_push_refuses_an_invalid_file_and_changes_nothing(
    cloud: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = KnownFacesFile((Face("ada", tuple(descriptor(0.1)), "a.jpg"),))
    built = tmp_path / "built.json"
    built.write_bytes(good.to_bytes())
    assert main(["faces", "push", str(built)]) == 0  # `hybrid-lambda faces build`'s output
    for bad in (b"{", good.to_bytes().replace(b"0.1,", b"NaN,", 1), b"\x80\x04pickle"):
        built.write_bytes(bad)
        assert main(["faces", "push", str(built)]) == 65
        assert "refused" in capsys.readouterr().err
    assert cloud_set(cloud) == good
    with pytest.raises(cloud.exceptions.NoSuchKey):
        cloud.get_object(Bucket=cloud.bucket, Key=KEY + ".previous")


def test_push_refuses_when_the_cloud_changed_since_pull(
    cloud: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "staging"
    details = write_result(root / "done", "clip", [group("u1", 0.2)])
    assert main(["faces", "pull"]) == 0
    assert main(["faces", "enrol", "ada", str(details), "--face", "u1"]) == 0
    other = KnownFacesFile((Face("someone", tuple(descriptor(0.9)), "x.jpg"),))
    cloud.put_object(Bucket=cloud.bucket, Key=KEY, Body=other.to_bytes())  # another operator
    assert main(["faces", "push"]) == 1
    assert "changed since the working copy was pulled" in capsys.readouterr().err
    assert cloud_set(cloud) == other
    # pull would throw the unpushed enrolment away: refused too, unless forced.
    assert main(["faces", "pull"]) == 1
    assert KnownFacesFile.load(root / "known_faces.json").people == ["ada"]
    assert main(["faces", "push", "--force"]) == 0
    assert cloud_set(cloud).people == ["ada"]
    assert cloud_set(cloud, KEY + ".previous") == other


def test_enrol_by_submission_id_and_its_refusals(
    cloud: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "staging"
    write_result(root / "done", "clip", [group("u1", 0.2)])
    journal = JournalStore(root / "journal.sqlite3")
    journal.create(
        submission_id=SID, original_name="clip.mp4", source_path="x", staged_path="y",
        key=f"videos/n/{SID}/clip.mp4", size=5,
    )  # fmt: skip
    journal.transition(SID, State.DONE, final_path=str(root / "done" / "clip.mp4"))
    journal.close()
    assert main(["faces", "enrol", "ada", SID, "--face", "u1"]) == 66  # no working copy yet
    assert "faces pull" in capsys.readouterr().err
    assert main(["faces", "pull"]) == 0

    assert main(["faces", "enrol", "ada", SID[:20], "--face", "u9"]) == 2
    assert "no unknown face 'u9' (it lists: u1)" in capsys.readouterr().err
    assert main(["faces", "enrol", "bad\nname", SID, "--face", "u1"]) == 65
    assert main(["faces", "enrol", "ada", SID, "--face", "u1"]) == 0
    assert main(["faces", "enrol", "ada", SID, "--face", "u1"]) == 2
    assert "already enrolled as ada" in capsys.readouterr().err

    old = write_result(root / "done", "old", 2)  # a function that only counted them
    assert main(["faces", "enrol", "bo", str(old), "--face", "u1"]) == 66
    assert "retry --done" in capsys.readouterr().err
    broken = write_result(root / "done", "broken", [{"id": "u1", "descriptor": [1.0] * 12}])
    assert main(["faces", "enrol", "bo", str(broken), "--face", "u1"]) == 65
    assert KnownFacesFile.load(root / "known_faces.json").people == ["ada"]

    assert main(["faces", "remove", "nobody"]) == 2
    assert main(["faces", "remove", "ada"]) == 0
    assert KnownFacesFile.load(root / "known_faces.json") == KnownFacesFile()


def test_commands_say_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HYBRID_STAGING_ROOT", str(tmp_path))
    monkeypatch.delenv("HYBRID_KNOWN_FACES_URI", raising=False)
    assert main(["faces", "push"]) == 78
    assert "known_faces_uri is not set" in capsys.readouterr().err
    assert main(["faces", "rollback"]) == 78
    assert main(["faces", "list"]) == 66
    monkeypatch.setenv("HYBRID_KNOWN_FACES_URI", "s3://Bad_Bucket/x.json")
    with pytest.raises(SystemExit) as exit_:
        main(["faces", "list"])
    assert exit_.value.code == 78
    monkeypatch.setenv("HYBRID_KNOWN_FACES_URI", "s3://bucket/known.pkl")
    with pytest.raises(SystemExit):
        main(["faces", "list"])
