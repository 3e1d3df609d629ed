"""The function's settings, from environment variables (HYBRID_*) set on the Lambda function.

Names match the watcher's where they mean the same thing (endpoint_url, region,
output_bucket, table). Read once per container at import time of the handler.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from hybrid_common.config import check_bucket_name

ENV_PREFIX = "HYBRID_"

BucketName = Annotated[str, AfterValidator(check_bucket_name)]


class RecognitionOptions(BaseSettings):
    """How frames are sampled and faces matched; shared by the handler and `hybrid-lambda process`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    mode: Literal["all", "first-match"] = Field(
        default="all",
        description="'all' reports every known person; 'first-match' stops at the first "
        "recognised face, like the classic implementation.",
    )
    sample_fps: float = Field(default=1.0, gt=0, le=60, description="Frames sampled per second.")
    tolerance: float = Field(
        default=0.6, gt=0, le=1.0, description="Largest face distance that counts as a match."
    )
    detect_width: int = Field(
        default=640, ge=160, le=4096, description="Frames are scaled to this width for detection."
    )
    max_duration_s: float = Field(default=900.0, gt=0, description="Longer videos are refused.")
    max_frames: int = Field(default=2000, gt=0, description="At most this many sampled frames.")
    workers: int = Field(
        default=0, ge=0, description="Processes used for one video; 0 means one per CPU core."
    )


class FunctionSettings(BaseSettings):
    """The Lambda function's environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    endpoint_url: str | None = None
    region: str = "us-east-1"
    output_bucket: BucketName = "hybridsphere-output"
    table: str = Field(default="hybridsphere-students", min_length=3)
    known_faces: str = Field(
        default="/opt/hybridsphere/known_faces.json",
        description="Known-faces file: a path in the image, or s3://bucket/key.",
    )
    max_input_bytes: int = Field(
        default=1 << 30, gt=0, description="Larger objects are refused before download."
    )
    tmp_dir: Path = Path("/tmp")  # noqa: S108 - Lambda's only writable folder
    contact_sheet: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"
