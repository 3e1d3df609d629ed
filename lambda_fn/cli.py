"""`hybrid-lambda`: the function's tools, runnable on a laptop with no cloud at all.

Each subcommand is a `register_*` function adding its parser and handler; a new command
(e.g. `serve-local`) is one more function in COMMANDS. Handlers return the exit status.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hybrid_common.aws_credentials import missing_credentials_exit
from hybrid_common.logs import configure_logging
from hybrid_common.version import version_line

# argparse's type for `add_subparsers()`; a private name, hence the alias.
Subparsers = Any
Register = Callable[[Subparsers], None]


def register_faces(sub: Subparsers) -> None:
    faces = sub.add_parser("faces", help="build or convert the known-faces file")
    faces_sub = faces.add_subparsers(dest="faces_command", required=True, metavar="ACTION")
    build = faces_sub.add_parser(
        "build", help="encode PHOTO_DIR/<name>/*.jpg|jpeg|png (one face per photo)"
    )
    build.add_argument("photo_dir", type=Path, metavar="PHOTO_DIR")
    build.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    build.set_defaults(handler=_faces_build)
    convert = faces_sub.add_parser(
        "import-pickle", help="convert the course's encoding pickle (safely: no code runs)"
    )
    convert.add_argument("encoding", type=Path, metavar="ENCODING")
    convert.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    convert.set_defaults(handler=_faces_import_pickle)
    show = faces_sub.add_parser("show", help="check a known-faces file and list its people")
    show.add_argument("file", type=Path, metavar="FILE")
    show.set_defaults(handler=_faces_show)


def register_process(sub: Subparsers) -> None:
    process = sub.add_parser(
        "process",
        help="recognise people in local video files (no cloud)",
        description="One line per video: name, people ('+'-joined, '-' for nobody), seconds. "
        "Exits 1 if any video failed.",
    )
    process.add_argument("videos", type=Path, nargs="+", metavar="VIDEO")
    process.add_argument(
        "--faces", type=Path, required=True, metavar="FILE", help="known-faces file (JSON)"
    )
    process.add_argument(
        "--students", type=Path, metavar="FILE.json", help="major and year for --json output"
    )
    process.add_argument(
        "--mode",
        choices=("all", "first-match"),
        help="every known person (default), or stop at the first recognised face",
    )
    process.add_argument("--sample-fps", type=float, help="frames sampled per second (1)")
    process.add_argument("--tolerance", type=float, help="largest matching distance (0.6)")
    process.add_argument("--detect-width", type=int, help="detection frame width (640)")
    process.add_argument("--workers", type=int, help="processes; 0 means one per core")
    process.add_argument(
        "--descriptor",
        choices=("numpy", "dlib"),
        help="face descriptor engine: dlib's weights through numpy's BLAS (default) or dlib's code",
    )
    process.add_argument(
        "--contact-sheets", type=Path, metavar="DIR", help="write <video>.faces.jpg here"
    )
    process.add_argument("--json", action="store_true", help="one JSON document on stdout")
    process.set_defaults(handler=_process)


COMMANDS: list[Register] = [register_faces, register_process]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybrid-lambda", description="HybridSphere's face-recognition function, locally."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logs (stderr)")
    parser.add_argument("--version", action="version", version=version_line("hybrid-lambda"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in COMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = ("warning", "info", "debug")[min(args.verbose, 2)]
    configure_logging(level, stream=sys.stderr)  # stdout is for results
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        with missing_credentials_exit("hybrid-lambda"):
            return handler(args)
    except (ValueError, OSError) as error:  # bad input files: one readable line, no traceback
        print(f"hybrid-lambda: error: {error}", file=sys.stderr)
        return 2


def _faces_build(args: argparse.Namespace) -> int:
    from lambda_fn.enrolment import build_from_photos

    known, skipped = build_from_photos(args.photo_dir)
    for photo in skipped:
        print(f"skipped {photo.path}: {photo.reason}", file=sys.stderr)
    if not len(known):
        print("hybrid-lambda: error: no usable photo found", file=sys.stderr)
        return 1
    known.save(args.output)
    print(
        f"wrote {args.output}: {len(known)} faces of {len(known.people)} people, "
        f"{len(skipped)} photos skipped"
    )
    return 0


def _faces_import_pickle(args: argparse.Namespace) -> int:
    from lambda_fn.known_faces import KnownFaces
    from lambda_fn.safe_pickle import load_course_encodings

    names, encodings = load_course_encodings(args.encoding)
    source = args.encoding.name
    known = KnownFaces.from_lists(
        names, encodings, [source] * len(names), origin=str(args.encoding)
    )
    known.save(args.output)
    print(f"wrote {args.output}: {len(known)} faces of {len(known.people)} people")
    return 0


def _faces_show(args: argparse.Namespace) -> int:
    from lambda_fn.known_faces import KnownFaces

    known = KnownFaces.load(args.file)
    for person in known.people:
        print(f"{person}\t{known.names.count(person)}")
    return 0


def _process(args: argparse.Namespace) -> int:
    from hybrid_common.results import ErrorDoc
    from hybrid_common.students import read_students
    from lambda_fn.contact_sheet import render_contact_sheet
    from lambda_fn.directory import Student
    from lambda_fn.known_faces import read_version
    from lambda_fn.recognition import Recognition
    from lambda_fn.recognition_pool import RecognitionPool
    from lambda_fn.settings import RecognitionOptions

    table = read_students(args.students) if args.students else []
    loaded = read_version(args.faces)
    known = loaded.faces
    students = {s.name: Student(s.name, s.major, s.year) for s in table}
    overrides = {
        "mode": args.mode,
        "sample_fps": args.sample_fps,
        "tolerance": args.tolerance,
        "detect_width": args.detect_width,
        "workers": args.workers,
        "descriptor": args.descriptor,
    }
    options = RecognitionOptions(**{k: v for k, v in overrides.items() if v is not None})
    if args.contact_sheets:
        args.contact_sheets.mkdir(parents=True, exist_ok=True)
    documents: list[dict[str, Any]] = []
    work: dict[str, dict[str, int]] = {}
    failed = 0
    with RecognitionPool(known, options) as pool:
        # Timed from here: loading the models is the cold start, reported apart.
        started = time.perf_counter()
        for path, outcome in pool.run(args.videos):
            if isinstance(outcome, Recognition):
                document = details_document(
                    path, outcome, students, options, (loaded.version, loaded.source)
                )
                work[str(path)] = {
                    "faces_encoded": outcome.faces_encoded,
                    "faces_tracked": outcome.faces_tracked,
                }
                if args.contact_sheets and (sheet := render_contact_sheet(outcome)):
                    (args.contact_sheets / f"{path.stem}.faces.jpg").write_bytes(sheet)
                line = "+".join(outcome.names) or "-"
                seconds: float | None = outcome.timings["total"]
            else:
                failed += 1
                error = ErrorDoc(outcome.code, outcome.message, "", input_key=str(path))
                document = json.loads(error.to_json())
                line = f"ERROR {outcome.code}: {outcome.message}"
                seconds = None
            documents.append(document)
            if not args.json:
                took = f"{seconds:.2f}s" if seconds is not None else "-"
                print(f"{path.name}\t{line}\t{took}", flush=True)
    total = round(time.perf_counter() - started, 3)
    if args.json:
        print(
            json.dumps(
                {
                    "total_seconds": total,
                    "options": options.model_dump(),
                    "videos": documents,
                    "work": work,
                }
            )
        )
    else:
        print(f"total\t{len(documents)} videos, {failed} failed\t{total:.2f}s")
    return 1 if failed else 0


def details_document(
    path: Path,
    recognition: Any,
    students: dict[str, Any],
    options: Any,
    known_faces: tuple[str, str] = ("", ""),
) -> dict[str, Any]:
    """One video's result as the function writes it to `<stem>.json` (same builder, same schema).

    The input key is the local path; there is no request id or function version offline.
    """
    from hybrid_common.results import InputDetails, KnownFacesDetails
    from lambda_fn.outputs import build_details, settings_used

    details = build_details(
        recognition,
        students,
        input_ref=InputDetails(key=str(path), size=path.stat().st_size),
        timings=recognition.timings,
        settings=settings_used(options),
        function_version="",
        request_id="",
        known_faces=KnownFacesDetails(*known_faces),
    )
    document: dict[str, Any] = json.loads(details.to_json())
    return document
