"""Parquet shards: what a Ray worker's model run hands back to the driver (`ramcli tag --ray`).

One shard per inference batch, written whole (a temporary name, then a rename) so a reader never sees half
of one. A row holds what the model made of one photo and nothing the index decides: the (T,) logits its tags
are chosen from (the driver chooses them, with the index's verdicts), the CLS embedding (float32) and the
image tokens (float16, exactly as the index stores them), the caption, a video's stills. Arrays travel as
raw little-endian bytes, so they come back bit for bit. The stat the driver's scan saw goes along: an
interrupted run's shards are matched to photos by it, or by the image hash.

Only imported for a Ray run: pyarrow comes with Ray Data.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ramcli.pipeline.infer import Inferred, Still
from ramcli.pipeline.prepare import Prepared
from ramcli.runtime.tagging import Tag

EMBED_DIM = 512
SCHEMA = pa.schema([
    ("path", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()), ("hash", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()), ("taken_at", pa.string()), ("duration", pa.float64()),
    ("caption", pa.string()),
    ("logits", pa.binary()),  # (T,) float32
    ("cls", pa.binary()),  # (512,) float32: token 0 of the embeddings
    ("tokens", pa.binary()),  # (N, 512) float16, or null (--no-store-tokens)
    ("still_t", pa.list_(pa.float64())),  # a video's stills; null for a photo
    ("still_cls", pa.list_(pa.binary())),
    ("still_tokens", pa.list_(pa.binary())),
    ("still_tags", pa.string()),  # JSON: per still, [[index, name, name_zh, score], ...] (scores exact)
])
#: The columns a resume reads to know which photos an interrupted run's shards hold.
KEYS = ["path", "size", "mtime_ns", "hash"]


def _f32(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype="<f4").tobytes()


def _f16(a: np.ndarray) -> bytes:
    # the same conversion the index makes (index.images.put_image), so the stored bytes are the same
    return np.ascontiguousarray(a, dtype=np.float16).tobytes()


def _embeds(cls: bytes, tokens: bytes | None) -> np.ndarray:
    """(N, 512) float32 whose token 0 is the exact CLS and the rest the float16 tokens: what the sink stores
    from it is byte for byte what it would store from the model's own float32 output."""
    head = np.frombuffer(cls, dtype="<f4").astype(np.float32)
    if tokens is None:
        return head[None]
    out = np.frombuffer(tokens, dtype=np.float16).reshape(-1, EMBED_DIM).astype(np.float32)
    out[0] = head
    return out


def _row(item: Inferred, stat: tuple[int, int], tokens: bool) -> dict[str, object]:
    p = item.prepared
    assert item.logits is not None, "the infer stage keeps each item's logits"
    stills = item.stills
    return {
        "path": str(p.path), "size": stat[0], "mtime_ns": stat[1], "hash": p.hash, "width": p.width,
        "height": p.height, "taken_at": p.taken_at, "duration": p.duration, "caption": item.caption,
        "logits": _f32(item.logits), "cls": _f32(item.embeds[0]), "tokens": _f16(item.embeds) if tokens else None,
        "still_t": None if stills is None else [s.t for s in stills],
        "still_cls": None if stills is None else [_f32(s.embeds[0]) for s in stills],
        "still_tokens": None if stills is None else [_f16(s.embeds) if tokens else b"" for s in stills],
        "still_tags": None if stills is None else json.dumps(
            [[[t.index, t.name, t.name_zh, t.score] for t in s.tags] for s in stills], ensure_ascii=False),
    }


def write(folder: Path, items: Iterable[tuple[Inferred, tuple[int, int]]], *, tokens: bool = True) -> Path:
    """One shard of ``items`` (each with the (size, mtime_ns) the scan saw) into ``folder``; its path."""
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([_row(it, st, tokens) for it, st in items], schema=SCHEMA)
    name = f"{uuid.uuid4().hex}.parquet"
    tmp = folder / f".{name}.tmp"
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb") as f:  # on shared storage the rename must not overtake the data
        os.fsync(f.fileno())
    os.replace(tmp, folder / name)
    return folder / name


@dataclass
class Record:
    """One shard row, read back: an :class:`Inferred` once the driver has chosen its tags."""

    path: str
    size: int
    mtime_ns: int
    hash: str
    prepared: Prepared
    embeds: np.ndarray
    logits: np.ndarray
    caption: str | None
    stills: list[Still] | None

    def inferred(self, path: Path, tags: list[Tag], verdicts: dict[str, str]) -> Inferred:
        """The photo at ``path`` (a resumed photo may have moved since) with the tags the driver chose."""
        prepared = Prepared(path, self.hash, None, self.prepared.width, self.prepared.height,
                            self.prepared.taken_at, self.prepared.times, self.prepared.duration)
        return Inferred(prepared, self.embeds, tags, self.caption, verdicts, self.stills, self.logits)


def _stills(row: dict[str, object]) -> list[Still] | None:
    if row["still_t"] is None:
        return None
    tags = json.loads(str(row["still_tags"]))
    return [Still(t, _embeds(c, tok or None), [Tag(int(i), n, z, float(s)) for i, n, z, s in tg])
            for t, c, tok, tg in zip(row["still_t"], row["still_cls"], row["still_tokens"], tags,  # type: ignore[call-overload]
                                     strict=True)]


def read(path: Path) -> list[Record]:
    """Every row of the shard at ``path``."""
    out = []
    for row in pq.read_table(path, schema=SCHEMA).to_pylist():
        stills = _stills(row)
        times = None if stills is None else [s.t for s in stills]
        prepared = Prepared(Path(row["path"]), row["hash"], None, row["width"], row["height"], row["taken_at"],
                            times, row["duration"])
        out.append(Record(row["path"], row["size"], row["mtime_ns"], row["hash"], prepared,
                          _embeds(row["cls"], row["tokens"]), np.frombuffer(row["logits"], dtype="<f4").copy(),
                          row["caption"], stills))
    return out


def landed(folder: Path) -> Iterator[Path]:
    """The shards written whole into ``folder`` (a temporary one is a batch still in flight, or a lost one)."""
    if folder.is_dir():
        yield from sorted(folder.glob("*.parquet"))


@dataclass
class Landed:
    """What the shards an interrupted run left in ``folder`` hold: found by the photo's stat, or its image hash."""

    by_stat: dict[tuple[str, int, int], Path]
    by_hash: dict[str, Path]

    @classmethod
    def scan(cls, folder: Path) -> Landed:
        by_stat: dict[tuple[str, int, int], Path] = {}
        by_hash: dict[str, Path] = {}
        for shard in landed(folder):
            try:
                keys = pq.read_table(shard, columns=KEYS).to_pylist()
            except (OSError, pa.ArrowException):  # a damaged shard: its photos are simply inferred again
                continue
            for k in keys:
                by_stat[(k["path"], k["size"], k["mtime_ns"])] = shard
                by_hash[k["hash"]] = shard
        return cls(by_stat, by_hash)
