"""`ramcli tag --ray`: prepare and infer on a Ray cluster; the source, the index and the keywords stay here.

Ray replaces only the middle of the pipeline (``run.Middle``). The driver scans and plans as a local run does
(only new and changed photos go out), then Ray Data streams them: decode + preprocess as CPU ``map_batches``
tasks, the model in a pool of actors (each opens its sessions once; a GPU each where the cluster has GPUs).
Each actor writes its batch's results as a Parquet shard (``shards``) into a folder every node can reach and
hands back only the shard's name; the driver reads the shard, chooses the tags from its logits with the
index's verdicts (the one place that decides tags, as locally) and feeds the same :class:`WriteSink` a local
run uses: one writer of the index, keywords written here.

Failures: a killed worker's batch is run again by Ray (actors restart; their tasks are retried). A killed
driver leaves shards behind: the next run with the same settings takes the photos they hold from them
(matched by the scan's stat, or by image hash once the keywords were written) and sends out only the rest.
The shards of a run are removed when it ends; settings that change the model's output (model, precision,
batch size, selection, custom tags, ...) get a folder of their own, so stale results are never mixed in.

Only imported with ``--ray``: Ray is an optional extra (``pip install 'ramcli[ray]'``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ramcli import faults
from ramcli.errors import ImageError, RamcliError, first_line
from ramcli.pipeline.infer import Infer, Inferred, Item
from ramcli.pipeline.prepare import Prepared, Sampling, prepare_one
from ramcli.pipeline.tagger import LibraryVocab, OnDemand, open_tagger
from ramcli.runtime.engine import EngineOptions, input_contract
from ramcli.runtime.images import Preprocess
from ramcli.runtime.tagging import Selection

if TYPE_CHECKING:
    from ramcli.index import Index
    from ramcli.pipeline.run import TagOptions
    from ramcli.pipeline.sources import Sourced

#: Environment variables the workers get from the driver: where the models are, and how to behave.
ENV_PREFIXES = ("RAMCLI_", "HF_")
SHARDS = ".ray-shards"


def need_ray() -> Any:
    """Ray Data, or one clear line saying how to get it."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise RamcliError(f"--ray needs Ray Data, which is not installed ({exc.name or exc})",
                          hint="pip install 'ramcli[ray]'") from None
    return ray


@dataclass(frozen=True)
class RayOptions:
    """Where and how a Ray run runs.

    ``address``: a running cluster (``ray://head:10001``, ``auto``: the one ``RAY_ADDRESS`` or this machine's
    ``ray start`` names); None starts Ray on this machine.
    ``shards``: the folder the workers write results into (default: ``.ray-shards`` beside the index);
    on a cluster, storage every node and the driver reach. ``num_cpus`` / ``object_store_memory``: what a
    Ray started here may use (None: Ray's defaults). ``actors``: inference actors (default: one per GPU,
    else one per 8 CPUs, at least one)."""

    address: str | None = None
    shards: Path | None = None
    num_cpus: int | None = None
    object_store_memory: int | None = None
    actors: int | None = None


# ---- on the workers


_KNOWN: dict[str, frozenset[str]] = {}  # per worker process: the known hashes, fetched once per run


def _prepare_batch(batch: dict[str, np.ndarray], *, pre: Preprocess, known: Any, known_id: str,
                   sampling: Sampling) -> dict[str, np.ndarray]:
    """Ray Data task: hash, decode and preprocess a batch of paths (``prepare.prepare_one``, as locally).
    Each result travels pickled; a decode error as its parts, since exceptions lose fields in pickling."""
    import ray

    if known_id not in _KNOWN:
        _KNOWN.clear()
        _KNOWN[known_id] = ray.get(known)
    out = []
    for path in batch["path"]:
        got = prepare_one(Path(str(path)), pre, _KNOWN[known_id], True, sampling)
        if isinstance(got, ImageError):
            out.append(pickle.dumps(("error", got.message, got.path, got.hint, got.lasting)))
        else:
            out.append(pickle.dumps(("prepared", got)))
    return {"path": batch["path"], "size": batch["size"], "mtime_ns": batch["mtime_ns"],
            "item": np.array(out, dtype=object)}


class InferActor:
    """Ray Data actor: opens the model once, then runs each batch of decoded photos through the same infer
    stage a local run uses and writes the results as one shard. Photos that need no model (decode errors,
    images the index holds) pass through to the driver."""

    def __init__(self, model: str, engine: EngineOptions, library: LibraryVocab | None, selection: Selection,
                 batch_size: int, caption_tags: list[str] | None, folder: str, tokens: bool) -> None:
        from ramcli.models import store

        installed = store.get(model)  # this node's copy: RAMCLI_CACHE_DIR, or shared storage
        tagger = open_tagger(installed, engine, None, caption_tags, batch_size, library=library)
        # No verdicts here: the driver chooses the tags from the logits with the index's verdicts.
        self.infer = Infer(OnDemand.ready(tagger), selection, batch_size=batch_size)
        self.folder = Path(folder)
        self.tokens = tokens

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ramcli.pipeline import shards

        todo: list[tuple[Prepared, tuple[int, int]]] = []
        for raw, size, mtime in zip(batch["item"], batch["size"], batch["mtime_ns"], strict=True):
            got = pickle.loads(raw)
            if got[0] == "prepared" and got[1].pixels is not None:
                todo.append((got[1], (int(size), int(mtime))))
        paths = [str(p) for p in batch["path"]]
        shard = ""
        if todo:
            done = self.infer.run([p for p, _ in todo])
            inferred = [(d, st) for d, (_, st) in zip(done, todo, strict=True) if isinstance(d, Inferred)]
            shard = str(shards.write(self.folder, inferred, tokens=self.tokens))
            faults.once("ray-actor-after-shard")  # the kill test: a worker dies with its shard on disk
        sent = {str(p.path) for p, _ in todo}
        return {"path": np.array(paths, dtype=object),
                "shard": np.array([shard if p in sent else "" for p in paths], dtype=object),
                "item": np.array([b"" if p in sent else raw for p, raw in zip(paths, batch["item"], strict=True)],
                                 dtype=object)}


# ---- on the driver


def _quiet_ray() -> None:
    """Ray's own notes (a Dataset finished, progress bars are off, token auth) are not the user's business
    during a tag run, and some would land on standard output among the `--json` lines: only Ray's errors
    show, on standard error. (Its C++ core logs on its own: ``RAY_BACKEND_LOG_LEVEL=fatal`` silences that too,
    at the price of a line saying so.)"""
    import logging

    for name in ("ray", "ray.data"):
        log = logging.getLogger(name)
        log.setLevel(logging.ERROR)
        log.propagate = False
        if not any(getattr(h, "ramcli", False) for h in log.handlers):
            handler = logging.StreamHandler(sys.stderr)
            handler.ramcli = True  # type: ignore[attr-defined]
            log.addHandler(handler)


def _messages_to_stderr() -> None:
    """Ray's driver prints the cluster's messages (a worker died, a task is retried) on standard output,
    where `--json` lines go: send them to standard error with ramcli's own notes. Ray has no setting for
    this (ray/_private/worker.py: ``listen_error_messages``), so its printer is wrapped; where a Ray version
    lacks it, nothing changes."""
    from ray._private import worker

    printer = getattr(worker, "print_to_stdstream", None)
    if printer is None or getattr(printer, "ramcli", False):
        return

    def to_stderr(data: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        return printer({**data, "is_err": True}, *args, **kwargs)

    to_stderr.ramcli = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr


def _item(raw: bytes) -> Prepared | ImageError:
    got = pickle.loads(raw)
    if got[0] == "error":
        _, message, path, hint, lasting = got
        return ImageError(message, path=path, hint=hint, lasting=lasting)
    prepared: Prepared = got[1]
    return prepared


def settings_key(model: str, engine: EngineOptions, library: LibraryVocab | None, opts: TagOptions,
                 caption_tags: list[str] | None, pre: Preprocess) -> str:
    """The shard folder's name: a digest of everything that changes what the model makes of a photo, so
    an interrupted run's shards are taken only by a run that would have made the same ones."""
    lib = None if library is None else {
        "custom": [[t.id, t.name, hashlib.sha256(np.ascontiguousarray(t.embeds).tobytes()).hexdigest(),
                    t.threshold] for t in library.custom],
        "disabled": sorted(library.disabled), "calibrated": library.calibrated}
    said = {"model": model, "engine": asdict(engine), "library": lib, "batch": opts.batch_size,
            "selection": asdict(opts.selection), "sampling": asdict(opts.sampling), "tokens": opts.store_tokens,
            "caption_tags": caption_tags, "pre": repr(pre), "version": 1}
    return hashlib.sha256(json.dumps(said, sort_keys=True, default=str).encode()).hexdigest()[:16]


class RayMiddle:
    """Prepare -> infer on Ray for one `ramcli tag --ray` (a ``run.Middle`` factory: ``tag_run`` calls it
    with the index, the tagger and the options)."""

    def __init__(self, options: RayOptions, *, index_file: Path, engine: EngineOptions | None,
                 caption_tags: list[str] | None, report: Callable[[str], None]) -> None:
        need_ray()  # before the index and the model: a missing extra is one line, at once
        self.options = options
        self.index_file = index_file
        self.engine = engine or EngineOptions()
        self.caption_tags = caption_tags
        self.report = report
        self.resumed = 0  # photos taken from an interrupted run's shards (not inferred again)
        self.by_hash = 0  # of those, photos whose stat had changed (keywords written, index not yet told)

    def __call__(self, index: Index, tagger: OnDemand, opts: TagOptions) -> Callable[[Sourced], Iterator[list[Item]]]:
        def middle(found: Sourced) -> Iterator[list[Item]]:
            return self._run(found, index, tagger, opts)

        return middle

    # ---- the run

    def _run(self, found: Sourced, index: Index, tagger: OnDemand, opts: TagOptions) -> Iterator[list[Item]]:
        from ramcli.pipeline import shards

        if not found.todo:
            return  # nothing new: Ray is not even started
        read = functools.lru_cache(maxsize=8)(shards.read)  # photos resumed by hash: their shard read once
        model = tagger.model
        library = LibraryVocab.read(model, self.index_file)
        ray = need_ray()
        started = self._connect(ray)
        try:
            gpus = int(ray.cluster_resources().get("GPU", 0)) if self.engine.device != "cpu" else 0
            # the decode contract the workers' provider asks for (draft JPEG decoding where CUDA runs the model)
            pre = input_contract(model, self.engine, "CUDA" if gpus else "CPU")
            key = settings_key(model.name, self.engine, library, opts, self.caption_tags, pre)
            folder = (self.options.shards or self.index_file.parent / SHARDS).absolute() / key
            left = shards.Landed.scan(folder)
            merged = 0

            def pick(records: list[tuple[shards.Record, Path]]) -> list[Item]:
                """A group for the sink: each photo's tags chosen from its logits with the user's verdicts,
                exactly as the infer stage chooses them in a local run (one index read per group)."""
                said = index.verdicts_for([r.hash for r, _ in records])
                out: list[Item] = []
                for record, path in records:
                    v = said.get(record.hash, {})
                    out.append(record.inferred(path, tagger().tags(record.logits, opts.selection, v), v))
                return out

            send: list[Path] = []
            again: dict[Path, list[Path]] = {}  # shard -> the photos to take from it (by their scan stat)
            for path in found.todo:
                st = found.seen.get(str(path))
                shard = left.by_stat.get((str(path), *st)) if st is not None else None
                if shard is None:
                    send.append(path)
                else:
                    again.setdefault(shard, []).append(path)
            for shard, paths in again.items():
                wanted = {str(p) for p in paths}
                records = [r for r in shards.read(shard) if r.path in wanted]
                self.resumed += len(records)
                if records:
                    yield pick([(r, Path(r.path)) for r in records])
            if send:
                for kind, got in self._stream(ray, send, found, index, model.name, opts, library, pre, folder,
                                              gpus, left):
                    if kind == "shard":
                        wanted = set(got[1])
                        merged += 1
                        if merged == 2:
                            faults.point("ray-driver-second-shard")  # the resume test: one merged, one landed
                        records = [r for r in shards.read(got[0]) if r.path in wanted]
                        if records:
                            yield pick([(r, Path(r.path)) for r in records])
                    elif kind == "resumed":
                        path, shard = got
                        record = next(r for r in read(shard) if r.hash == path.hash)
                        self.resumed += 1
                        self.by_hash += 1
                        yield pick([(record, path.path)])
                    else:
                        yield [got]
            if self.resumed:
                self.report(f"{self.resumed} photos from the shards of an interrupted run, not inferred again "
                            f"({self.by_hash} found by image hash)")
            # every group is merged once the sink asks past the last one: the shards have served
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            if started:
                ray.shutdown()

    def _connect(self, ray: Any) -> bool:
        """Join the cluster, or start Ray here; True when this run started it (and so shuts it down)."""
        if ray.is_initialized():
            return False
        _quiet_ray()
        env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
        kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env}, "include_dashboard": False,
                                  "log_to_driver": False, "configure_logging": False}
        address = self.options.address
        try:
            if address not in (None, "", "local"):
                ray.init(address=address, **kwargs)
            else:  # "local": a Ray of its own here, even where RAY_ADDRESS names a cluster
                ray.init(address="local", num_cpus=self.options.num_cpus,
                         object_store_memory=self.options.object_store_memory, **kwargs)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise RamcliError(f"cannot start or reach Ray ({first_line(exc)})",
                              hint="check --ray-address (auto, ray://HEAD:10001, HEAD:6379)" if address else None
                              ) from None
        _messages_to_stderr()
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # ramcli draws its own bar
        ctx.print_on_execution_start = False
        return True

    def _stream(self, ray: Any, send: list[Path], found: Sourced, index: Index, model: str, opts: TagOptions,
                library: LibraryVocab | None, pre: Preprocess, folder: Path, gpus: int,
                left: Any) -> Iterator[tuple[str, Any]]:
        """Ray Data over ``send``: ("shard", (file, paths)) per inferred batch, ("item", item) per photo that
        needed no model, ("resumed", (prepared, file)) per photo whose image an interrupted run's shard holds."""
        indexed = index.known_hashes(model)  # as the run began: a hash only a shard holds is a resumed photo
        known_ref = ray.put(indexed | frozenset(left.by_hash))
        rows = [{"path": str(p), "size": found.seen.get(str(p), (0, 0))[0],
                 "mtime_ns": found.seen.get(str(p), (0, 0))[1]} for p in send]
        batch = opts.batch_size
        cpus = int(ray.cluster_resources().get("CPU", 1))
        actors = self.options.actors or (gpus or max(1, cpus // 8))
        ds = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // batch)))
        ds = ds.map_batches(_prepare_batch, batch_size=batch, num_cpus=1,
                            fn_kwargs={"pre": pre, "known": known_ref, "known_id": known_ref.hex(),
                                       "sampling": opts.sampling})
        engine = replace(self.engine, device="cuda") if gpus and self.engine.device == "auto" else self.engine
        ds = ds.map_batches(InferActor, batch_size=batch, compute=ray.data.ActorPoolStrategy(size=actors),
                            num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1,
                            fn_constructor_kwargs={
                                "model": model, "engine": engine, "library": library, "selection": opts.selection,
                                "batch_size": batch, "caption_tags": self.caption_tags, "folder": str(folder),
                                "tokens": opts.store_tokens})
        pending: dict[str, list[str]] = {}
        try:
            yield from self._results(ds, pending, left, indexed)
        except ray.exceptions.RayError as exc:  # e.g. a node without the model: Ray's traceback, as one line
            raise RamcliError(f"the Ray run failed: {first_line(exc)}",
                              hint="the shards that landed are kept: fix it and run the same command again") from None

    @staticmethod
    def _results(ds: Any, pending: dict[str, list[str]], left: Any,
                 indexed: frozenset[str]) -> Iterator[tuple[str, Any]]:
        for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for path, shard, raw in zip(out["path"], out["shard"], out["item"], strict=True):
                if shard:
                    pending.setdefault(str(shard), []).append(str(path))
                    continue
                item = _item(raw)
                if isinstance(item, Prepared) and item.hash in left.by_hash and item.hash not in indexed:
                    yield "resumed", (item, left.by_hash[item.hash])
                else:
                    yield "item", item
            for shard in list(pending):  # a shard's rows come in one block: it is whole here
                yield "shard", (Path(shard), pending.pop(shard))
