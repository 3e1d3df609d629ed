"""`hybrid-local` commands: the local cloud, provisioning, the Lambda emulator, demo, workload.

Each subcommand's module is imported only when that subcommand runs, so `serve` works in the
function image (no watcher package there) and `provision` in the watcher image (no moto, no
dlib): docker-compose mounts this package into both.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

from hybrid_common.aws_credentials import missing_credentials_exit
from hybrid_common.logs import configure_logging
from hybrid_common.version import version_line

Handler = Callable[[argparse.Namespace], int]


class Command(NamedTuple):
    help: str
    module: str  # defines the two functions named below
    add_arguments: str
    handler: str


COMMANDS: dict[str, Command] = {
    "demo": Command(
        "local cloud + Lambda emulator + watcher, supervised; Ctrl-C stops all",
        "local_stack.demo",
        "add_arguments",
        "cmd_demo",
    ),
    "cloud": Command(
        "moto's server on loopback, provisioned like the SAM stack, until Ctrl-C",
        "local_stack.cloud_cmds",
        "add_local_cloud_arguments",
        "cmd_local_cloud",
    ),
    "provision": Command(
        "create buckets, table, queue and notifications at the configured endpoint",
        "local_stack.cloud_cmds",
        "add_provision_arguments",
        "cmd_provision",
    ),
    "serve": Command(
        "run the function like Lambda does: SQS event source, Invoke API, scaling workers",
        "local_stack.emulator.serve",
        "add_arguments",
        "serve_local",
    ),
    "workload": Command(
        "submit a folder of videos, wait for every result and grade them",
        "local_stack.workload",
        "add_arguments",
        "cmd_workload",
    ),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, just that subcommand's module is imported (others get no flags)."""
    parser = argparse.ArgumentParser(
        prog="hybrid-local",
        description="HybridSphere's cloud side on this machine: moto, the Lambda emulator, "
        "the demo and the workload grader.",
    )
    parser.add_argument("--version", action="version", version=version_line("hybrid-local"))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = commands.add_parser(name, help=command.help, description=command.help)
        if only is None or name == only:
            module = importlib.import_module(command.module)
            getattr(module, command.add_arguments)(sub)
            sub.set_defaults(handler=getattr(module, command.handler))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in args_list if not a.startswith("-")), None)
    only = chosen if chosen in COMMANDS else None
    args = build_parser(only=only or "").parse_args(args_list)
    # Commands print their answers on stdout; logs (warnings only) go to stderr until a
    # command configures its own.
    configure_logging("warning", stream=sys.stderr)
    handler: Handler = args.handler
    with missing_credentials_exit("hybrid-local"):
        return handler(args)


__all__ = ["COMMANDS", "build_parser", "main"]
