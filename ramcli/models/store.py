"""Installed (converted) models in the user cache: one folder per model, read without torch.

Layout of ``<cache>/models/<name>/``::

    meta.json            architecture, source checkpoint + sha256, parity numbers
    image_encoder.onnx   image (B,3,S,S) -> image embeddings (B,N,512)
    tag_head.onnx        image embeddings + tag embeddings (B,T,512) -> logits (B,T)
    tag_head_few.onnx    the same, computed the way that is cheaper for a few tags (RAM, RAM++)
    *.int8.onnx          optional: dynamically quantised copies (`ramcli models quantize`)
    label_embed.npy      (T*D, 512) float32 label/description embeddings, tag-major
    tag_list.txt, tag_list_chinese.txt, thresholds.txt, NOTICE.txt, LICENSE

A folder appears only complete: conversion writes into ``.<name>.partial`` and renames.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ramcli.config import manifests, models_dir
from ramcli.errors import ModelNotFound, RamcliError

if TYPE_CHECKING:
    import numpy as np


META = "meta.json"
ENCODER = "image_encoder.onnx"
HEAD = "tag_head.onnx"
# The same tag head with its attention rewritten for few tags per image (convert.tag_head.CrossSelf.absorbed):
# re-ranking a search query or applying a new custom tag over stored tokens. Models converted before it
# existed lack it, and the full head does that work instead.
HEAD_FEW = "tag_head_few.onnx"
LABELS = "label_embed.npy"
TAG_LIST = "tag_list.txt"
TAG_LIST_ZH = "tag_list_chinese.txt"
THRESHOLDS = "thresholds.txt"
# fp32: the converted graphs; int8 (CPUs) and fp16 (CUDA): made by `ramcli models quantize` (ramcli.quantize)
PRECISIONS = ("fp32", "int8", "fp16")
# The graphs that have int8/fp16 variants: nearly all of the FLOPs. Tag2Text's caption graphs stay fp32
# (onnxruntime's quantiser breaks the shape inference of the decoder step with its key/value cache).
QUANTIZED = (ENCODER, HEAD)


def graph_variant(path: Path, precision: str) -> Path:
    """``image_encoder.onnx`` -> ``image_encoder.int8.onnx``; fp32 is the file itself."""
    if precision == "fp32":
        return path
    return path.with_name(f"{path.name.removesuffix('.onnx')}.{precision}.onnx")


def read_lines(path: Path) -> list[str]:
    """One entry per line, exactly as the official files store them (no stripping)."""
    return path.read_text(encoding="utf-8").splitlines()


def read_thresholds(path: Path, count: int) -> np.ndarray:
    import numpy as np  # lazily: search by tag names runs without numpy (~0.2 s of a 0.3 s budget)

    values = [float(v) for v in read_lines(path) if v.strip()]
    if len(values) != count:
        raise RamcliError(f"has {len(values)} thresholds for {count} tags", path=path,
                          hint="use the thresholds file that belongs to this tag list")
    return np.asarray(values, dtype=np.float32)


@dataclass(frozen=True)
class Preprocess:
    """The input contract of one model (from its manifest): what the prepare stage makes of a photo."""

    image_size: int = 384
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    # Draft decoding: let the JPEG decoder scale by 1/2, 1/4 or 1/8 in the DCT, never below
    # image_size, before the usual resize (a 14 MP photo: 65 instead of 338 ms); the input differs
    # slightly from the reference's, so tags can too (`ramcli models verify --photos` measures it).
    draft: bool = False

    @property
    def draft_size(self) -> int | None:
        """``read_photo``'s ``draft``: the side a draft decode must keep, None to decode exactly."""
        return self.image_size if self.draft else None


@dataclass(frozen=True)
class InstalledModel:
    name: str
    path: Path

    @cached_property
    def meta(self) -> dict[str, Any]:
        return json.loads((self.path / META).read_text(encoding="utf-8"))

    @property
    def family(self) -> str:
        return str(self.meta["family"])

    @property
    def num_tags(self) -> int:
        return int(self.meta.get("num_tags", 0))

    @property
    def preprocess(self) -> Preprocess:

        p = self.meta["preprocess"]
        return Preprocess(int(p["image_size"]), tuple(p["mean"]), tuple(p["std"]))

    @cached_property
    def tag_names(self) -> list[str]:
        return read_lines(self.path / TAG_LIST)

    @cached_property
    def tag_names_zh(self) -> list[str] | None:
        p = self.path / TAG_LIST_ZH
        return [s.strip() for s in read_lines(p)] if p.exists() else None

    @cached_property
    def thresholds(self) -> np.ndarray:
        import numpy as np

        p = self.path / THRESHOLDS
        if p.exists():
            return read_thresholds(p, self.num_tags)
        return np.full(self.num_tags, float(self.meta.get("default_threshold", 0.68)), dtype=np.float32)

    def label_embed(self) -> np.ndarray:
        """Memory-mapped: 479 MB for RAM++ Swin-L, shared through the page cache."""
        import numpy as np

        return np.load(self.path / LABELS, mmap_mode="r")

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())


def model_path(name: str) -> Path:
    return models_dir() / name


def is_installed(name: str) -> bool:
    return (model_path(name) / META).is_file()


def installed() -> list[InstalledModel]:
    root = models_dir()
    if not root.is_dir():
        return []
    return [InstalledModel(p.name, p) for p in sorted(root.iterdir())
            if not p.name.startswith(".") and (p / META).is_file()]


def get(name: str) -> InstalledModel:
    if not is_installed(name):
        known = name in manifests()
        hint = f"run `ramcli models pull {name}`" if known else \
            "run `ramcli models list` to see models, or `ramcli models import CKPT --name NAME`"
        raise ModelNotFound(f"model {name!r} is not installed", hint=hint)
    return InstalledModel(name, model_path(name))


def remove(name: str) -> Path:
    path = model_path(name)
    if not path.is_dir():
        raise ModelNotFound(f"model {name!r} is not installed", hint="see `ramcli models list`")
    shutil.rmtree(path)
    return path


def staging_path(name: str) -> Path:
    return models_dir() / f".{name}.partial"


@contextlib.contextmanager
def staging(name: str) -> Iterator[Path]:
    """A fresh, empty folder to convert into; gone afterwards unless :func:`commit` moved it in place."""
    path = staging_path(name)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def commit(staging: Path, name: str) -> Path:
    """Replace the installed model with the finished staging folder."""
    final = model_path(name)
    if final.exists():
        old = models_dir() / f".{name}.old"
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        staging.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(final)
    return final


def find_family(family: str, preferred: str) -> InstalledModel | None:
    """An installed model of ``family``: ``preferred`` if installed, else any (e.g. an imported one)."""
    if is_installed(preferred):
        return get(preferred)
    return next((m for m in installed() if m.meta.get("family") == family), None)

