"""`ramcli eval`: a model (at one or more precisions and decodings) on a dataset, side by side.

Each variant gets its own folder under the output folder (``<model>-<precision>-<decode>/``) holding
its cached scores and the authors' files, so asking again with other thresholds is instant and
fp32 vs int8, or exact vs draft decoding, is judged by mAP rather than by tag agreement alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ramcli.errors import RamcliError, UsageError
from ramcli.evaluate import report as files
from ramcli.evaluate.dataset import Dataset, load_dataset
from ramcli.evaluate.scores import Report, TagPlan, compute, plan
from ramcli.models import store
from ramcli.runtime.engine import EngineOptions


@dataclass(frozen=True)
class EvalOptions:
    """What `ramcli eval` was asked: variants side by side, thresholds as the authors' options."""

    precisions: tuple[str, ...] = ("fp32",)
    decodes: tuple[str, ...] = ("exact",)
    threshold: float | None = None  # one for every tag (the authors' --threshold); taken as given, 0 included
    threshold_file: Path | None = None  # one per taglist line (the authors' --threshold-file)
    open_set: bool = False  # every tag open-set, as the authors' --open-set
    images: Path | None = None  # default DATASET/imgs
    out: Path | None = None  # default DATASET/ramcli-eval
    batch_size: int = 8
    device: str = "auto"
    threads: int = 0
    plot: bool = True


def thresholds_for(ds: Dataset, tp: TagPlan, opts: EvalOptions) -> tuple[np.ndarray, str]:
    """The thresholds and where they came from, as the authors' ``load_thresholds`` decides."""
    if opts.threshold is not None and opts.threshold_file is not None:
        raise UsageError("--threshold and --threshold-file exclude each other", hint="give one of them")
    if opts.threshold_file is not None:
        try:
            values = [float(x) for x in opts.threshold_file.read_text(encoding="utf-8").split()]
        except (OSError, ValueError) as exc:
            raise RamcliError(f"not a file of one threshold a line ({exc})", path=opts.threshold_file) from None
        if len(values) != len(ds.taglist):
            raise RamcliError(f"has {len(values)} thresholds for {len(ds.taglist)} tags", path=opts.threshold_file,
                              hint="one threshold a line, in the taglist's order")
        return np.array(values, np.float32), str(opts.threshold_file)
    if opts.threshold is not None:
        return np.full(len(ds.taglist), opts.threshold, np.float32), f"{opts.threshold} for every tag"
    return tp.thresholds, "the model's per-tag thresholds; 0.5 for open-set tags"


def run_eval(model: store.InstalledModel, dataset: Path, opts: EvalOptions, *, report: Report = lambda _m: None,
             on_variant: Callable[[str, int], None] = lambda _label, _n: None,
             on_image: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Evaluate every variant; the first variant's numbers at the top level, all of them under ``runs``."""
    ds = load_dataset(dataset, opts.images)
    if opts.threshold_file is not None or opts.threshold is not None:  # refuse a bad file before any inference
        thresholds_for(ds, _probe(ds), opts)
    missing = sum(not p.exists() for p in ds.images)
    if missing == len(ds.images):
        raise RamcliError(f"none of the {len(ds.images)} images is there", path=ds.img_root,
                          hint="put the images under imgs/, or point --images at them")
    out = (opts.out or ds.root / "ramcli-eval").expanduser()
    tp = plan(model, ds, open_set=opts.open_set, report=report)
    thresholds, source = thresholds_for(ds, tp, opts)
    runs = []
    for precision in opts.precisions:
        for decode in opts.decodes:
            label = f"{model.name}-{precision}-{decode}"
            engine = EngineOptions(device=opts.device, threads=opts.threads, precision=precision, decode=decode)
            folder = out / label
            sc = compute(model, ds, tp, engine, folder, batch_size=opts.batch_size, report=report,
                         on_total=lambda n, label=label: on_variant(label, n), on_image=on_image)
            result = files.evaluate_scores(ds, sc.scores, thresholds)
            computed = len(ds.images) - sc.cached
            result = {"model": model.name, "precision": precision, "decode": decode, "provider": sc.provider or None,
                      "dataset": ds.name, "images": len(ds.images), "failed": len(sc.failed),
                      "failed_note": "scored as a black image, as the authors do, so numbers stay comparable"
                      if sc.failed else None,
                      "from_cache": sc.cached, "inference_s": round(sc.seconds, 3),
                      "s_per_image": round(sc.seconds / computed, 4) if computed and sc.seconds else None,
                      "thresholds": source, "open_set_tags": int(tp.open_set.sum()),
                      "open_set_with_descriptions": int(tp.descriptions_used.sum()), **result}
            result["files"] = files.write_files(folder, ds, sc.scores, thresholds, result, sc.failed)
            result["files"]["scores"] = str(folder / "scores.npy")
            if opts.plot:
                from ramcli.evaluate.plot import write_plot

                png = write_plot(folder / "plot.png", sc.scores, ds.targets, ds.taglist, result, label)
                result["files"]["plot"] = str(png)
            runs.append(result)
    return {**runs[0], "runs": runs}


def _probe(ds: Dataset) -> TagPlan:
    """A plan with no model, only for checking a threshold option's shape before inference."""
    n = len(ds.taglist)
    return TagPlan(None, np.arange(n), np.zeros(n, np.float32), np.zeros(n, bool), np.zeros(n, bool))
