"""`ramcli config show` and `ramcli config path`: the settings file and what each setting is now."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ramcli.cli import options as o
from ramcli.cli import render
from ramcli.cli.app import config_app


@config_app.command("show")
def config_show(
    lang: o.LangOpt = None,  # type: ignore[assignment]  # None: not given, as every option here
    sidecar_name: o.SidecarNameOpt = None,  # type: ignore[assignment]
    hierarchy_root: o.HierarchyRootOpt = None,  # type: ignore[assignment]
    precision: o.PrecisionOpt = None,  # type: ignore[assignment]
    decode: o.DecodeOpt = None,  # type: ignore[assignment]
    backend: o.BackendOpt = None,  # type: ignore[assignment]
    device: o.DeviceOpt = None,  # type: ignore[assignment]
    threads: o.ThreadsOpt = None,  # type: ignore[assignment]
    batch_size: o.BatchSizeOpt = None,  # type: ignore[assignment]
    index: Annotated[Path | None, typer.Option("--index", help="Index file.")] = None,  # no envvar: a source
    json_out: o.JsonOpt = False,
) -> None:
    """Each setting, its value and where it comes from: command line > environment > config file > default.

    Example: `ramcli config show --json`   (options given here show what they would override)
    """
    from ramcli.settings import resolve

    given: dict[str, object] = {
        "lang": lang, "sidecar_name": sidecar_name, "hierarchy_root": hierarchy_root, "precision": precision,
        "decode": decode, "backend": backend, "device": device, "threads": threads, "batch_size": batch_size,
        "index": index}
    with render.errors():
        values = resolve(given)
    rows = {k: v.as_dict() for k, v in values.items()}
    if json_out:
        render.emit_json({k: {"value": r["value"], "source": r["source"]} for k, r in rows.items()})
        return
    table = render.table(show_header=True, box=None)
    for col in ("setting", "value", "source"):
        table.add_column(col, overflow="fold")
    for k, r in rows.items():
        value = str(r["value"]) if r["value"] is not None else _default_index() if k == "index" else ""
        table.add_row(k, render.escape(value), render.escape(str(r["source"])))
    render.out().print(table)


@config_app.command("path")
def config_path() -> None:
    """Where the config file is read from (`RAMCLI_CONFIG` or the platform's config folder); it may not exist yet.

    Example: `ramcli config path`
    """
    from ramcli.settings import config_path as path

    typer.echo(str(path()))


def _default_index() -> str:
    """Where the index is when no setting names one (shown, so that `config show` answers "which index?")."""
    from ramcli.config import data_dir

    return str(data_dir() / "index.db")
