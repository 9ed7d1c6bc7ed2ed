"""Scores of every image for every dataset tag: the model run through the prepare stage and the
engine (the tagger `ramcli tag` uses), cached like the authors' ``logits.pth`` so that re-thresholding
and re-plotting cost nothing.

Which label embeddings score a dataset tag, as the authors' ``batch_inference.py`` decides:

* a tag of the model's vocabulary (exact name, as their ``model_taglist.index(tag)``): the model's own
  embeddings (RAM++: its 51 descriptions) and threshold;
* any other tag (or every tag with ``open_set``): open-set, through the CLIP text encoder as
  ``ramcli add-tag`` makes a custom tag: RAM++ with the dataset's LLM descriptions (weighted per image,
  as theirs), else (and always for RAM) the prompt-template mean; threshold 0.5, their open-set choice.

Only the dataset's tags run through the tag head (the authors "trim taglist for faster inference"
too): OpenImages' 214 tags cost 1/21 of the full head.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ramcli.errors import ImageError, RamcliError
from ramcli.evaluate.dataset import Dataset
from ramcli.models import store
from ramcli.models.families import family_of
from ramcli.pipeline.prepare import Prepare
from ramcli.runtime import taggers
from ramcli.runtime.engine import EngineOptions
from ramcli.runtime.images import to_input
from ramcli.runtime.tagging import Tagger, sigmoid
from ramcli.runtime.vocabulary import LabelGroup, Vocabulary

OPEN_SET_THRESHOLD = 0.5  # the authors' threshold for tags the model was not trained on
SAVE_EVERY_S = 30.0  # a long run's scores reach the cache at least this often (and on Ctrl-C)
Report = Callable[[str], None]


@dataclass
class TagPlan:
    """How each dataset tag is scored: the model's own tag (index) or open-set."""

    vocab: Vocabulary | None  # None: the family takes no other tags; its full vocabulary runs
    columns: np.ndarray  # column of the tagger's scores for each dataset tag
    thresholds: np.ndarray  # (T,) default thresholds in taglist order
    open_set: np.ndarray  # (T,) bool
    descriptions_used: np.ndarray  # (T,) bool: open-set from LLM descriptions (else prompt templates)


def plan(model: store.InstalledModel, ds: Dataset, *, open_set: bool = False, report: Report = lambda _m: None,
         text_encoder: Callable[[], Callable[[list[str]], np.ndarray]] | None = None) -> TagPlan:
    """Decide how each of ``ds``'s tags is scored, and build the vocabulary that scores them."""
    names = model.tag_names
    where: dict[str, int] = {}
    for i, n in enumerate(names):
        where.setdefault(n, i)
    known = [None if open_set else where.get(t) for t in ds.taglist]
    is_open = np.array([k is None for k in known])
    family = family_of(model)
    if not family.takes_custom_tags:
        if is_open.any():
            missing = [t for t, o in zip(ds.taglist, is_open, strict=True) if o][:3]
            raise RamcliError(f"model {model.name!r} cannot score tags outside its vocabulary "
                              f"({', '.join(missing)}...)",
                              hint="use a RAM++ or RAM model for open-set tags")
        cols = np.array(known, dtype=np.int64)
        return TagPlan(None, cols, model.thresholds[cols].astype(np.float32), is_open, np.zeros(len(cols), bool))
    builtin = Vocabulary.builtin(model)
    closed = [k for k in known if k is not None]
    closed_pos = [i for i, k in enumerate(known) if k is not None]
    open_pos = [i for i, k in enumerate(known) if k is None]
    groups: list[LabelGroup] = []
    if closed:
        groups.append(LabelGroup(0, builtin.groups[0].embeds[np.array(closed)]))
    weighted = builtin.reweight_scale is not None
    use_des = np.zeros(len(ds.taglist), bool)
    order = list(closed_pos)
    if open_pos:
        from ramcli.vocab.custom import label_embeds

        embed = text_encoder() if text_encoder else _text_encoder()
        report(f"embedding {len(open_pos)} open-set tag{'s' * (len(open_pos) != 1)} with the CLIP text encoder")
        by_d: dict[int, list[tuple[int, np.ndarray]]] = {}
        for i in open_pos:
            tag = ds.taglist[i]
            des = ds.descriptions.get(tag, []) if weighted else []
            use_des[i] = bool(des)
            e = label_embeds(tag, des, embed)
            by_d.setdefault(e.shape[0], []).append((i, e))
        start = len(closed)
        for rows in by_d.values():
            groups.append(LabelGroup(start, np.stack([e for _, e in rows]).astype(np.float32)))
            order += [i for i, _ in rows]
            start += len(rows)
    thresholds = np.full(len(ds.taglist), OPEN_SET_THRESHOLD, np.float32)
    if closed:
        thresholds[closed_pos] = model.thresholds[np.array(closed)]
    vocab = Vocabulary([ds.taglist[i] for i in order], None, thresholds[order], groups, builtin.reweight_scale)
    columns = np.empty(len(order), np.int64)
    columns[np.array(order)] = np.arange(len(order))
    return TagPlan(vocab, columns, thresholds, is_open, use_des)


def _text_encoder() -> Callable[[list[str]], np.ndarray]:
    from ramcli.runtime.textenc import TextEncoder
    from ramcli.vocab.tagops import require_encoder

    return TextEncoder(require_encoder())


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def cache_key(model: store.InstalledModel, ds: Dataset, tp: TagPlan, engine: EngineOptions) -> dict[str, object]:
    """What the cached scores depend on: model (its meta.json, which changes with every conversion),
    precision, decoding, dataset (tags, images, descriptions) and which tags were open-set."""
    return {"model": model.name, "model_meta_sha256": _file_sha(model.path / "meta.json"),
            "precision": engine.precision, "decode": engine.decode, "dataset": ds.name,
            "dataset_sha256": ds.key(), "open_set": [bool(x) for x in tp.open_set], "orient": False}


@dataclass
class Scores:
    scores: np.ndarray  # (N, T) float32, taglist order
    failed: list[str] = field(default_factory=list)  # one line per image that could not be read
    cached: int = 0  # images whose scores came from the cache
    seconds: float = 0.0  # inference time of this run (0 when all came from the cache)
    provider: str = ""


def _load_cache(folder: Path, key: dict[str, object], shape: tuple[int, int]) -> tuple[np.ndarray, int, list[str]]:
    try:
        saved = json.loads((folder / "key.json").read_text(encoding="utf-8"))
        arr = np.load(folder / "scores.npy", allow_pickle=False)
    except (OSError, ValueError):
        return np.zeros(shape, np.float32), 0, []
    if saved.get("key") != key or arr.shape != shape or arr.dtype != np.float32:
        return np.zeros(shape, np.float32), 0, []
    return arr, int(saved.get("done", 0)), list(saved.get("failed", []))


def _save_cache(folder: Path, key: dict[str, object], arr: np.ndarray, done: int, failed: list[str]) -> None:
    """scores.npy then key.json, each written whole and renamed over the old one: a cut-off write
    leaves the previous cache, never one whose key claims rows it does not hold."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "scores.npy.tmp"
    with open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)
    tmp.replace(folder / "scores.npy")
    tmp_key = folder / "key.json.tmp"
    tmp_key.write_text(json.dumps({"key": key, "done": done, "failed": failed}, indent=1), encoding="utf-8")
    tmp_key.replace(folder / "key.json")


def compute(model: store.InstalledModel, ds: Dataset, tp: TagPlan, engine: EngineOptions, folder: Path, *,
            batch_size: int = 8, report: Report = lambda _m: None,
            on_total: Callable[[int], None] = lambda _n: None, on_image: Callable[[], None] = lambda: None) -> Scores:
    """Scores for every image, from ``folder``'s cache where it has them; the rest run through the model.

    An image that cannot be read is scored as a black 10x10 image, as the authors' loader does, so
    that the numbers stay comparable with theirs; each is reported once (``failed``)."""
    n, t = len(ds.relpaths), len(ds.taglist)
    key = cache_key(model, ds, tp, engine)
    arr, done, failed = _load_cache(folder, key, (n, t))
    cached = done
    on_total(n - done)  # the progress bar counts what is left to score
    if done >= n:
        return Scores(arr, failed, cached)
    tagger = taggers.open_tagger(model, engine, vocab=tp.vocab, batch_size=batch_size)
    pre = tagger.engine.preprocess
    black = to_input(Image.new("RGB", (10, 10), 0), pre)
    prepare = Prepare(pre, pool="threads", orient=False)
    paths = ds.images[done:]
    t0, last_save = time.perf_counter(), time.perf_counter()
    batch: list[np.ndarray] = []
    try:
        for got in prepare(paths):
            if isinstance(got, ImageError) or got.pixels is None:
                failed.append(f"{ds.relpaths[done + len(batch)]}: {got}")
                report(f"cannot read image, scored as a black image (as the authors do): {got}")
                batch.append(black)
            else:  # a benchmark's video (none of the authors' has one) counts as its first still
                batch.append(got.pixels[0] if got.video else got.pixels)
            if len(batch) >= batch_size:
                done = _run(tagger, tp, batch, arr, done, on_image)
                batch = []
                if time.perf_counter() - last_save > SAVE_EVERY_S:
                    _save_cache(folder, key, arr, done, failed)
                    last_save = time.perf_counter()
        if batch:
            done = _run(tagger, tp, batch, arr, done, on_image)
    finally:
        _save_cache(folder, key, arr, done, failed)
    return Scores(arr, failed, cached, time.perf_counter() - t0, tagger.engine.provider)


def _run(tagger: Tagger, tp: TagPlan, batch: list[np.ndarray], arr: np.ndarray, done: int,
         on_image: Callable[[], None]) -> int:
    _embeds, logits = tagger.infer(np.stack(batch))
    arr[done:done + len(batch)] = sigmoid(logits)[:, tp.columns]
    for _ in batch:
        on_image()
    return done + len(batch)
