"""Which objects are videos for the function: the suffixes that trigger it, and where.

The one definition of the trigger. The watcher takes these extensions from its inbox (its
default `allowed_extensions`), local provisioning and the SAM template
(`deploy/aws/template.yaml`) set one S3 notification per trigger suffix, and tests hold the
template and provisioning to this module (`tests/deploy/test_video_triggers.py`,
`tests/watcher/test_provision.py`). Dependency-free: every program imports it.

Decisions:
- Every key of the input bucket triggers (`TRIGGER_PREFIX` is empty), not only the watcher's
  `<key_prefix>/`: a video put there by hand (`aws s3 cp clip.mp4 s3://INPUT/`) gets its
  results in the output bucket at the same path, on AWS as in the local cloud.
- S3 suffix filters are case-sensitive. The watcher lower-cases extensions in keys
  (`hybrid_common.keys.safe_name`); for videos put by hand, each suffix also triggers in upper
  case (`IMG_0001.MOV`, `GX010001.MP4`, as phones and cameras name them). Mixed case
  (`clip.Mp4`) triggers nothing, on either stack: S3 cannot match it without one notification
  per spelling.
"""

from __future__ import annotations

# The watcher's default `allowed_extensions`, in that order.
VIDEO_EXTENSIONS: tuple[str, ...] = (
    "mp4",
    "m4v",
    "mov",
    "mkv",
    "webm",
    "avi",
    "mpg",
    "mpeg",
    "ts",
    "3gp",
    "wmv",
)
VIDEO_SUFFIXES: tuple[str, ...] = tuple(f".{extension}" for extension in VIDEO_EXTENSIONS)
# One S3 notification configuration each (S3 allows one suffix rule per configuration).
TRIGGER_SUFFIXES: tuple[str, ...] = VIDEO_SUFFIXES + tuple(s.upper() for s in VIDEO_SUFFIXES)
# The key prefix a notification filters on: none, so every key of the input bucket triggers.
TRIGGER_PREFIX = ""


def triggers(key: str) -> bool:
    """Whether an object created at `key` in the input bucket invokes the function."""
    return key.startswith(TRIGGER_PREFIX) and key.endswith(TRIGGER_SUFFIXES)


def s3_filter_rules(suffix: str) -> list[dict[str, str]]:
    """The S3 key filter rules (`Name`/`Value`) of the notification for `suffix`."""
    rules = [{"Name": "suffix", "Value": suffix}]
    if TRIGGER_PREFIX:
        rules.insert(0, {"Name": "prefix", "Value": TRIGGER_PREFIX})
    return rules
