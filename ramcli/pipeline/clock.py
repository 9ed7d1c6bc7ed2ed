"""Stage clocks: `bench` times each stage of the one pipeline; every other run uses :data:`NO_CLOCK`."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


class Clock:
    """Seconds spent per stage name, summed over a run."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @property
    def timing(self) -> bool:
        return True

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t = time.perf_counter()
        yield
        self.seconds[stage] += time.perf_counter() - t

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds


class _NoClock(Clock):
    """Times nothing: the stages run exactly as they would with a clock, minus the bookkeeping."""

    @property
    def timing(self) -> bool:
        return False

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        yield

    def add(self, stage: str, seconds: float) -> None:
        pass


NO_CLOCK: Clock = _NoClock()
