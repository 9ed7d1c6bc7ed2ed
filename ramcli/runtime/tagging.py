"""Logits -> tags. The one place that decides which tags a photo gets.

The reference rule is kept exactly: tag c fires iff sigmoid(logit_c) > threshold_c (strict),
with the per-tag thresholds shipped with the model. A user threshold replaces all of them;
0 lists every tag with its score. The user's verdicts on an image (``ramcli tags confirm/reject``,
and keywords they removed or added in other apps) win over both: :func:`apply_verdicts`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from ramcli.runtime.engine import Engine
from ramcli.runtime.vocabulary import Vocabulary

# The logit of a tag that tag screening left out: sigmoid gives 0.0 in float32, below every threshold.
SCREENED_OUT = np.float32(-1e4)


def _host(value: np.ndarray | Any) -> np.ndarray:
    """A tensor `Engine.reweigh` left on the device, back on the host (screening sorts there)."""
    return value if isinstance(value, np.ndarray) else value.numpy()


@dataclass(frozen=True)
class Tag:
    index: int
    name: str
    name_zh: str | None
    score: float

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "name_zh": self.name_zh, "score": round(self.score, 6)}


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """float32 sigmoid that neither overflows nor loses precision for large |x|."""
    x = np.asarray(logits, dtype=np.float32)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


@dataclass(frozen=True)
class Selection:
    """How to choose tags from scores."""

    threshold: float | None = None  # None: the model's per-tag thresholds
    top_k: int | None = None

    def pick(self, scores: np.ndarray, thresholds: np.ndarray, hidden: np.ndarray | None = None) -> np.ndarray:
        """Indices of the chosen tags, highest score first; ``hidden`` tags are never chosen."""
        if self.threshold is None:
            on = scores > thresholds
        elif self.threshold <= 0:
            on = np.ones_like(scores, dtype=bool)
        else:
            on = scores > np.float32(self.threshold)
        if hidden is not None:
            on &= ~hidden
        idx = np.flatnonzero(on)
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        return idx[: self.top_k] if self.top_k is not None else idx


def apply_verdicts(picked: np.ndarray, scores: np.ndarray, names: Sequence[str], hidden: np.ndarray | None,
                   verdicts: Mapping[str, str] | None) -> np.ndarray:
    """The user wins over the model: a rejected tag is dropped whatever its score, a confirmed one is kept
    whatever the threshold (and ``--top-k``: it is the user's, not a guess). A disabled or shadowed
    (``hidden``) tag stays off: it is switched off for the whole library. Best score first."""
    if not verdicts:
        return picked
    keep = [int(i) for i in picked if verdicts.get(names[i]) != "reject"]
    have = set(keep)
    for i, name in enumerate(names):
        if verdicts.get(name) == "confirm" and i not in have and not (hidden is not None and hidden[i]):
            keep.append(i)
    out = np.array(keep, dtype=np.int64)
    return out[np.argsort(-scores[out], kind="stable")] if len(out) else out


class Tagger:
    """Engine + vocabulary: preprocessed images in, scores and tags out."""

    def __init__(self, engine: Engine, vocab: Vocabulary) -> None:
        self.engine = engine
        self.vocab = vocab

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, 3, S, S) -> (image embeddings (B, N, 512), logits (B, T))."""
        if self.engine.side_by_side > 1 and len(images) > 1:
            if self.vocab.reweight_scale is not None:
                self.engine.reweigher  # noqa: B018 - loaded here, not raced for by the workers
            done = list(self.engine.workers.map(self._infer_one, images))
            return np.concatenate([e for e, _ in done]), np.concatenate([lg for _, lg in done])
        embeds = self.engine.encode(images)
        return embeds, self.logits(embeds)

    def _infer_one(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        embeds = self.engine.encode(image[None])
        return embeds, self._logits(embeds)

    def logits(self, image_embeds: np.ndarray) -> np.ndarray:
        """(B, N, 512) -> (B, T); one image at a time where batching only costs memory (CPU)."""
        if not self.engine.head_per_image or len(image_embeds) == 1:
            return self._logits(image_embeds)
        return np.concatenate([self._logits(e[None]) for e in image_embeds])

    def _logits(self, image_embeds: np.ndarray) -> np.ndarray:
        """The tag head over the whole vocabulary. RAM++'s description weighting runs on the
        engine's device (`Engine.reweigh`), one group of equal description counts at a time, and
        the head once per group: it scores every tag on its own, so splitting changes nothing.
        RAM's tag embeddings are the same for every image and come from the vocabulary."""
        v = self.vocab
        if self.screen:
            return self._screened(image_embeds)
        if v.reweight_scale is None:
            return self.engine.logits(image_embeds, v.tag_embeds(image_embeds))
        cls = image_embeds[:, 0]
        parts = [self.engine.logits(image_embeds, self.engine.reweigh(cls, g.embeds, v.reweight_scale))
                 for g in v.groups]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    @property
    def screen(self) -> int:
        """Tag screening's K (``EngineOptions.screen``); 0 where off or where it would screen nothing."""
        k = self.engine.opts.screen
        return k if 0 < k < self.vocab.size - int(self.always.sum()) else 0

    @cached_property
    def always(self) -> np.ndarray:
        """(T,) bool: tags the screen never drops. The user's own (custom) tags: they are few, and a
        screen tuned on the built-in tags says nothing about them."""
        v = self.vocab
        return np.zeros(v.size, dtype=bool) if v.ids is None else np.array([i < 0 for i in v.ids], dtype=bool)

    @property
    def head_tags(self) -> int:
        """Tags the tag head scores per image: all, or the screen's K plus those it always keeps."""
        return self.screen + int(self.always.sum()) if self.screen else self.vocab.size

    def _screened(self, image_embeds: np.ndarray) -> np.ndarray:
        """Tag screening: RAM++ already places every tag in CLIP space for its description
        weighting, so the cosine between a photo's CLS embedding and each tag's (weighted) embedding
        is known before the tag head runs. The head (~112 of RAM++'s 325 GFLOP per photo) then
        scores only the ``screen`` most similar tags per photo, plus ``always``; the others get
        SCREENED_OUT (score 0). The head scores each tag on its own, so a screened-in tag's score is
        exactly what the full head gives; what screening can lose is a tag it left out, which
        ``ramcli models verify --photos --screen K`` measures as recall on the user's photos."""
        v = self.vocab
        embeds = v.tag_embeds(image_embeds) if v.reweight_scale is None else np.concatenate(
            [_host(self.engine.reweigh(image_embeds[:, 0], g.embeds, v.reweight_scale)) for g in v.groups], axis=1)
        cls = image_embeds[:, 0].astype(np.float32)
        cls /= np.linalg.norm(cls, axis=-1, keepdims=True)
        sims = np.einsum("btc,bc->bt", embeds, cls) / np.linalg.norm(embeds, axis=-1)
        sims[:, self.always] = np.inf
        keep = np.sort(np.argpartition(-sims, self.head_tags - 1, axis=1)[:, :self.head_tags], axis=1)
        picked = np.take_along_axis(embeds, keep[:, :, None], axis=1)
        out = np.full((len(image_embeds), v.size), SCREENED_OUT, dtype=np.float32)
        np.put_along_axis(out, keep, self.engine.logits(image_embeds, picked), axis=1)
        return out

    clip_space = True  # the image embeddings' token 0 is a CLIP embedding (search, add-tag use it)

    def captions(self, image_embeds: np.ndarray, logits: np.ndarray) -> list[str | None]:
        """RAM and RAM++ write no captions (Tag2Text does: ``caption.CaptionTagger``)."""
        return [None] * len(logits)

    def tags(self, logits: np.ndarray, selection: Selection, verdicts: Mapping[str, str] | None = None) -> list[Tag]:
        """Tags of one image from its (T,) logits; ``verdicts`` (tag name -> confirm | reject, the user's
        feedback on this image) win over the scores (:func:`apply_verdicts`)."""
        v = self.vocab
        scores = sigmoid(logits)
        picked = apply_verdicts(selection.pick(scores, v.thresholds, v.hidden), scores, v.names, v.hidden, verdicts)
        return [Tag(v.tag_id(int(i)), v.names[i], v.names_zh[i] or None if v.names_zh else None, float(scores[i]))
                for i in picked]
