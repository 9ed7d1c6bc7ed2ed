"""Console output: the consoles, one-line errors, `--json` lines, the progress bar, and the one
event renderer every run that yields :class:`~ramcli.pipeline.events.Event` goes through
(tag, tag --dry-run, untag, re-scoring).

Rich is imported on first use: `--json` and `--paths` runs (scripts, pipes) never pay its
~100 ms import, which is a third of a tag-only search.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from ramcli.errors import RamcliError, printable
from ramcli.media import is_video

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID
    from rich.table import Table

    from ramcli.pipeline.events import Event


class Verbosity:
    """The root options `-q` (only problems and results) and `-v` (a line per photo)."""

    quiet = False
    verbose = False


#: Set once by the root callback (``ramcli -q ...``), read by :func:`say` and the event renderer.
verbosity = Verbosity()


@cache
def _console(stderr: bool) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def out() -> Console:
    return _console(False)


def err() -> Console:
    return _console(True)


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def table(**kwargs: Any) -> Table:
    from rich.table import Table

    return Table(**kwargs)


def say(msg: str) -> None:
    """A progress note for people (model loaded, summary), on stderr; `-q` drops it."""
    if not verbosity.quiet:
        err().print(f"[dim]{escape(msg)}[/]")


def print_error(message: str) -> None:
    err().print(f"[red]error:[/] {escape(message)}")


def fail(error: RamcliError) -> NoReturn:
    err().print(f"[bold red]error:[/] {escape(str(error))}")
    raise typer.Exit(error.exit_code)


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


@contextmanager
def errors() -> Iterator[None]:
    """Expected failures as one line and their exit code; Ctrl-C as 130."""
    try:
        yield
    except RamcliError as e:
        fail(e)
    except KeyboardInterrupt:
        err().print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None


@contextmanager
def interrupted(message: str) -> Iterator[None]:
    """Ctrl-C during a run that saves as it goes: say how to go on, exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        err().print(f"[yellow]interrupted: {escape(message)}[/]")
        raise typer.Exit(130) from None


class Bar:
    """One progress task: a count, a rate and an ETA; handed to runs as their on_total/on_image hooks."""

    def __init__(self, progress: Progress, task: TaskID, unit: str) -> None:
        self._progress, self._task, self._unit = progress, task, unit
        self.start = time.perf_counter()
        self.done = 0

    def total(self, n: int | None) -> None:
        self._progress.update(self._task, total=n)

    def restart(self, label: str, total: int | None) -> None:
        """The same bar for the next stretch of work (`ramcli eval`'s next variant): count and rate from 0."""
        self._progress.reset(self._task, total=total, description=label, rate="")
        self.start = time.perf_counter()
        self.done = 0

    def tick(self) -> None:
        self.done += 1
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        self._progress.update(self._task, advance=1, rate=f"{rate:.1f} {self._unit}/s")

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


@contextmanager
def progress(label: str, total: int | None = None, unit: str = "photos") -> Iterator[Bar]:
    """A transient Rich progress bar on stderr (spinner, count, rate, ETA); off when stderr is no terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn

    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=err(), transient=True,
                   disable=not err().is_terminal)
    with bar:
        yield Bar(bar, bar.add_task(label, total=total, rate=""), unit)


def render_events(events: Iterable[Event], *, json_out: bool, verbose: bool = False,
                  bar: Bar | None = None) -> Counter[str]:
    """Show each event as it comes; return how many of each status there were.

    `--json`: the event's ``as_dict()`` line on stdout. Errors and skips: one line on stderr. A
    report event (``model`` set: `--dry-run`) prints its tags with scores; any other event prints a
    status line only with `-v`. ``bar`` ticks once per event.
    """
    counts: Counter[str] = Counter()
    verbose = verbose or verbosity.verbose
    for ev in events:
        counts[ev.status] += 1
        if is_video(ev.path):  # the summary counts videos apart: "3 tagged (1 video)"
            counts[f"{ev.status}:video"] += 1
        if bar is not None:
            bar.tick()
        if ev.model is not None:
            _report_line(ev, json_out)
            continue
        if json_out:
            emit_json(ev.as_dict())
        if ev.status == "error":
            print_error(ev.error or "")
        elif ev.status == "skipped":
            err().print(f"[yellow]skipped:[/] {escape(ev.error or '')}")
        elif verbose and not json_out:
            extra = f" (from {ev.moved_from})" if ev.moved_from else ""
            out().print(f"{ev.status:>9} {escape(str(ev.path))}{escape(extra)}: {escape(', '.join(ev.tags))}")
            if ev.caption is not None:
                out().print(f"          [italic]{escape(ev.caption)}[/]")
    return counts


def _report_line(ev: Event, json_out: bool) -> None:
    """A dry-run event: the tags with their scores (skips have no `--json` line, as scan notes)."""
    if ev.status == "skipped":
        err().print(f"[yellow]skipped:[/] {escape(ev.error or '')}")
        return
    if ev.failed:
        print_error(ev.error or "")
        if json_out:
            emit_json(ev.as_dict())
        return
    if json_out:
        emit_json(ev.as_dict())
        return
    scored = ev.scored or []
    names = ", ".join(f"{escape(name)} [dim]{t.score:.2f}[/]" for name, t in zip(ev.tags, scored, strict=True))
    out().print(f"[bold]{escape(printable(ev.path))}[/]: {names or '[dim](none)[/]'}")
    if ev.caption is not None:
        out().print(f"  [italic]{escape(ev.caption)}[/]")
