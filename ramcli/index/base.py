"""What every group of index methods works on: one connection, and sqlite-utils over it."""

from __future__ import annotations

import os
import sqlite3
from functools import cached_property
from pathlib import Path
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


# ``where path = ? or substr(path, 1, ?) = ?``: a row at ``root`` or below it
UNDER = "(path = ? or substr(path, 1, ?) = ?)"


def under(root: Path) -> list[object]:
    """The parameters of :data:`UNDER` for ``root``. substr, not LIKE: LIKE ignores ASCII case."""
    r = str(root).rstrip(os.sep) or os.sep
    prefix = r.rstrip(os.sep) + os.sep
    return [r, len(prefix), prefix]
