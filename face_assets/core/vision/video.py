"""Pure video decoding: what a video file is, and its frames sampled by time. No model, no database.

PyAV (FFmpeg's own library, bundled in its wheel) rather than OpenCV's VideoCapture: it gives
each frame's exact presentation time, so frames are sampled by time on variable-frame-rate
phone clips; it reads the rotation a phone stores in the container; it decodes as a stream,
with FFmpeg's threads; and its wheel encodes H.264, which the tests use to make real clips.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from face_assets.core.vision.transforms import MediaDecodeError, read_error
from face_assets.core.vision.types import RGBImage

# The FFmpeg demuxers of the formats people keep videos in, and the names stored for them;
# "mov,mp4,..." is one demuxer for MP4, MOV and M4V, "matroska,webm" one for MKV and WEBM.
VIDEO_CONTAINERS = {
    "mov,mp4,m4a,3gp,3g2,mj2": "MP4",
    "matroska,webm": "MATROSKA",
    "avi": "AVI",
    "mpeg": "MPEG",
    "mpegts": "MPEGTS",
    "flv": "FLV",
    "asf": "ASF",
    "ogg": "OGG",
    "mxf": "MXF",
    "dv": "DV",
}
# Brands of the "mov,mp4" demuxer that are QuickTime rather than MP4.
_QUICKTIME_BRANDS = frozenset({"qt"})


@dataclass(frozen=True)
class VideoInfo:
    """What a video file is: container, codec, upright size, length and rate."""

    media_format: str  # e.g. MP4, MOV, WEBM, AVI: from the bytes, not the extension
    codec: str
    width: int  # after the rotation stored in the container
    height: int
    duration_s: float
    fps: float  # the average frame rate; frames are still sampled by their own times
    rotation: int  # degrees counter-clockwise, as stored


@dataclass(frozen=True)
class Frame:
    """A sampled frame: its number among the video's decoded frames, its time, its pixels."""

    number: int
    time_s: float
    image: RGBImage


def _open(path: Path):  # type: ignore[no-untyped-def]
    import av  # imported here: registration of photos never needs FFmpeg

    try:
        return av.open(str(path), metadata_errors="ignore")
    except FileNotFoundError as error:
        raise read_error(path, error) from error
    except PermissionError as error:
        raise read_error(path, error) from error
    except av.FFmpegError as error:
        if _looks_like_mp4(path):
            raise MediaDecodeError(
                f"{path}: an MP4/MOV file without its index, cut short or still being written "
                f"({_reason(error)})"
            ) from error
        raise MediaDecodeError(f"{path}: not a video FFmpeg can open ({_reason(error)})") from error


def _looks_like_mp4(path: Path) -> bool:
    """An ISO media file starts with an `ftyp` box; its index (`moov`) is often written last."""
    try:
        with open(path, "rb") as handle:
            return handle.read(12)[4:8] == b"ftyp"
    except OSError:
        return False


def _reason(error: Exception) -> str:
    return str(getattr(error, "strerror", None) or error).strip() or type(error).__name__


def _format_name(container, stream) -> str:  # type: ignore[no-untyped-def]
    name = VIDEO_CONTAINERS[container.format.name]
    if name == "MP4":
        brand = str(container.metadata.get("major_brand", "")).strip().lower()
        name = "MOV" if brand in _QUICKTIME_BRANDS else "MP4"
    elif name == "MATROSKA" and stream.codec_context.name in ("vp8", "vp9", "av1"):
        name = "WEBM" if str(container.metadata.get("DOCTYPE", "")).lower() != "matroska" else name
    return name[:16]


def _video_stream(path: Path, container):  # type: ignore[no-untyped-def]
    """The file's first video stream; MediaDecodeError when it has none (sound only)."""
    if not container.streams.video:
        kind = "audio only" if container.streams.audio else "no video stream"
        raise MediaDecodeError(f"{path}: {kind}, not a video")
    return container.streams.video[0]


def _duration(container, stream) -> float:  # type: ignore[no-untyped-def]
    """Seconds the video declares: its stream's length, else the container's; 0 when unknown."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / 1_000_000 if container.duration else 0.0


def probe_video(path: Path) -> VideoInfo:
    """What `path` is as a video; MediaDecodeError says why it is none (text, audio only, ...)."""
    path = Path(path)
    container = _open(path)
    try:
        stream = _video_stream(path, container)
        if container.format.name not in VIDEO_CONTAINERS:
            # FFmpeg reads far more than videos (ANSI art as "tty", image sequences, animated
            # GIFs): only the containers people keep videos in are videos here.
            raise MediaDecodeError(f"{path}: {container.format.name} is not a video format")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        duration = _duration(container, stream)
        rotation = _first_rotation(container, stream)
        width, height = stream.codec_context.width, stream.codec_context.height
        if rotation % 180:
            width, height = height, width
        if not width or not height:
            raise MediaDecodeError(f"{path}: a video stream without a picture size")
        return VideoInfo(
            _format_name(container, stream), stream.codec_context.name, width, height, duration, fps, rotation
        )
    finally:
        container.close()


def _first_rotation(container, stream) -> int:  # type: ignore[no-untyped-def]
    """The rotation of the first decodable frame: FFmpeg exposes the display matrix per frame."""
    import av

    try:
        for frame in container.decode(stream):
            return int(frame.rotation or 0)
    except av.FFmpegError as error:
        reason = _reason(error)
        raise MediaDecodeError(f"{container.name}: cannot decode its first frame ({reason})") from error
    raise MediaDecodeError(f"{container.name}: no frame could be decoded")


def sample_interval(duration_s: float, fps: float, max_frames: int) -> float:
    """The sampling interval in seconds: one frame every 1/fps, spread wider over a video too
    long for `max_frames`, so that the whole of it is looked at rather than its beginning."""
    if fps <= 0:
        raise ValueError(f"frames per second must be positive, got {fps}")
    interval = 1.0 / fps
    if max_frames > 0 and duration_s > 0 and duration_s / interval > max_frames:
        interval = duration_s / max_frames
    return interval


def upright(image: RGBImage, rotation: int) -> RGBImage:
    """Pixels as the video is shown: `rotation` is counter-clockwise degrees (FFmpeg's display
    matrix), and np.rot90 turns counter-clockwise."""
    turns = (round(rotation / 90) % 4) if rotation else 0
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def sample_frames(
    path: Path,
    fps: float,
    max_frames: int,
    wanted: set[int] | None = None,
) -> Iterator[Frame]:
    """The frames of `path` at `fps` by their presentation times, upright, decoded as a stream
    (one frame in memory at a time). With `wanted`, only those frame numbers are converted to
    pixels and decoding stops after the last of them (the later steps re-read a video for the
    frames its faces are in). The same file gives the same frames each time.

    A video that breaks off midway (a truncated download) yields the frames before the break
    and then raises MediaDecodeError naming the file and the time."""
    import av

    path = Path(path)
    container = _open(path)
    try:
        stream = _video_stream(path, container)
        stream.thread_type = "AUTO"  # FFmpeg's frame threads: decoding costs a fraction of the models
        duration = _duration(container, stream)
        interval = sample_interval(duration, fps, max_frames)
        last_wanted = max(wanted) if wanted else None
        start: float | None = None
        next_time, at, sampled, number = 0.0, 0.0, 0, -1
        stopped = False  # on purpose: the cap reached, or past the last wanted frame
        try:
            for frame in container.decode(stream):
                number += 1
                if frame.time is None:
                    continue
                if start is None:
                    start = frame.time
                at = frame.time - start
                if wanted is not None:
                    # The frames the faces were found in, by number: the sampling grid is not
                    # assumed (rows of the legacy tools carry their own frame numbers).
                    if number in wanted:
                        yield Frame(number, round(at, 3), _pixels(frame))
                    if number >= (last_wanted or 0):
                        stopped = True
                        break
                    continue
                if at + 1e-6 < next_time:
                    continue
                # The next sample is the first frame at or after the next multiple of the
                # interval: by time, so a variable frame rate samples evenly.
                next_time = (math.floor(at / interval + 1e-6) + 1) * interval
                sampled += 1
                if sampled > max_frames > 0:
                    stopped = True
                    break
                yield Frame(number, round(at, 3), _pixels(frame))
        except av.FFmpegError as error:
            if number < 0:
                raise MediaDecodeError(f"{path}: cannot decode the video ({_reason(error)})") from error
            raise MediaDecodeError(
                f"{path}: the video breaks off after frame {number} ({_reason(error)})"
            ) from error
        if number < 0:
            raise MediaDecodeError(f"{path}: no frame could be decoded")
        if not stopped and wanted is None and duration > 0 and at < duration - max(1.0, 0.1 * duration):
            # FFmpeg ends a truncated stream quietly: the length the container declares tells.
            raise MediaDecodeError(
                f"{path}: cut short: its frames end at {at:.1f} s of the {duration:.1f} s it declares"
            )
    finally:
        container.close()


def _pixels(frame) -> RGBImage:  # type: ignore[no-untyped-def]
    return upright(frame.to_ndarray(format="rgb24"), int(frame.rotation or 0))
