"""The ``images`` and ``image_tags`` tables: per image hash and model, the embeddings (CLS, tokens),
the caption, and the tags with their scores. Keyed by pixels, not path, so a moved or renamed
photo keeps them. numpy is imported inside the methods that make arrays: a tag-only search
imports this module and must not load it."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from ramcli.index.base import CHUNK, Tables
from ramcli.index.connection import now
from ramcli.index.rows import EMBED_DIM, ImageRecord

if TYPE_CHECKING:
    import numpy as np


def _marks(n: int) -> str:
    return ",".join("?" * n)


class Images(Tables):
    # ---- reading
    def has_image(self, hash_: str, model: str) -> bool:
        return self.conn.execute("select 1 from images where hash = ? and model = ?", [hash_, model]).fetchone() \
            is not None

    def known_hashes(self, model: str) -> frozenset[str]:
        """Every image hash ``model`` has already run on (a tag run skips their inference)."""
        return frozenset(r[0] for r in self.conn.execute("select hash from images where model = ?", [model]))

    def image_count(self, model: str) -> int:
        return int(self.conn.execute("select count(*) from images where model = ?", [model]).fetchone()[0])

    def image_hashes(self, model: str) -> list[str]:
        """The hashes of ``model``'s images, sorted (re-scoring walks them in this order)."""
        return [r[0] for r in self.conn.execute("select hash from images where model = ? order by hash", [model])]

    def image_arrays(self, model: str, hashes: Sequence[str]) -> dict[str, tuple[np.ndarray | None,
                                                                                 np.ndarray | None]]:
        """Hash -> (CLS (512,) float32, tokens (N, 512) float16 as stored), either None when not stored."""
        import numpy as np

        out: dict[str, tuple[np.ndarray | None, np.ndarray | None]] = {}
        for start in range(0, len(hashes), CHUNK):
            chunk = list(hashes[start:start + CHUNK])
            for h, cls, tok in self.conn.execute(
                    f"select hash, cls, tokens from images where model = ? and hash in ({_marks(len(chunk))})",
                    [model, *chunk]):
                out[h] = (None if cls is None else np.frombuffer(cls, np.float32),
                          None if tok is None else np.frombuffer(tok, np.float16).reshape(-1, EMBED_DIM))
        return out

    def tags_of(self, hash_: str, model: str) -> list[tuple[int, str, float]]:
        """(tag index, name, score), best first."""
        return [(r[0], r[1], r[2]) for r in self.conn.execute(
            "select tag_index, tag, score from image_tags where hash = ? and model = ? order by score desc",
            [hash_, model])]

    def hashes_with_tag(self, model: str, tag: str) -> set[str]:
        """The images of ``model`` carrying ``tag`` (by name)."""
        return {r[0] for r in self.conn.execute(
            "select hash from image_tags where model = ? and tag = ?", [model, tag])}

    def image_info(self, hash_: str, model: str) -> tuple[int, int, str | None, float | None] | None:
        """(width, height, taken_at, duration) of an indexed image, None when ``model`` has none."""
        row = self.conn.execute("select width, height, taken_at, duration from images where hash = ? and model = ?",
                                [hash_, model]).fetchone()
        return None if row is None else (int(row[0] or 0), int(row[1] or 0), row[2], row[3])

    def caption_of(self, hash_: str, model: str) -> str | None:
        row = self.conn.execute("select caption from images where hash = ? and model = ?", [hash_, model]).fetchone()
        return row[0] if row else None

    def cls_embedding(self, hash_: str, model: str) -> np.ndarray | None:
        import numpy as np

        row = self.conn.execute("select cls from images where hash = ? and model = ?", [hash_, model]).fetchone()
        return np.frombuffer(row[0], dtype=np.float32) if row and row[0] is not None else None

    def tokens(self, hash_: str, model: str) -> np.ndarray | None:
        import numpy as np

        row = self.conn.execute("select tokens from images where hash = ? and model = ?", [hash_, model]).fetchone()
        if not row or row[0] is None:
            return None
        return np.frombuffer(row[0], dtype=np.float16).reshape(-1, EMBED_DIM)

    def cls_rows(self, model: str) -> tuple[np.ndarray, np.ndarray]:
        """(rowids (N,) int64 ascending, CLS (N, 512) float32 as stored) of ``model``'s images that
        have one: the search matrix is built from these."""
        import numpy as np

        rows = self.conn.execute("select rowid, cls from images where model = ? and cls is not null order by rowid",
                                 [model]).fetchall()
        rowids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), EMBED_DIM) \
            if rows else np.zeros((0, EMBED_DIM), np.float32)
        return rowids, vectors

    def tokens_by_rowid(self, rowids: Sequence[int]) -> dict[int, np.ndarray]:
        """images.rowid -> tokens (N, 512) float16, for those of ``rowids`` that have tokens."""
        import numpy as np

        out: dict[int, np.ndarray] = {}
        for start in range(0, len(rowids), CHUNK):
            chunk = [int(r) for r in rowids[start:start + CHUNK]]
            for rowid, tok in self.conn.execute(
                    f"select rowid, tokens from images where rowid in ({_marks(len(chunk))}) and tokens is not null",
                    chunk):
                out[rowid] = np.frombuffer(tok, np.float16).reshape(-1, EMBED_DIM)
        return out

    def images_with_tags(self, names: Sequence[str], *, custom: bool) -> list[tuple[str, str]]:
        """(hash, model) of images carrying a tag named in ``names`` or, with ``custom``, any custom tag."""
        cond = ["tag_index < 0"] if custom else []
        if names:
            cond.append(f"tag in ({_marks(len(names))})")
        if not cond:
            return []
        return [(r[0], r[1]) for r in self.conn.execute(
            f"select distinct hash, model from image_tags where {' or '.join(cond)}", list(names))]

    def images_generation(self) -> int:
        """Bumped by every change to ``images`` (schema v3 triggers)."""
        return int(self.conn.execute("select value from counters where name = 'images'").fetchone()[0])

    # ---- writing (inside `with index.transaction():`). Plain executemany: these run per image.
    def put_image(self, rec: ImageRecord) -> None:
        """The image's row and all its tags, replacing what ``rec.model`` stored before."""
        import numpy as np

        tokens = None if rec.tokens is None else np.ascontiguousarray(rec.tokens, dtype=np.float16).tobytes()
        self.conn.execute(
            "insert or replace into images (hash, model, width, height, taken_at, cls, tokens, tagged_at, caption, "
            "duration) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [rec.hash, rec.model, rec.width, rec.height, rec.taken_at,
             None if rec.cls is None else np.ascontiguousarray(rec.cls, dtype=np.float32).tobytes(), tokens, now(),
             rec.caption, rec.duration])
        self.conn.execute("delete from image_tags where hash = ? and model = ?", [rec.hash, rec.model])
        self._insert_tags(rec.hash, rec.model, rec.tags)
        self.conn.execute("delete from stills where hash = ? and model = ?", [rec.hash, rec.model])
        if rec.stills:
            self.conn.executemany(
                "insert into stills (hash, model, idx, t, cls, tokens, tags) values (?, ?, ?, ?, ?, ?, ?)",
                [(rec.hash, rec.model, k, float(t),
                  None if cls is None else np.ascontiguousarray(cls, dtype=np.float32).tobytes(),
                  None if tok is None else np.ascontiguousarray(tok, dtype=np.float16).tobytes(),
                  json.dumps([[int(i), n, round(float(sc), 6)] for i, n, sc in tags], ensure_ascii=False))
                 for k, (t, cls, tok, tags) in enumerate(rec.stills)])

    def replace_tags(self, hash_: str, model: str, indices: Collection[int],
                     rows: Sequence[tuple[int, str, float]]) -> None:
        """Re-scoring: the image's rows for tag ``indices`` become ``rows`` (tag index, name, score);
        its other tags stay."""
        self.delete_tags(hash_, model, indices)
        self._insert_tags(hash_, model, rows)

    def delete_tags(self, hash_: str, model: str, indices: Collection[int]) -> None:
        if indices:
            self.conn.execute(f"delete from image_tags where hash = ? and model = ? and tag_index in "
                              f"({_marks(len(indices))})", [hash_, model, *indices])

    def drop_tag_named(self, hash_: str, tag: str) -> None:
        """A rejected tag leaves the image's rows under every model (reject wins over score)."""
        self.conn.execute("delete from image_tags where hash = ? and tag = ?", [hash_, tag])

    def _insert_tags(self, hash_: str, model: str, rows: Sequence[tuple[int, str, float]]) -> None:
        self.conn.executemany("insert into image_tags (hash, model, tag_index, tag, score) values (?, ?, ?, ?, ?)",
                              [(hash_, model, i, name, float(score)) for i, name, score in rows])

    def prune_images(self) -> int:
        """Drop images (and their tags) that no photo points at any more."""
        orphans = "select hash from images where hash not in (select hash from photos)"
        n = self.conn.execute(f"select count(*) from ({orphans})").fetchone()[0]
        self.conn.execute(f"delete from image_tags where hash in ({orphans})")
        self.conn.execute(f"delete from stills where hash in ({orphans})")
        self.conn.execute(f"delete from images where hash in ({orphans})")
        return int(n)
