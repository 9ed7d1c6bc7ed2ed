"""The `ramcli` command line: parse, call the library, render. No logic lives here.

People get Rich output on stderr/stdout; programs get `--json` (JSON lines for per-photo
results, one JSON document otherwise). Expected failures are one line and a non-zero exit
code: 1 when some file failed or a command could not do its job, 2 for bad usage, 130 on Ctrl-C.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__
from .errors import RamcliError, UsageError

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

app = typer.Typer(
    name="ramcli", no_args_is_help=True, add_completion=False, rich_markup_mode="markdown",
    help="Tag a photo library with RAM++ (Recognize Anything) and search it by what is in the photos.\n\n"
         "Example: `ramcli tag ~/Photos --dry-run`",
)
models_app = typer.Typer(no_args_is_help=True, help="Download, import, convert, verify and remove models.\n\n"
                                                     "Example: `ramcli models list`")
app.add_typer(models_app, name="models")

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _fail(error: RamcliError) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(str(error))}")
    raise typer.Exit(error.exit_code)


def _say(msg: str) -> None:
    err.print(f"[dim]{escape(msg)}[/]")


def _emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except RamcliError as e:
        _fail(e)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None


def _version(value: bool) -> None:
    if value:
        out.print(f"ramcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    pass


# ---------------------------------------------------------------------------------------- tag


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=err, transient=True,
                    disable=not err.is_terminal)


@app.command()
def tag(
    paths: Annotated[list[Path], typer.Argument(help="Photos or folders (searched recursively).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show tags only; write nothing anywhere.")] = False,
    json_out: JsonOpt = False,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model to use (default: RAM++).")] = None,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", min=0.0, max=1.0,
        help="Use this threshold for every tag instead of the per-tag ones; 0 lists all tags.")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1, help="Keep at most K tags per photo.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Photos per inference batch.")] = 4,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA if it loads, else CPU), cuda or cpu.")] = "auto",
    threads: Annotated[int, typer.Option("--threads", min=0, help="CPU threads (0: all cores).")] = 0,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Skip files/folders matching GLOB.")] = None,
    no_download: Annotated[bool, typer.Option("--no-download", help="Never download a missing model.")] = False,
) -> None:
    """Tag photos with RAM++.

    Example: `ramcli tag ~/Photos/2024 --dry-run --json --top-k 10`

    With no model installed, the default one is downloaded and converted first.
    """
    from .engine import EngineOptions
    from .pipeline import open_tagger, resolve_model, tag_photos
    from .scan import ScanProblem, iter_photos
    from .tagging import Selection

    if device not in {"auto", "cpu", "cuda"}:
        _fail(UsageError(f"--device must be auto, cpu or cuda, not {device!r}"))
    if not dry_run:
        _fail(UsageError("writing tags into photos and the index is not available in this version",
                         hint="add --dry-run to see the tags"))
    failed = tagged = 0
    with _errors():
        installed = resolve_model(model, download=not no_download, report=_say)
        tagger = open_tagger(installed, EngineOptions(device=device, threads=threads))
        _say(f"model {installed.name} on {tagger.engine.provider}")
        photos: list[Path] = []
        for item in iter_photos(paths, exclude or ()):
            if isinstance(item, ScanProblem):
                failed += 1
                _report_error(str(RamcliError(item.reason, path=item.path)), item.path, installed.name, json_out)
            else:
                photos.append(item)
        selection = Selection(threshold=threshold, top_k=top_k)
        start = time.perf_counter()
        with _progress() as bar:
            task = bar.add_task("tagging", total=len(photos), rate="")
            for n, result in enumerate(tag_photos(photos, tagger, selection, batch_size=batch_size), 1):
                bar.update(task, advance=1, rate=f"{n / max(time.perf_counter() - start, 1e-9):.2f} photos/s")
                if result.error is not None:
                    failed += 1
                    _report_error(result.error, result.path, installed.name, json_out)
                    continue
                tagged += 1
                if json_out:
                    _emit_json(result.as_dict())
                else:
                    names = ", ".join(f"{escape(t.name)} [dim]{t.score:.2f}[/]" for t in result.tags)
                    names = names or "[dim](none)[/]"
                    out.print(f"[bold]{escape(str(result.path))}[/]: {names}")
        if not json_out:
            _say(f"{tagged} tagged, {failed} failed, {time.perf_counter() - start:.1f} s")
    if failed:
        raise typer.Exit(1)


def _report_error(message: str, path: Path, model: str, json_out: bool) -> None:
    err.print(f"[red]error:[/] {escape(message)}")
    if json_out:
        _emit_json({"path": str(path), "model": model, "error": message})


# ------------------------------------------------------------------------------------- models


@models_app.command("list")
def models_list(json_out: JsonOpt = False) -> None:
    """Known and installed models.

    Example: `ramcli models list --json`
    """
    from .catalog import list_models

    rows = list_models()
    if json_out:
        _emit_json(rows)
        return
    table = Table(title="models", title_justify="left")
    for col in ("name", "family", "installed", "size", "what it does"):
        table.add_column(col)
    for r in rows:
        name = r["name"] + (" (default)" if r.get("default") else "")
        size = r.get("installed_size") or r.get("download_size") or ""
        table.add_row(name, r["family"], "yes" if r["installed"] else "no", size, r.get("title", ""))
    out.print(table)


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="Model name from `ramcli models list`.")],
    json_out: JsonOpt = False,
) -> None:
    """Download a model (resumable, checksummed) and convert it to ONNX.

    Example: `ramcli models pull ram_plus_swin_large_14m`
    """
    from .download import pull

    with _errors():
        m = pull(name, report=_say)
    _done(m, json_out)


@models_app.command("import")
def models_import(
    checkpoint: Annotated[Path, typer.Argument(help="A local .pth checkpoint in the official format.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Name to install it under.")],
    tag_list: Annotated[Path | None, typer.Option("--tag-list", help="Tag names, one per line.")] = None,
    tag_list_zh: Annotated[Path | None, typer.Option("--tag-list-zh", help="Chinese tag names.")] = None,
    thresholds: Annotated[Path | None, typer.Option("--thresholds", help="Per-tag thresholds.")] = None,
    image_size: Annotated[int | None, typer.Option(
        "--image-size", help="Input size when the checkpoint does not say (default 384).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Convert a checkpoint you already have (air-gapped machines, fine-tunes).

    Example: `ramcli models import ram_plus_swin_large_14m.pth --name ram_plus_swin_large_14m`

    For a known model name the official tag files are fetched unless given.
    """
    from .catalog import import_local

    with _errors():
        m = import_local(checkpoint, name, tag_list=tag_list, tag_list_zh=tag_list_zh, thresholds=thresholds,
                         image_size=image_size, report=_say)
    _done(m, json_out)


def _done(m: Any, json_out: bool) -> None:
    parity = m.meta.get("parity", {})
    if json_out:
        _emit_json({"name": m.name, "path": str(m.path), "family": m.family, "num_tags": m.num_tags,
                    "parity": parity})
    else:
        out.print(f"installed [bold]{m.name}[/] ({m.family}, {m.num_tags} tags) in {m.path}; "
                  f"ONNX vs PyTorch max |logit difference| {parity.get('logits_max_abs', float('nan')):.2e}")


@models_app.command("verify")
def models_verify(
    name: Annotated[str, typer.Argument(help="An installed model.")],
    json_out: JsonOpt = False,
) -> None:
    """Run PyTorch and the ONNX engine on fixed inputs; print the max abs differences.

    Example: `ramcli models verify ram_plus_swin_large_14m`
    """
    from .convert.export import verify

    with _errors():
        result = verify(name)
    if json_out:
        _emit_json(result)
    else:
        out.print(f"{name}: max |Δ image embeds| {result['image_embeds_max_abs']:.2e}, "
                  f"max |Δ logits| {result['logits_max_abs']:.2e}, max |Δ scores| {result['scores_max_abs']:.2e} "
                  f"on {result['images']} images: {'[green]ok[/]' if result['ok'] else '[red]MISMATCH[/]'}")
    if not result["ok"]:
        raise typer.Exit(1)


@models_app.command("rm")
def models_rm(name: Annotated[str, typer.Argument(help="An installed model.")], json_out: JsonOpt = False) -> None:
    """Remove a converted model from the cache (downloaded weights stay in the hub cache).

    Example: `ramcli models rm ram_swin_large_14m`
    """
    from .store import remove

    with _errors():
        path = remove(name)
    if json_out:
        _emit_json({"removed": name, "path": str(path)})
    else:
        out.print(f"removed {name} ({path})")


# ------------------------------------------------------------------------------------- doctor


@app.command()
def doctor(json_out: JsonOpt = False) -> None:
    """Show versions, execution providers (what really loads), models, cache and index paths.

    Example: `ramcli doctor --json`
    """
    from .catalog import doctor_report

    with _errors():
        report = doctor_report()
    if json_out:
        _emit_json(report)
        return
    table = Table(show_header=False, box=None)
    for key, value in report.items():
        table.add_row(f"[bold]{key}[/]", escape(", ".join(map(str, value)) if isinstance(value, list) else str(value)))
    out.print(table)


def main() -> None:
    """Entry point: run the Typer app."""
    app()
