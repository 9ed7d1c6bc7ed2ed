"""The authors' result files and ramcli's JSON for one evaluated variant (model, precision, decoding).

Files, in the variant's folder, written as ``batch_inference.py`` writes them so that tools made for
theirs read ours: ``pred.txt`` (``relpath,tag,tag`` at the thresholds), ``ap.txt`` (``Tag,AP``, percent,
2 decimals), ``pr.txt`` (``Tag,Precision,Recall``), ``summary.txt`` (``mAP: ..``, ``CP: ..``, ``CR: ..``,
percent, full precision); plus ``result.json`` (what ``--json`` prints) and ``failed.txt`` when images
could not be read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ramcli.evaluate import metrics
from ramcli.evaluate.dataset import Dataset


def evaluate_scores(ds: Dataset, scores: np.ndarray, thresholds: np.ndarray) -> dict[str, Any]:
    """mAP, CP, CR (percent, as the authors print them) and the per-tag numbers behind them."""
    aps = metrics.average_precisions(scores, ds.targets)
    pr = metrics.precision_recall(metrics.predictions(scores, thresholds), ds.targets)
    positives = ds.targets.sum(axis=0).astype(int)
    per_tag = [{"tag": tag, "AP": float(aps[k] * 100), "precision": float(pr.precision[k] * 100),
                "recall": float(pr.recall[k] * 100), "threshold": float(thresholds[k]), "positives": int(positives[k]),
                "tp": int(pr.tp[k]), "fp": int(pr.fp[k]), "fn": int(pr.fn[k])}
               for k, tag in enumerate(ds.taglist)]
    return {"mAP": float(aps.mean() * 100), "CP": pr.cp * 100, "CR": pr.cr * 100, "per_tag": per_tag,
            "tags_without_positives": int((positives == 0).sum())}


def write_files(folder: Path, ds: Dataset, scores: np.ndarray, thresholds: np.ndarray, result: dict[str, Any],
                failed: list[str]) -> dict[str, str]:
    """The authors' four files (and ramcli's JSON); returns their paths by name."""
    folder.mkdir(parents=True, exist_ok=True)
    pred = metrics.predictions(scores, thresholds)
    files = {name: folder / f"{name}.txt" for name in ("pred", "ap", "pr", "summary")}
    with open(files["pred"], "w", encoding="utf-8") as f:
        for rel, row in zip(ds.relpaths, pred, strict=True):
            tags = [ds.taglist[k] for k in np.flatnonzero(row)]
            f.write(rel + ("," + ",".join(tags) if tags else "") + "\n")
    per = result["per_tag"]
    files["ap"].write_text("Tag,AP\n" + "".join(f"{t['tag']},{t['AP']:.2f}\n" for t in per), encoding="utf-8")
    files["pr"].write_text("Tag,Precision,Recall\n" + "".join(
        f"{t['tag']},{t['precision']:.2f},{t['recall']:.2f}\n" for t in per), encoding="utf-8")
    files["summary"].write_text(f"mAP: {result['mAP']}\nCP: {result['CP']}\nCR: {result['CR']}\n", encoding="utf-8")
    if failed:
        files["failed"] = folder / "failed.txt"
        files["failed"].write_text("".join(line + "\n" for line in failed), encoding="utf-8")
    out = {k: str(v) for k, v in files.items()}
    files_json = folder / "result.json"
    out["result"] = str(files_json)
    files_json.write_text(json.dumps({**result, "files": out}, ensure_ascii=False, indent=1), encoding="utf-8")
    return out
