"""Source stage: paths -> the photos a run must look at, and the events decided without reading them.

A folder source scans (``scan.iter_photos``), turns scan problems into `skipped`/`error` events
and, against an index, decides from one stat what needs no reading at all:

* ``unchanged``: the same (size, mtime_ns) as right after ramcli's last write, for the same model;
* a remembered failure: the same (size, mtime_ns) as when its image data could not be read, for the
  same model — an ``error`` event with the message it failed with, unless ``retry_errors``.

Everything else goes on to the prepare stage, which tells new, changed, moved and copied photos apart
by their image hash; the stat each was seen with goes along (``Sourced.seen``), so a failure is
remembered with the state the file had *before* it was read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ramcli.errors import RamcliError
from ramcli.media import Media, is_video
from ramcli.pipeline.events import Event
from ramcli.pipeline.scan import ScanProblem, iter_photos

if TYPE_CHECKING:
    from ramcli.index import Index


@dataclass
class Sourced:
    """What a source hands the pipeline: photos to prepare, and events already decided."""

    todo: list[Path] = field(default_factory=list)
    early: list[Event] = field(default_factory=list)
    seen: dict[str, tuple[int, int]] = field(default_factory=dict)  # a todo path: (size, mtime_ns) at the scan

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


#: What a remembered failure's line adds to the message it failed with.
REMEMBERED = "unchanged since it failed; --retry-errors to try again"


def scan(paths: Iterable[Path], exclude: Iterable[str] = (), *, index: Index | None = None,
         model: str | None = None, retry_errors: bool = False, media: Media = "all") -> Sourced:
    """Photos under ``paths``; with an ``index``, photos unchanged since ramcli wrote them, and (unless
    ``retry_errors``) files unchanged since they could not be read, are events. ``media``: "photos" leaves
    videos out (``--exclude-videos``), "videos" takes only videos (``--only-videos``)."""
    out = Sourced()
    for item in iter_photos(list(paths), list(exclude)):
        if media != "all" and (is_video(item.path if isinstance(item, ScanProblem) else item)) != (media == "videos"):
            continue
        if isinstance(item, ScanProblem):
            status = "skipped" if item.skipped else "error"
            out.early.append(Event(item.path, status, error=str(RamcliError(item.reason, path=item.path,
                                                                             hint=item.hint))))
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
            continue
        if st is not None and not retry_errors:
            failed = index.failure(str(path))
            if failed is not None and failed.matches(st.st_size, st.st_mtime_ns, model or ""):
                out.early.append(Event(path, "error", error=f"{failed.error} ({REMEMBERED})"))
                continue
        out.todo.append(path)
        if st is not None:
            out.seen[str(path)] = (st.st_size, st.st_mtime_ns)
    return out
