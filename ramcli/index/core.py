"""``Index``: the one object the rest of ramcli holds, composed of one method group per table
family (photos, images, vocabulary, queries, runs, writes, failures, feedback, dupes, video stills), plus
transactions, and ``open_index``."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ramcli.errors import RamcliError
from ramcli.index.connection import connect
from ramcli.index.dupes import Dupes
from ramcli.index.failures import Failures
from ramcli.index.feedback import Feedback
from ramcli.index.images import Images
from ramcli.index.lock import take_writer_lock
from ramcli.index.photos import Photos
from ramcli.index.queries import Queries
from ramcli.index.runs import Runs
from ramcli.index.schema import migrate
from ramcli.index.stills import Stills
from ramcli.index.vocabulary import Vocabulary
from ramcli.index.writes import Writes

if TYPE_CHECKING:
    from filelock import BaseFileLock

_TABLES = frozenset({"photos", "images", "image_tags", "runs", "query_cache", "counters", "custom_tags",
                     "disabled_tags", "writes", "failures", "feedback", "thresholds", "stills"})


class Index(Photos, Images, Vocabulary, Queries, Runs, Writes, Failures, Feedback, Dupes, Stills):
    """A typed facade over the database. Writes go inside ``with index.transaction():``, one SQLite
    transaction per batch, so a batch lands whole or not at all."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock: BaseFileLock | None, *,
                 lock_per_write: bool = False) -> None:
        self.path = path
        self.conn = conn
        self._lock = lock
        self._per_write = lock_per_write
        self._held = 0

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """The writer lock for one step of writing (a batch's files and rows), when the index was opened
        with ``lock_per_write``; otherwise the lock taken at open already covers it and this does nothing.

        Why: `ramcli watch` runs for days. Holding the lock for its whole life would lock out `add-tag`,
        `tag` and `untag`; holding it per step lets them write between its batches. A step waits while
        another writer holds the lock (that one ends on its own) instead of failing. Nested holds share
        the outer one."""
        if not self._per_write or self._held:
            self._held += 1
            try:
                yield
            finally:
                self._held -= 1
            return
        self._lock = take_writer_lock(self.path, wait=True)
        self._held = 1
        try:
            yield
        finally:
            self._held = 0
            lock, self._lock = self._lock, None
            if lock is not None:
                lock.release()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT: the write lock is taken up front, so a batch never fails
        half-way on a reader turned writer (sqlite-utils' ``atomic`` begins DEFERRED). Its table
        helpers join this transaction through savepoints."""
        self.conn.execute("begin immediate")
        try:
            yield
        except BaseException:
            self.conn.execute("rollback")
            raise
        self.conn.execute("commit")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read transaction: everything read inside sees the same state of the file (the
        ``images`` counter and the rows it counts belong together)."""
        self.conn.execute("begin")
        try:
            yield
        finally:
            self.conn.execute("commit")

    def count(self, table: str) -> int:
        if table not in _TABLES:  # the name goes into SQL text
            raise ValueError(f"no table {table!r} in the index")
        return int(self.conn.execute(f"select count(*) from [{table}]").fetchone()[0])

    def close(self) -> None:
        self.conn.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def open_index(path: Path, *, writer: bool = False, lock_per_write: bool = False) -> Index:
    """Open (creating and migrating when needed) the index at ``path``. ``writer``: take the
    one-writer lock first (a second writer is told at once who holds it). ``lock_per_write``: a writer
    that takes the lock only around each step of writing (:meth:`Index.hold`), not at open."""
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:  # mkdir would only say "File exists" or "Not a directory"
        raise RamcliError("cannot create the index's folder: this file is in the way", path=blocker,
                          hint=f"use --index with a path in a folder (the index asked for: {path})")
    if path.is_dir():
        raise RamcliError("is a folder, not an index file", path=path,
                          hint=f"give --index a file name, e.g. --index {path / 'index.db'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RamcliError(f"cannot create the index's folder ({err.strerror or err})", path=path.parent,
                          hint="use --index for a library elsewhere") from None
    lock = take_writer_lock(path) if writer and not lock_per_write else None
    try:
        conn = connect(path)
        try:
            migrate(conn)
        except BaseException:
            conn.close()
            raise
    except sqlite3.DatabaseError as exc:
        if lock is not None:
            lock.release()
        raise RamcliError(f"cannot open the index ({exc})", path=path,
                          hint="if it is damaged, move it away and re-run `ramcli tag`") from None
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return Index(path, conn, lock, lock_per_write=lock_per_write)
