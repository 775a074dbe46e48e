"""Persons at library scale: clustering time, memory and quality, and batch matching time.

    python scripts/benchmark_scale.py [--sizes 10000 100000 1000000] [--match-sizes 100000 1000000]
                                      [--backends sqlite postgresql] [--repeats 3] [--json PATH]
                                      [--batch-run-sizes 100000 1000000] [--skew 8 5 4 3 3]
                                      [--poor 10] [--knobs vote_slack=2 merge_link=-1] [--space fused]

Synthetic embeddings shaped like real ones. Persons are drawn with Zipf-like sizes (a few with
thousands of faces, most with a handful, many strangers seen once); each face is its person's
centre plus noise, in a 512-d space whose spectrum and common direction were fitted so that
the similarity distributions match those of FaceNet on the tuning set (lfw-tune, measured with
this product's detection and embedding; the table below prints both). Each face is its own
media item. `--skew` gives the five (or so) largest persons those percentages of the faces, the
rest drawn as without it: a library of one family, whose few persons hold most of the photos.
`--poor` makes that percentage of the faces poor (tiny or blurred): farther from their person
and alike each other whoever they are, as FaceNet makes faces of about 12 px (the tuning set
shrunk 8-fold by scripts/poor_faces.py; the table below prints both). Every face has a
thumbnail sharpness drawn as poor_faces.py measured it on sharp and on poor faces, and the
clustering leaves out those the product's gate does (ClusterParams.min_sharpness; `--knobs
min_sharpness=0` to see the library without it).
`--knobs` gives clustering parameters other values than their defaults (ClusterParams' field
names), to see what a knob does at scale on the same data. `--space fused` shapes the library
like FaceNet fused with dlib's ResNet instead (FACE_ASSETS_EMBEDDER=facenet+dlib: 640-d, fitted
to the same tuning set's fused figures, TUNING_SET_FUSED) and clusters and matches with that
embedder's defaults (FUSED_DEFAULTS); its poor faces are not fitted, so `--poor` refuses it.

Clustering: `plan_persons` on a library with no persons yet (the first, largest clustering),
in a fresh process per run for its peak memory (median of `--repeats` runs up to 100 000
faces); BCubed and pairwise precision, recall and F against the synthetic identities (faces
left unassigned count as singletons). At 20 000 faces the same data also goes
through exact all-pairs average linkage (scipy), the reference the graph methods must match.

Matching: a database (SQLite file, throwaway PostgreSQL server) holding N embedded faces in
their persons, with the persons' sums; then a batch of 100 new media items with 3 faces each is
matched by `match_new_faces`, the step a sensor-launched batch run takes. Median of `--repeats`
fresh batches.

Batch runs: a SQLite file holding N faces, then a batch of 100 new media items (small JPEG
files) run through `process_batch_job` as the sensor launches it, every step and asset check,
with stub models (2 faces per photo): the run's time without inference, which must not grow
with the library. Median of `--repeats` fresh batches, the seconds of each step, the rows the
run's statements returned, and the library-wide embedding check timed alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from face_assets_devtools.harness import ThrowawayDatabases, add_json_argument, peak_rss_mb, write_json

DIM = 512
# Fitted to the tuning set (see module docstring): common direction weight, spectrum exponents
# of the persons' centres and of a face's departure from its centre (both along the same
# directions: a face varies most where people differ most), noise scale and its per-person
# spread (log-normal sigma).
COMMON, CENTRE_SPECTRUM, NOISE_SPECTRUM, NOISE, NOISE_SPREAD = 0.3, 1.05, 0.9, 0.64, 0.35
STRANGERS = 0.15  # share of faces whose person appears once
# Poor faces (`--poor`): their noise times POOR_NOISE, plus a direction they all share of length
# POOR_COMMON, fitted to FaceNet on the tuning set's photos shrunk 8-fold (faces of about 12 px,
# blown up again), against the sharp photos (POOR_SHAPE).
POOR_NOISE, POOR_COMMON = 2.8, 1.2
# scripts/poor_faces.py on the tuning set, shrunk 8-fold: a poor face's similarity to its
# person's mean (of sharp faces), median and 10th percentile, and poor faces of different
# people, and of one person, compared with each other (mean).
POOR_SHAPE = {"own_median": 0.412, "own_p10": 0.231, "poor_different": 0.262, "poor_same": 0.541}
# Thumbnail sharpness (Faces.Sharpness), log-normal: median and sigma of the log, fitted to the
# percentiles poor_faces.py measured on the side that meets the gate (min_sharpness): the 5th
# and 50th of the tuning set (127, 273), the 50th and 95th of it shrunk 8-fold (13, 22).
SHARPNESS = {"sharp": (273.0, 0.47), "poor": (13.0, 0.32)}
CHEAP = 100_000  # clusterings of up to this many faces are timed --repeats times
# FaceNet on lfw-tune (6 360 faces, this product's preprocessing): cosine similarity.
TUNING_SET = {
    "same_mean": 0.713,
    "same_p5": 0.553,
    "diff_mean": 0.080,
    "diff_std": 0.141,
    "diff_p9999": 0.606,
    # The means of the 212 people with 5 or more faces, compared with each other: how alike
    # people are, which decides merges at library scale more than single faces do.
    "means_std": 0.152,
    "means_p99": 0.497,
}
# FaceNet fused with dlib's ResNet (FACE_ASSETS_EMBEDDER=facenet+dlib, face_assets/core/vision/
# fused.py) on the same faces, measured as TUNING_SET: similarity_shape of the labelled faces of
# cached_labelled(lfw-tune, its cache, "center", 2), all of them sampled, fused with
# second_embedder.with_dlib's vectors (sweep_clustering.py --fused does the same). Everything
# sits higher and narrower than in FaceNet (dlib's vectors share a large common part).
TUNING_SET_FUSED = {
    "same_mean": 0.904,
    "same_p5": 0.856,
    "diff_mean": 0.685,
    "diff_std": 0.049,
    "diff_p9999": 0.858,
    "means_std": 0.047,
    "means_p99": 0.860,
}


@dataclasses.dataclass(frozen=True)
class Space:
    """An embedding space the synthetic library is shaped like: the generator's constants (as
    DIM, COMMON, ... above), the tuning set's figures they were fitted to, and the constants of
    poor faces (POOR_NOISE, POOR_COMMON), None where they were not fitted."""

    name: str
    embedder: str  # FACE_ASSETS_EMBEDDER: the clustering defaults are this embedder's (defaults_for)
    model: str  # the synthetic faces' EmbeddingModel in a database (the store reads its dimension in it)
    dim: int
    common: float
    centre_spectrum: float
    noise_spectrum: float
    noise: float
    noise_spread: float
    tuning_set: dict[str, float]
    poor: tuple[float, float] | None


FACENET = Space(
    "facenet", "facenet", "synthetic", DIM, COMMON, CENTRE_SPECTRUM, NOISE_SPECTRUM, NOISE, NOISE_SPREAD,
    TUNING_SET, (POOR_NOISE, POOR_COMMON),
)  # fmt: skip
# Fitted by `--fit-space fused` (fit_space, from 0.87, 1.05, 0.9, 0.33, 0.35) to TUNING_SET_FUSED:
# a large common part, and a face's noise spread flatter than the centres' (diff_std and
# means_std pull apart otherwise). Poor faces are not fitted: that would need dlib run on the
# tuning set shrunk 8-fold, and --poor refuses the space.
FUSED = Space(
    "fused", "facenet+dlib", "synthetic+dlib", dim=640, common=0.883, centre_spectrum=1.064,
    noise_spectrum=0.416, noise=0.35, noise_spread=0.318, tuning_set=TUNING_SET_FUSED, poor=None,
)  # fmt: skip
SPACES = {space.name: space for space in (FACENET, FUSED)}


def _spectrum(exponent: float, dim: int = DIM) -> np.ndarray:
    """Per-dimension scale of a unit-variance vector whose variance falls as rank^-exponent."""
    weights = np.arange(1, dim + 1, dtype=np.float64) ** -exponent
    return np.sqrt(weights / weights.sum())


def poor_faces(count: int, seed: int, poor: float, space: Space = FACENET) -> tuple[np.ndarray, np.ndarray]:
    """Which faces are poor, and the direction they share (its own random stream: the library
    without poor faces is the same as before they existed)."""
    if poor and space.poor is None:
        raise ValueError(f"poor faces are not fitted in the {space.name} space")
    rng = np.random.default_rng([seed, 1])
    blur = rng.normal(size=space.dim) * _spectrum(space.centre_spectrum, space.dim)
    length = space.poor[1] if space.poor else 0.0
    return rng.random(count) < poor / 100, (length * blur / np.linalg.norm(blur)).astype(np.float32)


def drawn_sharpness(is_poor: np.ndarray, seed: int) -> np.ndarray:
    """Each face's thumbnail sharpness (SHARPNESS), from a random stream of its own."""
    rng = np.random.default_rng([seed, 2])
    median, sigma = (np.where(is_poor, SHARPNESS["poor"][k], SHARPNESS["sharp"][k]) for k in (0, 1))
    return (median * np.exp(sigma * rng.standard_normal(len(is_poor)))).astype(np.float32)


def synthetic_library(
    count: int, seed: int = 0, skew: tuple[float, ...] = (), poor: float = 0.0, space: Space = FACENET
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit vectors (count, dim) float32, identity per face, centres (n_identities, dim)) in
    `space` (512-d FaceNet's by default). `skew`: percentages of the faces held by the first
    persons, one each (the largest ones); `poor`: percentage of the faces that are poor (tiny
    or blurred), drawn at random."""
    rng = np.random.default_rng(seed)
    strangers = int(count * STRANGERS)
    largest = [int(count * share / 100) for share in skew]
    if sum(largest) > count - strangers:
        raise ValueError(f"--skew {skew}: more than the {100 - 100 * STRANGERS:.0f} % of faces not strangers")
    drawn = count - strangers - sum(largest)
    sizes: list[int] = []
    while sum(sizes) < drawn:
        sizes.append(int(min(rng.zipf(1.6), 5000)))
    if sizes:
        sizes[-1] -= sum(sizes) - drawn
    sizes = largest + [s for s in sizes if s > 0] + [1] * strangers
    dim = space.dim
    weights = _spectrum(space.centre_spectrum, dim)
    spread = _spectrum(space.noise_spectrum, dim).astype(np.float32)
    common = np.zeros(dim)
    common[-1] = 1.0  # along a direction of little spread, so it shifts every similarity alike
    centres = rng.normal(size=(len(sizes), dim)) * weights
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    centres = (space.common * common + np.sqrt(1 - space.common**2) * centres).astype(np.float32)
    identity = np.repeat(np.arange(len(sizes)), sizes)
    rng.shuffle(identity)
    noise = (space.noise * np.exp(space.noise_spread * rng.normal(size=len(sizes)))).astype(np.float32)
    is_poor, blur = poor_faces(count, seed, poor, space)
    poor_noise = space.poor[0] if space.poor else 1.0
    vectors = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, 50_000):  # float32 and bounded temporaries: the data is not the point
        part = identity[start : start + 50_000]
        bad = is_poor[start : start + 50_000, None]
        block = centres[part] + noise[part, None] * np.where(bad, poor_noise, 1.0).astype(
            np.float32
        ) * spread * rng.standard_normal(size=(len(part), dim), dtype=np.float32)
        block += np.where(bad, blur, 0.0).astype(np.float32)
        vectors[start : start + len(part)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return vectors, identity.astype(np.int64), centres


def similarity_shape(vectors: np.ndarray, identity: np.ndarray, sample: int = 4000) -> dict[str, float]:
    rng = np.random.default_rng(1)
    # Sample within persons of several faces so that same-person pairs are many.
    rows = rng.choice(len(vectors), size=min(sample, len(vectors)), replace=False)
    similarity = vectors[rows] @ vectors[rows].T
    upper = np.triu_indices(len(rows), 1)
    same = (identity[rows][:, None] == identity[rows][None, :])[upper]
    values = similarity[upper]
    # As many people of 5 or more faces as the tuning set has, their means compared.
    often = np.flatnonzero(np.bincount(identity) >= 5)
    often = rng.choice(often, size=min(212, len(often)), replace=False)
    order = np.argsort(identity, kind="stable")
    starts = np.searchsorted(identity[order], often)
    ends = np.searchsorted(identity[order], often, side="right")
    means = np.stack([vectors[order[a:b]].sum(axis=0) for a, b in zip(starts, ends, strict=True)])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    between = (means @ means.T)[np.triu_indices(len(means), 1)]
    return {
        "same_mean": float(values[same].mean()), "same_p5": float(np.percentile(values[same], 5)),
        "diff_mean": float(values[~same].mean()), "diff_std": float(values[~same].std()),
        "diff_p9999": float(np.percentile(values[~same], 99.99)),
        "means_std": float(between.std()), "means_p99": float(np.percentile(between, 99)),
    }  # fmt: skip


def fit_space(space: Space, count: int = 20_000) -> Space:
    """`space` with its generator's constants fitted (Nelder-Mead from its present ones) so that
    similarity_shape of a synthetic library of `count` faces matches its tuning set, every
    figure's error in units of the tuning set's diff_std (the width of the space)."""
    from scipy.optimize import minimize

    names = ("common", "centre_spectrum", "noise_spectrum", "noise", "noise_spread")
    target = space.tuning_set

    def trial(x: np.ndarray) -> Space:
        return dataclasses.replace(space, **dict(zip(names, np.round(x, 3).tolist(), strict=True)))

    def error(x: np.ndarray) -> float:
        if not (0 < x[0] < 1 and x[3] > 0 and x[4] >= 0):
            return 1e6
        shape = similarity_shape(*synthetic_library(count, space=trial(x))[:2])
        return sum(((shape[k] - target[k]) / target["diff_std"]) ** 2 for k in target)

    start = np.array([getattr(space, name) for name in names])
    best = minimize(error, start, method="Nelder-Mead", options={"xatol": 1e-3, "fatol": 1e-3, "maxfev": 300})
    return trial(best.x)


def poor_shape(count: int = 40_000, seed: int = 0) -> dict[str, float]:
    """POOR_SHAPE's figures on a synthetic library with 30 % poor faces."""
    vectors, identity, _ = synthetic_library(count, seed=seed, poor=30)
    poor, _ = poor_faces(count, seed, 30)
    return shape_of_poor(vectors, identity.astype(str), poor)


def shape_of_poor(vectors: np.ndarray, labels: np.ndarray, poor: np.ndarray) -> dict[str, float]:
    """POOR_SHAPE's figures: poor faces against the means of their people's sharp faces (people
    with 5 or more), and against each other (up to 2 000 of them)."""
    names, identity = np.unique(labels, return_inverse=True)
    sharp = np.bincount(identity[~poor], minlength=len(names))
    often = np.flatnonzero(sharp >= 5)
    means = np.zeros((len(names), vectors.shape[1]), dtype=np.float32)
    np.add.at(means, identity[~poor], vectors[~poor])
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    rows = np.flatnonzero(poor & np.isin(identity, often))
    own = np.einsum("ij,ij->i", vectors[rows], means[identity[rows]])
    sample = np.random.default_rng(0).permutation(np.flatnonzero(poor))[:2000]
    similarity = vectors[sample] @ vectors[sample].T
    upper = np.triu_indices(len(sample), 1)
    same = (identity[sample][:, None] == identity[sample][None, :])[upper]
    return {
        "own_median": float(np.median(own)), "own_p10": float(np.percentile(own, 10)),
        "poor_different": float(similarity[upper][~same].mean()),
        "poor_same": float(similarity[upper][same].mean()),
    }  # fmt: skip


def _scores(identity: np.ndarray, persons: np.ndarray) -> dict[str, float]:
    from face_assets.core.evaluation import score_clusters

    predicted = [None if p < 0 else int(p) for p in persons]
    scores = score_clusters([str(i) for i in identity], predicted)
    return {
        "bcubed_p": scores.bcubed_precision, "bcubed_r": scores.bcubed_recall, "bcubed_f": scores.bcubed_f,
        "pairwise_p": scores.pairwise_precision, "pairwise_r": scores.pairwise_recall,
        "pairwise_f": scores.pairwise_f, "unassigned": float((persons < 0).mean()),
    }  # fmt: skip


def cluster_once(
    count: int,
    method: str,
    skew: tuple[float, ...] = (),
    knobs: dict[str, str] | None = None,
    poor: float = 0.0,
    space: Space = FACENET,
) -> dict[str, Any]:
    """One clustering in this process, with `space`'s embedder's defaults: seconds, peak memory,
    quality. Faces the product's gate leaves out (too poor, by their sharpness) are not
    clustered but are scored, unassigned."""
    from face_assets.core.clustering.cluster import _drop_small, exact_average_linkage
    from face_assets.core.clustering.params import with_overrides
    from face_assets.core.person import plan_persons

    vectors, identity, _ = synthetic_library(count, skew=skew, poor=poor, space=space)
    sharpness = drawn_sharpness(poor_faces(count, 0, poor, space)[0], 0)
    before_mb = peak_rss_mb()
    params = space_params(space)
    rows = np.arange(count)
    started = time.perf_counter()
    cpu_started = time.process_time()
    if method == "exact-average-linkage":
        persons = _drop_small(exact_average_linkage(vectors, params.link_threshold), params.min_cluster_size)
    else:
        algorithm = params.algorithm if method == "default" else method
        params = with_overrides(space_params(space, algorithm=algorithm), knobs or {})
        rows = np.flatnonzero(~params.too_poor(sharpness))
        clustered = vectors if len(rows) == count else vectors[rows]  # a copy only when some are left out
        _, groups, _ = plan_persons(
            np.arange(len(rows), dtype=np.int64), np.full(len(rows), -1, dtype=np.int64),
            np.zeros(len(rows), dtype=bool), clustered, params,
        )  # fmt: skip
        persons = np.full(count, -1, dtype=np.int64)
        for label, members in enumerate(groups):
            persons[rows[members]] = label
    seconds = time.perf_counter() - started
    return {
        "faces": count, "method": method, "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu_started, "peak_mb": peak_rss_mb(), "data_mb": before_mb,
        "persons": int(len(np.unique(persons[persons >= 0]))),
        "identities": int(len(np.unique(identity))), "largest_person": int(np.bincount(identity).max()),
        "skew": list(skew), "poor": poor, "too_poor": count - len(rows), "knobs": knobs or {},
        "space": space.name,
        **_scores(identity, persons),
    }  # fmt: skip


def space_params(space: Space, **fields: Any) -> Any:
    """ClusterParams with the defaults of `space`'s embedder (FUSED_DEFAULTS for the fusion)."""
    from face_assets.core.clustering.params import ClusterParams, defaults_for

    return ClusterParams(**{**defaults_for(space.embedder), **fields})


def _in_fresh_process(count: int, method: str, options: list[str]) -> dict[str, Any]:
    """`cluster_once` in a process of its own, given the command line's data options."""
    command = [sys.executable, __file__, "--one-clustering", str(count), method, *options]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_library(
    url: str, count: int, model: str | None = None, space: Space = FACENET
) -> tuple[Any, np.ndarray, np.ndarray]:
    """A database with `count` embedded faces (one media item each) in persons with sums, as a
    clustering leaves it: identities of 3 faces or more are persons, the rest unassigned. The
    faces are in `space`, `model`'s (by default the space's synthetic one): a batch run embeds
    its own with the stub model, never mixed with another's."""
    from face_assets.core.storage.codecs import encode_embedding
    from face_assets.core.storage.schema import FacesTable, MediaFileTable, MediaItemsTable, PersonsTable
    from face_assets.core.storage.store import FaceStore
    from face_assets_devtools.library import fix_sequences, insert_rows

    vectors, identity, centres = synthetic_library(count, space=space)
    store = FaceStore.from_url(url, upgrade=True)
    sizes = np.bincount(identity)
    person_of_identity = np.full(len(sizes), -1, dtype=np.int64)
    kept = np.flatnonzero(sizes >= 3)
    person_of_identity[kept] = np.arange(1, len(kept) + 1)
    sums = np.zeros((len(sizes), space.dim), dtype=np.float64)
    np.add.at(sums, identity, vectors)
    chunk = 5000
    with store.engine.begin() as conn:
        for start in range(0, len(kept), chunk):
            part = kept[start : start + chunk]
            insert_rows(
                conn, PersonsTable,
                [{"Id": int(person_of_identity[i]), "Name": f"Person {person_of_identity[i]}",
                  "Type": "cluster", "EmbeddingSum": encode_embedding(sums[i].astype(np.float32)),
                  "EmbeddingCount": int(sizes[i])} for i in part],
            )  # fmt: skip
    person = np.where(person_of_identity[identity] >= 0, person_of_identity[identity], -1)
    for start in range(0, count, chunk):
        rows = range(start, min(start + chunk, count))
        with store.engine.begin() as conn:
            insert_rows(
                conn, MediaFileTable,
                [{"Id": r + 1, "FilePath": "/library", "FileName": f"{r:07d}.jpg", "PathKey": f"{r:064d}"}
                 for r in rows],
            )  # fmt: skip
            insert_rows(
                conn, MediaItemsTable,
                [{"Id": r + 1, "MediaFileId": r + 1, "Name": f"{r:07d}.jpg", "IsFacesExtracted": True}
                 for r in rows],
            )  # fmt: skip
            insert_rows(
                conn, FacesTable,
                [{"Id": r + 1, "MediaItemId": r + 1, "BoundingBox": "[10, 10, 90, 90]",
                  "Embedding": encode_embedding(vectors[r]), "EmbeddingModel": model or space.model,
                  "PersonId": None if person[r] < 0 else int(person[r]),
                  "PersonAssignedBy": "cluster" if person[r] >= 0 else "noise",
                  "IsRejected": False} for r in rows],
            )  # fmt: skip
    fix_sequences(store)
    return store, centres[kept], person_of_identity[kept]


def match_batches(
    store: Any, centres: np.ndarray, repeats: int, folder: Path, space: Space = FACENET
) -> list[float]:
    """Seconds to match each of `repeats` fresh batches of 100 media items x 3 faces."""
    from face_assets.core.person import match_new_faces
    from face_assets.core.vision.types import DetectedFace

    rng = np.random.default_rng(7)
    faces = [
        DetectedFace((10.0 + 60 * k, 20.0, 50.0 + 60 * k, 80.0), 0.99, ((20.0, 40.0),) * 5) for k in range(3)
    ]
    timings = []
    for repeat in range(repeats):
        items = []
        for n in range(100):
            item = store.register_media_file(folder / f"batch{repeat}-{n:03d}.jpg", "JPEG", 1000)
            store.save_detection(item, faces, "synthetic", (640, 480))
            items.append(item)
        records = store.faces_without_embedding((min(items), max(items)))
        who = rng.choice(len(centres), size=len(records))
        vectors = centres[who] + space.noise * _spectrum(space.noise_spectrum, space.dim) * rng.normal(
            size=(len(records), space.dim)
        )
        vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
        store.save_embeddings([r.id for r in records], vectors, space.model)
        started = time.perf_counter()
        match = match_new_faces(store, space_params(space), (min(items), max(items)))
        timings.append(time.perf_counter() - started)
        assert match.faces == len(records), match
    return timings


def matching(backend: str, count: int, repeats: int, space: Space = FACENET) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, ThrowawayDatabases(backend) as databases:
        url = databases.new(Path(tmp) / "library.db")
        started = time.perf_counter()
        store, centres, _ = build_library(url, count, space=space)
        built = time.perf_counter() - started
        timings = match_batches(store, centres, repeats, Path(tmp), space)
        store.dispose()
    return {"backend": backend, "faces": count, "build_seconds": built,
            "match_seconds_median": statistics.median(timings), "match_seconds": timings}  # fmt: skip


def batch_runs(count: int, repeats: int) -> dict[str, Any]:
    """A SQLite library of `count` faces, then `repeats` fresh batches of 100 new media items
    (real small JPEG files), each run through process_batch_job: detection, thumbnails,
    embeddings, matching and the batch's checks, as a sensor-launched run does, with stub
    models (2 faces per photo) so that the time is the pipeline's, not the models'. One more
    batch is run with every statement's returned rows counted; and the library-wide embedding
    check, which every batch ran before checks looked at their batch only, is timed alone."""
    from face_assets.core.vision.stub import STUB
    from face_assets_devtools.library import add_batch, counting_reads, run_batch

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        store, _, _ = build_library(f"sqlite:///{tmp}/library.db", count, STUB)
        built = time.perf_counter() - started
        timings, steps = [], []
        for repeat in range(repeats):
            first, last = add_batch(store, Path(tmp) / "photos", 100, tag=f"batch{repeat}")
            run = run_batch(store, first, last, Path(tmp) / "thumbnails")
            assert run.result.success, f"batch run {repeat} failed"
            timings.append(run.seconds)
            steps.append(_step_seconds(run.result))
        first, last = add_batch(store, Path(tmp) / "photos", 100, tag="counted")
        with counting_reads(store.engine) as reads:
            assert run_batch(store, first, last, Path(tmp) / "thumbnails").result.success
        started = time.perf_counter()
        checked, _ = store.embedding_problems()
        library_check = time.perf_counter() - started
        persons = store.counts()["persons"]
        store.dispose()
    median = sorted(range(repeats), key=lambda i: timings[i])[repeats // 2]
    return {"faces": count, "persons": persons, "build_seconds": built,
            "batch_seconds_median": statistics.median(timings), "batch_seconds": timings,
            "step_seconds": steps[median], "statements": reads.statements, "rows_returned": reads.rows,
            "rows_from_persons": sum(sum(r) for q, r in reads.by_statement.items() if ' FROM "Persons"' in q),
            "library_check_seconds": library_check, "library_check_embeddings": checked}  # fmt: skip


def _step_seconds(result: Any) -> dict[str, float]:
    """Seconds of each step of a run: its assets and checks."""
    return {
        event.step_key: event.event_specific_data.duration_ms / 1000
        for event in result.all_events
        if event.event_type_value == "STEP_SUCCESS"
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--methods", nargs="+", default=["default", "agglomerative"])
    parser.add_argument("--reference-size", type=int, default=20_000, help="0: skip exact linkage")
    parser.add_argument("--match-sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--batch-run-sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--skew", type=float, nargs="*", default=[],
        help="percentages of the faces held by the largest persons of the clusterings, e.g. 8 5 4 3 3",
    )  # fmt: skip
    parser.add_argument(
        "--poor", type=float, default=0.0, metavar="PERCENT",
        help="this percentage of the clusterings' faces poor (tiny or blurred, POOR_SHAPE), e.g. 10",
    )  # fmt: skip
    parser.add_argument(
        "--knobs", nargs="*", default=[], metavar="NAME=VALUE",
        help="clustering parameters other than the defaults, e.g. vote_slack=2 merge_link=-1",
    )  # fmt: skip
    parser.add_argument(
        "--space", choices=sorted(SPACES), default="facenet",
        help="the embeddings imitated, with that embedder's clustering defaults: FaceNet's, or FaceNet "
        "fused with dlib's ResNet (FACE_ASSETS_EMBEDDER=facenet+dlib); batch runs are FaceNet's always",
    )  # fmt: skip
    add_json_argument(parser)
    parser.add_argument("--one-clustering", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--fit-space", choices=sorted(SPACES), help=argparse.SUPPRESS)  # fit_space, printed
    args = parser.parse_args()
    knobs = dict(knob.partition("=")[::2] for knob in args.knobs)
    space = SPACES[args.space]
    from face_assets.core.clustering.params import with_overrides

    try:
        with_overrides(space_params(space), knobs)
    except ValueError as error:  # pydantic's ValidationError is one
        parser.error(f"--knobs {' '.join(args.knobs)}: {str(error).splitlines()[0]}")
    if args.poor and space.poor is None:
        parser.error(f"--poor: poor faces are fitted in FaceNet's space only, not --space {space.name}")
    if args.fit_space:
        fitted = fit_space(SPACES[args.fit_space])
        print(fitted)
        print(similarity_shape(*synthetic_library(20_000, space=fitted)[:2]))
        return 0
    if args.one_clustering:
        count, method = int(args.one_clustering[0]), args.one_clustering[1]
        print(json.dumps(cluster_once(count, method, tuple(args.skew), knobs, args.poor, space)))
        return 0

    report: dict[str, Any] = {"clustering": [], "matching": [], "space": space.name}
    vectors, identity, _ = synthetic_library(20_000, space=space)
    tuning_set = space.tuning_set
    report["similarity"] = {"synthetic": similarity_shape(vectors, identity), "tuning_set": tuning_set}
    print(f"space: {space.name} ({space.dim}-d, clustering defaults of {space.embedder})")
    print("cosine similarity   " + "  ".join(f"{k:>10}" for k in tuning_set))
    for name, shape in (("tuning set", tuning_set), ("synthetic", report["similarity"]["synthetic"])):
        print(f"{name:<19} " + "  ".join(f"{shape[k]:>10.3f}" for k in tuning_set))
    if args.poor:
        report["similarity"]["poor"] = {"synthetic": poor_shape(), "tuning_set": POOR_SHAPE}
        print("poor faces          " + "  ".join(f"{k:>14}" for k in POOR_SHAPE))
        for name, shape in (
            ("tuning set, 8x", POOR_SHAPE),
            ("synthetic", report["similarity"]["poor"]["synthetic"]),
        ):
            print(f"{name:<19} " + "  ".join(f"{shape[k]:>14.3f}" for k in POOR_SHAPE))
    print()
    runs = [(n, m) for n in args.sizes for m in args.methods]
    options = ["--skew", *map(str, args.skew)] if args.skew else []
    options += ["--poor", str(args.poor)] if args.poor else []
    options += ["--knobs", *args.knobs] if args.knobs else []
    options += ["--space", space.name]
    if args.reference_size:
        runs = [(args.reference_size, m) for m in [*args.methods, "exact-average-linkage"]] + runs
    if runs:
        if args.skew:
            print(f"skew: the largest persons hold {', '.join(f'{s:g}' for s in args.skew)} % of the faces")
        if args.poor:
            print(f"poor: {args.poor:g} % of the faces tiny or blurred")
        if knobs:
            print("knobs: " + ", ".join(f"{k}={v}" for k, v in knobs.items()))
        print(f"{'faces':>9} {'method':<22} {'seconds':>8} {'cpu s':>8} {'peak MB':>8} {'BCubed P':>8} "
              f"{'BCubed F':>8} {'pair P':>7} {'pair R':>7} {'pair F':>7} {'persons':>8} "
              f"{'identities':>10} {'largest':>8} {'too poor':>8}")  # fmt: skip
    for count, method in runs:
        # Fresh processes; the median of `--repeats` where a run is cheap (the result is the
        # same every time, only the seconds vary).
        tries = [
            _in_fresh_process(count, method, options) for _ in range(args.repeats if count <= CHEAP else 1)
        ]
        row = sorted(tries, key=lambda r: r["seconds"])[len(tries) // 2]
        row["seconds_each"] = [r["seconds"] for r in tries]
        report["clustering"].append(row)
        print(f"{count:>9} {method:<22} {row['seconds']:>8.1f} {row['cpu_seconds']:>8.1f} "
              f"{row['peak_mb']:>8.0f} {row['bcubed_p']:>8.3f} {row['bcubed_f']:>8.3f} "
              f"{row['pairwise_p']:>7.3f} {row['pairwise_r']:>7.3f} {row['pairwise_f']:>7.3f} "
              f"{row['persons']:>8} {row['identities']:>10} {row['largest_person']:>8} "
              f"{row['too_poor']:>8}")  # fmt: skip
        sys.stdout.flush()
    if args.match_sizes:
        print()
        print(f"{'backend':<11} {'faces':>9} {'build s':>8} {'match s (median)':>17}  each")
    for count in args.match_sizes:
        for backend in args.backends:
            row = matching(backend, count, args.repeats, space)
            report["matching"].append(row)
            each = " ".join(f"{t:.3f}" for t in row["match_seconds"])
            print(f"{backend:<11} {count:>9} {row['build_seconds']:>8.0f} "
                  f"{row['match_seconds_median']:>17.3f}  {each}")  # fmt: skip
            sys.stdout.flush()
    if args.batch_run_sizes:
        print()
        print(f"{'faces':>9} {'persons':>8} {'build s':>8} {'batch run s (median)':>21}  each   "
              "rows returned (from Persons)  library-wide check s")  # fmt: skip
    report["batch_runs"] = []
    for count in args.batch_run_sizes:
        row = batch_runs(count, args.repeats)
        report["batch_runs"].append(row)
        each = " ".join(f"{t:.2f}" for t in row["batch_seconds"])
        print(f"{count:>9} {row['persons']:>8} {row['build_seconds']:>8.0f} "
              f"{row['batch_seconds_median']:>21.2f}  {each}  {row['rows_returned']:>8} "
              f"({row['rows_from_persons']})  {row['library_check_seconds']:.2f}")  # fmt: skip
        print("  steps: " + ", ".join(f"{k} {v:.2f}" for k, v in row["step_seconds"].items()))
        sys.stdout.flush()
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
