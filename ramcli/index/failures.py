"""The ``failures`` table: files whose image data could not be read, by the file state they failed in.

Why: a library with a few broken files (truncated downloads, a zero-byte copy) would otherwise have
every re-run read and decode each of them again in a fresh process pool, only to print the same
errors (9 broken files: a no-change re-run took 3.0 instead of 0.6 s). Keyed by path with the
(size, mtime_ns) the file had when it failed and the model, so any change to the file — or another
model — means it is tried again; ``--retry-errors`` tries them all. A photo row for a path and a
failure row for it contradict each other: ``Photos.put_photo`` deletes the failure.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from ramcli.index.base import UNDER, Tables, under
from ramcli.index.connection import now
from ramcli.index.rows import FailureRow

_COLUMNS = "path, size, mtime_ns, model, error"


def _failure(row: tuple) -> FailureRow:
    path, size, mtime_ns, model, error = row
    return FailureRow(path, int(size), int(mtime_ns), model or "", error or "")


class Failures(Tables):
    def failure(self, path: str) -> FailureRow | None:
        row = self.conn.execute(f"select {_COLUMNS} from failures where path = ?", [path]).fetchone()
        return _failure(row) if row else None

    def failures_under(self, roots: Iterable[Path]) -> Iterator[FailureRow]:
        """Failures whose path is one of ``roots`` or lies below one of them (exists on disk or not)."""
        seen: set[str] = set()
        for root in roots:
            for row in self.conn.execute(f"select {_COLUMNS} from failures where {UNDER}", under(root)).fetchall():
                if row[0] not in seen:
                    seen.add(row[0])
                    yield _failure(row)

    # ---- writing (inside `with index.transaction():`)
    def put_failure(self, row: FailureRow) -> None:
        self.conn.execute("insert or replace into failures (path, size, mtime_ns, model, error, failed_at) "
                          "values (?, ?, ?, ?, ?, ?)", [row.path, row.size, row.mtime_ns, row.model, row.error, now()])

    def forget_failure(self, path: str) -> None:
        self.conn.execute("delete from failures where path = ?", [path])
