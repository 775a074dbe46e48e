"""Gallery: the static page of every person, drawn after each clustering."""

import dagster as dg

from face_assets.assets.persons import person_clusters
from face_assets.core.gallery import write_gallery
from face_assets.resources import FaceStoreResource, ThumbnailStoreResource


@dg.asset(group_name="persons", deps=[person_clusters])
def person_gallery(face_store: FaceStoreResource, thumbnails: ThumbnailStoreResource) -> dg.MaterializeResult:
    """A static HTML page of every person (portrait, name, face count, thumbnails), unassigned faces last."""
    folder = thumbnails.gallery_folder()
    gallery = write_gallery(
        face_store.get_store(), thumbnails.folder(), folder / "index.html", folder / "map.png"
    )
    return dg.MaterializeResult(
        metadata={
            "page": dg.MetadataValue.path(str(gallery.page)),
            "url": dg.MetadataValue.url(gallery.page.resolve().as_uri()),
            "persons": gallery.persons,
            "unassigned_faces": gallery.unassigned,
        }
    )
