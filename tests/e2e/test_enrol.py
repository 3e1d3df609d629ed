"""Known faces as a living set, end to end on the local stack (issue 16): a video whose person is
not known → its result lists an unknown group → `hybrid-watcher faces enrol` + `faces push` →
`hybrid-watcher retry --done --only-unknown` → the new result names the person, and its JSON
names the new known-faces version. The watcher daemon, moto, the Lambda emulator and the real
handler (PyAV, face_recognition) all run for real.

The second person set: ../shared/data/faces (the face_recognition project's photos and its
Hamilton clip); the known faces are built from every photo but Lin-Manuel Miranda's, whose face
the clip shows. His photo stands in for the operator's eyes: it picks the unknown group to enrol.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hybrid_common.known_faces_file import KnownFacesFile, distance, file_version
from hybrid_common.students import load_students, read_students
from local_stack.provision import Resources, make_clients, provision
from tests.servers import REPO, ServeLocal
from tests.watcher_daemon import Cloud, Daemon, drop
from watcher.cli import main

STRANGER = "lin_manuel_miranda"
CLIP = "short_hamilton_clip.mp4"
# face_recognition's own tolerance: his photo and the clip's group are one person below it.
SAME_PERSON = 0.6


def _known_without_stranger(faces: Path, tmp_path: Path) -> Path:
    photos = tmp_path / "photos"
    for person in (faces / "known").iterdir():
        if person.name != STRANGER:
            shutil.copytree(person, photos / person.name)
    built = tmp_path / "known_faces.json"
    subprocess.run(
        [sys.executable, "-m", "lambda_fn", "faces", "build", str(photos), "-o", str(built)],
        cwd=REPO, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return built


def _stranger_descriptor(faces: Path) -> list[float]:
    import face_recognition  # the test's eyes only: the VM side never imports it

    [photo] = (faces / "known" / STRANGER).iterdir()
    [encoding] = face_recognition.face_encodings(face_recognition.load_image_file(photo))
    return [float(x) for x in encoding]


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.timeout(900)
def test_an_unknown_person_is_enrolled_pushed_and_named_by_a_rerun(  # noqa: PLR0917 -- pytest fixtures
    shared_data: Path,
    moto_endpoint: str,
    unique_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    daemons: list[Daemon],
    capsys: pytest.CaptureFixture[str],
) -> None:
    faces = shared_data / "faces"
    known = _known_without_stranger(faces, tmp_path)
    assert STRANGER not in KnownFacesFile.load(known).people
    clients = make_clients(moto_endpoint, "us-east-1")
    resources = provision(
        clients,
        Resources(
            endpoint_url=moto_endpoint, region="us-east-1", input_bucket=f"{unique_name}-in",
            output_bucket=f"{unique_name}-out", table=f"{unique_name}-table",
            queue=f"{unique_name}-q",
        ),
        function_timeout_s=300,
        known_faces=known.read_bytes(),
    )  # fmt: skip
    people = [p.name for p in (faces / "known").iterdir()]
    students = tmp_path / "students.json"
    students.write_text(json.dumps([
        {"id": n, "name": name, "major": "music", "year": "senior"}
        for n, name in enumerate(sorted(people), 1)
    ]))  # fmt: skip
    load_students(clients.dynamodb, resources.table, read_students(students))

    root = tmp_path / "node"
    settings = {
        "HYBRID_CONFIG": "",  # no config file: the environment alone
        "HYBRID_STAGING_ROOT": str(root),
        "HYBRID_ENDPOINT_URL": moto_endpoint,
        "HYBRID_KNOWN_FACES_URI": resources.known_faces_uri,
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)  # for the `hybrid-watcher` commands run in-process
    runtime = ServeLocal(
        resources,
        tmp_path / "unused",
        extra_env={
            "HYBRID_HANDLER": "lambda_fn.handler.handler",
            "HYBRID_TABLE": resources.table,
            "HYBRID_KNOWN_FACES": resources.known_faces_uri,
            "HYBRID_FUNCTION_TIMEOUT_S": "300",
            "HYBRID_MAX_CONCURRENCY": "1",
            "HYBRID_WORKERS": "1",
            # A warm container checks for a new known-faces version before every video.
            "HYBRID_KNOWN_FACES_CHECK_S": "0",
        },
    )
    try:
        cloud = Cloud(moto_endpoint, resources.input_bucket, resources.output_bucket)
        daemon = Daemon(root, cloud, known_faces_uri=resources.known_faces_uri)
        daemons.append(daemon)
        daemon.start()
        drop(daemon.inbox, CLIP, (faces / "probes" / CLIP).read_bytes())
        daemon.wait_until(lambda: daemon.concluded(1), timeout=400)
        [first] = daemon.submissions()
        assert first.state.value == "done", first.error
        details = daemon.done / CLIP.replace(".mp4", ".json")
        before = json.loads(details.read_text())
        assert STRANGER not in [person["name"] for person in before["people"]]
        groups = before.get("unknown_faces")
        assert isinstance(groups, list) and groups, (
            "the function does not list unknown groups in <stem>.json yet (issue 16 part 1, "
            f"branch t16-function); unknown_faces = {groups!r}"
        )
        assert isinstance(before.get("known_faces"), dict), "no known_faces version in the result"
        old_version = before["known_faces"]["version"]

        # The operator's eyes: the group that is him.
        his = _stranger_descriptor(faces)
        nearest = min(groups, key=lambda g: distance(g["descriptor"], his))
        assert distance(nearest["descriptor"], his) < SAME_PERSON

        assert main(["faces", "pull"]) == 0
        assert main(["faces", "enrol", STRANGER, str(details), "--face", nearest["id"]]) == 0
        assert main(["faces", "push"]) == 0
        pushed = file_version((root / "known_faces.json").read_bytes())
        assert f"version {pushed} " in capsys.readouterr().out

        assert main(["retry", "--done", "--only-unknown"]) == 0
        assert CLIP in capsys.readouterr().out
        daemon.wait_until(lambda: daemon.concluded(2), timeout=400)
    finally:
        assert runtime.stop() == 0

    [second] = [s for s in daemon.submissions() if s.id != first.id]
    assert second.state.value == "done" and second.replaces == first.id, second.error
    after = json.loads(details.read_text())  # replaced in place: the same done/ group
    assert STRANGER in [person["name"] for person in after["people"]]
    assert STRANGER in (daemon.done / CLIP.replace(".mp4", ".csv")).read_text()
    version = after["known_faces"]["version"]
    assert version != old_version
    assert version == pushed
    assert sorted(p.name for p in daemon.done.iterdir() if p.name.endswith(".mp4")) == [CLIP]
    print(f"\nenrolled {STRANGER} from group {nearest['id']} of {len(groups)}; "
          f"known faces {old_version} → {version}")  # fmt: skip
