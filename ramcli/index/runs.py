"""The ``runs`` table: one row per ``ramcli tag`` run, with its counts (a record of what ran when)."""

from __future__ import annotations

import json

from ramcli.index.base import Tables
from ramcli.index.connection import now


class Runs(Tables):
    def start_run(self, model: str, roots: list[str]) -> int:
        """A new run's id; ``finish_run`` completes its row."""
        table = self.db["runs"].insert({"started_at": now(), "model": model,
                                        "roots": json.dumps(roots, ensure_ascii=False)})
        return int(table.last_rowid or 0)

    def finish_run(self, run_id: int, counts: dict[str, int]) -> None:
        self.db["runs"].update(run_id, {"finished_at": now(), "counts": json.dumps(counts)})
