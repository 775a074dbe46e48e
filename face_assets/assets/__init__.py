"""The pipeline's assets, one module per step: media_items (register), faces (detect),
thumbnails, embeddings (embed), persons (match, cluster), gallery; and tuning, the model
fine-tuned on the library's labels, upstream of the embeddings (materialised on demand)."""

from face_assets.assets.embeddings import face_embeddings
from face_assets.assets.faces import detected_faces
from face_assets.assets.gallery import person_gallery
from face_assets.assets.media_items import media_items
from face_assets.assets.persons import face_persons, person_clusters
from face_assets.assets.thumbnails import face_thumbnails
from face_assets.assets.tuning import tuned_embedder

BATCH_ASSETS = [detected_faces, face_thumbnails, face_embeddings, face_persons]
ALL_ASSETS = [media_items, *BATCH_ASSETS, person_clusters, person_gallery, tuned_embedder]

__all__ = [
    "ALL_ASSETS",
    "BATCH_ASSETS",
    "media_items",
    "detected_faces",
    "face_thumbnails",
    "face_embeddings",
    "face_persons",
    "person_clusters",
    "person_gallery",
    "tuned_embedder",
]
