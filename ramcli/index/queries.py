"""What search asks of the index: filtered photos, tag matches, caption words, and the cache of
query embeddings. Ranking itself is decided in ``ramcli.search.ranking``; this module only knows
how to fetch. Tag search runs on covering indexes (schema v3), so image blobs are never read."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ramcli.index.base import CHUNK, Tables
from ramcli.index.connection import now
from ramcli.index.rows import PhotoRef

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class PhotoFilter:
    """The user's search filters, as the index applies them to photos ``p`` and images ``i``."""

    under: tuple[str, ...] = ()  # absolute paths: the photo is one of them or lies below one
    since: str | None = None  # taken_at >= since (ISO prefix)
    before: str | None = None  # taken_at < before
    tags: tuple[str, ...] = ()  # carries all of these
    not_tags: tuple[str, ...] = ()  # and none of these

    def __bool__(self) -> bool:
        return bool(self.under or self.since or self.before or self.tags or self.not_tags)

    def sql(self) -> tuple[str, list[object]]:
        """``and ...`` conditions and their arguments ("" when there is no filter)."""
        sql: list[str] = []
        args: list[object] = []
        if self.under:
            parts = []
            for root in self.under:
                r = root.rstrip("/") or "/"
                prefix = r.rstrip("/") + "/"  # substr, not LIKE: LIKE ignores ASCII case
                parts.append("(p.path = ? or substr(p.path, 1, ?) = ?)")
                args += [r, len(prefix), prefix]
            sql.append("and (" + " or ".join(parts) + ")")
        if self.since:
            sql.append("and i.taken_at >= ?")
            args.append(self.since)
        if self.before:
            sql.append("and i.taken_at < ?")
            args.append(self.before)
        for t in self.tags:
            sql.append("and exists (select 1 from image_tags t where t.hash = p.hash and t.model = p.model "
                       "and t.tag = ?)")
            args.append(t)
        for t in self.not_tags:
            sql.append("and not exists (select 1 from image_tags t where t.hash = p.hash and t.model = p.model "
                       "and t.tag = ?)")
            args.append(t)
        return " ".join(sql), args


def _marks(n: int) -> str:
    return ",".join("?" * n)


class Queries(Tables):
    def filtered_rowids(self, model: str, flt: PhotoFilter) -> list[int]:
        """images.rowid of ``model``'s images that have a photo passing ``flt``."""
        where, args = flt.sql()
        return [r[0] for r in self.conn.execute(
            "select distinct i.rowid from photos p join images i on i.hash = p.hash and i.model = p.model "
            f"where p.model = ? {where}", [model, *args])]

    def photos_of_images(self, model: str, rowids: Sequence[int], flt: PhotoFilter) -> dict[int, list[PhotoRef]]:
        """images.rowid -> (path, hash, taken_at) of its photos that pass ``flt``, by path."""
        where, args = flt.sql()
        found: dict[int, list[PhotoRef]] = {}
        for start in range(0, len(rowids), CHUNK):
            chunk = [int(r) for r in rowids[start:start + CHUNK]]
            for rowid, path, hash_, taken in self.conn.execute(
                    "select i.rowid, p.path, p.hash, i.taken_at from images i join photos p "
                    f"on p.hash = i.hash and p.model = i.model where i.rowid in ({_marks(len(chunk))}) "
                    f"and p.model = ? {where} order by p.path", [*chunk, model, *args]):
                found.setdefault(rowid, []).append((path, hash_, taken))
        return found

    def photos_of_hashes(self, model: str, hashes: Sequence[str], flt: PhotoFilter) -> list[PhotoRef]:
        """(path, hash, taken_at) of the photos of these images that pass ``flt``."""
        where, args = flt.sql()
        out: list[PhotoRef] = []
        for start in range(0, len(hashes), CHUNK):
            chunk = list(hashes[start:start + CHUNK])
            out += [(r[0], r[1], r[2]) for r in self.conn.execute(
                "select p.path, p.hash, i.taken_at from photos p join images i on i.hash = p.hash and "
                f"i.model = p.model where p.model = ? and p.hash in ({_marks(len(chunk))}) {where}",
                [model, *chunk, *args])]
        return out

    def tag_matches(self, model: str, tags: Sequence[str], flt: PhotoFilter, *, min_score: float | None,
                    limit: int) -> list[tuple[str, str, str | None, int, float]]:
        """(path, hash, taken_at, hits, mean score) of photos carrying any of ``tags``: more hits
        first, then the mean stored score of the matched tags, then path; at most ``limit``."""
        where, args = flt.sql()
        having = "having score >= ?" if min_score is not None else ""
        return [(r[0], r[1], r[2], int(r[3]), float(r[4])) for r in self.conn.execute(
            "select p.path, p.hash, i.taken_at, count(*) as hits, avg(t.score) as score from photos p "
            "join images i indexed by images_search on i.hash = p.hash and i.model = p.model "
            "join image_tags t indexed by image_tags_search on t.hash = p.hash and t.model = p.model "
            f"and t.tag in ({_marks(len(tags))}) where p.model = ? {where} group by p.path {having} "
            "order by hits desc, score desc, p.path limit ?",
            [*tags, model, *args, *([min_score] if having else []), limit]).fetchall()]

    def rowids_with_tags(self, model: str, tags: Sequence[str]) -> list[int]:
        """images.rowid once per (image, matched tag): counting them gives each image's hits."""
        return [r[0] for r in self.conn.execute(
            "select i.rowid from image_tags t indexed by image_tags_search "
            "join images i indexed by images_search on i.hash = t.hash and i.model = t.model "
            f"where t.model = ? and t.tag in ({_marks(len(tags))})", [model, *tags])]

    def captioned(self, model: str, words: Sequence[str]) -> set[str]:
        """Hashes of ``model``'s images whose caption holds every one of ``words`` (lower case) as a word."""
        if not words:
            return set()
        cond = " and ".join(["(' ' || lower(caption) || ' ') like ?"] * len(words))
        return {r[0] for r in self.conn.execute(
            f"select hash from images where model = ? and caption is not null and {cond}",
            [model, *(f"% {w} %" for w in words)])}

    # ---- the query cache: CLIP embeddings of past queries, so a repeated query needs no text encoder
    def cached_query(self, encoder: str, text: str) -> np.ndarray | None:
        import numpy as np

        row = self.conn.execute("select embedding from query_cache where encoder = ? and text = ?",
                                [encoder, text]).fetchone()
        return np.frombuffer(row[0], dtype=np.float32).copy() if row else None

    def cache_query(self, encoder: str, text: str, embedding: np.ndarray) -> None:
        """Best effort: a read-only index or a busy writer just means no cache. Plain SQL, not
        sqlite-utils: this runs inside a first-time search, and importing sqlite-utils costs
        0.1-0.4 s there (measured: the open-set search start-up went from 0.89 to 1.02 s CPU)."""
        import numpy as np

        blob = np.ascontiguousarray(embedding, dtype=np.float32).tobytes()
        with contextlib.suppress(sqlite3.OperationalError):
            self.conn.execute("insert or replace into query_cache (encoder, text, created_at, embedding) "
                              "values (?, ?, ?, ?)", [encoder, text, now(), blob])
