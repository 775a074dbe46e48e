"""`face-assets finetune` as a user runs it: a labelled folder in, a model's name out, and that
name taken by FACE_ASSETS_EMBEDDER (the stub models: what is tested is the command)."""

from __future__ import annotations

import pickle
import shutil
import sqlite3
from pathlib import Path

import dagster as dg
import pytest

from face_assets.core.clustering.cluster import ClusterParams
from face_assets.core.storage.store import FaceStore
from face_assets_devtools.stub_people import COLOURS, make_stub_people
from face_assets_tests.conftest import IDENTITIES, PHOTOS_PER_IDENTITY
from face_assets_tests.test_cli import face_assets, run


def test_finetune_prints_the_model_that_the_embedder_setting_then_uses(
    tmp_path: Path, stub_photo_folder: Path, stub_models: None
) -> None:
    people = tuple(f"person-{n}" for n in range(len(COLOURS)))
    labels = make_stub_people(tmp_path / "labels", people, {"train": 5}) / "train"
    env = {"FACE_ASSETS_MODELS_DIR": str(tmp_path / "models")}
    out = run(face_assets("finetune", str(labels), "--max-epochs", "3"), tmp_path, **env)
    assert out.returncode == 0, out.stderr[-3000:]
    name = out.stdout.strip().splitlines()[-1]
    assert name.startswith("stub-tuned-") and " " not in name
    assert (tmp_path / "models" / "tuned" / name / "manifest.json").is_file()
    assert f"{5 * len(people)} faces of {len(people)} identities from {labels}" in out.stderr

    photo = next((stub_photo_folder / IDENTITIES[0]).glob("*.jpg"))
    env["FACE_ASSETS_EMBEDDER"] = name
    encoded = run(face_assets("encode", str(photo), "-o", "faces.pkl"), tmp_path, **env)
    assert encoded.returncode == 0, encoded.stderr[-3000:]
    with (tmp_path / "faces.pkl").open("rb") as saved:
        assert pickle.load(saved)["model"] == name


def test_too_few_labels_are_refused_in_one_line(tmp_path: Path, stub_people: Path, stub_models: None) -> None:
    folder = tmp_path / "labels"
    for identity in IDENTITIES[:2]:
        shutil.copytree(stub_people / "train" / identity, folder / identity)
    out = run(face_assets("finetune", str(folder)), tmp_path, FACE_ASSETS_MODELS_DIR=str(tmp_path / "models"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"error: {folder}: too few labels to learn from: 2 identities")
    assert not (tmp_path / "models" / "tuned").exists()


def test_a_run_with_another_embedder_moves_the_library_to_it_and_back(
    tmp_path: Path, stub_photo_folder: Path, stub_models: None
) -> None:
    people = tuple(f"person-{n}" for n in range(len(COLOURS)))
    labels = make_stub_people(tmp_path / "labels", people, {"train": 5}) / "train"
    library = tmp_path / "library"
    shutil.copytree(stub_photo_folder / IDENTITIES[0], library / IDENTITIES[0])
    env = {"FACE_ASSETS_MODELS_DIR": str(tmp_path / "models"), "DATABASE_URL": f"sqlite:///{tmp_path / 'db'}"}
    assert run(face_assets("run", str(library)), tmp_path, **env).returncode == 0
    before = faces(tmp_path / "db")
    name = run(face_assets("finetune", str(labels), "--max-epochs", "2"), tmp_path, **env).stdout.split()[-1]
    shutil.copytree(stub_photo_folder / IDENTITIES[2], library / IDENTITIES[2])  # new photos arrive

    tuned = run(face_assets("run", str(library)), tmp_path, FACE_ASSETS_EMBEDDER=name, **env)

    assert tuned.returncode == 0, tuned.stderr[-3000:]
    moved = faces(tmp_path / "db")
    assert {model for model, _, _ in moved.values()} == {name}
    assert len(moved) == 2 * PHOTOS_PER_IDENTITY  # the new photos' faces embedded by the tuned model
    assert all(base is not None for _, _, base in moved.values())
    assert all(moved[face][2] == embedding for face, (_, embedding, _) in before.items())

    back = run(face_assets("recognize"), tmp_path, **env)  # FACE_ASSETS_EMBEDDER: the stub again
    assert back.returncode == 0, back.stderr[-3000:]
    restored = faces(tmp_path / "db")
    assert all(restored[face] == (model, embedding, None) for face, (model, embedding, _) in before.items())


def faces(database: Path) -> dict[int, tuple[str, bytes, bytes | None]]:
    """Every face's (EmbeddingModel, Embedding, BaseEmbedding)."""
    conn = sqlite3.connect(database)
    rows = conn.execute('SELECT "Id", "EmbeddingModel", "Embedding", "BaseEmbedding" FROM "Faces"').fetchall()
    conn.close()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def test_the_tuned_embedder_asset_learns_from_the_library_and_the_next_run_uses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub_models: None
) -> None:
    """Materialised as from the UI: a model from the named persons, named by FACE_ASSETS_EMBEDDER=
    tuned; then the embeddings over the whole library move to it. On SQLite: the labels' and the
    switch's storage are tested on every backend in core_tests."""
    db_url = f"sqlite:///{tmp_path / 'faces.db'}"
    from face_assets.assets import ALL_ASSETS, tuned_embedder
    from face_assets.core import correction
    from face_assets.core.person import update_persons
    from face_assets.core.settings import get_settings
    from face_assets.core.vision.models import embedder_for
    from face_assets.definitions import make_resources
    from face_assets.runs import materialize_pipeline
    from face_assets_tests.core_tests.synthetic import identities
    from face_assets_tests.core_tests.test_correction import add_faces

    store = FaceStore.from_url(db_url, upgrade=True)
    vectors, _ = identities(seed=3, k=6, n=5)
    add_faces(store, tmp_path / "photos", vectors)
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("FACE_ASSETS_MODELS_DIR", str(tmp_path / "models"))

    def materialise() -> dg.ExecuteInProcessResult:
        return dg.materialize(ALL_ASSETS, selection=[tuned_embedder.key], resources=make_resources(),
                              raise_on_error=False)  # fmt: skip

    def figures(result: dg.ExecuteInProcessResult) -> dict[str, object]:
        (event,) = result.asset_materializations_for_node("tuned_embedder")
        return {key: getattr(value, "value", value) for key, value in event.metadata.items()}

    # Nobody named yet: nothing to learn from, said, and no failure that would stop the
    # embeddings of a run of every asset.
    unlabelled = materialise()
    assert unlabelled.success and figures(unlabelled)["model"] == "none"
    assert str(figures(unlabelled)["why"]).startswith("library: too few labels to learn from: 0 identities")

    update_persons(store, ClusterParams())
    for number, person in enumerate(p.id for p in correction.list_persons(store)):
        correction.rename_person(store, person, f"Ada {'ABCDEF'[number]}")
    made = materialise()
    assert made.success
    metadata = {
        k: getattr(v, "value", v)
        for k, v in made.asset_materializations_for_node("tuned_embedder")[0].metadata.items()
    }
    name = metadata["model"]
    assert name.startswith("stub-tuned-") and metadata["identities"] == 6 and metadata["faces"] == 30
    assert not any("Ada" in str(value) for value in metadata.values())  # no name in Dagster's records
    monkeypatch.setenv("FACE_ASSETS_EMBEDDER", "tuned")
    assert embedder_for(get_settings()).name == name

    run = materialize_pipeline(
        database_url=db_url, thumbnail_dir=tmp_path / "thumbnails", steps=["embed", "cluster"]
    )
    assert run.success
    assert run.metadata()["face_embeddings"]["faces_moved_to_model"] == 30
    assert store.other_embedding_model(name) is None  # every face now the tuned model's
    store.dispose()
