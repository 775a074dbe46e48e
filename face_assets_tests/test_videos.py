"""Videos through the whole pipeline: real clips made from real photos, real models, Dagster, and
a real database on each backend."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest
from PIL import Image
from sqlalchemy import select

from face_assets.core import correction
from face_assets.core.export import export_persons
from face_assets.core.montage import TILE_PX
from face_assets.core.storage.schema import FacesTable, MediaFileTable, MediaItemsTable
from face_assets.core.storage.store import FaceStore
from face_assets.evaluate import evaluate_folder
from face_assets.runs import materialize_pipeline
from face_assets_devtools.clips import Scene, make_audio_only, make_clip, truncate
from face_assets_tests.conftest import IDENTITIES
from face_assets_tests.test_assets import snapshot
from face_assets_tests.test_sensors import insert_rows

pytestmark = pytest.mark.slow


@pytest.fixture
def library(tmp_path: Path, celebrity_folder: Path) -> Path:
    """Two clips and three files named like videos that are not readable ones."""
    root = tmp_path / "library"
    root.mkdir()
    madonna = sorted((celebrity_folder / "train" / "madonna").glob("*.jpg"))
    elton = sorted((celebrity_folder / "train" / "elton_john").glob("*.jpg"))
    # A person alone, then nobody, then her with another person in one frame.
    make_clip(
        root / "party.mp4",
        [Scene([madonna[0]], 3.0, "pan"), Scene([], 1.0), Scene([madonna[1], elton[0]], 2.0, "zoom")],
    )
    make_clip(root / "portrait.mov", [Scene([elton[1]], 2.0, "still")], size=(240, 320), rotation=90)
    truncate(make_clip(tmp_path / "whole.mp4", [Scene([elton[2]], 3.0)]), root / "cut.mp4")
    truncate(make_clip(tmp_path / "long.mkv", [Scene([elton[3]], 8.0)]), root / "copied.mkv", 0.6)
    make_audio_only(root / "voice.mp4")
    (root / "notes.avi").write_text("not a video\n")
    return root


def items_by_name(store: FaceStore) -> dict[str, dict]:
    query = select(MediaFileTable.c.FileName, MediaFileTable.c.MediaFormat, MediaItemsTable).join(
        MediaFileTable, MediaFileTable.c.Id == MediaItemsTable.c.MediaFileId
    )
    with store.engine.connect() as conn:
        return {r["FileName"]: dict(r) for r in conn.execute(query).mappings()}


def faces_of(store: FaceStore, item_id: int) -> list[dict]:
    query = select(FacesTable).where(FacesTable.c.MediaItemId == item_id).order_by(FacesTable.c.Id)
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def test_a_video_s_faces_are_found_frame_by_frame_and_a_rerun_does_nothing(
    tmp_path: Path, db_url: str, library: Path, models_dir: Path
) -> None:
    thumbnails = tmp_path / "thumbnails"
    FaceStore.from_url(db_url, upgrade=True).dispose()

    run = materialize_pipeline(
        library, database_url=db_url, thumbnail_dir=thumbnails, instance=dg.DagsterInstance.ephemeral()
    )

    assert run.success
    store = FaceStore.from_url(db_url)
    items = items_by_name(store)
    party, portrait = items["party.mp4"], items["portrait.mov"]
    assert (party["MediaFormat"], portrait["MediaFormat"]) == ("MP4", "MOV")
    assert party["Duration"] == pytest.approx(6.0, abs=0.2) and party["FrameRate"] == pytest.approx(10.0)
    assert (party["ImageWidth"], party["ImageHeight"]) == (480, 320)
    assert (portrait["ImageWidth"], portrait["ImageHeight"]) == (240, 320)  # upright, as shown

    faces = faces_of(store, party["Id"])
    frames = [(f["FrameNumber"], f["FrameTime"]) for f in faces]
    # One frame a second: 0-2 s her alone, 3 s nobody, 4-5 s two people.
    per_second = {round(t): sum(1 for _, u in frames if u == t) for _, t in frames}
    assert per_second == {0: 1, 1: 1, 2: 1, 4: 2, 5: 2}
    assert all(number == round(time * 10) for number, time in frames)
    assert party["FaceCount"] == len(faces) == 7
    # Every face has its own thumbnail file (the same box in two frames never collides) and its
    # embedding; no person holds two faces of one frame.
    assert len({f["ThumbnailPath"] for f in faces}) == len(faces)
    assert all((thumbnails / f["ThumbnailPath"]).is_file() and f["Embedding"] for f in faces)
    per_frame = [(f["FrameNumber"], f["PersonId"]) for f in faces if f["PersonId"]]
    assert len(per_frame) == len(set(per_frame))
    assert len(faces_of(store, portrait["Id"])) == 2  # the rotated clip's face, in both frames

    # Tracks: her three seconds alone are one track, each of the two people of the last scene
    # is followed through its two frames, and no track holds two faces of one frame.
    tracks: dict[int, list[float]] = {}
    for face in faces:
        tracks.setdefault(face["TrackId"], []).append(face["FrameTime"])
    assert all(len(times) == len(set(times)) for times in tracks.values())
    assert [0.0, 1.0, 2.0] in [sorted(t)[:3] for t in tracks.values()]
    both = [t for t in tracks.values() if 4.0 in t and 5.0 in t]
    assert len(both) == 2
    assert set(tracks) <= {f["Id"] for f in faces}  # a track is named by its first face
    persons_of_track: dict[int, set[int | None]] = {}
    for face in faces:
        persons_of_track.setdefault(face["TrackId"], set()).add(face["PersonId"])
    assert all(len(persons) == 1 for persons in persons_of_track.values())  # a track goes as one
    assert run.metadata()["face_embeddings"]["video_tracks"] == len(tracks) + 1  # and portrait's

    # The export: the video in the folder of each person in it, and its box file.
    out = tmp_path / "export"
    export_persons(store, out, montages_from=thumbnails)
    lines = (out / f"boxes/party-{party['Id']}.csv").read_text().splitlines()
    assert lines[0] == "frame,time_s,x1,y1,x2,y2,person_id,track_id"
    rows = [line.split(",") for line in lines[1:]]
    assert [(int(r[0]), float(r[1])) for r in rows] == sorted(frames)
    assert {(r[6], int(r[7])) for r in rows} == {(str(f["PersonId"] or ""), f["TrackId"]) for f in faces}
    in_party = {f["PersonId"] for f in faces if f["PersonId"]}
    assert in_party  # her three seconds alone are enough to make a person
    folders = {p.parent.name for p in out.glob("*/party.mp4")}
    assert len(folders) == len(in_party) and all(any(f"({pid})" in d for d in folders) for pid in in_party)
    # A montage per person: one tile per track, not per frame; the count of appearances alike.
    appearances = {p.id: p.appearances for p in store.list_persons()}
    for pid in in_party:
        (sheet,) = out.glob(f"montages/*({pid}).jpg")
        person_faces = store.faces_by_person(pid)[pid]
        tracks_of_person = {f.track_id for f in person_faces if f.track_id}
        tiles = len(tracks_of_person) + sum(not f.track_id for f in person_faces)
        assert appearances[pid] == tiles < len(person_faces)
        with Image.open(sheet) as image:
            assert image.size == (min(tiles, 10) * TILE_PX, -(-tiles // 10) * TILE_PX)
    # The gallery shows a video's faces with their time in it.
    page = Path(str(run.metadata()["person_gallery"]["page"])).read_text()
    assert 'title="party.mp4 at 0:0' in page and "<figcaption>0:0" in page
    again = export_persons(store, out, montages_from=thumbnails)
    assert (again.added, again.removed) == (0, 0)

    skipped = "\n".join(run.metadata()["media_items"]["skipped_files"]["lines"])  # type: ignore[index]
    assert f"{library / 'cut.mp4'}: an MP4/MOV file without its index, cut short" in skipped
    assert f"{library / 'voice.mp4'}: audio only, not a video" in skipped
    assert f"{library / 'notes.avi'}: not a video FFmpeg can open" in skipped
    assert not {"cut.mp4", "voice.mp4", "notes.avi"} & set(items)
    # An interrupted copy whose header is whole: found out while decoding, final, no face kept.
    copied = items["copied.mkv"]
    assert copied["IsFacesExtracted"] and "cut short: its frames end at" in copied["ExtractionError"]
    assert faces_of(store, copied["Id"]) == []

    # Another application inserts a row for the text file: detection records why, and goes on.
    insert_rows(store, [library / "notes.avi"])
    assert materialize_pipeline(
        database_url=db_url, thumbnail_dir=thumbnails, instance=dg.DagsterInstance.ephemeral()
    ).success
    assert "not a video FFmpeg can open" in items_by_name(store)["notes.avi"]["ExtractionError"]

    before = snapshot(store, thumbnails)
    again = materialize_pipeline(
        library, database_url=db_url, thumbnail_dir=thumbnails, instance=dg.DagsterInstance.ephemeral()
    )
    assert again.success
    assert snapshot(store, thumbnails) == before


def test_evaluate_scores_each_appearance_in_labelled_videos_beside_photos(
    tmp_path: Path, celebrity_folder: Path, models_dir: Path
) -> None:
    labelled = tmp_path / "labelled"
    for identity, suffix in (("madonna", ".mp4"), ("elton_john", ".webm")):
        photos = sorted((celebrity_folder / "train" / identity).glob("*.jpg"))
        (labelled / identity).mkdir(parents=True)
        # Two scenes of the person with nobody on screen for longer than a track bridges.
        scenes = [Scene([photos[0]], 3.0, "pan"), Scene([], 4.0), Scene([photos[1]], 3.0, "zoom")]
        make_clip(labelled / identity / f"clip{suffix}", scenes)
        for photo in photos[2:6]:
            shutil.copy(photo, labelled / identity / photo.name)

    report = evaluate_folder(labelled)

    assert (report["identities"], report["videos"], report["misses"]) == (2, 2, 0)
    assert report["video_appearances"] == 4  # each scene once, however many frames it has
    assert report["bcubed_precision"] == 1.0  # nobody merged with the other
    assert report["persons"] >= 2


def test_one_video_of_a_new_person_makes_the_same_persons_incrementally_and_in_a_rebuild(
    tmp_path: Path, celebrity_folder: Path, models_dir: Path
) -> None:
    """A library whose photos all have their person, then one video of someone new: her two
    scenes are two tracks, each enough to start a person. The incremental run placed neither
    (it counted two rows, not their faces) while a rebuild made persons of them."""
    library, thumbnails = tmp_path / "library", tmp_path / "thumbnails"
    url = f"sqlite:///{tmp_path / 'faces.db'}"
    for identity in IDENTITIES:
        (library / identity).mkdir(parents=True)
        for photo in sorted((celebrity_folder / "train" / identity).glob("*.jpg"))[:4]:
            shutil.copy(photo, library / identity / photo.name)

    def run(**options: object) -> dict[str, dict[str, object]]:
        done = materialize_pipeline(
            library, database_url=url, thumbnail_dir=thumbnails, instance=dg.DagsterInstance.ephemeral(),
            **options,  # type: ignore[arg-type]
        )  # fmt: skip
        assert done.success
        return done.metadata()

    run()
    store = FaceStore.from_url(url)
    for face in store.face_embeddings(unassigned_only=True).face_ids:
        correction.reject_face(store, int(face))  # the user's call on the photos left waiting
    assert store.face_embeddings(unassigned_only=True).face_ids.tolist() == []
    madonna = sorted((celebrity_folder / "train" / "madonna").glob("*.jpg"))
    scenes = [Scene([madonna[0]], 3.0, "pan"), Scene([], 4.0), Scene([madonna[1]], 3.0, "zoom")]
    (library / "madonna").mkdir()
    make_clip(library / "madonna" / "party.mp4", scenes)

    incremental = run()["person_clusters"]
    faces = faces_of(store, items_by_name(store)["party.mp4"]["Id"])
    persons = [f["PersonId"] for f in faces]
    rebuilt = run(steps=("cluster", "gallery"), cluster_mode="rebuild")["person_clusters"]

    assert len({f["TrackId"] for f in faces}) == 2
    assert None not in persons  # her only appearance, in tracks of three frames each, starts her
    assert incremental["faces_assigned"] == len(faces) and incremental["persons_made"] >= 1
    assert [f["PersonId"] for f in faces_of(store, items_by_name(store)["party.mp4"]["Id"])] == persons
    assert {key: rebuilt[key] for key in ("faces_assigned", "faces_unassigned", "faces_moved")} == {
        "faces_assigned": 0,
        "faces_unassigned": 0,
        "faces_moved": 0,
    }
    store.dispose()
