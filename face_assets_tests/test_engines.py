"""The engines: ONNX Runtime (default) against TensorFlow (the reference) on the same weights,
and the cached ONNX files: verified, rebuilt when bad or stale, safe to build concurrently."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from face_assets.core.settings import SettingsError, get_settings
from face_assets.core.vision.transforms import embedding_crop, load_image

# What "the same outputs" means here (issue: ONNX Runtime engine).
MIN_COSINE = 0.999
MIN_IOU = 0.9


def test_the_default_engine_is_onnxruntime_and_the_environment_chooses(monkeypatch) -> None:
    monkeypatch.delenv("FACE_ASSETS_ENGINE", raising=False)
    assert get_settings().engine == "onnxruntime"
    monkeypatch.setenv("FACE_ASSETS_ENGINE", "tensorflow")
    assert get_settings().engine == "tensorflow"


def test_an_unknown_engine_is_refused_with_the_choices(monkeypatch, tmp_path: Path) -> None:
    from face_assets.core.vision.detection import make_detector
    from face_assets.core.vision.embedding import make_embedder

    monkeypatch.setenv("FACE_ASSETS_ENGINE", "cuda")
    with pytest.raises(SettingsError) as error:
        get_settings()
    assert str(error.value) == (
        "setting engine (FACE_ASSETS_ENGINE): Input should be 'onnxruntime' or 'tensorflow', got 'cuda'"
    )

    choices = r"unknown engine 'cuda'; choose one of onnxruntime, tensorflow"
    with pytest.raises(ValueError, match=choices):
        make_detector("retinaface-mobilenet", tmp_path, engine="cuda")
    with pytest.raises(ValueError, match=choices):
        make_embedder("facenet-20180402", tmp_path, engine="cuda")


def test_the_engine_setting_reaches_the_models_and_keeps_their_names(monkeypatch, tmp_path: Path) -> None:
    from face_assets.core.vision.models import detector_for, embedder_for

    names = set()
    for engine in ("onnxruntime", "tensorflow"):
        settings = get_settings(models_dir=tmp_path, engine=engine)
        detector, embedder = detector_for(settings), embedder_for(settings)
        assert (detector.engine, embedder.engine) == (engine, engine)  # type: ignore[attr-defined]
        assert not detector.loaded  # type: ignore[attr-defined]
        names.add((detector.name, embedder.name))
    # The database stores these names: the same weights keep the same name on any engine.
    assert names == {("retinaface-mobilenetv2", "facenet-20180402-114759")}


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.slow
def test_onnxruntime_matches_tensorflow_on_real_photos(models_dir: Path, celebrity_folder: Path) -> None:
    """Every photo of the sample (118, one with several faces): the same faces, boxes with IoU
    >= 0.9, and for the same crops embeddings with cosine >= 0.999."""
    from face_assets.core.vision.detection import RetinaFaceMobileNet
    from face_assets.core.vision.embedding import FaceNetEmbedder

    photos = sorted(celebrity_folder.rglob("*.jpg"))
    assert len(photos) > 100
    reference = RetinaFaceMobileNet(models_dir, engine="tensorflow")
    candidate = RetinaFaceMobileNet(models_dir, engine="onnxruntime")
    ious: list[float] = []
    crops = []
    for photo in photos:
        image = load_image(photo)
        expected, found = reference.detect(image), candidate.detect(image)
        assert len(found) == len(expected), photo.name
        for face in expected:
            best = max(found, key=lambda other: _iou(face.box_xyxy, other.box_xyxy))
            ious.append(_iou(face.box_xyxy, best.box_xyxy))
            assert ious[-1] >= MIN_IOU, photo.name
            assert abs(best.score - face.score) < 0.01, photo.name
            crops.append(embedding_crop(image, face.box_xyxy))
    assert len(ious) >= len(photos)  # every photo of the sample has a face

    batch = np.stack(crops)
    expected_vectors = FaceNetEmbedder(models_dir, engine="tensorflow").embed(batch)
    found_vectors = FaceNetEmbedder(models_dir, engine="onnxruntime").embed(batch)
    cosines = (expected_vectors * found_vectors).sum(axis=1)
    print(f"\n{len(ious)} faces: IoU min {min(ious):.6f}, cosine min {cosines.min():.7f}")
    assert cosines.min() >= MIN_COSINE
    assert np.allclose(np.linalg.norm(found_vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_onnxruntime_facenet_takes_any_batch_size(models_dir: Path, celebrity_folder: Path) -> None:
    """Three faces cost a batch of three: the graph's batch of one was opened, not padded."""
    from face_assets.core.vision.embedding import FaceNetEmbedder

    photos = sorted((celebrity_folder / "val").rglob("*.jpg"))[:5]
    crops = np.stack([embedding_crop(load_image(p), (40, 40, 120, 120)) for p in photos])
    whole = FaceNetEmbedder(models_dir, batch_size=32, engine="onnxruntime").embed(crops)
    in_twos = FaceNetEmbedder(models_dir, batch_size=2, engine="onnxruntime").embed(crops)
    assert np.abs(whole - in_twos).max() < 1e-5
    single = FaceNetEmbedder(models_dir, engine="onnxruntime").embed(crops[:1])
    assert single.shape == (1, 512)


def _source_copy(models_dir: Path, folder: Path) -> Path:
    """A models folder holding only the verified RetinaFace graph: nothing to fetch."""
    from face_assets.core.vision import weights

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(models_dir / weights.RETINAFACE_MOBILENET.name, folder)
    return folder


@pytest.mark.slow
def test_a_bad_or_stale_cached_onnx_file_is_rebuilt(
    models_dir: Path, celebrity_folder: Path, tmp_path: Path
) -> None:
    from face_assets.core.digest import file_sha256
    from face_assets.core.vision import graphs, weights
    from face_assets.core.vision.detection import RetinaFaceMobileNet

    folder = _source_copy(models_dir, tmp_path / "models")
    # Offline: the conversion needs the graph file only, never the network.
    path, data = graphs.onnx_model(graphs.RETINAFACE, folder, fetch=False)
    assert path.name == f"retinaface-mobilenetv2-frozen_graph-{weights.RETINAFACE_MOBILENET.sha256[:12]}.onnx"
    manifest = json.loads(graphs.manifest_path(path).read_text())
    assert manifest["source_sha256"] == weights.RETINAFACE_MOBILENET.sha256
    assert manifest["onnx_sha256"] == file_sha256(path)
    assert manifest["opset"] == graphs.OPSET and manifest["converter"] == "tf2onnx"
    assert manifest["converter_version"]
    assert not list(folder.glob("*.tmp")), "temporary files left behind"

    # Corrupt: the bytes no longer match the manifest.
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))
    rebuilt_path, rebuilt = graphs.onnx_model(graphs.RETINAFACE, folder, fetch=False)
    assert rebuilt_path == path and rebuilt != bytes(damaged)
    assert file_sha256(path) == json.loads(graphs.manifest_path(path).read_text())["onnx_sha256"]

    # Truncated, as a crash of a writer without the atomic rename would leave it.
    path.write_bytes(rebuilt[:1000])
    graphs.onnx_model(graphs.RETINAFACE, folder, fetch=False)
    assert path.stat().st_size > 1000
    assert file_sha256(path) == json.loads(graphs.manifest_path(path).read_text())["onnx_sha256"]

    # Stale: built by another opset (an older version of this code).
    stale = json.loads(graphs.manifest_path(path).read_text())
    stale["opset"] = graphs.OPSET - 1
    graphs.manifest_path(path).write_text(json.dumps(stale))
    graphs.onnx_model(graphs.RETINAFACE, folder, fetch=False)
    assert json.loads(graphs.manifest_path(path).read_text())["opset"] == graphs.OPSET

    # The rebuilt file is a working detector: the face of a portrait.
    detector = RetinaFaceMobileNet(folder, engine="onnxruntime", fetch=False)
    portrait = sorted((celebrity_folder / "train" / "ben_afflek").glob("*.jpg"))[0]
    faces = detector.detect(load_image(portrait))
    assert len(faces) == 1 and faces[0].score > 0.99


_CONVERT = """
import hashlib, sys
from pathlib import Path
from face_assets.core.vision import graphs
path, data = graphs.onnx_model(graphs.RETINAFACE, Path(sys.argv[1]), fetch=False)
print(hashlib.sha256(data).hexdigest())
"""


@pytest.mark.slow
def test_two_processes_converting_at_once_share_one_good_file(models_dir: Path, tmp_path: Path) -> None:
    """tf2onnx's output differs from run to run (node order): without the lock the second
    writer would replace the first's file under the first's manifest."""
    from face_assets.core.digest import file_sha256
    from face_assets.core.vision import graphs

    folder = _source_copy(models_dir, tmp_path / "models")
    command = [sys.executable, "-c", _CONVERT, str(folder)]
    running = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    digests = [process.communicate(timeout=600)[0].strip() for process in running]
    assert [process.returncode for process in running] == [0, 0]
    path = folder / graphs.RETINAFACE.onnx_name
    manifest = json.loads(graphs.manifest_path(path).read_text())
    assert digests[0] == digests[1] == manifest["onnx_sha256"] == file_sha256(path)
    assert not list(folder.glob("*.tmp"))


@pytest.mark.slow
def test_models_fetch_prepares_the_onnx_files_for_an_offline_machine(
    models_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    from face_assets.cli import main
    from face_assets.core.vision import graphs, weights

    folder = _source_copy(models_dir, tmp_path / "models")
    shutil.copy(models_dir / weights.FACENET_GRAPH.name, folder)
    monkeypatch.setenv("FACE_ASSETS_MODELS_DIR", str(folder))
    assert main(["models", "fetch"]) == 0
    printed = capsys.readouterr().out
    for graph in (graphs.RETINAFACE, graphs.FACENET):
        assert graph.onnx_name in printed
        assert graphs.manifest_path(folder / graph.onnx_name).is_file()

    # Offline from here on: both models load from the folder alone.
    from face_assets.core.vision.models import detector_for, embedder_for

    monkeypatch.setenv("FACE_ASSETS_MODELS_OFFLINE", "true")
    settings = get_settings()
    assert settings.engine == "onnxruntime"
    embedder = embedder_for(settings)
    vectors = embedder.embed(np.zeros((3, 160, 160, 3), dtype=np.float32))
    assert vectors.shape == (3, 512)
    detector_for(settings).load()


TENSORFLOW_FIRST_USE = """
import logging, sys
import numpy as np
if sys.argv[1] == "-v":
    logging.basicConfig(level=logging.INFO)
from face_assets.core.settings import get_settings
from face_assets.core.vision import graphs
run = graphs.graph_runner(graphs.RETINAFACE, "tensorflow", get_settings().models_dir)
print(run(np.zeros((1, 64, 64, 3), np.float32)).shape)
"""


@pytest.mark.slow
@pytest.mark.parametrize("verbose", [False, True])
def test_tensorflows_start_up_lines_stay_off_stderr_unless_verbose(verbose: bool) -> None:
    result = subprocess.run(
        [sys.executable, "-c", TENSORFLOW_FIRST_USE, "-v" if verbose else "-q"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert result.stdout.strip() == "(0, 16)"
    assert ("oneDNN" in result.stderr) is verbose, result.stderr
