"""One writer per index: a lock file beside the database (``index.db.lock``).

``filelock`` gives the same exclusive, non-blocking lock on Linux, macOS and Windows (and a soft
lock where the file system has no ``flock``). A second writer does not wait silently behind the
first: it is told at once which run holds the library. The holder writes its pid into the lock
file for that message; where the platform will not let it (Windows locks the bytes; older filelock
releases truncate the file on every attempt), the message says "another process" instead.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ramcli.errors import IndexBusy, RamcliError

if TYPE_CHECKING:
    from filelock import BaseFileLock


def lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


def _sign(path: Path) -> None:
    """Our pid into the held lock file (``flock`` is advisory: writing does not disturb it). Where
    the platform refuses (Windows locks the bytes), the lock still holds; it only has no name."""
    with contextlib.suppress(OSError):
        path.write_text(f"pid {os.getpid()}", encoding="utf-8")


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return path.read_text(encoding="utf-8").strip() or "another process"
    return "another process"


def _make(path: Path) -> None:
    """Create the lock file (or find it there) before ``filelock`` tries to lock it.

    Why: where the file cannot be made (a read-only folder, a file system that takes no new files),
    some ``filelock`` releases retry as if another process held the lock and, with ``timeout=0``,
    report a timeout: the user would be told that another run is writing. Made here, the real
    reason is what they see. ``filelock`` then locks this same file (it never deletes it).
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise RamcliError(f"cannot create the index's lock file ({err.strerror or err})", path=path,
                          hint="the index's folder must be writable; use --index for a library elsewhere") from None
    os.close(fd)


def take_writer_lock(db_path: Path, *, wait: bool = False) -> BaseFileLock:
    """The held lock for ``db_path``; release it with ``.release()``. Raises a one-line
    ``RamcliError`` when another run holds it (``IndexBusy``; with ``wait``, waits for it instead) or
    when the lock file cannot be made."""
    from filelock import FileLock, Timeout  # 0.1 s: only writers pay it

    path = lock_path(db_path)
    _make(path)
    # thread_local=False: the lock belongs to the Index, whichever thread closes it
    lock = FileLock(path, timeout=-1 if wait else 0, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise IndexBusy(f"another ramcli run ({_holder(path)}) is writing to this index", path=db_path,
                          hint="wait for it to finish, or use --index for a different library") from None
    except OSError as err:
        raise RamcliError(f"cannot create the index's lock file ({err.strerror or err})", path=path,
                          hint="the index's folder must be writable; use --index for a library elsewhere") from None
    _sign(path)
    return lock
