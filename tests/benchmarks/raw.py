"""Camera RAW decode time per file: the embedded preview against a half-size demosaic, and the image hash.

Writes ``--files`` DNGs of ``--size`` (default 6000x4000, 24 MP: a 12-bit Bayer mosaic of a real photo,
with a full-size JPEG preview in a SubIFD, as cameras write them) with ``tests/media.py``, then times per
file, median of the files: ``read_raw`` taking the preview (what `ramcli tag` does), ``read_raw`` forced to
demosaic (what a RAW without a usable preview costs), and ``raw_hash`` (the sensor data's identity). With
``--bench MODEL`` it also runs `ramcli bench --photos` on the folder with that model and prints its JSON.

Usage: python tests/benchmarks/raw.py [--files 4] [--size 6000 4000] [--bench tiny_ram_plus] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--size", type=int, nargs=2, default=(6000, 4000))
    ap.add_argument("--bench", default=None, help="a model name: also run `ramcli bench --photos` on the folder")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    from media import photo_rgb, write_dng

    from ramcli.runtime.raw import raw_hash, read_raw

    work = args.work or Path(tempfile.mkdtemp(prefix="ramcli-raw-"))
    work.mkdir(parents=True, exist_ok=True)
    size = tuple(args.size)
    files = []
    for i in range(args.files):
        path = work / f"IMG_{i:04d}.dng"
        if not path.exists():
            write_dng(path, rgb=photo_rgb(size), preview=True, orientation=6 if i % 2 else 1)
        files.append(path)

    def timed(fn) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    preview = [timed(lambda p=p: read_raw(p, prefer="preview")) for p in files]
    demosaic = [timed(lambda p=p: read_raw(p, prefer="demosaic")) for p in files]
    hashed = [timed(lambda p=p: raw_hash(p)) for p in files]
    assert all(read_raw(p).source == "preview" for p in files)
    out: dict[str, object] = {
        "files": len(files), "size": f"{size[0]}x{size[1]}", "mb_per_file": round(files[0].stat().st_size / 1e6, 1),
        "preview_s": round(statistics.median(preview), 3), "demosaic_s": round(statistics.median(demosaic), 3),
        "hash_s": round(statistics.median(hashed), 3),
        "demosaic_over_preview": round(statistics.median(demosaic) / statistics.median(preview), 1),
    }
    if args.bench:
        run = subprocess.run([sys.executable, "-m", "ramcli", "bench", "--photos", str(work), "-m", args.bench,
                              "--json"], capture_output=True, text=True, check=False)
        out["bench"] = json.loads(run.stdout) if run.returncode == 0 else run.stderr.strip()[-500:]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
