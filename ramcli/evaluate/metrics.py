"""The authors' metrics (recognize-anything ``ram/utils/metrics.py``), written from their definitions.

Why not scikit-learn: the paper's numbers are these definitions, which differ from sklearn's
``average_precision_score`` in two places that move a benchmark's mAP: a tag with no positive
image counts as AP 0 and stays in the mean (sklearn warns and gives 0 or nan), and tied scores are
ranked in the order ``argsort()[::-1]`` leaves them (sklearn treats a tie as one threshold). Where
neither happens the two agree (the tests check it).

A tag is predicted when its score is ``>=`` its threshold, as the authors' evaluation does (tagging
photos uses ``>``, as their inference does; only a score exactly at the threshold differs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AP_EPS = 1e-8  # the authors' epsilons, kept: they decide what an empty tag scores
PR_EPS = 1e-9


def average_precision(scores: np.ndarray, target: np.ndarray) -> float:
    """Mean of the precision at the rank of each positive, ranking by descending score.

    The order is ``np.argsort(scores)[::-1]`` on the scores as given (float32 in ramcli, as the
    authors' torch logits), so tied scores are broken exactly as theirs are."""
    order = np.argsort(scores)[::-1]
    hits = np.asarray(target)[order] == 1
    positives_so_far = np.cumsum(hits)
    total = positives_so_far[-1] if len(hits) else 0
    precision_at_hit = np.where(hits, positives_so_far, 0) / np.arange(1, len(hits) + 1)
    return float(precision_at_hit.sum() / (total + AP_EPS))


def average_precisions(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(T,) AP of each column of (N, T) ``scores`` against 0/1 ``targets``."""
    return np.array([average_precision(scores[:, k], targets[:, k]) for k in range(scores.shape[1])])


@dataclass(frozen=True)
class PR:
    """Per-tag precision and recall at the thresholds; CP and CR are their plain means."""

    precision: np.ndarray
    recall: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray

    @property
    def cp(self) -> float:
        return float(self.precision.mean()) if self.precision.size else 0.0

    @property
    def cr(self) -> float:
        return float(self.recall.mean()) if self.recall.size else 0.0


def predictions(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(N, T) bool: score >= threshold (the authors' evaluation rule)."""
    return scores >= thresholds[None, :]


def precision_recall(pred: np.ndarray, targets: np.ndarray) -> PR:
    """Per-tag P = TP / (TP + FP + 1e-9) and R = TP / (TP + FN + 1e-9)."""
    t = targets.astype(bool)
    tp = (pred & t).sum(axis=0)
    fp = (pred & ~t).sum(axis=0)
    fn = (~pred & t).sum(axis=0)
    return PR(tp / (tp + fp + PR_EPS), tp / (tp + fn + PR_EPS), tp, fp, fn)


def pr_curve(scores: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at every cut of the ranking (for the plot), in the same order as AP."""
    order = np.argsort(scores)[::-1]
    hits = np.asarray(target)[order] == 1
    tp = np.cumsum(hits)
    total = max(int(tp[-1]) if len(tp) else 0, 1)
    return tp / np.arange(1, len(hits) + 1), tp / total
