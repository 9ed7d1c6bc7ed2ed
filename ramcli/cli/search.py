"""`ramcli search`: tag names or any text, ranked; a table, `--json` lines or bare `--paths`.

On the start-up path of the quickest command: nothing here imports numpy or Rich before it is
needed (a tag-only `--json` search needs neither; tests/test_search.py checks).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ramcli.cli import options as o
from ramcli.cli import render
from ramcli.cli.app import app
from ramcli.errors import RamcliError, UsageError


@app.command()
def search(
    query: Annotated[str | None, typer.Argument(help="What you remember: tag names or any description.")] = None,
    under: Annotated[list[Path] | None, typer.Option("--in", help="Only photos under this folder.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many results.")] = 20,
    min_score: Annotated[float | None, typer.Option("--min-score", help="Drop results scoring below this.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Taken on or after DATE (YYYY-MM-DD).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Taken on or before DATE (YYYY-MM-DD).")] = None,
    tags: Annotated[list[str] | None, typer.Option("--tag", help="Must carry this tag (repeatable).")] = None,
    not_tags: Annotated[list[str] | None, typer.Option("--not-tag", help="Must not carry this tag.")] = None,
    like: Annotated[Path | None, typer.Option(
        "--like", help="Photos and video moments like this photo, video, or a video's moment (clip.mp4@83).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Which model's tags (default: the "
                                                                    "one that tagged most photos).")] = None,
    index: o.IndexOpt = None,
    json_out: o.JsonOpt = False,
    paths_only: Annotated[bool, typer.Option("--paths", help="Bare paths, one per line, for piping.",
                                             rich_help_panel=o.OUTPUT)] = False,
    null: Annotated[bool, typer.Option("-0", help="With --paths: separate with NUL (for xargs -0).",
                                       rich_help_panel=o.OUTPUT)] = False,
    html: Annotated[Path | None, typer.Option(
        "--html", metavar="FILE", help="Also write the results as a self-contained contact sheet (thumbnails "
                                       "inlined): one file to share.", rich_help_panel=o.OUTPUT)] = None,
    open_first: Annotated[bool, typer.Option("--open", help="Open the best result in the default viewer.",
                                             rich_help_panel=o.OUTPUT)] = False,
) -> None:
    """Find photos by what is in them: tag names, or any text (open-set).

    Example: `ramcli search "red bicycle" --since 2023-01-01`  or  `ramcli search dog --paths -0 | xargs -0 ls -l`

    A video hit says at which moment it matches best (`at 00:01:23`; `--json`: "at", in seconds).
    """
    from ramcli.config import index_path
    from ramcli.index import open_index
    from ramcli.search.ranking import SearchOptions, check_query, like_embedding, open_searcher

    with render.errors():
        check_query(query, like)
    for value in (since, until):
        if value and not _is_date(value):
            render.fail(UsageError(f"{value!r} is not a date", hint="use YYYY-MM-DD"))
    opts = SearchOptions(limit=limit, min_score=min_score, under=tuple(under or ()), since=since, until=until,
                         tags=tuple(tags or ()), not_tags=tuple(not_tags or ()))
    with render.errors():
        path = index or index_path()
        if not path.is_file():
            raise RamcliError("there is no index yet", path=path, hint="run `ramcli tag ~/Photos` first")
        ix = open_index(path)
        try:
            searcher = open_searcher(ix, model)
            hits = searcher.like(like_embedding(searcher, like), opts) if like is not None else \
                searcher.search(query or "", opts)
            if html is not None:
                from ramcli.web.sheet import contact_sheet

                title = f"like {like}" if like is not None else str(query)
                html.write_text(contact_sheet(ix, searcher.model, hits, title), encoding="utf-8")
                render.say(f"contact sheet: {html}")
        finally:
            ix.close()
    if json_out:
        for rank, hit in enumerate(hits, 1):
            render.emit_json(hit.as_dict(rank))
    elif paths_only:
        sys.stdout.write("".join(h.path + ("\0" if null else "\n") for h in hits))
    else:
        table = render.table(title=f"{len(hits)} photos", title_justify="left")
        for col in ("#", "score", "via", "path", "tags"):
            table.add_column(col, overflow="fold")
        for rank, hit in enumerate(hits, 1):
            where = render.escape(hit.path) + (f" [bold]{hit.moment}[/]" if hit.at is not None else "")
            table.add_row(str(rank), f"{hit.score:.3f}", hit.via, where, render.escape(", ".join(hit.tags)))
        render.out().print(table)
    if open_first and hits:
        _open(hits[0].path)
    if not hits:
        raise typer.Exit(1)


def _is_date(text: str) -> bool:
    from datetime import date

    try:
        date.fromisoformat(text[:10])
    except ValueError:
        return False
    return True


def _open(path: str) -> None:
    import subprocess

    opener = "open" if sys.platform == "darwin" else "xdg-open"
    try:
        subprocess.Popen([opener, path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        render.err().print(f"[yellow]cannot open it: no {opener} here[/]")
