"""Is this file a video? Its extension must be allowed and its first bytes a video container.

Only the container's signature is read (magic bytes), never the whole file: a renamed
`.txt` or a half-copied zero-filled file is refused before it costs an upload.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Enough for two MPEG-TS packets (sync byte 0x47 every 188 bytes).
HEAD_BYTES = 192

# ISO-BMFF (mp4/mov/3gp) files start with a box: 4-byte size, then its type.
_ISO_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"}
_ASF = bytes.fromhex("3026B2758E66CF11A6D900AA0062CE6C")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of looking at one file: its container, or why it is refused."""

    container: str | None
    reason: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.container is not None


def container_of(head: bytes) -> str | None:  # noqa: PLR0911 -- one return per container
    """The container a file's first bytes announce, or None if none we know."""
    if len(head) >= 8 and head[4:8] in _ISO_BOXES:
        return "mov" if head[4:8] != b"ftyp" or head[8:10] == b"qt" else "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm" if b"webm" in head else "mkv"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith((b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")):
        return "mpeg"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "ts"
    if head.startswith(_ASF):
        return "asf"
    if head.startswith(b"FLV\x01"):
        return "flv"
    if head.startswith(b"OggS"):
        return "ogg"
    return None


def normalise_extensions(extensions: Iterable[str]) -> frozenset[str]:
    """`(".MP4", "mov")` → `{"mp4", "mov"}`."""
    return frozenset(e.strip().lstrip(".").lower() for e in extensions if e.strip())


def extension_of(name: str) -> str:
    _, dot, ext = name.rpartition(".")
    return ext.lower() if dot else ""


def sniff(path: str | os.PathLike[str], allowed: frozenset[str]) -> Verdict:
    """Check a file without following links or blocking on a FIFO swapped in behind our back."""
    name = os.fspath(path)
    ext = extension_of(Path(name).name)
    if ext not in allowed:
        return Verdict(None, "extension", f".{ext or '(none)'} is not one of {sorted(allowed)}")
    try:
        # O_NONBLOCK: opening a FIFO would otherwise wait for a writer forever.
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        return Verdict(None, "unreadable", str(error))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return Verdict(None, "not a regular file", kind_of(info.st_mode))
        if info.st_size == 0:
            return Verdict(None, "empty", "0 bytes")
        head = os.read(fd, HEAD_BYTES)
    finally:
        os.close(fd)
    container = container_of(head)
    if container is None:
        return Verdict(None, "not a video", f"unknown signature {head[:12].hex()}")
    return Verdict(container)


def kind_of(mode: int) -> str:
    """A person's word for a file type (for reject reasons)."""
    for test, word in (
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISREG, "regular file"),
    ):
        if test(mode):
            return word
    return "special file"
