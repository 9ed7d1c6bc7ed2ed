"""Duplicates in an indexed library: exact (the same image data) and near (bursts, resized or
re-encoded copies: close CLS embeddings), each group with the photo to keep and why.

Exact duplicates need no model: the index already identifies a photo's image by a hash of its image
data, not of the file, so copies whose metadata or names differ share a hash.

Near duplicates compare distinct images' CLS embeddings (cosine, from the search's cached matrix):

* up to ``EXACT_UP_TO`` images, every pair, with a blocked matrix product over the upper triangle
  (``block`` rows against all later rows at a time: memory stays at ``block x N`` floats, BLAS runs at full
  speed). It grows with N squared: measured 1.1 s at 10k images, 60 s at 106k (2 cores, AMD EPYC,
  OpenBLAS ~145 GFLOP/s);
* above that, random-hyperplane LSH (SimHash) proposes the pairs: ``bits`` signs per table, as many tables
  as it takes for a pair *exactly at* the threshold to share a bucket in at least one table with
  probability 1 - ``MISS`` (the chance two vectors at angle a agree on one sign is 1 - a/pi, whatever the
  data's distribution). Every proposed pair is then checked exactly, so nothing below the threshold is
  ever reported; more alike pairs are missed far less often (cosine 0.975 at 0.95: about 1 in 10^5).
  Measured 7.4 s for a whole cold `ramcli dupes` at 106k images. A bucket too large (skewed data) falls
  back to the blocked product inside it.

A vector index was measured too and lost by far: usearch (HNSW, f16) took 130 s to build and query 100k
random 512-d vectors here. tests/benchmarks/dupes.py has the numbers.

Pairs at or above the threshold are joined transitively (a burst is a chain of similar frames), strongest
first, but a group never grows past ``max_group``: a slow pan through a scene would otherwise chain a
whole afternoon into one "duplicate".

Reports only: nothing here touches a file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ramcli.index import DupeCandidate

Progress = Callable[[int, int], None]  # (done, total) blocks


def _no_progress(_done: int, _total: int) -> None:
    pass


@dataclass
class DupeGroup:
    """One group: ``kind`` exact or near, its paths (keeper first), the keeper and the reason it was chosen."""

    kind: str  # "exact" | "near"
    paths: list[str]
    keeper: str
    reason: str
    similarity: float | None = None  # near: the weakest link that joined the group (cosine)
    hash: str | None = None  # exact: the shared image-data hash
    members: list[DupeCandidate] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"kind": self.kind, "paths": self.paths, "keeper": self.keeper, "reason": self.reason}
        if self.similarity is not None:
            d["similarity"] = round(self.similarity, 4)
        if self.hash is not None:
            d["hash"] = self.hash
        return d


# ---- choosing the keeper
def _key(c: DupeCandidate) -> tuple:
    """Best first: largest resolution, earliest capture date (unknown last), has keywords, oldest file, path."""
    return (-(c.width * c.height), c.taken_at is None, c.taken_at or "", not c.has_keywords, c.mtime_ns, c.path)


def _reason(best: DupeCandidate, second: DupeCandidate) -> str:
    """Why ``best`` beat the runner-up: the first criterion of :func:`_key` that told them apart."""
    if best.width * best.height != second.width * second.height:
        return f"largest resolution ({best.width}x{best.height} vs {second.width}x{second.height})"
    if best.taken_at != second.taken_at:
        return f"earliest date ({best.taken_at})"
    if best.has_keywords != second.has_keywords:
        return "has keywords"
    if best.mtime_ns != second.mtime_ns:
        return "oldest file"
    return "first by path (otherwise equal)"


def _group(kind: str, members: Sequence[DupeCandidate], **extra: object) -> DupeGroup:
    ranked = sorted(members, key=_key)
    return DupeGroup(kind, [c.path for c in ranked], ranked[0].path, _reason(ranked[0], ranked[1]),
                     members=ranked, **extra)  # type: ignore[arg-type]


# ---- exact
def exact_groups(candidates: Sequence[DupeCandidate]) -> list[DupeGroup]:
    """Photos sharing an image-data hash, two or more per group."""
    by_hash: dict[str, list[DupeCandidate]] = {}
    for c in candidates:
        by_hash.setdefault(c.hash, []).append(c)
    return [_group("exact", ms, hash=h) for h, ms in by_hash.items() if len(ms) > 1]


# ---- near
EXACT_UP_TO = 20_000  # images: above this, LSH proposes the pairs (the exact product takes >2 s)
MISS = 1e-3  # LSH: the chance of missing a pair exactly at the threshold


def similar_pairs(vectors: np.ndarray, threshold: float, *, block: int = 2048,
                  progress: Progress = _no_progress) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, cosine) with i < j for every pair of rows of ``vectors`` (L2-normalised) at or above ``threshold``.

    The upper triangle only, ``block`` rows at a time: each block is multiplied with itself and the rows
    after it, so every pair is computed once and the product never holds more than ``block x N`` floats.
    """
    n = len(vectors)
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    found_i, found_j, found_s = [], [], []
    blocks = max(1, -(-n // block))
    for b, start in enumerate(range(0, n, block)):
        stop = min(n, start + block)
        sims = v[start:stop] @ v[start:].T  # (rows, n - start): column k is row start + k
        sims[np.tril_indices(stop - start, 0, sims.shape[1])] = -np.inf  # the pair itself and pairs seen before
        ii, jj = np.nonzero(sims >= threshold)
        found_i.append(ii + start)
        found_j.append(jj + start)
        found_s.append(sims[ii, jj])
        progress(b + 1, blocks)
    if n == 0:
        progress(1, 1)
    return _cat(found_i, np.int64), _cat(found_j, np.int64), _cat(found_s, np.float32)


def _cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


def lsh_pairs(vectors: np.ndarray, threshold: float, *, bits: int = 10, seed: int = 0, big: int = 4096,
              progress: Progress = _no_progress) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What :func:`similar_pairs` returns, for large N: candidates from SimHash buckets, each checked exactly.

    Why no centering of the data first: the collision probability 1 - angle/pi holds for the vectors as
    hashed, so hashing the embeddings themselves keeps the recall guarantee on any distribution; centring
    would balance the buckets but widen the angles between near duplicates."""
    import math

    n = len(vectors)
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    agree = 1 - math.acos(max(-1.0, min(1.0, threshold))) / math.pi
    tables = max(1, min(64, math.ceil(math.log(MISS) / math.log(1 - agree ** bits))))
    planes = np.random.default_rng(seed).normal(size=(v.shape[1], bits * tables)).astype(np.float32)
    codes = ((v @ planes) > 0).reshape(n, tables, bits).astype(np.int64) @ (1 << np.arange(bits, dtype=np.int64))
    keys: list[np.ndarray] = []
    found: list[np.ndarray] = []
    with _one_blas_thread():
        _buckets(v, codes, threshold, big, keys, found, progress)
    if not keys:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    unique, first = np.unique(np.concatenate(keys), return_index=True)  # a pair met in several tables
    return unique // n, unique % n, np.concatenate(found)[first].astype(np.float32)


def _one_blas_thread() -> contextlib.AbstractContextManager[object]:
    """BLAS on one thread for the many small bucket products. Why: OpenBLAS's threads spin while they wait
    for work, and 17k products of ~100x512 rows are all waiting; on a busy machine that turned 5 s into
    16-22 s (measured at 106k images, 2 cores, load 3). The large products elsewhere keep all threads."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _buckets(v: np.ndarray, codes: np.ndarray, threshold: float, big: int, keys: list[np.ndarray],
             found: list[np.ndarray], progress: Progress) -> None:
    n, tables = codes.shape
    for t in range(tables):
        order = np.argsort(codes[:, t], kind="stable")
        for idx in np.split(order, np.flatnonzero(np.diff(codes[order, t])) + 1):
            if len(idx) < 2:
                continue
            idx = np.sort(idx)
            if len(idx) > big:
                ii, jj, ss = similar_pairs(v[idx], threshold)
            else:
                sims = v[idx] @ v[idx].T
                ii, jj = np.nonzero(np.triu(sims >= threshold, 1))
                ss = sims[ii, jj]
            if len(ii):
                keys.append(idx[ii].astype(np.int64) * n + idx[jj])
                found.append(ss)
        progress(t + 1, tables)


def join_capped(n: int, i: np.ndarray, j: np.ndarray, sims: np.ndarray,
                max_group: int) -> list[tuple[list[int], float]]:
    """Groups of two or more of ``n`` items joined transitively through the pairs, strongest pair first;
    a join that would make a group larger than ``max_group`` is skipped. Each group comes with the
    weakest similarity that joined it."""
    parent = list(range(n))
    size = [1] * n
    weakest = [1.0] * n

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for k in np.argsort(-sims, kind="stable"):
        a, b = root(int(i[k])), root(int(j[k]))
        if a == b or size[a] + size[b] > max_group:
            continue
        if size[a] < size[b]:
            a, b = b, a
        parent[b] = a
        size[a] += size[b]
        weakest[a] = min(weakest[a], weakest[b], float(sims[k]))
    members: dict[int, list[int]] = {}
    for x in range(n):
        members.setdefault(root(x), []).append(x)
    return [(ms, weakest[r]) for r, ms in members.items() if len(ms) > 1]


def near_groups(candidates: Sequence[DupeCandidate], vectors: np.ndarray, threshold: float, *,
                max_group: int = 50, block: int = 2048, progress: Progress = _no_progress) -> list[DupeGroup]:
    """Groups of distinct images whose CLS embeddings are at least ``threshold`` alike (cosine).

    ``vectors[k]``: the L2-normalised embedding of ``candidates[k]``, which must be distinct images. Exact
    copies of an image are the exact groups' business: pass one photo per image (the best of its copies)."""
    if len(candidates) <= EXACT_UP_TO:
        i, j, sims = similar_pairs(vectors, threshold, block=block, progress=progress)
    else:
        i, j, sims = lsh_pairs(vectors, threshold, progress=progress)
    return [_group("near", [candidates[k] for k in ms], similarity=weakest)
            for ms, weakest in join_capped(len(candidates), i, j, sims, max_group)]


# ---- the whole report
@dataclass
class DupesReport:
    groups: list[DupeGroup]
    photos: int  # indexed photos looked at
    compared: int  # distinct images compared for near duplicates
    model: str | None  # whose embeddings were compared
    gone: list[str]  # indexed paths in a group that no longer exist (left out of the groups)


def find_dupes(candidates: Sequence[DupeCandidate], embeddings: Callable[[list[int]], np.ndarray] | None,
               model: str | None, *, near: float | None, max_group: int = 50, block: int = 2048,
               progress: Progress = _no_progress) -> DupesReport:
    """Exact groups, then (with ``near`` and ``embeddings``: rowids -> normalised CLS rows) near groups.

    Photos the index still lists but that are gone from the disk are left out of every group (one stat
    per grouped photo, not per photo): a report must not send the user looking for files that are not there.
    """
    exact = exact_groups(candidates)
    gone: set[str] = set()
    for g in exact:
        gone |= {p for p in g.paths if not os.path.lexists(p)}
    exact = [_group("exact", [m for m in g.members if m.path not in gone], hash=g.hash) for g in exact
             if sum(m.path not in gone for m in g.members) > 1]
    groups = list(exact)
    compared = 0
    if near is not None and embeddings is not None and model is not None:
        # an image's copies are represented by the best of them that has this model's embedding
        stand_in = {g.hash: next(m for m in g.members if m.model == model and m.cls_rowid is not None)
                    for g in exact if any(m.model == model and m.cls_rowid is not None for m in g.members)}
        seen: set[str] = set()
        images: list[DupeCandidate] = []
        for c in candidates:
            if c.model != model or c.cls_rowid is None or c.hash in seen or c.path in gone:
                continue
            seen.add(c.hash)
            images.append(stand_in.get(c.hash, c))
        compared = len(images)
        found = near_groups(images, embeddings([int(c.cls_rowid or 0) for c in images]),
                            near, max_group=max_group, block=block, progress=progress)
        for g in found:
            missing = {p for p in g.paths if not os.path.lexists(p)}
            gone |= missing
            kept = [m for m in g.members if m.path not in missing]
            if len(kept) > 1:
                groups.append(_group("near", kept, similarity=g.similarity) if missing else g)
    groups.sort(key=lambda g: (g.kind != "exact", g.keeper))
    return DupesReport(groups, len(candidates), compared, model, sorted(gone))
