"""What the command line says is true: each correction's line names what it really did, each
refusal is one line (`error: ...` or argparse's usage error) with exit 2 and no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from face_assets.cli import ID_MAX, main
from face_assets.core import correction
from face_assets.core.clustering.cluster import ClusterParams
from face_assets.core.person import update_persons
from face_assets.core.storage.store import FaceStore
from face_assets.runs import INSTANCE_TEMPLATE
from face_assets_tests.core_tests.synthetic import identities
from face_assets_tests.core_tests.test_correction import add_faces, add_video_track
from face_assets_tests.test_cli import face_assets, run


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `face-assets ARGS`, run in this process."""
    try:
        code = main(list(args))
    except SystemExit as exit_:  # argparse's usage errors
        code = int(exit_.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def library(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Three persons of six photo faces each, and a video track of six faces in none; the
    command line pointed at that database."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("FACE_ASSETS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    store = FaceStore.from_url(db_url, upgrade=True)
    vectors, truth = identities(seed=11, k=4, n=6)
    add_faces(store, tmp_path / "photos", vectors[truth < 3])
    update_persons(store, ClusterParams())
    persons = {
        p.id: [f.id for f in correction.person_faces(store, p.id)] for p in correction.list_persons(store)
    }
    _, track = add_video_track(store, tmp_path / "photos", vectors[truth == 3])
    yield store, persons, track
    store.dispose()


def test_each_correction_line_names_every_face_it_moved(library, capsys) -> None:
    store, persons, track = library
    first, second, third = persons
    with_track = "and the 5 other faces of its video track"

    code, out, _ = cli(capsys, "faces", "move", str(track[0]), str(first))
    assert (code, out) == (0, f"face {track[0]} {with_track} belong to person {first}\n")
    code, out, _ = cli(capsys, "persons", "split", str(first), str(track[1]))
    new = max(p.id for p in correction.list_persons(store))
    assert (code, out) == (0, f"face {track[1]} {with_track} are now person {new}\n")
    code, out, _ = cli(capsys, "faces", "reject", str(track[2]))
    assert (code, out) == (0, f"face {track[2]} {with_track} are rejected: they stay out of every person\n")

    alone = persons[second][0]  # a photo's face moves alone, and says so
    code, out, _ = cli(capsys, "faces", "move", str(alone), str(third))
    assert (code, out) == (0, f"face {alone} belongs to person {third}\n")
    code, out, _ = cli(capsys, "faces", "reject", str(alone))
    assert (code, out) == (0, f"face {alone} is rejected: it stays out of every person\n")
    code, out, _ = cli(capsys, "persons", "merge", str(third), str(second))
    assert (code, out) == (0, f"person {second} merged into person {third}: 5 faces moved\n")


def test_a_merge_naming_its_target_among_the_sources_is_refused_in_one_line(library, capsys) -> None:
    store, persons, _ = library
    first, second, _ = persons
    code, out, err = cli(capsys, "persons", "merge", str(first), str(first), str(second))
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"error: person {first} is the one the others are merged into: it cannot be merged into itself; "
        "give its Id once, first"
    ]
    assert {p.id for p in correction.list_persons(store)} >= {first, second}


def test_moving_a_forgotten_face_is_refused_in_one_line(library, capsys) -> None:
    store, persons, _ = library
    (forgotten, faces), (receiver, _) = list(persons.items())[:2]
    assert cli(capsys, "persons", "forget", str(forgotten))[0] == 0
    code, _, err = cli(capsys, "faces", "move", str(faces[0]), str(receiver))
    assert code == 2 and err.splitlines() == [
        f"error: face {faces[0]} was forgotten with its person (embedding and thumbnail erased): it "
        f"cannot be put into person {receiver}"
    ]


def test_a_name_of_two_lines_or_another_persons_in_another_case_is_refused(library, capsys) -> None:
    store, persons, _ = library
    first, second, _ = persons
    assert cli(capsys, "persons", "rename", str(first), " Zoë ")[1] == f"person {first} is now 'Zoë'\n"
    code, _, err = cli(capsys, "persons", "rename", str(second), "zoë")
    assert code == 2 and err.splitlines() == [
        f"error: person {first} is already named 'Zoë'; merge them instead"
    ]
    code, _, err = cli(capsys, "persons", "rename", str(second), "Ada\nLovelace")
    assert code == 2 and len(err.splitlines()) == 1 and "is one line" in err
    listing = cli(capsys, "persons", "list")[1].splitlines()
    assert len(listing) == 1 + len(persons)  # the header, then each person on its line


@pytest.mark.parametrize(
    "args",
    [
        ["persons", "show", "99999999999999999999"],
        ["persons", "rename", "99999999999999999999", "Ada"],
        ["persons", "merge", "1", "99999999999999999999"],
        ["persons", "split", "1", "2", "-3"],
        ["persons", "forget", "0"],
        ["faces", "move", "99999999999999999999", "1"],
        ["faces", "move", "1", "-1"],
        ["faces", "reject", str(ID_MAX + 1)],
        ["faces", "reject", "1e3"],
    ],
)
def test_an_id_out_of_range_is_a_usage_error(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'faces.db'}")
    FaceStore.from_url(f"sqlite:///{tmp_path / 'faces.db'}", upgrade=True).dispose()
    code, out, err = cli(capsys, *args)
    assert (code, out) == (2, "")
    assert err.splitlines()[0].startswith("usage: face-assets") and "Traceback" not in err
    assert "out of range: Ids run from 1 to 2147483647" in err or "is not an Id" in err


def test_the_largest_id_reaches_every_database_and_is_not_found(library, capsys) -> None:
    _, persons, _ = library
    for args, said in (
        (["persons", "show", str(ID_MAX)], f"no person with Id {ID_MAX}"),
        (["faces", "move", str(ID_MAX), str(next(iter(persons)))], f"no face with Id {ID_MAX}"),
    ):
        code, _, err = cli(capsys, *args)
        assert code == 2 and err.splitlines() == [f"error: {said}"]


def test_evaluate_refuses_a_photo_outside_the_identity_folders_in_one_line(tmp_path: Path, capsys) -> None:
    for path in (tmp_path / "lib" / "ann" / "2003" / "1.png", tmp_path / "lib" / "loose.png"):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(path)
    code, out, err = cli(capsys, "evaluate", str(tmp_path / "lib"))
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"error: {tmp_path / 'lib'}: 1 file outside the <identity>/ folders that label them: "
        f"{tmp_path / 'lib' / 'loose.png'}; move them into the folder of their person, or out of the folder"
    ]


def test_an_empty_dagster_home_gets_the_projects_dagster_yaml_and_no_warning(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    first = run(face_assets("db", "init"), tmp_path, DAGSTER_HOME=str(home))
    assert first.returncode == 0, first.stderr
    assert "No dagster instance configuration file" not in first.stderr
    assert f"wrote the project's settings to {home / 'dagster.yaml'}" in first.stderr
    assert (home / "dagster.yaml").read_bytes() == INSTANCE_TEMPLATE.read_bytes()
    assert [p.name for p in home.iterdir() if p.name.startswith(".dagster.yaml")] == []

    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # the user's own: kept
    second = run(face_assets("db", "init"), tmp_path, DAGSTER_HOME=str(home))
    assert second.returncode == 0 and second.stderr == "", second.stderr
    assert (home / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"FACE_ASSETS_CLUSTER_NEIGHBOURS": "1"},
            "error: setting cluster_neighbours (FACE_ASSETS_CLUSTER_NEIGHBOURS): "
            "Input should be greater than or equal to 2, got '1'",
        ),
        (
            {"FACE_ASSETS_CLUSTER_NEIGHBOURS": "10", "FACE_ASSETS_CLUSTER_VOTE_NEIGHBOURS": "40"},
            "error: the clustering settings: vote_neighbours must be in [1, neighbours=10], got 40",
        ),
    ],
)
def test_an_unusable_setting_is_refused_in_one_line_naming_its_variable(
    library, capsys, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], line: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, out, err = cli(capsys, "recluster")
    assert (code, out, err) == (2, "", line + "\n")
