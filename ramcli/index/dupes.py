"""What `ramcli dupes` asks of the index: every photo under some folders with the facts a keeper is
chosen by (resolution, capture date, whether it carries keywords, file age) and the row of its image's
CLS embedding. One query, no blobs: the embeddings come from the search's CLS matrix (memory-mapped),
so 100k photos are read in a fraction of a second."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ramcli.index.base import UNDER, Tables, under
from ramcli.index.rows import DupeCandidate

# UNDER names ``path`` unqualified: in this join only ``photos`` has that column.
_SELECT = ("select p.path, p.hash, p.model, p.size, p.mtime_ns, p.written not in ('', '[]'), i.rowid, "
           "i.width, i.height, i.taken_at, i.cls is not null from photos p "
           "left join images i on i.hash = p.hash and i.model = p.model")


class Dupes(Tables):
    def dupe_candidates(self, roots: Sequence[Path] = ()) -> list[DupeCandidate]:
        """Every indexed photo at or under ``roots`` (all of them when there are none), by path."""
        rows: dict[str, DupeCandidate] = {}
        wheres = [(f"where {UNDER}", under(r)) for r in roots] or [("", [])]
        for where, args in wheres:
            for (path, hash_, model, size, mtime_ns, has_kw, rowid, width, height, taken_at,
                 has_cls) in self.conn.execute(f"{_SELECT} {where}", args):
                rows[path] = DupeCandidate(path, hash_, model or "", size or 0, mtime_ns or 0, bool(has_kw),
                                           rowid if has_cls else None, width or 0, height or 0, taken_at)
        return [rows[p] for p in sorted(rows)]
