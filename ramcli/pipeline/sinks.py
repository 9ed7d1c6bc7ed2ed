"""Sink stage: where a run's results go. One pipeline, another last stage (beets' pretend mode):

* :class:`WriteSink` (`ramcli tag`, and `bench` on copies): keywords into each photo or its sidecar
  through the keyword-sync stage, then the batch's index rows in one SQLite transaction. Each file
  write is announced to the index first (``journal``: the write-ahead intent), and each file carries
  ramcli's record of what it wrote, so a kill between a file and its rows claims nothing wrongly: the
  next run recovers the intent and reads the record back; at most the batch in flight is redone.
* :class:`ReportSink` (`--dry-run`): the tags with their scores, nothing written anywhere.

A sink takes the groups the infer stage yields and turns them into :class:`Event`s.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ramcli.errors import ImageError
from ramcli.pipeline.clock import NO_CLOCK, Clock
from ramcli.pipeline.events import Event
from ramcli.pipeline.feedback import TagNames, learn
from ramcli.pipeline.infer import Inferred, Item
from ramcli.pipeline.keywords import KeywordSync, Synced, keywords, one_line, vocab_zh
from ramcli.pipeline.prepare import Prepared

if TYPE_CHECKING:
    from ramcli.index import Index, PhotoRow
    from ramcli.pipeline.sources import Sourced
    from ramcli.pipeline.tagger import OnDemand


class Sink(Protocol):
    def begin(self, found: Sourced) -> None: ...

    def early(self, event: Event) -> Event: ...

    def consume(self, group: list[Item]) -> Iterator[Event]: ...

    def finish(self) -> Iterator[Event]: ...

    def end(self, counts: dict[str, int]) -> None: ...


class _Names:
    """Keywords for a tagger's tags in the run's language (the one ``--lang`` lookup). The Chinese names
    come from the tagger's vocabulary, read when first needed: a run may never open the model."""

    def __init__(self, tagger: OnDemand, lang: str) -> None:
        self.tagger = tagger
        self.lang = lang
        self._zh: dict[int, str] | None = None

    def __call__(self, tags: Sequence[tuple[int, str]]) -> list[str]:
        if self._zh is None:
            self._zh = vocab_zh(self.tagger().vocab) if self.lang != "en" else {}
        return keywords(tags, self._zh, self.lang)


class ReportSink:
    """`--dry-run`: every photo's tags and scores as events; writes nothing anywhere."""

    def __init__(self, tagger: OnDemand, lang: str = "en") -> None:
        self.model = tagger.name
        self.names = _Names(tagger, lang)

    def begin(self, found: Sourced) -> None:
        pass

    def early(self, event: Event) -> Event:
        if event.status in ("error", "skipped"):  # a report line each; skips get no --json line
            event.model = self.model
        return event

    def consume(self, group: list[Item]) -> Iterator[Event]:
        for item in group:
            if isinstance(item, ImageError):
                yield Event(Path(item.path or ""), "error", error=str(item), model=self.model)
            elif isinstance(item, Inferred):
                # one label per tag, in --lang: "dog", "狗" or "dog 狗"
                labels = [" ".join(self.names([(t.index, t.name)])) for t in item.tags]
                yield Event(item.prepared.path, "tagged", tags=labels, caption=item.caption, scored=item.tags,
                            model=self.model)

    def finish(self) -> Iterator[Event]:
        return iter(())

    def end(self, counts: dict[str, int]) -> None:
        pass


class WriteSink:
    """Keywords into the files (keyword-sync stage), rows into the index; a run record around it all.

    A known hash at a new path is a move (the old path is gone) or a copy: its stored tags are
    written into it without inference. A known hash at the same path with a new stat is a metadata
    edit by someone else: only the stat is recorded, the user's keywords are left alone.
    """

    def __init__(self, index: Index, tagger: OnDemand, sync: KeywordSync, *, lang: str = "en",
                 store_tokens: bool = True, prune_under: list[Path] | None = None, roots: Sequence[Path] = (),
                 clock: Clock = NO_CLOCK) -> None:
        self.index = index
        self.tagger = tagger
        self.sync = sync
        self.names = _Names(tagger, lang)
        self.model = tagger.name
        self.store_tokens = store_tokens
        self.prune_under = prune_under
        self.roots = [str(r) for r in roots]
        self.clock = clock
        self._run_id: int | None = None
        self._seen: dict[str, tuple[int, int]] = {}
        self._tag_names: TagNames | None = None

    @property
    def tag_names(self) -> TagNames:
        """The model's tag names, to translate between verdicts and keywords (read once, no model loaded)."""
        if self._tag_names is None:
            self._tag_names = TagNames.of(self.index, self.model)
        return self._tag_names

    def _sync(self, path: Path, digest: str, tags: list[str], row: PhotoRow | None, caption: str | None, *,
              verdicts: dict[str, str] | None = None, where_recorded: bool = False) -> Synced:
        """The keyword sync with the image's rejections carried into the file's record. Confirmations are
        not: a refusal found in the file is the user's newer word (`tags confirm` lifts it when given)."""
        if verdicts is None:
            verdicts = self.index.verdicts_for([digest]).get(digest, {})
        reject, _ = self.tag_names.split(verdicts, self.names)  # a refusal in the file is only lifted by
        return self.sync.sync(path, tags, row, caption, where_recorded=where_recorded, reject=reject)  # confirm

    def _learn(self, digest: str, path: Path, done: Synced, verdicts: dict[str, str] | None = None) -> None:
        """Verdicts the file tells (a ramcli keyword the user deleted, a tag name they added), into the index."""
        if self.sync.write and (done.rejected or done.theirs):
            if verdicts is None:
                verdicts = self.index.verdicts_for([digest]).get(digest, {})
            learn(self.index, digest, str(path), done, self.tag_names, verdicts)

    # Each step that writes runs inside ``index.hold()``: the writer lock, for an index opened with a lock
    # per write (`ramcli watch`); a no-op for `ramcli tag`, which holds it from the start. Events are
    # yielded after the step, so the lock is never held while the caller renders them.
    def begin(self, found: Sourced) -> None:
        with self.index.hold():
            if self.sync.journal is not None:
                self.sync.journal.recover()  # intents a killed run left
            self._seen = found.seen
            self._run_id = self.index.start_run(self.model, self.roots)

    def end(self, counts: dict[str, int]) -> None:
        if self._run_id is not None:
            with self.index.hold():
                self.index.finish_run(self._run_id, counts)

    def early(self, event: Event) -> Event:
        return event

    def consume(self, group: list[Item]) -> Iterator[Event]:
        with self.index.hold():
            events = list(self._consume(group))
        yield from events

    def _consume(self, group: list[Item]) -> Iterator[Event]:
        first = group[0]
        if isinstance(first, ImageError):
            self._remember(first)
            yield Event(Path(first.path or ""), "error", error=str(first))
        elif isinstance(first, Prepared):
            yield self._known_image(first)
        else:
            yield from self._batch([g for g in group if isinstance(g, Inferred)])

    def _remember(self, err: ImageError) -> None:
        """A photo whose image data could not be read: the index keeps the failure with the file state the
        source saw *before* reading it, so a file changed meanwhile is tried again. Failures of the file's
        surroundings (permissions, a vanished file) are not kept: they are fixed without touching the file."""
        from ramcli.index import FailureRow

        seen = self._seen.get(err.path or "")
        if not err.lasting or seen is None:
            return
        with self.index.transaction():
            self.index.put_failure(FailureRow(err.path or "", seen[0], seen[1], self.model, str(err)))

    def _record_photo(self, path: Path, digest: str, written: list[str], storage: str,
                      caption: str | None = None) -> None:
        from ramcli.index import PhotoRow

        st = path.stat()  # after our write: this is the state that means "unchanged" next time
        self.index.put_photo(PhotoRow(str(path), digest, st.st_size, st.st_mtime_ns, written, storage, self.model,
                                      caption))

    def _known_image(self, p: Prepared) -> Event:
        """The pixels are in the index already: a metadata edit, a move, or a copy."""
        path = p.path
        assert p.hash is not None
        row = self.index.photo(str(path))
        try:
            if row is not None and row.hash == p.hash:
                # Someone else edited the metadata: their keywords stay; a keyword of ours they removed is a
                # rejection, applied to every field (the sync writes only if that changes anything).
                tags = self.names([(i, name) for i, name, _ in self.index.tags_of(p.hash, self.model)])
                done = self._sync(path, p.hash, tags, row, self.index.caption_of(p.hash, self.model),
                                  where_recorded=True)
                with self.index.transaction():
                    self._record_photo(path, p.hash, done.written, row.storage, row.written_caption)
                    self._learn(p.hash, path, done)
                    self.sync.settle()
                return Event(path, "updated")
            others = [o for o in self.index.paths_with_hash(p.hash) if o != str(path)]
            gone = [o for o in others if not Path(o).exists()]
            tags = self.names([(i, name) for i, name, _ in self.index.tags_of(p.hash, self.model)])
            caption = self.index.caption_of(p.hash, self.model)
            origin = self.index.photo(gone[0]) if gone else None  # the keywords we wrote travel with the file
            done = self._sync(path, p.hash, tags, origin if origin is not None else row, caption)
            for old in gone:  # a sidecar left behind by the move holds nothing of ours any more
                self.sync.forget(Path(old))
            with self.index.transaction():
                for old in gone:
                    self.index.delete_photo(old)
                self._record_photo(path, p.hash, done.written, done.storage, done.caption)
                self._learn(p.hash, path, done)
                self.sync.settle()
            tags = [t for t in tags if t not in done.rejected]
            return Event(path, "moved" if gone else "copied", tags=tags, moved_from=gone[0] if gone else None,
                         caption=caption)
        except (ImageError, OSError) as err:
            return Event(path, "error", error=one_line(err, path))

    def _batch(self, batch: list[Inferred]) -> Iterator[Event]:
        from ramcli.index import ImageRecord

        records: list[tuple[Inferred, Synced]] = []
        events: list[Event] = []
        with self.clock("metadata"):
            for item in batch:
                path = item.prepared.path
                names = self.names([(t.index, t.name) for t in item.tags])
                try:
                    assert item.prepared.hash is not None
                    done = self._sync(path, item.prepared.hash, names, self.index.photo(str(path)), item.caption,
                                      verdicts=item.verdicts)
                except (ImageError, OSError) as err:
                    events.append(Event(path, "error", error=one_line(err, path)))
                    continue
                records.append((item, done))
                events.append(Event(path, "tagged", tags=[n for n in names if n not in done.rejected],
                                    caption=item.caption))
        clip = self.tagger().clip_space  # Tag2Text's Swin-B tokens are not in CLIP space: they serve no search
        tokens = self.store_tokens and clip
        with self.clock("index"), self.index.transaction():
            for item, done in records:
                p = item.prepared
                assert p.hash is not None
                self.index.put_image(ImageRecord(
                    p.hash, self.model, p.width, p.height, p.taken_at, item.embeds[0] if clip else None,
                    item.embeds if tokens else None, [(t.index, t.name, t.score) for t in item.tags],
                    item.caption, p.duration,
                    None if item.stills is None else [(st.t, st.embeds[0] if clip else None,
                                                       st.embeds if tokens else None,
                                                       [(t.index, t.name, t.score) for t in st.tags])
                                                      for st in item.stills]))
                self._record_photo(p.path, p.hash, done.written, done.storage, done.caption)
                self._learn(p.hash, p.path, done, item.verdicts)  # after the image's rows: a rejection drops its row
            self.sync.settle()
        yield from events

    def finish(self) -> Iterator[Event]:
        """Forget indexed photos (and remembered failures) under the run's folders that no longer exist
        (``--prune``)."""
        if self.prune_under is None:
            return
        with self.index.hold():
            gone = [row.path for row in self.index.photos_under(self.prune_under) if not Path(row.path).exists()]
            failed = [row.path for row in self.index.failures_under(self.prune_under)
                      if not Path(row.path).exists()]
            for path in gone:  # a deleted video's or RAW's sidecar keeps nothing of ours
                self.sync.forget(Path(path))
            with self.index.transaction():
                for path in gone:
                    self.index.delete_photo(path)
                self.sync.settle()
                for path in failed:
                    self.index.forget_failure(path)
                self.index.prune_images()
        for path in gone:
            yield Event(Path(path), "pruned")
