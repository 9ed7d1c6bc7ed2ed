"""The ``photos`` table: one row per file path, with the file state that makes an unchanged photo
cost one stat, its image hash, and what ramcli last wrote into it."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ramcli.index.base import UNDER, Tables, under
from ramcli.index.connection import now
from ramcli.index.rows import PhotoRow

_COLUMNS = "path, hash, size, mtime_ns, written, storage, model, written_caption"


def _photo(row: tuple) -> PhotoRow:
    path, hash_, size, mtime_ns, written, storage, model, caption = row
    return PhotoRow(path, hash_, size, mtime_ns, json.loads(written or "[]"), storage or "", model or "", caption)


class Photos(Tables):
    def photo(self, path: str) -> PhotoRow | None:
        row = self.conn.execute(f"select {_COLUMNS} from photos where path = ?", [path]).fetchone()
        return _photo(row) if row else None

    def photos_under(self, roots: Iterable[Path]) -> Iterator[PhotoRow]:
        """Rows whose path is one of ``roots`` or lies below one of them (exists on disk or not)."""
        seen: set[str] = set()
        for root in roots:
            for row in self.conn.execute(f"select {_COLUMNS} from photos where {UNDER}", under(root)).fetchall():
                if row[0] not in seen:
                    seen.add(row[0])
                    yield _photo(row)

    def paths_with_hash(self, hash_: str) -> list[str]:
        return [r[0] for r in self.conn.execute("select path from photos where hash = ?", [hash_])]

    def photos_with_hash(self, hash_: str, model: str) -> list[PhotoRow]:
        return [_photo(r) for r in self.conn.execute(
            f"select {_COLUMNS} from photos where hash = ? and model = ? order by path", [hash_, model])]

    def models(self) -> list[tuple[str, int]]:
        """Models that tagged the indexed photos, most photos first."""
        return [(r[0], r[1]) for r in self.conn.execute(
            "select model, count(*) from photos group by model order by count(*) desc")]

    # ---- writing (inside `with index.transaction():`)
    def put_photo(self, row: PhotoRow) -> None:
        """The photo's row; a failure remembered for its path is forgotten (it was read after all)."""
        self.conn.execute("delete from failures where path = ?", [row.path])
        self.conn.execute(
            "insert or replace into photos (path, hash, size, mtime_ns, written, storage, model, updated_at, "
            "written_caption) values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [row.path, row.hash, row.size, row.mtime_ns, json.dumps(row.written, ensure_ascii=False),
             row.storage, row.model, now(), row.written_caption])

    def record_written(self, row: PhotoRow, written: list[str]) -> None:
        """After a keyword rewrite of ``row``'s file: what it now carries from us, and its new stat
        (so the next `ramcli tag` sees it unchanged)."""
        st = None
        with contextlib.suppress(OSError):
            st = os.stat(row.path)
        self.conn.execute("update photos set written = ?, size = ?, mtime_ns = ?, updated_at = ? where path = ?",
                          [json.dumps(written, ensure_ascii=False), st.st_size if st else row.size,
                           st.st_mtime_ns if st else row.mtime_ns, now(), row.path])

    def delete_photo(self, path: str) -> None:
        self.conn.execute("delete from photos where path = ?", [path])
