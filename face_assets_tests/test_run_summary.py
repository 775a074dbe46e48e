"""The line a command prints about what its run changed: both ways, never "changed nothing" when
something changed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from face_assets.cli import _this_run
from face_assets.core import correction
from face_assets.core.storage.store import FaceStore
from face_assets_tests.core_tests.test_person import _persons_of, _two_track_person


def test_the_summary_gives_what_was_taken_away_with_a_minus() -> None:
    meta = {
        "face_persons": {"faces_assigned": 3, "persons_dissolved": 1},
        "person_clusters": {"faces_assigned": 2, "persons_made": 1, "faces_moved": 4,
                            "faces_unassigned": 6, "persons_dissolved": 1},
    }  # fmt: skip

    assert _this_run(meta) == (
        "faces assigned +5, persons made +1, faces moved between persons 4, faces unassigned -6, "
        "persons dissolved -2"
    )
    assert _this_run({"person_clusters": {"faces_unassigned": 0, "persons_dissolved": 0}}) == ""


def test_recluster_rebuild_prints_the_person_it_dissolved(tmp_path: Path) -> None:
    """The tester's case: one track of a video's person moved by the user into another person;
    the rebuild leaves the other track, too short to hold a person alone, without one."""
    url = f"sqlite:///{tmp_path / 'faces.db'}"
    store, long_track, short_track, other = _two_track_person(tmp_path, url)
    correction.move_face(store, long_track[0], other)
    store.dispose()
    ignored = ("DAGSTER_HOME", "FACE_ASSETS_DATABASE_URL", "SQL_CONNECTION_STRING")
    environment = {k: v for k, v in os.environ.items() if k not in ignored}
    environment.update(DATABASE_URL=url, FACE_ASSETS_DATA_DIR=str(tmp_path / "data"))

    out = subprocess.run(
        [sys.executable, "-m", "face_assets.cli", "recluster", "--rebuild"],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    assert out.returncode == 0, out.stderr[-3000:]
    summary = out.stdout.splitlines()[0]
    assert summary == "faces unassigned -2, persons dissolved -1"
    store = FaceStore.from_url(url)
    assert _persons_of(store, short_track) == [-1, -1]
    store.dispose()
