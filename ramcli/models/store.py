"""Installed (converted) models in the user cache: one folder per model, read without torch.

Layout of ``<cache>/models/<name>/``::

    meta.json            architecture, source checkpoint + sha256, parity numbers
    image_encoder.onnx   image (B,3,S,S) -> image embeddings (B,N,512)
    tag_head.onnx        image embeddings + tag embeddings (B,T,512) -> logits (B,T)
    tag_head_few.onnx    the same, computed the way that is cheaper for a few tags (RAM, RAM++)
    *.int8.onnx          optional: dynamically quantised copies (`ramcli models quantize`)
    label_embed.npy      (T*D, 512) float32 label/description embeddings, tag-major
    tag_list.txt, tag_list_chinese.txt, thresholds.txt, NOTICE.txt, LICENSE

A folder appears only complete: conversion writes into ``.<name>.partial`` and renames. What
happens to it afterwards (a full disk, a bad sector, a sync tool, a person) is checked when the
model is opened (:func:`get`): every file its family needs is there, the binary ones at the size
conversion wrote (``meta.json``'s ``file_bytes``), the label embeddings are the float32 array
meta.json describes and the tag files have one line per tag. A damaged model is one
:class:`~ramcli.errors.BrokenModel` line naming the file and the repair, never a traceback half-way
through a run; `models list` and `doctor` show it as broken and go on with the others.

The check reads headers and text files only (5 ms warm, 11 ms cold, measured on a folder laid out like
full-size RAM++: 4,585 tags, a sparse 479 MB label_embed.npy) and imports no numpy:
a search by tag names opens the model too, inside a 0.3 s start-up budget.
"""

from __future__ import annotations

import ast
import contextlib
import json
import math
import shlex
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ramcli.config import manifests, models_dir
from ramcli.errors import BrokenModel, ModelNotFound, RamcliError
from ramcli.models.families import FAMILIES, Family
from ramcli.models.families.files import ENCODER as ENCODER
from ramcli.models.families.files import HEAD as HEAD
from ramcli.models.families.files import HEAD_FEW as HEAD_FEW
from ramcli.models.families.files import LABELS as LABELS
from ramcli.models.families.files import META as META
from ramcli.models.families.files import QUANTIZED as QUANTIZED
from ramcli.models.families.files import TAG_LIST as TAG_LIST
from ramcli.models.families.files import TAG_LIST_ZH as TAG_LIST_ZH
from ramcli.models.families.files import THRESHOLDS as THRESHOLDS

if TYPE_CHECKING:
    import numpy as np


# fp32: the converted graphs; int8 (CPUs) and fp16 (CUDA): made by `ramcli models quantize` (ramcli.quantize)
PRECISIONS = ("fp32", "int8", "fp16")


def graph_variant(path: Path, precision: str) -> Path:
    """``image_encoder.onnx`` -> ``image_encoder.int8.onnx``; fp32 is the file itself."""
    if precision == "fp32":
        return path
    return path.with_name(f"{path.name.removesuffix('.onnx')}.{precision}.onnx")


def read_lines(path: Path) -> list[str]:
    """One entry per line, exactly as the official files store them (no stripping)."""
    return path.read_text(encoding="utf-8").splitlines()


def parse_thresholds(path: Path, count: int) -> list[float]:
    """The per-tag thresholds of ``path``, one number per non-blank line, exactly ``count`` of them."""
    values: list[float] = []
    for number, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        try:
            value = float(line)
        except ValueError:
            raise RamcliError(f"line {number} is not a number: {line.strip()[:40]!r}", path=path,
                              hint="one threshold per line, e.g. 0.68") from None
        if not math.isfinite(value):
            raise RamcliError(f"line {number} is not a finite number: {line.strip()!r}", path=path,
                              hint="one threshold per line, e.g. 0.68")
        values.append(value)
    if len(values) != count:
        raise RamcliError(f"has {len(values)} thresholds for {count} tags", path=path,
                          hint="use the thresholds file that belongs to this tag list")
    return values


def read_thresholds(path: Path, count: int) -> np.ndarray:
    import numpy as np  # lazily: search by tag names runs without numpy (~0.2 s of a 0.3 s budget)

    return np.asarray(parse_thresholds(path, count), dtype=np.float32)


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
        """meta.json; an unreadable one is a BrokenModel line (models list and doctor go on)."""
        return _read_meta(self.name, self.path)

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

    # ---- is it whole?
    @cached_property
    def problem(self) -> BrokenModel | None:
        """The first thing wrong with this model's folder (what :func:`get` checks), or None when it is whole."""
        try:
            _check(self)
        except BrokenModel as err:
            return err
        return None

    def check(self) -> InstalledModel:
        """This model, after making sure its files are whole; raises its :attr:`problem`."""
        if self.problem is not None:
            raise self.problem
        return self

    def broken(self, file: str, what: str) -> BrokenModel:
        """The error for ``what`` is wrong with ``file`` in this model's folder, with the repair."""
        meta: Mapping[str, Any] | None = None
        with contextlib.suppress(BrokenModel):
            meta = self.meta
        return BrokenModel(self.name, what, path=self.path / file, hint=repair_hint(self.name, meta))


def repair_hint(name: str, meta: Mapping[str, Any] | None = None) -> str:
    """How to make the broken model ``name`` whole again: convert it again from what it was made
    from (the checkpoint it was imported from, while that file is still there; else the hub, whose
    download `models pull` reuses from the Hugging Face cache), or remove it."""
    remove = f"or remove it: `ramcli models rm {shlex.quote(name)}`"
    source = meta.get("source") if meta is not None else None
    checkpoint = source.get("checkpoint") if isinstance(source, Mapping) and source.get("kind") == "import" else None
    known = manifests().get(name)
    family = FAMILIES.get(str(meta.get("family"))) if meta is not None else None
    if isinstance(checkpoint, str) and Path(checkpoint).is_file():
        tags = " --tag-list TAGS.txt" if known is None and family is not None and TAG_LIST in family.files else ""
        return (f"convert it again: `ramcli models import {shlex.quote(checkpoint)} --name {shlex.quote(name)}{tags}`, "
                + remove)
    if known is not None and known.supported:
        return f"convert it again: `ramcli models pull {name}` (weights already downloaded are reused), " + remove
    return f"import its checkpoint again: `ramcli models import CHECKPOINT --name {shlex.quote(name)}`, " + remove


def file_bytes(folder: Path) -> dict[str, int]:
    """The size of each binary file of a converted model (graphs, their weights, the label
    embeddings, the BPE vocabulary), for meta.json's ``file_bytes``: opening the model compares them,
    which finds a truncated or half-copied file with one ``stat`` each. Text files (tag lists,
    thresholds) are checked by their content instead, so editing them stays allowed."""
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir())
            if p.is_file() and p.name.endswith(_BINARY)}


_BINARY = (".onnx", ".onnx.data", ".npy", ".gz")
# Bytes that can open a serialised onnx.ModelProto: the key of one of its fields (ir_version first
# in everything onnx and onnxruntime write). Random bytes, a text file or an HTML error page fail.
_ONNX_FIRST = frozenset({0x08, 0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42})
_NPY_MAGIC = b"\x93NUMPY"
_NPY_MAX_HEADER = 10_000  # numpy's own limit for a header it will read


def _read_meta(name: str, folder: Path) -> dict[str, Any]:
    path = folder / META

    def broken(what: str) -> BrokenModel:
        return BrokenModel(name, what, path=path, hint=repair_hint(name))

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise broken("the file is missing") from None
    except OSError as err:
        raise broken(f"cannot be read ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise broken("is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise broken(f"is not valid JSON ({err.msg}, line {err.lineno} column {err.colno})") from None
    except RecursionError:
        raise broken("is not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise broken(f"is not a JSON object but {type(data).__name__}")
    return data


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check(model: InstalledModel) -> None:
    """Raise a BrokenModel for the first thing wrong with ``model``'s folder (see the module's doc).
    What a file holds is checked before its recorded size: "holds a pickle" says more than "wrong size"."""
    family = _check_meta(model, model.meta)
    _check_files(model, family)
    if TAG_LIST in family.files:
        _check_tag_files(model)
    if LABELS in family.files:
        _check_labels(model)
    _check_sizes(model, family)


def _check_meta(model: InstalledModel, meta: Mapping[str, Any]) -> Family:
    """The fields the runtime reads, with the types it reads them as; returns the model's family."""
    name = meta.get("family")
    family = FAMILIES.get(name) if isinstance(name, str) else None
    if family is None:
        if not isinstance(name, str):
            raise model.broken(META, f'"family" is {"missing" if name is None else "not a name"}')
        raise model.broken(META, f"names the model family {name!r}, which this ramcli does not know "
                                 f"(it knows {', '.join(FAMILIES)})")
    if family.tags:
        if not _whole(meta.get("num_tags")) or meta["num_tags"] < 1:
            raise model.broken(META, f'"num_tags" must be a positive whole number, not {meta.get("num_tags")!r}')
        p = meta.get("preprocess")
        if not (isinstance(p, Mapping) and _whole(p.get("image_size")) and p["image_size"] > 0
                and all(isinstance(p.get(k), list) and len(p[k]) == 3 and all(map(_number, p[k]))
                        for k in ("mean", "std"))):
            raise model.broken(META, '"preprocess" must hold image_size (a whole number), '
                                     'mean and std (3 numbers each)')
    if LABELS in family.files and (not _whole(meta.get("descriptions_per_tag")) or meta["descriptions_per_tag"] < 1):
        raise model.broken(META, f'"descriptions_per_tag" must be a positive whole number, '
                                 f'not {meta.get("descriptions_per_tag")!r}')
    if family.weights_descriptions and meta.get("reweight_scale") is not None and not _number(meta["reweight_scale"]):
        raise model.broken(META, f'"reweight_scale" must be a number, not {meta["reweight_scale"]!r}')
    if "default_threshold" in meta and not _number(meta["default_threshold"]):
        raise model.broken(META, f'"default_threshold" must be a number, not {meta["default_threshold"]!r}')
    if "caption" in meta and not isinstance(meta["caption"], Mapping):
        raise model.broken(META, '"caption" must be an object')
    if "context_length" in meta and (not _whole(meta["context_length"]) or meta["context_length"] < 1):
        raise model.broken(META, f'"context_length" must be a positive whole number, not {meta["context_length"]!r}')
    sizes = meta.get("file_bytes", {})
    if not (isinstance(sizes, Mapping) and all(isinstance(k, str) and Path(k).name == k and _whole(v)
                                               for k, v in sizes.items())):
        raise model.broken(META, '"file_bytes" must map file names to sizes')
    return family


def _check_files(model: InstalledModel, family: Family) -> None:
    """Every file the family needs or meta.json records is there and not empty; every graph starts
    like an ONNX model (onnxruntime itself reads the rest when the model loads)."""
    sizes: Mapping[str, int] = model.meta.get("file_bytes", {})
    for name in dict.fromkeys([*family.files, *sizes, *family.optional_files]):
        path = model.path / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            if name in family.optional_files:
                continue
            raise model.broken(name, "the file is missing") from None
        except OSError as err:
            raise model.broken(name, f"cannot be read ({err.strerror or err})") from None
        if not path.is_file():
            raise model.broken(name, "is not a file")
        if size == 0:
            raise model.broken(name, "is empty")
        if name.endswith(".onnx"):
            with _reading(model, name) as f:
                first = f.read(1)
            if first[0] not in _ONNX_FIRST:
                raise model.broken(name, "is not an ONNX graph")


def _check_sizes(model: InstalledModel, family: Family) -> None:
    sizes: Mapping[str, int] = model.meta.get("file_bytes", {})
    for name, want in sizes.items():
        path = model.path / name
        if name in family.optional_files and not path.exists():
            continue
        size = path.stat().st_size
        if size != want:
            raise model.broken(name, f"is {size:,} bytes, but conversion wrote {want:,} (truncated or overwritten)")


@contextlib.contextmanager
def _reading(model: InstalledModel, name: str) -> Iterator[Any]:
    try:
        with (model.path / name).open("rb") as f:
            yield f
    except OSError as err:
        raise model.broken(name, f"cannot be read ({err.strerror or err})") from None


def _check_tag_files(model: InstalledModel) -> None:
    """One tag per line, as many as the model has tags, in the tag list and (where present) the
    Chinese names; one finite number per tag in the thresholds."""
    count = model.num_tags
    for name, read in ((TAG_LIST, lambda: model.tag_names), (TAG_LIST_ZH, lambda: model.tag_names_zh)):
        try:
            lines = read()
        except UnicodeDecodeError:
            raise model.broken(name, "is not UTF-8 text") from None
        except OSError as err:
            raise model.broken(name, f"cannot be read ({err.strerror or err})") from None
        if lines is not None and len(lines) != count:
            raise model.broken(name, f"has {len(lines)} lines, but the model has {count} tags")
    if (model.path / THRESHOLDS).exists():
        try:
            parse_thresholds(model.path / THRESHOLDS, count)
        except UnicodeDecodeError:
            raise model.broken(THRESHOLDS, "is not UTF-8 text") from None
        except OSError as err:
            raise model.broken(THRESHOLDS, f"cannot be read ({err.strerror or err})") from None
        except RamcliError as err:
            raise model.broken(THRESHOLDS, err.message) from None


def _check_labels(model: InstalledModel) -> None:
    """label_embed.npy is what np.save wrote for this model: a float32 (tags x descriptions, width)
    array in C order, whole. Read from its header by hand (no numpy import, no pickle ever)."""
    meta = model.meta
    rows = model.num_tags * int(meta["descriptions_per_tag"])
    arch = meta.get("architecture")
    width = arch.get("embed_dim") if isinstance(arch, Mapping) else None
    width = width if _whole(width) else 512
    with _reading(model, LABELS) as f:
        head = f.read(12)
        if not head.startswith(_NPY_MAGIC) or len(head) < 10:
            raise model.broken(LABELS, "is not a NumPy .npy file")
        major = head[6]
        if major not in (1, 2, 3):
            raise model.broken(LABELS, f"is a .npy file of format version {major}, which ramcli does not read")
        length_bytes = 2 if major == 1 else 4
        length = int.from_bytes(head[8:8 + length_bytes], "little")
        offset = 8 + length_bytes + length
        if length > _NPY_MAX_HEADER:
            raise model.broken(LABELS, "has a damaged .npy header")
        f.seek(8 + length_bytes)
        raw = f.read(length)
    try:
        header = ast.literal_eval(raw.decode("latin-1"))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        header = None
    if not (isinstance(header, dict) and {"descr", "fortran_order", "shape"} <= header.keys()):
        raise model.broken(LABELS, "has a damaged .npy header")
    descr, shape = header["descr"], header["shape"]
    if not isinstance(descr, str):
        raise model.broken(LABELS, "holds a structured array, not float32 numbers")
    if "O" in descr:
        raise model.broken(LABELS, "holds Python objects (a pickle), which ramcli never loads")
    if descr not in ("<f4", ">f4"):
        raise model.broken(LABELS, f"holds {descr} numbers, not float32")
    if header["fortran_order"] is not False:
        raise model.broken(LABELS, "is stored in Fortran order, not as conversion writes it")
    if shape != (rows, width):
        raise model.broken(LABELS, f"has shape {shape}, but meta.json says ({rows}, {width}) "
                                   f"({model.num_tags} tags x {meta['descriptions_per_tag']} descriptions)")
    size = (model.path / LABELS).stat().st_size
    want = offset + rows * width * 4
    if size != want:
        raise model.broken(LABELS, f"is {size:,} bytes, but its header says {want:,} (truncated or damaged)")


def model_path(name: str) -> Path:
    return models_dir() / name


def is_installed(name: str) -> bool:
    """A folder of that name is in the models folder: whole, or broken (``get`` says which)."""
    return model_path(name).is_dir()


def installed() -> list[InstalledModel]:
    """Every model folder, whole or broken (a folder that lost its meta.json too): see ``problem``."""
    root = models_dir()
    if not root.is_dir():
        return []
    return [InstalledModel(p.name, p) for p in sorted(root.iterdir()) if not p.name.startswith(".") and p.is_dir()]


def get(name: str) -> InstalledModel:
    """The installed model ``name``, checked (``InstalledModel.check``): a damaged one is one BrokenModel line
    naming the file and the repair, before anything runs."""
    if not is_installed(name):
        known = name in manifests()
        hint = f"run `ramcli models pull {name}`" if known else \
            "run `ramcli models list` to see models, or `ramcli models import CKPT --name NAME`"
        raise ModelNotFound(f"model {name!r} is not installed", hint=hint)
    return InstalledModel(name, model_path(name)).check()


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
    return next((m for m in installed() if m.problem is None and m.meta.get("family") == family), None)

