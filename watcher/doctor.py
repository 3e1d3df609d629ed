"""`hybrid-watcher doctor`: one checklist of what this node needs, each line ok/warn/fail + fix.

Every check is a plain function returning `Check`s; the cloud checks use synchronous boto3
clients with one attempt and short timeouts (a doctor must answer, not hang on retries).
Nothing it writes stays: the probe object is deleted, the probe files are removed.
"""

from __future__ import annotations

import argparse
import email.utils
import json
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from hybrid_common.aws_credentials import is_loopback
from hybrid_common.keys import InputKey, node_prefix, safe_name
from watcher.settings import WatcherSettings, config_file_path

# The SAM template's default KnownFacesKey and local provisioning's key (tests hold all three
# equal): where the function looks when its configuration cannot be read from here.
DEFAULT_KNOWN_FACES_KEY = "_assets/known_faces.json"
# SigV4 refuses requests more than 15 minutes off; warn long before that.
SKEW_WARN_S = 60.0
SKEW_FAIL_S = 300.0
MIB = 1024 * 1024
DEFAULT_MIN_FREE_MB = 2048
FAIL_FREE_MB = 64  # below this even the journal cannot commit
# A sample submission id: keys are checked as the watcher names them.
_SAMPLE_ID = "20260101T000000Z-00000000"
_CREATED_ALL = "s3:ObjectCreated:*"
# The watcher creates objects with PUT (small files) and CompleteMultipartUpload (large).
_CREATED_BY_WATCHER = frozenset(
    {"s3:ObjectCreated:Put", "s3:ObjectCreated:CompleteMultipartUpload"}
)


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the checklist."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def skew_status(skew_s: float) -> Status:
    """How far off the local clock may be from S3's before requests start to fail."""
    off = abs(skew_s)
    if off > SKEW_FAIL_S:
        return Status.FAIL
    if off > SKEW_WARN_S:
        return Status.WARN
    return Status.OK


def notification_covers(config: Mapping[str, Any], key: str) -> bool:
    """Whether one S3 notification configuration fires for an object the watcher creates."""
    events = set(config.get("Events", []))
    if _CREATED_ALL not in events and not events >= _CREATED_BY_WATCHER:
        return False
    rules = config.get("Filter", {}).get("Key", {}).get("FilterRules", [])
    for rule in rules:
        name, value = str(rule.get("Name", "")).lower(), str(rule.get("Value", ""))
        if name == "prefix" and not key.startswith(value):
            return False
        if name == "suffix" and not key.endswith(value):
            return False
    return True


def uncovered_extensions(
    notification: Mapping[str, Any], settings: WatcherSettings
) -> tuple[list[str], int]:
    """The accepted extensions whose objects trigger nothing; and how many targets there are.

    S3→SQS (the local cloud, or SQS→Lambda) and S3→Lambda both count; SNS too, since it
    fans out to one of them. Keys are built exactly as the watcher builds them.
    """
    configs = [
        config
        for kind in ("QueueConfigurations", "LambdaFunctionConfigurations", "TopicConfigurations")
        for config in notification.get(kind, [])
    ]
    missing = []
    for extension in settings.allowed_extensions:
        name = safe_name(f"clip.{extension.lstrip('.')}")
        key = InputKey(settings.key_prefix, settings.node_id, _SAMPLE_ID, name).key
        if not any(notification_covers(config, key) for config in configs):
            missing.append("." + name.rsplit(".", 1)[-1])
    return missing, len(configs)


# --- local checks ---


def check_staging(settings: WatcherSettings, min_free_mb: int) -> list[Check]:
    """Folders writable, all on one file system (moves are renames), enough free space."""
    root = settings.staging_root
    folders = [root, *(root / n for n in ("inbox", "processing", "done", "failed", "rejected"))]
    checks: list[Check] = []
    unwritable, devices = [], {}
    for folder in folders:
        if not folder.exists():
            continue  # the daemon creates it at start, on the root's file system
        probe = folder / f".doctor-{secrets.token_hex(4)}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            unwritable.append(f"{folder} ({error.strerror})")
        devices[folder] = folder.stat().st_dev
    if unwritable:
        checks.append(
            Check(
                "staging writable",
                Status.FAIL,
                "; ".join(unwritable),
                f"make them writable by the daemon's user, e.g. `chown -R hybrid-watcher: {root}`",
            )
        )
    else:
        checks.append(Check("staging writable", Status.OK, f"{root} and its folders"))
    apart = sorted(str(f) for f, dev in devices.items() if dev != devices.get(root))
    if apart:
        checks.append(
            Check(
                "staging one file system",
                Status.FAIL,
                f"on another file system than {root}: {', '.join(apart)}",
                "put every folder on one file system: moves between them must be renames "
                "(atomic, no copy); unmount or move the folders under staging_root",
            )
        )
    else:
        checks.append(Check("staging one file system", Status.OK, "moves are atomic renames"))
    if not root.exists():
        checks.insert(
            0,
            Check(
                "staging root",
                Status.WARN,
                f"{root} does not exist yet",
                "the daemon creates it at start (its parent must be writable)",
            ),
        )
    existing = next(p for p in (root, *root.parents) if p.exists())
    usage = shutil.disk_usage(existing)
    free_mb = usage.free // MIB
    detail = f"{free_mb} MiB free of {usage.total // MIB} MiB at {root}"
    fix = "free space or grow the volume; lower retention_done_days to keep less"
    if free_mb < FAIL_FREE_MB:
        checks.append(Check("staging free space", Status.FAIL, detail, fix))
    elif free_mb < min_free_mb:
        checks.append(Check("staging free space", Status.WARN, f"{detail} (< {min_free_mb})", fix))
    else:
        checks.append(Check("staging free space", Status.OK, detail))
    return checks


def check_credentials(settings: WatcherSettings) -> tuple[Check, Any]:
    """The AWS credential chain's answer, and the boto3 session to use (None: cannot sign)."""
    import boto3

    session = boto3.session.Session(region_name=settings.region)
    try:
        credentials = session.get_credentials()
    except Exception as error:  # a malformed profile or credentials file
        return Check("credentials", Status.FAIL, str(error), _CREDENTIALS_FIX), None
    if credentials is not None:
        return Check("credentials", Status.OK, f"from {credentials.method}"), session
    if is_loopback(settings.endpoint_url):
        # A local cloud checks no signatures; sign with placeholders rather than fail.
        local = boto3.session.Session(
            region_name=settings.region,
            aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106 -- a placeholder for a loopback endpoint
        )
        return Check("credentials", Status.OK, "none needed: the endpoint is local"), local
    return Check("credentials", Status.FAIL, "no AWS credentials found", _CREDENTIALS_FIX), None


_CREDENTIALS_FIX = (
    "the daemon reads AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from the root-only "
    "/etc/hybrid-watcher/credentials.env (its unit blocks the metadata service): put them "
    "there, and run doctor with them: sudo sh -c 'set -a; . /etc/hybrid-watcher/credentials.env;"
    " exec hybrid-watcher doctor'"
)


# --- cloud checks ---


def _code(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", type(error).__name__))


class CloudChecks:
    """The checks that talk to S3 and Lambda, with one set of clients."""

    def __init__(self, settings: WatcherSettings, session: Any) -> None:
        from botocore.config import Config

        self.settings = settings
        config = Config(
            region_name=settings.region,
            retries={"total_max_attempts": 1},
            connect_timeout=5,
            read_timeout=10,
            s3={"addressing_style": "path"} if settings.endpoint_url else {},
        )
        self.s3 = session.client("s3", endpoint_url=settings.endpoint_url, config=config)
        lambda_endpoint = settings.lambda_endpoint_url or settings.endpoint_url
        self.lambda_ = session.client("lambda", endpoint_url=lambda_endpoint, config=config)
        self.prefix = node_prefix(settings.key_prefix, settings.node_id)
        self.server_date: tuple[str, float] | None = None  # (Date header, local time then)

    def _remember_date(self, response: Mapping[str, Any]) -> None:
        date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        if date and self.server_date is None:
            self.server_date = (str(date), time.time())

    def input_writable(self) -> Check:
        s = self.settings
        key = f"{self.prefix}.doctor-probe-{secrets.token_hex(6)}"
        where = f"s3://{s.input_bucket}/{self.prefix}"
        extra = {"SSEKMSKeyId": s.sse_kms_key_id} if s.sse_kms_key_id else {}
        try:
            response = self.s3.put_object(
                Bucket=s.input_bucket,
                Key=key,
                Body=b"doctor",
                ServerSideEncryption=s.sse,
                **extra,
            )
            self._remember_date(response)
            self.s3.delete_object(Bucket=s.input_bucket, Key=key)
        except Exception as error:
            return Check(
                "input bucket writable",
                Status.FAIL,
                f"{where}: {_code(error)}",
                self._bucket_fix(error, s.input_bucket, "s3:PutObject, s3:DeleteObject"),
            )
        return Check("input bucket writable", Status.OK, f"put and deleted a probe under {where}")

    def output_readable(self) -> Check:
        s = self.settings
        where = f"s3://{s.output_bucket}/{self.prefix}"
        try:
            response = self.s3.list_objects_v2(
                Bucket=s.output_bucket, Prefix=self.prefix, MaxKeys=1
            )
            self._remember_date(response)
        except Exception as error:
            return Check(
                "output bucket readable",
                Status.FAIL,
                f"{where}: {_code(error)}",
                self._bucket_fix(error, s.output_bucket, "s3:ListBucket, s3:GetObject"),
            )
        return Check("output bucket readable", Status.OK, f"listed {where}")

    @staticmethod
    def _bucket_fix(error: Exception, bucket: str, actions: str) -> str:
        if _code(error) == "NoSuchBucket":
            return f"create bucket {bucket!r} (deploy the stack) or fix the bucket setting"
        if _code(error) in {"AccessDenied", "403", "AllAccessDisabled"}:
            return f"grant this node's credentials {actions} on {bucket}"
        return "check endpoint_url, region and the network path to S3"

    def trigger(self) -> Check:
        s = self.settings
        if s.trigger_mode == "invoke":
            return Check(
                "trigger covers extensions",
                Status.OK,
                f"invoke mode: the watcher invokes {s.function_name} for every upload",
            )
        try:
            notification = self.s3.get_bucket_notification_configuration(Bucket=s.input_bucket)
        except Exception as error:
            return Check(
                "trigger covers extensions",
                Status.FAIL,
                f"cannot read {s.input_bucket}'s notifications: {_code(error)}",
                "grant s3:GetBucketNotification, or check the bucket",
            )
        missing, targets = uncovered_extensions(notification, s)
        if not targets:
            return Check(
                "trigger covers extensions",
                Status.FAIL,
                f"{s.input_bucket} notifies nothing: no upload triggers the function",
                'deploy the stack\'s S3 notifications, or set trigger_mode = "invoke"',
            )
        if missing:
            return Check(
                "trigger covers extensions",
                Status.FAIL,
                f"uploads ending {', '.join(missing)} trigger nothing (they would time out)",
                f"add an s3:ObjectCreated:* notification per suffix {', '.join(missing)} on "
                f"{s.input_bucket}, or remove them from allowed_extensions",
            )
        return Check(
            "trigger covers extensions",
            Status.OK,
            f"all {len(s.allowed_extensions)} extensions notify ({targets} rules)",
        )

    def function_config(self) -> dict[str, Any] | None:
        try:
            config = self.lambda_.get_function_configuration(
                FunctionName=self.settings.function_name
            )
        except Exception:  # a local cloud has no Lambda API; the caller says what it assumed
            return None
        return dict(config)

    def known_faces(self, override: str | None) -> Check:
        s = self.settings
        source = "--known-faces"
        location = override
        if location is None:
            config = self.function_config()
            env = ((config or {}).get("Environment") or {}).get("Variables") or {}
            if config is not None and "HYBRID_KNOWN_FACES" in env:
                location, source = env["HYBRID_KNOWN_FACES"], "the function's configuration"
            elif config is not None:
                return Check(
                    "known faces",
                    Status.OK,
                    f"{s.function_name} uses the file baked into its image",
                )
            else:
                location = f"s3://{s.input_bucket}/{DEFAULT_KNOWN_FACES_KEY}"
                source = "default key; the function's configuration was not readable"
        if not location.startswith("s3://"):
            return Check(
                "known faces", Status.OK, f"{location} inside the function's image ({source})"
            )
        bucket, _, key = location[len("s3://") :].partition("/")
        try:
            head = self.s3.head_object(Bucket=bucket, Key=key)
        except Exception as error:
            return Check(
                "known faces",
                Status.FAIL,
                f"{location} ({source}): {_code(error)}",
                f"build it with `hybrid-lambda faces build` and upload it: "
                f"`aws s3 cp known_faces.json {location}`",
            )
        size = int(head.get("ContentLength", 0))
        if size == 0:
            return Check(
                "known faces",
                Status.FAIL,
                f"{location} is empty",
                "rebuild it with `hybrid-lambda faces build` and upload it again",
            )
        return Check("known faces", Status.OK, f"{location} ({size} bytes, {source})")

    def clock(self) -> Check:
        if self.server_date is None:
            return Check(
                "clock skew",
                Status.WARN,
                "S3 sent no Date header to compare with",
                "check the clock with `timedatectl` (NTP synchronized: yes)",
            )
        header, local = self.server_date
        server = email.utils.parsedate_to_datetime(header).timestamp()
        skew = local - server
        status = skew_status(skew)
        detail = f"local clock {skew:+.0f} s from S3's"
        fix = (
            ""
            if status is Status.OK
            else ("enable NTP (`timedatectl set-ntp true`); SigV4 refuses requests 15 min off")
        )
        return Check("clock skew", status, detail, fix)

    def function_reachable(self) -> Check:
        s = self.settings
        if s.trigger_mode != "invoke":
            return Check("function reachable", Status.SKIP, "s3 mode: the bucket invokes it")
        try:
            self.lambda_.invoke(FunctionName=s.function_name, InvocationType="DryRun")
        except Exception as error:
            return Check(
                "function reachable",
                Status.FAIL,
                f"dry-run invoke of {s.function_name}: {_code(error)}",
                "check function_name, lambda_endpoint_url and lambda:InvokeFunction",
            )
        return Check("function reachable", Status.OK, f"dry-run invoke of {s.function_name}")


def run_checks(
    known_faces: str | None = None, min_free_mb: int = DEFAULT_MIN_FREE_MB
) -> list[Check]:
    """Every check, in the order an operator would fix things."""
    try:
        settings = WatcherSettings()
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in error.errors()
        )
        return [
            Check(
                "config valid",
                Status.FAIL,
                problems,
                f"fix {config_file_path()} or the HYBRID_* variables",
            )
        ]
    except (ValueError, OSError) as error:
        return [
            Check(
                "config valid",
                Status.FAIL,
                f"{config_file_path()}: {error}",
                "fix the file's TOML syntax",
            )
        ]
    checks = [Check("config valid", Status.OK, f"node {settings.node_id}")]
    credentials, session = check_credentials(settings)
    checks.append(credentials)
    if session is None:
        checks.append(Check("cloud checks", Status.SKIP, "skipped: no credentials to sign with"))
    else:
        cloud = CloudChecks(settings, session)
        steps: Iterable[Callable[[], Check]] = (
            cloud.input_writable,
            cloud.output_readable,
            cloud.trigger,
            lambda: cloud.known_faces(known_faces),
            cloud.function_reachable,
            cloud.clock,
        )
        checks += [step() for step in steps]
    checks += check_staging(settings, min_free_mb)
    return checks


# --- command ---


def add_doctor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--known-faces",
        metavar="S3_URI",
        help="where the function reads known faces (default: ask the function, "
        f"else s3://INPUT_BUCKET/{DEFAULT_KNOWN_FACES_KEY})",
    )
    parser.add_argument(
        "--min-free-mb",
        type=int,
        default=DEFAULT_MIN_FREE_MB,
        help="warn when the staging volume has less free space",
    )


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = run_checks(args.known_faces, args.min_free_mb)
    failed = any(c.status is Status.FAIL for c in checks)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}, indent=2))
        return 1 if failed else 0
    width = max(len(c.name) for c in checks)
    for check in checks:
        print(f"{check.status.value:<4}  {check.name:<{width}}  {check.detail}")
        if check.fix:
            print(f"{'':<4}  {'':<{width}}  fix: {check.fix}")
    print("FAILED: fix the lines marked fail" if failed else "all checks passed", file=sys.stderr)
    return 1 if failed else 0


__all__ = ["Check", "Status", "add_doctor_arguments", "cmd_doctor", "run_checks"]
