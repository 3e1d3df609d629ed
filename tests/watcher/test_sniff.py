"""Content sniffing: container signatures, allowed extensions, special files never opened."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from watcher.sniff import container_of, normalise_extensions, sniff

ALLOWED = normalise_extensions(["MP4", ".mov", "mkv", "webm", "avi", "ts", "mpg", "wmv"])

SIGNATURES = {
    "mp4": b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41",
    "mov": b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00qt  ",
    "mkv": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x88matroska",
    "webm": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x84webm",
    "avi": b"RIFF\x24\x00\x00\x00AVI LIST",
    "mpeg": b"\x00\x00\x01\xba\x44\x00\x04\x00\x04\x01",
    "asf": bytes.fromhex("3026B2758E66CF11A6D900AA0062CE6C") + b"\x00" * 8,
    "ts": (b"\x47" + b"\x00" * 187) * 2,
}


@pytest.mark.parametrize(("container", "head"), SIGNATURES.items())
def test_signatures(container: str, head: bytes) -> None:
    assert container_of(head) == container


@pytest.mark.parametrize(
    "head",
    [b"hello world, not a video", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, b"GIF89a" + b"\x00" * 300,
     b"RIFF\x24\x00\x00\x00WAVEfmt ", b"", b"\x00" * 64],
)  # fmt: skip
def test_non_videos(head: bytes) -> None:
    assert container_of(head) is None


def test_real_course_clip_is_mp4(shared_data: Path) -> None:
    clip = shared_data / "cse546" / "test_case_1" / "test_0.mp4"
    verdict = sniff(clip, ALLOWED)
    assert verdict.ok and verdict.container == "mp4"


def test_extension_must_be_allowed(tmp_path: Path) -> None:
    path = tmp_path / "clip.flv"
    path.write_bytes(SIGNATURES["mp4"])
    verdict = sniff(path, ALLOWED)
    assert not verdict.ok and verdict.reason == "extension"
    upper = tmp_path / "CLIP.MP4"
    upper.write_bytes(SIGNATURES["mp4"])
    assert sniff(upper, ALLOWED).ok


def test_renamed_text_and_empty_files_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("meeting notes\n")
    assert sniff(text, ALLOWED).reason == "not a video"
    empty = tmp_path / "empty.mp4"
    empty.touch()
    assert sniff(empty, ALLOWED).reason == "empty"


def test_fifo_and_symlink_are_not_followed_or_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    verdict = sniff(fifo, ALLOWED)  # a blocking open would hang here forever
    assert verdict.reason == "not a regular file" and verdict.detail == "fifo"
    real = tmp_path / "real.mp4"
    real.write_bytes(SIGNATURES["mp4"])
    link = tmp_path / "link.mp4"
    link.symlink_to(real)
    assert not sniff(link, ALLOWED).ok
