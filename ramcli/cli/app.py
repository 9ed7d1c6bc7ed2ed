"""The Typer app and its root options: `--version`, `-q/--quiet`, `-v/--verbose`, shell completion.

The root callback also turns the user's settings (:mod:`ramcli.settings`: config file and
``RAMCLI_*`` variables) into click's ``default_map`` for the one command being run: click then
prefers the command line, and `--help` shows the configured defaults.
"""

from __future__ import annotations

import inspect
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from ramcli import __version__
from ramcli.cli import render

app = typer.Typer(
    name="ramcli", no_args_is_help=True, add_completion=True, rich_markup_mode="markdown",
    help="Tag a photo library with RAM++ (Recognize Anything) and search it by what is in the photos.\n\n"
         "Example: `ramcli tag ~/Photos --dry-run`",
)
models_app = typer.Typer(no_args_is_help=True, help="Download, import, convert, verify and remove models.\n\n"
                                                     "Example: `ramcli models list`")
tags_app = typer.Typer(no_args_is_help=True, help="Your own tags next to the built-in ones: list, show, change, "
                                                  "switch off, share.\n\nExample: `ramcli tags list --custom`")
config_app = typer.Typer(no_args_is_help=True, help="Settings you would otherwise pass every time (a TOML file).\n\n"
                                                     "Example: `ramcli config show`")

#: Commands that read the settings themselves (config show reports a bad file instead of failing).
_NO_DEFAULT_MAP = {"config"}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ramcli {__version__}")  # not Rich: --version is what scripts time ramcli's start by
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only problems and results: no progress notes "
                                                              "or summaries.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="A line per photo, not only problems.")] = False,
) -> None:
    render.verbosity.quiet, render.verbosity.verbose = quiet, verbose
    name = ctx.invoked_subcommand
    if name and name not in _NO_DEFAULT_MAP:
        from ramcli.errors import RamcliError
        from ramcli.settings import configured

        try:
            values = configured()
        except RamcliError as e:
            render.fail(e)
        if values:
            ctx.default_map = default_map(app, values)


def default_map(typer_app: typer.Typer, values: dict[str, object]) -> dict[str, Any]:
    """click's ``default_map`` for every command of ``typer_app``: each parameter named like a
    setting (``lang``, ``index``, ``batch_size``...) defaults to that setting's value."""
    from typer.main import get_command_name

    out: dict[str, Any] = {}
    for c in typer_app.registered_commands:
        if c.callback is None:
            continue
        name = c.name or get_command_name(c.callback.__name__)
        params = inspect.signature(c.callback).parameters
        mine = {k: _plain(v) for k, v in values.items() if k in params}
        if mine:
            out[name] = mine
    for g in typer_app.registered_groups:
        if g.name and g.typer_instance is not None and g.name not in _NO_DEFAULT_MAP:
            sub = default_map(g.typer_instance, values)
            if sub:
                out[g.name] = sub
    return out


def _plain(value: object) -> object:
    """A setting as the text click parses from a command line (an enum's value, a path's text)."""
    if isinstance(value, Enum):
        return value.value
    return str(value) if isinstance(value, Path) else value


app.add_typer(models_app, name="models")
app.add_typer(tags_app, name="tags")
app.add_typer(config_app, name="config")
