from itertools import combinations
from pathlib import Path

import pytest
from PIL import Image

from face_assets.core.evaluation import (
    LabelsError,
    labelled_images,
    labelled_media,
    pick_face,
    rare_fates,
    score_clusters,
    video_appearances,
)
from face_assets_devtools.clips import Scene, make_clip


def _clusters(predicted: list[int | None]) -> list[object]:
    """None is a singleton: give it a cluster key nobody else has."""
    return [("none", i) if p is None else p for i, p in enumerate(predicted)]


def _bcubed(truth: list[str], predicted: list[int | None]) -> tuple[float, float]:
    """BCubed from the definition: per item, share of its cluster (label) that is correct."""
    cluster = _clusters(predicted)
    n = len(truth)
    precision = recall = 0.0
    for i in range(n):
        same_cluster = [j for j in range(n) if cluster[j] == cluster[i]]
        same_label = [j for j in range(n) if truth[j] == truth[i]]
        correct = len(set(same_cluster) & set(same_label))
        precision += correct / len(same_cluster)
        recall += correct / len(same_label)
    return precision / n, recall / n


def _pairwise(truth: list[str], predicted: list[int | None]) -> tuple[float, float]:
    cluster = _clusters(predicted)
    pairs = list(combinations(range(len(truth)), 2))
    together = [(i, j) for i, j in pairs if cluster[i] == cluster[j]]
    same = [(i, j) for i, j in pairs if truth[i] == truth[j]]
    both = set(together) & set(same)
    return len(both) / len(together), len(both) / len(same)


TRUTH = ["ann"] * 3 + ["bob"] * 2 + ["cy"]


def test_perfect_clustering_scores_one_everywhere() -> None:
    scores = score_clusters(TRUTH, [7, 7, 7, 2, 2, 9])
    assert scores.as_dict() == pytest.approx(dict.fromkeys(scores.as_dict(), 1.0))


def test_everything_unassigned() -> None:
    scores = score_clusters(TRUTH, [None] * len(TRUTH))
    assert scores.pairwise_recall == 0.0
    assert scores.bcubed_precision == 1.0
    # Each item's cluster is itself: recall is 1 / (size of its label), averaged.
    assert scores.bcubed_recall == pytest.approx((3 * (1 / 3) + 2 * (1 / 2) + 1) / 6)


def test_one_cluster_holding_everything() -> None:
    scores = score_clusters(TRUTH, [1] * len(TRUTH))
    n = len(TRUTH)
    assert scores.bcubed_recall == 1.0
    assert scores.bcubed_precision == pytest.approx((3 / n) ** 2 + (2 / n) ** 2 + (1 / n) ** 2)
    assert scores.pairwise_recall == 1.0
    assert scores.pairwise_precision == pytest.approx((3 + 1) / (n * (n - 1) / 2))
    assert scores.nmi == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "predicted",
    [
        [1, 1, 2, 2, 2, None],
        [1, None, 1, 3, None, 3],
        [5, 5, 5, 5, None, None],
    ],
)
def test_mixed_clustering_matches_the_definitions(predicted: list[int | None]) -> None:
    scores = score_clusters(TRUTH, predicted)
    b_precision, b_recall = _bcubed(TRUTH, predicted)
    p_precision, p_recall = _pairwise(TRUTH, predicted)
    assert (scores.bcubed_precision, scores.bcubed_recall) == pytest.approx((b_precision, b_recall))
    assert (scores.pairwise_precision, scores.pairwise_recall) == pytest.approx((p_precision, p_recall))
    assert scores.bcubed_f == pytest.approx(2 * b_precision * b_recall / (b_precision + b_recall))
    assert scores.pairwise_f == pytest.approx(2 * p_precision * p_recall / (p_precision + p_recall))
    assert 0.0 <= scores.nmi <= 1.0


def test_two_unassigned_faces_are_not_counted_as_one_cluster() -> None:
    """None means 'own singleton', not a shared 'None' cluster."""
    scores = score_clusters(["ann", "ann"], [None, None])
    assert scores.pairwise_recall == 0.0 and scores.bcubed_recall == pytest.approx(0.5)


@pytest.mark.parametrize(("truth", "predicted"), [(["a", "b"], [1]), (["a"], [1, 2]), ([], [])])
def test_score_rejects_bad_input(truth: list[str], predicted: list[int | None]) -> None:
    with pytest.raises(ValueError):
        score_clusters(truth, predicted)


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (10, 200, 30)).save(path, "PNG")
    return path


def test_the_identity_is_the_top_level_folder_whatever_lies_below_it(tmp_path: Path) -> None:
    """Two people who both keep a `2003/` folder stay two people; a year or an event folder
    below a person is not a person."""
    expected = {
        _png(tmp_path / "Kofi" / "2003" / "summer" / "x.png"): "Kofi",
        _png(tmp_path / "Kofi" / "y.jpg"): "Kofi",  # a PNG named .jpg is still an image
        _png(tmp_path / "Ama" / "2003" / "z.png"): "Ama",
    }
    (tmp_path / "Ama" / "notes.txt").write_text("who is Ama")
    (tmp_path / "Ama" / "fake.jpg").write_text("not an image")
    _png(tmp_path / "Ama" / ".hidden.png")
    _png(tmp_path / "Ama" / ".thumbnails" / "z.png")  # a hidden folder: registration skips it too
    (tmp_path / "README.txt").write_text("one folder per person")  # not media: no label needed
    assert dict(labelled_images(tmp_path)) == expected
    assert dict(labelled_media(tmp_path)) == expected


def test_a_photo_outside_every_identity_folder_is_refused_by_name(tmp_path: Path) -> None:
    _png(tmp_path / "ann" / "1.png")
    loose = _png(tmp_path / "group.png")
    with pytest.raises(LabelsError, match=f"1 file outside the <identity>/ folders that label them: {loose}"):
        labelled_media(tmp_path)


def test_identity_folders_below_split_folders(tmp_path: Path) -> None:
    expected = {
        _png(tmp_path / "train" / "ann" / "1.png"): "ann",
        _png(tmp_path / "val" / "ann" / "2017" / "2.png"): "ann",
        _png(tmp_path / "train" / "bob" / "x.png"): "bob",
    }
    assert dict(labelled_images(tmp_path, identity_depth=2)) == expected
    loose = _png(tmp_path / "train" / "top_level.png")  # in a split folder, no identity folder
    with pytest.raises(LabelsError, match=f"<split>/<identity>/ folders that label them: {loose}"):
        labelled_images(tmp_path, identity_depth=2)


def test_labelled_media_takes_videos_by_their_bytes_and_photos_alike(tmp_path: Path) -> None:
    photo = _png(tmp_path / "ann" / "1.png")
    clip = make_clip(tmp_path / "ann" / "party.mov", [Scene([photo], 1.0, "still")], size=(64, 48))
    renamed = tmp_path / "bob" / "clip.dat"  # a video whatever its name
    renamed.parent.mkdir()
    renamed.write_bytes(clip.read_bytes())
    (tmp_path / "bob" / "fake.mp4").write_text("not a video")

    assert dict(labelled_media(tmp_path)) == {photo: "ann", clip: "ann", renamed: "bob"}
    assert dict(labelled_images(tmp_path)) == {photo: "ann"}  # the photo benchmarks' view


def test_labelled_images_without_images_raises(tmp_path: Path) -> None:
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "readme.txt").write_text("nothing here")
    with pytest.raises(ValueError):
        labelled_images(tmp_path)


def _face(x1: float, y1: float, x2: float, y2: float) -> dict[str, object]:
    return {"box_xyxy": [x1, y1, x2, y2]}


def test_pick_face_largest() -> None:
    faces = [_face(0, 0, 10, 10), _face(50, 50, 90, 80), _face(5, 5, 30, 30)]
    assert pick_face(faces, (400, 100), "largest") == 1
    assert pick_face(faces, None, "center") == 1  # no size: the largest


def test_pick_face_nearest_the_centre_uses_width_then_height() -> None:
    size = (400, 100)  # (width, height): the centre is (200, 50)
    faces = [_face(40, 190, 60, 210), _face(0, 0, 120, 120), _face(190, 40, 210, 60)]
    assert pick_face(faces, size, "center") == 2
    assert pick_face(faces, size, "largest") == 1


def _video_face(face_id: int, frame: int, track: int, person: int | None, width: float) -> dict[str, object]:
    return {"id": face_id, "frame": frame, "track_id": track, "person_id": person,
            "box_xyxy": [0, 0, width, width]}  # fmt: skip


def test_a_labelled_video_scores_each_appearance_of_its_person_once() -> None:
    faces = [
        # Frames 0-20: the person (track 1) with a smaller bystander (track 2) beside them.
        *[_video_face(k, frame, 1, 7, 80) for k, frame in enumerate((0, 10, 20))],
        *[_video_face(10 + k, frame, 2, 9, 30) for k, frame in enumerate((0, 10, 20))],
        # Frames 50-70: the person again, in another scene (track 20), and then in frame 90 a
        # face the tracker has not seen yet, which counts alone.
        *[_video_face(20 + k, frame, 20, None, 90) for k, frame in enumerate((50, 60, 70))],
        {**_video_face(30, 90, 0, 7, 60), "track_id": None},
        # In frame 10 a spurious face (track 3) is larger than the person: the person's track
        # won frames 0 and 20 and is on screen in frame 10, so the spurious one is no
        # appearance.
        _video_face(40, 10, 3, None, 85),
    ]
    assert sorted(video_appearances(faces, (640, 360), "largest"), key=str) == [7, 7, None]


def test_rare_peoples_faces_are_counted_unassigned_own_or_merged() -> None:
    """`ann` and `bob` have two photos each; `cy` has five. Bob's second face is merged into
    cy's person; ann's faces form their own person; bob's first waits."""
    truth = ["ann", "ann", "bob", "bob"] + ["cy"] * 5
    predicted: list[int | None] = [1, 1, None, 2] + [2] * 5
    assert rare_fates(truth, predicted) == {
        "rare_faces": 4, "rare_unassigned": 0.25, "rare_own": 0.5, "rare_merged": 0.25,
    }  # fmt: skip
    # A person of two rarely seen people is a merge too, for both of them.
    assert rare_fates(["ann", "ann", "bob", "bob"], [1, 1, 1, None])["rare_merged"] == 0.75
    # What counts as rare is the number of photos, which a caller may count itself.
    assert rare_fates(["cy"] * 2, [1, 1], photos={"cy": 5})["rare_faces"] == 0
