"""Real video files made from real photos, for the tests and the scripts: scenes of one or more
photos with a slow pan or zoom (so a face moves across frames), encoded by FFmpeg through PyAV."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

# Container by extension, and the encoder each is made with.
CODECS = {".mp4": "libx264", ".mov": "libx264", ".m4v": "libx264", ".mkv": "libx264",
          ".avi": "mpeg4", ".webm": "libvpx"}  # fmt: skip
FORMATS = {".mp4": "mp4", ".mov": "mov", ".m4v": "mp4", ".mkv": "matroska", ".avi": "avi", ".webm": "webm"}


@dataclass
class Scene:
    """Photos shown side by side for `seconds`, moving: "pan" (left to right), "zoom" (in) or
    "still"; no photo is a scene without a face."""

    photos: list[Path] = field(default_factory=list)
    seconds: float = 2.0
    motion: str = "pan"


@functools.lru_cache(maxsize=64)
def _photo(path: Path, width: int, height: int) -> np.ndarray:
    with Image.open(path) as image:
        image = image.convert("RGB")
        scale = min(width / image.width, height / image.height)
        size = (max(int(image.width * scale), 1), max(int(image.height * scale), 1))
        return np.asarray(image.resize(size, Image.Resampling.BILINEAR))


def scene_frame(scene: Scene, progress: float, width: int, height: int) -> np.ndarray:
    """The scene at `progress` (0 to 1) of its length, as RGB pixels."""
    canvas = np.full((height, width, 3), 40, dtype=np.uint8)
    if not scene.photos:
        # A room without people: a gradient that moves, so that frames differ.
        ramp = (np.arange(width) * 255 // max(width - 1, 1) + int(progress * 80)) % 256
        canvas[:, :, 1] = ramp.astype(np.uint8)[None, :]
        return canvas
    zoom = 1.0 + (0.25 * progress if scene.motion == "zoom" else 0.0)
    slot = width // len(scene.photos)
    for index, path in enumerate(scene.photos):
        photo = _photo(path, int(slot * 0.8 * zoom), int(height * 0.8 * zoom))
        shift = int((progress - 0.5) * slot * 0.15) if scene.motion == "pan" else 0
        left = index * slot + (slot - photo.shape[1]) // 2 + shift
        top = (height - photo.shape[0]) // 2
        x1, y1 = max(left, 0), max(top, 0)
        x2, y2 = min(left + photo.shape[1], width), min(top + photo.shape[0], height)
        canvas[y1:y2, x1:x2] = photo[y1 - top : y2 - top, x1 - left : x2 - left]
    return canvas


def make_clip(
    target: Path,
    scenes: list[Scene],
    *,
    fps: int = 10,
    size: tuple[int, int] = (480, 320),
    rotation: int = 0,
    variable_rate: bool = False,
    preset: str | None = None,
) -> Path:
    """Encodes the scenes into `target` (container and codec from its extension).

    `rotation`: stored in the container as phones do (counter-clockwise degrees): the frames are
    encoded turned the other way, so the video shows upright. `variable_rate`: frame durations
    alternate between a third and twice the nominal one, as a phone's do in low light.
    `preset`: the x264 speed preset."""
    width, height = size
    stored = (height, width) if rotation % 180 else (width, height)
    with av.open(str(target), "w", format=FORMATS[target.suffix]) as container:
        stream = container.add_stream(CODECS[target.suffix], rate=fps)
        stream.width, stream.height = stored
        stream.pix_fmt = "yuv420p"
        if preset and stream.codec_context.name == "libx264":
            stream.options = {"preset": preset}  # long benchmark clips: "ultrafast"
        # Times in milliseconds when frames last any length (variable frame rate), else in frames.
        stream.codec_context.time_base = Fraction(1, 1000) if variable_rate else Fraction(1, fps)
        if rotation:
            stream.set_display_rotation(rotation)
        at = 0.0
        for scene in scenes:
            count = max(int(round(scene.seconds * fps)), 1)
            for index in range(count):
                pixels = scene_frame(scene, index / max(count - 1, 1), width, height)
                if rotation:
                    pixels = np.ascontiguousarray(np.rot90(pixels, -round(rotation / 90)))
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                frame.pts = int(round(at / float(stream.codec_context.time_base)))
                frame.time_base = stream.codec_context.time_base
                step = 1.0 / fps
                if variable_rate:
                    step *= (1 / 3) if index % 2 else 2.0
                at += step
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return target


def make_audio_only(target: Path, seconds: float = 1.0) -> Path:
    """An .mp4 (or .m4a) holding a tone and no picture."""
    rate = 16_000
    with av.open(str(target), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate)
        samples = np.sin(2 * math.pi * 440 * np.arange(int(rate * seconds)) / rate).astype(np.float32)
        for start in range(0, len(samples), 1024):
            chunk = samples[start : start + 1024][None, :]
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return target


def truncate(source: Path, target: Path, keep: float = 0.5) -> Path:
    """The first `keep` of the file's bytes, as an interrupted copy or download leaves it."""
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    return target
