"""What a folder scan costs now that media items know their content: phone-size photos, a library
of many registered files beside them.

    python scripts/benchmark_register.py [--photos 200] [--library-rows 100000] [--repeats 3] [--json PATH]

Each repeat builds an empty SQLite database holding `--library-rows` files registered elsewhere
(the rest of a library), and a folder of `--photos` JPEGs of 4032 x 3024 px (quality 92, about
3 MB, as phones write them), then times, through `register_folder`:
- first scan: every photo sniffed, hashed (sha256 of its bytes) and registered;
- rescan: nothing changed (each file only stat-ed);
- touched: a tenth of the photos with a new modification time (hashed again, found the same);
- replaced: a tenth rewritten with other pixels (hashed, their media items queued again);
- copies: a tenth copied into a second folder (hashed, registered as copies, no new item);
- deleted: a tenth removed (marked missing).
No model is loaded. Reports medians over repeats (the machine is noisy).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import insert

from face_assets.core.media_item import Registration, register_folder
from face_assets.core.storage.schema import MediaFileTable
from face_assets.core.storage.store import FaceStore
from face_assets_devtools.harness import add_json_argument, median_of, write_json

PHONE_PX = (4032, 3024)


def phone_photo(path: Path, seed: int) -> None:
    """A 12 MP JPEG with smooth content, so that it compresses like a photo (about 3 MB)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize(PHONE_PX, Image.Resampling.BICUBIC)
    noise = rng.integers(-6, 7, (PHONE_PX[1], PHONE_PX[0], 3), dtype=np.int16)
    pixels = np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=92)


def library_rows(store: FaceStore, rows: int) -> None:
    """Files registered in another folder: what a scan reads beside its own folder's."""
    with store.engine.begin() as conn:
        for start in range(0, rows, 10_000):
            conn.execute(
                insert(MediaFileTable),
                [{"FilePath": "/elsewhere", "FileName": f"{r:07d}.jpg", "PathKey": f"{r:064d}",
                  "FileSize": 3_000_000, "FileModifiedNs": r, "ContentHash": f"{r:064x}"}
                 for r in range(start, min(start + 10_000, rows))],
            )  # fmt: skip


def run_once(scratch: Path, photos: list[Path], library: int) -> dict[str, dict[str, float]]:
    store = FaceStore.from_url(f"sqlite:///{scratch / 'faces.db'}", upgrade=True)
    library_rows(store, library)
    folder = scratch / "photos"
    shutil.copytree(photos[0].parent, folder)
    mine = sorted(folder.glob("*.jpg"))
    tenth = mine[: max(len(mine) // 10, 1)]
    results: dict[str, dict[str, float]] = {}

    def phase(name: str, prepare: Callable[[], object], check: Callable[[Registration], bool]) -> None:
        prepare()
        started = time.perf_counter()
        result = register_folder(store, folder)
        seconds = time.perf_counter() - started
        assert check(result), (name, result)
        results[name] = {"seconds": seconds, "ms_per_file": 1000 * seconds / len(mine)}

    phase("first scan", lambda: None, lambda r: len(r.added) == len(mine))
    phase("rescan", lambda: None, lambda r: r.already_known == len(mine))

    def touch() -> None:
        for path in tenth:
            stat = path.stat()
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))

    phase("touched", touch, lambda r: not r.replaced and r.already_known == len(mine))
    phase("replaced", lambda: [phone_photo(p, 10_000 + k) for k, p in enumerate(tenth)],
          lambda r: len(r.replaced) == len(tenth))  # fmt: skip
    copies = folder / "copies"
    phase("copies", lambda: (copies.mkdir(), [shutil.copy2(p, copies / p.name) for p in mine[-len(tenth):]]),
          lambda r: len(r.copies) == len(tenth))  # fmt: skip
    phase("deleted", lambda: [p.unlink() for p in tenth], lambda r: len(r.missing) == len(tenth))
    store.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--library-rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    add_json_argument(parser)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        originals = Path(scratch) / "originals"
        originals.mkdir()
        for k in range(args.photos):
            phone_photo(originals / f"{k:05d}.jpg", k)
        megabytes = sum(p.stat().st_size for p in originals.iterdir()) / args.photos / 1e6
        runs = []
        for repeat in range(args.repeats):
            work = Path(scratch) / f"run{repeat}"
            work.mkdir()
            runs.append(run_once(work, sorted(originals.iterdir()), args.library_rows))
            shutil.rmtree(work)
    report = median_of(runs)
    write_json(args.json, {"photos": args.photos, "mb_per_photo": megabytes, "phases": report})
    print(
        f"{args.photos} photos of {PHONE_PX[0]}x{PHONE_PX[1]} px ({megabytes:.1f} MB each), "
        f"{args.library_rows} other files registered, SQLite, median of {args.repeats}"
    )
    print(f"{'scan':<12}{'seconds':>9}{'ms/file':>9}")
    for name, m in report.items():
        print(f"{name:<12}{m['seconds']:>9.2f}{m['ms_per_file']:>9.2f}")


if __name__ == "__main__":
    main()
