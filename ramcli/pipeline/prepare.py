"""Prepare stage: a photo's image hash, and its pixels decoded and preprocessed for the model.

Decoding runs ahead of inference in a pool, in input order:

* ``processes`` (`ramcli tag`): spawned worker processes — decoding and hashing are CPU-bound and
  a library run is long enough to pay their start-up; nothing is forked from a process holding
  onnxruntime threads;
* ``threads`` (`--dry-run`): Pillow releases the GIL while decoding, and a few photos start at once;
* ``inline`` (``bench``, agreement samples): in the caller's thread, so each stage can be timed alone.

With ``known`` hashes (the index's images for this model) a photo whose image is already indexed is
hashed but not decoded: it was moved, copied or only had its metadata edited.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ramcli.errors import ImageError
from ramcli.media import is_video
from ramcli.metadata.identity import image_hash
from ramcli.pipeline.clock import NO_CLOCK, Clock
from ramcli.runtime.images import Preprocess, decode_error, read_photo, to_input
from ramcli.runtime.video import EVERY, MOST, sample_video

Pool = Literal["processes", "threads", "inline"]


@dataclass(frozen=True)
class Sampling:
    """How a video is sampled: at most one still per ``every`` seconds, at most ``most`` stills."""

    every: float = EVERY
    most: int = MOST


@dataclass
class Prepared:
    path: Path
    hash: str | None  # None where no index asks for it (dry run, bench)
    pixels: np.ndarray | None  # None: image already in the index, no decoding done. A video: one per still
    width: int = 0
    height: int = 0
    taken_at: str | None = None
    times: list[float] | None = None  # a video: each still's time in seconds (pixels[i] is at times[i])
    duration: float | None = None  # a video's length in seconds

    @property
    def video(self) -> bool:
        return self.times is not None


def prepare_one(path: Path, pre: Preprocess, known: frozenset[str] | None,
                orient: bool = True, sampling: Sampling = Sampling()) -> Prepared | ImageError:
    """Hash (when ``known`` is given), and decode + preprocess when the image is new to the index.
    ``orient=False`` leaves the EXIF orientation unapplied, as the authors' benchmark script does
    (`ramcli eval`: numbers comparable with the paper's). A video becomes its stills (``runtime.video``)."""
    try:
        digest = image_hash(path) if known is not None else None
        if digest is not None and known is not None and digest in known:
            return Prepared(path, digest, None)
        if is_video(path):
            clip = sample_video(path, every=sampling.every, most=sampling.most, min_side=pre.image_size,
                                orient=orient)
            pixels = np.stack([to_input(f.rgb, pre) for f in clip.frames])
            return Prepared(path, digest, pixels, clip.size[0], clip.size[1], clip.taken_at,
                            [round(f.t, 3) for f in clip.frames], clip.duration)
        photo = read_photo(path, orient=orient, draft=pre.draft_size)
        return Prepared(path, digest, to_input(photo.rgb, pre), photo.size[0], photo.size[1], photo.taken_at)
    except ImageError as err:
        return err
    except Exception as exc:  # decoder trouble is this file's problem, not the run's
        return decode_error(exc, path)


# worker-process state, set once per process by the pool's initializer
_KNOWN: frozenset[str] | None = None
_PRE: Preprocess | None = None
_ORIENT = True
_SAMPLING = Sampling()


def _init_worker(known: frozenset[str] | None, pre: Preprocess, orient: bool = True,
                 sampling: Sampling = Sampling()) -> None:
    global _KNOWN, _PRE, _ORIENT, _SAMPLING
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C means
    _KNOWN, _PRE, _ORIENT, _SAMPLING = known, pre, orient, sampling


def _in_worker(path: Path) -> Prepared | ImageError:
    assert _PRE is not None
    return prepare_one(path, _PRE, _KNOWN, _ORIENT, _SAMPLING)


class Prepare:
    """The prepare stage: ``stage(paths)`` yields one :class:`Prepared` or :class:`ImageError` per path."""

    def __init__(self, pre: Preprocess | Callable[[], Preprocess], *,
                 known: frozenset[str] | Callable[[], frozenset[str]] | None = None,
                 pool: Pool = "processes", workers: int = 0, ahead: int = 8, clock: Clock = NO_CLOCK,
                 orient: bool = True, sampling: Sampling = Sampling()) -> None:
        """``pre``: the model's input contract, or how to get it (only once some photo needs preparing: it
        depends on the device the model loads on, so asking for it loads the model). ``known``: the index's
        image hashes for the model (or how to read them, also only then: a big index makes that read cost
        something); None: no hashing at all."""
        self._pre = pre
        self._known = known
        self.clock = clock
        self.orient = orient
        self.sampling = sampling
        self.pool = pool
        self.workers = workers or max(1, os.cpu_count() or 1)
        if pool == "threads":  # each holds one full-size decode in memory
            self.workers = min(self.workers, 4)
        self.ahead = max(ahead, self.workers * 2)

    def _executor(self, known: frozenset[str] | None) -> Executor:
        if self.pool == "threads":
            return ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="decode")
        ctx = multiprocessing.get_context("spawn")  # no fork of a process holding onnxruntime threads
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=_init_worker,
                                   initargs=(known, self.pre, self.orient, self.sampling))

    @property
    def pre(self) -> Preprocess:
        if callable(self._pre):
            self._pre = self._pre()
        return self._pre

    @property
    def known(self) -> frozenset[str] | None:
        if callable(self._known):
            self._known = self._known()
        return self._known

    def __call__(self, paths: Iterable[Path]) -> Iterator[Prepared | ImageError]:
        todo = list(paths)
        if not todo:
            return
        known = self.known
        if self.pool == "inline":
            for path in todo:
                with self.clock("decode"):
                    got = prepare_one(path, self.pre, known, self.orient, self.sampling)
                yield got
            return
        pool = self._executor(known)
        threads = self.pool == "threads"
        try:
            pending: deque[Future] = deque()
            it = iter(todo)

            def fill() -> None:
                for path in it:
                    pending.append(pool.submit(prepare_one, path, self.pre, known, self.orient, self.sampling)
                                   if threads
                                   else pool.submit(_in_worker, path))
                    if len(pending) >= self.ahead:
                        return

            fill()
            while pending:
                got = pending.popleft().result()
                fill()
                yield got
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
