"""`ramcli bench`: where the time of tagging goes, stage by stage, on this machine.

Bench runs the pipeline of `ramcli tag` (``run.tag_run``) on copies of the photos, into a scratch
index, with a clock on each stage. Photos are prepared inline, so the stages run one after another
on each batch (no overlap) and each has its own clock:

    decode    image hash + read + EXIF transpose + resize + normalise (the prepare stage)
    encoder   the image encoder (Swin)
    head      the tag part: RAM++'s description weighting + the tag head
    caption   Tag2Text only: tag encoder + beam search
    metadata  keywords written into a *copy* of each photo (yours are never touched; copying is not timed)
    index     the batch's rows into a scratch SQLite index, one transaction

End to end = their sum (``ramcli tag`` overlaps decoding with inference, so it is a little
faster than that). Against the limit: each model stage's FLOPs (``models.flops``, counted on the
graphs) over its time is its achieved GFLOP/s, and ``of_matmul_peak`` divides the end-to-end rate
by the rate a plain float32 matrix product reaches here on the same threads (``matmul_gflops``):
how much of what this machine can multiply the run turns into tags.

One untimed warm-up batch comes first (``warmup_s``), as model loading
(``load_s``) does. Peak RSS is the process's high-water mark (VmHWM), model loading included.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np

from ramcli.errors import ImageError
from ramcli.index import open_index
from ramcli.models import store
from ramcli.models.families import family_of
from ramcli.models.flops import matmul_gflops, model_flops, reweight_gflop
from ramcli.pipeline.clock import Clock
from ramcli.pipeline.run import TagOptions, tag_run
from ramcli.pipeline.tagger import open_tagger
from ramcli.runtime.engine import EngineOptions
from ramcli.runtime.images import load_input

# "inference": encoder and tag head together, where the images of a batch run side by side
# (engine.for_batches) and the two cannot be timed apart.
STAGES = ("decode", "encoder", "head", "inference", "caption", "metadata", "index")


def peak_rss_mb() -> float | None:
    """VmHWM of this process in MiB (Linux); None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def synthetic_photos(folder: Path, n: int, size: tuple[int, int] = (1024, 768), seed: int = 0) -> list[Path]:
    """``n`` photo-like JPEGs (gradients + noise, quality 90): decoding costs what a real photo's does."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], -1).astype(np.int16)
    out = []
    for i in range(n):
        px = np.clip(base + rng.integers(-40, 40, (1, 1, 3)) + rng.integers(-20, 20, base.shape), 0, 255)
        p = folder / f"synthetic_{i:04d}.jpg"
        Image.fromarray(px.astype(np.uint8)).save(p, quality=90)
        out.append(p)
    return out


def _warm_up(tagger: Any, photos: list[Path]) -> None:
    """One untimed batch first: onnxruntime loads the encoder lazily and sizes its buffers on the
    first run (measured on Swin-L: +1.1 s), which is start-up, not photos/s."""
    pixels = []
    for p in photos:
        with suppress(ImageError):  # reported by the timed pass
            pixels.append(load_input(p, tagger.engine.preprocess)[0])
    if pixels:
        embeds, logits = tagger.infer(np.stack(pixels))
        tagger.captions(embeds, logits)


def run_bench(model: store.InstalledModel, photos: list[Path], *, batch: int = 4,
              engine: EngineOptions | None = None, report: Callable[[str], None] = lambda _m: None,
              on_photo: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Tag copies of ``photos`` through the same pipeline as `ramcli tag` (write sink, scratch index),
    preparing inline so that each stage has its own clock; the numbers ``ramcli bench`` prints."""
    opts = engine or EngineOptions()
    t0 = time.perf_counter()
    tagger = open_tagger(model, opts, batch_size=batch)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _warm_up(tagger, photos[:batch])
    warmup_s = time.perf_counter() - t0
    clock = Clock()
    work = Path(tempfile.mkdtemp(prefix="ramcli-bench-"))
    try:
        copies = work / "photos"
        copies.mkdir()
        for i, p in enumerate(photos):  # yours are never touched
            shutil.copyfile(p, copies / f"{i:05d}_{p.name}")
        ix = open_index(work / "bench.db", writer=True)
        run = tag_run([copies], tagger, ix, TagOptions(batch_size=batch), close=ix.close, clock=clock,
                      pool="inline")
        for ev in run:
            if ev.status == "error":
                report(ev.error or "")
            elif ev.status == "tagged":
                on_photo()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    done, errors = run.counts.get("tagged", 0), run.counts.get("error", 0)
    total = sum(clock.seconds.values())
    limit = _against_the_limit(model, tagger, clock.seconds, done, total, opts.threads) if done else {}
    return {
        "model": model.name, "family": model.family, "provider": tagger.engine.provider,
        "backend": tagger.engine.opts.backend, "precision": tagger.engine.opts.precision,
        "screen": getattr(tagger, "screen", 0),  # tag screening's K; 0: every tag
        "threads": opts.threads or os.cpu_count(), "batch": batch, "side_by_side": tagger.engine.side_by_side,
        "photos": done, "errors": errors,
        "load_s": round(load_s, 2), "warmup_s": round(warmup_s, 2),
        "photos_per_s": round(done / total, 3) if total else None,
        "s_per_photo": round(total / done, 3) if done else None,
        "ms_per_photo": {s: round(1000 * clock.seconds[s] / done, 1) for s in STAGES if done and s in clock.seconds},
        "peak_rss_mb": peak_rss_mb(),
        **limit,
    }


def _against_the_limit(model: store.InstalledModel, tagger: Any, seconds: dict[str, float], done: int,
                       total: float, threads: int) -> dict[str, Any]:
    """Achieved GFLOP/s per model stage and end to end, the machine's float32 matrix-product rate on
    the same threads, and their ratio; nothing for a family the FLOP count does not cover."""
    family = family_of(model)  # the encoder + tag head pair: RAM and RAM++, not Tag2Text's captioner
    flops = model_flops(model) if family.tags and not family.captions else None
    if flops is None:
        return {}
    vocab = tagger.vocab
    head = flops.head(tagger.head_tags)
    if vocab.reweight_scale is not None:  # RAM++: the description weighting runs over every tag
        head += sum(reweight_gflop(g.count, g.embeds.shape[1], g.embeds.shape[2]) for g in vocab.groups)
    per_stage = {"encoder": flops.encoder, "head": head, "inference": flops.encoder + head}
    if seconds.get("inference"):  # side by side: encoder and head are timed as one stage
        per_stage = {"inference": flops.encoder + head}
    rate = {s: round(per_stage[s] * done / seconds[s], 1) for s in per_stage if seconds.get(s)}
    rate["end_to_end"] = round((flops.encoder + head) * done / total, 1)
    peak = matmul_gflops(threads)
    return {"gflop_per_photo": {"encoder": round(flops.encoder, 2), "head": round(head, 2)},
            "gflops": rate, "matmul_gflops": round(peak, 1),
            "of_matmul_peak": round(rate["end_to_end"] / peak, 3)}
