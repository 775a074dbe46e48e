"""A media item's file as a photo or a video, told apart by its bytes, never by its extension."""

from __future__ import annotations

from pathlib import Path

from face_assets.core.vision.photo import Photo, decode_photo
from face_assets.core.vision.transforms import MediaDecodeError, identify_image, load_image
from face_assets.core.vision.types import RGBImage
from face_assets.core.vision.video import VideoInfo, probe_video

# Extensions of files people expect to be videos: a bad one is named with FFmpeg's reason
# rather than Pillow's.
VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .qt .avi .mkv .webm .mts .m2ts .ts .3gp .3g2 .mpg .mpeg .wmv .flv".split()
)


def _either(path: Path, read_image, read_video):  # type: ignore[no-untyped-def]
    """The photo decoders first (cheap on a video: they stop at the header), then FFmpeg. A file
    that is neither is reported with the reason of the kind its extension promises; a file whose
    bytes are a photo format's (HEIF, AVIF, a RAW) with the photo decoder's reason, for FFmpeg
    would take a HEIC for a one-frame video."""
    try:
        return read_image(path)
    except MediaDecodeError as image_error:
        if image_error.transient or image_error.photo:
            raise
        try:
            return read_video(path)
        except MediaDecodeError as video_error:
            if video_error.transient or path.suffix.lower() in VIDEO_EXTENSIONS:
                raise video_error from None
            raise image_error from None


def identify_media(path: Path) -> str:
    """The real format of a photo or video file (JPEG, PNG, HEIF, AVIF, DNG, MP4, MOV, WEBM, ...)."""
    return _either(Path(path), identify_image, lambda p: probe_video(p).media_format)  # type: ignore[no-any-return]


def open_photo_or_video(path: Path, min_side: int | None = None) -> Photo | VideoInfo:
    """A photo decoded at the size `min_side` asks for where its format can (see decode_photo),
    or what a video is."""
    return _either(Path(path), lambda p: decode_photo(p, min_side), probe_video)  # type: ignore[no-any-return]


def open_media(path: Path) -> RGBImage | VideoInfo:
    """A photo's upright pixels, or what a video is (its frames are then read as a stream)."""
    return _either(Path(path), load_image, probe_video)  # type: ignore[no-any-return]
