"""The code location loads, cheaply."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg


def test_definitions_load_with_every_asset_and_the_job() -> None:
    from face_assets.definitions import build_definitions

    repository = build_definitions().get_repository_def()
    keys = {key.to_user_string() for key in repository.asset_graph.get_all_asset_keys()}
    assert keys == {
        "media_items", "detected_faces", "face_thumbnails", "face_embeddings", "face_persons",
        "person_clusters", "person_gallery", "tuned_embedder",
    }  # fmt: skip
    for job in ("process_batch_job", "recluster_persons_job", "register_media_job"):
        assert repository.has_job(job)
    assert {s.name for s in repository.sensor_defs} == {"new_media_items_sensor", "media_folder_sensor"}
    assert [s.name for s in repository.schedule_defs] == ["recluster_schedule"]
    graph = repository.asset_graph
    assert dg.AssetKey("detected_faces") in graph.get(dg.AssetKey("face_embeddings")).parent_keys
    assert dg.AssetKey("tuned_embedder") in graph.get(dg.AssetKey("face_embeddings")).parent_keys
    assert dg.AssetKey("face_embeddings") in graph.get(dg.AssetKey("face_persons")).parent_keys
    # A batch is matched once its thumbnails' sharpness is known: it keeps poor faces out.
    assert dg.AssetKey("face_thumbnails") in graph.get(dg.AssetKey("face_persons")).parent_keys
    assert dg.AssetKey("face_persons") in graph.get(dg.AssetKey("person_clusters")).parent_keys


def test_importing_definitions_loads_no_model_and_opens_no_database(tmp_path) -> None:
    """Nothing heavy at import: TensorFlow stays out and no database file appears."""
    code = "import sys, face_assets.definitions;print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True
    ).stdout.split()
    assert out == ["False", "False"]
    assert list(tmp_path.iterdir()) == []


def test_no_step_waits_on_a_concurrency_pool_a_killed_run_could_keep(tmp_path) -> None:
    """A pool slot claimed by a run killed with SIGKILL is never freed by an in-process run:
    every later run would wait on it. Clusterings are kept apart by the database lock instead."""
    import shutil
    from pathlib import Path

    from face_assets.assets import ALL_ASSETS

    assert {a.key.to_user_string(): a.op.pool for a in ALL_ASSETS if a.op.pool} == {}
    shutil.copy(Path(__file__).parents[1] / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    assert instance.get_concurrency_config().pool_config.default_pool_limit is None
    limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    assert limits == [{"key": "face_assets/recluster", "limit": 1}]
    instance.dispose()
