"""Library pipeline benchmark and soak test, with the tiny random RAM++ model.

Speed (default): N photos (JPEG 1024x768 with EXIF, some PNG/WebP/TIFF) tagged by `ramcli tag`
as a user runs it: photos/s of the first run and of a no-change re-run, and the index bytes per
photo with and without the token matrix.

Soak (--kills K): `ramcli tag` killed with SIGKILL at random moments K times; after each kill
every photo must decode to the same pixels with parseable metadata and the index must pass
`PRAGMA integrity_check`; a final run must complete the rest without writing anything twice.
Then nothing may be claimed wrongly (the keywords the user had before — on every 7th photo — are in
no file's ramcli record and no index row), and `ramcli untag` must leave no ramcli keyword anywhere
and every file byte-identical to before ("restored") or, where not, with the user's keywords intact.
The library also holds GIFs (every 25th photo: sidecars).

Usage: python tests/benchmarks/library.py [--photos 1000] [--kills 0] [--workdir DIR]
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import piexif
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))


def make_library(root: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    h, w = 768, 1024
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], -1).astype(np.int16)
    paths = []
    for i in range(n):
        px = np.clip(base + rng.integers(-40, 40, (1, 1, 3)) + rng.integers(-20, 20, base.shape), 0, 255)
        img = Image.fromarray(px.astype(np.uint8))
        folder = root / f"{2000 + i // 250}" / f"{i % 12 + 1:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        kind = i % 20
        if kind == 0:
            p = folder / f"scan_{i:05d}.png"
            img.save(p)
        elif i % 25 == 24:
            p = folder / f"anim_{i:05d}.gif"
            img.resize((256, 192)).convert("P").save(p)
        elif kind == 1:
            p = folder / f"web_{i:05d}.webp"
            img.save(p, quality=85)
        elif kind == 2:
            p = folder / f"print_{i:05d}.tiff"
            img.save(p, compression="tiff_lzw")
        else:
            p = folder / f"IMG_{i:05d}.jpg"
            exif = piexif.dump({"0th": {piexif.ImageIFD.Make: b"Bench", piexif.ImageIFD.Model: b"Cam"},
                                "Exif": {piexif.ExifIFD.DateTimeOriginal: b"2020:01:02 03:04:05"}})
            img.save(p, quality=88, exif=exif)
        paths.append(p)
    return paths


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, dict[str, int]]:
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    dt = time.perf_counter() - t
    counts: dict[str, int] = {}
    for line in res.stdout.splitlines():
        status = json.loads(line)["status"]
        counts[status] = counts.get(status, 0) + 1
    if res.returncode not in (0, 1):
        raise SystemExit(res.stderr)
    return dt, counts


def pixels(path: Path) -> str:
    with Image.open(path) as img:
        return hashlib.sha256(img.convert("RGBA").tobytes()).hexdigest()


def tiny_workspace(work: Path) -> dict[str, str]:
    """Point ramcli at ``work`` (this process and, through the returned env, its children) and
    install the tiny random RAM++ there as ``tiny_ram_plus``."""
    env = {**os.environ, "RAMCLI_CACHE_DIR": str(work / "cache"), "RAMCLI_DATA_DIR": str(work / "data"),
           "HF_HUB_OFFLINE": "1"}
    os.environ.update(env)
    from conftest import write_tag_files
    from ramcli.models.convert.export import import_checkpoint
    from ramcli.models.convert.random_init import config, random_model, save_checkpoint

    files = write_tag_files(work / "tags")
    ckpt = save_checkpoint(random_model(config("ram_plus")), work / "tiny.pth")
    import_checkpoint(ckpt, "tiny_ram_plus", tag_list=files["tag_list"], tag_list_zh=files["tag_list_zh"],
                      thresholds=files["thresholds"])
    return env


def tree(root: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def soak(photos: list[Path], lib: Path, work: Path, base: list[str], env: dict[str, str], kills: int) -> dict:
    """Kill `ramcli tag` ``kills`` times, finish, check nothing lost or claimed wrongly, untag, check again."""
    from conftest import add_user_keywords
    from ramcli import metadata

    users = {p: [f"user {i}", "tag 001"] for i, p in enumerate(photos) if i % 7 == 3 and p.suffix != ".gif"}
    for p, kws in users.items():
        add_user_keywords(p, kws)
    before = {p: pixels(p) for p in photos}
    original = tree(lib)
    index = work / "soak.db"
    cmd = [*base, "--index", str(index), str(lib)]
    rng = random.Random(1)
    t0 = time.perf_counter()
    for _ in range(kills):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                start_new_session=True)
        time.sleep(rng.uniform(1.0, 12.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        bad = [p for p in photos if pixels(p) != before[p]]
        for p in photos:
            metadata.read_keywords(p)
        ok = sqlite3.connect(index).execute("pragma integrity_check").fetchone()[0] if index.exists() else "ok"
        if bad or ok != "ok":
            raise SystemExit(f"damage after a kill: {len(bad)} photos changed, integrity {ok}")
    kill_s = time.perf_counter() - t0
    _dt, counts = run(cmd, env)
    db = sqlite3.connect(index)
    written = {Path(p): set(json.loads(w)) for p, w in db.execute("select path, written from photos")}
    wrongly = {str(p): sorted(set(kws) & written.get(p, set())) for p, kws in users.items()
               if set(kws) & written.get(p, set())}
    keywords = {len(metadata.read_keywords(p) - set(users.get(p, []))) for p in photos}
    _dt, untag = run([sys.executable, "-m", "ramcli", "untag", "--json", "--index", str(index), str(lib)], env)
    after = tree(lib)
    left = [str(p) for p in photos if metadata.read_keywords(p) != set(users.get(p, []))]
    return {"kills": kills, "kill_loop_s": round(kill_s), "final_run": counts,
            "keywords_per_photo_of_ours": sorted(keywords), "claimed_wrongly": wrongly,
            "pixels_identical": all(pixels(p) == before[p] for p in photos), "integrity": "ok",
            "untag": untag, "byte_identical_after_untag": sum(after.get(p) == h for p, h in original.items()),
            "files": len(original), "extra_files_after_untag": sorted(str(p) for p in set(after) - set(original)),
            "keywords_left_after_untag": left}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--kills", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="ramcli-lib-"))
    env = tiny_workspace(work)
    report: dict[str, object] = {"photos": args.photos, "workdir": str(work)}
    lib = work / "Photos"
    photos = make_library(lib, args.photos)
    base = [sys.executable, "-m", "ramcli", "tag", "-m", "tiny_ram_plus", "--threshold", "0", "--top-k", "5",
            "--json"]

    if args.kills:
        report["soak"] = soak(photos, lib, work, base, env, args.kills)
        print(json.dumps(report, indent=2))
        return

    for tokens in (True, False):
        index = work / f"index_{'tokens' if tokens else 'cls'}.db"
        cmd = [*base, "--index", str(index), *([] if tokens else ["--no-store-tokens", "--no-write"]), str(lib)]
        first, c1 = run(cmd, env)
        again, c2 = run(cmd, env)
        db = sqlite3.connect(index)
        db.execute("pragma wal_checkpoint(truncate)")
        db.execute("vacuum")
        db.close()
        key = "with_tokens" if tokens else "without_tokens"
        report[key] = {
            "first_run_s": round(first, 1), "first_run_photos_per_s": round(args.photos / first, 1),
            "rerun_s": round(again, 2), "rerun_photos_per_s": round(args.photos / again, 1),
            "first_counts": c1, "rerun_counts": c2,
            "index_bytes_per_photo": round(index.stat().st_size / args.photos),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
