"""Which files to look at: a walk of the given paths that yields only regular files to read.

Paths named explicitly are always taken (the decoder then says if a file is not an image), and a
symlink named explicitly is followed: the user asked for it. Inside folders:

* only known photo, camera RAW and video extensions are taken (``ramcli.media``); hidden files and folders are skipped;
* something that is not a regular file under a photo's name (a FIFO, socket or device ``x.jpg``)
  is skipped with a line: opening a FIFO waits for a writer, which in a library means forever;
* a symlink is followed only to a photo that lies inside the folders named (both resolved), because
  a run writes keywords into the file a link leads to: a link to a file or folder outside them is
  skipped with a line saying how to include it (name its target too). Symlinked folders are never
  walked — one outside is skipped with that line, one inside is walked under its own name anyway —
  so a walk cannot loop; dangling links and link loops are skipped with a line.

Problems are yielded, not raised, so one unreadable folder never stops a run. The walk uses
``os.scandir``: the file type of each entry comes with the listing, so telling regular files,
folders and symlinks apart costs no extra ``stat`` except for symlinks.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ramcli.files import kind
from ramcli.media import PHOTO_EXTENSIONS, RAW_EXTENSIONS, VIDEO_EXTENSIONS


@dataclass(frozen=True)
class ScanProblem:
    path: Path
    reason: str
    skipped: bool = False  # True: not an error, just not something ramcli handles (exit code stays 0)
    hint: str | None = None  # what to do about it


def _excluded(path: Path, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(path.name, p) or fnmatch.fnmatch(str(path), p) for p in patterns)


_TAKEN = PHOTO_EXTENSIONS | RAW_EXTENSIONS | VIDEO_EXTENSIONS


def _photo_like(path: Path) -> bool:
    return path.suffix.lower() in _TAKEN


class _Named:
    """The folders and files the user named, resolved: where a symlink met in a walk may lead."""

    def __init__(self, roots: Iterable[Path]) -> None:
        self.folders: list[str] = []
        self.files: set[str] = set()
        for root in roots:
            try:
                real = os.path.realpath(root, strict=True)
            except OSError:
                continue
            if os.path.isdir(real):
                self.folders.append(real.rstrip(os.sep) + os.sep)
            else:
                self.files.add(real)

    def hold(self, real: str) -> bool:
        return real in self.files or any(real + os.sep == f or real.startswith(f) for f in self.folders)


def _not_regular(path: Path, mode: int) -> ScanProblem:
    return ScanProblem(path, f"not a regular file ({kind(mode)})", skipped=True,
                       hint="ramcli reads regular files only; --exclude it to silence this line")


def _unreachable(path: Path, err: OSError, *, skipped: bool) -> ScanProblem:
    """A path whose ``stat`` failed: missing, a dangling or looping symlink, or not permitted."""
    if isinstance(err, FileNotFoundError) and os.path.islink(path):
        return ScanProblem(path, f"broken symlink: its target {os.readlink(path)} does not exist", skipped=skipped)
    if isinstance(err, FileNotFoundError):
        return ScanProblem(path, "no such file or folder", skipped=skipped)
    if err.errno == errno.ELOOP:
        return ScanProblem(path, "symlink loop: not followed", skipped=skipped)
    return ScanProblem(path, f"cannot read it ({err.strerror})", skipped=skipped)


def _outside(path: Path, real: str, folder: bool) -> ScanProblem:
    include = real if folder else os.path.dirname(real)
    return ScanProblem(path, f"symlink to {real}, outside the folders named: not followed", skipped=True,
                       hint=f"name {include} on the command line too to include it")


def _file(path: Path, mode: int) -> Path | ScanProblem | None:
    """A regular file or something else under a photo's name (``mode`` after following links)."""
    if not _photo_like(path):
        return None
    if not stat.S_ISREG(mode):
        return _not_regular(path, mode)
    return path


def _link(path: Path, named: _Named) -> Path | ScanProblem | None:
    """A symlink met in a walk: a photo it leads to inside the folders named, or why it is left alone."""
    try:
        st = path.stat()
    except OSError as err:
        return _unreachable(path, err, skipped=True)
    real = os.path.realpath(path)
    if stat.S_ISDIR(st.st_mode):
        if not named.hold(real):
            return _outside(path, real, folder=True)
        if (os.path.realpath(path.parent) + os.sep).startswith(real.rstrip(os.sep) + os.sep):
            return ScanProblem(path, f"symlink loop: leads to {real}, a folder that contains it; not followed",
                               skipped=True)
        return None  # inside the folders named: walked under its own name
    if not _photo_like(path):
        return None
    if stat.S_ISREG(st.st_mode) and not named.hold(real):
        return _outside(path, real, folder=False)
    return _file(path, st.st_mode)


def _walk(top: Path, patterns: tuple[str, ...], named: _Named) -> Iterator[Path | ScanProblem]:
    """Depth first, each folder's entries sorted by name, with an explicit stack (no recursion limit)."""
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as err:
            yield ScanProblem(Path(err.filename or folder), f"cannot read folder ({err.strerror})")
            continue
        subfolders: list[Path] = []
        for entry in entries:
            path = Path(folder, entry.name)
            if entry.name.startswith(".") or _excluded(path, patterns):
                continue
            try:
                if entry.is_symlink():
                    item = _link(path, named)
                elif entry.is_dir(follow_symlinks=False):
                    subfolders.append(path)
                    continue
                elif entry.is_file(follow_symlinks=False):
                    item = _file(path, stat.S_IFREG)
                else:
                    item = _file(path, entry.stat(follow_symlinks=False).st_mode)
            except OSError as err:
                item = ScanProblem(path, f"cannot read it ({err.strerror})")
            if item is not None:
                yield item
        stack.extend(reversed(subfolders))


def iter_photos(paths: Iterable[Path], exclude: Iterable[str] = ()) -> Iterator[Path | ScanProblem]:
    """Yield photo paths (sorted within each folder) and problems, in a stable order."""
    patterns = tuple(exclude)
    roots = [Path(p) for p in paths]
    named = _Named(roots)
    for root in roots:
        try:
            st = root.stat()  # follows a symlink: one named explicitly is followed
        except OSError as err:
            yield _unreachable(root, err, skipped=False)
            continue
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(root, patterns, named)
        elif _excluded(root, patterns):
            continue
        elif not stat.S_ISREG(st.st_mode):
            yield _not_regular(root, st.st_mode)
        else:
            yield root
