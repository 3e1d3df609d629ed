"""`hybrid-watcher faces`: see who was not recognised, enrol them, roll the set out (no dlib).

    faces pull                          the cloud's file → the working copy
    faces list                          people, vectors, where each came from
    faces unknown [RESULT ...]          unknown groups in results (default: all of done/)
    faces enrol NAME RESULT --face ID   add an unknown group's descriptor under NAME
    faces remove NAME                   drop every vector of NAME
    faces push [FILE]                   validate and upload (the previous version is kept)
    faces rollback                      put the previous version back

RESULT is a result's `<stem>.json` in done/ (or its video or CSV), or a submission id.
Building a set from photos needs dlib: `hybrid-lambda faces build`; `push FILE` takes its output.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybrid_common.keys import ResultKind
from hybrid_common.known_faces_file import (
    Face,
    KnownFacesFile,
    KnownFacesFileError,
    check_encoding,
    file_version,
)
from watcher.faces_cloud import FacesCloud, FacesCloudError
from watcher.journal import JournalStore, State
from watcher.settings import WatcherSettings, load_settings
from watcher.staging import Staging, write_atomic

EX_USAGE = 2
EX_DATAERR = 65  # sysexits.h: the input data was incorrect (an invalid known-faces file)
EX_NOINPUT = 66
EX_CONFIG = 78


class FacesCommandError(Exception):
    """A problem the operator can act on: printed as one line, with an exit status."""

    def __init__(self, message: str, status: int = EX_USAGE) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class UnknownGroup:
    """One unknown person of a result, as `<stem>.json` lists it."""

    id: str
    first_seen_s: float
    last_seen_s: float
    samples: int
    descriptor: list[Any]
    nearest: dict[str, Any] | None

    def describe(self) -> str:
        near = ""
        if self.nearest:
            near = f", looks like {self.nearest.get('name')} at {self.nearest.get('distance')}"
        return (f"{self.id}: {self.first_seen_s:.1f}-{self.last_seen_s:.1f} s, "
                f"{self.samples} samples{near}")  # fmt: skip


# --- results and their unknown groups ---


def details_path(settings: WatcherSettings, ref: str) -> Path:
    """The `<stem>.json` of a result given as a path (json, video or csv) or a submission id."""
    staging = Staging(settings.staging_root.resolve())
    path = Path(ref)
    if path.exists():
        if path.name.endswith(ResultKind.DETAILS.value):
            return path
        return staging.companion(path, ResultKind.DETAILS.value)
    if not settings.journal_path.exists():
        raise FacesCommandError(f"{ref}: no such file, and no journal to look it up in", EX_NOINPUT)
    journal = JournalStore(settings.journal_path, readonly=True)
    try:
        found = [s for s in journal.find(ref) if s.state is State.DONE and s.final_path]
    finally:
        journal.close()
    finals = sorted({s.final_path for s in found if s.final_path})
    if not finals:
        raise FacesCommandError(f"{ref}: no such file and no done submission", EX_NOINPUT)
    if len(finals) > 1:
        raise FacesCommandError(f"{ref} names several results: {', '.join(finals)}")
    return staging.companion(Path(finals[0]), ResultKind.DETAILS.value)


def unknown_groups(path: Path) -> list[UnknownGroup]:
    """The unknown groups a result's details list; a clear error if it lists none."""
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError as error:
        raise FacesCommandError(
            f"{path}: no details file (a result reused from the journal has only its CSV: "
            "`hybrid-watcher retry --done` processes it again)",
            EX_NOINPUT,
        ) from error
    except (OSError, ValueError) as error:
        raise FacesCommandError(f"{path}: not a readable result: {error}", EX_NOINPUT) from error
    groups = document.get("unknown_faces") if isinstance(document, dict) else None
    if not isinstance(groups, list):
        raise FacesCommandError(
            f"{path}: this result keeps no unknown faces (the function that made it only counted "
            "them): `hybrid-watcher retry --done` processes it again",
            EX_NOINPUT,
        )
    found = []
    for index, group in enumerate(groups):
        try:
            found.append(UnknownGroup(
                id=str(group["id"]), first_seen_s=float(group.get("first_seen_s", 0.0)),
                last_seen_s=float(group.get("last_seen_s", 0.0)),
                samples=int(group.get("samples", 0)), descriptor=group.get("descriptor"),
                nearest=group.get("nearest") if isinstance(group.get("nearest"), dict) else None,
            ))  # fmt: skip
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise FacesCommandError(
                f"{path}: unknown_faces[{index}] is malformed: {error!r}", EX_DATAERR
            ) from error
    return found


# --- the working copy ---


def _working(settings: WatcherSettings) -> KnownFacesFile:
    path = settings.known_faces_path
    if not path.exists():
        raise FacesCommandError(
            f"no working copy at {path}: `hybrid-watcher faces pull` fetches the current set",
            EX_NOINPUT,
        )
    try:
        return KnownFacesFile.load(path)
    except KnownFacesFileError as error:
        raise FacesCommandError(str(error), EX_DATAERR) from error


def _cloud(settings: WatcherSettings) -> FacesCloud:
    if not settings.known_faces_uri:
        raise FacesCommandError(
            "known_faces_uri is not set (HYBRID_KNOWN_FACES_URI or the config file): the "
            "function's HYBRID_KNOWN_FACES, e.g. s3://<input bucket>/_assets/known_faces.json",
            EX_CONFIG,
        )
    import boto3  # only these commands talk to S3 synchronously
    from botocore.config import Config

    s3 = boto3.client(
        "s3", endpoint_url=settings.endpoint_url, region_name=settings.region,
        config=Config(retries={"max_attempts": 5, "mode": "standard"}),
    )  # fmt: skip
    return FacesCloud(s3, settings.known_faces_uri, settings.known_faces_path)


# --- commands ---


def cmd_list(settings: WatcherSettings, args: argparse.Namespace) -> int:
    known = _working(settings)
    # The version results will name once this file is pushed as it is.
    version = file_version(settings.known_faces_path.read_bytes())
    if args.json:
        people = [
            {"name": name, "vectors": len(known.of(name)),
             "sources": [f.source for f in known.of(name)]}
            for name in known.people
        ]  # fmt: skip
        print(json.dumps({"version": version, "people": people}, indent=2))
        return 0
    print(f"{settings.known_faces_path}: {len(known.people)} people, {len(known)} vectors, "
          f"version {version}")  # fmt: skip
    for name in known.people:
        faces = known.of(name)
        print(f"{name}  ({len(faces)} vector{'s' if len(faces) != 1 else ''})")
        for face in faces:
            print(f"    {face.source or '(source not recorded)'}")
    return 0


def cmd_unknown(settings: WatcherSettings, args: argparse.Namespace) -> int:
    if args.results:
        paths = [details_path(settings, ref) for ref in args.results]
    else:
        done = Staging(settings.staging_root.resolve()).done
        paths = sorted(done.rglob("*" + ResultKind.DETAILS.value))
    shown = 0
    for path in paths:
        try:
            groups = unknown_groups(path)
        except FacesCommandError:
            if args.results:
                raise
            continue  # scanning done/: results without groups are simply not listed
        if groups:
            print(path)
            for group in groups:
                print(f"    {group.describe()}")
            shown += 1
    if not shown:
        print("no unknown faces", file=sys.stderr)
    return 0


def cmd_enrol(settings: WatcherSettings, args: argparse.Namespace) -> int:
    known = _working(settings)
    path = details_path(settings, args.result)
    groups = {group.id: group for group in unknown_groups(path)}
    group = groups.get(args.face)
    if group is None:
        listed = ", ".join(groups) or "none"
        raise FacesCommandError(f"{path}: no unknown face {args.face!r} (it lists: {listed})")
    try:
        encoding = check_encoding(group.descriptor, f"{path}: {group.id}")
        source = f"{path.name} {group.id} ({group.first_seen_s:.1f}-{group.last_seen_s:.1f} s)"
        for face in known.faces:
            if face.encoding == encoding:
                raise FacesCommandError(f"{path}: {group.id} is already enrolled as {face.name}")
        updated = known.adding(Face(args.name, encoding, source))
    except KnownFacesFileError as error:
        raise FacesCommandError(str(error), EX_DATAERR) from error
    write_atomic(settings.known_faces_path, updated.to_bytes())
    print(f"enrolled {args.name} from {group.describe()} "
          f"({len(updated.of(args.name))} vectors for {args.name}); "
          "`hybrid-watcher faces push` rolls it out")  # fmt: skip
    return 0


def cmd_remove(settings: WatcherSettings, args: argparse.Namespace) -> int:
    known = _working(settings)
    if not known.of(args.name):
        raise FacesCommandError(f"{args.name!r} is not in {settings.known_faces_path}")
    updated = known.without(args.name)
    write_atomic(settings.known_faces_path, updated.to_bytes())
    print(f"removed {args.name} ({len(known) - len(updated)} vectors); "
          "`hybrid-watcher faces push` rolls it out")  # fmt: skip
    return 0


def cmd_pull(settings: WatcherSettings, args: argparse.Namespace) -> int:
    known = _cloud(settings).pull(force=args.force)
    print(f"{settings.known_faces_path}: {len(known.people)} people, {len(known)} vectors, "
          f"version {file_version(settings.known_faces_path.read_bytes())}")  # fmt: skip
    return 0


def cmd_push(settings: WatcherSettings, args: argparse.Namespace) -> int:
    pushed = _cloud(settings).push(args.file, force=args.force)
    kept = "previous version kept for rollback" if pushed.previous_kept else "first version"
    print(f"pushed {settings.known_faces_uri}: version {pushed.version} "
          f"(ETag {pushed.etag}); {kept}")  # fmt: skip
    return 0


def cmd_rollback(settings: WatcherSettings, args: argparse.Namespace) -> int:
    del args
    pushed = _cloud(settings).rollback()
    print(f"rolled back {settings.known_faces_uri} to version {pushed.version} "
          f"(ETag {pushed.etag}); `faces rollback` again undoes it")  # fmt: skip
    return 0


ACTIONS = {
    "list": cmd_list, "unknown": cmd_unknown, "enrol": cmd_enrol, "remove": cmd_remove,
    "pull": cmd_pull, "push": cmd_push, "rollback": cmd_rollback,
}  # fmt: skip


def add_faces_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="people, vectors, where each came from")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    unknown = actions.add_parser("unknown", help="unknown groups in results (default: done/)")
    unknown.add_argument("results", nargs="*", metavar="RESULT")
    enrol = actions.add_parser("enrol", help="add an unknown group's descriptor under NAME")
    enrol.add_argument("name", metavar="NAME")
    enrol.add_argument("result", metavar="RESULT", help="<stem>.json in done/, or submission id")
    enrol.add_argument("--face", required=True, metavar="ID", help="the unknown group, e.g. u1")
    remove = actions.add_parser("remove", help="drop every vector of NAME")
    remove.add_argument("name", metavar="NAME")
    pull = actions.add_parser("pull", help="fetch the cloud's file into the working copy")
    pull.add_argument("--force", action="store_true", help="discard unpushed local changes")
    push = actions.add_parser("push", help="validate and upload; the previous version is kept")
    push.add_argument(
        "file", nargs="?", type=Path, metavar="FILE",
        help="a whole set to push instead (e.g. `hybrid-lambda faces build`'s output)",
    )  # fmt: skip
    push.add_argument("--force", action="store_true", help="even if the cloud changed since pull")
    actions.add_parser("rollback", help="put the previous version back")


def cmd_faces(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        return ACTIONS[args.action](settings, args)
    except FacesCommandError as error:
        print(f"faces {args.action}: {error}", file=sys.stderr)
        return error.status
    except KnownFacesFileError as error:
        print(f"faces {args.action}: refused: {error}", file=sys.stderr)
        return EX_DATAERR
    except FacesCloudError as error:
        print(f"faces {args.action}: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"faces {args.action}: {error}", file=sys.stderr)
        return EX_NOINPUT
