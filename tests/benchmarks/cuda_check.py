"""One-shot GPU check: does ramcli's CUDA path run, how fast, and does fp16 keep the tags?

On a machine with an NVIDIA GPU, with nothing but this repository installed (`pip install .`):

    python tests/benchmarks/cuda_check.py            # full-size random RAM++, 12 MP JPEGs, < 8 min
    python tests/benchmarks/cuda_check.py --small    # tiny model, small photos: what CI runs on the CPU

It builds RAM++ with the official architecture and random weights (as full_size.py does: the
real weights cannot be downloaded everywhere), imports it through the real conversion
(`import_local`, with its ONNX-vs-PyTorch parity check), makes the fp16 variant, generates JPEGs,
then reports:

* photos/s end to end (``ramcli tag --dry-run``'s pipeline: decoding in the process pool
  overlapped with inference) at each batch size, fp32 and fp16, exact and draft JPEG decoding;
* ms per stage (``ramcli bench``'s clocked pipeline) at the largest batch, per precision;
* GPU memory (nvidia-smi, sampled while running): the peak of each run (batch size x precision,
  what a rule for the batch size from free memory needs) and of the whole check;
* agreement: fp16 against fp32, and CUDA against the CPU (fp32), as tags shared and max |Δ score|,
  with ``fp16_default_ok``: whether fp16 reaches the 99.5 % tag agreement asked of a default;
* whether RAM++'s description weighting ran on the GPU and its output stayed there (I/O binding).

On a machine without CUDA everything runs on the CPU provider (the CUDA-only fields are null), which
is how tests/test_speed.py keeps this script working. Prints a table on stderr and one JSON
document on stdout (and into ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def _jpeg(args: tuple[Path, int, int, int]) -> Path:
    """One photo-like JPEG (smooth gradients, texture, noise), quality 90."""
    from PIL import Image

    path, w, h, seed = args
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    f = rng.uniform(0.002, 0.02, 3)
    img = np.stack([127 + 100 * np.sin(xx * f[0] + yy * f[1] + c) for c in range(3)], -1)
    img += rng.normal(0, 12, (h, w, 1))
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def make_photos(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(folder / f"photo_{i:04d}.jpg", *size, i) for i in range(n)]
    with ProcessPoolExecutor() as pool:
        return list(pool.map(_jpeg, jobs))


class GpuMemory:
    """Peak used GPU memory (MiB) from nvidia-smi, sampled in a thread; None without nvidia-smi."""

    def __init__(self) -> None:
        self.peak: int | None = None
        self.total: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _query(self) -> tuple[int, int] | None:
        if not shutil.which("nvidia-smi"):
            return None
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used,memory.total", "--format=csv,noheader,nounits",
                                  "-i", "0"], capture_output=True, text=True, check=True, timeout=30).stdout
            used, total = (int(v) for v in out.strip().splitlines()[0].split(","))
            return used, total
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return None

    def _sample(self) -> None:
        while not self._stop.is_set():
            got = self._query()
            if got is None:
                return
            self.peak, self.total = max(self.peak or 0, got[0]), got[1]
            self._stop.wait(0.2)

    def __enter__(self) -> GpuMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def build(work: Path, small: bool) -> object:
    """The random RAM++ checkpoint in the official layout, imported as a user would."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import write_tag_files
    from ramcli.models.catalog import import_local
    from ramcli.models.convert.random_init import FULL_HEAD, SWIN_L, config, random_model, save_checkpoint

    if small:
        files, cfg = write_tag_files(work / "tags"), config("ram_plus")
    else:
        data = REPO.parent / "shared" / "data" / "recognize-anything"
        files = ({"tag_list": data / "ram_tag_list.txt", "thresholds": data / "ram_tag_list_threshold.txt"}
                 if (data / "ram_tag_list.txt").is_file() else write_tag_files(work / "tags", 4585))
        cfg = config("ram_plus", SWIN_L, FULL_HEAD, 4585)
    name = "check_ram_plus_" + ("tiny" if small else "swin_l")
    ckpt = save_checkpoint(random_model(cfg, fc_bias=-1.45), work / f"{name}.pth")
    return import_local(ckpt, name, tag_list=files["tag_list"], thresholds=files.get("thresholds"))


def end_to_end(model: object, photos: list[Path], batch: int, precision: str, decode: str) -> dict[str, object]:
    """photos/s of the dry-run pipeline (decoding overlapped with inference), after a warm-up batch."""
    from ramcli.pipeline.run import TagOptions, tag_run
    from ramcli.pipeline.tagger import open_tagger
    from ramcli.runtime.engine import EngineOptions

    tagger = open_tagger(model, EngineOptions(precision=precision, decode=decode), batch_size=batch)
    opts = TagOptions(dry_run=True, batch_size=batch)
    list(tag_run(photos[:batch], tagger, None, opts))  # warm-up: sessions, CUDA kernels, arenas
    t = time.perf_counter()
    done = sum(1 for ev in tag_run(photos, tagger, None, opts) if ev.status == "tagged")
    dt = time.perf_counter() - t
    return {"batch": batch, "precision": precision, "decode": decode, "photos": done,
            "photos_per_s": round(done / dt, 2), "provider": tagger.engine.provider}


def agreement(model: object, images: np.ndarray, ref: dict[str, str], other: dict[str, str]) -> dict[str, object]:
    from ramcli.models.quantize import compare
    from ramcli.pipeline.tagger import open_tagger
    from ramcli.runtime.engine import EngineOptions

    a = open_tagger(model, EngineOptions(**ref))
    b = open_tagger(model, EngineOptions(**other))
    return compare(model, a, images, b, images)


def on_gpu(model: object) -> dict[str, object]:
    """Where the description weighting and the tag head ran, and whether I/O binding kept the tags there."""
    from ramcli.pipeline.tagger import open_tagger
    from ramcli.runtime.engine import EngineOptions
    from ramcli.runtime.images import parity_images

    tagger = open_tagger(model, EngineOptions())
    tagger.infer(parity_images(model.preprocess, 1))
    eng = tagger.engine
    return {"provider": eng.provider, "reweight_provider": eng.reweigher.get_providers()[0],
            "head_provider": eng.head.get_providers()[0], "io_binding": eng.bind,
            "descriptions_resident_on_device": bool(eng._resident) and eng.bind}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="tiny model, 640x480 photos, batches 1 and 4 (CPU/CI)")
    ap.add_argument("--photos", type=int, default=None, help="photos per run (default 256; --small 8)")
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="default 1 8 32 64 (--small: 1 4)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    started = time.perf_counter()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ramcli-cuda-check-"))
    os.environ.setdefault("RAMCLI_CACHE_DIR", str(work / "cache"))
    os.environ.setdefault("RAMCLI_DATA_DIR", str(work / "data"))
    batches = args.batches or ([1, 4] if args.small else [1, 8, 32, 64])
    count = args.photos or (8 if args.small else 256)
    size = (640, 480) if args.small else (4000, 3000)

    import onnxruntime as ort

    from ramcli.models import quantize
    from ramcli.pipeline.bench import run_bench
    from ramcli.runtime.engine import EngineOptions
    from ramcli.runtime.images import parity_images

    report: dict[str, object] = {"onnxruntime": ort.__version__, "available_providers": ort.get_available_providers()}
    t = time.perf_counter()
    model = build(work, args.small)
    report["model"] = {"name": model.name, "parity": model.meta.get("parity"),
                       "build_and_import_s": round(time.perf_counter() - t, 1)}
    t = time.perf_counter()
    quantize.quantize(model, quantize.FP16)
    report["fp16_convert_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    photos = make_photos(work / "photos", count, size)
    report["photos"] = {"count": count, "size": list(size), "generate_s": round(time.perf_counter() - t, 1)}

    report["placement"] = placement = on_gpu(model)
    cuda = placement["provider"] == "CUDA"
    runs = []
    with GpuMemory() as mem:
        for precision in ("fp32", "fp16"):
            for decode in ("exact", "draft"):
                for batch in batches:
                    with GpuMemory() as one:  # per run: what a batch size costs, to size batches from free memory
                        runs.append(end_to_end(model, photos, batch, precision, decode))
                    runs[-1]["gpu_peak_mib"] = one.peak
                    print(json.dumps(runs[-1]), file=sys.stderr)
        stages = {p: run_bench(model, photos[:max(batches) * 2], batch=max(batches),
                               engine=EngineOptions(precision=p)) for p in ("fp32", "fp16")}
    report["end_to_end"] = runs
    report["stages_ms_per_photo"] = {p: {"photos_per_s": r["photos_per_s"], **r["ms_per_photo"]}
                                     for p, r in stages.items()}
    report["gpu_memory_mib"] = {"peak_used": mem.peak, "total": mem.total}

    images = parity_images(model.preprocess, 8 if args.small else 16)
    fp16 = agreement(model, images, {"precision": "fp32"}, {"precision": "fp16"})
    report["fp16_vs_fp32"] = fp16
    report["fp16_default_ok"] = bool(cuda and fp16["tag_agreement"] >= 0.995)
    report["cuda_vs_cpu"] = agreement(model, images, {"device": "cpu"}, {"device": "cuda"}) if cuda else None
    best = max(runs, key=lambda r: r["photos_per_s"])
    report["best"] = best
    report["target_500_photos_per_s_fp16"] = bool(cuda and max(
        (r["photos_per_s"] for r in runs if r["precision"] == "fp16"), default=0) >= 500)
    report["total_s"] = round(time.perf_counter() - started, 1)

    _table(report)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text)
    print(text)


def _table(report: dict[str, object]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"photos/s end to end ({report['placement']['provider']})")
    for col in ("precision", "decode", *(str(r["batch"]) for r in report["end_to_end"]
                                         if r["precision"] == "fp32" and r["decode"] == "exact")):
        table.add_column(col)
    for precision in ("fp32", "fp16"):
        for decode in ("exact", "draft"):
            table.add_row(precision, decode, *(str(r["photos_per_s"]) for r in report["end_to_end"]
                                               if r["precision"] == precision and r["decode"] == decode))
    console = Console(stderr=True)
    console.print(table)
    a = report["fp16_vs_fp32"]
    console.print(f"fp16 vs fp32: {100 * a['tag_agreement']:.2f} % of tags shared, max |Δ score| "
                  f"{a['scores_max_abs']:.4f}; GPU memory peak {report['gpu_memory_mib']['peak_used']} MiB; "
                  f"placement {report['placement']}")


if __name__ == "__main__":
    main()
