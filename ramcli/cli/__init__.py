"""The `ramcli` command line: parse, call the library, render. No logic lives here.

People get Rich output on stderr/stdout; programs get `--json` (JSON lines for per-photo
results, one JSON document otherwise). Expected failures are one line and a non-zero exit
code: 1 when some file failed or a command could not do its job, 2 for bad usage, 130 on Ctrl-C.

Modules: :mod:`.app` (the Typer app, root options, settings as defaults), :mod:`.options`
(options shared by commands), :mod:`.render` (consoles, progress, the event renderer), and one
module per command group: :mod:`.tag`, :mod:`.search`, :mod:`.tags`, :mod:`.models`, :mod:`.dupes`,
:mod:`.watch`, :mod:`.bench`, :mod:`.evaluate`, :mod:`.doctor`, :mod:`.config`. Importing one registers
its commands; `main` imports only the one the arguments name, :func:`load_commands` (no argument) all of them, for
code that wants the whole Typer app (``load_commands()`` returns it).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from typing import NoReturn

import typer

from ramcli.cli.app import app

__all__ = ["app", "main"]

#: The module of each command or group, in the order of `ramcli --help`.
COMMAND_MODULES = {"tag": "tag", "untag": "tag", "search": "search", "dupes": "dupes", "watch": "watch",
                   "add-tag": "tags", "bench": "bench", "eval": "evaluate", "doctor": "doctor", "models": "models",
                   "tags": "tags", "config": "config", "serve": "serve"}


def load_commands(first: list[str] | None = None) -> typer.Typer:
    """Register the commands (importing a command module registers its commands) and return the app.

    Why ``first``: a run that names a command imports only that command's module; the others'
    option declarations are start-up time a `search` does not need; `--version` needs none.
    Anything else (no command, another top-level option, a misspelt name) loads them all, for
    the listing and did-you-mean.
    """
    if first == ["--version"]:  # answered while the root options are parsed: no command is built
        return app
    wanted = COMMAND_MODULES.get(first[0]) if first else None
    for module in dict.fromkeys(COMMAND_MODULES.values()):
        if wanted is None or module == wanted:
            importlib.import_module(f"ramcli.cli.{module}")
    return app


def main() -> None:
    """Entry point: run the Typer app, built for the one command the arguments name."""
    first = sys.argv[1:2]
    load_commands(first)
    _only_the_named_command(app, first)
    if first != ["search"]:
        app()
        return
    try:
        app()  # always ends in SystemExit (click's standalone mode)
    except SystemExit as done:
        _end_without_teardown(done.code)
    _end_without_teardown(0)


def _end_without_teardown(code: object) -> NoReturn:
    """Flush the output and end the process now, skipping the interpreter's teardown.

    Why: after an open-set search the process holds two onnxruntime sessions and the CLIP
    tokenizer's ~150,000 small objects. Tearing them down costs 0.08-0.1 s of a 1 s command, and
    the OS takes the memory back anyway. Only for `search`: its index is closed by then (the
    query cache is written outside any transaction), it starts no workers, and a viewer opened
    with --open is a separate process.
    """
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"), as the interpreter would print it
        print(code, file=sys.stderr)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader that left (`| head`), a closed stream
            stream.flush()
    os._exit(status)


def _only_the_named_command(typer_app: typer.Typer, first: list[str]) -> None:
    """Keep only the command (or command group) that ``first`` names, when it names one.

    Why: Typer turns every command's signature into a click command at each start, 0.07 s for
    all of ramcli's, and a run uses one of them (a search answers in 0.3 s). Anything else (no
    arguments, a top-level option, a misspelt command) keeps the whole app, so the listing and
    the did-you-mean suggestions stay complete. The root callback keeps a one-command app a group.
    """
    if not first or first[0].startswith("-"):
        return
    from typer.main import get_command_name

    name = first[0]
    commands = [c for c in typer_app.registered_commands
                if (c.name or get_command_name(c.callback.__name__ if c.callback else "")) == name]
    groups = [g for g in typer_app.registered_groups if g.name == name]
    if commands or groups:
        typer_app.registered_commands = commands
        typer_app.registered_groups = groups
