"""The gallery: a static HTML page of persons (opens from disk), and a 2-D map of the embeddings."""

from __future__ import annotations

import colorsys
import html
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from face_assets.core.files import partial_file, write_atomically
from face_assets.core.montage import montage_faces
from face_assets.core.storage.corrections import FaceRow
from face_assets.core.storage.store import FaceStore

logger = logging.getLogger(__name__)

CONTACT_SHEET = 48  # thumbnails shown per person
UNASSIGNED_SHOWN = 200
MAP_PX = (900, 640)
MAP_MAX_FACES = 5000


@dataclass(frozen=True)
class Gallery:
    page: Path
    persons: int
    unassigned: int


def project_2d(
    vectors: NDArray[np.float32], method: str, random_state: int = 0
) -> tuple[NDArray[np.float64], str]:
    """(n, 2) coordinates by UMAP (cosine) when asked and installed, else by PCA."""
    if len(vectors) < 3:
        return np.zeros((len(vectors), 2)), "none"
    if method == "umap" and len(vectors) >= 10:
        try:
            import umap

            reducer = umap.UMAP(
                n_components=2, metric="cosine", n_neighbors=min(15, len(vectors) - 1),
                random_state=random_state,
            )  # fmt: skip
            return np.asarray(reducer.fit_transform(vectors), dtype=np.float64), "umap"
        except ImportError:
            logger.info("umap-learn is not installed (extra `umap`); the map uses PCA")
    return _principal_axes(vectors), "pca"


def _principal_axes(vectors: NDArray[np.float32]) -> NDArray[np.float64]:
    """The vectors on their two principal axes (each axis's sign fixed by its largest loading,
    so a map does not flip between runs). Plain numpy: importing scikit-learn for a map would
    cost a command more than the map."""
    centred = vectors.astype(np.float64) - vectors.mean(axis=0, dtype=np.float64)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    axes = axes[:2]
    axes *= np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])[:, None]
    return centred @ axes.T


def _colour(person_id: int) -> tuple[int, int, int]:
    hue = (person_id * 0.618033988749895) % 1.0  # golden ratio: neighbouring ids differ
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.85)
    return int(r * 255), int(g * 255), int(b * 255)


def write_map(store: FaceStore, target: Path, method: str = "umap") -> str:
    """A PNG of every embedded face in 2-D, coloured by person (grey: unassigned).
    Returns the projection used."""
    data = store.face_embeddings()
    shown = np.arange(len(data.face_ids))
    if len(shown) > MAP_MAX_FACES:
        # A projection of every face would cost more than the clustering: a seeded sample shows the shape.
        shown = np.sort(np.random.default_rng(0).choice(len(shown), size=MAP_MAX_FACES, replace=False))
    person_ids = data.person_ids[shown]
    points, used = project_2d(data.vectors[shown], method)
    image = Image.new("RGB", MAP_PX, "white")
    draw = ImageDraw.Draw(image)
    if len(points):
        low, high = points.min(axis=0), points.max(axis=0)
        scale = np.where(high - low > 0, high - low, 1.0)
        xy = 20 + (points - low) / scale * (np.array(MAP_PX) - 40)
        order = np.argsort(person_ids >= 0, kind="stable")  # unassigned drawn first, below
        for index in order:
            x, y = xy[index]
            person = int(person_ids[index])
            fill = _colour(person) if person >= 0 else (190, 190, 190)
            draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=fill)
    sampled = f" (a sample of {len(data.face_ids)})" if len(shown) < len(data.face_ids) else ""
    draw.text((10, 6), f"{len(points)} faces{sampled}, {used}", fill=(60, 60, 60))
    with partial_file(target) as partial:
        image.save(partial, format="PNG")
        partial.replace(target)
    return used


def _img(src: Path, page_dir: Path, alt: str, css: str) -> str:
    relative = Path(os.path.relpath(src, page_dir)).as_posix()
    return f'<img class="{css}" src="{html.escape(relative)}" alt="{html.escape(alt)}" loading="lazy">'


def _tile(thumbnail_dir: Path, page_dir: Path, face: FaceRow, caption: str) -> str:
    image = _img(thumbnail_dir / str(face.thumbnail), page_dir, f"face {face.id}", "face")
    if not caption:
        return image
    title = html.escape(f"{face.path.name} at {caption}")
    return f'<figure class="tile" title="{title}">{image}<figcaption>{caption}</figcaption></figure>'


def write_gallery(store: FaceStore, thumbnail_dir: Path, page: Path, map_png: Path | None = None) -> Gallery:
    """`page`: one section per person (portrait, name, face count, contact sheet), unassigned last."""
    page_dir = page.parent
    page_dir.mkdir(parents=True, exist_ok=True)
    portraits, unassigned = store.gallery_thumbnails()
    sections = []
    persons = store.list_persons()
    faces_of = store.faces_by_person()
    for person in persons:
        faces = [f for f in faces_of.get(person.id, []) if f.thumbnail]
        portrait = portraits.get(person.id) or (faces[0].thumbnail if faces else None)
        # One tile per photo face and per video track, a video's with its time in the video.
        tiles = montage_faces(faces)
        sheet = "".join(_tile(thumbnail_dir, page_dir, f, caption) for f, caption in tiles[:CONTACT_SHEET])
        more = (
            f'<p class="more">and {len(tiles) - CONTACT_SHEET} more</p>' if len(tiles) > CONTACT_SHEET else ""
        )
        head = _img(thumbnail_dir / portrait, page_dir, "portrait", "portrait") if portrait else ""
        sections.append(
            f'<section class="person" id="person-{person.id}">{head}'
            f"<h2>{html.escape(person.name)}</h2><p>{person.faces} faces · Id {person.id}</p>"
            f'<div class="sheet">{sheet}</div>{more}</section>'
        )
    loose = "".join(
        _img(thumbnail_dir / t, page_dir, "unassigned face", "face") for t in unassigned[:UNASSIGNED_SHOWN]
    )
    sections.append(
        f'<section class="unassigned"><h2>Unassigned</h2><p>{len(unassigned)} faces wait for a person</p>'
        f'<div class="sheet">{loose}</div></section>'
    )
    figure = f"<figure>{_img(map_png, page_dir, 'map of the embeddings', 'map')}</figure>" if map_png else ""
    document = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>face_assets: persons</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
section {{ border-top: 1px solid #ddd; padding: 12px 0; }}
.portrait {{ float: left; width: 112px; height: 112px; margin-right: 16px; border-radius: 8px; }}
.sheet {{ clear: both; display: flex; flex-wrap: wrap; gap: 4px; padding-top: 8px; }}
.face {{ width: 56px; height: 56px; border-radius: 4px; }}
.tile {{ margin: 0; text-align: center; font-size: 11px; color: #555; }}
.map {{ max-width: 100%; border: 1px solid #ddd; }}
</style></head><body>
<h1>Persons</h1><p>{len(persons)} persons, {len(unassigned)} unassigned faces</p>{figure}
{"".join(sections)}
</body></html>
"""
    write_atomically(page, document.encode("utf-8"))
    return Gallery(page, len(persons), len(unassigned))


def refresh_gallery(
    store: FaceStore,
    thumbnail_dir: Path,
    gallery_dir: Path,
    map_method: str = "pca",
    redraw_map: bool = False,
) -> Gallery | None:
    """After a correction: the gallery page rewritten at once (new names, a forgotten person
    gone) rather than at the next clustering; the map too when faces left it. None when no
    gallery was written yet: a correction does not create one."""
    page, map_png = gallery_dir / "index.html", gallery_dir / "map.png"
    if not page.exists():
        return None
    if redraw_map or not map_png.exists():
        write_map(store, map_png, map_method)
    return write_gallery(store, thumbnail_dir, page, map_png)
