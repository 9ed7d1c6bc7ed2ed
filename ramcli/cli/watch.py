"""`ramcli watch`: keep folders tagged as photos arrive, change, move and go; one log line per batch."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ramcli.cli import options as o
from ramcli.cli import render
from ramcli.cli.app import app
from ramcli.settings import Decode, Device, Lang, Precision, SidecarName

ORDER = ["tagged", "unchanged", "updated", "moved", "copied", "pruned", "skipped", "error"]


@app.command()
def watch(
    folders: Annotated[list[Path], typer.Argument(metavar="FOLDERS...", help="Folders to keep tagged.")],
    settle: Annotated[float, typer.Option(
        "--settle", min=0.0, help="Seconds a new or changed file must stop growing before it is read.")] = 2.0,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Skip files/folders matching GLOB.")] = None,
    no_write: o.NoWriteOpt = False,
    sidecar: Annotated[bool, typer.Option("--sidecar", help="Write XMP sidecars even where tags could be "
                                                            "embedded.", rich_help_panel=o.WHAT)] = False,
    sidecar_name: o.SidecarNameOpt = SidecarName.auto,
    hierarchy_root: o.HierarchyRootOpt = "ramcli",
    lang: o.LangOpt = Lang.en,
    touch: Annotated[bool, typer.Option("--touch", help="Let writing update the photos' mtime.",
                                        rich_help_panel=o.WHAT)] = False,
    store_tokens: Annotated[bool, typer.Option(
        "--store-tokens/--no-store-tokens", help="Keep the 145x512 image tokens.", rich_help_panel=o.WHAT)] = True,
    retry_errors: Annotated[bool, typer.Option(
        "--retry-errors", help="Read again, in the first pass, files that could not be read before.",
        rich_help_panel=o.WHAT)] = False,
    prune: Annotated[bool, typer.Option("--prune/--no-prune", help="Forget indexed photos that are deleted.",
                                        rich_help_panel=o.WHAT)] = True,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model to use (default: RAM++).",
                                              rich_help_panel=o.MODEL)] = None,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", min=0.0, max=1.0, rich_help_panel=o.MODEL,
        help="Use this threshold for every tag instead of the per-tag ones.")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1, help="Keep at most K tags per photo.",
                                              rich_help_panel=o.MODEL)] = None,
    no_download: Annotated[bool, typer.Option("--no-download", help="Never download a missing model.",
                                              rich_help_panel=o.MODEL)] = False,
    batch_size: o.BatchSizeOpt = 4,
    device: o.DeviceOpt = Device.auto,
    threads: o.ThreadsOpt = 0,
    precision: o.PrecisionOpt = Precision.auto,
    decode: o.DecodeOpt = Decode.auto,
    json_out: o.JsonOpt = False,
    index: o.IndexOpt = None,
    verbose: o.VerboseOpt = False,
) -> None:
    """Keep folders tagged: new and changed photos are tagged as they arrive, moves keep their tags, deletes
    are forgotten. Starts with one incremental pass (what changed while it was not running).

    Example: `ramcli watch ~/Photos ~/Pictures/Imports`  (stop with Ctrl-C; a systemd or launchd unit in the README)

    The model stays loaded; the index is locked only while a batch is written, so `ramcli search` and
    `add-tag` work meanwhile. One line per batch; `--json`: one line per photo, as `ramcli tag --json`.
    """
    from ramcli import Library
    from ramcli.metadata import WriteOptions
    from ramcli.pipeline.run import TagOptions
    from ramcli.runtime.engine import EngineOptions
    from ramcli.runtime.tagging import Selection

    opts = TagOptions(write=not no_write, store_tokens=store_tokens, prune=prune, batch_size=batch_size,
                      exclude=tuple(exclude or ()), selection=Selection(threshold=threshold, top_k=top_k),
                      write_options=WriteOptions(sidecar=sidecar, sidecar_name=sidecar_name.value, touch=touch,
                                                 hierarchical_root=hierarchy_root or None),
                      lang=lang.value, retry_errors=retry_errors)
    stop = threading.Event()

    def on_term(_signum: int, _frame: Any) -> None:  # SIGTERM (systemd, launchd, kill) stops like Ctrl-C
        stop.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    failed = 0
    with render.errors():
        lib = Library(index, model=model, download=not no_download, report=render.say,
                      engine=EngineOptions(device=device.value, threads=threads, precision=precision.value,
                                           decode=decode.value))
        try:
            render.say(f"watching {', '.join(str(f) for f in folders)} (index {lib.index_path}); Ctrl-C stops")
            for label, run in lib.watch(folders, opts, stop=stop, settle=settle):
                started = time.perf_counter()
                with render.progress(label) as bar:
                    run.on_total = bar.total
                    counts = render.render_events(run, json_out=json_out, verbose=verbose, bar=bar)
                failed += counts["error"]
                summary = ", ".join(f"{counts[k]} {k if k != 'error' else 'errors'}" for k in ORDER if counts[k])
                render.say(f"{time.strftime('%H:%M:%S')} {label}: {summary or 'nothing to do'} "
                           f"in {time.perf_counter() - started:.1f} s")
        except KeyboardInterrupt:
            stop.set()
            render.say("stopped: what was done is saved; the next start catches up with the rest")
    if failed:
        render.say(f"{failed} photos could not be tagged (see the errors above)")
