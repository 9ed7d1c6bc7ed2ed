"""`ramcli tag` (and its `--dry-run`) and `ramcli untag`: a library call, then the event renderer."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from ramcli.cli import options as o
from ramcli.cli import render
from ramcli.cli.app import app
from ramcli.settings import Decode, Device, Lang, Precision, SidecarName


@app.command()
def tag(
    paths: Annotated[list[Path] | None, typer.Argument(
        metavar="PATHS...",
        help="Photos or folders (searched recursively); `-`: read them from standard input.")] = None,
    files_from: o.FilesFromOpt = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Skip files/folders matching GLOB.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show tags only; write nothing anywhere.",
                                          rich_help_panel=o.WHAT)] = False,
    no_write: o.NoWriteOpt = False,
    sidecar: Annotated[bool, typer.Option("--sidecar", help="Write XMP sidecars even where tags could be "
                                                            "embedded.", rich_help_panel=o.WHAT)] = False,
    sidecar_name: o.SidecarNameOpt = SidecarName.ext,
    hierarchy_root: o.HierarchyRootOpt = "ramcli",
    lang: o.LangOpt = Lang.en,
    touch: Annotated[bool, typer.Option("--touch", help="Let writing update the photos' mtime.",
                                        rich_help_panel=o.WHAT)] = False,
    store_tokens: Annotated[bool, typer.Option(
        "--store-tokens/--no-store-tokens", help="Keep the 145x512 image tokens (add-tag and search re-rank "
                                                 "use them; ~150 KB per photo).", rich_help_panel=o.WHAT)] = True,
    prune: Annotated[bool, typer.Option("--prune/--no-prune", help="Forget indexed photos under the given "
                                                                   "folders that no longer exist.",
                                        rich_help_panel=o.WHAT)] = True,
    caption_tags: Annotated[str | None, typer.Option(
        "--caption-tags", help="Tag2Text: guide every caption with these tags (comma-separated) instead "
                               "of the predicted ones.", rich_help_panel=o.WHAT)] = None,
    overwrite_description: Annotated[bool, typer.Option(
        "--overwrite-description", help="Tag2Text: replace a description you wrote with the caption.",
        rich_help_panel=o.WHAT)] = False,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model to use (default: RAM++).",
                                              rich_help_panel=o.MODEL)] = None,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", min=0.0, max=1.0, rich_help_panel=o.MODEL,
        help="Use this threshold for every tag instead of the per-tag ones; 0 lists all tags.")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1, help="Keep at most K tags per photo.",
                                              rich_help_panel=o.MODEL)] = None,
    no_download: Annotated[bool, typer.Option("--no-download", help="Never download a missing model.",
                                              rich_help_panel=o.MODEL)] = False,
    batch_size: o.BatchSizeOpt = 4,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Decoding processes (0: one per core).",
                                         rich_help_panel=o.SPEED)] = 0,
    device: o.DeviceOpt = Device.auto,
    threads: o.ThreadsOpt = 0,
    precision: o.PrecisionOpt = Precision.fp32,
    decode: o.DecodeOpt = Decode.auto,
    json_out: o.JsonOpt = False,
    index: o.IndexOpt = None,
    verbose: o.VerboseOpt = False,
) -> None:
    """Tag photos: keywords (Tag2Text: and a caption) into each photo or its XMP sidecar, and into the index.

    Example: `ramcli tag ~/Photos`  (again later: only new or changed photos are looked at)

    `--dry-run` shows the tags and writes nothing; with no model installed, the default one is
    downloaded and converted first. `find ~/Photos -newer last-run | ramcli tag -` tags a list.
    """
    from ramcli.config import index_path
    from ramcli.pipeline.photos import open_tagger, resolve_model
    from ramcli.runtime.engine import EngineOptions
    from ramcli.runtime.tagging import Selection

    guide = [t.strip() for t in caption_tags.split(",") if t.strip()] if caption_tags else None
    selection = Selection(threshold=threshold, top_k=top_k)
    with render.errors():
        roots = o.path_list(paths, files_from)
        installed = resolve_model(model, download=not no_download, report=render.say)
        engine = EngineOptions(device=device.value, threads=threads, precision=precision.value, decode=decode.value)
        tagger = open_tagger(installed, engine, index or index_path(), guide, batch_size)
        render.say(f"model {installed.name} on {tagger.engine.provider}"
                   + (f" ({precision.value})" if precision is not Precision.fp32 else ""))
        if dry_run:
            failed = _dry_run(roots, tagger, selection, batch_size, exclude or [], json_out, lang.value)
        else:
            from ramcli.metadata import WriteOptions

            wopts = WriteOptions(sidecar=sidecar, sidecar_name=sidecar_name.value, touch=touch,
                                 hierarchical_root=hierarchy_root or None)
            opts = _library_options(no_write, store_tokens, prune, batch_size, workers, exclude, selection, wopts)
            opts = replace(opts, lang=lang.value, overwrite_description=overwrite_description)
            failed = _library(roots, tagger, index, opts, json_out, verbose)
    if failed:
        raise typer.Exit(1)


def _library_options(no_write: bool, store_tokens: bool, prune: bool, batch_size: int, workers: int,
                     exclude: list[str] | None, selection: Any, wopts: Any) -> Any:
    from ramcli.pipeline.library import LibraryOptions

    return LibraryOptions(write=not no_write, store_tokens=store_tokens, prune=prune, batch_size=batch_size,
                          workers=workers, exclude=tuple(exclude or ()), selection=selection, write_options=wopts)


def _library(paths: list[Path], tagger: Any, index_file: Path | None, opts: Any, json_out: bool,
             verbose: bool) -> int:
    """The tag run: index + files, a progress bar, one line per problem, a summary."""
    from ramcli.config import index_path
    from ramcli.index import open_index
    from ramcli.pipeline.library import LibraryRun

    ix = open_index(index_file or index_path(), writer=True)
    try:
        run = LibraryRun(paths, tagger, ix, opts)
        with render.interrupted("what was done is saved; run the same command to go on"), \
                render.progress("tagging") as bar:
            run.on_total = bar.total
            render.render_events(run.events(), json_out=json_out, verbose=verbose, bar=bar)
    finally:
        ix.close()
    counts = run.counts
    order = ["tagged", "unchanged", "updated", "moved", "copied", "pruned", "skipped", "error"]
    summary = ", ".join(f"{counts.get(k, 0)} {k if k != 'error' else 'errors'}" for k in order)
    render.say(f"{summary} in {bar.elapsed():.1f} s (index {ix.path})")
    return counts.get("error", 0)


def _dry_run(paths: list[Path], tagger: Any, selection: Any, batch_size: int, exclude: list[str],
             json_out: bool, lang: str) -> int:
    """Tags with their scores, nothing written: the scan's problems, then one event per photo."""
    from itertools import chain

    from ramcli.pipeline.photos import tag_photos
    from ramcli.pipeline.scan import ScanProblem, iter_photos

    model = tagger.engine.model.name
    problems, photos = [], []
    for item in iter_photos(paths, exclude):
        if isinstance(item, ScanProblem):
            problems.append(render.problem_event(item.path, item.reason, item.skipped, model))
        else:
            photos.append(item)
    results = (render.result_event(r, lang) for r in tag_photos(photos, tagger, selection, batch_size=batch_size))
    with render.progress("tagging", total=len(problems) + len(photos)) as bar:
        counts = render.render_events(chain(problems, results), json_out=json_out, bar=bar)
    if not json_out:
        render.say(f"{counts['tagged']} tagged, {counts['error']} failed, {bar.elapsed():.1f} s "
                   "(dry run: nothing written)")
    return counts["error"]


@app.command()
def untag(
    paths: Annotated[list[Path] | None, typer.Argument(
        metavar="PATHS...", help="Photos or folders to untag; `-`: read them from standard input.")] = None,
    files_from: o.FilesFromOpt = None,
    no_write: o.NoWriteOpt = False,
    index: o.IndexOpt = None,
    json_out: o.JsonOpt = False,
) -> None:
    """Remove exactly the keywords ramcli wrote (your own stay), and forget the photos in the index.

    Example: `ramcli untag ~/Photos/2019`
    """
    from ramcli.config import index_path
    from ramcli.index import open_index
    from ramcli.metadata import WriteOptions
    from ramcli.pipeline.library import untag as run_untag

    with render.errors():
        roots = o.path_list(paths, files_from)
        ix = open_index(index or index_path(), writer=True)
        try:
            with render.progress("untagging") as bar:
                counts = render.render_events(run_untag(roots, ix, WriteOptions(), write=not no_write),
                                              json_out=json_out, bar=bar)
        finally:
            ix.close()
    failed = counts["error"]
    if not json_out:
        render.say(f"{counts.total() - failed} untagged, {failed} errors")
    if failed:
        raise typer.Exit(1)
