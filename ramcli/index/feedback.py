"""The ``feedback`` and ``thresholds`` tables: the user's verdicts per image and tag, and the per-tag
thresholds calibrated from them.

Who wins when verdicts meet (:meth:`Feedback.put_feedback`, :func:`_replaces`): a verdict given on
purpose (``cli``) always replaces the one before; one read from a file (``file``) or an imported one
(``import``) only fills a gap or replaces another verdict of its own kind — except that a keyword the
user deleted in another app (a ``file`` rejection) replaces a confirmation. Why: a file keeps saying
what it said, every run, so a user keyword that is a tag name must not undo a `tags reject` given
since; but `tags confirm` clears the file's refusal when it is given, so a refusal found in the file
later is the user's newer word.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ramcli.index.base import CHUNK, Tables
from ramcli.index.connection import now
from ramcli.index.rows import SOURCES, VERDICTS, FeedbackRow, ThresholdRow

_COLUMNS = "hash, tag, verdict, source, path, at"


def _replaces(new: FeedbackRow, verdict: str, source: str) -> bool:
    """Whether ``new`` replaces the stored (``verdict``, ``source``) of the same image and tag."""
    if verdict == new.verdict:
        return False
    return new.source in ("cli", source) or (new.source == "file" and new.verdict == "reject")


def _row(r: tuple) -> FeedbackRow:
    return FeedbackRow(r[0], r[1], r[2], r[3], r[4], r[5])


class Feedback(Tables):
    # ---- verdicts
    def put_feedback(self, rows: Iterable[FeedbackRow]) -> list[FeedbackRow]:
        """Store verdicts (inside ``index.transaction()``); returns those that changed what the index knew."""
        changed = []
        for row in rows:
            if row.verdict not in VERDICTS or row.source not in SOURCES:
                raise ValueError(f"bad verdict {row.verdict!r} or source {row.source!r}")
            old = self.conn.execute("select verdict, source from feedback where hash = ? and tag = ?",
                                    [row.hash, row.tag]).fetchone()
            if old is not None and not _replaces(row, old[0], old[1]):
                continue
            self.conn.execute(f"insert or replace into feedback ({_COLUMNS}) values (?, ?, ?, ?, ?, ?)",
                              [row.hash, row.tag, row.verdict, row.source, row.path, row.at or now()])
            changed.append(row)
        return changed

    def verdicts_for(self, hashes: Sequence[str]) -> dict[str, dict[str, str]]:
        """Image hash -> {tag name: "confirm" | "reject"}, for those of ``hashes`` that have any."""
        out: dict[str, dict[str, str]] = {}
        for start in range(0, len(hashes), CHUNK):
            chunk = list(hashes[start:start + CHUNK])
            marks = ",".join("?" * len(chunk))
            for h, tag, verdict in self.conn.execute(
                    f"select hash, tag, verdict from feedback where hash in ({marks})", chunk):
                out.setdefault(h, {})[tag] = verdict
        return out

    def feedback_rows(self, tags: Sequence[str] | None = None) -> list[FeedbackRow]:
        """Every verdict (or those on ``tags``), by tag then hash."""
        if tags is None:
            return [_row(r) for r in self.conn.execute(f"select {_COLUMNS} from feedback order by tag, hash")]
        out: list[FeedbackRow] = []
        for start in range(0, len(tags), CHUNK):
            chunk = list(tags[start:start + CHUNK])
            out += [_row(r) for r in self.conn.execute(
                f"select {_COLUMNS} from feedback where tag in ({','.join('?' * len(chunk))}) order by tag, hash",
                chunk)]
        return out

    def tags_with_feedback(self) -> list[str]:
        return [r[0] for r in self.conn.execute("select distinct tag from feedback order by tag")]

    # ---- calibrated thresholds
    def calibrated(self, model: str) -> dict[str, float]:
        """Tag name -> calibrated threshold for ``model``."""
        return {r[0]: float(r[1]) for r in self.conn.execute(
            "select tag, threshold from thresholds where model = ?", [model])}

    def threshold_rows(self, model: str | None = None) -> list[ThresholdRow]:
        sql = "select model, tag, threshold, official, confirmed, rejected from thresholds"
        args: list[object] = []
        if model is not None:
            sql, args = sql + " where model = ?", [model]
        return [ThresholdRow(r[0], r[1], float(r[2]), float(r[3]), int(r[4]), int(r[5]))
                for r in self.conn.execute(sql + " order by model, tag", args)]

    def put_thresholds(self, rows: Iterable[ThresholdRow], *, pending: bool = False) -> None:
        """Inside ``index.transaction()``; ``pending``: not yet applied to every photo."""
        self.conn.executemany(
            "insert or replace into thresholds (model, tag, threshold, official, confirmed, rejected, pending, at) "
            "values (?, ?, ?, ?, ?, ?, ?, ?)",
            [(r.model, r.tag, float(r.threshold), float(r.official), r.confirmed, r.rejected, int(pending), now())
             for r in rows])

    def pending_thresholds(self, model: str) -> list[str]:
        """Tags whose calibrated threshold some photos have not been re-decided with yet."""
        return [r[0] for r in self.conn.execute(
            "select tag from thresholds where model = ? and pending = 1 order by tag", [model])]

    def mark_thresholds_applied(self, model: str, tags: Sequence[str]) -> None:
        self.conn.executemany("update thresholds set pending = 0 where model = ? and tag = ?",
                              [(model, t) for t in tags])

    def forget_thresholds(self, tag: str) -> None:
        """A threshold the user set by hand replaces any calibrated one (inside a transaction)."""
        self.conn.execute("delete from thresholds where tag = ?", [tag])
