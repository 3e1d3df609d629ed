"""Frame sampling with PyAV: sample times, skipped work, rotation, containers, bad files, limits."""

from __future__ import annotations

import io
import shutil
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from lambda_fn import frames as frames_module
from lambda_fn.frames import VideoError, VideoInfo, VideoReader
from tests.lambda_fn.clips import (
    level_painter,
    level_to_index,
    write_audio_only,
    write_clip,
)

FPS = 10
FRAMES = 35  # 3.5 s: samples at 0, 1, 2, 3 s


@pytest.fixture(scope="module")
def levels_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """H.264 with B-frames, 10 fps, 3.5 s; each frame's grey level encodes its index."""
    path = tmp_path_factory.mktemp("clips") / "levels.mp4"
    return write_clip(path, level_painter(frames=FRAMES), frames=FRAMES, fps=FPS)


def read_all(path: Path, **limits: float) -> tuple[VideoReader, list[tuple[float, int]]]:
    with VideoReader(path, **limits) as reader:  # type: ignore[arg-type]
        samples = [(f.time_s, level_to_index(f.image, FRAMES)) for f in reader.frames()]
    return reader, samples


def test_samples_one_frame_per_second_like_ffmpeg_r1(levels_clip: Path) -> None:
    reader, samples = read_all(levels_clip)
    times = [t for t, _ in samples]
    assert times == pytest.approx([0.0, 1.0, 2.0, 3.0], abs=0.35)
    # The picture is the one shown at (or just after, when B-frames are skipped) that time.
    for t, index in samples:
        assert t * FPS - 0.5 <= index <= t * FPS + 3.5
    assert reader.info.duration_s == pytest.approx(3.5, abs=0.1)
    assert reader.info.fps == pytest.approx(FPS)
    assert (reader.info.width, reader.info.height, reader.info.rotation) == (160, 96, 0)


def test_sample_rate_is_configurable(levels_clip: Path) -> None:
    _, samples = read_all(levels_clip, sample_fps=2.0)
    assert [t for t, _ in samples] == pytest.approx([0, 0.5, 1, 1.5, 2, 2.5, 3], abs=0.35)


def test_frames_are_contiguous_and_detection_copy_is_scaled(levels_clip: Path) -> None:
    with VideoReader(levels_clip, detect_width=80) as reader:
        frame = next(reader.frames())
    assert frame.image.flags.c_contiguous and frame.small.flags.c_contiguous
    assert frame.image.shape == (96, 160, 3)
    assert frame.small.shape == (48, 80, 3)
    assert frame.scale == 2.0


def test_whole_gops_without_a_sample_are_not_decoded(tmp_path: Path) -> None:
    """Keyframe every 0.2 s, samples every 1 s: most GOPs are skipped, samples still right."""
    frames = 60
    path = write_clip(
        tmp_path / "short_gops.mp4",
        level_painter(frames=frames),
        frames=frames,
        fps=FPS,
        gop=2,
        options={"bf": "0"},
    )
    with VideoReader(path) as reader:
        samples = [(f.time_s, level_to_index(f.image, frames)) for f in reader.frames()]
    assert [t for t, _ in samples] == pytest.approx([0, 1, 2, 3, 4, 5], abs=0.05)
    assert [index for _, index in samples] == [0, 10, 20, 30, 40, 50]
    assert reader.frames_decoded <= frames // 2


@pytest.mark.parametrize(
    ("codec", "rotation"),
    [("libx264", 90), ("libx264", 180), ("libx264", 270), ("libx265", 90), ("libx265", 270)],
)
def test_display_rotation_is_applied(tmp_path: Path, codec: str, rotation: int) -> None:
    """A phone-style clip: frames stored turned, with a display matrix saying how."""
    upright = np.zeros((64, 96, 3), dtype=np.uint8)  # landscape as shown
    upright[:16, :16] = 255  # white marker in the top-left corner, as shown
    stored = np.ascontiguousarray(np.rot90(upright, -rotation // 90))
    path = write_clip(
        tmp_path / "rotated.mp4",
        lambda i: stored,
        frames=12,
        fps=FPS,
        rotation=rotation,
        codec=codec,
    )
    with VideoReader(path) as reader:
        frame = next(reader.frames())
        info = reader.info
    assert (info.width, info.height, info.rotation) == (96, 64, rotation)
    assert frame.image.shape == (64, 96, 3)
    assert frame.image[:16, :16].mean() > 200  # the marker is back in the top-left corner
    assert frame.image[-16:, -16:].mean() < 50


@pytest.mark.parametrize(
    ("suffix", "codec"),
    [
        ("mkv", "libx264"),
        ("mov", "libx264"),
        ("mp4", "libx265"),  # HEVC, as phones record
        ("webm", "libvpx-vp9"),
        ("webm", "libvpx"),  # VP8
        ("avi", "mpeg4"),
        ("ts", "libx264"),
        ("flv", "libx264"),
        ("mpg", "mpeg2video"),
        ("h264", "libx264"),  # raw H.264: no timestamps at all, times from the frame count
    ],
)
def test_reads_common_containers(tmp_path: Path, suffix: str, codec: str) -> None:
    frames = 25
    path = write_clip(
        tmp_path / f"clip.{suffix}", level_painter(frames=frames), frames=frames, codec=codec
    )
    with VideoReader(path) as reader:
        samples = [(f.time_s, level_to_index(f.image, frames)) for f in reader.frames()]
    assert [t for t, _ in samples] == pytest.approx([0, 1, 2], abs=0.35)
    assert [index for _, index in samples] == pytest.approx([0, 10, 20], abs=3)


def test_text_file_named_mp4_fails_fast(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 100)
    started = time.perf_counter()
    with pytest.raises(VideoError) as caught:
        VideoReader(path)
    assert caught.value.code == "not_a_video"
    assert time.perf_counter() - started < 2.0


def test_audio_only_file_has_no_video_stream(tmp_path: Path) -> None:
    path = write_audio_only(tmp_path / "voice.mp4")
    with pytest.raises(VideoError) as caught:
        VideoReader(path)
    assert caught.value.code == "no_video_stream"
    assert "audio" in caught.value.message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VideoError) as caught:
        VideoReader(tmp_path / "absent.mp4")
    assert caught.value.code == "not_found"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9])
def test_truncated_file_gives_a_result_or_an_error(
    levels_clip: Path, tmp_path: Path, keep: float
) -> None:
    """Cut anywhere: some frames or a VideoError, never a hang or another exception."""
    data = levels_clip.read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: int(len(data) * keep)])
    try:
        with VideoReader(path) as reader:
            samples = list(reader.frames())
    except VideoError as error:
        assert error.code in {"not_a_video", "decode_failed"}
    else:
        assert len(samples) <= 4


@pytest.mark.timeout(30)
def test_truncated_course_clip(shared_data: Path, tmp_path: Path) -> None:
    data = (shared_data / "cse546" / "test_case_1" / "test_1.mp4").read_bytes()
    path = tmp_path / "test_1_half.mp4"
    path.write_bytes(data[: len(data) // 2])
    try:
        with VideoReader(path) as reader:
            list(reader.frames())
    except VideoError as error:
        assert error.code in {"not_a_video", "decode_failed"}


def test_longer_than_the_limit_is_refused_before_decoding(levels_clip: Path) -> None:
    with pytest.raises(VideoError) as caught:
        VideoReader(levels_clip, max_duration_s=2.0)
    assert caught.value.code == "too_long"


def test_more_samples_than_the_limit_are_refused(levels_clip: Path) -> None:
    with pytest.raises(VideoError) as caught:
        VideoReader(levels_clip, max_frames=3)
    assert caught.value.code == "too_many_frames"
    with VideoReader(levels_clip, max_frames=4) as reader:
        assert len(list(reader.frames())) == 4


def test_a_segment_seeks_and_samples_only_its_own_times(tmp_path: Path) -> None:
    """How the pool splits a long video: samples [5, 9) s, decoding from the keyframe at 5 s."""
    frames = 120
    path = write_clip(
        tmp_path / "long.mp4", level_painter(frames=frames), frames=frames, fps=FPS, gop=10
    )
    with VideoReader(path, start_s=5.0, end_s=9.0) as reader:
        samples = [(f.index, f.time_s, level_to_index(f.image, frames)) for f in reader.frames()]
    assert [(index, t) for index, t, _ in samples] == [(5, 5.0), (6, 6.0), (7, 7.0), (8, 8.0)]
    assert [level for _, _, level in samples] == pytest.approx([50, 60, 70, 80], abs=3)
    assert reader.frames_decoded < 60  # started at 5 s, stopped before 9 s


@pytest.mark.timeout(30)
def test_damaged_middle_still_gives_frames(shared_data: Path, tmp_path: Path) -> None:
    """Garbage in the middle of the picture data: FFmpeg conceals it; a result, not a hang."""
    data = bytearray((shared_data / "cse546" / "test_case_1" / "test_1.mp4").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 20_000] = bytes(range(256)) * (20_000 // 256) + bytes(20_000 % 256)
    path = tmp_path / "damaged.mp4"
    path.write_bytes(bytes(data))
    try:
        with VideoReader(path) as reader:
            samples = list(reader.frames())
    except VideoError as error:
        assert error.code == "decode_failed"
    else:
        assert samples and samples[0].time_s == 0.0


@pytest.mark.parametrize("rotation", [90, 270])
def test_rotation_agrees_with_the_ffmpeg_command(tmp_path: Path, rotation: int) -> None:
    """The same picture as `ffmpeg -i clip frame.png`, which applies the display matrix."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("the ffmpeg command is not installed")
    stored = np.zeros((96, 64, 3), dtype=np.uint8)
    stored[:16, :16] = 255
    clip = write_clip(tmp_path / "clip.mp4", lambda i: stored, frames=5, rotation=rotation)
    png = tmp_path / "frame.png"
    subprocess.run([ffmpeg, "-v", "error", "-i", clip, "-frames:v", "1", png], check=True)
    reference = np.asarray(Image.open(png).convert("RGB")).astype(int)
    with VideoReader(clip) as reader:
        ours = next(reader.frames()).image.astype(int)
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).mean() < 2


# --- hostile pictures: a stream that declares one size and carries another ---

# Over 8K (33 Mpx) by 4.3x, small enough to build in a second or two: one gray RGB copy of it
# is 432 MB, and recognition made several.
BOMB_SIDE = 12000


def make_big_jpeg() -> bytes:
    """A 12000x12000 flat grey JPEG: ~0.6 MB (optimised Huffman tables, 2 bits a block)."""
    buffer = io.BytesIO()
    Image.new("L", (BOMB_SIDE, BOMB_SIDE), 128).save(
        buffer, format="JPEG", quality=1, optimize=True
    )
    return buffer.getvalue()


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    return make_big_jpeg()


def write_mjpeg_bomb(path: Path, big_jpeg: bytes, layout: str) -> Path:
    """Matroska, MJPEG, a header that says 64x64; then one picture a second per `layout`
    letter: `s` a real 64x64 JPEG, `B` the big one. Every picture is a keyframe and a sample.
    """
    small = io.BytesIO()
    Image.new("L", (64, 64), 128).save(small, format="JPEG")
    pictures = {"s": small.getvalue(), "B": big_jpeg}
    with av.open(str(path), mode="w", format="matroska") as out:
        stream = out.add_stream("mjpeg", rate=1)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuvj420p"
        for index, letter in enumerate(layout):
            packet = av.Packet(pictures[letter])
            packet.stream = stream
            packet.time_base = Fraction(1, 1000)
            packet.pts = packet.dts = index * 1000
            packet.duration = 1000
            packet.is_keyframe = True
            out.mux(packet)
    return path


def test_a_picture_over_8k_mid_stream_is_too_large(tmp_path: Path, big_jpeg: bytes) -> None:
    """The header says 64x64; the second picture is 12000x12000: refused, not decoded."""
    path = write_mjpeg_bomb(tmp_path / "bomb.mkv", big_jpeg, "sBB")
    with VideoReader(path) as reader:
        assert (reader.info.width, reader.info.height) == (64, 64)
        frames = reader.frames()
        assert next(frames).image.shape == (64, 64, 3)
        with pytest.raises(VideoError) as caught:
            next(frames)
    assert caught.value.code == "too_large"
    assert "mid-stream" in caught.value.message and "declared 64x64" in caught.value.message


def test_a_first_picture_over_8k_is_refused_at_open(tmp_path: Path, big_jpeg: bytes) -> None:
    """Probing finds the first picture's real size (without decoding it): refused at once."""
    path = write_mjpeg_bomb(tmp_path / "bomb.mkv", big_jpeg, "Bs")
    with pytest.raises(VideoError) as caught:
        VideoReader(path)
    assert caught.value.code == "too_large"
    assert f"{BOMB_SIDE}x{BOMB_SIDE} pictures are larger than 8K" in caught.value.message


def test_each_decoded_picture_is_checked_before_it_is_converted() -> None:
    """The check after the decoder (should a decoder ignore `max_pixels`): 7696x4320 > 8K."""
    info = VideoInfo(1.0, 1.0, 64, 64, 0, "mjpeg", "matroska")
    check = frames_module._check_picture_size  # looked up here: the module must import without it
    check(av.VideoFrame(7680, 4320, "gray"), info)  # exactly 8K: accepted
    with pytest.raises(VideoError, match=r"too_large: a 7696x4320 picture mid-stream .* 64x64"):
        check(av.VideoFrame(7696, 4320, "gray"), info)


def test_a_codec_outside_the_allow_list_is_refused(tmp_path: Path) -> None:
    """FFV1 (an archival codec no phone or camera writes) decodes fine, but is not accepted."""
    path = write_clip(tmp_path / "clip.mkv", level_painter(frames=3), frames=3, codec="ffv1")
    with pytest.raises(VideoError) as caught:
        VideoReader(path)
    assert caught.value.code == "unsupported_codec"
    assert "ffv1" in caught.value.message and "h264" in caught.value.message
