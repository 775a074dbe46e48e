from face_assets.assets.embeddings import face_embeddings
from face_assets.assets.faces import detected_faces, face_thumbnails, media_items
from face_assets.assets.persons import person_clusters

__all__ = ["media_items", "detected_faces", "face_thumbnails", "face_embeddings", "person_clusters"]
