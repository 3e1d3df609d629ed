"""Object key naming shared by the watcher (which uploads) and the function (which answers).

An input key is `<prefix>/<node id>/<submission id>/<safe name>`; every output for it sits at
the same path in the output bucket with the video's extension replaced by a result suffix.
Keys are made only of characters that survive S3 event URL-encoding and every shell.
"""

from __future__ import annotations

import posixpath
import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

# S3 allows 1024 bytes per key; leave room for prefix, node, submission and result suffix.
MAX_NAME_BYTES = 180
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class ResultKind(StrEnum):
    """The files the function writes for one input; CSV is written last and means 'complete'."""

    CSV = ".csv"
    DETAILS = ".json"
    FACES = ".faces.jpg"
    ERROR = ".error.json"


# Longest suffix first, so `x.error.json` is not taken for a DETAILS file of `x.error`.
_SUFFIXES_LONGEST_FIRST = sorted(ResultKind, key=lambda k: len(k.value), reverse=True)


def safe_name(original: str) -> str:
    """A key-safe, length-bounded version of a file name; keeps the extension.

    Unicode is folded to ASCII where it can be (é → e), anything else becomes '_', path
    separators and leading dots/dashes cannot survive, so the result can never escape the
    submission's folder or look like an option.
    """
    base = original.replace("\\", "/").rsplit("/", 1)[-1]
    folded = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    stem, dot, ext = folded.rpartition(".")
    if not dot:
        stem, ext = folded, ""
    ext = _UNSAFE.sub("", ext).lower()[:10]
    stem = _UNSAFE.sub("_", stem).strip("._-") or "video"
    room = MAX_NAME_BYTES - (len(ext) + 1 if ext else 0)
    stem = stem[:room].rstrip("._-") or "video"
    return f"{stem}.{ext}" if ext else stem


def validate_segment(value: str, what: str) -> str:
    """Check a prefix/node/submission segment; raise ValueError naming `what` if unfit."""
    if not _SEGMENT.fullmatch(value):
        raise ValueError(
            f"{what} must be 1-63 characters of letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit (got {value!r})"
        )
    return value


@dataclass(frozen=True, slots=True)
class InputKey:
    """The parts of an input object key."""

    prefix: str
    node_id: str
    submission_id: str
    name: str

    def __post_init__(self) -> None:
        for segment in self.prefix.split("/"):
            validate_segment(segment, "key prefix")
        validate_segment(self.node_id, "node id")
        validate_segment(self.submission_id, "submission id")
        if safe_name(self.name) != self.name:
            raise ValueError(f"object name {self.name!r} is not key-safe; use safe_name()")

    @property
    def key(self) -> str:
        return f"{self.prefix}/{self.node_id}/{self.submission_id}/{self.name}"

    @property
    def node_prefix(self) -> str:
        """The listing prefix of everything this node owns, with its trailing slash."""
        return node_prefix(self.prefix, self.node_id)

    @classmethod
    def parse(cls, key: str) -> InputKey:
        parts = key.split("/")
        if len(parts) < 4:
            raise ValueError(f"not a submission key: {key!r}")
        return cls("/".join(parts[:-3]), parts[-3], parts[-2], parts[-1])


def node_prefix(prefix: str, node_id: str) -> str:
    return f"{prefix}/{node_id}/"


def stem_of(key: str) -> str:
    """The input key without its extension: `a/b/clip.mp4` → `a/b/clip`."""
    head, tail = posixpath.split(key)
    stem = tail.rsplit(".", 1)[0] if "." in tail.lstrip(".") else tail
    return posixpath.join(head, stem) if head else stem


def result_key(input_key: str, kind: ResultKind) -> str:
    """Where the function writes `kind` for `input_key`."""
    return stem_of(input_key) + kind.value


def split_result_key(key: str) -> tuple[str, ResultKind] | None:
    """Inverse of `result_key` up to the extension: (stem, kind), or None if not a result."""
    for kind in _SUFFIXES_LONGEST_FIRST:
        if key.endswith(kind.value):
            return key[: -len(kind.value)], kind
    return None


# The CSV's key is a setting on both sides (HYBRID_CSV_KEY): graders written for the classic
# handler read the answer to `test_0.mp4` at `test_0`. The companions keep their suffixes.
DEFAULT_CSV_KEY = "{stem}.csv"
STEM_FIELD = "{stem}"
_COMPANIONS = (ResultKind.DETAILS, ResultKind.FACES, ResultKind.ERROR)


def validate_csv_key(template: str) -> str:
    """Check a CSV key template; raise ValueError saying what is wrong.

    It must be `{stem}` followed by key-safe characters: the watcher lists its node's prefix
    and finds a result beside its input, so the CSV cannot live elsewhere. The suffix must not
    end like a companion (`.json`, `.error.json`, `.faces.jpg`), nor be the end of one, or the
    CSV of one input could be taken for another file.
    """
    if not template.startswith(STEM_FIELD):
        raise ValueError(f"the CSV key must start with {STEM_FIELD} (got {template!r})")
    suffix = template[len(STEM_FIELD) :]
    if not re.fullmatch(r"[A-Za-z0-9._-]*", suffix):
        raise ValueError(
            f"the CSV key must be {STEM_FIELD} followed only by letters, digits, '.', '_' "
            f"or '-' (got {template!r})"
        )
    for kind in _COMPANIONS:
        if suffix.endswith(kind.value) or (suffix and kind.value.endswith(suffix)):
            raise ValueError(
                f"the CSV key {template!r} could collide with the {kind.value} companion file"
            )
    return template


@dataclass(frozen=True, slots=True)
class ResultNaming:
    """Where each result file of an input lives, given the CSV key template."""

    csv_key: str = DEFAULT_CSV_KEY

    def __post_init__(self) -> None:
        validate_csv_key(self.csv_key)

    @property
    def csv_suffix(self) -> str:
        return self.csv_key[len(STEM_FIELD) :]

    def key(self, input_key: str, kind: ResultKind) -> str:
        """Where the function writes `kind` for `input_key`."""
        if kind is ResultKind.CSV:
            return stem_of(input_key) + self.csv_suffix
        return result_key(input_key, kind)

    def finals(self, key: str) -> list[tuple[str, ResultKind]]:
        """Every (stem, kind) for which `key` would be the final file (CSV or error).

        With the classic template (`{stem}`) a key can be read two ways: `a/x.error.json` is
        the error of `a/x` or the CSV of an input named `x.error.json.mp4`. Each reading is
        returned; the caller keeps the one whose stem it awaits.
        """
        found = []
        if key.endswith(ResultKind.ERROR.value):
            found.append((key[: -len(ResultKind.ERROR.value)], ResultKind.ERROR))
        suffix = self.csv_suffix
        if key.endswith(suffix) and len(key) > len(suffix):
            found.append((key[: len(key) - len(suffix)], ResultKind.CSV))
        return found
