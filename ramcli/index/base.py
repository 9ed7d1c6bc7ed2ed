"""What every group of index methods works on: one connection, and sqlite-utils over it."""

from __future__ import annotations

import sqlite3
from functools import cached_property
from typing import TYPE_CHECKING

from ramcli.index.connection import utils

if TYPE_CHECKING:
    import sqlite_utils

# SQLite's default limit on ? parameters is 999 on old builds: long IN lists go in chunks of this
CHUNK = 500


class Tables:
    """Base of the method groups that ``Index`` composes (photos, images, vocabulary, queries, runs)."""

    conn: sqlite3.Connection

    @cached_property
    def db(self) -> sqlite_utils.Database:
        """sqlite-utils over the same connection, loaded on first use (never by a tag-only search)."""
        return utils(self.conn)
