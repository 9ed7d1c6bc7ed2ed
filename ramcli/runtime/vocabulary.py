"""Tag vocabulary: names, thresholds, and the label embeddings the tag head is queried with.

RAM++ gives each tag D description embeddings (51 for the built-in tags) and, per image,
weights them by a softmax of their similarity to the image's CLS embedding. Tags are kept in
groups of equal D so each group is one batched matmul, and tags with different numbers of
descriptions share one forward pass (the reference's issue #154 pitfall). RAM has D = 1 and
no reweighting: its tag embeddings are the same for every image.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from ramcli.models.families import family_of
from ramcli.models.store import InstalledModel

if TYPE_CHECKING:
    from ramcli.vocab.custom import CustomTag


@dataclass(frozen=True)
class LabelGroup:
    """``count`` consecutive tags starting at ``start``, each with ``embeds.shape[1]`` descriptions."""

    start: int
    embeds: np.ndarray  # (count, D, 512) float32

    @property
    def count(self) -> int:
        return int(self.embeds.shape[0])


def _mean_row(rows: np.ndarray) -> np.ndarray:
    mean = rows.mean(axis=0)
    return (mean / np.linalg.norm(mean))[None].astype(np.float32)


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
    ids: list[int] | None = None  # index stored for each position (None: the position; custom tags: -id)
    hidden: np.ndarray | None = field(default=None)  # (T,) bool: scored but never reported (disabled, shadowed)

    @property
    def size(self) -> int:
        return len(self.names)

    def tag_id(self, position: int) -> int:
        return position if self.ids is None else self.ids[position]

    def with_custom(self, custom: Iterable[CustomTag], disabled: Iterable[str] = ()) -> Vocabulary:
        """This vocabulary plus the user's tags, in one forward pass.

        Custom tags are appended in groups of equal description count D (sorted by D, then id),
        each with its own threshold. A built-in tag named in ``disabled``, or named like a custom
        tag, stays in the pass (so no 480 MB copy of the built-in embeddings is made) but is hidden.
        RAM has no per-image reweighting: a custom tag's D embeddings are averaged into one.
        """
        tags = sorted(custom, key=lambda t: (t.embeds.shape[0] if self.reweight_scale else 1, t.id))
        if not tags and not disabled:
            return self
        off = {n.casefold() for n in disabled} | {t.name.casefold() for t in tags}
        hidden = np.array([n.casefold() in off for n in self.names] + [False] * len(tags), dtype=bool)
        groups = list(self.groups)
        start = self.size
        by_d: dict[int, list[np.ndarray]] = {}
        for t in tags:
            e = t.embeds if self.reweight_scale or len(t.embeds) == 1 else _mean_row(t.embeds)
            by_d.setdefault(e.shape[0], []).append(e)
        for rows in by_d.values():
            groups.append(LabelGroup(start, np.stack(rows).astype(np.float32)))
            start += len(rows)
        zh = self.names_zh
        return replace(
            self, names=[*self.names, *(t.name for t in tags)],
            names_zh=None if zh is None else [*zh, *(t.name_zh or "" for t in tags)],
            thresholds=np.concatenate([self.thresholds, np.array([t.threshold for t in tags], np.float32)]),
            groups=groups, ids=[*(self.ids or range(self.size)), *(t.tag_index for t in tags)], hidden=hidden)

    def with_thresholds(self, calibrated: Mapping[str, float]) -> Vocabulary:
        """These tags' thresholds replaced (`ramcli tags calibrate`'s, by tag name); the others as they are."""
        if not calibrated:
            return self
        t = self.thresholds.astype(np.float32).copy()
        for i, name in enumerate(self.names):
            if name in calibrated:
                t[i] = np.float32(calibrated[name])
        return replace(self, thresholds=t)

    def only(self, custom: Iterable[CustomTag]) -> Vocabulary:
        """Just these custom tags (no built-in ones): what re-scoring stored tokens needs."""
        empty = replace(self, names=[], names_zh=None if self.names_zh is None else [],
                        thresholds=np.zeros(0, np.float32), groups=[], ids=[], hidden=None)
        return empty.with_custom(custom)

    @classmethod
    def builtin(cls, model: InstalledModel) -> Vocabulary:
        labels = model.label_embed()
        per_tag = int(model.meta["descriptions_per_tag"])
        embeds = labels.reshape(model.num_tags, per_tag, labels.shape[-1])
        scale = model.meta.get("reweight_scale")
        weighted = family_of(model).weights_descriptions
        exp_scale = float(np.exp(np.float32(scale))) if weighted and scale is not None else None
        return cls(model.tag_names, model.tag_names_zh, model.thresholds, [LabelGroup(0, embeds)], exp_scale)

    def tag_embeds(self, image_embeds: np.ndarray) -> np.ndarray:
        """(B, N, 512) image embeddings -> (B, T, 512) tag embeddings for the tag head.

        Tagging photos runs RAM++'s weighting as an onnxruntime graph on the model's device
        instead (`ramcli.reweight`, held to this function by the tests); this serves RAM, the
        re-scoring of a few custom tags over stored tokens, and the conversion's parity checks."""
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
