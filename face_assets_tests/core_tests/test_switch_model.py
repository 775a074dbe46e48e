"""Moving a library to another model (FACE_ASSETS_EMBEDDER set to a tuned model, and back):
from the base embeddings the faces keep, in batches that survive a kill, with every name and
correction kept and no clustering or matching across two models on the way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from face_assets.core import correction
from face_assets.core.clustering.cluster import ClusterParams
from face_assets.core.embedding import MixedModels, embed_faces, switch_model
from face_assets.core.person import match_new_faces, update_persons
from face_assets.core.storage.codecs import decode_embedding
from face_assets.core.storage.persons import recompute_person_sums
from face_assets.core.storage.schema import FacesTable, PersonsTable
from face_assets.core.storage.store import FaceStore
from face_assets.core.tuning.finetune import finetune
from face_assets.core.tuning.labels import Labels
from face_assets.core.tuning.triplet import TrainingParams
from face_assets.core.vision.embedding import make_embedder
from face_assets.core.vision.stub import StubEmbedder
from face_assets_tests.core_tests.synthetic import identities
from face_assets_tests.core_tests.test_correction import FACE, add_faces
from face_assets_tests.core_tests.test_tuning import nuisance_faces


def faces(store: FaceStore) -> dict[int, tuple[bytes, bytes | None, str, int | None, bool]]:
    """Every face: (Embedding, BaseEmbedding, EmbeddingModel, PersonId, IsRejected)."""
    c = FacesTable.c
    query = select(c.Id, c.Embedding, c.BaseEmbedding, c.EmbeddingModel, c.PersonId, c.IsRejected)
    with store.engine.connect() as conn:
        return {r[0]: (bytes(r[1]), r[2] and bytes(r[2]), *r[3:5], bool(r[5])) for r in conn.execute(query)}


def sums(store: FaceStore) -> dict[int, tuple[np.ndarray, int]]:
    query = select(PersonsTable.c.Id, PersonsTable.c.EmbeddingSum, PersonsTable.c.EmbeddingCount)
    with store.engine.connect() as conn:
        return {r.Id: (decode_embedding(r.EmbeddingSum), r.EmbeddingCount) for r in conn.execute(query)}


def assert_sums_as_recomputed(store: FaceStore) -> None:
    """Every person's stored sum and count are those its faces give now."""
    stored = sums(store)
    with store.engine.begin() as conn:
        recompute_person_sums(conn)
    for person, (total, count) in sums(store).items():
        assert stored[person][1] == count and np.allclose(stored[person][0], total, atol=1e-5)


@pytest.fixture
def library(db_url: str, tmp_path: Path):
    """Four persons of the stub model, one named, one face moved, one rejected; and a tuned model."""
    store = FaceStore.from_url(db_url, upgrade=True)
    vectors, _ = identities(seed=11, k=4, n=6)
    add_faces(store, tmp_path / "photos", vectors)
    update_persons(store, ClusterParams())
    persons = sorted(store.faces_by_person(), key=lambda p: store.faces_by_person()[p][0].id)
    correction.rename_person(store, persons[0], "Ada")
    moved = store.faces_by_person()[persons[2]][0].id
    correction.move_face(store, moved, persons[1])
    correction.reject_face(store, store.faces_by_person()[persons[0]][1].id)
    labels_vectors, labels_ids = nuisance_faces(5, 12, 5)
    labels = Labels(labels_vectors, labels_ids, tuple(f"p{i}" for i in range(12)), "labels/")
    name = finetune(labels, StubEmbedder(), tmp_path / "models", TrainingParams(max_epochs=3)).name
    yield store, make_embedder(name, tmp_path / "models")
    store.dispose()


def test_a_switch_killed_halfway_resumes_and_keeps_every_name_and_correction(library) -> None:
    store, tuned = library
    before = faces(store)
    names = {p.id: p.name for p in correction.list_persons(store)}
    calls = {"n": 0}
    save = store.save_embeddings

    def dies_after_one_batch(*args, **kwargs):  # noqa: ANN002, ANN003
        if calls["n"] == 1:
            raise KeyboardInterrupt  # the process killed between two transactions
        calls["n"] += 1
        return save(*args, **kwargs)

    store.save_embeddings = dies_after_one_batch  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        switch_model(store, tuned, batch=5)
    store.save_embeddings = save  # type: ignore[method-assign]
    halfway = faces(store)
    assert sum(f[2] == tuned.name for f in halfway.values()) == 5  # one batch, whole

    # Halfway, nothing compares the two models: no clustering, no matching, no batch embedding.
    for step in (
        lambda: update_persons(store, ClusterParams()),
        lambda: match_new_faces(store, ClusterParams(), (1, 10**6)),
        lambda: embed_faces(store, tuned, id_range=(1, 10**6)),
    ):
        with pytest.raises(MixedModels, match="embedded by"):
            step()

    assert switch_model(store, tuned) == len(before) - 5  # the rest, once
    after = faces(store)
    assert {f[2] for f in after.values()} == {tuned.name}
    for face, (embedding, base, _, person, rejected) in after.items():
        assert base == before[face][0]  # the base model's embedding, kept as it was
        expected = tuned.project(decode_embedding(base)[None])[0]
        assert np.allclose(decode_embedding(embedding), expected, atol=1e-6)
        assert (person, rejected) == before[face][3:]  # persons, moves and rejections kept
    assert {p.id: p.name for p in correction.list_persons(store)} == names
    assert_sums_as_recomputed(store)


def test_switching_back_restores_the_base_models_embeddings_exactly(library) -> None:
    store, tuned = library
    before = faces(store)
    switch_model(store, tuned)
    assert switch_model(store, StubEmbedder()) == len(before)
    assert faces(store) == before  # every byte: embeddings, no base kept, model, persons
    update_persons(store, ClusterParams())  # one model again: clustering runs


def test_another_base_models_faces_are_embedded_again_from_their_photos(library, tmp_path: Path) -> None:
    """A face whose embedding the stored values cannot give (another base model's, as FaceNet's
    is for FaceNet fused with dlib's) is read again from its photo; the persons, names and
    corrections stay, and no sum ever adds two models' vectors."""
    store, tuned = library
    before = faces(store)
    names = {p.id: p.name for p in correction.list_persons(store)}
    first = min(before)
    with store.engine.begin() as conn:
        conn.execute(
            FacesTable.update().where(FacesTable.c.Id == first).values(EmbeddingModel="legacy-model")
        )
    run = embed_faces(store, tuned)
    assert run.switched == len(before) and run.faces == 1  # one read from its photo, the rest computed
    after = faces(store)
    assert {f[2] for f in after.values()} == {tuned.name}
    photo = np.asarray(Image.open(tmp_path / "photos" / "0000.png").convert("RGB"))
    expected = tuned.embed(tuned.cut(photo, FACE.box_xyxy, FACE.landmarks)[None])[0]
    assert np.allclose(decode_embedding(after[first][0]), expected, atol=1e-6)
    assert {face: f[3:] for face, f in after.items()} == {face: f[3:] for face, f in before.items()}
    assert {p.id: p.name for p in correction.list_persons(store)} == names
    assert_sums_as_recomputed(store)
