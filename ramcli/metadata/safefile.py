"""Replacing a photo (or its sidecar) so that no failure, crash or other program loses anything.

The new bytes go to a dot-temp in the same folder (same file system, so the rename is atomic), get the
original's mode, owner, xattrs and (unless the caller touches) times, are fsynced, and are renamed over
the original only if the original is still as it was read (size, mtime, inode): another program's change
made meanwhile wins, and the photo is left as that program wrote it. The folder is fsynced after.

A run killed (``kill -9``) between writing the temp and renaming it leaves a temp whose name carries the
photo's name (its first 160 bytes) and the dead process id; the next run writing in that folder recognises
it as stale and removes it.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TypeVar

from ramcli.errors import ImageError

T = TypeVar("T")
State = tuple[int, int, int]  # size, mtime_ns, inode

_TEMP_SUFFIX = ".ramcli-tmp"
# mkstemp's random part has no dots: ".photo.jpg.<pid>.<random>.ramcli-tmp"
_TEMP_NAME = re.compile(r"\..+\.(\d+)\.[^.]+\.ramcli-tmp")
# Bytes of the photo's name kept in its temp's name: a name is at most 255 bytes (NAME_MAX on ext4, XFS,
# btrfs, APFS, NTFS), and the dots, pid, random part and suffix take up to ~40 of them.
_TEMP_NAME_BYTES = 160
# One check-then-rename (or delete) at a time in this process, and the set of folders already swept.
_LOCK = threading.Lock()
_SWEPT: set[Path] = set()


def atomic_write(target: Path, data: bytes, before: State | None, *,
                 times: tuple[int, int] | None, new_mode: int, path: Path) -> None:
    """Dot-temp in the same folder, same mode/owner/xattrs, ``times`` or now, fsync, rename over, fsync folder.

    ``before``: ``state(target)`` when it was read (None: it did not exist; the new file gets
    ``new_mode``). ``path`` is the photo, named in errors.
    """
    _remove_stale_temps(target.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{_short(target.name)}.{os.getpid()}.", suffix=_TEMP_SUFFIX,
                                   dir=target.parent)
    except OSError as exc:
        raise ImageError(f"cannot write in its folder ({exc.strerror})", path=path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if before is None:
                os.chmod(tmp, new_mode)
            else:
                shutil.copystat(target, tmp)  # mode, xattrs (and times, set below)
                st = os.stat(target)
                with suppress(OSError):
                    os.chown(tmp, st.st_uid, st.st_gid)
                    os.chmod(tmp, stat.S_IMODE(st.st_mode))  # chown may clear setgid bits
            if times:
                os.utime(tmp, ns=times)
            else:
                os.utime(tmp)
            os.fsync(f.fileno())
        with _LOCK:
            check_unchanged(target, before, path)
            os.replace(tmp, target)
    except BaseException as exc:
        with suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise ImageError(f"could not write the metadata ({exc.strerror or exc})", path=path) from None
        raise
    fsync_dir(target.parent)


def _short(name: str) -> str:
    """``name`` cut to ``_TEMP_NAME_BYTES`` bytes, whole characters only, for the temp's name.

    The temp only needs to say whose it is; a photo named with 220+ bytes (long titles, CJK names at three
    bytes a character) would otherwise give a temp name over 255 bytes, and the write would fail with
    "File name too long" for a photo whose own name is fine.
    """
    while len(os.fsencode(name)) > _TEMP_NAME_BYTES:
        name = name[:-1]
    return name


def remove(target: Path, before: State | None, path: Path, what: str) -> None:
    """Delete ``target`` if it is still as read (``before``); ``what`` names it in errors."""
    with _LOCK:
        check_unchanged(target, before, path)
        try:
            target.unlink()
        except OSError as exc:
            raise ImageError(f"could not delete {what} ({exc.strerror})", path=target) from None
    fsync_dir(target.parent)


def _remove_stale_temps(folder: Path) -> None:
    """Delete ``.NAME.PID.xxxx.ramcli-tmp`` files in ``folder`` whose process no longer runs.

    Once per folder per process: our own later temps carry our pid, and a listdir per photo
    would cost seconds in a folder of 10,000.
    """
    with _LOCK:
        if folder in _SWEPT:
            return
        _SWEPT.add(folder)
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        m = _TEMP_NAME.fullmatch(name)
        if m and not _process_alive(int(m.group(1))):
            with suppress(OSError):
                os.unlink(folder / name)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def check_unchanged(target: Path, before: State | None, path: Path) -> None:
    if state(target) != before:
        raise ImageError("changed on disk while ramcli was writing it; left as the other program wrote it",
                         path=path, hint="run again")


def state(p: Path) -> State | None:
    """(size, mtime_ns, inode), or None for a missing file: compared again right before replacing it."""
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


def fsync_dir(folder: Path) -> None:
    with suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def writable(p: Path) -> bool:
    """Writable and not marked read-only: no write bit for anyone counts as read-only even for root
    (``os.access`` always says yes to root, but ``chmod a-w`` is the user saying "don't modify this")."""
    try:
        return os.access(p, os.W_OK) and bool(os.stat(p).st_mode & 0o222)
    except OSError:
        return False


def guard(fn: Callable[[Path], T], path: Path) -> T:
    """``fn(path)`` with OSErrors as ImageErrors naming the file (the file's surroundings, not its bytes:
    ``lasting=False``)."""
    try:
        return fn(path)
    except FileNotFoundError:
        raise ImageError("file not found", path=path, lasting=False) from None
    except OSError as exc:
        raise ImageError(f"cannot read it ({exc.strerror})", path=path, hint="check its permissions",
                         lasting=False) from None
