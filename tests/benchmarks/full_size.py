"""Full-size random RAM++/RAM (Swin-L, 4,585 tags): import, parity, seconds per photo, peak RSS.

The official weights cannot be downloaded everywhere, so this builds a checkpoint with the
official architecture and key layout and random weights (ramcli.models.convert.random_init), imports
it through `ramcli models import` exactly as a user would, then:

1. parity: the PyTorch conversion model (which reproduces the authors' implementation bit for
   bit on the golden tiny checkpoints) against `ramcli tag --dry-run --json --threshold 0`
   on real photos: max |score difference| and whether the tag sets at the official thresholds
   are identical;
2. speed and memory: a fresh process tags the photos at each batch size; it reports seconds
   per photo (model load excluded, first batch as warm-up excluded) and its peak RSS.

Usage: python tests/benchmarks/full_size.py [--family ram_plus|ram] [--photos DIR] [--batches 1 8]
Takes a few minutes and ~6 GB of RAM (the PyTorch side); prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("RAMCLI_SHARED", REPO.parent / "shared"))

RUNNER = r"""
import json, sys, time
from pathlib import Path
from ramcli.models import store
from ramcli.runtime.engine import EngineOptions
from ramcli.pipeline.tagger import open_tagger
from ramcli.pipeline.run import TagOptions, tag_run
name, batch, threads, *paths = sys.argv[1:]
paths = [Path(p) for p in paths]
t0 = time.perf_counter()
batch = int(batch)
tagger = open_tagger(store.get(name), EngineOptions(threads=int(threads)), batch_size=batch)
load = time.perf_counter() - t0
warm = paths[:batch]
list(tag_run(warm, tagger, None, TagOptions(dry_run=True, batch_size=batch)))
t1 = time.perf_counter()
n = sum(1 for r in tag_run(paths, tagger, None, TagOptions(dry_run=True, batch_size=batch)) if r.status == "tagged")
dt = time.perf_counter() - t1
# VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's high-water mark
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"batch": batch, "threads": int(threads), "photos": n, "seconds_per_photo": dt / n,
                  "model_load_s": load, "provider": tagger.engine.provider, "peak_rss_mb": hwm / 1024}))
"""


def tag_files(folder: Path, family: str) -> dict[str, Path]:
    data = SHARED / "data" / "recognize-anything"
    if (data / "ram_tag_list.txt").is_file():
        return {"tag_list": data / "ram_tag_list.txt", "tag_list_zh": data / "ram_tag_list_chinese.txt",
                "thresholds": data / "ram_tag_list_threshold.txt"}
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import write_tag_files

    return write_tag_files(folder, 4585)


def photos(folder: Path | None, count: int) -> list[Path]:
    if folder is None:
        folder = SHARED / "data" / "photos"
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not found:
        raise SystemExit(f"no photos in {folder}")
    return [found[i % len(found)] for i in range(count)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=["ram_plus", "ram"], default="ram_plus")
    ap.add_argument("--photos", type=Path, default=None, help="folder of photos (default: ../shared/data/photos)")
    ap.add_argument("--count", type=int, default=16, help="photos per speed run (cycled from the folder)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, nargs="+", default=[0])
    ap.add_argument("--workdir", type=Path, default=None, help="keep the checkpoint and cache here")
    args = ap.parse_args()

    import numpy as np
    import torch

    from ramcli.models.catalog import import_local
    from ramcli.models.convert.random_init import FULL_HEAD, SWIN_L, config, random_model, save_checkpoint
    from ramcli.runtime.images import load_input

    work = args.workdir or Path(tempfile.mkdtemp(prefix="ramcli-full-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["RAMCLI_CACHE_DIR"] = str(work / "cache")
    files = tag_files(work, args.family)
    report: dict[str, object] = {"family": args.family, "workdir": str(work)}

    t = time.perf_counter()
    model = random_model(config(args.family, SWIN_L, FULL_HEAD, 4585), fc_bias=-1.45)
    ckpt = save_checkpoint(model, work / f"random_{args.family}_swin_l.pth")
    report["checkpoint_gb"] = round(ckpt.stat().st_size / 1e9, 2)
    report["build_s"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    name = f"random_{args.family}_swin_l"
    installed = import_local(ckpt, name, tag_list=files["tag_list"], tag_list_zh=files.get("tag_list_zh"),
                             thresholds=files.get("thresholds"))
    report["import_s"] = round(time.perf_counter() - t, 1)
    report["import_parity"] = installed.meta["parity"]
    report["onnx_mb"] = round(installed.size_bytes() / 1e6)

    # Parity on real photos through the CLI, against the PyTorch model.
    imgs = photos(args.photos, 4)[:4]
    out = subprocess.run([sys.executable, "-m", "ramcli", "tag", "--dry-run", "--json", "--threshold", "0",
                          "-m", name, *map(str, imgs)], capture_output=True, text=True, check=True)
    names = installed.tag_names
    thresholds = installed.thresholds
    worst, same = 0.0, True
    for line, img in zip(out.stdout.splitlines(), imgs, strict=True):
        rec = json.loads(line)
        ours = np.zeros(len(names), dtype=np.float64)
        index = {n: i for i, n in enumerate(names)}
        for tg in rec["tags"]:
            ours[index[tg["name"]]] = tg["score"]
        x = torch.from_numpy(load_input(img, installed.preprocess)[0][None])
        with torch.no_grad():
            ref = torch.sigmoid(model(x))[0].double().numpy()
        worst = max(worst, float(np.abs(ours - ref).max()))
        same &= bool(np.array_equal(ref > thresholds, ours > thresholds))
    report["cli_vs_pytorch"] = {"photos": len(imgs), "max_abs_score_diff": worst, "identical_tags": same}
    del model
    # Speed and memory, each in a fresh process.
    runs = []
    for threads in args.threads:
        for batch in args.batches:
            paths = photos(args.photos, args.count)
            res = subprocess.run([sys.executable, "-c", RUNNER, name, str(batch), str(threads), *map(str, paths)],
                                 capture_output=True, text=True, check=True)
            runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), file=sys.stderr)
    report["runs"] = runs
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
