"""`hybrid-local serve`: flags, settings, then the Lambda emulator (`runtime`).

Kept apart from `runtime` so that building the command line (which every spawned worker of
the console script does again) imports neither boto3 nor the runtime itself.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from pydantic import ValidationError

from hybrid_common.aws_credentials import use_local_credentials_for_loopback
from hybrid_common.config import ENV_PREFIX, exit_on_config_error, json_logs
from hybrid_common.logs import configure_logging
from local_stack.emulator.settings import RuntimeSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queue", help="queue name or URL (HYBRID_QUEUE)")
    parser.add_argument("--endpoint-url", help="SQS endpoint (HYBRID_ENDPOINT_URL)")
    parser.add_argument("--region", help="AWS region (HYBRID_REGION)")
    # dest differs: `handler` is the attribute hybrid-local's dispatcher calls.
    parser.add_argument(
        "--handler", dest="function_handler", metavar="MODULE.FUNCTION", help="handler import path"
    )
    parser.add_argument("--function-name", help="the name the Invoke API answers to")
    parser.add_argument("--max-concurrency", type=int, metavar="N", help="environments at most")
    parser.add_argument("--idle-scale-down-s", type=float, metavar="S", help="idle time to stop")
    parser.add_argument("--function-timeout-s", type=int, metavar="S", help="invocation limit")
    parser.add_argument("--batch-size", type=int, metavar="N", help="messages per invocation")
    parser.add_argument("--poll-wait-s", type=int, metavar="S", help="SQS long-poll wait")
    parser.add_argument("--invoke-host", metavar="ADDRESS", help="Invoke API address")
    parser.add_argument("--invoke-port", type=int, metavar="PORT", help="0 picks a free port")
    parser.add_argument(
        "--cloud-state",
        type=Path,
        metavar="FILE",
        help="take endpoint, region, queue, input and output buckets, table and known faces "
        "from "
        "`hybrid-local cloud`'s state file (var/local-cloud.json) where the "
        "environment does not set them",
    )


# local-cloud.json field → the environment variable the runtime and the handler read.
_STATE_ENV = {
    "endpoint_url": "HYBRID_ENDPOINT_URL",
    "region": "HYBRID_REGION",
    "queue": "HYBRID_QUEUE",
    "input_bucket": "HYBRID_INPUT_BUCKET",
    "output_bucket": "HYBRID_OUTPUT_BUCKET",
    "table": "HYBRID_TABLE",
    "known_faces_uri": "HYBRID_KNOWN_FACES",
}


def apply_cloud_state(path: Path) -> dict[str, str]:
    """Fill unset HYBRID_* variables from local-cloud's state file; returns what was set.

    Through the environment, so the handler in the worker processes (which inherit it) uses
    the same endpoint, bucket, table and known faces as the runtime.
    """
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        exit_on_config_error(ValueError(f"--cloud-state {path}: {error}"))
    applied = {
        variable: str(state[field])
        for field, variable in _STATE_ENV.items()
        if state.get(field) and variable not in os.environ
    }
    os.environ.update(applied)
    return applied


def settings_from_args(args: argparse.Namespace) -> RuntimeSettings:
    """Defaults < local-cloud state file < environment < flags; exits 78 on a bad value."""
    if args.cloud_state is not None:
        apply_cloud_state(args.cloud_state)
    overrides: dict[str, object] = {}
    for name in RuntimeSettings.model_fields:
        value = getattr(args, "function_handler" if name == "handler" else name, None)
        if value is not None:
            overrides[name] = value
    try:
        return RuntimeSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        exit_on_config_error(error, ENV_PREFIX)


def serve_local(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT; logs go to stdout (JSON lines unless on a terminal)."""
    settings = settings_from_args(args)
    configure_logging(settings.log_level, json=json_logs(settings.log_format))
    # Before any worker starts: they inherit the environment, dummy credentials included.
    use_local_credentials_for_loopback(settings.endpoint_url)
    from local_stack.emulator.runtime import LocalRuntime

    return LocalRuntime(settings).run()
