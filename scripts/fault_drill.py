"""Fault drills, end to end, with the real command line, models and databases: each drill breaks
a run the way it breaks for users, reruns it as a user would, and counts media items lost,
duplicated and stranded. Every count must be zero.

    python scripts/fault_drill.py [--photos 24] [--only kill-detect stale-lock ...]

Drills:
- kill-register, kill-detect, kill-embed, kill-cluster, kill-gallery: SIGKILL of
  `face-assets all FOLDER` while that step is at work, then the same command again;
- stale-lock: the persons lock left by a process that is gone, then a run;
- disk-full: the thumbnail folder on a file system that fills up mid-run (a small tmpfs; root
  only), then grown and the run repeated;
- server-down: the PostgreSQL server stopped mid-detection, then started and the run repeated;
- export: `face-assets export DIR` with a user's own file at a path the export wants, an original
  deleted and its person renamed, then another user's file at the path its last copy moves
  to, and the export repeated;
- replaced: after a run, a photo replaced under its name by a photo of someone else, and another
  copied into a second folder; the run repeated.

Counted after the rerun: lost (a photo of the folder not registered, or not processed, or with
an error), duplicated (a file registered twice, a media item whose faces were written twice),
stranded (a lock left, a face without embedding or thumbnail file, a thumbnail file without its
face, a Dagster run left STARTED). The export drill also counts files lost (a photo whose bytes
are nowhere on disk any more, in the library or the export) and files overwritten (a user's
file not byte for byte as the user left it). The replaced drill counts stale faces (a face of
the old content still on the replaced photo, or a second media item for the copy).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from sqlalchemy import insert, text

from face_assets.core import correction
from face_assets.core.storage.schema import LocksTable, utcnow
from face_assets.core.storage.store import FaceStore
from face_assets_devtools.harness import sample_folder
from face_assets_devtools.servers import PostgresServer

ROOT = Path(__file__).resolve().parents[1]
KILL_STEPS = ("register", "detect", "embed", "cluster", "gallery")
DRILLS = (
    *(f"kill-{step}" for step in KILL_STEPS),
    "stale-lock",
    "disk-full",
    "server-down",
    "export",
    "replaced",
)


@dataclass
class Outcome:
    drill: str
    broke: str  # what the broken run did: killed at ..., exit code and its error line
    rerun: str
    lost: int
    duplicated: int
    stranded: int
    seconds: float
    files_lost: int | None = None  # the export drill's counts; None: not a drill of the export
    files_overwritten: int | None = None
    stale_faces: int | None = None  # the replaced drill's count


class Workspace:
    """One drill's folder: its library, database, thumbnails, gallery and DAGSTER_HOME."""

    def __init__(self, root: Path, photos: list[Path], database_url: str | None = None) -> None:
        self.root = root
        self.library = root / "library"
        for photo in photos:
            target = self.library / photo.parent.name / photo.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(photo, target)
        self.home = root / "dagster_home"
        self.home.mkdir()
        shutil.copy(ROOT / "dagster.yaml", self.home / "dagster.yaml")
        self.thumbnails = root / "thumbnails"
        self.thumbnails.mkdir()
        self.url = database_url or f"sqlite:///{root / 'faces.db'}"
        self.env = {
            **os.environ,
            "DATABASE_URL": self.url,
            "DAGSTER_HOME": str(self.home),
            "THUMBNAIL_SAVE_PATH": str(self.thumbnails),
            "FACE_ASSETS_DATA_DIR": str(root / "data"),
        }
        self.store = FaceStore.from_url(self.url, upgrade=True)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "face_assets.cli", *(args or ("all", str(self.library)))]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args), cwd=self.root, env=self.env, capture_output=True, text=True
        )

    def scalar(self, statement: str) -> int:
        try:
            with self.store.engine.connect() as conn:
                return int(conn.execute(text(statement)).scalar_one())
        except Exception:  # the table is not there yet, the server is down: nothing to see
            return -1

    def kill_when(self, reached: Callable[[], bool]) -> str | None:
        """Runs the command and SIGKILLs it once `reached()`; None if it ended before."""
        process = subprocess.Popen(
            self.command(), cwd=self.root, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        while process.poll() is None:
            if reached():
                process.send_signal(signal.SIGKILL)
                process.wait()
                return "killed with SIGKILL"
            time.sleep(0.003)
        return None

    def counts(self) -> tuple[int, int, int]:
        photos = {str(p.resolve()) for p in self.library.rglob("*.jpg")}
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                text(
                    'SELECT f."FilePath", f."FileName", i."IsFacesExtracted", i."ExtractionError", '
                    'i."FaceCount", '
                    '(SELECT COUNT(*) FROM "Faces" x WHERE x."MediaItemId" = i."Id") '
                    'FROM "MediaFile" f JOIN "MediaItems" i ON i."MediaFileId" = f."Id"'
                )
            ).all()
            locks = conn.execute(text('SELECT COUNT(*) FROM "FaceAssetsLocks"')).scalar_one()
            faces = conn.execute(text('SELECT "Embedding" IS NULL, "ThumbnailPath" FROM "Faces"')).all()
            copies = conn.execute(
                text(
                    'SELECT c."FilePath", c."FileName" FROM "MediaFile" c JOIN "MediaItems" i '
                    'ON i."MediaFileId" = c."SameAsMediaFileId" '
                    'WHERE i."IsFacesExtracted" = TRUE AND i."ExtractionError" IS NULL'
                )
            ).all()
        paths = [str(Path(r[0]) / r[1]) for r in rows]
        done = {p for p, r in zip(paths, rows, strict=True) if r[2] and r[3] is None}
        done |= {str(Path(c[0]) / c[1]) for c in copies}  # an identical copy: one media item
        lost = len(photos - done)
        duplicated = (len(paths) - len(set(paths))) + sum(1 for r in rows if r[2] and r[4] != r[5])
        files = {str(p.relative_to(self.thumbnails)) for p in self.thumbnails.rglob("*.jpg")}
        named = {str(f[1]) for f in faces if f[1]}
        stranded = (
            int(locks)
            + sum(1 for f in faces if f[0])  # faces without embedding
            + len(named - files)  # a face whose thumbnail file is missing
            + len(files - named)  # a thumbnail file no face points at
            + self.runs_left_started()
        )
        return lost, duplicated, stranded

    def runs_left_started(self) -> int:
        instance = dg.DagsterInstance.from_config(str(self.home))
        try:
            return len(instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])))
        finally:
            instance.dispose()


def _error_line(out: subprocess.CompletedProcess[str]) -> str:
    lines = [x for x in out.stderr.splitlines() if x.startswith("error:")]
    return f"exit {out.returncode}" + (f": {lines[-1][:90]}" if lines else "")


def _kill_condition(space: Workspace, step: str, photos: int) -> Callable[[], bool]:
    processed = 'SELECT COUNT(*) FROM "MediaItems" WHERE "IsFacesExtracted" = TRUE'
    embedded = 'SELECT COUNT(*) FROM "Faces" WHERE "Embedding" IS NOT NULL'
    return {
        "register": lambda: space.scalar('SELECT COUNT(*) FROM "MediaFile"') > 0,
        "detect": lambda: 0 < space.scalar(processed) < photos,
        # Detection done (every item processed), embedding not yet: the embed step is at work.
        "embed": lambda: (
            space.scalar(processed) == photos
            and space.scalar(embedded) < space.scalar('SELECT COUNT(*) FROM "Faces"')
        ),
        "cluster": lambda: space.scalar('SELECT COUNT(*) FROM "FaceAssetsLocks"') > 0,
        "gallery": lambda: (
            space.scalar('SELECT COUNT(*) FROM "Persons"') > 0
            and space.scalar('SELECT COUNT(*) FROM "FaceAssetsLocks"') == 0
        ),
    }[step]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _summary(out: subprocess.CompletedProcess[str], folder: Path) -> str:
    """The exit code and the export's line of counts."""
    lines = out.stdout.strip().splitlines()[-1:]
    return f"{_error_line(out)}: {lines[0].removeprefix(f'{folder}: ')}" if lines else _error_line(out)


def _export_drill(space: Workspace, started: float) -> Outcome:
    """Export with a user's file in the way, delete an original, rename its person, put another
    user's file where the photo's last copy goes, export again: nothing lost or overwritten."""
    processed = space.run()
    if processed.returncode != 0:
        return Outcome("export", f"not run: {_error_line(processed)}", "", -1, -1, -1, 0.0)
    out = space.root / "export"
    person = correction.list_persons(space.store)[0]
    photos = sorted({face.path for face in correction.person_faces(space.store, person.id)})
    if len(photos) < 2:
        return Outcome("export", "not run: the first person has one photo", "", -1, -1, -1, 0.0)
    library = {_digest(p) for p in space.library.rglob("*.jpg")}
    mine = {out / f"{person.name} ({person.id})" / photos[1].name: b"the user's own file"}
    mine[out / f"Renamed ({person.id})" / photos[0].name] = b"the user's other file"
    first, later = mine
    first.parent.mkdir(parents=True)
    first.write_bytes(mine[first])
    exported = space.run("export", str(out))
    photos[0].unlink()  # the user deletes an original: the export holds its last copy
    renamed = space.run("persons", "rename", str(person.id), "Renamed")
    later.parent.mkdir(parents=True)
    later.write_bytes(mine[later])
    again = space.run("export", str(out))
    on_disk = {_digest(p) for folder in (space.library, out) for p in folder.rglob("*") if p.is_file()}
    files_lost = len(library - on_disk)
    files_overwritten = sum(1 for p, data in mine.items() if not p.is_file() or p.read_bytes() != data)
    lost, duplicated, stranded = space.counts()
    broke = (
        f"a user's file at an export path; export {_summary(exported, out)}; an original deleted, "
        f"its person renamed ({_error_line(renamed)}); a user's file where its last copy goes"
    )
    return Outcome(
        "export",
        broke,
        f"export {_summary(again, out)}",
        lost,
        duplicated,
        stranded,
        time.perf_counter() - started,
        files_lost,
        files_overwritten,
    )


def _replaced_drill(space: Workspace, started: float, others: list[Path]) -> Outcome:
    """A photo replaced under its name by someone else's, another copied: the rerun detects the
    new content once, keeps no face of the old one, and makes no second media item of the copy."""
    first = space.run()
    if first.returncode != 0:
        return Outcome("replaced", f"not run: {_error_line(first)}", "", -1, -1, -1, 0.0)
    replaced, copied = sorted(space.library.rglob("*.jpg"))[:2]
    before = space.scalar('SELECT MAX("Id") FROM "Faces"')
    someone_else = next(p for p in others if p.parent.name != replaced.parent.name)
    shutil.copy(someone_else, replaced)  # same name, another person's photo
    (space.library / "backup").mkdir()
    shutil.copy2(copied, space.library / "backup" / copied.name)
    rerun = space.run()
    lost, duplicated, stranded = space.counts()
    with space.store.engine.connect() as conn:
        old = conn.execute(
            text(
                'SELECT COUNT(*) FROM "Faces" x JOIN "MediaItems" i ON i."Id" = x."MediaItemId" '
                'JOIN "MediaFile" f ON f."Id" = i."MediaFileId" '
                'WHERE f."FileName" = :name AND f."FilePath" = :folder AND x."Id" <= :before'
            ),
            {"name": replaced.name, "folder": str(replaced.resolve().parent), "before": before},
        ).scalar_one()
    items = space.scalar('SELECT COUNT(*) FROM "MediaItems"')
    photos = len(list(space.library.rglob("*.jpg")))
    stale = int(old) + max(items - (photos - 1), 0)  # the copy is no media item of its own
    summary = [line for line in rerun.stdout.splitlines() if "replaced" in line or "cop" in line]
    return Outcome(
        "replaced",
        "a photo replaced by someone else's under its name, another copied to a second folder",
        f"{_error_line(rerun)}" + (f": {summary[0][:160]}" if summary else ""),
        lost,
        duplicated,
        stranded,
        time.perf_counter() - started,
        stale_faces=stale,
    )


def drill(name: str, root: Path, photos: list[Path], others: list[Path]) -> Outcome:
    started = time.perf_counter()
    server = None
    url = None
    if name == "server-down":
        server = PostgresServer()
        url = server.new_database()
    space = Workspace(root, photos, url)
    try:
        if name == "export":
            return _export_drill(space, started)
        if name == "replaced":
            return _replaced_drill(space, started, others)
        if name.startswith("kill-"):
            killed = space.kill_when(_kill_condition(space, name.removeprefix("kill-"), len(photos)))
            if killed is None:  # the step ended between two looks: this drill proved nothing
                return Outcome(name, "not reached: the step was too fast to catch", "", -1, -1, -1, 0.0)
            broke = killed
        elif name == "stale-lock":
            gone = subprocess.Popen([sys.executable, "-c", "pass"])
            gone.wait()  # a pid that no longer runs
            now = utcnow()
            with space.store.engine.begin() as conn:
                conn.execute(
                    insert(LocksTable).values(
                        Name="person_clusters",
                        Owner="Dagster run killed-earlier",
                        AcquiredAt=now,
                        Host=socket.gethostname(),
                        Pid=gone.pid,
                        HeartbeatAt=now,
                    )  # fmt: skip
                )
            broke = f"lock left by process {gone.pid}"
        elif name == "disk-full":
            mount = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(space.thumbnails)],
                capture_output=True,
            )
            if mount.returncode != 0:
                return Outcome(name, "not run: mounting a tmpfs needs root", "", -1, -1, -1, 0.0)
            broke = _error_line(space.run())
            subprocess.run(["mount", "-o", "remount,size=64m", str(space.thumbnails)], check=True)
        elif name == "server-down":
            assert server is not None
            processed = 'SELECT COUNT(*) FROM "MediaItems" WHERE "IsFacesExtracted" = TRUE'
            process = subprocess.Popen(
                space.command(),
                cwd=root,
                env=space.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            while process.poll() is None and not 0 < space.scalar(processed) < len(photos):
                time.sleep(0.01)
            if process.poll() is not None:
                return Outcome(
                    name, "not reached: the run ended before the server was stopped", "", -1, -1, -1, 0.0
                )
            space.store.engine.dispose()
            server.stop()
            _, stderr = process.communicate(timeout=600)
            broke = _error_line(subprocess.CompletedProcess([], process.returncode, "", stderr))
            server.start()
        else:
            raise ValueError(f"unknown drill {name!r}")
        rerun = space.run()
        lost, duplicated, stranded = space.counts()
        took_over = " (took over the lock)" if "took over the lock" in rerun.stderr else ""
        return Outcome(
            name,
            broke,
            _error_line(rerun) + took_over,
            lost,
            duplicated,
            stranded,
            time.perf_counter() - started,
        )
    finally:
        space.store.dispose()
        if name == "disk-full":
            subprocess.run(["umount", "-l", str(space.thumbnails)], capture_output=True)
        if server is not None:
            server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=24, help="photos of the PyPI sample per drill")
    parser.add_argument("--only", nargs="+", choices=DRILLS, default=list(DRILLS))
    args = parser.parse_args(argv)
    sample = sample_folder()
    people = sorted(p for p in (sample / "train").iterdir() if p.is_dir())
    per_person = -(-args.photos // len(people))
    photos = [photo for person in people for photo in sorted(person.glob("*.jpg"))[:per_person]][
        : args.photos
    ]
    others = [p for p in sorted((sample / "val").rglob("*.jpg")) if p not in photos]
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="face-assets-drill-") as tmp:
        for name in args.only:
            outcome = drill(name, Path(tmp) / name, photos, others)
            outcomes.append(outcome)
            print(f"{name}: {outcome}", file=sys.stderr, flush=True)
    print(f"{len(photos)} photos per drill\n")
    print(
        "| drill | broken run | rerun | lost | duplicated | stranded | files lost "
        "| files overwritten | stale faces | seconds |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for o in outcomes:
        files = " | ".join(
            "-" if n is None else str(n) for n in (o.files_lost, o.files_overwritten, o.stale_faces)
        )
        print(
            f"| {o.drill} | {o.broke} | {o.rerun} | {o.lost} | {o.duplicated} | {o.stranded} "
            f"| {files} | {o.seconds:.0f} |"
        )
    failed = [
        o.drill
        for o in outcomes
        if (o.lost, o.duplicated, o.stranded) != (0, 0, 0)
        or (o.files_lost or o.files_overwritten or o.stale_faces)
    ]
    if failed:
        print(f"\nnot all zero: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
