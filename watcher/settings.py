"""hybrid-watcher's settings: environment (HYBRID_*) > TOML config file > defaults.

The config file is the first of (`config_file_path`):
1. `$HYBRID_CONFIG` — it must exist (a missing one is an error, exit 78); empty means none;
2. `./var/hybrid-watcher.toml` — written by `hybrid-local demo` (`make demo`), so the CLI run
   from the same folder acts on the demo's staging root and local cloud;
3. `/etc/hybrid-watcher/config.toml` — the VM's (installed by `make install-service`).
AWS credentials are never settings: they come from the standard AWS chain (environment,
shared credentials file, instance role), which the systemd unit feeds from a root-only
EnvironmentFile.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from hybrid_common.aws_credentials import use_local_credentials_for_loopback
from hybrid_common.config import (
    ENV_PREFIX,
    check_bucket_name,
    check_writable_dir,
    exit_on_config_error,
)
from hybrid_common.keys import DEFAULT_CSV_KEY, ResultNaming, validate_csv_key, validate_segment
from hybrid_common.video_suffixes import VIDEO_EXTENSIONS

DEFAULT_CONFIG_FILE = Path("/etc/hybrid-watcher/config.toml")
# Relative to the current folder: the demo's, found by commands run beside `make demo`.
DEMO_CONFIG_FILE = Path("var/hybrid-watcher.toml")
CONFIG_ENV = "HYBRID_CONFIG"

BucketName = Annotated[str, AfterValidator(check_bucket_name)]


class ConfigFileMissing(ValueError):
    """HYBRID_CONFIG names a file that does not exist (a typo must not be ignored)."""


def config_file_path() -> Path | None:
    """The TOML config file in use, or None: see the module docstring for the search order."""
    named = os.environ.get(CONFIG_ENV)
    if named is not None:
        return Path(named) if named else None
    for candidate in (DEMO_CONFIG_FILE, DEFAULT_CONFIG_FILE):
        if candidate.is_file():
            return candidate
    return None


def checked_config_file() -> Path | None:
    """`config_file_path()`, raising ConfigFileMissing if HYBRID_CONFIG names no file."""
    path = config_file_path()
    if path is not None and os.environ.get(CONFIG_ENV) and not path.is_file():
        raise ConfigFileMissing(f"{CONFIG_ENV}={path}: no such file")
    return path


def default_node_id() -> str:
    """The host name, reduced to a key-safe segment: many VMs can share the buckets."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", socket.gethostname()).strip("-._")[:63]
    return name or "node"


class WatcherSettings(BaseSettings):
    """Every setting of the VM daemon and its commands (see config/hybrid-watcher.example.toml)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
        frozen=True,
    )

    # --- where the cloud is ---
    endpoint_url: str | None = Field(
        default=None,
        description="S3/DynamoDB/SQS/Lambda endpoint; unset for AWS, a URL for moto, "
        "LocalStack or MinIO.",
    )
    lambda_endpoint_url: str | None = Field(
        default=None,
        description="Lambda's Invoke endpoint for trigger_mode 'invoke' when it is not "
        "endpoint_url's, e.g. `hybrid-lambda serve-local`'s http://127.0.0.1:9001.",
    )
    region: str = Field(default="us-east-1", min_length=1)
    input_bucket: BucketName = "hybridsphere-input"
    output_bucket: BucketName = "hybridsphere-output"
    table: str = Field(default="hybridsphere-students", min_length=3, max_length=255)
    function_name: str = Field(default="hybridsphere-face-recognition", min_length=1)
    queue: str = Field(
        default="hybridsphere-input-events",
        min_length=1,
        description="SQS queue the input bucket notifies (local cloud and S3->SQS->Lambda).",
    )

    # --- this node and its folders ---
    staging_root: Annotated[Path, AfterValidator(check_writable_dir)] = Path(
        "/var/lib/hybrid-watcher"
    )
    node_id: str = Field(default_factory=default_node_id)
    key_prefix: str = "videos"

    # --- logs ---
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    # --- intake ---
    allowed_extensions: list[str] = Field(
        # The function's trigger is defined by the same list: every one of these gets a result.
        default_factory=lambda: list(VIDEO_EXTENSIONS),
        description="File extensions taken from the inbox (case-insensitive); content is "
        "sniffed as well.",
    )
    settle_s: float = Field(
        default=2.0,
        ge=0.0,
        description="Size/mtime must stay unchanged this long before a file is taken, unless "
        "an inotify event and the open-files scan show its writer is done.",
    )
    rescan_interval_s: float = Field(
        default=30.0, gt=0.0, description="Full inbox scan period (inotify can overflow)."
    )
    watch_subfolders: bool = Field(default=False, description="Take files in inbox subfolders.")
    fast_intake: bool = Field(
        default=True,
        description="Take a file as soon as inotify and the open-files scan show its writer is "
        "done; false when writers may be invisible to this host's /proc (an NFS inbox).",
    )
    # --- end intake ---

    # --- journal ---
    on_duplicate: Literal["reuse", "reprocess"] = Field(
        default="reuse",
        description="Same content (sha256) as an earlier done submission: copy its result, "
        "or process it again.",
    )
    # --- end journal ---

    # --- lifecycle ---
    shutdown_grace_s: float = Field(
        default=30.0, ge=0.0, description="On SIGTERM, in-flight uploads get this long to finish."
    )
    result_overdue_s: float = Field(
        default=600.0, gt=0.0, description="Log result.overdue this long after the upload."
    )
    result_deadline_s: float = Field(
        default=3600.0, gt=0.0, description="Give up (timed_out) this long after the upload."
    )
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="Serve Prometheus metrics on this port."
    )
    metrics_address: str = "127.0.0.1"
    retention_done_days: float = Field(default=30.0, ge=0.0, description="0 keeps forever.")
    retention_failed_days: float = Field(default=90.0, ge=0.0, description="0 keeps forever.")
    retention_rejected_days: float = Field(default=14.0, ge=0.0, description="0 keeps forever.")

    @field_validator("result_deadline_s")
    @classmethod
    def _deadline_after_overdue(cls, value: float, info: ValidationInfo) -> float:
        overdue = info.data.get("result_overdue_s")
        if overdue is not None and value <= overdue:
            raise ValueError(f"must be longer than result_overdue_s ({overdue})")
        return value

    # --- end lifecycle ---

    # --- upload ---
    upload_concurrency: int = Field(default=4, ge=1, le=64, description="Files sent at once.")
    part_concurrency: int = Field(
        default=4, ge=1, le=64, description="Multipart parts in flight, across all files."
    )
    multipart_threshold_mb: int = Field(
        default=128, ge=5, description="Files above this many MiB go multipart; others one PUT."
    )
    part_size_mb: int = Field(default=8, ge=5, le=512, description="MiB per multipart part.")
    requests_per_second: int = Field(
        default=0, ge=0, description="Cap on S3 upload requests per second; 0 = no cap."
    )
    bandwidth_limit_mbps: float = Field(
        default=0.0, ge=0.0, description="Cap on upload MiB per second; 0 = no cap."
    )
    retry_attempts: int = Field(default=8, ge=1, description="Tries per request, first included.")
    retry_max_seconds: float = Field(
        default=600.0, gt=0.0, description="Give a file up after retrying this long."
    )
    retry_base_delay_s: float = Field(default=0.5, gt=0.0)
    retry_max_delay_s: float = Field(default=30.0, gt=0.0)
    sse: Literal["AES256", "aws:kms"] = "AES256"
    sse_kms_key_id: str | None = Field(default=None, min_length=1)
    checksum: Literal["SHA256", "CRC32"] = "SHA256"
    payload_signing: bool = Field(
        default=False,
        description="SHA-256 the payload for SigV4 as well (the S3-verified checksum already "
        "covers integrity; signing doubles the hashing and runs on the event loop).",
    )
    orphan_upload_age_s: float = Field(default=86_400.0, ge=0.0)
    connect_timeout_s: float = Field(default=10.0, gt=0.0)
    read_timeout_s: float = Field(default=120.0, gt=0.0)
    trigger_mode: Literal["s3", "invoke"] = "s3"

    # --- results ---
    poll_interval_s: float = Field(default=2.0, gt=0.0)
    poll_max_interval_s: float = Field(default=30.0, gt=0.0)
    poll_page_size: int = Field(default=1000, ge=1, le=1000)
    result_queue: str | None = Field(
        default=None,
        description="SQS queue (name or URL) the output bucket notifies when this node's "
        "results are written: results arrive as soon as they exist, and the LIST poll slows "
        "to result_backstop_interval_s while the queue answers. Unset: LIST polling only.",
    )
    result_backstop_interval_s: float = Field(
        default=30.0,
        gt=0.0,
        description="LIST poll period while the result queue answers (a lost notification "
        "waits at most this long).",
    )
    result_max_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Largest CSV or contact sheet fetched; a larger CSV fails its submission "
        "(result_too_large), a larger contact sheet is left out.",
    )
    result_json_max_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        description="Largest details or error JSON fetched (the function writes 1-3 KB): a "
        "larger details file is left out, a larger error file fails its submission.",
    )
    csv_key: Annotated[str, AfterValidator(validate_csv_key)] = Field(
        default=DEFAULT_CSV_KEY,
        description="Key of the CSV answer, as the function's HYBRID_CSV_KEY: '{stem}' is the "
        "input key without its extension ('{stem}' alone: the classic handler's key).",
    )
    csv_header: bool = Field(
        default=False,
        description="The function writes a 'name,major,year' header (its HYBRID_CSV_HEADER); "
        "the CSV in done/ has one too.",
    )

    # --- known faces ---
    known_faces_uri: str | None = Field(
        default=None,
        description="s3://bucket/key of the known-faces file the function reads (its "
        "HYBRID_KNOWN_FACES), for `hybrid-watcher faces pull|push|rollback`.",
    )

    @field_validator("known_faces_uri")
    @classmethod
    def _known_faces_is_an_s3_json_key(cls, value: str | None) -> str | None:
        if value is None:
            return None
        bucket, _, key = value.removeprefix("s3://").partition("/")
        if not value.startswith("s3://") or not key or not key.endswith(".json"):
            raise ValueError(
                "must be s3://BUCKET/KEY.json, e.g. s3://my-input/_assets/known_faces.json"
            )
        check_bucket_name(bucket)
        return value

    # --- end known faces ---

    @field_validator("sse_kms_key_id")
    @classmethod
    def _kms_key_needs_kms(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("sse") != "aws:kms":
            raise ValueError('a KMS key id needs sse = "aws:kms"')
        return value

    # --- end results ---

    @field_validator("node_id")
    @classmethod
    def _node_id_is_a_key_segment(cls, value: str) -> str:
        return validate_segment(value, "node_id")

    @field_validator("key_prefix")
    @classmethod
    def _prefix_is_key_segments(cls, value: str) -> str:
        for segment in value.strip("/").split("/"):
            validate_segment(segment, "key_prefix")
        return value.strip("/")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: explicit arguments, then the environment, then the file.
        config_file = checked_config_file()
        if config_file is None:
            return (init_settings, env_settings)
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=config_file),
        )

    # Folder layout of the staging area, derived so every command agrees on it.
    @property
    def inbox(self) -> Path:
        return self.staging_root / "inbox"

    @property
    def journal_path(self) -> Path:
        return self.staging_root / "journal.sqlite3"

    @property
    def known_faces_path(self) -> Path:
        """The VM's working copy of the known faces (`faces pull` fills it, `push` sends it)."""
        return self.staging_root / "known_faces.json"

    @property
    def naming(self) -> ResultNaming:
        """Where the function writes each result file (csv_key)."""
        return ResultNaming(self.csv_key)


def load_settings(**overrides: object) -> WatcherSettings:
    """Settings for a command, or exit 78 with one line per problem (systemd won't restart).

    When every endpoint is a loopback address (the local cloud) and no AWS credentials are
    configured, dummy ones are set for this process and its children (see aws_credentials).
    """
    try:
        settings = WatcherSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        exit_on_config_error(error, ENV_PREFIX)
    except ConfigFileMissing as error:
        exit_on_config_error(error)
    except (ValueError, OSError) as error:  # e.g. an unreadable or malformed TOML file
        exit_on_config_error(ValueError(f"{config_file_path()}: {error}"))
    endpoints = [settings.endpoint_url]
    if settings.trigger_mode == "invoke":
        endpoints.append(settings.lambda_endpoint_url or settings.endpoint_url)
    use_local_credentials_for_loopback(*endpoints)
    return settings
