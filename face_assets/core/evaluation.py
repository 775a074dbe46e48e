"""Scores persons against folder labels: pairwise and BCubed precision/recall/F, and NMI."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from face_assets.core.errors import UserError

if TYPE_CHECKING:
    from face_assets.core.storage.store import FaceStore

Pick = Literal["largest", "center"]


class LabelsError(UserError, ValueError):
    """A folder that does not hold labelled images the way evaluation reads them."""


@dataclass(frozen=True)
class ClusterScores:
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f: float
    bcubed_precision: float
    bcubed_recall: float
    bcubed_f: float
    nmi: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _f(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _pairs(counts: Counter[Any]) -> int:
    return sum(n * (n - 1) // 2 for n in counts.values())


def score_clusters(truth: Sequence[str], predicted: Sequence[int | None]) -> ClusterScores:
    """`predicted[i]` is item i's person, or None (unassigned or missed: its own singleton)."""
    if len(truth) != len(predicted):
        raise ValueError("truth and predicted must have the same length")
    if not truth:
        raise ValueError("nothing to score")
    pred = [("person", p) if p is not None else ("single", i) for i, p in enumerate(predicted)]
    joint = Counter(zip(truth, pred, strict=True))
    by_truth, by_pred = Counter(truth), Counter(pred)

    together = _pairs(joint)
    pred_pairs, true_pairs = _pairs(by_pred), _pairs(by_truth)
    precision = together / pred_pairs if pred_pairs else 1.0
    recall = together / true_pairs if true_pairs else 1.0

    n = len(truth)
    b_precision = sum(c * c / by_pred[p] for (_, p), c in joint.items()) / n
    b_recall = sum(c * c / by_truth[t] for (t, _), c in joint.items()) / n

    from sklearn.metrics import normalized_mutual_info_score

    pred_codes = {label: k for k, label in enumerate(by_pred)}
    nmi = float(normalized_mutual_info_score(list(truth), [pred_codes[p] for p in pred]))
    return ClusterScores(
        precision, recall, _f(precision, recall),
        b_precision, b_recall, _f(b_precision, b_recall), nmi,
    )  # fmt: skip


FREQUENT = 5  # photos from which a person is one the user expects to see as a person


def rare_fates(
    truth: Sequence[str],
    predicted: Sequence[int | None],
    photos: Mapping[str, int] | None = None,
    frequent: int = FREQUENT,
) -> dict[str, float]:
    """What became of the faces of people seen rarely (fewer than `frequent` photos, counted in
    `photos`, by default in `truth`): left unassigned, in a person of their own, or merged into
    a person holding someone else's faces — the error to avoid. Fractions, and their count."""
    photos = photos if photos is not None else Counter(truth)
    people: dict[int, set[str]] = {}
    for label, person in zip(truth, predicted, strict=True):
        if person is not None:
            people.setdefault(person, set()).add(label)
    fates: Counter[str] = Counter()
    for label, person in zip(truth, predicted, strict=True):
        if photos[label] < frequent:
            fates["unassigned" if person is None else "merged" if len(people[person]) > 1 else "own"] += 1
    rare = sum(fates.values())
    return {
        "rare_faces": rare,
        **{f"rare_{fate}": fates[fate] / rare if rare else 0.0 for fate in ("unassigned", "own", "merged")},
    }


# Files without an identity folder named in a refusal; the rest are counted.
NAMED_UNLABELLED = 5


def _labelled(folder: Path, videos: bool, identity_depth: int) -> list[tuple[Path, str]]:
    from face_assets.core.vision.transforms import MediaDecodeError, sniff_image_format
    from face_assets.core.vision.video import probe_video

    def is_media(path: Path) -> bool:
        if sniff_image_format(path) is not None:
            return True
        if not videos:
            return False
        try:
            probe_video(path)
        except MediaDecodeError:
            return False
        return True

    if identity_depth < 1:
        raise LabelsError(f"the identity folder's depth is 1 or more, not {identity_depth}")
    found: list[tuple[Path, str]] = []
    unlabelled: list[Path] = []
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        # Hidden files and folders (.git, .thumbnails) are no media: registration skips them too.
        if any(part.startswith(".") for part in parts) or not path.is_file() or not is_media(path):
            continue
        if len(parts) <= identity_depth:
            unlabelled.append(path)
        else:
            found.append((path, parts[identity_depth - 1]))
    if unlabelled:
        # Refused, not left out: the pipeline would still cluster their faces, and the score
        # would describe another library than the one labelled.
        named = ", ".join(str(p) for p in unlabelled[:NAMED_UNLABELLED])
        more = f" and {len(unlabelled) - NAMED_UNLABELLED} more" if len(unlabelled) > NAMED_UNLABELLED else ""
        layout = "/".join(["<split>"] * (identity_depth - 1) + ["<identity>"])
        raise LabelsError(
            f"{folder}: {len(unlabelled)} file{'s' if len(unlabelled) != 1 else ''} outside the "
            f"{layout}/ folders that label them: {named}{more}; move them into the folder of "
            "their person, or out of the folder"
        )
    if not found:
        kind = "photos or videos" if videos else "images"
        raise LabelsError(f"{folder}: no {kind} in <identity>/<file> layout")
    return found


def labelled_media(folder: Path, identity_depth: int = 1) -> list[tuple[Path, str]]:
    """(photo or video, identity) for the `<identity>/...` layout: the identity is the top-level
    folder under `folder`, whatever lies below it, so `Kofi/2003/summer/x.jpg` is Kofi's and two
    people's `2003/` folders stay apart. With `identity_depth` 2 it is the folder below the
    top-level one (`train/<identity>/...`, `val/<identity>/...` share one label). A video is
    labelled with its one person. A photo or video outside an identity folder is refused.
    """
    return _labelled(folder, videos=True, identity_depth=identity_depth)


def labelled_images(folder: Path, identity_depth: int = 1) -> list[tuple[Path, str]]:
    """Photos only (the throughput benchmarks count photos), same layout as `labelled_media`."""
    return _labelled(folder, videos=False, identity_depth=identity_depth)


def pick_face(faces: Sequence[dict[str, Any]], size: tuple[int, int] | None, how: Pick) -> int:
    """Index of the labelled face: the largest box, or the one nearest the image centre."""

    def area(face: dict[str, Any]) -> float:
        x1, y1, x2, y2 = face["box_xyxy"]
        return float((x2 - x1) * (y2 - y1))

    if how == "largest" or size is None:
        return max(range(len(faces)), key=lambda i: area(faces[i]))
    cx, cy = size[0] / 2.0, size[1] / 2.0

    def distance(face: dict[str, Any]) -> float:
        x1, y1, x2, y2 = face["box_xyxy"]
        return float(((x1 + x2) / 2 - cx) ** 2 + ((y1 + y2) / 2 - cy) ** 2)

    return min(range(len(faces)), key=lambda i: distance(faces[i]))


def picked_faces(
    store: FaceStore, images: Sequence[tuple[Path, str]], pick: Pick
) -> list[tuple[Path, str, dict[str, Any] | None]]:
    """Each labelled photo with the face its label goes to (`pick`), or None when no face was
    found in it."""
    items = store.media_items_by_path()
    faces = store.faces_of_media_items()
    sizes = store.media_item_sizes()
    picked = []
    for path, identity in images:
        item = items.get(path.resolve())
        found = faces.get(item, []) if item is not None else []
        face = found[pick_face(found, sizes.get(item), pick)] if found else None  # type: ignore[arg-type]
        picked.append((path, identity, face))
    return picked


def video_appearances(
    found: list[dict[str, Any]], size: tuple[int, int] | None, pick: Pick
) -> list[int | None]:
    """A labelled video's persons, one per appearance of its person. In each frame `pick`
    votes for one face, as in a photo; the labelled person is on screen at most once per
    frame, so tracks are taken by their votes, most first, skipping any that shares a frame
    with one already taken (a spurious face that outgrew the person in one frame loses to
    the track that won the other frames). Each taken track is one appearance."""
    by_frame: dict[int, list[dict[str, Any]]] = {}
    for face in found:
        by_frame.setdefault(face["frame"] or 0, []).append(face)
    picked = {faces[pick_face(faces, size, pick)]["id"] for faces in by_frame.values()}
    tracks: dict[int, dict[str, Any]] = {}
    for face in found:
        key = face["track_id"] if face["track_id"] is not None else -face["id"]
        track = tracks.setdefault(key, {"votes": 0, "frames": set(), "person": face["person_id"]})
        track["votes"] += face["id"] in picked
        track["frames"].add(face["frame"] or 0)
    taken: list[dict[str, Any]] = []
    on_screen: set[int] = set()
    for track in sorted(tracks.values(), key=lambda t: (-t["votes"], -len(t["frames"]))):
        if track["votes"] and not track["frames"] & on_screen:
            taken.append(track)
            on_screen |= track["frames"]
    return [track["person"] for track in taken]
