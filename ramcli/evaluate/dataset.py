"""A benchmark laid out as the authors' ``datasets/<name>/`` folders, read as their script reads it.

Files (one dataset per folder):

* ``<name>_ram_taglist.txt`` (else the one ``*_taglist.txt``): the tags, one a line; a tag may repeat
  (the authors map some test classes many-to-one), and every column of a repeated tag gets its
  positives.
* ``<name>_ram_annots.txt`` (else the one ``*_annots.txt``): ``relpath,tag,tag`` lines, one per image
  in evaluation order; ImageNet-multi and HICO write ``relpath,3 17`` instead (0-based indices into
  the taglist, space-separated), which is recognised.
* ``*_llm_tag_descriptions.json`` in the folder, or ``<name>_llm_tag_descriptions.json`` up to two
  folders above (the authors' ``[{tag: [desc, ...]}]``): descriptions for open-set tags.
* images under ``imgs/`` (``--images`` elsewhere); a relpath without a suffix gets ``.jpg``, as the
  authors' loader appends it (OpenImages' annotations name images without one).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ramcli.errors import RamcliError

_INDICES = re.compile(r"^\s*\d+(\s+\d+)*\s*$")


@dataclass
class Dataset:
    """What an evaluation needs: tags, images in order, and the (N, T) 0/1 ground truth."""

    name: str
    root: Path
    taglist: list[str]
    relpaths: list[str]
    targets: np.ndarray  # (N, T) float32 0/1, the authors' ``targets``
    img_root: Path
    taglist_file: Path
    annot_file: Path
    descriptions: dict[str, list[str]] = field(default_factory=dict)
    descriptions_file: Path | None = None

    def image_path(self, rel: str) -> Path:
        p = self.img_root / rel
        return p if Path(rel).suffix else p.with_name(p.name + ".jpg")

    @property
    def images(self) -> list[Path]:
        return [self.image_path(r) for r in self.relpaths]

    def key(self) -> str:
        """sha256 of what decides the scores apart from the model: taglist, image list, descriptions."""
        h = hashlib.sha256()
        h.update("\n".join(self.taglist).encode())
        h.update(b"\0" + "\n".join(self.relpaths).encode())
        h.update(b"\0" + str(self.img_root.resolve()).encode())
        h.update(b"\0" + json.dumps(self.descriptions, sort_keys=True).encode())
        return h.hexdigest()


def _pick(root: Path, preferred: str, pattern: str, exclude: tuple[str, ...], what: str) -> Path:
    exact = root / preferred
    if exact.is_file():
        return exact
    found = sorted(p for p in root.glob(pattern) if p.is_file() and not p.name.endswith(exclude))
    ram = [p for p in found if "_ram_" in p.name]
    found = ram or found
    if len(found) != 1:
        why = "none" if not found else f"{len(found)} ({', '.join(p.name for p in found)})"
        raise RamcliError(f"expected one {pattern} {what} file, found {why}", path=root,
                          hint="lay the folder out as the authors' datasets/<name>/ (see `ramcli eval --help`)")
    return found[0]


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise RamcliError(f"cannot read it ({exc})", path=path) from None


def read_descriptions(path: Path) -> dict[str, list[str]]:
    """The authors' LLM description file: a list of one-key objects ``{tag: [descriptions]}``."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        out: dict[str, list[str]] = {}
        for item in doc:
            for tag, des in item.items():
                out[str(tag)] = [str(d) for d in des]
        return out
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise RamcliError(f"not the authors' [{{tag: [descriptions]}}] JSON ({exc})", path=path) from None


def load_dataset(root: Path, images: Path | None = None) -> Dataset:
    """Read the dataset folder ``root``; images under ``images`` (default ``root/imgs``)."""
    root = root.expanduser()
    if not root.is_dir():
        raise RamcliError("no such dataset folder", path=root, hint="give a folder laid out as datasets/<name>/")
    name = root.name
    tag_file = _pick(root, f"{name}_ram_taglist.txt", "*_taglist.txt", ("_tagidlist.txt",), "taglist")
    annot_file = _pick(root, f"{name}_ram_annots.txt", "*_annots.txt", ("_idannots.txt",), "annotations")
    taglist = [line.strip() for line in _lines(tag_file)]
    while taglist and not taglist[-1]:
        taglist.pop()
    if not taglist:
        raise RamcliError("the taglist is empty", path=tag_file)
    columns: dict[str, list[int]] = {}
    for i, t in enumerate(taglist):
        columns.setdefault(t, []).append(i)
    rows = [line for line in _lines(annot_file) if line.strip()]
    labels = [line.strip().split(",")[1:] for line in rows]
    by_index = all(len(ls) <= 1 and (not ls or not ls[0].strip() or _INDICES.match(ls[0])) for ls in labels) \
        and not any(ls and ls[0].strip() in columns for ls in labels)
    targets = np.zeros((len(rows), len(taglist)), np.float32)
    for n, ls in enumerate(labels):
        for tag in (ls[0].split() if by_index and ls else ls):
            if by_index:
                k = int(tag)
                if k >= len(taglist):
                    raise RamcliError(f"line {n + 1}: tag index {k} is past the taglist's {len(taglist)} tags",
                                      path=annot_file)
                targets[n, k] = 1.0
            elif tag in columns:
                targets[n, columns[tag]] = 1.0
            elif tag:
                raise RamcliError(f"line {n + 1}: tag {tag!r} is not in the taglist", path=annot_file,
                                  hint=f"add it to {tag_file.name}, or correct the line")
    des_file = next((p for d in (root, root.parent, root.parent.parent)
                     for p in sorted(d.glob("*_llm_tag_descriptions.json"))
                     if p.name.startswith(name) or d == root), None)
    descriptions = read_descriptions(des_file) if des_file else {}
    return Dataset(name, root, taglist, [line.strip().split(",")[0] for line in rows], targets,
                   (images or root / "imgs").expanduser(), tag_file, annot_file, descriptions, des_file)
