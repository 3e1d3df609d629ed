"""`hybrid-local cloud` and `hybrid-local provision`: setting up the local cloud side.

The same provisioning code serves the embedded local cloud and docker-compose's `init` service
(`provision` against the `moto` container). On AWS the SAM stack creates these resources and
`hybrid-watcher students load` fills the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hybrid_common.config import EX_CONFIG, json_logs
from hybrid_common.logs import configure_logging
from hybrid_common.students import StudentsFileError, load_students, read_students
from local_stack.cloud import LocalCloudOptions, run_local_cloud, write_state
from local_stack.provision import Resources, make_clients, provision
from watcher.settings import load_settings

EX_NOINPUT = 66  # sysexits.h: an input file did not exist or was not readable


def _existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value}: no such file")
    return path


def _add_resource_files(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--students", type=_existing_file, help="students JSON to load into the table"
    )
    parser.add_argument(
        "--known-faces",
        type=_existing_file,
        help="known-faces file (from `hybrid-lambda faces ...`) to upload for the function",
    )
    parser.add_argument(
        "--function-timeout",
        type=int,
        default=900,
        help="the function's timeout in seconds; the queue's visibility timeout follows it",
    )


# --- local-cloud ---


def add_local_cloud_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=5055, help="port (0 picks a free one)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path("var"),
        help="where local-cloud.json and local-cloud.env are written",
    )
    parser.add_argument(
        "--no-result-queue",
        dest="result_queue",
        action="store_false",
        help="no result notifications for this node: the watcher only polls (the benchmark's "
        "baseline)",
    )
    _add_resource_files(parser)


def cmd_local_cloud(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging(settings.log_level, json=json_logs(settings.log_format))
    options = LocalCloudOptions(
        host=args.host,
        port=args.port,
        state_dir=args.state_dir,
        students_file=args.students,
        known_faces_file=args.known_faces,
        function_timeout_s=args.function_timeout,
        result_queue=args.result_queue,
    )
    try:
        return run_local_cloud(settings, options)
    except (StudentsFileError, ValueError) as error:
        print(f"local-cloud: {error}", file=sys.stderr)
        return EX_CONFIG


# --- provision ---


def add_provision_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir", type=Path, default=None, help="also write local-cloud.json/.env here"
    )
    _add_resource_files(parser)


def cmd_provision(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging(settings.log_level, json=json_logs(settings.log_format))
    try:
        students = read_students(args.students) if args.students else None
    except StudentsFileError as error:
        print(f"provision: {error}", file=sys.stderr)
        return EX_NOINPUT
    clients = make_clients(settings.endpoint_url, settings.region)
    resources = provision(
        clients,
        Resources(
            endpoint_url=settings.endpoint_url,
            region=settings.region,
            input_bucket=settings.input_bucket,
            output_bucket=settings.output_bucket,
            table=settings.table,
            queue=settings.queue,
        ),
        function_timeout_s=args.function_timeout,
        known_faces=args.known_faces.read_bytes() if args.known_faces else None,
    )
    if students is not None:
        load_students(clients.dynamodb, settings.table, students)
    if args.state_dir:
        write_state(args.state_dir, resources)
    print(resources.to_json())
    return 0
