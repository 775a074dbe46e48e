"""Dagster resources: the application database, the face models, the clustering settings, the
thumbnail folder. The
assets read the settings only through them (and through their own config's unset fields)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from face_assets.core.clustering.params import ClusterParams
from face_assets.core.face import VideoSampling
from face_assets.core.settings import Settings, get_settings
from face_assets.core.storage.store import FaceStore
from face_assets.core.vision.models import detector_for, embedder_for
from face_assets.core.vision.types import FaceDetector, FaceEmbedder


class FaceStoreResource(dg.ConfigurableResource):
    """The application database. No `database_url`: DATABASE_URL, SQL_CONNECTION_STRING or the
    SQLite file under FACE_ASSETS_DATA_DIR, read at run time (a secret never goes in config)."""

    database_url: str | None = None
    # None: upgrade the embedded SQLite file automatically, never a server's schema.
    upgrade_schema: bool | None = None
    # The folder whose photos and videos the media_items asset registers (FACE_ASSETS_MEDIA_DIR).
    media_dir: str | None = None

    _store: FaceStore | None = PrivateAttr(default=None)

    def resolved_url(self) -> str:
        return get_settings(database_url=self.database_url).resolved_database_url()

    # The connection opens on first use, not at resource setup: a sensor tick or a step then
    # reports an unreachable database in its own words (one line) instead of failing in setup.
    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._store is not None:
            self._store.dispose()

    def media_folder(self) -> Path | None:
        return get_settings(media_dir=self.media_dir).media_dir

    def get_store(self) -> FaceStore:
        if self._store is None:
            self._store = FaceStore.from_url(self.resolved_url(), upgrade=self.upgrade_schema)
        return self._store


class FaceModelsResource(dg.ConfigurableResource):
    """The detector and embedder; a field left unset (None) takes its value from the settings."""

    detector: str | None = None
    embedder: str | None = None
    models_dir: str | None = None
    detection_min_score: float | None = None
    embedding_batch_size: int | None = None
    engine: str | None = None
    video_fps: float | None = None
    video_max_frames: int | None = None

    def _settings(self) -> Settings:
        return get_settings(
            detector=self.detector,
            embedder=self.embedder,
            engine=self.engine,
            models_dir=self.models_dir,
            detection_min_score=self.detection_min_score,
            embedding_batch_size=self.embedding_batch_size,
            video_fps=self.video_fps,
            video_max_frames=self.video_max_frames,
        )

    def video_sampling(self) -> VideoSampling:
        settings = self._settings()
        return VideoSampling(settings.video_fps, settings.video_max_frames)

    def get_detector(self) -> FaceDetector:
        return detector_for(self._settings())

    def get_embedder(self) -> FaceEmbedder:
        return embedder_for(self._settings())

    def models_folder(self) -> Path:
        return self._settings().models_dir


class ClusteringResource(dg.ConfigurableResource):
    """How faces become persons: the clustering settings (FACE_ASSETS_CLUSTER_*,
    FACE_ASSETS_MATCH_THRESHOLD) and the clustering mode (FACE_ASSETS_RECLUSTER_MODE, None
    takes the setting). A run's config may still override each knob (PersonClustersConfig)."""

    mode: str | None = None  # match_then_cluster or rebuild

    def params(self, model: str | None = None) -> ClusterParams:
        """The settings' knobs; those not set take the defaults of `model`'s embedding space (the
        library's, whatever embedder a resource names), else of the embedder setting's."""
        return get_settings().cluster_params(model)

    def resolved_mode(self) -> str:
        return get_settings(recluster_mode=self.mode).recluster_mode


class ThumbnailStoreResource(dg.ConfigurableResource):
    """Where face thumbnails go (THUMBNAIL_SAVE_PATH) and their size in pixels, and where the
    gallery page and the embedding map go (FACE_ASSETS_GALLERY_DIR); None takes the setting."""

    path: str | None = None
    thumbnail_px: int | None = None
    gallery_path: str | None = None
    map_method: str | None = None  # umap or pca (FACE_ASSETS_MAP_METHOD)

    def _settings(self) -> Settings:
        return get_settings(
            thumbnail_save_path=self.path, thumbnail_px=self.thumbnail_px, gallery_dir=self.gallery_path,
            map_method=self.map_method,
        )  # fmt: skip

    def gallery_map_method(self) -> str:
        return self._settings().map_method

    def gallery_folder(self) -> Path:
        return self._settings().resolved_gallery_dir()

    def folder(self) -> Path:
        return self._settings().resolved_thumbnail_dir()

    def px(self) -> int:
        return self._settings().thumbnail_px
