"""Small videos made on the fly with PyAV, for tests of decoding, sampling and rotation."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

FACES = "faces"  # under the shared data folder

Painter = Callable[[int], np.ndarray]


def write_clip(
    path: Path,
    paint: Painter,
    *,
    frames: int,
    fps: int = 10,
    codec: str = "libx264",
    options: dict[str, str] | None = None,
    rotation: int = 0,
    gop: int | None = None,
) -> Path:
    """Encode `frames` RGB pictures from `paint(index)` into `path` (container from suffix)."""
    first = paint(0)
    height, width = first.shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        if gop is not None:
            stream.codec_context.gop_size = gop
        if options:
            stream.codec_context.options = options
        if rotation:
            stream.set_display_rotation(rotation)
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(paint(index) if index else first, format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def level_painter(width: int = 160, height: int = 96, frames: int = 100) -> Painter:
    """Frame i is a flat grey whose level encodes i, so a decoded frame tells its index."""

    def paint(index: int) -> np.ndarray:
        level = round(index * 250 / max(1, frames - 1))
        return np.full((height, width, 3), level, dtype=np.uint8)

    return paint


def level_to_index(image: np.ndarray, frames: int = 100) -> int:
    return round(float(image.mean()) * max(1, frames - 1) / 250)


def still_painter(picture: np.ndarray) -> Painter:
    """The same picture in every frame."""
    return lambda index: picture


def load_picture(path: Path, width: int | None = None) -> np.ndarray:
    """An RGB photo as an array, optionally scaled to `width` (even sizes, for yuv420p)."""
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    if width is not None:
        height = round(image.height * width / image.width)
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    even = image.crop((0, 0, image.width // 2 * 2, image.height // 2 * 2))
    return np.ascontiguousarray(even)


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    """An audio file (AAC in MP4) with no video stream."""
    rate = 8000
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=rate)
        samples = np.zeros((1, int(rate * seconds)), dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
