"""The CLS embeddings of one model's images as one contiguous float32 matrix, cached beside the index.

Search compares a query with every photo. Reading 100,000 512-float blobs out of SQLite takes
over a second; a memory-mapped ``.npy`` answers in milliseconds (BLAS gemv: ~13 ms per 100k
rows here). float32, not float16: numpy converts float16 at ~2.6 ns per value on this machine,
260 ms per 100k rows, 20 times the product itself; 2 KB per photo on disk is the price.

The file is derived data. Its name carries the index's ``images`` change counter (schema v3),
so any write to ``images`` makes it stale, and a stale file is never read. It is written to a
temporary name and renamed; when the index's folder is read-only the matrix is built in memory.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ramcli.index import EMBED_DIM, Index


@dataclass(frozen=True)
class ClsMatrix:
    rowids: np.ndarray  # (N,) int64, ascending: images.rowid of each row
    vectors: np.ndarray  # (N, 512) float32, L2-normalised (zero rows stay zero)

    def positions(self, rowids: list[int]) -> np.ndarray:
        """Rows of the given images.rowid values (all must be present)."""
        return np.searchsorted(self.rowids, np.asarray(rowids, dtype=np.int64))


def cache_dir(index: Index) -> Path:
    return index.path.with_name(index.path.name + ".search")


def _files(folder: Path, model: str, generation: int) -> tuple[Path, Path]:
    stem = f"{model}.{generation}"
    return folder / f"{stem}.rowids.npy", folder / f"{stem}.cls.npy"


def _build(index: Index, model: str) -> ClsMatrix:
    rowids, vectors = index.cls_rows(model)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return ClsMatrix(rowids, vectors / np.where(norms == 0, 1, norms))


def _save(array: np.ndarray, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load(index: Index, model: str) -> ClsMatrix:
    """The current matrix for ``model``: from the cache when it matches the index, else rebuilt (and cached)."""
    with index.snapshot():  # the counter and the rows belong together
        generation = index.images_generation()
        folder = cache_dir(index)
        rowid_file, cls_file = _files(folder, model, generation)
        with contextlib.suppress(OSError, ValueError):
            rowids, vectors = np.load(rowid_file), np.load(cls_file, mmap_mode="r")
            if vectors.shape == (len(rowids), EMBED_DIM):
                return ClsMatrix(rowids, vectors)
        matrix = _build(index, model)
    with contextlib.suppress(OSError):  # read-only folder, full disk: search still works, uncached
        folder.mkdir(exist_ok=True)
        _save(matrix.rowids, rowid_file)
        _save(matrix.vectors, cls_file)
        for old in folder.glob("*.npy"):  # earlier generations of this model (never later ones)
            parts = old.name.rsplit(".", 3)  # model.generation.kind.npy
            if len(parts) == 4 and parts[0] == model and parts[1].isdigit() and int(parts[1]) < generation:
                old.unlink(missing_ok=True)
    return matrix
