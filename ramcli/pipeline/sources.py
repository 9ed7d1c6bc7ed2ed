"""Source stage: paths -> the photos a run must look at, and the events decided without reading them.

A folder source scans (``scan.iter_photos``), turns scan problems into `skipped`/`error` events
and, against an index, marks a photo ``unchanged`` from one stat: the same (size, mtime_ns) as
right after ramcli's last write, for the same model. Everything else goes on to the prepare stage,
which tells new, changed, moved and copied photos apart by their image hash.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ramcli.errors import RamcliError
from ramcli.pipeline.events import Event
from ramcli.pipeline.scan import ScanProblem, iter_photos

if TYPE_CHECKING:
    from ramcli.index import Index


@dataclass
class Sourced:
    """What a source hands the pipeline: photos to prepare, and events already decided."""

    todo: list[Path] = field(default_factory=list)
    early: list[Event] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.todo) + len(self.early)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def photos(paths: Iterable[Path], exclude: Iterable[str] = ()) -> Iterator[Path]:
    """The photo files under ``paths``, lazily (scan problems are left out): for sampling a few."""
    return (item for item in iter_photos(list(paths), list(exclude)) if isinstance(item, Path))


def scan(paths: Iterable[Path], exclude: Iterable[str] = (), *, index: Index | None = None,
         model: str | None = None) -> Sourced:
    """Photos under ``paths``; with an ``index``, photos unchanged since ramcli wrote them are events."""
    out = Sourced()
    for item in iter_photos(list(paths), list(exclude)):
        if isinstance(item, ScanProblem):
            status = "skipped" if item.skipped else "error"
            out.early.append(Event(item.path, status, error=str(RamcliError(item.reason, path=item.path))))
            continue
        if index is None:
            out.todo.append(item)
            continue
        path = item.absolute()
        try:
            str(path).encode("utf-8")
        except UnicodeEncodeError:
            out.early.append(Event(path, "error", error=str(RamcliError(
                "file name is not valid UTF-8, so the index cannot store it", path=path,
                hint="rename the file (e.g. with `convmv`)"))))
            continue
        st = _stat(path)
        row = index.photo(str(path))
        if st and row and row.model == model and row.size == st.st_size and row.mtime_ns == st.st_mtime_ns:
            out.early.append(Event(path, "unchanged"))
        else:
            out.todo.append(path)
    return out
