"""Opening a photo so that nothing in a library can hang ramcli: only regular files are ever read.

``open(2)`` on a FIFO waits for a writer (in a photo library: forever), on a device it may wait or
have side effects, and a folder walk can meet either under a photo's name (``x.jpg``). So every file
ramcli opens by a path it was given or found (the image hash, the pixels, the metadata) goes through
:func:`open_regular`: ``O_NONBLOCK`` makes the ``open`` itself return at once whatever the file is,
and ``fstat`` of the open descriptor must say "regular file" before a byte is read. The check is on
the descriptor, not a ``stat`` before opening, because the name can be swapped in between.

This sits in the base layer, not in ``metadata/``: the decoder that reads pixels
(``runtime.images``) opens photos too, and the runtime is below the metadata layer.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from ramcli.errors import ImageError

# O_NONBLOCK: open(2) never waits (FIFOs, devices); O_NOCTTY: a terminal device never becomes ours.
_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def kind(mode: int) -> str:
    """What a non-regular file is, for the one line that says why it was left alone."""
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a file"


def not_regular(path: str | Path, mode: int) -> ImageError:
    """The error for a path that is there but is no regular file: nothing to tag, nothing to retry."""
    return ImageError(f"not a regular file ({kind(mode)})", path=path, lasting=False)


def open_regular(path: str | Path) -> BinaryIO:
    """``path`` opened for binary reading, only if it is a regular file (following symlinks).

    Raises ``OSError`` as ``open`` would (FileNotFoundError, PermissionError, ...) and ImageError
    "not a regular file (a FIFO)" for anything else, without ever blocking.
    """
    fd = os.open(path, _FLAGS | _NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise not_regular(path, mode)
        if _NONBLOCK:
            os.set_blocking(fd, True)  # a regular file ignores it on Linux; elsewhere reads must not fail EAGAIN
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | Path) -> bytes:
    """All bytes of the regular file at ``path`` (see :func:`open_regular`)."""
    with open_regular(path) as f:
        return f.read()
