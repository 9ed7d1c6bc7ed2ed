"""`ramcli dupes`: exact and near-duplicate photos, each group with a suggested keeper. Reports only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ramcli.cli import options as o
from ramcli.cli import render
from ramcli.cli.app import app


@app.command()
def dupes(
    folders: Annotated[list[Path] | None, typer.Argument(
        metavar="[FOLDERS]...", help="Only photos under these folders (default: the whole index).")] = None,
    near: Annotated[float, typer.Option(
        "--near", min=0.0, max=1.0, help="Near duplicates: distinct images whose CLS embeddings have at least "
                                         "this cosine similarity (bursts, resized or re-encoded copies).")] = 0.95,
    exact_only: Annotated[bool, typer.Option("--exact", help="Only exact duplicates (the same image data).")] = False,
    max_group: Annotated[int, typer.Option(
        "--max-group", min=2, help="Near groups are joined transitively up to this many photos.")] = 50,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Whose embeddings to compare (default: "
                                                                    "the model that tagged most photos).")] = None,
    index: o.IndexOpt = None,
    json_out: o.JsonOpt = False,
) -> None:
    """Find duplicate photos: exact copies (same image data, whatever the metadata or name) and near
    duplicates (bursts, resized or re-encoded copies), each group with a suggested keeper and why.

    Example: `ramcli dupes ~/Photos --near 0.97`  or  `ramcli dupes --json | jq -r '.paths[1:][]'`

    The keeper is the largest resolution, then the earliest capture date, then one with keywords.
    Nothing is deleted or moved: this only reports. Works from the index (run `ramcli tag` first).
    """
    from ramcli import Library

    with render.errors(), render.progress("comparing", unit="blocks") as bar:
        def progress(done: int, total: int) -> None:
            bar.total(total)
            while bar.done < done:
                bar.tick()

        report = Library(index).dupes(folders or [], near=None if exact_only else near, model=model,
                                      max_group=max_group, progress=progress)
    for g in report.groups:
        if json_out:
            render.emit_json(g.as_dict())
            continue
        how = f"{g.similarity:.3f}" if g.similarity is not None else "same image data"
        render.out().print(f"[bold]{g.kind}[/] ({len(g.paths)} photos, {how}) keep "
                           f"[green]{render.escape(g.keeper)}[/] [dim]({render.escape(g.reason)})[/]")
        for p in g.paths[1:]:
            render.out().print(f"    {render.escape(p)}")
    exact = sum(g.kind == "exact" for g in report.groups)
    near_n = len(report.groups) - exact
    if report.gone:
        render.say(f"{len(report.gone)} indexed photos are gone from the disk and were left out; "
                   "`ramcli tag` on their folder forgets them")
    compared = f", {report.compared} images compared by {report.model} embeddings" if report.compared else ""
    render.say(f"{exact} exact and {near_n} near-duplicate groups among {report.photos} photos{compared} "
               f"in {bar.elapsed():.1f} s (nothing was changed)")
