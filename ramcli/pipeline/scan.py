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


# Camera RAW: no decoder here for their embedded previews yet, so they are reported, not tagged.
RAW_EXTENSIONS = frozenset({
    ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".dng", ".orf", ".rw2", ".raf", ".pef",
    ".srw", ".x3f", ".3fr", ".erf", ".kdc", ".mrw", ".rwl", ".iiq",
})


@dataclass(frozen=True)
class ScanProblem:
    path: Path
    reason: str
    skipped: bool = False  # True: not an error, just not something ramcli handles (exit code stays 0)


def _excluded(path: Path, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(path.name, p) or fnmatch.fnmatch(str(path), p) for p in patterns)


def iter_photos(paths: Iterable[Path], exclude: Iterable[str] = ()) -> Iterator[Path | ScanProblem]:
    """Yield photo paths (sorted within each folder) and problems, in a stable order."""
    patterns = tuple(exclude)
    for root in paths:
        if root.is_file():
            if _excluded(root, patterns):
                continue
            if root.suffix.lower() in RAW_EXTENSIONS:
                yield ScanProblem(root, "camera RAW is not supported yet, skipped", skipped=True)
            else:
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
                if name.startswith(".") or _excluded(p, patterns):
                    continue
                if p.suffix.lower() in RAW_EXTENSIONS:
                    yield ScanProblem(p, "camera RAW is not supported yet, skipped", skipped=True)
                elif p.suffix.lower() in PHOTO_EXTENSIONS:
                    yield p
            while errors:
                err = errors.pop()
                yield ScanProblem(Path(err.filename or folder), f"cannot read folder ({err.strerror})")
        while errors:
            err = errors.pop()
            yield ScanProblem(Path(err.filename or root), f"cannot read folder ({err.strerror})")
