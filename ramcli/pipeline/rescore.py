"""Apply custom tags to every indexed photo from the stored image tokens, without the image encoder.

The reference implementation can only add a tag by running the whole model again on every
image. ramcli keeps each image's 145x512 tokens (float16) and its CLS embedding (float32), so a
new, changed or removed custom tag costs one tag-head pass over the stored tokens with just
that tag as the query: the Swin encoder (two thirds of the work) never runs, and the tag head
sees one query instead of 4,585.

For each model in the index whose tag head takes CLIP label embeddings (RAM++, RAM):

1. stream the images' tokens in batches, as stored (float16: the few-tags head takes them so);
   RAM++'s description weighting uses the float32 CLS embedding, exactly as a full run did;
2. images indexed with ``--no-store-tokens`` are decoded from one of their files and encoded
   again (counted as ``reencoded``);
3. score the changed tags; a tag fires iff its score > its threshold, as in a full run;
4. for each image whose tags changed, rewrite its photos' keywords (same rules as ``ramcli tag``:
   only our own keywords, mtime kept), then update ``image_tags`` and ``photos`` in one
   transaction per batch.

Interrupting loses nothing: the tags stay marked pending and ``ramcli tags apply`` (or the same
command again) redoes the work; every step is idempotent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ramcli import metadata
from ramcli.errors import ImageError, RamcliError
from ramcli.index import FeedbackRow, Index, PhotoRow
from ramcli.models import store
from ramcli.models.families import family_of
from ramcli.pipeline.events import Event
from ramcli.pipeline.feedback import TagNames, learn
from ramcli.pipeline.journal import Journal
from ramcli.pipeline.keywords import KeywordSync, Synced, keywords, one_line, zh_names
from ramcli.runtime.engine import Engine, EngineOptions
from ramcli.runtime.images import load_input
from ramcli.runtime.tagging import apply_verdicts, sigmoid
from ramcli.runtime.vocabulary import Vocabulary
from ramcli.vocab import custom
from ramcli.vocab.custom import CustomTag


@dataclass(frozen=True)
class RescoreOptions:
    write: bool = True  # False (--no-write): index only; files are brought up to date by `tags apply`
    batch_size: int = 32
    engine: EngineOptions = field(default_factory=EngineOptions)
    write_options: metadata.WriteOptions = field(default_factory=metadata.WriteOptions)


def stored_scores(index: Index, model: str, engine: Engine, vocab: Vocabulary,
                  images: list[tuple[str, np.ndarray, np.ndarray]]) -> np.ndarray:
    """Scores (len(images), T) of ``vocab``'s tags from stored embeddings, per (hash, tokens (N, 512) float16 as
    stored, CLS (512,) exact: the descriptions are weighted by it). A video is scored as it was tagged: each
    still on its own, the video taking each tag's best still (where its stills' tokens are stored; else its
    best still's, which its own row holds)."""
    stills = index.still_arrays(model, [h for h, _, _ in images])
    xs: list[np.ndarray] = []
    cls: list[np.ndarray] = []
    owner: list[int] = []
    for n, (digest, tokens, first) in enumerate(images):
        if digest in stills:
            c, t = stills[digest]
            xs.extend(t)
            cls.extend(c)
            owner += [n] * len(c)
        else:
            xs.append(tokens)
            cls.append(first)
            owner.append(n)
    rows = sigmoid(engine.logits(np.stack(xs), vocab.tag_embeds(np.stack(cls)[:, None])))
    if len(owner) == len(images):
        return rows
    out = np.zeros((len(images), rows.shape[1]), rows.dtype)  # sigmoid > 0: the maximum starts from 0
    np.maximum.at(out, np.asarray(owner), rows)
    return out


@dataclass
class _Image:
    hash: str
    embeds: np.ndarray | None  # (145, 512) float16 as stored, or None when it had to be (and could not be) re-encoded
    cls: np.ndarray | None  # (512,) float32: the exact CLS embedding (the stored tokens hold it rounded)


class Rescore:
    """Re-score ``changed`` custom tags and drop the rows of ``removed`` tag indices, everywhere.

    Iterate :meth:`events` (one per photo whose keywords changed, and per error); :attr:`counts`
    holds images scored, re-encoded, photos updated and errors at the end."""

    def __init__(self, index: Index, changed: list[CustomTag], removed: list[int], opts: RescoreOptions,
                 removed_builtin: list[str] | None = None, *, close: Callable[[], None] = lambda: None,
                 only: Collection[str] | None = None) -> None:
        """``removed``: custom tag indices (< 0), dropped for every model; ``removed_builtin``: built-in
        tag names, dropped for the RAM/RAM++ models only (Tag2Text's list is another vocabulary);
        ``close``: called once iterating the run ends, however it ends (the front door closes the index);
        ``only``: these image hashes, not the whole library (a verdict on a few photos), each of whose files
        is brought up to date even where its tags did not change (the verdict goes into its record).

        The user's verdicts (``feedback``) win over every score here, as in a tag run: a rejected tag never
        fires, a confirmed one always does."""
        self.close = close
        self.only = None if only is None else sorted(set(only))
        self.defined: list[CustomTag] = list(changed)
        self.index = index
        self.changed = changed
        self.removed = removed
        self.removed_builtin = removed_builtin or []
        # custom tags' parents go into the hierarchical keywords (ramcli|bird|red kite)
        self.opts = replace(opts, write_options=replace(opts.write_options, ancestry=custom.ancestry(index)))
        self.sync = KeywordSync(self.opts.write_options, journal=Journal(index))
        self.counts: Counter[str] = Counter()
        self._zh_cache: dict[str, dict[int, str]] = {}
        self.on_total: Callable[[int], None] = lambda _n: None
        self.on_image: Callable[[], None] = lambda: None
        self._names: dict[str, TagNames] = {}
        self.accept = False  # `tags confirm`: lift the files' refusals of the confirmed tags (only then)
        self.given: list[FeedbackRow] = []  # `tags confirm/reject`: the verdicts that changed something
        self.missing: list[str] = []  # and the arguments that named no indexed photo

    def tag_names(self, model: str) -> TagNames:
        if model not in self._names:
            self._names[model] = TagNames.of(self.index, model)
        return self._names[model]

    def __iter__(self) -> Iterator[Event]:
        try:
            yield from self.events()
        finally:
            self.close()

    def models(self) -> list[store.InstalledModel]:
        installed = [store.get(name) for name, _ in self.index.models() if store.is_installed(name)]
        return [m for m in installed if family_of(m).takes_custom_tags]

    def events(self) -> Iterator[Event]:
        models = self.models()
        self.on_total(sum(len(self._hashes(m.name)) for m in models))
        for model in models:
            yield from self._model(model)
        if self.removed or self.removed_builtin:
            yield from self._drop_removed([m.name for m in models])
        if self.opts.write:  # with --no-write the files still lack them: `tags apply` finishes the job
            custom.mark_applied(self.index, [t.id for t in self.changed])

    # ---- one model
    def _model(self, model: store.InstalledModel) -> Iterator[Event]:
        if not self.changed:
            return
        engine = Engine(model, self.opts.engine)
        # calibrated thresholds (`ramcli tags calibrate`) in place of the tags' own
        vocab = Vocabulary.builtin(model).only(self.changed).with_thresholds(self.index.calibrated(model.name))
        indices = [vocab.tag_id(i) for i in range(vocab.size)]
        hashes = self._hashes(model.name)
        for start in range(0, len(hashes), self.opts.batch_size):
            images = self._load(model, engine, hashes[start:start + self.opts.batch_size])
            scored = [im for im in images if im.embeds is not None]
            if scored:
                scores = stored_scores(self.index, model.name, engine, vocab,
                                       [(im.hash, im.embeds, im.cls) for im in scored])  # type: ignore[misc]
                said = self.index.verdicts_for([im.hash for im in scored])
                fired = {im.hash: [(indices[j], vocab.names[j], float(s[j])) for j in apply_verdicts(
                    np.flatnonzero(s > vocab.thresholds), s, vocab.names, None, said.get(im.hash))]
                         for im, s in zip(scored, scores, strict=True)}
                yield from self._update(model.name, fired, set(indices))
            for im in images:
                self.counts["scored" if im.embeds is not None else "error"] += 1
                if im.embeds is None:
                    paths = self.index.paths_with_hash(im.hash)
                    where = Path(paths[0]) if paths else None
                    yield Event(where or Path(im.hash), "error", error=str(RamcliError(
                        "indexed without image tokens, and no readable file to encode again", path=where,
                        hint="run `ramcli tag` on its folder (with tokens stored) again")))
                self.on_image()

    def _hashes(self, model: str) -> list[str]:
        """The images this run walks: all of ``model``'s, or those of ``only`` it has."""
        every = self.index.image_hashes(model)
        if self.only is None:
            return every
        wanted = set(self.only)
        return [h for h in every if h in wanted]

    def _load(self, model: store.InstalledModel, engine: Engine, hashes: list[str]) -> list[_Image]:
        rows = self.index.image_arrays(model.name, hashes)
        out = []
        for h in hashes:
            cls, tok = rows[h]
            if tok is not None:
                out.append(_Image(h, tok, cls))  # as the index hands them: float16 tokens, float32 CLS
            else:
                x = self._reencode(model, engine, h)
                out.append(_Image(h, None if x is None else x.astype(np.float16), None if x is None else x[0]))
        return out

    def _reencode(self, model: store.InstalledModel, engine: Engine, digest: str) -> np.ndarray | None:
        """Tokens of an image indexed without them: decode one of its files and run the encoder."""
        for path in self.index.paths_with_hash(digest):
            try:
                x, _ = load_input(Path(path), model.preprocess)
            except (ImageError, OSError):
                continue
            self.counts["reencoded"] += 1
            return engine.encode(x[None])[0]
        return None

    # ---- writing
    def _update(self, model: str, fired: dict[str, list[tuple[int, str, float]]], indices: set[int]) -> Iterator[Event]:
        """New rows for ``indices`` of these images; keywords rewritten where the tag set changed.

        Files where a changed tag fires are checked even when the tag set is the same: a tag
        defined again with another ``--parent`` moves in the hierarchical keywords. Checking
        reads the file; it is written only when something differs.
        """
        plans = []
        forced = set(self.only or ())
        for digest, rows in fired.items():
            have = self.index.tags_of(digest, model)
            old = {i for i, _, _ in have if i in indices}
            others = [(i, n) for i, n, _ in have if i not in indices]
            plans.append((digest, rows, old != {i for i, _, _ in rows} or digest in forced
                          or self._stale(digest, model, rows, others)))
        said = self.index.verdicts_for([d for d, _, _ in plans])
        events: list[Event] = []
        photo_updates = []
        for digest, rows, changed in plans:
            if not changed and not (rows and self.opts.write):
                continue
            verdicts = said.get(digest, {})
            keep = [(i, n, s) for i, n, s in self.index.tags_of(digest, model)
                    if i not in indices and verdicts.get(n) != "reject"]
            tags = [(i, n) for i, n, _ in sorted([*keep, *rows], key=lambda r: -r[2])]
            for row in self.index.photos_with_hash(digest, model):
                names = self._keywords(model, tags, row.written)
                try:
                    done = self._write(Path(row.path), names, row, verdicts, model) if self.opts.write else None
                except (ImageError, OSError) as err:
                    events.append(Event(Path(row.path), "error", error=one_line(err, Path(row.path))))
                    continue
                photo_updates.append((row, done))
                if changed or (done is not None and done.changed):
                    shown = [n for n in names if done is None or n not in done.rejected]
                    events.append(Event(Path(row.path), "retagged", tags=shown))
        with self.index.transaction():  # scores are refreshed even where the same tags fire
            for digest, rows, _ in plans:
                self.index.replace_tags(digest, model, indices, rows)
            for row, done in photo_updates:
                self.index.record_written(row, row.written if done is None else done.written)
                if done is not None and (done.rejected or done.theirs):
                    learn(self.index, row.hash, row.path, done, self.tag_names(model), said.get(row.hash, {}))
            self.sync.settle()
        for ev in events:
            self.counts["updated" if ev.status == "retagged" else "error"] += 1
            yield ev

    def _stale(self, digest: str, model: str, rows: list[tuple[int, str, float]],
               others: list[tuple[int, str]]) -> bool:
        """A file still lacks one of these tags (an earlier `--no-write` deferred it); ``others``: the
        image's other tags, which tell the language its files were written in."""
        fired = [(i, n) for i, n, _ in rows]
        return self.opts.write and any(
            row.storage and not set(self._keywords(model, fired, row.written, also=others)) <= set(row.written)
            for row in self.index.photos_with_hash(digest, model))

    def _keywords(self, model: str, tags: list[tuple[int, str]], written: list[str], *,
                  also: Sequence[tuple[int, str]] = ()) -> list[str]:
        """Keywords for (tag index, English name) pairs in the language ramcli last wrote into this
        photo (`ramcli tag --lang en|zh|both`), told by which names of its tags (``tags`` and
        ``also``) the file got: English only, Chinese only, or both."""
        zh = self._zh(model)
        before = set(written)
        english = any(n in before for _, n in (*tags, *also))
        chinese = any(zh.get(i) in before for i, _ in (*tags, *also))
        return keywords(tags, zh, ("both" if english else "zh") if chinese else "en")

    def _zh(self, model: str) -> dict[int, str]:
        """Tag index -> Chinese name: the model's (when installed) and the custom tags' ``--zh``."""
        if model not in self._zh_cache:
            names = store.get(model).tag_names_zh if store.is_installed(model) else None
            self._zh_cache[model] = zh_names([*enumerate(names or []),
                                              *((t.tag_index, t.name_zh) for t in custom.load(self.index))])
        return self._zh_cache[model]

    def _write(self, path: Path, names: list[str], row: PhotoRow, verdicts: Mapping[str, str],
               model: str) -> Synced:
        """The keyword-sync stage, writing where the index says this photo's keywords are, with the image's
        verdicts carried into the file's record (in the language the file was written in): rejections
        always, confirmations only in a `tags confirm` run (``accept``)."""
        reject, accept = self.tag_names(model).split(
            verdicts, lambda tags: self._keywords(model, list(tags), row.written))
        return self.sync.sync(path, names, row, where_recorded=True, reject=reject,
                              accept=accept if self.accept else [])

    def _drop_removed(self, ram_models: list[str]) -> Iterator[Event]:
        """Rows and keywords of removed tags; custom ones also for models no longer installed."""
        def gone(i: int, name: str, model: str) -> bool:
            return i in self.removed or (i >= 0 and name in self.removed_builtin and model in ram_models)

        rows = self.index.images_with_tags(self.removed_builtin, custom=True)
        for digest, model in rows:
            tags = self.index.tags_of(digest, model)
            drop = [i for i, n, _ in tags if gone(i, n, model)]
            if not drop:
                continue
            kept = [(i, n) for i, n, _ in tags if i not in drop]
            updates = []
            verdicts = self.index.verdicts_for([digest]).get(digest, {})
            for row in self.index.photos_with_hash(digest, model):
                names = self._keywords(model, kept, row.written)
                try:
                    written = self._write(Path(row.path), names, row, verdicts, model).written if self.opts.write \
                        else row.written
                except (ImageError, OSError) as err:
                    self.counts["error"] += 1
                    yield Event(Path(row.path), "error", error=one_line(err, Path(row.path)))
                    continue
                updates.append((row, written, names))
            with self.index.transaction():
                self.index.delete_tags(digest, model, drop)
                for row, written, _ in updates:
                    self.index.record_written(row, written)
                self.sync.settle()
            for row, _, names in updates:
                self.counts["updated"] += 1
                yield Event(Path(row.path), "retagged", tags=names)
