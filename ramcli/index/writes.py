"""The ``writes`` table: the write-ahead journal of each file ramcli rewrites, and its undo recipe.

A row is committed *pending* before the file is replaced and settled in the same transaction as the
photo's index rows, so after a kill at any instant the next run can tell, by the file's sha256, whether
the replace happened (settle) or not (put the previous row back). See ``pipeline.journal``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from ramcli.index.base import CHUNK, Tables
from ramcli.index.connection import now
from ramcli.index.rows import WriteRow

_COLUMNS = "target, photo, recipe, after_sha, keywords, pending, prev_recipe, prev_after_sha"


def _row(r: tuple) -> WriteRow:
    target, photo, recipe, after_sha, keywords, pending, prev_recipe, prev_after_sha = r
    return WriteRow(target, photo, recipe, after_sha, json.loads(keywords or "[]"), bool(pending), prev_recipe,
                    prev_after_sha)


class Writes(Tables):
    def write_row(self, target: str) -> WriteRow | None:
        r = self.conn.execute(f"select {_COLUMNS} from writes where target = ?", [target]).fetchone()
        return _row(r) if r else None

    def writes_of(self, photo: str) -> list[WriteRow]:
        """The files written for ``photo``: itself and/or its sidecar."""
        return [_row(r) for r in self.conn.execute(f"select {_COLUMNS} from writes where photo = ?", [photo])]

    def pending_writes(self) -> list[WriteRow]:
        """Writes announced but never settled: a run was killed around a file replace."""
        return [_row(r) for r in self.conn.execute(f"select {_COLUMNS} from writes where pending = 1")]

    # ---- writing (inside `with index.transaction():`)
    def begin_write(self, row: WriteRow, previous: WriteRow | None) -> None:
        """The intent: ``row`` is about to be true of the file; ``previous`` is kept until it is."""
        self.conn.execute(
            "insert or replace into writes (target, photo, recipe, after_sha, keywords, pending, prev_recipe, "
            "prev_after_sha, written_at) values (?, ?, ?, ?, ?, 1, ?, ?, ?)",
            [row.target, row.photo, row.recipe, row.after_sha, json.dumps(row.keywords, ensure_ascii=False),
             previous.recipe if previous else None, previous.after_sha if previous else None, now()])

    def settle_writes(self, targets: Iterable[str]) -> None:
        """The files were replaced and their photos' rows are being committed: the intents are done."""
        todo = list(targets)
        for i in range(0, len(todo), CHUNK):
            part = todo[i:i + CHUNK]
            self.conn.execute(f"update writes set pending = 0, prev_recipe = null, prev_after_sha = null "
                              f"where target in ({', '.join('?' * len(part))})", part)

    def revert_write(self, row: WriteRow) -> None:
        """The replace never happened: the row goes back to what it was (or away, if there was none)."""
        if row.prev_after_sha is None:
            self.forget_write(row.target)
        else:
            self.conn.execute("update writes set recipe = ?, after_sha = ?, pending = 0, prev_recipe = null, "
                              "prev_after_sha = null where target = ?", [row.prev_recipe, row.prev_after_sha,
                                                                         row.target])

    def forget_write(self, target: str) -> None:
        self.conn.execute("delete from writes where target = ?", [target])
