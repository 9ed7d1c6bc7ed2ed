"""Tag vocabulary: names, thresholds, and the label embeddings the tag head is queried with.

RAM++ gives each tag D description embeddings (51 for the built-in tags) and, per image,
weights them by a softmax of their similarity to the image's CLS embedding. Tags are kept in
groups of equal D so each group is one batched matmul, and tags with different numbers of
descriptions share one forward pass (the reference's issue #154 pitfall). RAM has D = 1 and
no reweighting: its tag embeddings are the same for every image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .store import InstalledModel


@dataclass(frozen=True)
class LabelGroup:
    """``count`` consecutive tags starting at ``start``, each with ``embeds.shape[1]`` descriptions."""

    start: int
    embeds: np.ndarray  # (count, D, 512) float32

    @property
    def count(self) -> int:
        return int(self.embeds.shape[0])


def _softmax_last(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    return x


@dataclass
class Vocabulary:
    names: list[str]
    names_zh: list[str] | None
    thresholds: np.ndarray  # (T,) float32
    groups: list[LabelGroup]
    reweight_scale: float | None  # exp() of the checkpoint's reweight_scale; None: RAM, no reweighting

    @property
    def size(self) -> int:
        return len(self.names)

    @classmethod
    def builtin(cls, model: InstalledModel) -> Vocabulary:
        labels = model.label_embed()
        per_tag = int(model.meta["descriptions_per_tag"])
        embeds = labels.reshape(model.num_tags, per_tag, labels.shape[-1])
        scale = model.meta.get("reweight_scale")
        exp_scale = float(np.exp(np.float32(scale))) if model.family == "ram_plus" and scale is not None else None
        return cls(model.tag_names, model.tag_names_zh, model.thresholds, [LabelGroup(0, embeds)], exp_scale)

    def tag_embeds(self, image_embeds: np.ndarray) -> np.ndarray:
        """(B, N, 512) image embeddings -> (B, T, 512) tag embeddings for the tag head."""
        b = image_embeds.shape[0]
        out = np.empty((b, self.size, image_embeds.shape[-1]), dtype=np.float32)
        if self.reweight_scale is None:
            for g in self.groups:
                out[:, g.start:g.start + g.count] = g.embeds[None, :, 0]
            return out
        cls_ = image_embeds[:, 0].astype(np.float32)
        cls_ = cls_ / np.linalg.norm(cls_, axis=-1, keepdims=True)
        scale = np.float32(self.reweight_scale)
        for g in self.groups:
            n, d, c = g.embeds.shape
            flat = g.embeds.reshape(n * d, c)
            sims = (scale * cls_) @ flat.T  # (B, n*d)
            weights = _softmax_last(sims.reshape(b, n, d))
            for i in range(b):  # (n, 1, d) @ (n, d, c): no (n, d, c) temporary per image
                out[i, g.start:g.start + n] = np.matmul(weights[i][:, None, :], g.embeds)[:, 0]
        return out
