"""The 2-D map and the gallery page, on a small store written through the store API."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from face_assets.core import correction
from face_assets.core.clustering.cluster import ClusterParams
from face_assets.core.gallery import project_2d, write_gallery, write_map
from face_assets.core.person import update_persons
from face_assets.core.storage.store import FaceStore
from face_assets_tests.core_tests.synthetic import identities
from face_assets_tests.core_tests.test_correction import add_faces


@pytest.fixture
def store(tmp_path: Path, db_url: str) -> FaceStore:
    store = FaceStore.from_url(db_url, upgrade=True)
    vectors, _ = identities(seed=8, k=3, n=5)
    stranger = np.random.default_rng(1).normal(size=(1, 512)).astype(np.float32)
    add_faces(store, tmp_path / "photos", np.vstack([vectors, stranger / np.linalg.norm(stranger)]))
    update_persons(store, ClusterParams())
    return store


# UMAP: numba compiles it first, seconds of CPU (the full suite).
@pytest.mark.parametrize("method", ["pca", pytest.param("umap", marks=pytest.mark.slow)])
def test_map_is_a_png_of_every_face(store: FaceStore, tmp_path: Path, method: str) -> None:
    used = write_map(store, tmp_path / "map.png", method)
    assert used == method
    with Image.open(tmp_path / "map.png") as image:
        assert image.format == "PNG" and image.size == (900, 640)
        colours = {c for _, c in image.getcolors(maxcolors=100_000)}
    assert len(colours) >= 5  # white, grey for the stranger, one colour per person, text


def test_projection_keeps_identities_apart() -> None:
    vectors, truth = identities(seed=2, k=3, n=8)
    points, _ = project_2d(vectors, "pca")
    centres = np.array([points[truth == k].mean(axis=0) for k in range(3)])
    spread = max(np.linalg.norm(points[truth == k] - centres[k], axis=1).mean() for k in range(3))
    gaps = [np.linalg.norm(centres[a] - centres[b]) for a in range(3) for b in range(a + 1, 3)]
    assert min(gaps) > spread


def test_gallery_has_a_section_per_person_and_unassigned_last(store: FaceStore, tmp_path: Path) -> None:
    thumbnails = tmp_path / "thumbnails"
    faces = store.faces_without_thumbnail()
    for face in faces:
        (thumbnails / f"{face.id}.jpg").parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(thumbnails / f"{face.id}.jpg")
    store.save_thumbnails([(f.id, f"{f.id}.jpg", f"{f.id}.jpg") for f in faces])
    correction.rename_person(store, correction.list_persons(store)[0].id, "Ada <Lovelace>")

    gallery = write_gallery(store, thumbnails, tmp_path / "site" / "index.html")

    page = gallery.page.read_text()
    assert gallery.persons == 3 and gallery.unassigned == 1
    assert page.count('<section class="person"') == 3
    assert page.index('class="unassigned"') > page.rindex('class="person"')
    assert "Ada &lt;Lovelace&gt;" in page  # names are escaped
    assert 'src="../thumbnails/' in page  # relative: opens from disk
