"""Sampled video frames, decoded in process with PyAV: rotation applied, work skipped where safe.

Sampling is like `ffmpeg -r 1`: sample k is the first frame shown at or after k/sample_fps.
Decoding is the floor of the whole function, so frames that cannot be sampled are skipped
as early as possible: whole groups of pictures (GOPs) with no sample time are not decoded
at all (keyframe times from the container's index), non-reference frames are dropped by the
decoder (`skip_frame=NONREF`), and only the sampled frames are converted to RGB arrays.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Generator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import av.container
import av.error
import av.video.stream
import numpy as np

from hybrid_common.logs import get_logger

log = get_logger(__name__)

# Damaged data: FFmpeg conceals what it can and a demuxer error ends the video early (a
# truncated file still gives a result); more errors than this, or no decodable frame at
# all, fail the video with `decode_failed`.
MAX_DECODE_ERRORS = 20
# Larger pictures are refused: one RGB frame of 8K video is already 100 MB. The limit holds
# for every decoded picture, not only the size the container declares: a stream may declare
# 64x64 and then carry 16000x16000 JPEGs (a 1 MB file drove recognition to 2.2 GB).
MAX_PIXELS = 7680 * 4320
# Codecs that phones, cameras and screen recorders write; every other FFmpeg decoder (there
# are hundreds, most for rare or legacy formats) is attack surface a face-recognition
# function does not need. mpeg4/h263: older phones' MP4/3GP; mpeg2video: camcorders, DVD
# and broadcast TS; mjpeg: webcams, dashcams, older cameras' AVI; prores: iPhone ProRes and
# cinema cameras; vp8/vp9/av1: WebM from browser and desktop screen recorders.
ALLOWED_CODECS = frozenset(
    {"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "h263", "mpeg2video", "mjpeg", "prores"}
)
# Container and frame timestamps disagree by rounding: times closer than this are equal.
_EPSILON = 1e-3


class VideoError(Exception):
    """A video that cannot be processed; `code` is stable (for error.json), `message` readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about the video; width/height are as displayed (rotated)."""

    duration_s: float
    fps: float
    width: int
    height: int
    rotation: int
    codec: str
    container: str


@dataclass(frozen=True, eq=False)  # holds numpy arrays: no field-wise ==
class SampledFrame:
    """One sampled frame: full-resolution RGB for encoding, a small copy for detection."""

    index: int
    time_s: float
    image: np.ndarray  # (H, W, 3) uint8, C-contiguous, display orientation
    small: np.ndarray  # same picture scaled to at most detect_width wide
    scale: float  # image width / small width


class VideoReader:
    """Open a video, check it against the limits, and yield its sampled frames."""

    def __init__(
        self,
        path: Path,
        *,
        sample_fps: float = 1.0,
        detect_width: int = 640,
        max_duration_s: float = 900.0,
        max_frames: int = 2000,
        decode_threads: int = 0,
        start_s: float = 0.0,
        end_s: float = math.inf,
    ) -> None:
        """`start_s`/`end_s` select the samples of one segment (the pool splits long videos)."""
        self.path = Path(path)
        self.start_s = start_s
        self.end_s = end_s
        self.sample_fps = sample_fps
        self.detect_width = detect_width
        self.max_duration_s = max_duration_s
        self.max_frames = max_frames
        self.decode_errors = 0
        self.frames_decoded = 0
        self._skip_to = math.inf  # packets are skipped up to this keyframe time, if finite
        self._last_keyframe = -math.inf  # time of the last keyframe packet demuxed
        self._container = _open(self.path)
        try:
            self._stream = self._video_stream()
            self.info = self._probe()
            self._check_limits(self.info.duration_s)
            self._keyframes = self._keyframe_times()
            codec = self._stream.codec_context
            # FFmpeg refuses (EINVAL) to allocate any larger picture: the limit is enforced
            # before the memory is taken, whatever the container said.
            codec.options = {**codec.options, "max_pixels": str(MAX_PIXELS)}
            codec.thread_type = "AUTO"
            codec.thread_count = decode_threads
            # Non-reference frames (most B-frames) are never needed to decode other frames,
            # so dropping them is always safe; a sample then lands on the next kept frame.
            codec.skip_frame = "NONREF"
        except BaseException:
            self._container.close()
            raise

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def _video_stream(self) -> av.video.stream.VideoStream:
        if not self._container.streams:
            # Typically an MP4 cut short before its index (moov) at the end.
            raise VideoError("not_a_video", "no streams found (truncated, or not a video)")
        if not self._container.streams.video:
            kinds = ", ".join(sorted({str(s.type) for s in self._container.streams})) or "none"
            raise VideoError("no_video_stream", f"no video stream (streams: {kinds})")
        return self._container.streams.video[0]

    def _probe(self) -> VideoInfo:
        stream = self._stream
        duration = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif self._container.duration is not None:
            duration = self._container.duration / av.time_base
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise VideoError("no_video_stream", "the video stream has no picture size")
        if width * height > MAX_PIXELS:
            raise VideoError("too_large", f"{width}x{height} pictures are larger than 8K")
        codec = stream.codec_context.name
        if codec not in ALLOWED_CODECS:
            raise VideoError(
                "unsupported_codec",
                f"{codec} video is not accepted (accepted: {', '.join(sorted(ALLOWED_CODECS))})",
            )
        return VideoInfo(
            duration_s=round(duration, 3),
            fps=round(float(rate), 3) if rate else 0.0,
            width=width,
            height=height,
            rotation=0,  # known once the first frame is decoded (display matrix side data)
            codec=codec,
            container=self._container.format.name,
        )

    def _check_limits(self, duration_s: float) -> None:
        if duration_s > self.max_duration_s:
            raise VideoError(
                "too_long",
                f"{duration_s:.1f} s is longer than the limit of {self.max_duration_s} s",
            )
        samples = math.floor(duration_s * self.sample_fps) + 1
        if samples > self.max_frames:
            raise VideoError(
                "too_many_frames",
                f"{samples} sampled frames exceed the limit of {self.max_frames}",
            )

    def _keyframe_times(self) -> list[float]:
        """Keyframe times from the container's index (mp4/mov/mkv/avi), relative to the start."""
        stream = self._stream
        if stream.time_base is None:
            return []
        start = stream.start_time or 0
        return sorted(
            float((entry.timestamp - start) * stream.time_base)
            for entry in stream.index_entries
            if entry.is_keyframe
        )

    def frames(self) -> Generator[SampledFrame, None, None]:
        """Decode and yield the sampled frames in order (of the segment, if one was given)."""
        interval = 1.0 / self.sample_fps
        # Half a source frame of slack, so a frame at 0.9999 s serves the 1 s sample.
        slack = 0.5 / self.info.fps if self.info.fps else 0.0
        next_sample = math.ceil(self.start_s * self.sample_fps - _EPSILON)
        if next_sample:
            self._seek(next_sample * interval)
        last_time = math.inf
        for frame, t in self._timed_frames():
            if next_sample * interval >= self.end_s - _EPSILON:
                return  # the next segment's first sample
            if t - last_time > interval / 2:
                self._decode_every_frame()
            last_time = t
            if t + slack < next_sample * interval:
                continue
            if next_sample >= self.max_frames:
                raise VideoError("too_many_frames", f"more than {self.max_frames} sampled frames")
            if self.info.rotation == 0 and frame.rotation:
                self.info = _displayed(self.info, frame.rotation)
            yield self._sample(frame, next_sample, t)
            # A frame past several sample times (a gap in the video) serves them once.
            next_sample = math.floor((t + slack) / interval) + 1
            if 0 < self.info.duration_s < next_sample * interval - slack:
                return  # no sample time left: the rest of the file need not be decoded
            if self._skip_before(next_sample * interval, t):
                last_time = math.inf  # the jump over skipped GOPs is not a gap in the video
        if self.frames_decoded == 0 and not self.start_s:
            raise VideoError("decode_failed", "no frame could be decoded")

    def _seek(self, time_s: float) -> None:
        """Jump to the keyframe before `time_s`; decoding restarts there."""
        stream = self._stream
        if stream.time_base is None:
            return  # no timestamps to seek by: decode from the start
        target = int(time_s / stream.time_base) + (stream.start_time or 0)
        try:
            self._container.seek(target, stream=stream, backward=True, any_frame=False)
        except av.error.FFmpegError as error:
            log.warning("video.seek_failed", path=str(self.path), error=str(error))

    def _timed_frames(self) -> Iterator[tuple[av.VideoFrame, float]]:
        """Decoded frames and their time from the start, minus the GOPs `_skip_before` skips."""
        stream = self._stream
        # The stream's start time is the origin, so that segments of one video agree on
        # times; the first frame's time stands in for it when the stream has none.
        start: float | None = None
        if stream.start_time is not None and stream.time_base is not None:
            start = float(stream.start_time * stream.time_base)
        for packet in self._demux():
            if packet.is_keyframe:
                self._last_keyframe = self._packet_time(packet, math.inf)
                if self._last_keyframe >= self._skip_to - _EPSILON:
                    self._skip_to = math.inf  # the keyframe we skipped to: decode from here
            if self._skip_to < math.inf:
                continue
            for frame in self._decode(packet):
                t = self._frame_time(frame)
                self.frames_decoded += 1
                start = t if start is None else start
                if t - start > self.max_duration_s:
                    raise VideoError(
                        "too_long", f"frames beyond the limit of {self.max_duration_s} s"
                    )
                yield frame, t - start

    def _skip_before(self, next_time: float, now: float) -> bool:
        """Skip the packets up to the last keyframe before `next_time`, if there is one ahead.

        The decoder may lag the demuxer (frame threads): only a keyframe not demuxed yet
        will do, or a whole GOP holding a sample would be lost.
        """
        keyframe = _last_keyframe_before(self._keyframes, next_time + _EPSILON)
        if keyframe > max(now, self._last_keyframe) + _EPSILON:
            self._skip_to = keyframe
            return True
        return False

    def _demux(self) -> Iterator[av.Packet[Any]]:
        """Packets of the video stream; a demuxer error ends a truncated file."""
        try:
            # The last packet is empty: decoding it flushes the frames the decoder holds.
            yield from self._container.demux(self._stream)
        except av.error.FFmpegError as error:
            self._decode_error(error)
            yield av.Packet()  # still flush what was decoded before the damage

    def _decode(self, packet: av.Packet[Any]) -> list[av.VideoFrame]:
        try:
            if packet.size == 0 and packet.stream is None:
                frames = self._stream.codec_context.decode(None)
            else:
                frames = packet.decode()
        except av.error.ArgumentError as error:
            # EINVAL from a decoder is its picture-size check failing (`max_pixels` above,
            # or a size no image can have): refused, not concealed like damaged data.
            info = self.info
            raise VideoError(
                "too_large",
                f"a picture mid-stream is larger than 8K ({MAX_PIXELS} pixels) or has an "
                f"invalid size; the stream declared {info.width}x{info.height}",
            ) from error
        except av.error.FFmpegError as error:
            self._decode_error(error)
            return []
        pictures = [f for f in frames if isinstance(f, av.VideoFrame)]
        for picture in pictures:
            _check_picture_size(picture, self.info)
        return pictures

    def _decode_error(self, error: Exception) -> None:
        self.decode_errors += 1
        log.warning("video.decode_error", path=str(self.path), error=str(error))
        if self.decode_errors > MAX_DECODE_ERRORS:
            raise VideoError("decode_failed", f"too many decode errors; last: {error}") from error

    def _frame_time(self, frame: av.VideoFrame) -> float:
        """The frame's time; for streams without timestamps (raw H.264), its index / rate."""
        if frame.time is not None:
            return float(frame.time)
        # Counting frames only works if none is dropped: decode them all from now on.
        self._decode_every_frame()
        stream = self._stream
        rate = float(stream.guessed_rate or stream.average_rate or 25)  # 25: FFmpeg's default
        return self.frames_decoded / rate

    def _packet_time(self, packet: av.Packet[Any], default: float) -> float:
        stamp = packet.pts if packet.pts is not None else packet.dts
        if stamp is None or packet.time_base is None:
            return default
        return float((stamp - (self._stream.start_time or 0)) * packet.time_base)

    def _decode_every_frame(self) -> None:
        """Streams whose only reference frames are keyframes: stop skipping, or samples drift."""
        if self._stream.codec_context.skip_frame != "DEFAULT":
            log.debug("video.skip_frame_off", path=str(self.path))
            self._stream.codec_context.skip_frame = "DEFAULT"

    def _sample(self, frame: av.VideoFrame, index: int, t: float) -> SampledFrame:
        turns = _quarter_turns(frame.rotation)
        display_width = frame.width if turns % 2 == 0 else frame.height
        scale = min(1.0, self.detect_width / display_width)
        small_w = max(1, round(frame.width * scale))
        small_h = max(1, round(frame.height * scale))
        full: np.ndarray = frame.to_ndarray(format="rgb24")
        reduced: np.ndarray = full
        if scale < 1.0:
            # swscale's area filter: fast, and no aliasing for the HOG detector.
            reduced = frame.reformat(
                width=small_w, height=small_h, format="rgb24", interpolation="AREA"
            ).to_ndarray()
        # dlib needs C-contiguous arrays; to_ndarray may return padded rows.
        image = np.ascontiguousarray(np.rot90(full, turns))
        small = np.ascontiguousarray(np.rot90(reduced, turns))
        return SampledFrame(
            index=index,
            time_s=round(t, 3),
            image=image,
            small=small,
            scale=image.shape[1] / small.shape[1],
        )


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise VideoError("not_found", f"{path} is not a file")
    try:
        # No `max_pixels` for probing: FFmpeg would then report an oversized stream as 0x0,
        # and its size could not be named (too_large). An MJPEG stream whose first picture
        # is 16000x16000 probes at that size without decoding it (40 MiB), then is refused.
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as error:
        reason = error.strerror or str(error)
        raise VideoError("not_a_video", f"not a video FFmpeg can read ({reason})") from error


def _check_picture_size(frame: av.VideoFrame, info: VideoInfo) -> None:
    """Refuse a decoded picture over the limit before anything converts or copies it."""
    if frame.width * frame.height > MAX_PIXELS:
        raise VideoError(
            "too_large",
            f"a {frame.width}x{frame.height} picture mid-stream is larger than 8K "
            f"(the stream declared {info.width}x{info.height})",
        )


def _quarter_turns(rotation: int | float | None) -> int:
    """Counter-clockwise quarter turns that bring the frame upright (display matrix)."""
    return round((rotation or 0) / 90) % 4


def _displayed(info: VideoInfo, rotation: int | float | None) -> VideoInfo:
    """The info with the picture size as shown once the display rotation is applied."""
    turns = _quarter_turns(rotation)
    width, height = (info.height, info.width) if turns % 2 else (info.width, info.height)
    return replace(info, width=width, height=height, rotation=turns * 90)


def _last_keyframe_before(keyframes: list[float], time_s: float) -> float:
    """The last keyframe at or before `time_s` (decoding must start there), or -infinity."""
    position = bisect.bisect_right(keyframes, time_s)
    return keyframes[position - 1] if position else -math.inf


def warm_up_decoder() -> None:
    """Encode and decode one tiny H.264 frame: FFmpeg builds its decoder tables on first use.

    Called before the pool forks so that workers inherit them; harmless if it fails.
    """
    import io

    try:
        buffer = io.BytesIO()
        with av.open(buffer, mode="w", format="mp4") as out:
            stream = out.add_stream("libx264", rate=1)
            stream.width = stream.height = 16
            stream.pix_fmt = "yuv420p"
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
            for packet in [*stream.encode(frame), *stream.encode()]:
                out.mux(packet)
        buffer.seek(0)
        with av.open(buffer, mode="r") as clip:
            for _ in clip.decode(video=0):
                pass
    except (av.error.FFmpegError, ValueError) as error:  # e.g. no libx264 in this FFmpeg
        log.debug("video.warm_up_failed", error=str(error))
