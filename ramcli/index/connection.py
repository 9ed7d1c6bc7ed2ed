"""Opening the SQLite file, and the sqlite-utils view of it.

Two ways in, on purpose. Reads and the per-image writes of a tag run use the plain
``sqlite3.Connection``: a tag-only ``ramcli search`` must answer without importing sqlite-utils
(0.2-0.4 s), and its per-call table introspection costs ~0.4 ms per image over ``executemany``
(0.22 -> 0.61 ms per image with 30 tags, measured). Migrations and the rare writes (runs, custom
tags, the query cache) go through sqlite-utils, loaded on first use, over the same connection.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite_utils


def connect(path: Path) -> sqlite3.Connection:
    """Autocommit (``isolation_level=None``): batches open their own ``BEGIN IMMEDIATE``; WAL so
    searches read while a tag run writes."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    # sqlite-utils' enable_wal() would do the same, at the price of importing it on every search
    conn.execute("pragma journal_mode = wal")
    conn.execute("pragma synchronous = normal")
    conn.execute("pragma busy_timeout = 30000")
    return conn


def utils(conn: sqlite3.Connection) -> sqlite_utils.Database:
    """sqlite-utils over ``conn``. Its writes join an open transaction (savepoints), so they are
    safe inside ``Index.transaction()``."""
    import sqlite_utils

    return sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
