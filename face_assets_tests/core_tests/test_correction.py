"""Corrections are stored and survive later clustering (match, then cluster)."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import insert, select

from face_assets.core import correction
from face_assets.core.clustering.cluster import ClusterParams
from face_assets.core.embedding import assign_tracks
from face_assets.core.person import rebuild_persons, update_persons
from face_assets.core.storage.schema import FacesTable
from face_assets.core.storage.store import FaceStore
from face_assets.core.vision.types import DetectedFace
from face_assets_tests.core_tests.synthetic import identities

FACE = DetectedFace((2.0, 2.0, 20.0, 20.0), 0.99, ((5.0, 5.0),) * 5)


def add_faces(
    store: FaceStore, folder: Path, vectors: np.ndarray, start: int = 0, model: str | None = "stub"
) -> list[int]:
    """One media item with one face per vector, written through the store, embedded by `model`
    (None: left for the embedding step)."""
    folder.mkdir(exist_ok=True)
    face_ids = []
    for index, vector in enumerate(vectors, start=start):
        path = folder / f"{index:04d}.png"
        Image.new("RGB", (24, 24)).save(path)
        item = store.register_media_file(path, "PNG", path.stat().st_size)
        assert item is not None and store.save_detection(item, [FACE], "stub", (24, 24))
        (record,) = [r for r in store.faces_without_embedding() if r.media_item_id == item]
        if model is not None:
            store.save_embeddings([record.id], vector[None, :], model)
        face_ids.append(record.id)
    return face_ids


@pytest.fixture(params=["match_then_cluster", "rebuild"])
def mode(request: pytest.FixtureRequest) -> str:
    """Every correction must survive both ways of reclustering."""
    return str(request.param)


def three_persons(tmp_path: Path, db_url: str):
    """Three identities of 6 faces each, clustered into three persons, and the vectors of a
    fourth identity, arriving later."""
    store = FaceStore.from_url(db_url, upgrade=True)
    vectors, truth = identities(seed=11, k=4, n=6)
    face_ids = add_faces(store, tmp_path / "photos", vectors[truth < 3])
    update_persons(store, ClusterParams())
    persons = {
        p.id: [f.id for f in correction.person_faces(store, p.id)] for p in correction.list_persons(store)
    }
    assert len(persons) == 3
    return store, persons, face_ids, vectors[truth == 3]


@pytest.fixture
def library(tmp_path: Path, mode: str, db_url: str):
    """Three identities of 6 faces each, clustered into three persons."""
    store, persons, face_ids, later = three_persons(tmp_path, db_url)
    return store, tmp_path, persons, face_ids, (later, mode)


@pytest.fixture
def clustered(tmp_path: Path, db_url: str):
    """The same three persons, for corrections that need no reclustering after them."""
    store, persons, _, later = three_persons(tmp_path, db_url)
    return store, tmp_path, persons, later


def persons_of(store: FaceStore) -> dict[int, set[int]]:
    return {
        p.id: {f.id for f in correction.person_faces(store, p.id)} for p in correction.list_persons(store)
    }


def recluster_with_new_faces(store: FaceStore, tmp_path: Path, later: tuple[np.ndarray, str]) -> None:
    vectors, mode = later
    add_faces(store, tmp_path / "photos", vectors, start=1000 + len(persons_of(store)) * 100)
    (update_persons if mode == "match_then_cluster" else rebuild_persons)(store, ClusterParams())


def test_a_name_survives_reclustering_and_names_stay_unique(library) -> None:
    store, tmp_path, persons, _, later = library
    first, second = list(persons)[:2]
    correction.rename_person(store, first, "Ada")
    with pytest.raises(correction.CorrectionError, match="already named"):
        correction.rename_person(store, second, "Ada")
    recluster_with_new_faces(store, tmp_path, later)
    assert {p.id: p.name for p in correction.list_persons(store)}[first] == "Ada"


def test_an_over_long_name_is_refused_not_cut(library) -> None:
    """A name cut to the column's length could take another person's name: refuse it whole."""
    store, _, persons, _, _ = library
    first, second = list(persons)[:2]
    long_name = "A" * 300
    correction.rename_person(store, first, long_name[: correction.NAME_MAX])
    with pytest.raises(correction.CorrectionError, match=f"at most {correction.NAME_MAX} characters"):
        correction.rename_person(store, second, long_name)
    names = {p.id: p.name for p in correction.list_persons(store)}
    assert names[first] == long_name[: correction.NAME_MAX] and names[second] != names[first]


def test_a_merge_survives_reclustering(library) -> None:
    store, tmp_path, persons, _, later = library
    target, source = list(persons)[:2]
    correction.rename_person(store, source, "Grace")
    moved = correction.merge_persons(store, target, [source])
    recluster_with_new_faces(store, tmp_path, later)
    after = persons_of(store)
    assert moved == len(persons[source]) and source not in after
    assert after[target] >= set(persons[target]) | set(persons[source])
    assert {p.id: p.name for p in correction.list_persons(store)}[target] == "Grace"


def test_a_split_survives_reclustering(library) -> None:
    store, tmp_path, persons, _, later = library
    person, faces = next(iter(persons.items()))
    new_id = correction.split_person(store, person, faces[:3]).person_id
    recluster_with_new_faces(store, tmp_path, later)
    after = persons_of(store)
    assert after[new_id] == set(faces[:3]) and after[person] == set(faces[3:])


def test_a_moved_face_stays_where_the_user_put_it(library) -> None:
    store, tmp_path, persons, _, later = library
    (first, faces), (second, _) = list(persons.items())[:2]
    correction.move_face(store, faces[0], second)
    recluster_with_new_faces(store, tmp_path, later)
    after = persons_of(store)
    assert faces[0] in after[second] and faces[0] not in after[first]


def test_a_rejected_face_stays_out_of_every_person(library) -> None:
    store, tmp_path, persons, _, later = library
    faces = next(iter(persons.values()))
    correction.reject_face(store, faces[0])
    recluster_with_new_faces(store, tmp_path, later)
    assert all(faces[0] not in members for members in persons_of(store).values())
    assert faces[0] not in store.face_embeddings().face_ids


def test_forget_deletes_embeddings_thumbnails_and_the_person(library) -> None:
    store, tmp_path, persons, _, later = library
    person, faces = next(iter(persons.items()))
    thumbnails = tmp_path / "thumbnails"
    for face_id in faces:  # thumbnails as the thumbnail step writes them
        (thumbnails / f"{face_id}.jpg").parent.mkdir(parents=True, exist_ok=True)
        (thumbnails / f"{face_id}.jpg").write_bytes(b"jpeg")
    store.save_thumbnails([(f, f"{f}.jpg", f"{f}.jpg") for f in faces])

    assert set(correction.forget_person(store, person, thumbnails).face_ids) == set(faces)
    recluster_with_new_faces(store, tmp_path, later)

    assert person not in persons_of(store)
    assert not any(thumbnails.iterdir())
    assert not set(faces) & set(store.face_embeddings().face_ids.tolist())
    assert not set(faces) & {r.id for r in store.faces_without_embedding()}  # never re-embedded


def test_unknown_ids_are_clear_errors(library) -> None:
    store, *_ = library
    with pytest.raises(correction.CorrectionError, match="no person with Id 999"):
        correction.rename_person(store, 999, "Nobody")
    with pytest.raises(correction.CorrectionError, match="no face with Id 999"):
        correction.reject_face(store, 999)


def test_untouched_persons_keep_their_ids_and_empty_automatic_persons_disappear(library) -> None:
    store, tmp_path, persons, _, later = library
    (emptied, faces), (receiver, _), (untouched, untouched_faces) = list(persons.items())
    for face_id in faces:
        correction.move_face(store, face_id, receiver)
    recluster_with_new_faces(store, tmp_path, later)
    after = persons_of(store)
    assert emptied not in after  # an automatic person left without faces disappears
    assert after[untouched] == set(untouched_faces)  # same faces, same Id
    assert len(after) == 3  # receiver, untouched, and the newcomer


def test_a_named_person_survives_even_when_emptied(library) -> None:
    store, tmp_path, persons, _, later = library
    (named, faces), (receiver, _) = list(persons.items())[:2]
    correction.rename_person(store, named, "Lin")
    for face_id in faces:
        correction.move_face(store, face_id, receiver)
    recluster_with_new_faces(store, tmp_path, later)
    assert {p.id: p.name for p in correction.list_persons(store)}[named] == "Lin"


def test_a_name_pins_the_faces_the_person_had_when_named(library) -> None:
    """A rebuild whose clustering would dissolve every person (too small for its minimum size)
    empties the automatic ones but not the named one: naming is the user's word on its faces."""
    store, _, persons, _, _ = library
    (named, faces), (automatic, _) = list(persons.items())[:2]
    correction.rename_person(store, named, "Lin")
    too_small = ClusterParams(min_cluster_size=50, match_threshold=1.0, pair_threshold=1.0)
    rebuild_persons(store, too_small)
    after = persons_of(store)
    assert after[named] == set(faces) and automatic not in after


def test_match_then_cluster_after_a_rebuild_changes_nothing(library) -> None:
    """A rebuild ends at the fixed point a later clustering would reach: nothing moves after it."""
    store, tmp_path, _, _, later = library
    add_faces(store, tmp_path / "photos", later[0], start=5000)
    rebuild_persons(store, ClusterParams())
    rebuilt = persons_of(store)
    update_persons(store, ClusterParams())
    assert persons_of(store) == rebuilt


def test_a_rebuild_on_unchanged_data_changes_nothing(library) -> None:
    store, *_ = library
    before = persons_of(store)
    rebuild_persons(store, ClusterParams())
    rebuild_persons(store, ClusterParams())
    assert persons_of(store) == before


def test_a_second_face_of_one_photo_is_not_moved_into_the_same_person(library) -> None:
    store, tmp_path, persons, _, _ = library
    person = next(iter(persons))
    photo = tmp_path / "two_faces.png"
    Image.new("RGB", (48, 24)).save(photo)
    item = store.register_media_file(photo, "PNG", photo.stat().st_size)
    other_box = DetectedFace((26.0, 2.0, 44.0, 20.0), 0.99, ((30.0, 5.0),) * 5)
    assert item is not None and store.save_detection(item, [FACE, other_box], "stub", (48, 24))
    first, second = sorted(r.id for r in store.faces_without_embedding() if r.media_item_id == item)
    correction.move_face(store, first, person)

    with pytest.raises(correction.CorrectionError, match=f"already has face {first} of the same photo"):
        correction.move_face(store, second, person)
    assert second not in persons_of(store)[person]
    correction.move_face(store, second, person, force=True)  # a mirror: the user knows
    assert {first, second} <= persons_of(store)[person]


def add_video_track(store: FaceStore, folder: Path, vectors: np.ndarray) -> tuple[int, list[int]]:
    """One video with one face per frame (frames 0, 10, 20, ...), embedded and followed into one
    track: its media item id and face ids."""
    path = folder / "clip.mp4"
    path.write_bytes(b"")  # the rows are what the corrections read
    item = store.register_media_file(path, "MP4", 0)
    faces = [dataclasses.replace(FACE, frame=10 * i, time_s=float(i)) for i in range(len(vectors))]
    assert item is not None and store.save_detection(item, faces, "stub", (24, 24), video=(10.0, 10.0))
    records = sorted(
        (r for r in store.faces_without_embedding() if r.media_item_id == item), key=lambda r: r.id
    )
    store.save_embeddings([r.id for r in records], vectors, "stub")
    assert assign_tracks(store) == 1
    return item, [r.id for r in records]


def test_a_correction_to_one_face_of_a_track_applies_to_the_whole_track(library) -> None:
    store, tmp_path, persons, _, (later, _) = library
    _, track = add_video_track(store, tmp_path / "photos", later[:4])
    first, second = list(persons)[:2]

    correction.move_face(store, track[1], first)
    assert set(track) <= persons_of(store)[first]

    new = correction.split_person(store, first, [track[2]]).person_id
    assert persons_of(store)[new] == set(track)

    correction.reject_face(store, track[0])
    assert not set(track) & set().union(*persons_of(store).values())
    correction.move_face(store, track[3], second)  # a rejected track can be put back, whole
    assert set(track) <= persons_of(store)[second]


def test_a_track_is_not_moved_into_a_person_seen_in_the_same_frame(library) -> None:
    store, tmp_path, persons, _, (later, _) = library
    video, track = add_video_track(store, tmp_path / "photos", later[:3])
    person = next(iter(persons))
    with store.engine.begin() as conn:  # another face of frame 10 of that video, already hers
        conn.execute(
            insert(FacesTable).values(
                MediaItemId=video, BoundingBox="[30, 2, 48, 20]", FrameNumber=10, PersonId=person
            )
        )

    with pytest.raises(correction.CorrectionError, match="shows a person once"):
        correction.move_face(store, track[0], person)
    assert not set(track) & persons_of(store)[person]


def test_names_are_one_line_and_unique_regardless_of_case(clustered) -> None:
    store, _, persons, _ = clustered
    first, second, third = persons
    assert correction.rename_person(store, first, "  Zoë ") == "Zoë"  # trimmed, as stored
    # The same name in another case, or with its accent encoded another way, is taken.
    for same in ("zoë", "ZOË", "Zoe\u0308"):
        with pytest.raises(correction.CorrectionError, match=f"person {first} is already named 'Zoë'"):
            correction.rename_person(store, second, same)
    correction.rename_person(store, first, "zoë")  # its own name in another case: fine
    for broken in ("Ada\nLovelace", "Ada\rX", "Ada\tLovelace", "Ada\u2028Lovelace", "Ada\u2029X", "A\x00da"):
        with pytest.raises(correction.CorrectionError, match="one line"):
            correction.rename_person(store, second, broken)
    # "Person <Id>" is an automatic name: a user's would take a person made later.
    with pytest.raises(correction.CorrectionError, match="automatic name"):
        correction.rename_person(store, second, f"person {max(persons) + 1}")
    correction.rename_person(store, third, f"Person {third}")  # its own automatic name
    names = {p.id: p.name for p in correction.list_persons(store)}
    assert names[first] == "zoë" and names[second] == f"Person {second}"


def test_corrections_to_a_track_return_every_face_they_moved(clustered) -> None:
    store, tmp_path, persons, later = clustered
    _, track = add_video_track(store, tmp_path / "photos", later[:4])
    first, second, _ = persons
    photo_face = persons[first][0]

    moved = correction.move_face(store, track[1], second)
    assert (moved.named, sorted(moved.face_ids), moved.tracks, moved.others) == ((track[1],), track, 1, 3)
    assert moved.person_id == second

    split = correction.split_person(store, second, [track[2], track[3]])
    assert sorted(split.face_ids) == track and split.others == 2 and split.tracks == 1
    assert persons_of(store)[split.person_id] == set(track)

    rejected = correction.reject_face(store, track[0])
    assert sorted(rejected.face_ids) == track and rejected.person_id is None

    alone = correction.move_face(store, photo_face, second)  # a photo's face moves alone
    assert alone.face_ids == (photo_face,) and alone.others == 0 and alone.tracks == 0


def test_a_merge_naming_its_target_among_the_sources_is_refused(clustered) -> None:
    store, _, persons, _ = clustered
    first, second, _ = persons
    before = persons_of(store)
    with pytest.raises(correction.CorrectionError, match=f"person {first} is the one the others"):
        correction.merge_persons(store, first, [first, second])
    with pytest.raises(correction.CorrectionError, match=f"person {second} is given twice"):
        correction.merge_persons(store, first, [second, second])
    assert persons_of(store) == before


def stored_sums_match_the_faces(store: FaceStore) -> None:
    """Each person's stored embedding count and mean are those of its embedded faces, and it
    counts as many faces as it has embeddings."""
    library = store.face_embeddings()
    means = store.person_means()
    for person in correction.list_persons(store):
        mine = library.vectors[library.person_ids == person.id]
        assert person.faces == len(mine), person
        if not len(mine):
            assert person.id not in means.person_ids
            continue
        row = int(np.flatnonzero(means.person_ids == person.id)[0])
        assert means.counts[row] == len(mine)
        mean = mine.astype(np.float64).sum(axis=0)
        assert np.allclose(means.centroids[row], mean / np.linalg.norm(mean), atol=1e-5)


def write_thumbnails(store: FaceStore, folder: Path, face_ids: list[int]) -> Path:
    """Thumbnail files and rows for the faces, as the thumbnail step writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    for face_id in face_ids:
        (folder / f"{face_id}.jpg").write_bytes(b"jpeg")
    store.save_thumbnails([(f, f"{f}.jpg", f"{f}.jpg") for f in face_ids])
    return folder


def erased(store: FaceStore, face_ids: list[int]) -> set[int]:
    """The faces among `face_ids` with neither embedding nor thumbnail."""
    faces = FacesTable.c
    query = select(faces.Id).where(
        faces.Id.in_(face_ids), faces.Embedding.is_(None), faces.ThumbnailPath.is_(None), faces.Name.is_(None)
    )
    with store.engine.connect() as conn:
        return set(conn.execute(query).scalars())


def test_a_forgotten_face_cannot_be_moved_into_a_person(clustered) -> None:
    store, tmp_path, persons, _ = clustered
    (forgotten, faces), (receiver, receiver_faces) = list(persons.items())[:2]
    correction.forget_person(store, forgotten, tmp_path / "thumbnails")

    with pytest.raises(correction.CorrectionError, match=f"face {faces[0]} was forgotten with its person"):
        correction.move_face(store, faces[0], receiver)
    with pytest.raises(correction.CorrectionError, match=f"face {faces[1]} was forgotten"):
        correction.reject_face(store, faces[1])  # it keeps its mark: it could not be moved later
    assert persons_of(store)[receiver] == set(receiver_faces)
    assert not set(faces) & {r.id for r in store.faces_without_embedding()}  # nothing made again
    assert not set(faces) & {r.id for r in store.faces_without_thumbnail()}
    stored_sums_match_the_faces(store)


def test_forget_erases_the_faces_rejected_from_the_person_too(clustered) -> None:
    store, tmp_path, persons, _ = clustered
    (person, faces), (other, other_faces), _ = list(persons.items())
    thumbnails = write_thumbnails(store, tmp_path / "thumbnails", faces + other_faces)
    correction.reject_face(store, faces[0])  # taken from her, then she is forgotten
    correction.reject_face(store, faces[1])
    correction.move_face(store, faces[1], other)  # taken from her, put into another: theirs now
    correction.reject_face(store, other_faces[0])  # rejected from someone else: not hers

    forgotten = correction.forget_person(store, person, thumbnails)

    gone = set(faces) - {faces[1]}
    assert set(forgotten.face_ids) == gone and forgotten.rejected == 1
    assert erased(store, faces + other_faces) == gone
    assert {p.name for p in thumbnails.iterdir()} == {f"{f}.jpg" for f in [faces[1], *other_faces]}
    stored_sums_match_the_faces(store)


def test_forget_after_a_merge_erases_the_faces_rejected_from_the_merged_person(clustered) -> None:
    store, tmp_path, persons, _ = clustered
    (target, target_faces), (source, source_faces), _ = list(persons.items())
    thumbnails = write_thumbnails(store, tmp_path / "thumbnails", target_faces + source_faces)
    correction.reject_face(store, source_faces[0])
    correction.merge_persons(store, target, [source])

    forgotten = correction.forget_person(store, target, thumbnails)

    assert set(forgotten.face_ids) == set(target_faces) | set(source_faces) and forgotten.rejected == 1
    assert erased(store, target_faces + source_faces) == set(target_faces) | set(source_faces)
    assert not any(thumbnails.iterdir())
    stored_sums_match_the_faces(store)
