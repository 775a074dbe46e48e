"""The code location loads, cheaply."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg


def test_definitions_load_with_every_asset_and_the_job() -> None:
    from face_assets.definitions import defs

    repository = defs.get_repository_def()
    keys = {key.to_user_string() for key in repository.asset_graph.get_all_asset_keys()}
    assert keys == {"media_items", "detected_faces", "face_thumbnails", "face_embeddings", "person_clusters"}
    assert repository.has_job("process_media_job")
    graph = repository.asset_graph
    assert dg.AssetKey("detected_faces") in graph.get(dg.AssetKey("face_embeddings")).parent_keys
    assert dg.AssetKey("face_embeddings") in graph.get(dg.AssetKey("person_clusters")).parent_keys


def test_importing_definitions_loads_no_model_and_opens_no_database(tmp_path) -> None:
    """Nothing heavy at import: TensorFlow stays out and no database file appears."""
    code = "import sys, face_assets.definitions;print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True
    ).stdout.split()
    assert out == ["False", "False"]
    assert list(tmp_path.iterdir()) == []
