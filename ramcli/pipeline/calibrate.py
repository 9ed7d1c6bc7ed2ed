"""`ramcli tags calibrate`: per-tag thresholds from the user's verdicts, applied from stored embeddings.

The model ships one threshold per tag, tuned on the authors' benchmarks; a library is not a benchmark.
The user's confirmations and rejections (``feedback``) are labels on exactly this library, so each tag
with enough of them gets its own threshold (per model, ``thresholds`` in the index), used by every later
run in place of the shipped one (an explicit ``--threshold`` still wins).

The rule (:func:`fit`), for one tag, with the scores the model gives the judged photos:

1. fewer than ``min_evidence`` verdicts: the threshold is left as it is;
2. the *fitted* threshold is the lowest one at which, among the judged photos it lets through (score
   strictly above it, as when tagging), at least ``target_precision`` are confirmed ones. The lowest,
   because it keeps the most photos that are right. It may go below the shipped threshold only where
   confirmed photos below it say so: with nothing judged above a threshold there is nothing to say it
   is wrong, so such a threshold counts as acceptable only from the shipped one up;
3. thin evidence is shrunk toward the shipped threshold: ``t = official + w * (fitted - official)`` with
   ``w = n / (n + min_evidence)`` for ``n`` verdicts — the shipped threshold counts as ``min_evidence``
   verdicts' worth of prior knowledge; 10 verdicts move a tag half-way, 90 nine tenths of the way.

The scores come from the stored image tokens through the few-tags head (no photo is decoded again; images
indexed with ``--no-store-tokens`` have none and are left out of the plan, and re-encoded when applying,
as `add-tag` does). Applying stores the thresholds (marked pending), then re-decides the tags on every
photo by :class:`rescore.Rescore` — where the user's verdicts win over any threshold — and clears the mark;
an interrupted calibration is finished by the next one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ramcli.index import Index, ThresholdRow
from ramcli.models import store
from ramcli.pipeline.events import Event
from ramcli.pipeline.rescore import Rescore, RescoreOptions, stored_scores
from ramcli.runtime.engine import Engine, EngineOptions
from ramcli.runtime.vocabulary import Vocabulary
from ramcli.vocab import tagops
from ramcli.vocab.custom import CustomTag

TARGET_PRECISION = 0.9
MIN_EVIDENCE = 10


@dataclass(frozen=True)
class Fit:
    threshold: float  # what is used: the fitted one shrunk toward the official one
    fitted: float  # what the verdicts alone say
    weight: float  # how far toward ``fitted``: n / (n + min_evidence)


def fit(confirmed: np.ndarray, rejected: np.ndarray, official: float, *, target: float = TARGET_PRECISION,
        min_evidence: int = MIN_EVIDENCE) -> Fit | None:
    """The calibrated threshold for one tag from the scores of its confirmed and rejected photos (the rule
    in the module's docstring); None with fewer than ``min_evidence`` verdicts."""
    scores = np.concatenate([np.asarray(confirmed, np.float64), np.asarray(rejected, np.float64)])
    right = np.concatenate([np.ones(len(confirmed), bool), np.zeros(len(rejected), bool)])
    n = len(scores)
    if n == 0 or n < min_evidence:
        return None
    # just under each score (so that score passes: firing is strictly above), the official one, the top score
    below = np.nextafter(scores, -np.inf)
    candidates = np.unique(np.concatenate([below, [official, scores.max()]]))
    fitted = float(scores.max())
    for t in candidates:  # ascending: the first acceptable one keeps the most right photos
        through = scores > t
        k = int(through.sum())
        if (k == 0 and t >= official) or (k > 0 and right[through].mean() >= target):
            fitted = float(t)
            break
    w = n / (n + max(min_evidence, 1))
    return Fit(float(official + w * (fitted - official)), fitted, w)


@dataclass
class TagPlan:
    """What calibrating one tag of one model changes."""

    model: str
    tag: str
    official: float
    before: float  # the threshold in use now
    after: float
    fitted: float
    confirmed: int
    rejected: int
    gained: int = 0  # images that get the tag
    lost: int = 0  # images that lose it
    photos: int = 0  # photos (files) whose keywords change
    unscored: int = 0  # images without stored tokens, not in these counts

    @property
    def changes(self) -> bool:
        return abs(self.after - self.before) > 1e-7

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "tag": self.tag, "official": round(self.official, 6),
                "before": round(self.before, 6), "after": round(self.after, 6), "fitted": round(self.fitted, 6),
                "confirmed": self.confirmed, "rejected": self.rejected, "gained": self.gained, "lost": self.lost,
                "photos": self.photos, "unscored": self.unscored}


@dataclass
class Calibration:
    """The plan (:meth:`plan`) and its application (:meth:`apply`, a re-scoring run to iterate)."""

    index: Index
    target: float = TARGET_PRECISION
    min_evidence: int = MIN_EVIDENCE
    batch_size: int = 32
    engine: EngineOptions = field(default_factory=EngineOptions)
    on_total: Callable[[int], None] = lambda _n: None
    on_image: Callable[[], None] = lambda: None

    def models(self) -> list[store.InstalledModel]:
        installed = [store.get(name) for name, _ in self.index.models() if store.is_installed(name)]
        from ramcli.models.families import family_of

        return [m for m in installed if family_of(m).takes_custom_tags]

    def plan(self) -> list[TagPlan]:
        """Score the judged tags on every image from stored tokens; fit; count what would change."""
        judged = self.index.tags_with_feedback()
        work = []
        for model in self.models():
            tags = [t for name in judged if (t := tagops.tag_for(self.index, name, model)) is not None]
            if tags:
                work.append((model, tags))
        self.on_total(sum(self.index.image_count(m.name) for m, _ in work))
        plans: list[TagPlan] = []
        for model, tags in work:
            plans += self._model(model, tags)
        return plans

    def _model(self, model: store.InstalledModel, tags: list[CustomTag]) -> list[TagPlan]:
        now = self.index.calibrated(model.name)
        vocab = Vocabulary.builtin(model).only(tags)
        names = list(vocab.names)
        hashes, scores, unscored = self.scores(model, vocab)
        column = {n: j for j, n in enumerate(names)}
        said = self.index.verdicts_for(hashes)
        by_tag = {t.name: t for t in tags}
        out = []
        for name in names:
            j = column[name]
            official = float(by_tag[name].threshold)  # the tag's own: the model's, or the custom tag's
            before = now.get(name, official)
            verdict = [said.get(h, {}).get(name) for h in hashes]
            s = scores[:, j] if len(hashes) else np.zeros(0, np.float32)
            pos = np.array([x for x, v in zip(s, verdict, strict=True) if v == "confirm"], np.float64)
            neg = np.array([x for x, v in zip(s, verdict, strict=True) if v == "reject"], np.float64)
            got = fit(pos, neg, official, target=self.target, min_evidence=self.min_evidence)
            if got is None:
                continue
            plan = TagPlan(model.name, name, official, before, got.threshold, got.fitted, len(pos), len(neg),
                           unscored=unscored)
            if plan.changes:
                carried = self.index.hashes_with_tag(model.name, name)
                after = {h for h, x, v in zip(hashes, s, verdict, strict=True)
                         if v == "confirm" or (v != "reject" and x > np.float32(plan.after))}
                changed = (after - carried) | (carried & set(hashes) - after)
                plan.gained, plan.lost = len(after - carried), len(carried & set(hashes) - after)
                plan.photos = sum(len(self.index.photos_with_hash(h, model.name)) for h in changed)
            out.append(plan)
        return out

    def scores(self, model: store.InstalledModel, vocab: Vocabulary) -> tuple[list[str], np.ndarray, int]:
        """(hashes, their scores (H, T) for the vocabulary's tags, images left out for lack of tokens)."""
        engine = Engine(model, self.engine)
        every = self.index.image_hashes(model.name)
        hashes: list[str] = []
        parts: list[np.ndarray] = []
        missing = 0
        for start in range(0, len(every), self.batch_size):
            chunk = every[start:start + self.batch_size]
            rows = self.index.image_arrays(model.name, chunk)
            have = [h for h in chunk if rows[h][1] is not None and rows[h][0] is not None]
            missing += len(chunk) - len(have)
            if have:
                parts.append(stored_scores(self.index, model.name, engine, vocab,
                                           [(h, rows[h][1], rows[h][0]) for h in have]))  # type: ignore[misc]
                hashes += have
            for _ in chunk:
                self.on_image()
        return hashes, (np.concatenate(parts) if parts else np.zeros((0, vocab.size), np.float32)), missing

    def apply(self, plans: list[TagPlan], *, write: bool = True) -> Rescore:
        """Store the changed thresholds (pending) and return the run that re-decides those tags — and any
        left pending by an interrupted calibration — on every photo; iterating it to the end clears the mark."""
        changed = [p for p in plans if p.changes]
        with self.index.transaction():
            self.index.put_thresholds([ThresholdRow(p.model, p.tag, p.after, p.official, p.confirmed, p.rejected)
                                       for p in changed], pending=True)
        todo: dict[str, list[str]] = {}
        for m in self.models():
            todo[m.name] = self.index.pending_thresholds(m.name)
        names = sorted({t for tags in todo.values() for t in tags})
        main = self.models()
        tags = [t for name in names if main and (t := tagops.tag_for(self.index, name, main[0])) is not None]
        return _Applying(self.index, tags, RescoreOptions(write=write), todo)


class _Applying(Rescore):
    """A re-scoring run that marks the calibrated thresholds applied once it has gone through every image."""

    def __init__(self, index: Index, tags: list[CustomTag], opts: RescoreOptions, todo: dict[str, list[str]]) -> None:
        super().__init__(index, tags, [], opts)
        self.todo = todo

    def events(self) -> Iterator[Event]:
        yield from super().events()
        if self.opts.write:
            with self.index.transaction():
                for model, tags in self.todo.items():
                    self.index.mark_thresholds_applied(model, tags)
