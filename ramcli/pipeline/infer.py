"""Infer stage: prepared photos -> batches through a model family's tagger -> tags (and captions).

Photos that need no inference (decode errors, images already in the index) pass straight on as
groups of one, so the sink sees them at once; decoded ones go in batches of ``batch_size``, and a
batch reaches the sink as one group (one index transaction).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ramcli.errors import ImageError
from ramcli.pipeline.clock import NO_CLOCK, Clock
from ramcli.pipeline.prepare import Prepared
from ramcli.runtime.tagging import Selection, Tag

if TYPE_CHECKING:
    from ramcli.pipeline.tagger import OnDemand


@dataclass
class Still:
    """One sampled moment of a video, after the model: what search needs to say *when* (``at``)."""

    t: float  # seconds from the start
    embeds: np.ndarray  # (N, 512) its image tokens, token 0 its CLS embedding
    tags: list[Tag]  # the tags this still alone would get


@dataclass
class Inferred:
    """One photo (or video) of a batch, after the model."""

    prepared: Prepared
    embeds: np.ndarray  # (N, 512): this photo's image tokens, token 0 its CLS embedding (a video: its best still's)
    tags: list[Tag]
    caption: str | None
    verdicts: dict[str, str] = field(default_factory=dict)  # the user's on this image: tag name -> confirm | reject
    stills: list[Still] | None = None  # a video's sampled moments; None for a photo
    # the (T,) logits ``tags`` were chosen from (a video: the maximum over its stills): a Ray run's driver
    # chooses the tags again from them with the index's verdicts (pipeline.distributed)
    logits: np.ndarray | None = None


Item = Prepared | ImageError | Inferred


class Infer:
    """The infer stage: ``stage(items)`` yields groups — a lone pass-through item, or one inferred batch.
    The model is opened on the first batch (``tagger`` is an :class:`OnDemand`)."""

    def __init__(self, tagger: OnDemand, selection: Selection | None = None, *, batch_size: int = 4,
                 clock: Clock = NO_CLOCK,
                 verdicts: Callable[[list[str]], dict[str, dict[str, str]]] | None = None) -> None:
        """``verdicts``: the user's feedback on image hashes (the index's), which wins over the scores."""
        self.verdicts = verdicts
        self.tagger = tagger
        self.selection = selection or Selection()
        self.batch_size = batch_size
        self.clock = clock

    def __call__(self, items: Iterable[Prepared | ImageError]) -> Iterator[list[Item]]:
        batch: list[Prepared] = []
        for item in items:
            if isinstance(item, ImageError) or item.pixels is None:
                yield [item]
                continue
            batch.append(item)
            if len(batch) >= self.batch_size:
                yield self.run(batch)
                batch = []
        if batch:
            yield self.run(batch)

    def run(self, batch: list[Prepared]) -> list[Item]:
        """One batch through the model. Timed as bench reports it: where a batch's images run side by
        side (engine.for_batches), encoder and head are one "inference" stage.

        A video's stills run with the photos, as images of their own; the video then gets the union of
        their tags, each scored by its best still (the maximum over stills of the tag's logit), and the
        caption and embedding of its best still: the one whose own tags score highest in sum."""
        parts = [p.pixels if p.video else p.pixels[None] for p in batch]  # type: ignore[index]
        spans, at = [], 0
        for part in parts:
            spans.append((at, at + len(part)))
            at += len(part)
        x = np.concatenate(parts)  # type: ignore[arg-type]
        # A batch of videos holds many stills: the model still sees at most ``batch_size`` images at a time,
        # so memory stays what the user sized it for.
        got = [self._model(x[i:i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
        embeds = got[0][0] if len(got) == 1 else np.concatenate([e for e, _ in got])
        logits = got[0][1] if len(got) == 1 else np.concatenate([lg for _, lg in got])
        tagger, clock = self.tagger(), self.clock
        said = self.verdicts([p.hash for p in batch if p.hash]) if self.verdicts else {}
        verdicts = [said.get(p.hash or "", {}) for p in batch]
        rows: list[int] = []  # per item, the row of x whose embedding (and caption) it keeps
        chosen: list[np.ndarray] = []  # per item, the logits its tags come from
        stills: list[list[Still] | None] = []
        tags: list[list[Tag]] = []
        with clock("head"):
            for p, (a, b), v in zip(batch, spans, verdicts, strict=True):
                if not p.video:
                    rows.append(a)
                    stills.append(None)
                    chosen.append(logits[a])
                    tags.append(tagger.tags(logits[a], self.selection, v))
                    continue
                own = [tagger.tags(logits[j], self.selection) for j in range(a, b)]
                best = max(range(b - a), key=lambda k: (sum(t.score for t in own[k]), -k))
                rows.append(a + best)
                stills.append([Still(t, embeds[a + k], own[k]) for k, t in enumerate(p.times or [])])
                chosen.append(logits[a:b].max(axis=0))
                tags.append(tagger.tags(chosen[-1], self.selection, v))
        t = time.perf_counter()
        captions = tagger.captions(embeds[rows], logits[rows])
        clock.add("caption" if any(c is not None for c in captions) else "head", time.perf_counter() - t)
        return [Inferred(p, embeds[rows[i]], tags[i], captions[i], verdicts[i], stills[i], chosen[i])
                for i, p in enumerate(batch)]

    def _model(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(image embeddings, logits) of up to ``batch_size`` images."""
        tagger, clock = self.tagger(), self.clock
        if clock.timing and not (tagger.engine.side_by_side > 1 and len(x) > 1):
            with clock("encoder"):
                embeds = tagger.engine.encode(x)
            with clock("head"):
                logits = tagger.logits(embeds)
        else:
            with clock("inference"):
                embeds, logits = tagger.infer(x)
        return embeds, logits
