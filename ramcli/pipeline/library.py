"""`ramcli tag`: the library pipeline — tags into the photos and into the index, incrementally.

Stages, beets-style:

1. scan      paths -> photo files (``scan.iter_photos``)
2. classify  one stat per file against the index: same (size, mtime_ns) as after our last
             write -> unchanged, nothing else is read
3. prepare   in a process pool: image hash (``identity``); pixels decoded and preprocessed
             only when the hash is new to the index
4. infer     batched: image encoder + tag head (``tagging.Tagger``)
5. write     keywords into the photo or its sidecar (``metadata``), then the batch's index
             rows in one SQLite transaction

A known hash at a new path is a move (the old path is gone) or a copy: its stored tags are
written into it without inference. A known hash at the same path with a new stat is a metadata
edit by someone else: only the stat is recorded, the user's keywords are left alone.
Files are written before their index rows; a kill between the two leaves a file whose next
write is a no-op (writes are idempotent), so at most the batch in flight is redone.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from ramcli import metadata
from ramcli.errors import ImageError, RamcliError, first_line
from ramcli.index import ImageRecord, Index, PhotoRow
from ramcli.pipeline.events import Event
from ramcli.pipeline.identity import image_hash
from ramcli.pipeline.scan import ScanProblem, iter_photos
from ramcli.runtime.images import Preprocess, decode_error, read_photo, to_input
from ramcli.runtime.tagging import Selection, Tag, Tagger
from ramcli.vocab import custom

# ---------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class LibraryOptions:
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


# ------------------------------------------------------------------------- worker processes

_KNOWN: frozenset[str] = frozenset()
_PRE: Preprocess | None = None


def _init_worker(known: frozenset[str], pre: Preprocess) -> None:
    global _KNOWN, _PRE
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C means
    _KNOWN, _PRE = known, pre


@dataclass
class Prepared:
    path: Path
    hash: str
    pixels: np.ndarray | None  # None: image already in the index, no decoding done
    width: int = 0
    height: int = 0
    taken_at: str | None = None


def _prepare(path: Path) -> Prepared | ImageError:
    """Hash, and decode + preprocess when the image is new. Runs in a worker process."""
    assert _PRE is not None
    try:
        digest = image_hash(path)
        if digest in _KNOWN:
            return Prepared(path, digest, None)
        photo = read_photo(path, draft=_PRE.draft_size)
        return Prepared(path, digest, to_input(photo.rgb, _PRE), photo.size[0], photo.size[1], photo.taken_at)
    except ImageError as err:
        return err
    except Exception as exc:  # decoder trouble is this file's problem, not the run's
        return decode_error(exc, path)


# ------------------------------------------------------------------------------ the pipeline


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


class LibraryRun:
    """One `ramcli tag` over some roots. Iterate :meth:`events`; read :attr:`counts` at the end."""

    def __init__(self, roots: list[Path], tagger: Tagger, index: Index, opts: LibraryOptions) -> None:
        self.roots = [r.absolute() for r in roots]
        self.tagger = tagger
        self.index = index
        # custom tags' parents go into the hierarchical keywords (ramcli|bird|red kite)
        self.opts = replace(opts, write_options=replace(opts.write_options, ancestry=custom.ancestry(index)))
        self.model = tagger.engine.model.name
        self.counts: Counter[str] = Counter()
        self.on_total: Callable[[int], None] = lambda _n: None

    # ---- classification
    def _classify(self) -> tuple[list[Path], list[Event]]:
        todo: list[Path] = []
        early: list[Event] = []
        for item in iter_photos(self.roots, self.opts.exclude):
            if isinstance(item, ScanProblem):
                status = "skipped" if item.skipped else "error"
                early.append(Event(item.path, status, error=str(RamcliError(item.reason, path=item.path))))
                continue
            path = item.absolute()
            try:
                str(path).encode("utf-8")
            except UnicodeEncodeError:
                early.append(Event(path, "error", error=str(RamcliError(
                    "file name is not valid UTF-8, so the index cannot store it", path=path,
                    hint="rename the file (e.g. with `convmv`)"))))
                continue
            st = _stat(path)
            row = self.index.photo(str(path))
            if st and row and row.model == self.model and row.size == st.st_size and row.mtime_ns == st.st_mtime_ns:
                early.append(Event(path, "unchanged"))
            else:
                todo.append(path)
        return todo, early

    def events(self) -> Iterator[Event]:
        todo, early = self._classify()
        self.on_total(len(todo) + len(early))
        run_id = self.index.start_run(self.model, [str(r) for r in self.roots])
        try:
            for ev in early:
                yield self._count(ev)
            yield from self._process(todo)
            if self.opts.prune:
                yield from self._prune()
        finally:
            self.index.finish_run(run_id, dict(self.counts))

    def _count(self, ev: Event) -> Event:
        self.counts[ev.status] += 1
        return ev

    def _process(self, todo: list[Path]) -> Iterator[Event]:
        if not todo:
            return
        known = self.index.known_hashes(self.model)
        workers = self.opts.workers or max(1, os.cpu_count() or 1)
        ctx = multiprocessing.get_context("spawn")  # no fork of a process holding onnxruntime threads
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                   initargs=(known, self.tagger.engine.preprocess))
        try:
            pending: deque[Future] = deque()
            it = iter(todo)
            ahead = max(self.opts.batch_size * 2, workers * 2)

            def fill() -> None:
                for path in it:
                    pending.append(pool.submit(_prepare, path))
                    if len(pending) >= ahead:
                        return

            fill()
            batch: list[Prepared] = []
            while pending:
                got = pending.popleft().result()
                fill()
                if isinstance(got, ImageError):
                    yield self._count(Event(Path(got.path or ""), "error", error=str(got)))
                elif got.pixels is None:
                    yield self._count(self._known_image(got))
                else:
                    batch.append(got)
                    if len(batch) >= self.opts.batch_size:
                        yield from self._infer_batch(batch)
                        batch = []
            if batch:
                yield from self._infer_batch(batch)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    # ---- per photo
    @cached_property
    def _zh(self) -> dict[int, str]:
        """Tag index -> Chinese name, built once per run (Tag2Text has none)."""
        vocab = self.tagger.vocab
        zh_names = getattr(vocab, "names_zh", None) or []
        return {vocab.tag_id(p): z.strip() for p, z in enumerate(zh_names) if z and z.strip()}

    def _names(self, tags: list[tuple[int, str]]) -> list[str]:
        """Keywords for (tag index, English name) pairs in the run's language (--lang)."""
        return keywords(tags, self._zh, self.opts.lang)

    def _write(self, path: Path, tags: list[str], row: PhotoRow | None,
               caption: str | None = None) -> tuple[list[str], str, str | None]:
        """Keywords (and a Tag2Text caption) into the file; returns what the file now carries from us
        (keywords, where they are, caption).

        ``row`` is what the index knew of this path (or of the path it moved from)."""
        opts = self.opts.write_options
        previous = row.written if row is not None else []
        before = row.written_caption if row is not None else None
        if not self.opts.write:  # --no-write: the file keeps whatever we wrote earlier, where we wrote it
            return previous, row.storage if row is not None else "", before
        result = metadata.write_keywords(path, tags, previous, opts, caption=caption, previous_caption=before,
                                         overwrite_description=self.opts.overwrite_description)
        # A keyword the user already had (in any case) is theirs, not ours: untag must leave it.
        ours = [k for k in tags if k in previous or k in result.added]
        status = result.caption_status
        written_caption = caption if status in ("written", "unchanged") else None if status == "removed" else before
        return ours, f"sidecar-{opts.sidecar_name}" if result.sidecar else "embed", written_caption

    def _record_photo(self, path: Path, digest: str, written: list[str], storage: str,
                      caption: str | None = None) -> None:
        st = path.stat()  # after our write: this is the state that means "unchanged" next time
        self.index.put_photo(PhotoRow(str(path), digest, st.st_size, st.st_mtime_ns, written, storage, self.model,
                                      caption))

    def _known_image(self, p: Prepared) -> Event:
        """The pixels are in the index already: a metadata edit, a move, or a copy."""
        path = p.path
        row = self.index.photo(str(path))
        try:
            if row is not None and row.hash == p.hash:
                with self.index.transaction():  # someone else edited the metadata: keep their keywords
                    self._record_photo(path, p.hash, row.written, row.storage, row.written_caption)
                return Event(path, "updated")
            others = [o for o in self.index.paths_with_hash(p.hash) if o != str(path)]
            gone = [o for o in others if not Path(o).exists()]
            tags = self._names([(i, name) for i, name, _ in self.index.tags_of(p.hash, self.model)])
            caption = self.index.caption_of(p.hash, self.model)
            origin = self.index.photo(gone[0]) if gone else None  # the keywords we wrote travel with the file
            written, storage, cap = self._write(path, tags, origin if origin is not None else row, caption)
            with self.index.transaction():
                for old in gone:
                    self.index.delete_photo(old)
                self._record_photo(path, p.hash, written, storage, cap)
            return Event(path, "moved" if gone else "copied", tags=tags, moved_from=gone[0] if gone else None,
                         caption=caption)
        except (ImageError, OSError) as err:
            return Event(path, "error", error=_one_line(err, path))

    def _infer_batch(self, batch: list[Prepared]) -> Iterator[Event]:
        embeds, logits = self.tagger.infer(np.stack([p.pixels for p in batch]))
        captions = self.tagger.captions(embeds, logits)
        records: list[tuple[Prepared, list[Tag], list[str], str, str | None]] = []
        events: list[Event] = []
        for i, p in enumerate(batch):
            tags = self.tagger.tags(logits[i], self.opts.selection)
            names = self._names([(t.index, t.name) for t in tags])
            row = self.index.photo(str(p.path))
            try:
                written, storage, cap = self._write(p.path, names, row, captions[i])
            except (ImageError, OSError) as err:
                events.append(Event(p.path, "error", error=_one_line(err, p.path)))
                continue
            records.append((p, tags, written, storage, cap))
            events.append(Event(p.path, "tagged", tags=names, caption=captions[i]))
        clip = self.tagger.clip_space  # Tag2Text's Swin-B tokens serve neither search nor add-tag
        tokens_ok = self.opts.store_tokens and clip
        with self.index.transaction():
            for p, tags, written, storage, cap in records:
                i = batch.index(p)
                self.index.put_image(ImageRecord(
                    p.hash, self.model, p.width, p.height, p.taken_at, embeds[i, 0] if clip else None,
                    embeds[i] if tokens_ok else None, [(t.index, t.name, t.score) for t in tags], captions[i]))
                self._record_photo(p.path, p.hash, written, storage, cap)
        for ev in events:
            yield self._count(ev)

    def _prune(self) -> Iterator[Event]:
        gone = [row.path for row in self.index.photos_under(self.roots) if not Path(row.path).exists()]
        with self.index.transaction():
            for path in gone:
                self.index.delete_photo(path)
            self.index.prune_images()
        for path in gone:
            yield self._count(Event(Path(path), "pruned"))


def _one_line(err: Exception, path: Path) -> str:
    if isinstance(err, RamcliError):
        return str(err)
    msg = getattr(err, "strerror", None) or first_line(err)
    return str(RamcliError(msg, path=path))


def keywords(tags: Sequence[tuple[int, str]], zh: Mapping[int, str], lang: str) -> list[str]:
    """Keywords for (tag index, English name) pairs in ``lang``: en, zh (the Chinese name where the
    tag has one) or both (English, then Chinese)."""
    if lang == "en":
        return [n for _, n in tags]
    out: list[str] = []
    for i, name in tags:
        local = zh.get(i)
        out += [local or name] if lang == "zh" else [name, *([local] if local else [])]
    return list(dict.fromkeys(out))


def storage_options(storage: str, base: metadata.WriteOptions) -> metadata.WriteOptions:
    """The write options that reach where a photo's keywords were put (its own file or which sidecar)."""
    if storage.startswith("sidecar-"):
        return replace(base, sidecar=True, sidecar_name=storage.removeprefix("sidecar-"))
    return replace(base, sidecar=False)


def untag(roots: list[Path], index: Index, opts: metadata.WriteOptions, write: bool = True) -> Iterator[Event]:
    """Remove exactly what ramcli wrote: keywords from the files, photos from the index."""
    for row in list(index.photos_under([r.absolute() for r in roots])):
        path = Path(row.path)
        try:
            if write and (row.written or row.written_caption) and path.exists():
                metadata.remove_keywords(path, row.written, storage_options(row.storage, opts),
                                         previous_caption=row.written_caption)
        except (ImageError, OSError) as err:
            yield Event(path, "error", error=_one_line(err, path))
            continue
        with index.transaction():
            index.delete_photo(row.path)
            index.prune_images()
        yield Event(path, "untagged", tags=row.written)
