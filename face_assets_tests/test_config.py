"""Dagster config and resources: a field left unset (None) takes the setting, one given wins."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal, get_args, get_origin

import dagster as dg
import pytest
from pydantic.fields import FieldInfo

from face_assets.assets.persons import PersonClustersConfig
from face_assets.core.clustering.params import knobs, setting_name
from face_assets.core.settings import get_settings
from face_assets.resources import (
    ClusteringResource,
    FaceModelsResource,
    FaceStoreResource,
    ThumbnailStoreResource,
)

CLUSTER_ENV = {
    "FACE_ASSETS_CLUSTER_ALGORITHM": "dbscan",
    "FACE_ASSETS_CLUSTER_LINK_THRESHOLD": "0.3",
    "FACE_ASSETS_CLUSTER_MIN_SIZE": "4",
    "FACE_ASSETS_CLUSTER_MIN_SAMPLES": "3",
    "FACE_ASSETS_CLUSTER_EPS": "0.4",
    "FACE_ASSETS_MATCH_THRESHOLD": "0.5",
    "FACE_ASSETS_CLUSTER_NEIGHBOURS": "10",
    "FACE_ASSETS_RECLUSTER_MODE": "rebuild",
}


@pytest.fixture
def cluster_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings away from their defaults, so "takes the setting" is not "takes the default"."""
    monkeypatch.chdir(tmp_path)
    for name, value in CLUSTER_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("cluster_env")
def test_person_clusters_config_without_fields_is_the_settings() -> None:
    params = PersonClustersConfig().params(ClusteringResource())
    assert params == get_settings().cluster_params()
    assert (params.algorithm, params.min_cluster_size, params.neighbours) == ("dbscan", 4, 10)
    assert PersonClustersConfig().resolved_mode(ClusteringResource()) == "rebuild"


@pytest.mark.usefixtures("cluster_env")
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("algorithm", "agglomerative"), ("link_threshold", 0.5), ("min_cluster_size", 2),
        ("min_samples", 1), ("eps", 0.2), ("match_threshold", 0.9), ("neighbours", 50),
    ],
)  # fmt: skip
def test_one_config_field_overrides_only_that_parameter(field: str, value: object) -> None:
    expected = dataclasses.replace(get_settings().cluster_params(), **{field: value})
    assert PersonClustersConfig(**{field: value}).params(ClusteringResource()) == expected


@pytest.mark.usefixtures("cluster_env")
def test_mode_given_wins_and_an_empty_mode_from_older_run_config_takes_the_setting() -> None:
    settings, deployment = ClusteringResource(), ClusteringResource(mode="match_then_cluster")
    assert PersonClustersConfig(mode="match_then_cluster").resolved_mode(settings) == "match_then_cluster"
    assert PersonClustersConfig(mode="").resolved_mode(settings) == "rebuild"
    with pytest.raises(dg.Failure, match="unknown clustering mode"):
        PersonClustersConfig(mode="sometimes").resolved_mode(settings)
    # The resource's field (a deployment's definitions) wins over the setting, a run's config over both.
    assert PersonClustersConfig().resolved_mode(deployment) == "match_then_cluster"
    assert PersonClustersConfig(mode="rebuild").resolved_mode(deployment) == "rebuild"


@pytest.mark.usefixtures("cluster_env")
def test_an_out_of_range_override_is_refused_in_one_line() -> None:
    with pytest.raises(dg.Failure) as refused:
        PersonClustersConfig(link_threshold=-2.0).params(ClusteringResource())
    assert refused.value.description == (
        "person_clusters config: link_threshold (FACE_ASSETS_CLUSTER_LINK_THRESHOLD): "
        "Input should be greater than -1, got -2.0"
    )


def _another_value(info: FieldInfo) -> object:
    """A valid value of the knob other than its default."""
    if get_origin(info.annotation) is Literal:
        return next(choice for choice in get_args(info.annotation) if choice != info.default)
    if info.annotation is bool:
        return not info.default
    return info.default + (1 if info.annotation is int else 0.05)


@pytest.mark.parametrize("name", sorted(knobs()))
def test_each_clustering_knob_is_one_setting_that_reaches_the_core_and_the_dagster_config(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Its default is written once (ClusterParams); its variable, the settings' field and the
    Dagster config's field all come from there."""
    monkeypatch.chdir(tmp_path)
    info = knobs()[name]
    value = _another_value(info)
    variable = f"FACE_ASSETS_{setting_name(info)}".upper()
    assert getattr(get_settings().cluster_params(), name) == info.default
    monkeypatch.setenv(variable, str(value))
    assert getattr(get_settings().cluster_params(), name) == value
    assert getattr(PersonClustersConfig().params(ClusteringResource()), name) == value
    field = PersonClustersConfig.model_fields[name]
    assert field.default is None and variable in str(field.description)
    monkeypatch.delenv(variable)
    assert getattr(PersonClustersConfig(**{name: value}).params(ClusteringResource()), name) == value


def test_face_store_resolves_the_database_at_run_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    resource = FaceStoreResource()
    monkeypatch.setenv("DATABASE_URL", "sqlite:///later.db")
    assert resource.resolved_url() == "sqlite:///later.db"
    assert FaceStoreResource(database_url="").resolved_url() == "sqlite:///later.db"
    assert FaceStoreResource(database_url="sqlite:///given.db").resolved_url() == "sqlite:///given.db"


def test_face_models_fields_override_the_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FACE_ASSETS_DETECTION_MIN_SCORE", "0.8")
    monkeypatch.setenv("FACE_ASSETS_EMBEDDING_BATCH_SIZE", "8")
    monkeypatch.setenv("FACE_ASSETS_MODELS_DIR", str(tmp_path / "models"))
    unset = FaceModelsResource()._settings()
    assert (unset.detection_min_score, unset.embedding_batch_size, unset.models_dir) == (
        0.8, 8, tmp_path / "models",
    )  # fmt: skip
    given = FaceModelsResource(detection_min_score=0.0, models_dir=str(tmp_path / "other"))._settings()
    assert (given.detection_min_score, given.embedding_batch_size, given.models_dir) == (
        0.0, 8, tmp_path / "other",
    )  # fmt: skip


def test_thumbnail_store_fields_override_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("THUMBNAIL_SAVE_PATH", str(tmp_path / "thumbs"))
    monkeypatch.setenv("FACE_ASSETS_THUMBNAIL_PX", "64")
    monkeypatch.setenv("FACE_ASSETS_GALLERY_DIR", str(tmp_path / "gallery"))
    unset = ThumbnailStoreResource()
    assert (unset.folder(), unset.px(), unset.gallery_folder()) == (
        tmp_path / "thumbs", 64, tmp_path / "gallery",
    )  # fmt: skip
    given = ThumbnailStoreResource(thumbnail_px=128, gallery_path=str(tmp_path / "g"))
    assert (given.folder(), given.px(), given.gallery_folder()) == (tmp_path / "thumbs", 128, tmp_path / "g")
