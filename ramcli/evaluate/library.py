"""`ramcli eval --library`: the model on the user's own library, with the user's own word as ground truth.

A benchmark says how a model does on its photos; a user wants to know how it does on theirs, for the tags
they care about. The index has both halves: every image's stored tokens (so every tag's score, with no photo
decoded again, as `tags calibrate` scores them) and the user's verdicts (`tags confirm|reject`, and what
the files say: a model tag name the user typed as a keyword of their own is a confirmation, a ramcli keyword
they deleted a rejection).

Ground truth, per tag the user has confirmed on at least one photo (the tags they use): the photos they
confirmed it on are positives, every other indexed photo a negative — rejected ones by the user's word, the
rest on the assumption that someone who uses a tag uses it wherever it applies. That assumption is what makes
a library usable as a benchmark; tags never confirmed are not evaluated (nothing says where they belong).
The thresholds are the ones in use: calibrated ones where `tags calibrate` set them, else the shipped ones.

The numbers are the authors' (``metrics``: their AP, CP and CR), with their files, and the library itself is
written in their dataset format (``library_taglist.txt``, ``library_annots.txt``, absolute paths), so
``ramcli eval`` of another model or precision can be pointed at it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ramcli.errors import RamcliError
from ramcli.evaluate import report as files
from ramcli.evaluate.dataset import Dataset
from ramcli.index import Index
from ramcli.models import store
from ramcli.pipeline.calibrate import Calibration
from ramcli.runtime.engine import EngineOptions
from ramcli.runtime.vocabulary import Vocabulary
from ramcli.vocab import tagops

GROUND_TRUTH = ("your confirmations (tags confirm, and model tag names you typed as keywords) are positives; "
                "every other photo is a negative for the tags you use")


def run_library_eval(index: Index, model: store.InstalledModel, *, out: Path | None = None,
                     threshold: float | None = None, engine: EngineOptions | None = None, batch_size: int = 32,
                     plot: bool = True, on_total: Callable[[int], None] = lambda _n: None,
                     on_image: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """mAP, CP, CR and per-tag AP of ``model`` on the indexed library (see the module's docstring)."""
    confirmed = sorted({r.tag for r in index.feedback_rows() if r.verdict == "confirm"})
    tags = [t for name in confirmed if (t := tagops.tag_for(index, name, model)) is not None]
    if not tags:
        raise RamcliError("no confirmed tags in this library to measure against",
                          hint="confirm tags on some photos first (`ramcli tags confirm dog PHOTO...`), or "
                               "type model tag names as keywords in your photo app and run `ramcli tag` again")
    on_total(index.image_count(model.name))
    cal = Calibration(index, batch_size=batch_size, engine=engine or EngineOptions(), on_image=on_image)
    vocab = Vocabulary.builtin(model).only(tags)
    hashes, scores, unscored = cal.scores(model, vocab)
    if not hashes:
        raise RamcliError("no photo of this library has stored image tokens to score",
                          hint="run `ramcli tag` (without --no-store-tokens) on the library first")
    names = list(vocab.names)
    said = index.verdicts_for(hashes)
    targets = np.array([[said.get(h, {}).get(n) == "confirm" for n in names] for h in hashes], np.float32)
    now = index.calibrated(model.name)
    by_name = {t.name: t for t in tags}
    thresholds = np.array([threshold if threshold is not None else now.get(n, float(by_name[n].threshold))
                           for n in names], np.float32)
    folder = (out or index.path.with_name(index.path.name + ".eval")).expanduser() / f"library-{model.name}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [(index.paths_with_hash(h) or [h])[0] for h in hashes]
    taglist_file, annot_file = folder / "library_taglist.txt", folder / "library_annots.txt"
    taglist_file.write_text("".join(n + "\n" for n in names), encoding="utf-8")
    annot_file.write_text("".join(",".join([p, *(n for n, y in zip(names, row, strict=True) if y)]) + "\n"
                                  for p, row in zip(paths, targets, strict=True)), encoding="utf-8")
    ds = Dataset("library", index.path.parent, names, paths, targets, Path("/"), taglist_file, annot_file)
    result = files.evaluate_scores(ds, scores, thresholds)
    result = {"model": model.name, "precision": "stored tokens", "decode": None, "provider": None,
              "dataset": "library", "images": len(hashes), "unscored": unscored, "failed": 0,
              "ground_truth": GROUND_TRUTH, "confirmed": int(targets.sum()),
              "rejected": sum(v == "reject" for h in hashes for n, v in said.get(h, {}).items() if n in by_name),
              "from_cache": 0, "inference_s": None, "s_per_image": None,
              "thresholds": f"{threshold} for every tag" if threshold is not None
              else "calibrated where `tags calibrate` set them, else the model's", **result}
    result["files"] = files.write_files(folder, ds, scores, thresholds, result, [])
    result["files"].update(taglist=str(taglist_file), annots=str(annot_file))
    if plot:
        from ramcli.evaluate.plot import write_plot

        result["files"]["plot"] = str(write_plot(folder / "plot.png", scores, targets, names, result,
                                                 f"{model.name} on your library"))
    return {**result, "runs": [result]}
