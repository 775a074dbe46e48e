"""Videos as files: what they are from their bytes, their frames sampled by time, upright, and a
clear reason for each file that is not a video that can be read."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from face_assets.core.media_item import register_folder
from face_assets.core.storage.schema import MediaFileTable
from face_assets.core.storage.store import FaceStore
from face_assets.core.vision.media import identify_media, open_media
from face_assets.core.vision.transforms import MediaDecodeError
from face_assets.core.vision.video import VideoInfo, probe_video, sample_frames
from face_assets_devtools.clips import Scene, make_audio_only, make_clip, scene_frame, truncate


@pytest.fixture(scope="module")
def photo(celebrity_folder: Path) -> Path:
    return sorted((celebrity_folder / "train" / "madonna").glob("*.jpg"))[0]


@pytest.mark.parametrize(
    ("suffix", "media_format", "codec"),
    [(".mp4", "MP4", "h264"), (".mov", "MOV", "h264"), (".m4v", "MP4", "h264"),
     (".mkv", "MATROSKA", "h264"), (".webm", "WEBM", "vp8"), (".avi", "AVI", "mpeg4")],
)  # fmt: skip
def test_each_container_is_known_by_its_bytes_with_length_rate_and_size(
    tmp_path: Path, photo: Path, suffix: str, media_format: str, codec: str
) -> None:
    clip = make_clip(tmp_path / f"clip{suffix}", [Scene([photo], 3.0)], fps=10, size=(320, 240))
    disguised = clip.rename(tmp_path / "holiday.jpg")  # the extension lies; the bytes do not

    info = probe_video(disguised)

    assert (info.media_format, info.codec) == (media_format, codec)
    assert (info.width, info.height, info.fps) == (320, 240, 10.0)
    assert info.duration_s == pytest.approx(3.0, abs=0.15)
    assert identify_media(disguised) == media_format
    assert isinstance(open_media(disguised), VideoInfo)


def test_frames_are_sampled_by_time_one_per_second(tmp_path: Path, photo: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", [Scene([photo], 5.0, "pan")], fps=10)

    frames = list(sample_frames(clip, 1.0, 100))

    assert [f.time_s for f in frames] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [f.number for f in frames] == [0, 10, 20, 30, 40]
    assert all(f.image.shape == (320, 480, 3) and f.image.dtype == np.uint8 for f in frames)
    assert not np.array_equal(frames[0].image, frames[-1].image)  # the pan moved the photo


def test_a_variable_frame_rate_is_sampled_by_time_not_by_frame_count(tmp_path: Path, photo: Path) -> None:
    clip = make_clip(tmp_path / "phone.mp4", [Scene([photo], 6.0)], fps=10, variable_rate=True)

    times = [f.time_s for f in sample_frames(clip, 1.0, 100)]

    # One frame per second, the first at or after each whole second (frames last 33 or 200 ms).
    assert [int(t) for t in times] == list(range(len(times)))
    assert all(t - int(t) <= 0.2 + 1e-3 for t in times)
    assert len(times) >= 5


def test_a_rotated_phone_clip_gives_upright_frames(tmp_path: Path, photo: Path) -> None:
    scene = Scene([photo], 2.0, "still")
    portrait = make_clip(tmp_path / "portrait.mp4", [scene], size=(240, 320), rotation=90)
    upright = scene_frame(scene, 0.0, 240, 320)

    info = probe_video(portrait)
    first = next(sample_frames(portrait, 1.0, 10))

    assert (info.width, info.height, info.rotation) == (240, 320, 90)
    assert first.image.shape == (320, 240, 3)
    difference = np.abs(first.image.astype(int) - upright.astype(int)).mean()
    turned = np.abs(np.rot90(first.image, 2).astype(int) - upright.astype(int)).mean()
    assert difference < 8 < turned  # the photo stands as it was filmed, not upside down


def test_a_video_longer_than_the_cap_is_sampled_over_its_whole_length(tmp_path: Path, photo: Path) -> None:
    clip = make_clip(tmp_path / "long.mp4", [Scene([photo], 10.0, "still")], fps=5, size=(160, 120))

    times = [f.time_s for f in sample_frames(clip, 2.0, 4)]

    assert len(times) == 4
    assert times[-1] >= 7.0  # not the first two seconds only


def test_the_frames_of_given_numbers_are_read_again_exactly(tmp_path: Path, photo: Path) -> None:
    clip = make_clip(tmp_path / "clip.mkv", [Scene([photo], 4.0, "zoom")], fps=10)
    sampled = {f.number: f.image for f in sample_frames(clip, 1.0, 100)}

    again = list(sample_frames(clip, 1.0, 100, wanted={10, 30}))

    assert [f.number for f in again] == [10, 30]
    assert all(np.array_equal(f.image, sampled[f.number]) for f in again)


def test_files_that_are_not_readable_videos_each_give_their_reason(tmp_path: Path, photo: Path) -> None:
    whole = make_clip(tmp_path / "whole.mp4", [Scene([photo], 4.0)])
    long_mkv = make_clip(tmp_path / "long.mkv", [Scene([photo], 8.0)])
    cases = {
        truncate(whole, tmp_path / "cut.mp4"): "without its index, cut short",
        truncate(long_mkv, tmp_path / "cut.mkv", 0.6): "cut short: its frames end at",
        make_audio_only(tmp_path / "song.mp4"): "audio only, not a video",
        tmp_path / "notes.mp4": "not a video FFmpeg can open",
        tmp_path / "banner.ans": "tty is not a video format",  # FFmpeg reads ANSI art as video
    }
    (tmp_path / "notes.mp4").write_text("shopping list\n")
    (tmp_path / "banner.ans").write_text("\x1b[1mhello\x1b[0m\n")

    for path, reason in cases.items():
        with pytest.raises(MediaDecodeError) as caught:
            probe_video(path)
            list(sample_frames(path, 1.0, 100))
        assert str(caught.value).startswith(f"{path}: ") and reason in str(caught.value)
        assert not caught.value.transient  # bad bytes: final, not retried

    with pytest.raises(MediaDecodeError) as missing:
        open_media(tmp_path / "gone.mp4")
    assert missing.value.transient


def test_a_folder_registers_its_videos_and_names_the_bad_ones(tmp_path: Path, photo: Path) -> None:
    library = tmp_path / "library"
    library.mkdir()
    make_clip(library / "party.mov", [Scene([photo], 2.0)])
    shutil.copy(photo, library / "photo.jpg")
    make_audio_only(library / "voice.m4v")
    (library / "readme.txt").write_text("not media")
    store = FaceStore.from_url(f"sqlite:///{tmp_path / 'library.db'}", upgrade=True)

    result = register_folder(store, library)

    assert len(result.added) == 2
    assert {(p.name, r) for p, r in result.skipped} == {("voice.m4v", "audio only, not a video")}
    assert result.not_media == 1
    with store.engine.connect() as conn:
        formats = dict(conn.execute(select(MediaFileTable.c.FileName, MediaFileTable.c.MediaFormat)).all())
    assert formats == {"party.mov": "MOV", "photo.jpg": "JPEG"}
