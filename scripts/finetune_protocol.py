"""The fine-tuning protocol: what a model tuned on a user's labels gains on the people labelled,
and what it costs the people it never saw.

    python scripts/finetune_protocol.py DIR [--cache FILE.db] [--hidden N] [--json PATH]

DIR is the tuning set (`persons/<identity>/`, `distractors/<identity>/`). Its people with 5 or
more photos, sorted by name, are split in two by a fixed rule: every other one is "known".
Each known person's photos, sorted by file name, give their first half as the labels and the
rest as "new photos". The other half of the people and the distractors are "unknown". The
projection is trained on the labels alone (a fifth of their identities held out for early
stopping), then base and tuned embeddings are compared:

- new photos of known people clustered as a first clustering does (BCubed P/R/F, pairwise F),
  and matched to the known persons (the mean of each one's labelled faces): the recall at the
  highest threshold whose precision is 0.99 or more;
- unknown people clustered (BCubed P/R/F);
- seconds to fine-tune, seconds to re-embed 10,000 faces from their stored base embeddings,
  peak memory.

Then (with `--cache`) the labels the way users give them: the labels' photos as a library,
clustered by `face-assets recluster`, 20 persons named (`persons rename`) and 50 faces moved
into them (`faces move`), `face-assets finetune` on the library; the same figures, `users_*`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from face_assets.core.clustering.cluster import ClusterParams
from face_assets.core.clustering.vectors import l2_normalize
from face_assets.core.evaluation import FREQUENT, score_clusters
from face_assets.core.storage.store import FaceStore
from face_assets.core.tuning.triplet import TrainingParams, train_projection
from face_assets_devtools.harness import add_json_argument, peak_rss_mb, print_report, write_json
from face_assets_devtools.labelled import cached_labelled, persons_for

VALIDATION_SHARE = 0.2
# FaceNet's pooled features: the input of its last block (the 1792 -> 512 bottleneck).
POOLED = "InceptionResnetV1/Logits/Flatten/flatten/Reshape:0"


def split(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Row masks: labels, new photos of known people, unknown people's faces."""
    labels, paths = data["labels"], data["paths"]
    labelled = labels != ""
    frequent = labelled & (data["photos_of_label"] >= FREQUENT) & np.array(["/persons/" in p for p in paths])
    people = sorted(set(labels[frequent].tolist()))
    known_people = set(people[0::2])
    known = np.array([label in known_people for label in labels]) & frequent
    first_half = np.zeros(len(labels), dtype=bool)
    for person in known_people:
        rows = np.flatnonzero(known & (labels == person))
        rows = rows[np.argsort(paths[rows].astype(str), kind="stable")]
        first_half[rows[: len(rows) // 2]] = True
    return {
        "labels": first_half,
        "new": known & ~first_half,
        "unknown": labelled & ~known,
    }


def clustered(vectors: np.ndarray, data: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, float]:
    subset = {"vectors": vectors[rows], "media_item_ids": data["media_item_ids"][rows]}
    persons = persons_for(subset, ClusterParams())
    scores = score_clusters(data["labels"][rows].tolist(), [None if p < 0 else int(p) for p in persons])
    return {
        "bcubed_p": round(scores.bcubed_precision, 4),
        "bcubed_r": round(scores.bcubed_recall, 4),
        "bcubed_f": round(scores.bcubed_f, 4),
        "pair_f": round(scores.pairwise_f, 4),
    }


def matched(vectors: np.ndarray, data: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> float:
    """Recall of new photos matched to the known persons at precision 0.99 or more."""
    labels = data["labels"]
    people = sorted(set(labels[masks["labels"]].tolist()))
    means = [vectors[masks["labels"] & (labels == person)].mean(axis=0) for person in people]
    centroids = l2_normalize(np.stack(means))
    new = np.flatnonzero(masks["new"])
    similarity = vectors[new] @ centroids.T
    best = similarity.argmax(axis=1)
    right = np.array(people)[best] == labels[new]
    order = np.argsort(-similarity.max(axis=1), kind="stable")
    hits = np.cumsum(right[order])
    good = np.flatnonzero(hits / np.arange(1, len(order) + 1) >= 0.99)
    return round(float(hits[good[-1]] / len(new)) if len(good) else 0.0, 4)


def scores(
    tuned: np.ndarray,
    data: dict[str, np.ndarray],
    masks: dict[str, np.ndarray],
    base: dict[str, dict[str, float]],
) -> dict[str, float]:
    """A tuned model's figures, and how they compare with the base model's (`base`)."""
    found: dict[str, float] = {}
    for part in ("new", "unknown"):
        for key, value in clustered(tuned, data, np.flatnonzero(masks[part])).items():
            found[f"{part}_{key}"] = value
    found["new_matched_recall"] = matched(tuned, data, masks)
    found["new_error_reduction"] = round(1 - (1 - found["new_bcubed_f"]) / (1 - base["new"]["bcubed_f"]), 3)
    found["unknown_bcubed_f_change"] = round(found["unknown_bcubed_f"] - base["unknown"]["bcubed_f"], 4)
    return found


def cli(*args: str, env: dict[str, str]) -> str:
    """`face-assets ARGS` as a user types it; its standard output."""
    done = subprocess.run(
        [sys.executable, "-m", "face_assets.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"face-assets {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def user_labels(
    cache: Path, data: dict[str, np.ndarray], masks: dict[str, np.ndarray], work: Path, names: int, moves: int
) -> tuple[str, list[str], int]:
    """Labels the way users give them: the labels' photos as a library, clustered; the `names`
    largest persons named after the identity most of their faces have; `moves` faces of those
    identities that the clustering left out or put elsewhere moved into their person; then
    `face-assets finetune` on the library. Every step through the command line. The model's
    name, the identities named and the faces moved."""
    from face_assets.core.storage.store import FaceStore

    library = work / "library.db"
    shutil.copy(cache, library)  # every photo's faces and base embeddings, no persons yet
    keep = [int(i) for i in np.unique(data["media_item_ids"][masks["labels"]])]
    conn = sqlite3.connect(library)
    conn.execute(f'DELETE FROM "Faces" WHERE "MediaItemId" NOT IN ({",".join(map(str, keep))})')
    conn.execute(f'DELETE FROM "MediaItems" WHERE "Id" NOT IN ({",".join(map(str, keep))})')
    conn.commit()
    conn.close()
    env = {"DATABASE_URL": f"sqlite:///{library}", "FACE_ASSETS_DATA_DIR": str(work / "data"),
           "FACE_ASSETS_MODELS_DIR": str(work / "models")}  # fmt: skip
    cli("recluster", env=env)
    label_of = {int(f): str(label) for f, label in zip(data["face_ids"], data["labels"], strict=True)}
    store = FaceStore.from_url(env["DATABASE_URL"])
    persons = store.faces_by_person()
    store.dispose()
    named: dict[str, int] = {}
    for person, faces in sorted(persons.items(), key=lambda item: -len(item[1])):
        labels = [label_of.get(face.id, "") for face in faces]
        majority = max(set(labels), key=labels.count)
        if majority and majority not in named:
            cli("persons", "rename", str(person), majority, env=env)
            named[majority] = person
        if len(named) == names:
            break
    person_of = {face.id: person for person, faces in persons.items() for face in faces}
    moved = 0
    for row in np.flatnonzero(masks["labels"]):
        face, label = int(data["face_ids"][row]), str(data["labels"][row])
        if moved == moves:
            break
        if label in named and person_of.get(face) != named[label]:
            cli("faces", "move", str(face), str(named[label]), "--force", env=env)
            moved += 1
    model = cli("finetune", env=env).strip().splitlines()[-1]
    return model, sorted(named), moved


def pooled_features(
    cache: Path, face_ids: np.ndarray, models_dir: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FaceNet's pooled features (1792-d, the input of its last block) of the cached faces, by
    the TensorFlow graph, and the last block (the bottleneck with its batch norm folded in) as a
    matrix and an offset: normalise(features @ A + c) is the base model's embedding."""
    from face_assets.core.vision import graphs, weights
    from face_assets.core.vision.lazy import import_tensorflow
    from face_assets.core.vision.media import open_media
    from face_assets.core.vision.transforms import embedding_crop

    tf = import_tensorflow()
    from tensorflow.python.framework import tensor_util

    graph_def = graphs.read_graph_def(weights.resolve(weights.FACENET_GRAPH, models_dir))
    graphs._facenet_any_batch(graph_def)
    node = {n.name: n for n in graph_def.node}

    def constant(name: str) -> np.ndarray:
        return tensor_util.MakeNdarray(node[f"InceptionResnetV1/Bottleneck/{name}"].attr["value"].tensor)

    epsilon = node["InceptionResnetV1/Bottleneck/BatchNorm/cond/FusedBatchNorm_1"].attr["epsilon"].f
    scale = 1.0 / np.sqrt(constant("BatchNorm/moving_variance") + epsilon)
    matrix = (constant("weights") * scale).astype(np.float32)
    offset = (constant("BatchNorm/beta") - constant("BatchNorm/moving_mean") * scale).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    session = tf.compat.v1.Session(graph=graph)
    store = FaceStore.from_url(f"sqlite:///{cache}")
    items, faces = store.media_items_by_path(), store.faces_of_media_items()
    store.dispose()
    wanted = {int(face) for face in face_ids}
    found: dict[int, np.ndarray] = {}
    crops: list[np.ndarray] = []
    ids: list[int] = []

    def flush() -> None:
        pooled = session.run(
            "InceptionResnetV1/Logits/Flatten/flatten/Reshape:0", {"input:0": np.stack(crops)}
        )
        found.update(zip(ids, pooled, strict=True))
        crops.clear()
        ids.clear()

    for path, item in items.items():
        chosen = [face for face in faces.get(item, []) if face["id"] in wanted]
        if chosen:
            image = open_media(path)
            crops.extend(embedding_crop(image, tuple(face["box_xyxy"]), 160) for face in chosen)  # type: ignore[arg-type]
            ids.extend(face["id"] for face in chosen)
        if len(crops) >= 64:
            flush()
    if crops:
        flush()
    return np.stack([found[int(face)] for face in face_ids]).astype(np.float32), matrix, offset


def train_last_block(
    features: np.ndarray,
    identities: np.ndarray,
    held: np.ndarray,
    matrix: np.ndarray,
    offset: np.ndarray,
    params: TrainingParams,
) -> tuple[np.ndarray, np.ndarray]:
    """The last block trained instead of a projection: the same triplet loss, batches, Adam and
    held-out rule as train_projection, the weights pulled towards FaceNet's own."""
    from face_assets.core.tuning.triplet import Adam, batches, normalised_triplet_gradient, triplet_loss

    rng = np.random.default_rng(params.seed)
    weights = [matrix.copy(), offset.copy()]
    optimizer = Adam(weights, params.learning_rate)
    train_x, train_ids = features[~held], identities[~held]
    held_x, held_ids = features[held], identities[held]
    before = triplet_loss(l2_normalize(held_x @ matrix + offset), held_ids, params.margin)
    best = [w.copy() for w in weights]
    for _ in range(params.max_epochs):
        for rows in batches(train_ids, params, rng):
            x = train_x[rows]
            *_, grad_z = normalised_triplet_gradient(
                x @ weights[0] + weights[1], train_ids[rows], params.margin
            )
            decay = 2.0 * params.weight_decay
            gradients = [
                x.T @ grad_z + decay * (weights[0] - matrix),
                grad_z.sum(axis=0) + decay * (weights[1] - offset),
            ]
            optimizer.step(weights, [g.astype(np.float32) for g in gradients])
        if triplet_loss(l2_normalize(held_x @ weights[0] + weights[1]), held_ids, params.margin) <= before:
            best = [w.copy() for w in weights]
    return best[0], best[1]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", type=Path)
    parser.add_argument("--cache", type=Path, help="SQLite file of the embeddings (default: a temporary one)")
    parser.add_argument("--hidden", type=int, default=TrainingParams().hidden, help="the projection's width")
    parser.add_argument("--margin", type=float, default=TrainingParams().margin)
    parser.add_argument("--weight-decay", type=float, default=TrainingParams().weight_decay)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one training per seed")
    parser.add_argument(
        "--named", type=int, default=20, help="persons named through the command line (0: skip)"
    )
    parser.add_argument(
        "--moved", type=int, default=50, help="faces moved into them through the command line"
    )
    parser.add_argument(
        "--last-block", action="store_true", help="also train FaceNet's last block (TensorFlow, --cache)"
    )
    add_json_argument(parser)
    args = parser.parse_args()

    data = cached_labelled(args.folder, args.cache, "center", identity_depth=2)
    masks = split(data)
    labels, vectors = data["labels"], data["vectors"]

    rows = np.flatnonzero(masks["labels"])
    people = sorted(set(labels[rows].tolist()))
    held_out = set(people[:: int(round(1 / VALIDATION_SHARE))])
    code = {p: i for i, p in enumerate(people)}
    ids = np.array([code[label] for label in labels[rows]], dtype=np.int64)
    train = np.array([label not in held_out for label in labels[rows]])
    print(
        f"labels: {len(rows)} faces of {len(people)} people ({len(held_out)} held out); new photos: "
        f"{int(masks['new'].sum())}; unknown people's faces: {int(masks['unknown'].sum())}",
        file=sys.stderr,
    )
    new, unknown = np.flatnonzero(masks["new"]), np.flatnonzero(masks["unknown"])
    report: dict[str, object] = {"label_faces": len(rows), "label_people": len(people)}
    base = {"new": clustered(vectors, data, new), "unknown": clustered(vectors, data, unknown)}
    for part in ("new", "unknown"):
        for key, value in base[part].items():
            report[f"base_{part}_{key}"] = value
    report["base_new_matched_recall"] = matched(vectors, data, masks)
    runs = []
    for seed in args.seeds:
        chosen = {"hidden": args.hidden, "margin": args.margin, "weight_decay": args.weight_decay}
        params = replace(TrainingParams(), seed=seed, **chosen)
        training = train_projection(
            vectors[rows][train], ids[train], (vectors[rows][~train], ids[~train]), params,
            on_epoch=lambda e: print(
                f"epoch {e.number}: loss {e.loss:.4f}, active {e.active_triplets:.2f}, "
                f"held-out loss {e.validation:.4f} ({e.seconds:.1f} s)", file=sys.stderr,
            ),
        )  # fmt: skip
        tuned = training.projection.apply(vectors)
        started = time.perf_counter()
        reps = max(1, 10_000 // len(vectors) + 1)
        for _ in range(reps):
            training.projection.apply(vectors)
        run: dict[str, float] = {
            "seed": seed,
            "kept_epoch": training.best_epoch,
            "finetune_seconds": round(training.seconds, 1),
            "reembed_seconds_per_10k": round(
                (time.perf_counter() - started) / (reps * len(vectors)) * 10_000, 3
            ),
        }
        run.update(scores(tuned, data, masks, base))
        print(" ".join(f"{k} {v}" for k, v in run.items()), file=sys.stderr)
        runs.append(run)
    for key in runs[0]:
        if key != "seed":
            report[f"tuned_{key}_median"] = float(np.median([run[key] for run in runs]))
    if args.last_block and args.cache:
        from face_assets.core.settings import get_settings

        features, matrix, offset = pooled_features(args.cache, data["face_ids"], get_settings().models_dir)
        # Its own start: the block on these crops, before training (crops cut the same way as the
        # product's, decoded afresh), so that the gain is the training's alone.
        start = l2_normalize(features @ matrix + offset)
        report["last_block_untrained_new_bcubed_f"] = clustered(start, data, new)["bcubed_f"]
        report["last_block_untrained_unknown_bcubed_f"] = clustered(start, data, unknown)["bcubed_f"]
        for seed in args.seeds:
            trained = train_last_block(
                features[rows], ids, ~train, matrix, offset, replace(TrainingParams(), seed=seed)
            )
            tuned = l2_normalize(features @ trained[0] + trained[1])
            for part, faces in (("new", new), ("unknown", unknown)):
                for key, value in clustered(tuned, data, faces).items():
                    report[f"last_block_seed{seed}_{part}_{key}"] = value
    if args.cache and args.named:
        from face_assets.core.tuning.model import WEIGHTS, model_folder, read_manifest
        from face_assets.core.tuning.projection import Projection

        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            started = time.perf_counter()
            model, named, moved = user_labels(args.cache, data, masks, work, args.named, args.moved)
            report["users_named_persons"], report["users_moved_faces"] = len(named), moved
            report["users_seconds"] = round(time.perf_counter() - started, 1)
            manifest = read_manifest(work / "models", model)
            report["users_labelled_faces"] = manifest.faces
            report["users_labelled_identities"] = manifest.identities
            projection = Projection.load(model_folder(work / "models", model) / WEIGHTS)
            tuned = projection.apply(vectors)
            for key, value in scores(tuned, data, masks, base).items():
                report[f"users_{key}"] = value
            # The new photos of the persons the user named, alone: what naming them bought.
            of_named = masks["new"] & np.isin(data["labels"], named)
            for name, model_vectors in (("base", vectors), ("users", tuned)):
                for key, value in clustered(model_vectors, data, np.flatnonzero(of_named)).items():
                    report[f"{name}_named_new_{key}"] = value
    report["peak_memory_mb"] = round(peak_rss_mb())
    report["runs"] = runs  # type: ignore[assignment]
    print_report({k: v for k, v in report.items() if k != "runs"})
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
