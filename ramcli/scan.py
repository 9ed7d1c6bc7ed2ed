"""Which files to look at: a recursive walk of the given paths.

Files named explicitly are always taken (the decoder then says if they are not images);
inside folders only known photo extensions are, hidden files and folders are skipped, and
symlinked folders are not followed (no loops). Problems are yielded, not raised, so one
unreadable folder never stops a run.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

PHOTO_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".png", ".webp", ".tif", ".tiff", ".heic", ".heif", ".hif", ".avif",
    ".gif", ".bmp",
})


@dataclass(frozen=True)
class ScanProblem:
    path: Path
    reason: str


def _excluded(path: Path, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(path.name, p) or fnmatch.fnmatch(str(path), p) for p in patterns)


def iter_photos(paths: Iterable[Path], exclude: Iterable[str] = ()) -> Iterator[Path | ScanProblem]:
    """Yield photo paths (sorted within each folder) and problems, in a stable order."""
    patterns = tuple(exclude)
    for root in paths:
        if root.is_file():
            if not _excluded(root, patterns):
                yield root
            continue
        if not root.exists():
            yield ScanProblem(root, "no such file or folder")
            continue
        errors: list[OSError] = []
        for folder, dirs, files in os.walk(root, onerror=errors.append, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not _excluded(Path(folder, d), patterns))
            for name in sorted(files):
                p = Path(folder, name)
                if name.startswith(".") or p.suffix.lower() not in PHOTO_EXTENSIONS or _excluded(p, patterns):
                    continue
                yield p
            while errors:
                err = errors.pop()
                yield ScanProblem(Path(err.filename or folder), f"cannot read folder ({err.strerror})")
        while errors:
            err = errors.pop()
            yield ScanProblem(Path(err.filename or root), f"cannot read folder ({err.strerror})")
