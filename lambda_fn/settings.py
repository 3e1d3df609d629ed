"""The function's settings, from environment variables (HYBRID_*) set on the Lambda function.

One settings class (`FunctionSettings`) reads the environment; the recognition core takes its
options as a plain `RecognitionOptions` object (`FunctionSettings.recognition`, or the flags of
`hybrid-lambda process`) and never reads the environment itself. Names match the watcher's
where they mean the same thing (endpoint_url, region, output_bucket, table). Read once per
container at import time of the handler.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from hybrid_common.config import ENV_PREFIX, LogLevel, check_bucket_name
from hybrid_common.keys import DEFAULT_CSV_KEY, ResultNaming, validate_csv_key

BucketName = Annotated[str, AfterValidator(check_bucket_name)]
# Which code runs dlib's ResNet for the face descriptor (lambda_fn.faces.encode_face).
DescriptorEngine = Literal["numpy", "dlib"]


class RecognitionOptions(BaseModel):
    """How frames are sampled and faces matched: plain values for the recognition core, given
    by `FunctionSettings.recognition` (the handler) or by `hybrid-lambda process`'s flags."""

    model_config = ConfigDict(frozen=True)

    mode: Literal["all", "first-match"] = Field(
        default="all",
        description="'all' reports every known person; 'first-match' stops at the first "
        "recognised face, like the classic implementation.",
    )
    sample_fps: float = Field(default=1.0, gt=0, le=60, description="Frames sampled per second.")
    tolerance: float = Field(
        default=0.6, gt=0, le=1.0, description="Largest face distance that counts as a match."
    )
    match_margin: float = Field(
        default=0.08,
        ge=0,
        le=1.0,
        description="A match must also be this much closer than the next-nearest known person "
        "(dlib trained its descriptor with a 0.04 margin on each side of 0.6); 0 gives the "
        "classic rule, nearest within tolerance. See lambda_fn/faces.py, MATCH_MARGIN.",
    )
    detect_width: int = Field(
        default=640, ge=160, le=4096, description="Frames are scaled to this width for detection."
    )
    max_duration_s: float = Field(default=900.0, gt=0, description="Longer videos are refused.")
    max_frames: int = Field(default=2000, gt=0, description="At most this many sampled frames.")
    max_seconds: float = Field(
        default=600.0,
        gt=0,
        description="A video still being processed after this long fails with 'too_slow' "
        "(an error.json, rather than the function timing out with no output); the "
        "invocation's remaining time less deadline_margin_s applies when it is shorter.",
    )
    workers: int = Field(
        default=0,
        ge=0,
        description="Processes of lambda_fn.recognition_pool.RecognitionPool: videos are spread "
        "over them and a long video ('all' mode) is split in time segments; 0 means one per "
        "CPU core.",
    )
    find_small_faces: bool = Field(
        default=True,
        description="When the quick passes find no face in a frame, search it again at full "
        "resolution with upsampling (finds faces down to ~40 px, as the classic code does; "
        "up to ~1 s per 1080p frame with no face in it).",
    )
    rescan_every: int = Field(
        default=5,
        ge=0,
        description="Every Nth sample is also searched for small faces when large ones were "
        "found, so a far person beside a near one is not missed for long (0: never).",
    )
    track_faces: bool = Field(
        default=True,
        description="Do not re-encode a face that overlaps and looks like one of the previous "
        "sample (the encoding is the costliest step).",
    )
    decode_threads: int = Field(
        default=0, ge=0, description="FFmpeg decoding threads per video; 0 means automatic."
    )
    descriptor: DescriptorEngine = Field(
        default="numpy",
        description="Which engine computes the 128-d face descriptor from dlib's ResNet "
        "weights: 'numpy' (lambda_fn/resnet_descriptor.py, through numpy's OpenBLAS, ~7x "
        "faster than the dlib-bin wheel) or 'dlib' (dlib's own code). Same descriptors within "
        "float32 rounding (3.6e-7 measured).",
    )


class FunctionSettings(BaseSettings, RecognitionOptions):
    """The Lambda function's environment: its own settings and the recognition options
    (HYBRID_MODE, HYBRID_SAMPLE_FPS, ... — the fields it inherits from RecognitionOptions)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    endpoint_url: str | None = None
    region: str = "us-east-1"
    output_bucket: BucketName = "hybridsphere-output"
    table: str = Field(default="hybridsphere-students", min_length=3)
    known_faces: str = Field(
        default="/opt/hybridsphere/known_faces.json",
        description="Known-faces file: a path in the image, or s3://bucket/key.",
    )
    known_faces_check_s: float = Field(
        default=60.0,
        ge=0,
        description="A warm container checks the known-faces file for a new version at most "
        "this often (a conditional GET on S3, a stat for a path) and switches to it between "
        "videos; 0 checks before every video.",
    )
    max_input_bytes: int = Field(
        default=1 << 30, gt=0, description="Larger objects are refused before download."
    )
    tmp_dir: Path = Path("/tmp")  # noqa: S108 - Lambda's only writable folder
    contact_sheet: bool = True
    log_level: LogLevel = "info"
    students_cache_ttl_s: float = Field(
        default=300.0, ge=0, description="How long a warm container reuses a student lookup."
    )
    deadline_margin_s: float = Field(
        default=30.0,
        ge=0,
        description="A video's work stops this long before the invocation's time runs out "
        "(or at half the time left, if less), so a too-slow video still gets its "
        "'too_slow' error.json; SQS records not started with less time left are handed back.",
    )
    function_version: str = Field(
        default="", description="Build version reported in results (set by the image build)."
    )
    csv_key: Annotated[str, AfterValidator(validate_csv_key)] = Field(
        default=DEFAULT_CSV_KEY,
        description="Key of the CSV answer: '{stem}' is the input key without its extension, "
        "so '{stem}' alone is the classic handler's key (test_0.mp4 -> test_0). The watcher's "
        "csv_key must be the same.",
    )
    csv_header: bool = Field(
        default=False, description="Write a 'name,major,year' header row first."
    )

    @property
    def recognition(self) -> RecognitionOptions:
        """The recognition options alone, as the core takes them."""
        return RecognitionOptions(
            **{name: getattr(self, name) for name in RecognitionOptions.model_fields}
        )

    @property
    def naming(self) -> ResultNaming:
        """Where this function writes each result file."""
        return ResultNaming(self.csv_key)
