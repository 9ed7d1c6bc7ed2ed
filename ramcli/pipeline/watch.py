"""A watched folder as a source: file-system events (watchdog: inotify, FSEvents, ReadDirectoryChangesW)
turned into small batches of settled paths for the one tagging pipeline.

Why a separate source and not a loop of full scans: a scan of 100k photos costs 100k stats a pass; the
kernel already knows which few files changed. What this module decides, and nothing more:

* which events matter: photo files (by extension, like the scan), not hidden ones, not ``--exclude``d,
  never ramcli's own temporary files (``*.ramcli-tmp``) or sidecars (not photo extensions);
* when a file is ready: its (size, mtime) has not changed for ``settle`` seconds. A close event is not
  enough: a copy written in chunks may be closed and reopened, and a camera import tool may write
  slowly; a file read half-written would be tagged from a truncated image;
* what went away: deleted files and folders, and the source side of moves, which the run forgets
  (a move's destination is tagged in the same batch first, so its tags and embeddings travel with it).
  Vanished paths wait until nothing is pending: one may be the source of a move still settling.

Ramcli's own metadata writes come back as events too (the temporary file renamed over the photo). The
caller drops a settled path whose stat equals what the index recorded after ramcli's write, so they cost
one stat, not a run.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ramcli.media import kind_of
from ramcli.pipeline.scan import _excluded

#: How often pending files are looked at (seconds): the latency floor on top of ``settle``.
TICK = 0.25


@dataclass
class Changes:
    """One batch: photos to tag (settled) and places whose indexed photos may have vanished."""

    paths: list[Path] = field(default_factory=list)
    gone: list[Path] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.paths or self.gone)


class FolderWatch:
    """Watches ``roots`` recursively; :meth:`batches` yields :class:`Changes` until ``stop`` is set."""

    def __init__(self, roots: Sequence[Path], exclude: Sequence[str] = (), *, settle: float = 2.0,
                 max_batch: int = 16) -> None:
        self.roots = [Path(r).absolute() for r in roots]
        self.exclude = tuple(exclude)
        self.settle = settle
        self.max_batch = max_batch
        self._events: queue.Queue[Any] = queue.Queue()
        self._observer: Any = None
        # path -> (size, mtime_ns, when it last changed, monotonic)
        self._pending: dict[Path, tuple[int, int, float]] = {}
        self._gone: set[Path] = set()

    # ---- the observer thread only queues; all decisions happen in the caller's thread
    def start(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        events = self._events

        class _Queue(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                events.put(event)

        self._observer = Observer()
        for root in self.roots:
            if root.is_dir():
                self._observer.schedule(_Queue(), str(root), recursive=True)
        self._observer.daemon = True
        self._observer.start()

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    # ---- which names matter
    def _wanted(self, path: Path) -> bool:
        if kind_of(path) is None:
            return False
        try:
            rel = path.relative_to(next(r for r in self.roots if path == r or r in path.parents))
        except StopIteration:
            return False  # moved out of every watched folder
        if any(part.startswith(".") for part in rel.parts):
            return False
        return not _excluded(path, self.exclude)

    def _touch(self, path: Path, *, moved: bool = False) -> None:
        """``path`` changed. A move's destination is complete already (a rename is atomic): it is ready at
        the next look, in the same batch as its source's disappearance, so the index moves its row rather
        than forgetting the image's embeddings and inferring them again."""
        if not self._wanted(path):
            return
        self._gone.discard(path)
        if moved:
            try:
                st = path.stat()
            except OSError:
                return
            self._pending[path] = (st.st_size, st.st_mtime_ns, float("-inf"))
        else:
            self._pending[path] = (-1, -1, time.monotonic())

    def _walk(self, folder: Path, *, moved: bool = False) -> None:
        """A folder that appeared (created, moved in): its photos, since events inside it may predate the watch."""
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                self._touch(Path(dirpath) / name, moved=moved)

    def _take(self, event: Any) -> None:
        kind = event.event_type
        src = Path(os.fsdecode(event.src_path))
        if kind in ("created", "modified", "closed"):
            if event.is_directory:
                if kind == "created":
                    self._walk(src)
            else:
                self._touch(src)
        elif kind == "moved":
            dest = Path(os.fsdecode(event.dest_path))
            self._pending.pop(src, None)
            if event.is_directory or self._wanted(src):  # not ramcli's temporary file renamed over a photo
                self._gone.add(src)
            if event.is_directory:
                self._walk(dest, moved=True)
            else:
                self._touch(dest, moved=True)
        elif kind == "deleted":
            self._pending.pop(src, None)
            if event.is_directory or self._wanted(src):
                self._gone.add(src)

    # ---- settling
    def _settled(self) -> list[Path]:
        now = time.monotonic()
        ready = []
        for path, (size, mtime, since) in list(self._pending.items()):
            try:
                st = path.stat()
            except OSError:  # vanished again: its delete event says so
                del self._pending[path]
                continue
            if (st.st_size, st.st_mtime_ns) != (size, mtime):
                self._pending[path] = (st.st_size, st.st_mtime_ns, now)
            elif now - since >= self.settle:
                ready.append(path)
        return sorted(ready)[:self.max_batch]

    def batches(self, stop: threading.Event, own_write: Callable[[Path], bool] = lambda _p: False,
                idle: Callable[[], None] = lambda: None) -> Iterator[Changes]:
        """Settled changes, a batch at a time, until ``stop`` is set. ``own_write(path)``: the file is as ramcli
        left it (dropped without a run). ``idle``: called when nothing is pending (a heartbeat)."""
        while not stop.is_set():
            try:
                self._take(self._events.get(timeout=TICK))
                while True:  # drain what else arrived
                    self._take(self._events.get_nowait())
            except queue.Empty:
                pass
            ready = self._settled()
            for path in ready:
                del self._pending[path]
            paths = [p for p in ready if not own_write(p)]
            gone: list[Path] = []
            if not self._pending:  # a vanished path may be a move whose destination is still settling
                gone = sorted(p for p in self._gone if not os.path.lexists(p))
                self._gone.clear()
            changes = Changes(paths, gone)
            if changes:
                yield changes
            elif not self._pending:
                idle()
