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


def batches(
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


def normalised_triplet_gradient(
    z: NDArray[np.float32], labels: NDArray[np.int64], margin: float
) -> tuple[float, float, int, NDArray[np.float32]]:
    """For embeddings before their normalisation (`z`): the batch's triplet loss (each
    anchor-positive pair with its semi-hard negative), the share of triplets with a loss, their
    count, and the loss's gradient with respect to `z`. Whatever network made `z` takes it from
    there."""
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    y = z / norms
    d = np.maximum(2.0 - 2.0 * (y @ y.T), 0.0)
    same = labels[:, None] == labels[None, :]
    anchors, positives = np.nonzero(same & ~np.eye(len(labels), dtype=bool))
    d_ap = d[anchors, positives]
    negative = ~same[anchors]  # (pairs, faces): each pair's anchor's negatives
    semi_hard = np.where(negative & (d[anchors] > d_ap[:, None]), d[anchors], np.inf)
    farthest = np.where(negative, d[anchors], -np.inf)
    negatives = np.where(
        np.isfinite(semi_hard.min(axis=1)), semi_hard.argmin(axis=1), farthest.argmax(axis=1)
    )
    losses = d_ap - d[anchors, negatives] + margin
    hit = losses > 0.0
    count = max(len(anchors), 1)
    # d(i, j) = 2 - 2 y_i.y_j: the loss moves y_a by -2 (y_p - y_n), y_p by -2 y_a, y_n by 2 y_a.
    a, pos, neg = anchors[hit], positives[hit], negatives[hit]
    grad_y = np.zeros_like(y)
    np.add.at(grad_y, a, -2.0 * (y[pos] - y[neg]))
    np.add.at(grad_y, pos, -2.0 * y[a])
    np.add.at(grad_y, neg, 2.0 * y[a])
    grad_y /= count
    grad_z = (grad_y - y * np.sum(y * grad_y, axis=1, keepdims=True)) / norms
    loss = float(np.maximum(losses, 0.0).sum() / count)
    return loss, float(hit.sum() / count), len(anchors), grad_z


def batch_loss(
    projection: Projection, x: NDArray[np.float32], labels: NDArray[np.int64], margin: float, decay: float
) -> tuple[float, float, int, list[NDArray[np.float32]]]:
    """The batch's triplet loss, the share of triplets with a loss, their count, and the
    gradients of the loss plus `decay` times the weights' squared norm, in the order of the
    projection's weights (w1, b1, w2, b2)."""
    w1, b1, w2, b2 = projection.w1, projection.b1, projection.w2, projection.b2
    hidden = x @ w1 + b1
    active = np.maximum(hidden, 0.0)
    loss, share, pairs, grad_z = normalised_triplet_gradient(x + active @ w2 + b2, labels, margin)
    grad_hidden = (grad_z @ w2.T) * (hidden > 0.0)
    gradients = [
        x.T @ grad_hidden + 2.0 * decay * w1,
        grad_hidden.sum(axis=0),
        active.T @ grad_z + 2.0 * decay * w2,
        grad_z.sum(axis=0),
    ]
    return loss, share, pairs, [g.astype(np.float32) for g in gradients]


class Adam:
    """Adam (Kingma and Ba) over a list of arrays, updated in place."""

    def __init__(self, weights: list[NDArray[np.float32]], rate: float) -> None:
        self.rate, self.steps = rate, 0
        self.first = [np.zeros_like(w) for w in weights]
        self.second = [np.zeros_like(w) for w in weights]

    def step(self, weights: list[NDArray[np.float32]], gradients: list[NDArray[np.float32]]) -> None:
        self.steps += 1
        beta1, beta2 = 0.9, 0.999
        scale = self.rate * np.sqrt(1 - beta2**self.steps) / (1 - beta1**self.steps)
        for weight, gradient, first, second in zip(weights, gradients, self.first, self.second, strict=True):
            first *= beta1
            first += (1 - beta1) * gradient
            second *= beta2
            second += (1 - beta2) * gradient * gradient
            weight -= (scale * first / (np.sqrt(second) + 1e-7)).astype(np.float32)


def train_projection(
    vectors: NDArray[np.float32],
    identities: NDArray[np.int64],
    validation: tuple[NDArray[np.float32], NDArray[np.int64]],
    params: TrainingParams | None = None,
    on_epoch: Callable[[Epoch], None] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> Training:
    """Trains a projection of the base embeddings `vectors` (unit, (n, the base's dim)) so that faces of
    one identity come closer than faces of two. `validation`: held-out identities' faces.
    Plain numpy on the CPU, seeded: the same labels and seed give the same weights."""
    params = params or TrainingParams()
    rng = np.random.default_rng(params.seed)
    started = time.perf_counter()
    val_vectors, val_ids = validation
    if len(val_vectors) > VALIDATION_FACES:
        keep = np.sort(rng.choice(len(val_vectors), VALIDATION_FACES, replace=False))
        val_vectors, val_ids = val_vectors[keep], val_ids[keep]
    start = Projection.identity(params.hidden, params.seed, dim=np.shape(vectors)[1])
    weights = [start.w1.copy(), start.b1.copy(), start.w2.copy(), start.b2.copy()]
    optimizer = Adam(weights, params.learning_rate)
    vectors = np.asarray(vectors, dtype=np.float32)

    base_vectors = l2_normalize(val_vectors)
    before = triplet_loss(base_vectors, val_ids, params.margin)
    result = Training(start, 0, before, before, pair_recall(base_vectors, val_ids), 0.0)
    best, best_loss, above = start, before, 0
    for number in range(1, params.max_epochs + 1):
        epoch_started = time.perf_counter()
        losses, actives = [], []
        for rows in batches(identities, params, rng):
            loss, active, pairs, gradients = batch_loss(
                Projection(*weights), vectors[rows], identities[rows], params.margin, params.weight_decay
            )
            optimizer.step(weights, gradients)
            losses.append(loss)
            actives.append(active)
            result.triplets += pairs
            if on_step is not None:
                on_step(pairs, loss)
        projection = Projection(*(w.copy() for w in weights))
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
