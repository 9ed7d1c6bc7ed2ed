"""Scores -> tags, and the RAM++ per-image reweighting, against independent computations."""

from __future__ import annotations

import numpy as np
import pytest

from ramcli.runtime.tagging import Selection, sigmoid
from ramcli.runtime.vocabulary import LabelGroup, Vocabulary


def test_strict_threshold_like_the_reference() -> None:
    scores = np.array([0.5, 0.65, 0.66, 1.0], dtype=np.float32)
    thresholds = np.array([0.5, 0.65, 0.65, 1.0], dtype=np.float32)
    # equal to the threshold does not fire (the official `>`): a 1.0 threshold never fires
    assert Selection().pick(scores, thresholds).tolist() == [2]


def test_user_threshold_replaces_all_and_zero_lists_everything() -> None:
    scores = np.array([0.1, 0.9, 0.3, 0.7], dtype=np.float32)
    thresholds = np.full(4, 0.95, dtype=np.float32)
    assert Selection(threshold=0.2).pick(scores, thresholds).tolist() == [1, 3, 2]
    assert Selection(threshold=0).pick(scores, thresholds).tolist() == [1, 3, 2, 0]
    assert Selection(threshold=0, top_k=2).pick(scores, thresholds).tolist() == [1, 3]


def test_sigmoid_is_stable_and_exact() -> None:
    x = np.array([-200.0, -20.0, -1.0, 0.0, 1.0, 20.0, 200.0], dtype=np.float32)
    got = sigmoid(x)
    want = 1 / (1 + np.exp(-x.astype(np.float64)))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-30)


def naive_reweight(cls: np.ndarray, tags: list[np.ndarray], scale: float) -> np.ndarray:
    """float64, one tag at a time, written straight from the paper's formula."""
    cls = cls / np.linalg.norm(cls)
    out = []
    for e in tags:  # e: (D, 512)
        logits = scale * (e @ cls)
        w = np.exp(logits - logits.max())
        w /= w.sum()
        out.append((w[:, None] * e).sum(0))
    return np.stack(out)


@pytest.mark.parametrize("reweight", [True, False])
def test_mixed_description_counts_in_one_pass(reweight: bool) -> None:
    """Tags with 51, 1 and 7 descriptions share one forward pass (reference issue #154)."""
    rng = np.random.default_rng(1)

    def unit(*shape: int) -> np.ndarray:
        x = rng.normal(size=shape).astype(np.float32)
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    groups = [LabelGroup(0, unit(5, 51, 512)), LabelGroup(5, unit(3, 1, 512)), LabelGroup(8, unit(2, 7, 512))]
    vocab = Vocabulary([f"t{i}" for i in range(10)], None, np.full(10, 0.5, np.float32), groups,
                       30.0 if reweight else None)
    embeds = rng.normal(size=(3, 145, 512)).astype(np.float32)
    got = vocab.tag_embeds(embeds)
    assert got.shape == (3, 10, 512)
    per_tag = [g.embeds[i].astype(np.float64) for g in groups for i in range(g.count)]
    for b in range(3):
        if reweight:
            want = naive_reweight(embeds[b, 0].astype(np.float64), per_tag, 30.0)
        else:
            want = np.stack([e[0] for e in per_tag])
        np.testing.assert_allclose(got[b], want, atol=2e-6)
