"""The errors ramcli shows to people: one line naming the file, what went wrong, what to do.

Library code raises these; the CLI prints ``str(err)`` and exits non-zero, never a traceback.
Anything else escaping is a bug.
"""

from __future__ import annotations

from pathlib import Path


def first_line(exc: BaseException) -> str:
    """An exception as one line for a message: its first line, or its type when it says nothing."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def printable(path: str | Path) -> str:
    """A path as text that can always be printed: undecodable bytes in names become \\xNN."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class RamcliError(Exception):
    """An expected failure: ``path: what went wrong (what to do)``."""

    exit_code = 1

    def __init__(self, message: str, *, path: str | Path | None = None, hint: str | None = None) -> None:
        self.message = message
        self.path = printable(path) if path is not None else None
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        return f"{text} ({self.hint})" if self.hint else text


class UsageError(RamcliError):
    """Bad arguments or options; exit code 2 like Click's own usage errors."""

    exit_code = 2


class IndexBusy(RamcliError):
    """Another process holds the index's writer lock: a one-off command reports it at once. (`ramcli watch`
    never sees it: it locks per write and waits, since the holder ends on its own.)"""


class ModelNotFound(RamcliError):
    """No such model is installed or known."""


class BrokenModel(RamcliError):
    """An installed model whose folder is damaged: a file missing, truncated, or not what its
    meta.json says. ``model`` names it and ``what`` says what is wrong with the file at ``path``,
    so a listing can show it as BROKEN and go on with the others; the hint says how to repair it
    (convert it again, or remove it)."""

    def __init__(self, model: str, what: str, *, path: str | Path, hint: str) -> None:
        self.model = model
        self.what = what
        super().__init__(f"model {model!r} is damaged: {what}", path=path, hint=hint)


class CheckpointError(RamcliError):
    """A checkpoint file that cannot be loaded as the model it claims to be."""


class DownloadError(RamcliError):
    """Fetching weights or data failed (offline, hub unreachable, checksum mismatch)."""


class ImageError(RamcliError):
    """A photo that cannot be read or decoded.

    ``lasting``: the file's own bytes are the cause (truncated, not an image, too many pixels), so
    reading it again before it changes gives the same answer and the index may remember the failure.
    False where the cause lies around the file (permissions, a file that vanished, a FIFO swapped in):
    those are fixed without touching the file, so they are tried again every run.
    """

    def __init__(self, message: str, *, path: str | Path | None = None, hint: str | None = None,
                 lasting: bool = True) -> None:
        self.lasting = lasting
        super().__init__(message, path=path, hint=hint)
