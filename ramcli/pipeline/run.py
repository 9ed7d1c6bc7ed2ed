"""The pipeline: source -> prepare -> infer -> sink, run as a stream of :class:`Event`s.

beets' ``ImportSession.run`` is the model: a run is a list of stages, and what differs between
`ramcli tag`, `tag --dry-run` and `bench` is the last one (see ``sinks``), not the loop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ramcli import metadata
from ramcli.errors import ImageError
from ramcli.media import Media
from ramcli.pipeline import sources
from ramcli.pipeline.clock import NO_CLOCK, Clock
from ramcli.pipeline.events import Event
from ramcli.pipeline.infer import Infer, Item
from ramcli.pipeline.journal import Journal
from ramcli.pipeline.keywords import KeywordSync, one_line
from ramcli.pipeline.prepare import Pool, Prepare, Sampling
from ramcli.pipeline.sinks import ReportSink, Sink, WriteSink
from ramcli.pipeline.tagger import OnDemand
from ramcli.runtime.images import Preprocess
from ramcli.runtime.tagging import Selection

if TYPE_CHECKING:
    from ramcli.index import Index, PhotoRow

#: What can replace prepare -> infer: the source's findings in, groups as :class:`Infer` yields them out (a lone
#: pass-through item, or one inferred batch). A Ray run is one (``pipeline.distributed``): the sink stays the same.
Middle = Callable[[sources.Sourced], Iterable[list[Item]]]


@dataclass(frozen=True)
class TagOptions:
    """Everything `ramcli tag` can be told, besides the model and the engine."""

    dry_run: bool = False  # the report sink: show tags, write nothing anywhere
    write: bool = True  # False (--no-write): index only
    store_tokens: bool = True  # the 145x512 token matrix, float16
    prune: bool = True
    batch_size: int = 4
    workers: int = 0  # 0: one per core
    exclude: tuple[str, ...] = ()
    selection: Selection = field(default_factory=Selection)
    write_options: metadata.WriteOptions = field(default_factory=metadata.WriteOptions)
    lang: str = "en"  # keywords: en | zh | both (RAM/RAM++ have Chinese names)
    overwrite_description: bool = False  # Tag2Text: replace a description the user wrote
    retry_errors: bool = False  # read again files that failed before and have not changed since
    # more places whose vanished photos are forgotten (with ``prune``): `ramcli watch` names the files and
    # folders it saw deleted, since the paths it tags are only those that changed
    forget: tuple[Path, ...] = ()
    sampling: Sampling = field(default_factory=Sampling)  # a video's stills: one per N seconds, K at most
    media: Media = "all"  # "photos" (--exclude-videos) | "videos" (--only-videos)


class Run:
    """One pass of the pipeline. Iterate it (or :meth:`events`); :attr:`counts` holds the statuses at the end.

    The source runs first (``on_total`` then gets the number of paths), then prepared photos stream
    through inference into the sink; ``close`` runs once the stream ends, however it ends.
    """

    def __init__(self, source: Callable[[], sources.Sourced], prepare: Prepare, infer: Infer, sink: Sink, *,
                 close: Callable[[], None] = lambda: None, middle: Middle | None = None) -> None:
        """``middle``: runs in place of ``infer(prepare(...))`` (a Ray run)."""
        self.source = source
        self.prepare = prepare
        self.infer = infer
        self.sink = sink
        self.close = close
        self.middle = middle
        self.counts: Counter[str] = Counter()
        self.on_total: Callable[[int], None] = lambda _n: None

    def __iter__(self) -> Iterator[Event]:
        return self.events()

    @property
    def failed(self) -> int:
        return self.counts.get("error", 0)

    def events(self) -> Iterator[Event]:
        try:
            found = self.source()
            self.on_total(found.total)
            self.sink.begin(found)
            try:
                for ev in found.early:
                    yield self._count(self.sink.early(ev))
                groups = self.middle(found) if self.middle is not None else self.infer(self.prepare(found.todo))
                for group in groups:
                    for ev in self.sink.consume(group):
                        yield self._count(ev)
                for ev in self.sink.finish():
                    yield self._count(ev)
            finally:
                self.sink.end(dict(self.counts))
        finally:
            self.close()

    def _count(self, ev: Event) -> Event:
        self.counts[ev.status] += 1
        return ev


def known_hashes(index: Index, model: str) -> Callable[[], frozenset[str]]:
    """The images already indexed for ``model``, read only when some photo needs preparing."""
    return lambda: index.known_hashes(model)


def tag_run(paths: Sequence[Path], tagger: Any, index: Index | None, opts: TagOptions, *,
            close: Callable[[], None] = lambda: None, clock: Clock = NO_CLOCK, pool: Pool | None = None,
            verdicts: Callable[[list[str]], dict[str, dict[str, str]]] | None = None,
            middle: Callable[[Index, OnDemand, TagOptions], Middle] | None = None) -> Run:
    """`ramcli tag` over ``paths``: into ``index`` and the files, or, with ``opts.dry_run``, a report only.

    ``tagger``: an open tagger, or an :class:`OnDemand` one that loads the model only when the first
    photo needs preparing (a no-change re-run never does). ``pool``: how photos are prepared (default:
    worker processes for a library run, threads for a dry run; ``bench`` prepares inline so each stage
    has its own clock). ``verdicts``: for a dry run, the user's verdicts from an existing index, so the
    report shows what a real run would write (photos are then hashed to find them). ``middle``: makes what runs
    in place of prepare -> infer for a library run (`tag --ray`), given the index, the tagger and the options."""
    roots = [Path(p).absolute() for p in paths]
    lazy = tagger if isinstance(tagger, OnDemand) else OnDemand.ready(tagger)
    infer = Infer(lazy, opts.selection, batch_size=opts.batch_size, clock=clock)
    ahead = opts.batch_size * 2

    def pre() -> Preprocess:  # depends on the device the model loads on: asked only once a photo needs it
        contract: Preprocess = lazy().engine.preprocess
        return contract

    if opts.dry_run or index is None:
        infer.verdicts = verdicts
        return Run(lambda: sources.scan(paths, opts.exclude, media=opts.media),
                   Prepare(pre, known=None if verdicts is None else frozenset(), pool=pool or "threads", ahead=ahead,
                           clock=clock, sampling=opts.sampling),
                   infer, ReportSink(lazy, opts.lang), close=close)
    from ramcli.vocab import custom

    model = lazy.name
    infer.verdicts = index.verdicts_for  # the user's feedback wins over the scores
    # custom tags' parents go into the hierarchical keywords (ramcli|bird|red kite)
    wopts = replace(opts.write_options, ancestry=custom.ancestry(index))
    sync = KeywordSync(wopts, write=opts.write, overwrite_description=opts.overwrite_description,
                       journal=Journal(index), model=model)
    # A named folder that is not there (an unmounted drive) says nothing about the photos indexed under it:
    # only folders that exist are pruned.
    sink = WriteSink(index, lazy, sync, lang=opts.lang, store_tokens=opts.store_tokens,
                     prune_under=[r for r in roots if r.exists()] + [Path(p).absolute() for p in opts.forget]
                     if opts.prune else None, roots=roots, clock=clock)
    prepare = Prepare(pre, known=known_hashes(index, model), pool=pool or "processes", workers=opts.workers,
                      ahead=ahead, clock=clock, sampling=opts.sampling)
    return Run(lambda: sources.scan(roots, opts.exclude, index=index, model=model, retry_errors=opts.retry_errors,
                                    media=opts.media),
               prepare, infer, sink, close=close, middle=middle(index, lazy, opts) if middle is not None else None)


class Untag:
    """`ramcli untag`: remove exactly what ramcli wrote (keywords, caption) from the files under ``paths``,
    then forget those photos in the index, one photo at a time (an interruption loses nothing).

    A file still exactly as ramcli left it gets its original bytes back ("restored"); one changed since
    gets ramcli's fields removed ("untagged"). Photos the index does not know (a lost or another index)
    are found by scanning ``paths`` and reading ramcli's record in each file.
    """

    def __init__(self, paths: Sequence[Path], index: Index, options: metadata.WriteOptions, *,
                 write: bool = True, close: Callable[[], None] = lambda: None) -> None:
        self.index = index
        roots = [Path(r).absolute() for r in paths]
        self.rows = list(index.photos_under(roots))
        known = {row.path for row in self.rows}
        self.others = [p for p in (Path(q).absolute() for q in sources.photos(roots)) if str(p) not in known]
        self.journal = Journal(index)
        self.sync = KeywordSync(options, write=write, journal=self.journal)
        # For names the index cannot hold (not valid UTF-8): no journal, only the file's own record.
        self.unjournaled = KeywordSync(options, write=write)
        self.close = close
        self.counts: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return len(self.rows) + len(self.others)

    def __iter__(self) -> Iterator[Event]:
        return self.events()

    def events(self) -> Iterator[Event]:
        try:
            self.journal.recover()
            for row in self.rows:
                yield from self._one(Path(row.path), row)
            for path in self.others:
                yield from self._one(path, None)
        finally:
            self.close()

    def _one(self, path: Path, row: PhotoRow | None) -> Iterator[Event]:
        if not _utf8(path):
            yield from self._unindexable(path)
            return
        try:
            how = self.sync.remove(path, row)
        except (ImageError, OSError) as err:
            if row is None:  # a file the index does not know that exiv2 cannot read: ramcli never wrote it
                yield Event(path, "unchanged")
                return
            self.counts["error"] += 1
            yield Event(path, "error", error=one_line(err, path))
            return
        if how is None and row is None:  # nothing of ramcli's in it
            yield Event(path, "unchanged")
            return
        with self.index.transaction():
            self.journal.forget(path)
            if row is not None:
                self.index.delete_photo(row.path)
                self.index.prune_images()
        if how is not None:
            self.counts[how] += 1
            yield Event(path, how, tags=row.written if row is not None else [])

    def _unindexable(self, path: Path) -> Iterator[Event]:
        """A file whose name is not valid UTF-8: `tag` never writes one (the index cannot store its name), but
        one renamed after tagging still carries ramcli's record, which is removed (no exact undo: the index
        holds no recipe under that name). SQLite cannot even be asked about it."""
        try:
            how = self.unjournaled.remove(path, None)
        except (ImageError, OSError):  # exiv2 cannot read it: ramcli never wrote it
            how = None
        if how is None:
            yield Event(path, "unchanged")
            return
        self.counts[how] += 1
        yield Event(path, how)


def _utf8(path: Path) -> bool:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
