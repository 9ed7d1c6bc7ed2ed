"""`ramcli tag` (and its `--dry-run`) and `ramcli untag`: a library call, then the event renderer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ramcli.cli import options as o
from ramcli.cli import render
from ramcli.cli.app import app
from ramcli.settings import Backend, Decode, Device, Lang, Precision, SidecarName


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
    sidecar_name: o.SidecarNameOpt = SidecarName.auto,
    hierarchy_root: o.HierarchyRootOpt = "ramcli",
    lang: o.LangOpt = Lang.en,
    touch: Annotated[bool, typer.Option("--touch", help="Let writing update the photos' mtime.",
                                        rich_help_panel=o.WHAT)] = False,
    store_tokens: Annotated[bool, typer.Option(
        "--store-tokens/--no-store-tokens", help="Keep the 145x512 image tokens (add-tag and search re-rank "
                                                 "use them; ~150 KB per photo).", rich_help_panel=o.WHAT)] = True,
    retry_errors: Annotated[bool, typer.Option(
        "--retry-errors", help="Read again the files that could not be read before, even if they have not "
                               "changed since (they are otherwise reported from the index).",
        rich_help_panel=o.WHAT)] = False,
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
    every: Annotated[float, typer.Option(
        "--every", min=0.1, metavar="SECONDS", rich_help_panel=o.WHAT,
        help="Videos: at most one still (a keyframe) per this many seconds.")] = 2.0,
    frames: Annotated[int, typer.Option(
        "--frames", min=1, metavar="K", rich_help_panel=o.WHAT,
        help="Videos: at most K stills per video, spread over its whole length.")] = 12,
    exclude_videos: Annotated[bool, typer.Option("--exclude-videos", help="Leave videos out.",
                                                 rich_help_panel=o.WHAT)] = False,
    only_videos: Annotated[bool, typer.Option("--only-videos", help="Take only videos.",
                                              rich_help_panel=o.WHAT)] = False,
    ray: Annotated[bool, typer.Option(
        "--ray", rich_help_panel=o.SPEED,
        help="Decode and infer with Ray: on this machine, or on the cluster --ray-address names. Needs "
             "`pip install 'ramcli[ray]'`.")] = False,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", metavar="ADDRESS", rich_help_panel=o.SPEED,
        help="The Ray cluster to run on (`auto`, `ray://head:10001`); implies --ray.")] = None,
    shards: Annotated[Path | None, typer.Option(
        "--shards", metavar="DIR", rich_help_panel=o.SPEED,
        help="With --ray: where workers write results (storage every node reaches; default: beside the "
             "index).")] = None,
    batch_size: o.BatchSizeOpt = 4,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Decoding processes (0: one per core).",
                                         rich_help_panel=o.SPEED)] = 0,
    device: o.DeviceOpt = Device.auto,
    threads: o.ThreadsOpt = 0,
    precision: o.PrecisionOpt = Precision.auto,
    decode: o.DecodeOpt = Decode.auto,
    backend: o.BackendOpt = Backend.onnxruntime,
    screen: o.ScreenOpt = 0,
    json_out: o.JsonOpt = False,
    index: o.IndexOpt = None,
    verbose: o.VerboseOpt = False,
) -> None:
    """Tag photos: keywords (Tag2Text: and a caption) into each photo or its XMP sidecar, and into the index.

    Example: `ramcli tag ~/Photos`  (again later: only new or changed photos are looked at)

    Photos, camera RAW (embedded preview; keywords in `IMG_0001.xmp`) and videos (keyframes: one per
    `--every` seconds, at most `--frames`; keywords in `clip.mp4.xmp`).

    `--dry-run` shows the tags and writes nothing; with no model installed, the default one is
    downloaded and converted first. `find ~/Photos -newer last-run | ramcli tag -` tags a list.
    """
    from ramcli import Library
    from ramcli.metadata import WriteOptions
    from ramcli.pipeline.prepare import Sampling
    from ramcli.pipeline.run import TagOptions
    from ramcli.runtime.engine import EngineOptions
    from ramcli.runtime.tagging import Selection

    if exclude_videos and only_videos:
        from ramcli.errors import UsageError

        render.fail(UsageError("--exclude-videos and --only-videos exclude each other", hint="give one of them"))
    guide = [t.strip() for t in caption_tags.split(",") if t.strip()] if caption_tags else None
    opts = TagOptions(dry_run=dry_run, write=not no_write, store_tokens=store_tokens, prune=prune,
                      batch_size=batch_size, workers=workers, exclude=tuple(exclude or ()),
                      selection=Selection(threshold=threshold, top_k=top_k),
                      write_options=WriteOptions(sidecar=sidecar, sidecar_name=sidecar_name.value, touch=touch,
                                                 hierarchical_root=hierarchy_root or None),
                      lang=lang.value, overwrite_description=overwrite_description, retry_errors=retry_errors,
                      sampling=Sampling(every, frames),
                      media="photos" if exclude_videos else "videos" if only_videos else "all")
    with render.errors():
        on_ray = None
        if ray or ray_address:
            from ramcli.pipeline.distributed import RayOptions

            on_ray = RayOptions(address=ray_address, shards=shards)
        lib = Library(index, model=model, download=not no_download, report=render.say,
                      engine=EngineOptions(device=device.value, threads=threads, precision=precision.value,
                                           decode=decode.value, screen=screen, backend=backend.value))
        run = lib.tag(o.path_list(paths, files_from), opts, caption_tags=guide, ray=on_ray)  # says the model
        with render.interrupted("what was done is saved; run the same command to go on"), \
                render.progress("tagging") as bar:
            run.on_total = bar.total
            counts = render.render_events(run, json_out=json_out, verbose=verbose, bar=bar)
    if not dry_run:
        order = ["tagged", "unchanged", "updated", "moved", "copied", "pruned", "skipped", "error"]
        summary = ", ".join(f"{counts.get(k, 0)} {k if k != 'error' else 'errors'}"
                            + (f" ({n} video{'s' if n > 1 else ''})" if (n := counts.get(f"{k}:video", 0)) else "")
                            for k in order)
        render.say(f"{summary} in {bar.elapsed():.1f} s (index {lib.index_path})")
    elif not json_out:
        videos = counts.get("tagged:video", 0)
        also = f" ({videos} video{'s' if videos > 1 else ''})" if videos else ""
        render.say(f"{counts['tagged']} tagged{also}, {counts['error']} failed, {bar.elapsed():.1f} s "
                   "(dry run: nothing written)")
    if counts["error"]:
        raise typer.Exit(1)


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

    A file nobody changed since ramcli wrote it gets its original bytes back ("restored"); one changed
    since gets ramcli's keywords and caption removed ("untagged"). Each file's own record of what ramcli
    wrote is read, so this works with a lost or a different index too.

    Example: `ramcli untag ~/Photos/2019`
    """
    from ramcli import Library

    with render.errors():
        run = Library(index).untag(o.path_list(paths, files_from), write=not no_write)
        with render.interrupted("what was done is saved; run the same command to go on"), \
                render.progress("untagging", total=run.total) as bar:
            counts = render.render_events(run, json_out=json_out, bar=bar)
    failed = counts["error"]
    if not json_out:
        render.say(f"{counts['restored']} restored byte for byte, {counts['untagged']} untagged "
                   f"(ramcli's keywords removed; changed since ramcli wrote them), {failed} errors")
    if failed:
        raise typer.Exit(1)
