"""Triplet training of a projection (FaceNet paper, section 3): batches of P identities times
K faces, every anchor-positive pair of a batch with its semi-hard negative (farther than the
positive, within the margin; the farthest negative when none is), loss max(0, d(a,p) - d(a,n) +
margin) on squared distances of unit vectors.

Held-out identities keep the training honest: each epoch their triplet loss is measured, and
the model kept is the last epoch at which it is no higher than the base model's. Gains on the
labelled people that cost people the labels never showed are not kept."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from face_assets.core.clustering.vectors import l2_normalize
from face_assets.core.tuning.projection import Projection

# The precision at which held-out pairs are scored: the product's own (clustering keeps
# precision at 0.99 or above), so the score is the recall a user would get.
PAIR_PRECISION = 0.99
# Pairs scored at the most; a larger validation set is sampled down to this many faces.
VALIDATION_FACES = 3000


@dataclass(frozen=True)
class TrainingParams:
    # Chosen by scripts/finetune_protocol.py on the tuning set (docs/finetuning.md).
    hidden: int = 512
    margin: float = 0.6
    identities_per_batch: int = 32
    faces_per_identity: int = 4
    learning_rate: float = 3e-4
    # Pulls the residual towards zero (the base model): what the labels do not ask for stays.
    weight_decay: float = 1e-4
    max_epochs: int = 8
    # Epochs in a row whose held-out loss is above the base model's before training stops.
    patience: int = 2
    seed: int = 0


@dataclass
class Epoch:
    number: int
    loss: float
    active_triplets: float  # share of triplets with a positive loss
    validation: float  # the held-out identities' triplet loss
    seconds: float


@dataclass
class Training:
    projection: Projection
    best_epoch: int  # 0: no epoch was kept, the projection is the base model
    validation_before: float  # held-out triplet loss of the base model
    validation_after: float  # ... of the kept epoch
    recall_before: float  # held-out pairs' recall at precision 0.99, base model
    recall_after: float
    epochs: list[Epoch] = field(default_factory=list)
    triplets: int = 0
    seconds: float = 0.0


def pair_recall(
    vectors: NDArray[np.float32], identities: NDArray[np.int64], precision: float = PAIR_PRECISION
) -> float:
    """Share of same-identity pairs found above the highest cosine threshold at which the pairs
    above it are at least `precision` same-identity pairs."""
    n = len(vectors)
    if n < 2:
        return 0.0
    similarity = vectors @ vectors.T
    upper = np.triu_indices(n, k=1)
    scores, same = similarity[upper], (identities[:, None] == identities[None, :])[upper]
    positives = int(same.sum())
    if positives == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(same[order])
    ranks = np.arange(1, len(order) + 1)
    good = np.flatnonzero(hits / ranks >= precision)
    return float(hits[good[-1]] / positives) if len(good) else 0.0


def triplet_loss(vectors: NDArray[np.float32], identities: NDArray[np.int64], margin: float) -> float:
    """The training's loss over every anchor-positive pair of a set, each with its semi-hard
    negative (the nearest farther than the positive; the farthest when none is)."""
    distances = np.maximum(2.0 - 2.0 * (vectors @ vectors.T), 0.0)
    total, pairs = 0.0, 0
    for anchor in range(len(vectors)):
        same = identities == identities[anchor]
        positives = distances[anchor, same & (np.arange(len(vectors)) != anchor)]
        negatives = np.sort(distances[anchor, ~same])
        if not len(positives) or not len(negatives):
            continue
        at = np.searchsorted(negatives, positives, side="right")
        chosen = np.where(at < len(negatives), negatives[np.minimum(at, len(negatives) - 1)], negatives[-1])
        total += float(np.maximum(positives - chosen + margin, 0.0).sum())
        pairs += len(positives)
    return total / max(pairs, 1)


def _batches(
    identities: NDArray[np.int64], params: TrainingParams, rng: np.random.Generator
) -> list[NDArray[np.int64]]:
    """One epoch's batches of row indices: as many batches as it takes to hold as many faces as
    the labels, each of P identities drawn at random with K faces each (drawn again when an
    identity has fewer)."""
    members = [np.flatnonzero(identities == i) for i in np.unique(identities)]
    p = min(params.identities_per_batch, len(members))
    k = params.faces_per_identity
    batches = []
    for _ in range(max(1, -(-len(identities) // (p * k)))):
        chosen = rng.choice(len(members), p, replace=False)
        rows = [rng.choice(members[i], k, replace=len(members[i]) < k) for i in chosen]
        batches.append(np.concatenate(rows))
    return batches


def train_projection(
    vectors: NDArray[np.float32],
    identities: NDArray[np.int64],
    validation: tuple[NDArray[np.float32], NDArray[np.int64]],
    params: TrainingParams = TrainingParams(),
    on_epoch: Callable[[Epoch], None] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> Training:
    """Trains a projection of the base embeddings `vectors` (unit, (n, 512)) so that faces of
    one identity come closer than faces of two. `validation`: held-out identities' faces."""
    from face_assets.core.vision.lazy import import_tensorflow

    tf = import_tensorflow()
    tf.random.set_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    started = time.perf_counter()
    val_vectors, val_ids = validation
    if len(val_vectors) > VALIDATION_FACES:
        keep = np.sort(rng.choice(len(val_vectors), VALIDATION_FACES, replace=False))
        val_vectors, val_ids = val_vectors[keep], val_ids[keep]

    start = Projection.identity(params.hidden, params.seed)
    w1, b1, w2, b2 = (tf.Variable(a) for a in (start.w1, start.b1, start.w2, start.b2))
    weights = [w1, b1, w2, b2]
    optimizer = tf.keras.optimizers.Adam(params.learning_rate)
    margin = tf.constant(params.margin, tf.float32)

    def project(x: Any) -> Any:  # tensors
        return tf.math.l2_normalize(x + tf.nn.relu(x @ w1 + b1) @ w2 + b2, axis=1)

    @tf.function(reduce_retracing=True)
    def step(x: Any, labels: Any) -> Any:  # tensors
        with tf.GradientTape() as tape:
            y = project(x)
            d = tf.maximum(2.0 - 2.0 * (y @ tf.transpose(y)), 0.0)  # squared distances
            same = tf.equal(labels[:, None], labels[None, :])
            eye = tf.eye(tf.shape(labels)[0], dtype=tf.bool)
            positive = tf.logical_and(same, tf.logical_not(eye))
            negative = tf.logical_not(same)
            # d[a, p] against every d[a, n]: (anchor, positive, negative)
            d_ap, d_an = d[:, :, None], d[:, None, :]
            neg = negative[:, None, :]
            semi_hard = tf.logical_and(neg, d_an > d_ap)
            big = tf.constant(1e9, tf.float32)
            nearest_semi = tf.reduce_min(tf.where(semi_hard, d_an + 0.0 * d_ap, big), axis=2)
            farthest = tf.reduce_max(tf.where(neg, d_an + 0.0 * d_ap, -big), axis=2)
            chosen = tf.where(nearest_semi < big, nearest_semi, farthest)
            losses = tf.maximum(d - chosen + margin, 0.0)
            pairs = tf.cast(positive, tf.float32)
            count = tf.maximum(tf.reduce_sum(pairs), 1.0)
            triplet = tf.reduce_sum(losses * pairs) / count
            active = tf.reduce_sum(tf.cast(losses > 0, tf.float32) * pairs) / count
            decay = params.weight_decay * (tf.reduce_sum(w2 * w2) + tf.reduce_sum(w1 * w1))
            loss = triplet + decay
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights, strict=True))
        return triplet, active, tf.reduce_sum(pairs)

    def current() -> Projection:
        return Projection(*(np.asarray(v.numpy(), dtype=np.float32) for v in weights))

    base_vectors = l2_normalize(val_vectors)
    before = triplet_loss(base_vectors, val_ids, params.margin)
    result = Training(start, 0, before, before, pair_recall(base_vectors, val_ids), 0.0)
    best, best_loss, above = start, before, 0
    for number in range(1, params.max_epochs + 1):
        epoch_started = time.perf_counter()
        losses, actives = [], []
        for rows in _batches(identities, params, rng):
            triplet, active, pairs = step(tf.constant(vectors[rows]), tf.constant(identities[rows]))
            losses.append(float(triplet))
            actives.append(float(active))
            result.triplets += int(pairs)
            if on_step is not None:
                on_step(int(pairs), float(triplet))
        projection = current()
        held_out = triplet_loss(projection.apply(val_vectors), val_ids, params.margin)
        epoch = Epoch(number, float(np.mean(losses)), float(np.mean(actives)), held_out,
                      time.perf_counter() - epoch_started)  # fmt: skip
        result.epochs.append(epoch)
        if on_epoch is not None:
            on_epoch(epoch)
        if held_out <= before:
            best, best_loss, result.best_epoch, above = projection, held_out, number, 0
        else:
            above += 1
            if above >= params.patience:
                break
    result.projection, result.validation_after = best, best_loss
    result.recall_after = pair_recall(best.apply(val_vectors), val_ids)
    result.seconds = time.perf_counter() - started
    return result
