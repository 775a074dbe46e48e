"""Fine-tuning: labels from a folder and from the user's corrections, triplet training of the
projection, and the tuned model as an artefact the settings name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from face_assets.core.clustering.cluster import ClusterParams
from face_assets.core.clustering.vectors import l2_normalize
from face_assets.core.person import update_persons
from face_assets.core.storage.store import FaceStore
from face_assets.core.tuning.finetune import finetune
from face_assets.core.tuning.labels import Labels, TooFewLabels, labels_from_folder, labels_from_library
from face_assets.core.tuning.model import MANIFEST, TunedEmbedder, model_folder
from face_assets.core.tuning.projection import Projection
from face_assets.core.tuning.triplet import TrainingParams, pair_recall, train_projection
from face_assets.core.vision.embedding import make_embedder
from face_assets.core.vision.stub import StubDetector, StubEmbedder
from face_assets_tests.core_tests.synthetic import identities
from face_assets_tests.core_tests.test_correction import add_faces


def nuisance_faces(seed: int, identities: int, per_identity: int, first: int = 0):
    """Faces whose identity hides behind one shared direction of large variance (as lighting or
    pose would): the base embeddings confuse people, a projection that drops it does not."""
    rng = np.random.default_rng(seed)
    centres = l2_normalize(np.random.default_rng(99).standard_normal((first + identities, 512)))
    nuisance = l2_normalize(np.random.default_rng(98).standard_normal((1, 512)))[0]
    ids = np.repeat(np.arange(first, first + identities), per_identity)
    shift = rng.normal(0.0, 1.0, len(ids))[:, None] * nuisance
    noise = 0.3 * rng.standard_normal((len(ids), 512)) / np.sqrt(512)
    return l2_normalize((centres[ids] + shift + noise).astype(np.float32)), ids.astype(np.int64)


def test_an_untrained_projection_is_the_base_model() -> None:
    vectors, _ = nuisance_faces(0, 5, 3)
    assert np.allclose(Projection.identity(64).apply(vectors), vectors, atol=1e-6)


def test_training_learns_what_separates_identities_it_never_saw() -> None:
    train, train_ids = nuisance_faces(1, 40, 6)
    held, held_ids = nuisance_faces(2, 10, 6, first=40)  # other people: the validation
    params = TrainingParams(max_epochs=10)
    result = train_projection(train, train_ids, (held, held_ids), params)
    assert result.recall_before < 0.6
    assert result.recall_after > 0.95 and result.best_epoch >= 1
    assert result.validation_after < result.validation_before / 2  # the held-out triplet loss
    assert pair_recall(result.projection.apply(held), held_ids) == pytest.approx(result.recall_after)
    again = train_projection(train, train_ids, (held, held_ids), params)  # the same seed
    assert np.array_equal(again.projection.w2, result.projection.w2)


def test_too_few_labels_are_refused_in_one_line() -> None:
    vectors, ids = nuisance_faces(3, 4, 6)
    labels = Labels(vectors, ids, tuple("abcd"), "photos/")
    with pytest.raises(TooFewLabels) as refused:
        labels.usable()
    message = str(refused.value)
    assert message.startswith("photos/: too few labels to learn from: 4 identities") and "\n" not in message
    # A face alone has no positive: identities of one face do not count.
    lonely = Labels(vectors[::6], ids[::6], tuple("abcd"), "photos/")
    with pytest.raises(TooFewLabels, match="0 identities with two faces or more"):
        lonely.usable()


def test_a_labelled_folder_gives_each_photo_its_identity(stub_people: Path) -> None:
    labels = labels_from_folder(stub_people / "train", StubDetector(), StubEmbedder())
    photos = {path.parent.name for path in (stub_people / "train").rglob("*.jpg")}
    assert labels.names == tuple(sorted(photos))
    assert len(labels.vectors) == len(list((stub_people / "train").rglob("*.jpg")))
    assert np.bincount(labels.identities).tolist() == [9] * len(photos)
    # Faces of one identity are alike, of two are not: the labels are each photo's own face.
    same = labels.vectors[labels.identities == 0] @ labels.vectors[labels.identities == 0].T
    other = labels.vectors[labels.identities == 0] @ labels.vectors[labels.identities == 1].T
    assert same.min() > 0.9 > 0.3 > other.max()


def test_the_library_teaches_names_moves_and_rejections(db_url: str, tmp_path: Path) -> None:
    store = FaceStore.from_url(db_url, upgrade=True)
    vectors, truth = identities(seed=11, k=4, n=6)
    add_faces(store, tmp_path / "photos", vectors)
    update_persons(store, ClusterParams())
    faces = store.faces_by_person()
    ada, grace, other, _ = sorted(faces, key=lambda person: faces[person][0].id)
    assert len(faces) == 4
    store.rename_person(ada, "Ada")
    store.rename_person(grace, "Grace")
    store.move_face(faces[other][0].id, grace)  # a user's move: a positive of Grace
    store.reject_face(faces[ada][0].id)  # a negative
    store.dispose()

    labels = labels_from_library(FaceStore.from_url(db_url), "stub")

    assert labels.names == (f"person {ada}", f"person {grace}")
    assert labels.negative is not None and int(labels.negative.sum()) == 1
    # Ada's six faces but the rejected one; Grace's six and the one moved to her; the other
    # persons' faces, neither named nor placed by a user, teach nothing.
    assert np.bincount(labels.identities[~labels.negative]).tolist() == [5, 7]
    assert labels_from_library(FaceStore.from_url(db_url), "another-model").vectors.shape == (0, 512)


def test_a_tuned_model_is_saved_with_its_manifest_and_named_by_the_settings(tmp_path: Path) -> None:
    vectors, ids = nuisance_faces(5, 12, 5)
    labels = Labels(vectors, ids, tuple(f"p{i}" for i in range(12)), "labels/")
    manifest = finetune(labels, StubEmbedder(), tmp_path, TrainingParams(max_epochs=5))

    assert manifest.name.startswith("stub-tuned-") and len(manifest.name) <= 64
    saved = json.loads((model_folder(tmp_path, manifest.name) / MANIFEST).read_text())
    assert saved["base"] == "stub" and saved["identities"] == 12 and saved["faces"] == 60
    assert saved["labels"] == labels.digest() and saved["epochs"] >= 1
    assert {"validation_loss_before", "validation_loss_after", "created", "base_sha256"} <= set(saved)
    # The same labels and parameters give the same name: a model is not made twice.
    assert finetune(labels, StubEmbedder(), tmp_path, TrainingParams(max_epochs=5)).name == manifest.name

    embedder = make_embedder(manifest.name, tmp_path)
    assert isinstance(embedder, TunedEmbedder) and embedder.name == manifest.name
    crops = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    expected = embedder.projection.apply(StubEmbedder().embed(crops))
    assert np.allclose(embedder.embed(crops), expected)


def test_an_unknown_tuned_model_is_one_line_naming_the_folder(tmp_path: Path) -> None:
    from face_assets.core.tuning.model import UnknownTunedModel

    with pytest.raises(UnknownTunedModel, match=f"no tuned model at {tmp_path / 'tuned'}"):
        make_embedder("stub-tuned-0123abcd", tmp_path)


def test_the_gradients_are_those_of_the_loss() -> None:
    """Against central differences on a small batch: the training follows its loss."""
    from face_assets.core.tuning.triplet import batch_loss

    rng = np.random.default_rng(7)
    vectors, ids = nuisance_faces(6, 4, 3)
    start = Projection.identity(8, seed=3)
    projection = Projection(start.w1, rng.normal(0, 0.1, 8).astype(np.float32),
                            rng.normal(0, 0.3, (8, 512)).astype(np.float32), start.b2)  # fmt: skip
    _, _, _, gradients = batch_loss(projection, vectors, ids, margin=0.6, decay=1e-3)
    weights = [projection.w1, projection.b1, projection.w2, projection.b2]
    step = 1e-3
    for which, (weight, gradient) in enumerate(zip(weights, gradients, strict=True)):
        for index in rng.choice(weight.size, 5, replace=False):
            moved = []
            for sign in (1, -1):
                changed = [w.astype(np.float64).copy() for w in weights]
                changed[which].flat[index] += sign * step
                loss, *_ = batch_loss(Projection(*changed), vectors.astype(np.float64), ids, 0.6, 1e-3)
                decay = 1e-3 * sum(float((w * w).sum()) for w in (changed[0], changed[2]))
                moved.append(loss + decay)
            numeric = (moved[0] - moved[1]) / (2 * step)
            assert gradient.flat[index] == pytest.approx(numeric, rel=2e-2, abs=2e-4), (which, index)
