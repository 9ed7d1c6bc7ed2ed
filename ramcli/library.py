"""The front door: ``Library(index=...)`` — tag, untag, search and grow the vocabulary from a script.

The CLI is parsing plus one event renderer over this class (sqlite-utils' rule: a command body is
one typed library call), so a script gets exactly what `ramcli` does::

    from ramcli import Library

    lib = Library("photos.db")
    run = lib.tag(["~/Photos"])
    for event in run:  # one Event per photo: tagged, unchanged, moved, error, ...
        print(event.status, event.path, event.tags)
    hits = lib.search("red bicycle")

Long work (``tag``, ``untag``, ``add_tag``) returns a run to iterate: each step is saved as it
happens, so stopping the iteration early (or Ctrl-C) loses nothing that was done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import threading

    from ramcli.evaluate.run import EvalOptions
    from ramcli.index import Index
    from ramcli.models.store import InstalledModel
    from ramcli.pipeline.calibrate import Calibration
    from ramcli.pipeline.distributed import RayOptions
    from ramcli.pipeline.prepare import Pool
    from ramcli.pipeline.rescore import Rescore
    from ramcli.pipeline.run import Run, TagOptions, Untag
    from ramcli.runtime.engine import EngineOptions
    from ramcli.search.dupes import DupesReport, Progress
    from ramcli.search.ranking import Hit, SearchOptions
    from ramcli.vocab.custom import CustomTag

Report = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


def _some_exist(roots: Sequence[Path]) -> None:
    """Refuse a run none of whose paths exist (a typo, an unmounted drive) at once, before the index lock
    and the model; a run with some missing paths goes on and reports each of them."""
    import os

    from ramcli.errors import RamcliError

    if roots and not any(os.path.lexists(r) for r in roots):  # a dangling symlink: the scan says so
        others = f"; nor do the {len(roots) - 1} other paths named" if len(roots) > 1 else ""
        raise RamcliError(f"no such file or folder{others}", path=roots[0], hint="check the path")


class Library:
    """A photo library: its index file, and the model and engine that tag it.

    ``index``: the SQLite index (default: ``RAMCLI_INDEX`` or one per user); ``model``: the model to
    tag with (default: RAM++; pulled once when ``download``); ``engine``: device, threads, precision,
    JPEG decoding; ``report``: where progress notes go (the CLI prints them dimmed).
    """

    def __init__(self, index: str | Path | None = None, *, model: str | None = None,
                 engine: EngineOptions | None = None, download: bool = True, report: Report = _quiet) -> None:
        from ramcli.config import index_path

        self.index_path = Path(index).expanduser() if index is not None else index_path()
        self.model_name = model
        self.engine = engine
        self.download = download
        self.report = report

    # ---- the model
    @cached_property
    def model(self) -> InstalledModel:
        """The installed model runs use (downloaded and converted first when allowed)."""
        from ramcli.pipeline.tagger import resolve_model

        return resolve_model(self.model_name, download=self.download, report=self.report)

    def tagger(self, *, batch_size: int = 4, caption_tags: list[str] | None = None) -> Any:
        """The model's tagger with this library's custom tags (Tag2Text: guided by ``caption_tags``)."""
        from ramcli.pipeline.tagger import open_tagger
        from ramcli.runtime.engine import EngineOptions

        return open_tagger(self.model, self.engine or EngineOptions(), self.index_path, caption_tags, batch_size)

    def open_index(self, *, writer: bool = False, must_exist: bool = True, lock_per_write: bool = False) -> Index:
        """The index; ``must_exist``: a library with no index yet is one clear error, not an empty one;
        ``lock_per_write``: a writer that locks only around each step of writing (`watch`)."""
        from ramcli.errors import RamcliError
        from ramcli.index import open_index

        if must_exist and not self.index_path.is_file():
            raise RamcliError("there is no index yet", path=self.index_path, hint="run `ramcli tag ~/Photos` first")
        return open_index(self.index_path, writer=writer, lock_per_write=lock_per_write)

    # ---- tagging
    def tag(self, paths: Iterable[str | Path], options: TagOptions | None = None, *,
            caption_tags: list[str] | None = None, tagger: Any = None, pool: Pool | None = None,
            lock_per_write: bool = False, ray: RayOptions | None = None) -> Run:
        """Tag photos and folders: keywords into the files and rows into the index, incrementally.

        With ``options.dry_run`` nothing is written anywhere (the index is not even opened for
        writing; where it exists, its verdicts are read, so a rejected tag is not shown): the events carry
        every chosen tag with its score. ``tagger``: one already open;
        by default the model is loaded only when the first photo needs it (reported through
        ``report``), so a run that has nothing to infer never loads it.

        Cheap refusals come first, before any model is loaded or downloaded: no named path exists,
        or another run holds the index. ``pool``: how photos are decoded (default: worker processes).
        ``lock_per_write``: take the index's writer lock only while each batch is written, waiting for
        another writer rather than refusing (`watch`); by default the run holds it from the start.
        ``ray``: decode and infer on a Ray cluster (``pipeline.distributed``); the index and the keywords are
        written here, by the same sink."""
        from ramcli.pipeline.run import TagOptions, tag_run

        opts = options or TagOptions()
        roots = [Path(p).expanduser() for p in paths]
        _some_exist(roots)
        middle = None
        if ray is not None:
            from ramcli.errors import UsageError
            from ramcli.pipeline.distributed import RayMiddle

            if opts.dry_run:
                raise UsageError("--ray and --dry-run exclude each other", hint="a dry run tags here: drop --ray")
            middle = RayMiddle(ray, index_file=self.index_path, engine=self.engine, caption_tags=caption_tags,
                               report=self.report)
        ix = None if opts.dry_run else self.open_index(writer=True, must_exist=False, lock_per_write=lock_per_write)
        try:
            if tagger is None and middle is not None:  # the driver reads the vocabulary; the workers run the model
                from ramcli.pipeline.tagger import OnDemand

                tagger = OnDemand(self.model, lambda: self.tagger(batch_size=opts.batch_size,
                                                                  caption_tags=caption_tags))
            lazy = tagger if tagger is not None else self._tagger_on_demand(opts.batch_size, caption_tags)
            if ix is None:  # a dry run: the verdicts of an index that exists, read only, say what would be written
                said = self.open_index() if self.index_path.is_file() else None
                return tag_run(roots, lazy, None, opts, pool=pool, close=said.close if said else lambda: None,
                               verdicts=said.verdicts_for if said else None)
            return tag_run(roots, lazy, ix, opts, close=ix.close, pool=pool, middle=middle)
        except BaseException:
            if ix is not None:
                ix.close()
            raise

    def _tagger_on_demand(self, batch_size: int, caption_tags: list[str] | None) -> Any:
        """The tagger, opened when a photo first needs it; says which model runs on which device then."""
        from ramcli.pipeline.tagger import OnDemand

        def open_() -> Any:
            tagger = self.tagger(batch_size=batch_size, caption_tags=caption_tags)
            precision = getattr(getattr(tagger.engine, "opts", None), "precision", "fp32")  # auto: as decided
            self.report(f"model {self.model.name} on {tagger.engine.provider}"
                        + (f" ({precision})" if precision != "fp32" else ""))
            return tagger

        return OnDemand(self.model, open_)

    def watch(self, folders: Iterable[str | Path], options: TagOptions | None = None, *, stop: threading.Event,
              settle: float = 2.0, max_batch: int = 16, caption_tags: list[str] | None = None,
              idle: Callable[[], None] = lambda: None) -> Iterator[tuple[str, Run]]:
        """Keep ``folders`` tagged: one incremental pass (what changed while nobody watched), then a run per
        small batch of settled changes, until ``stop`` is set. Yields (``"catch-up"`` or ``"batch"``, the run):
        iterate each run to do it, as with :meth:`tag` — there is no second tagging path.

        The model is loaded once (on the first photo that needs it) and kept between batches. The index's
        writer lock is taken only while a step of a run writes (an inference batch's files and rows, the
        prune; ``Index.hold``), not while it waits, decodes or infers, so `ramcli add-tag`, `tag` or `untag`
        can write meanwhile and `search` always reads; while another writer holds the lock, the step waits
        for it instead of failing. Decoding runs in threads: a batch is a few photos, too few to pay for
        starting worker processes each time."""
        from dataclasses import replace

        from ramcli.errors import RamcliError
        from ramcli.pipeline.run import TagOptions
        from ramcli.pipeline.watch import FolderWatch

        opts = options or TagOptions()
        if opts.dry_run:
            from ramcli.errors import UsageError

            raise UsageError("watch writes as it goes: --dry-run has no meaning here",
                             hint="use `ramcli tag --dry-run`")
        roots = [Path(f).expanduser().absolute() for f in folders]
        _some_exist(roots)
        tagger = self._tagger_on_demand(opts.batch_size, caption_tags)
        watcher = FolderWatch(roots, opts.exclude, settle=settle, max_batch=max_batch)
        watcher.start()  # before the catch-up pass: a change made during it is queued, not lost

        def run(paths: list[Path], gone: list[Path]) -> Run:
            return self.tag(paths, replace(opts, forget=tuple(gone)), tagger=tagger, pool="threads",
                            lock_per_write=True)

        def own_write(path: Path) -> bool:
            """The file is exactly as ramcli's last write left it (a rename of its temporary file)."""
            try:
                st = path.stat()
                ix = self.open_index()
            except (OSError, RamcliError):
                return False
            try:
                row = ix.photo(str(path))
            finally:
                ix.close()
            return row is not None and (row.size, row.mtime_ns) == (st.st_size, st.st_mtime_ns)

        try:
            yield "catch-up", run(roots, [])
            for changes in watcher.batches(stop, own_write, idle):
                yield "batch", run(changes.paths, changes.gone)
        finally:
            watcher.stop()

    def untag(self, paths: Iterable[str | Path], *, write: bool = True) -> Untag:
        """Remove exactly what ramcli wrote from the files under ``paths`` and forget them in the index."""
        from ramcli.metadata import WriteOptions
        from ramcli.pipeline.run import Untag

        ix = self.open_index(writer=True, must_exist=False)
        try:
            return Untag([Path(p).expanduser() for p in paths], ix, WriteOptions(), write=write, close=ix.close)
        except BaseException:
            ix.close()
            raise

    # ---- searching
    def search(self, query: str | None = None, options: SearchOptions | None = None, *,
               like: str | Path | None = None, model: str | None = None) -> list[Hit]:
        """Photos by what is in them: tag names or any text (open-set), or ``like`` a photo."""
        from ramcli.search.ranking import SearchOptions, check_query, like_embedding, open_searcher

        check_query(query, like)  # before the index: a blank query is a usage error, not "no index"
        opts = options or SearchOptions()
        ix = self.open_index()
        try:
            searcher = open_searcher(ix, model)
            if like is not None:
                return searcher.like(like_embedding(searcher, Path(like)), opts)
            return searcher.search(query or "", opts)
        finally:
            ix.close()

    def dupes(self, folders: Iterable[str | Path] = (), *, near: float | None = 0.95, model: str | None = None,
              max_group: int = 50, progress: Progress | None = None) -> DupesReport:
        """Exact and near duplicates among the indexed photos under ``folders`` (all when none), each group
        with a suggested keeper and the reason. Reads the index only: no file is moved or deleted, and the
        index is not locked, so a running `ramcli tag` or `watch` goes on.

        ``near``: the cosine of CLS embeddings at or above which distinct images are near duplicates (None:
        exact only); ``model``: whose embeddings (default: the model that tagged most photos)."""
        from ramcli.search import clsmatrix
        from ramcli.search.dupes import find_dupes

        roots = [Path(f).expanduser().absolute() for f in folders]
        ix = self.open_index()
        try:
            candidates = ix.dupe_candidates(roots)
            models = ix.models()
            chosen = model or (models[0][0] if models else None)

            def embeddings(rowids: list[int]) -> Any:
                import numpy as np

                matrix = clsmatrix.load(ix, chosen or "")
                wanted = np.asarray(rowids, dtype=np.int64)
                pos = np.minimum(matrix.positions(rowids), max(len(matrix.rowids) - 1, 0))
                if not len(matrix.rowids):
                    return np.zeros((len(rowids), 512), np.float32)
                # A tag run may have changed an image between the two reads (no lock is held): its row
                # becomes zero, alike to nothing, rather than another image's embedding.
                return np.where((matrix.rowids[pos] == wanted)[:, None], matrix.vectors[pos], 0).astype(np.float32)

            kwargs = {"progress": progress} if progress is not None else {}
            return find_dupes(candidates, embeddings, chosen, near=near, max_group=max_group, **kwargs)
        finally:
            ix.close()

    # ---- the vocabulary
    def add_tag(self, name: str | None, descriptions: Sequence[str] = (), *, descriptions_file: Path | None = None,
                threshold: float | None = None, zh: str | None = None, parent: str | None = None,
                write: bool = True) -> Rescore:
        """Define (or redefine) custom tags and return the run that applies them to every indexed photo
        from stored embeddings; iterate it to apply (``.defined`` lists the tags)."""
        from ramcli.vocab import tagops

        ix = self.open_index(writer=True, must_exist=False)
        try:
            tags = tagops.define(ix, tagops.specs(name, list(descriptions), descriptions_file, threshold, zh, parent),
                                 self.report)
            run = self.rescore(ix, tags, [], write=write)
        except BaseException:
            ix.close()
            raise
        run.defined = tags
        return run

    def rescore(self, ix: Index, changed: list[CustomTag], removed: list[int], *, write: bool = True,
                removed_builtin: list[str] | None = None, only: set[str] | None = None) -> Rescore:
        """The re-scoring run over ``ix`` (which it closes when done) for changed and removed tags
        (``only``: these image hashes, not the whole library)."""
        from ramcli.pipeline.rescore import Rescore, RescoreOptions

        return Rescore(ix, changed, removed, RescoreOptions(write=write), removed_builtin, close=ix.close, only=only)

    def feedback(self, verdict: str, tag: str, paths: Sequence[str | Path] = (), *, query: str | None = None,
                 write: bool = True) -> Rescore:
        """`ramcli tags confirm|reject TAG PHOTO...`: the user's verdict on ``tag`` for these photos (files,
        folders, glob patterns) and those `search` finds for ``query``, stored in the index (source "cli");
        returns the run that re-chooses the tag for just those images and writes their files, the verdict
        going into each file's record. ``.given`` lists the verdicts that changed something, ``.missing``
        the arguments that named no indexed photo."""
        from ramcli.errors import RamcliError, UsageError
        from ramcli.pipeline import feedback
        from ramcli.vocab import tagops

        if verdict not in ("confirm", "reject"):
            raise UsageError(f"a verdict is confirm or reject, not {verdict!r}")
        ix = self.open_index(writer=True)
        try:
            model = tagops.main_model(ix, self.model_name)
            target = feedback.tag_for_verdict(ix, tag, model)
            photos, missing = feedback.targets(ix, paths, query, model.name)
            if not photos:
                raise RamcliError(f"no indexed photo matches {' '.join(map(str, paths)) or repr(query)}",
                                  hint="name photos (or folders) that `ramcli tag` indexed, or another --query")
            given = feedback.give(ix, verdict, target.name, photos)
            run = self.rescore(ix, [target], [], write=write, only={p.hash for p in photos})
        except BaseException:
            ix.close()
            raise
        run.given, run.missing, run.accept = given, missing, verdict == "confirm"
        return run

    def calibrate(self, *, target_precision: float = 0.9, min_evidence: int = 10) -> Calibration:
        """`ramcli tags calibrate`: per-tag thresholds from the verdicts and the stored embeddings. Call
        ``.plan()`` for what would change (nothing is written), then iterate ``.apply(plans)`` to store the
        thresholds and re-decide those tags on every photo; ``.index`` is closed by the caller
        (``.index.close()``) once done."""
        from ramcli.errors import UsageError
        from ramcli.pipeline.calibrate import Calibration

        if not 0.0 < target_precision <= 1.0 or min_evidence < 1:
            raise UsageError("--target-precision is a number in (0, 1], --min-evidence at least 1")
        return Calibration(self.open_index(writer=True), target_precision, min_evidence)

    def tags(self, *, custom_only: bool = False, model: str | None = None) -> list[dict[str, Any]]:
        """Tags with thresholds and how many photos carry each: yours and (unless ``custom_only``) the model's."""
        from ramcli.vocab import tagops

        ix = self.open_index()
        try:
            return tagops.listing(ix, None if custom_only else tagops.main_model(ix, model), custom_only=custom_only)
        finally:
            ix.close()

    # ---- evaluation
    def evaluate(self, dataset: str | Path, options: EvalOptions | None = None, *,
                 on_variant: Callable[[str, int], None] = lambda _label, _n: None,
                 on_image: Callable[[], None] = lambda: None) -> dict[str, Any]:
        """mAP, CP and CR of this library's model on a benchmark in the authors' ``datasets/<name>/``
        layout, as their ``batch_inference.py`` computes them (`ramcli eval`); scores are cached in the
        output folder, so stopping (Ctrl-C) keeps what was scored and asking again goes on from there."""
        from ramcli.evaluate.run import EvalOptions, run_eval

        return run_eval(self.model, Path(dataset), options or EvalOptions(), report=self.report,
                        on_variant=on_variant, on_image=on_image)

    def evaluate_library(self, *, out: Path | None = None, threshold: float | None = None, plot: bool = True,
                         on_total: Callable[[int], None] = lambda _n: None,
                         on_image: Callable[[], None] = lambda: None) -> dict[str, Any]:
        """`ramcli eval --library`: the model on this library, the user's confirmations as ground truth
        (``evaluate.library``); scores from the stored tokens, no photo decoded again."""
        from ramcli.evaluate.library import run_library_eval
        from ramcli.runtime.engine import EngineOptions

        ix = self.open_index()
        try:
            return run_library_eval(ix, self.model, out=out, threshold=threshold,
                                    engine=self.engine or EngineOptions(), plot=plot, on_total=on_total,
                                    on_image=on_image)
        finally:
            ix.close()
