"""The `ramcli` command line: parse, call the library, render. No logic lives here.

People get Rich output on stderr/stdout; programs get `--json` (JSON lines for per-photo
results, one JSON document otherwise). Expected failures are one line and a non-zero exit
code: 1 when some file failed or a command could not do its job, 2 for bad usage, 130 on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from ramcli import __version__
from ramcli.errors import RamcliError, UsageError, printable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table


# Rich is imported on first use: `--json` and `--paths` runs (scripts, pipes) never pay its
# ~100 ms import, which is a third of a tag-only search.
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


def _table(**kwargs: Any) -> Table:
    from rich.table import Table

    return Table(**kwargs)

app = typer.Typer(
    name="ramcli", no_args_is_help=True, add_completion=False, rich_markup_mode="markdown",
    help="Tag a photo library with RAM++ (Recognize Anything) and search it by what is in the photos.\n\n"
         "Example: `ramcli tag ~/Photos --dry-run`",
)
models_app = typer.Typer(no_args_is_help=True, help="Download, import, convert, verify and remove models.\n\n"
                                                     "Example: `ramcli models list`")
app.add_typer(models_app, name="models")

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
DecodeOpt = Annotated[str, typer.Option(
    "--decode", help="JPEG decoding: exact, draft (the decoder scales down first: 2-5x faster, tags may "
                     "differ a little) or auto (draft on CUDA, where decoding is the bottleneck).")]
PrecisionOpt = Annotated[str, typer.Option(
    "--precision", help="fp32, int8 (faster on CPUs) or fp16 (for CUDA); tags may differ a little: `ramcli "
                        "models quantize [--to fp16]` makes them once and prints how much.")]


def _fail(error: RamcliError) -> NoReturn:
    err().print(f"[bold red]error:[/] {escape(str(error))}")
    raise typer.Exit(error.exit_code)


def _say(msg: str) -> None:
    err().print(f"[dim]{escape(msg)}[/]")


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
        err().print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ramcli {__version__}")  # not Rich: --version is what scripts time ramcli's start by
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    pass


# ---------------------------------------------------------------------------------------- tag


def _progress() -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=err(), transient=True,
                    disable=not err().is_terminal)


@app.command()
def tag(
    paths: Annotated[list[Path], typer.Argument(help="Photos or folders (searched recursively).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show tags only; write nothing anywhere.")] = False,
    no_write: Annotated[bool, typer.Option("--no-write", help="Index only; leave the photos' files alone.")] = False,
    json_out: JsonOpt = False,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model to use (default: RAM++).")] = None,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", min=0.0, max=1.0,
        help="Use this threshold for every tag instead of the per-tag ones; 0 lists all tags.")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1, help="Keep at most K tags per photo.")] = None,
    index: Annotated[Path | None, typer.Option("--index", envvar="RAMCLI_INDEX",
                                               help="Index file (default: one per user).")] = None,
    sidecar: Annotated[bool, typer.Option("--sidecar", help="Write XMP sidecars even where tags could be "
                                                            "embedded.")] = False,
    sidecar_name: Annotated[str, typer.Option("--sidecar-name", help="ext: photo.jpg.xmp (darktable, digiKam); "
                                                                     "stem: photo.xmp (Lightroom).")] = "ext",
    hierarchy_root: Annotated[str, typer.Option(
        "--hierarchy-root", help="Root of lr:hierarchicalSubject entries (ramcli|dog); empty: plain tags.")] = "ramcli",
    touch: Annotated[bool, typer.Option("--touch", help="Let writing update the photos' mtime.")] = False,
    store_tokens: Annotated[bool, typer.Option(
        "--store-tokens/--no-store-tokens", help="Keep the 145x512 image tokens (add-tag and search re-rank "
                                                 "use them; ~150 KB per photo).")] = True,
    prune: Annotated[bool, typer.Option("--prune/--no-prune", help="Forget indexed photos under the given "
                                                                   "folders that no longer exist.")] = True,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Photos per inference batch.")] = 4,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Decoding processes (0: one per core).")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA if it loads, else CPU), cuda or cpu.")] = "auto",
    threads: Annotated[int, typer.Option("--threads", min=0, help="CPU threads (0: all cores).")] = 0,
    precision: PrecisionOpt = "fp32",
    decode: DecodeOpt = "auto",
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Skip files/folders matching GLOB.")] = None,
    no_download: Annotated[bool, typer.Option("--no-download", help="Never download a missing model.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="A line per photo, not only problems.")] = False,
    lang: Annotated[str, typer.Option("--lang", help="Tag names in keywords and output: en, zh (RAM/RAM++ "
                                                     "Chinese names) or both.")] = "en",
    caption_tags: Annotated[str | None, typer.Option(
        "--caption-tags", help="Tag2Text: guide every caption with these tags (comma-separated) instead "
                               "of the predicted ones.")] = None,
    overwrite_description: Annotated[bool, typer.Option(
        "--overwrite-description", help="Tag2Text: replace a description you wrote with the caption.")] = False,
) -> None:
    """Tag photos: keywords (Tag2Text: and a caption) into each photo or its XMP sidecar, and into the index.

    Example: `ramcli tag ~/Photos`  (again later: only new or changed photos are looked at)

    `--dry-run` shows the tags and writes nothing; with no model installed, the default one is
    downloaded and converted first.
    """
    from ramcli import Library
    from ramcli.metadata import WriteOptions
    from ramcli.pipeline.run import TagOptions
    from ramcli.runtime.engine import EngineOptions
    from ramcli.runtime.tagging import Selection

    if device not in {"auto", "cpu", "cuda"}:
        _fail(UsageError(f"--device must be auto, cpu or cuda, not {device!r}"))
    if sidecar_name not in {"ext", "stem"}:
        _fail(UsageError(f"--sidecar-name must be ext or stem, not {sidecar_name!r}"))
    if lang not in {"en", "zh", "both"}:
        _fail(UsageError(f"--lang must be en, zh or both, not {lang!r}"))
    _check_engine_options(precision, decode)
    guide = [t.strip() for t in caption_tags.split(",") if t.strip()] if caption_tags else None
    opts = TagOptions(dry_run=dry_run, write=not no_write, store_tokens=store_tokens, prune=prune,
                      batch_size=batch_size, workers=workers, exclude=tuple(exclude or ()),
                      selection=Selection(threshold=threshold, top_k=top_k),
                      write_options=WriteOptions(sidecar=sidecar, sidecar_name=sidecar_name, touch=touch,
                                                 hierarchical_root=hierarchy_root or None),
                      lang=lang, overwrite_description=overwrite_description)
    with _errors():
        lib = Library(index, model=model, download=not no_download, report=_say,
                      engine=EngineOptions(device=device, threads=threads, precision=precision, decode=decode))
        tagger = lib.tagger(batch_size=batch_size, caption_tags=guide)
        _say(f"model {lib.model.name} on {tagger.engine.provider}" + (f" ({precision})" if precision != "fp32" else ""))
        run = lib.tag(paths, opts, tagger=tagger)
        failed = _render(run, json_out=json_out, verbose=verbose, what="tagging",
                         interrupted="what was done is saved; run the same command to go on")
    if not dry_run:
        _say(f"{_summary(run.counts)} in {_elapsed():.1f} s (index {lib.index_path})")
    elif not json_out:
        _say(f"{run.counts.get('tagged', 0)} tagged, {failed} failed, {_elapsed():.1f} s (dry run: nothing written)")
    if failed:
        raise typer.Exit(1)


def _check_engine_options(precision: str, decode: str) -> None:
    from ramcli.models.store import PRECISIONS

    if precision not in PRECISIONS:
        _fail(UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}"))
    if decode not in {"auto", "exact", "draft"}:
        _fail(UsageError(f"--decode must be auto, exact or draft, not {decode!r}"))


_STARTED = [0.0]


def _elapsed() -> float:
    return time.perf_counter() - _STARTED[0]


def _summary(counts: Any) -> str:
    order = ["tagged", "unchanged", "updated", "moved", "copied", "pruned", "skipped", "error"]
    return ", ".join(f"{counts.get(k, 0)} {k if k != 'error' else 'errors'}" for k in order)


def _render(run: Any, *, json_out: bool, verbose: bool, what: str, interrupted: str, unit: str = "photos") -> int:
    """The one event renderer: a progress bar over any run's events, `--json` lines, one line per
    problem, a line per photo with ``verbose`` (a dry run always shows its tags). Returns the failures."""
    from ramcli.pipeline.events import Event

    _STARTED[0] = start = time.perf_counter()
    failed = 0
    try:
        with _progress() as bar:
            task = bar.add_task(what, total=getattr(run, "total", None), rate="")
            run.on_total = lambda n: bar.update(task, total=n)

            def tick() -> None:
                n = bar.tasks[0].completed + 1
                bar.update(task, advance=1, rate=f"{n / max(time.perf_counter() - start, 1e-9):.1f} {unit}/s")

            per_event = not hasattr(run, "on_image")  # re-scoring counts images, not the photos it changes
            if not per_event:
                run.on_image = tick
            for ev in run:
                assert isinstance(ev, Event)
                if per_event:
                    tick()
                report = ev.model is not None  # a dry run's report sink
                if json_out and not (report and ev.status == "skipped"):
                    _emit_json(ev.as_dict())
                if ev.status == "error":
                    failed += 1
                    err().print(f"[red]error:[/] {escape(ev.error or '')}")
                elif ev.status == "skipped":
                    err().print(f"[yellow]skipped:[/] {escape(ev.error or '')}")
                elif report and not json_out:
                    names = ", ".join(f"{escape(name)} [dim]{t.score:.2f}[/]"
                                      for name, t in zip(ev.tags, ev.scored or [], strict=True))
                    out().print(f"[bold]{escape(printable(ev.path))}[/]: {names or '[dim](none)[/]'}")
                    if ev.caption is not None:
                        out().print(f"  [italic]{escape(ev.caption)}[/]")
                elif verbose and not json_out:
                    extra = f" (from {ev.moved_from})" if ev.moved_from else ""
                    out().print(f"{ev.status:>9} {escape(str(ev.path))}{escape(extra)}: {escape(', '.join(ev.tags))}")
                    if ev.caption is not None:
                        out().print(f"          [italic]{escape(ev.caption)}[/]")
    except KeyboardInterrupt:
        err().print(f"[yellow]interrupted: {interrupted}[/]")
        raise typer.Exit(130) from None
    return failed


@app.command()
def untag(
    paths: Annotated[list[Path], typer.Argument(help="Photos or folders to untag.")],
    index: Annotated[Path | None, typer.Option("--index", envvar="RAMCLI_INDEX", help="Index file.")] = None,
    no_write: Annotated[bool, typer.Option("--no-write", help="Forget them in the index only.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Remove exactly the keywords ramcli wrote (your own stay), and forget the photos in the index.

    Example: `ramcli untag ~/Photos/2019`
    """
    from ramcli import Library

    with _errors():
        run = Library(index).untag(paths, write=not no_write)
        failed = _render(run, json_out=json_out, verbose=False, what="untagging",
                         interrupted="what was done is saved; run the same command to go on")
    if not json_out:
        _say(f"{run.counts.get('untagged', 0)} untagged, {failed} errors")
    if failed:
        raise typer.Exit(1)


def _print_error(message: str) -> None:
    err().print(f"[red]error:[/] {escape(message)}")


def _report_error(message: str, path: Path, model: str, json_out: bool) -> None:
    _print_error(message)
    if json_out:
        _emit_json({"path": str(path), "model": model, "error": message})


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
    like: Annotated[Path | None, typer.Option("--like", help="Photos similar to this one.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Which model's tags (default: the "
                                                                    "one that tagged most photos).")] = None,
    index: Annotated[Path | None, typer.Option("--index", envvar="RAMCLI_INDEX", help="Index file.")] = None,
    json_out: JsonOpt = False,
    paths_only: Annotated[bool, typer.Option("--paths", help="Bare paths, one per line, for piping.")] = False,
    null: Annotated[bool, typer.Option("-0", help="With --paths: separate with NUL (for xargs -0).")] = False,
    open_first: Annotated[bool, typer.Option("--open", help="Open the best result in the default viewer.")] = False,
) -> None:
    """Find photos by what is in them: tag names, or any text (open-set).

    Example: `ramcli search "red bicycle" --since 2023-01-01`  or  `ramcli search dog --paths -0 | xargs -0 ls -l`
    """
    from ramcli.config import index_path
    from ramcli.index import open_index
    from ramcli.search.ranking import SearchOptions, like_embedding, open_searcher

    if not query and like is None:
        _fail(UsageError("give a QUERY or --like PHOTO", hint='e.g. ramcli search "dog on a beach"'))
    for value in (since, until):
        if value and not _is_date(value):
            _fail(UsageError(f"{value!r} is not a date", hint="use YYYY-MM-DD"))
    opts = SearchOptions(limit=limit, min_score=min_score, under=tuple(under or ()), since=since, until=until,
                         tags=tuple(tags or ()), not_tags=tuple(not_tags or ()))
    with _errors():
        path = index or index_path()
        if not path.is_file():
            raise RamcliError("there is no index yet", path=path, hint="run `ramcli tag ~/Photos` first")
        ix = open_index(path)
        try:
            searcher = open_searcher(ix, model)
            hits = searcher.like(like_embedding(searcher, like), opts) if like is not None else \
                searcher.search(query or "", opts)
        finally:
            ix.close()
    if json_out:
        for rank, hit in enumerate(hits, 1):
            _emit_json(hit.as_dict(rank))
    elif paths_only:
        sys.stdout.write("".join(h.path + ("\0" if null else "\n") for h in hits))
    else:
        table = _table(title=f"{len(hits)} photos", title_justify="left")
        for col in ("#", "score", "via", "path", "tags"):
            table.add_column(col, overflow="fold")
        for rank, hit in enumerate(hits, 1):
            table.add_row(str(rank), f"{hit.score:.3f}", hit.via, escape(hit.path), escape(", ".join(hit.tags)))
        out().print(table)
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
        err().print(f"[yellow]cannot open it: no {opener} here[/]")


# --------------------------------------------------------------------------------- custom tags

tags_app = typer.Typer(no_args_is_help=True, help="Your own tags next to the built-in ones: list, show, change, "
                                                  "switch off, share.\n\nExample: `ramcli tags list --custom`")
app.add_typer(tags_app, name="tags")
IndexOpt = Annotated[Path | None, typer.Option("--index", envvar="RAMCLI_INDEX", help="Index file.")]
NoWriteOpt = Annotated[bool, typer.Option("--no-write", help="Update the index only; `ramcli tags apply` "
                                                             "writes the files later.")]


@contextmanager
def _tag_index(index: Path | None, *, writer: bool = True, create: bool = False) -> Iterator[Any]:
    """The index the vocabulary lives in; ``create``: a new library may get its tags before its photos."""
    from ramcli.config import index_path
    from ramcli.index import open_index

    path = index or index_path()
    if not path.is_file() and not create:
        raise RamcliError("there is no index yet", path=path, hint="run `ramcli tag ~/Photos` first")
    ix = open_index(path, writer=writer)
    try:
        yield ix
    finally:
        ix.close()


def _apply(ix: Any, changed: list[Any], removed: list[int], no_write: bool, json_out: bool,
           removed_builtin: list[str] | None = None) -> None:
    """Re-score ``changed`` tags over the whole library, with a progress bar; exit 1 if a photo failed."""
    from ramcli.pipeline.rescore import Rescore, RescoreOptions

    run = Rescore(ix, changed, removed, RescoreOptions(write=not no_write), removed_builtin)
    _render(run, json_out=json_out, verbose=False, what="re-scoring", unit="images",
            interrupted="run `ramcli tags apply` to finish")
    c = run.counts
    _say(f"{c.get('scored', 0)} images re-scored ({c.get('reencoded', 0)} re-encoded: indexed without tokens), "
         f"{c.get('updated', 0)} photos' keywords changed, {c.get('error', 0)} errors "
         f"in {_elapsed():.1f} s")
    if c.get("error", 0):
        raise typer.Exit(1)


@app.command("add-tag")
def add_tag(
    name: Annotated[str | None, typer.Argument(help="The tag, e.g. \"black-capped chickadee\".")] = None,
    description: Annotated[list[str] | None, typer.Option(
        "--description", "-d", help="What it looks like (repeatable); one embedding each, weighted per photo "
                                    "as RAM++ does for its own tags.")] = None,
    descriptions_file: Annotated[Path | None, typer.Option(
        "--descriptions-file", help="Descriptions: text (one per line) or the authors' JSON "
                                    "[{tag: [descriptions]}], which adds all its tags when NAME is left out.")] = None,
    threshold: Annotated[float | None, typer.Option("--threshold", min=0.0, max=1.0,
                                                    help="Fires above this score (default 0.5).")] = None,
    zh: Annotated[str | None, typer.Option("--zh", help="Chinese name.")] = None,
    parent: Annotated[str | None, typer.Option("--parent", help="A broader tag it belongs under.")] = None,
    no_write: NoWriteOpt = False,
    index: IndexOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Add your own tag and apply it to every indexed photo, from stored embeddings (no re-encoding).

    Example: `ramcli add-tag "grandma's garden" -d "a cottage garden with roses and a wooden bench"`

    Without descriptions the tag's embedding comes from CLIP prompt templates. Again with the same
    NAME: the tag is redefined. Photos tagged later get it too.
    """
    from ramcli.vocab import tagops

    with _errors(), _tag_index(index, create=True) as ix:
        wanted = tagops.specs(name, description or [], descriptions_file, threshold, zh, parent)
        tags = tagops.define(ix, wanted, _say)
        if json_out:
            for t in tags:
                _emit_json({"added": t.as_dict()})
        _apply(ix, tags, [], no_write, json_out)


@tags_app.command("list")
def tags_list(
    custom_only: Annotated[bool, typer.Option("--custom", help="Only your own tags.")] = False,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Whose built-in tags.")] = None,
    index: IndexOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Tags: yours and the model's, with thresholds and how many photos carry each.

    Example: `ramcli tags list --custom`
    """
    from ramcli.vocab import tagops

    with _errors(), _tag_index(index, writer=False) as ix:
        rows = tagops.listing(ix, None if custom_only else tagops.main_model(ix, model), custom_only=custom_only)
    if json_out:
        for r in rows:
            _emit_json(r)
        return
    table = _table(title=f"{len(rows)} tags", title_justify="left")
    for col in ("name", "中文", "source", "threshold", "photos", "state"):
        table.add_column(col)
    for r in rows:
        state = r.get("state") or ("pending" if r.get("pending") else "on")
        table.add_row(escape(r["name"]), escape(r.get("name_zh") or ""), r["source"], f"{r['threshold']:.2f}",
                      str(r["photos"]), state)
    out().print(table)


@tags_app.command("show")
def tags_show(
    name: Annotated[str, typer.Argument(help="Tag name.")],
    index: IndexOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """One tag: threshold, descriptions, how many photos carry it.

    Example: `ramcli tags show "grandma's garden"`
    """
    from ramcli.vocab import custom, tagops

    with _errors(), _tag_index(index, writer=False) as ix:
        model = None if custom.get(ix, name) else tagops.main_model(ix)
        row = tagops.show(ix, name, model)
    if json_out:
        _emit_json(row)
        return
    table = _table(show_header=False, box=None)
    for k, v in row.items():
        table.add_row(k, escape("\n".join(v) if isinstance(v, list) else str(v)))
    out().print(table)


@tags_app.command("set")
def tags_set(
    name: Annotated[str, typer.Argument(help="Your tag's name.")],
    threshold: Annotated[float, typer.Option("--threshold", min=0.0, max=1.0, help="New threshold.")],
    no_write: NoWriteOpt = False,
    index: IndexOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Change a custom tag's threshold and apply it to every photo.

    Example: `ramcli tags set "grandma's garden" --threshold 0.6`
    """
    from ramcli.vocab import custom

    with _errors(), _tag_index(index) as ix:
        _apply(ix, [custom.set_threshold(ix, name, threshold)], [], no_write, json_out)


@tags_app.command("remove")
def tags_remove(
    name: Annotated[str, typer.Argument(help="Your tag's name.")],
    no_write: NoWriteOpt = False,
    index: IndexOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Remove a custom tag: from the vocabulary, the index and the photos' keywords.

    Example: `ramcli tags remove "grandma's garden"`
    """
    from ramcli.vocab import custom

    with _errors(), _tag_index(index) as ix:
        _apply(ix, [], [custom.remove(ix, name).tag_index], no_write, json_out)


@tags_app.command("disable")
def tags_disable(
    name: Annotated[str, typer.Argument(help="A built-in tag's name.")],
    no_write: NoWriteOpt = False,
    index: IndexOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Switch a built-in tag off: it is no longer given, and leaves the photos that carry it.

    Example: `ramcli tags disable "selfie"`   (undo: `ramcli tags enable selfie`)
    """
    from ramcli.vocab import custom, tagops

    with _errors(), _tag_index(index) as ix:
        tagops.builtin_as_custom(tagops.main_model(ix), name)  # a name the model has
        custom.set_disabled(ix, name, True)
        _apply(ix, [], [], no_write, json_out, removed_builtin=[name])


@tags_app.command("enable")
def tags_enable(
    name: Annotated[str, typer.Argument(help="A disabled built-in tag's name.")],
    no_write: NoWriteOpt = False,
    index: IndexOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Switch a disabled built-in tag back on, re-scoring it from the stored embeddings.

    Example: `ramcli tags enable selfie`
    """
    from ramcli.vocab import custom, tagops

    with _errors(), _tag_index(index) as ix:
        tag = tagops.builtin_as_custom(tagops.main_model(ix), name)
        custom.set_disabled(ix, name, False)
        _apply(ix, [tag], [], no_write, json_out)


@tags_app.command("apply")
def tags_apply(
    no_write: NoWriteOpt = False,
    index: IndexOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Finish pending work: tags added with --no-write or interrupted, keywords not yet in the files.

    Example: `ramcli tags apply`
    """
    from ramcli.vocab import tagops

    with _errors(), _tag_index(index) as ix:
        todo = tagops.pending(ix)
        _say(f"{len(todo)} pending tags, {len(tagops.orphans(ix))} removed ones to clean up")
        _apply(ix, todo, tagops.orphans(ix), no_write, json_out)


@tags_app.command("export")
def tags_export(
    file: Annotated[Path, typer.Argument(help="JSON file to write.")],
    index: IndexOpt = None,
) -> None:
    """Write your tags (with their embeddings) and disabled built-ins to a file, to share or keep.

    Example: `ramcli tags export birds.json`
    """
    from ramcli.vocab import custom

    with _errors(), _tag_index(index, writer=False) as ix:
        n = custom.export_vocabulary(ix, file)
    _say(f"{n} tags written to {file}")


@tags_app.command("import")
def tags_import(
    file: Annotated[Path, typer.Argument(help="A file from `ramcli tags export`.")],
    no_write: NoWriteOpt = False,
    index: IndexOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Add the tags of an exported vocabulary and apply them to every photo.

    Example: `ramcli tags import birds.json`
    """
    from ramcli.vocab import custom, tagops

    with _errors(), _tag_index(index, create=True) as ix:
        tags = tagops.import_vocabulary(ix, file, _say)
        off = sorted(custom.disabled(ix))
        _apply(ix, tags, [], no_write, json_out, removed_builtin=off)


# -------------------------------------------------------------------------------------- bench


@app.command()
def bench(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model to measure (default: RAM++).")] = None,
    photos: Annotated[Path | None, typer.Option("--photos", help="A folder of your photos (copies are "
                                                                 "written to; yours are not touched).")] = None,
    synthetic: Annotated[int, typer.Option("--synthetic", min=1, help="Without --photos: this many generated "
                                                                      "1024x768 JPEGs.")] = 16,
    batch: Annotated[int, typer.Option("--batch", "-b", min=1, help="Photos per inference batch.")] = 4,
    threads: Annotated[int, typer.Option("--threads", min=0, help="CPU threads (0: all cores).")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto, cuda or cpu.")] = "auto",
    precision: PrecisionOpt = "fp32",
    decode: DecodeOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Measure tagging on this machine: photos/s, ms per stage, provider, threads, peak memory.

    Example: `ramcli bench --synthetic 32 --batch 8 --threads 2 --json`
    """
    import tempfile

    from ramcli.pipeline.bench import run_bench, synthetic_photos
    from ramcli.pipeline.scan import iter_photos
    from ramcli.pipeline.tagger import resolve_model
    from ramcli.runtime.engine import EngineOptions

    if device not in {"auto", "cpu", "cuda"}:
        _fail(UsageError(f"--device must be auto, cpu or cuda, not {device!r}"))
    _check_engine_options(precision, decode)
    with _errors(), tempfile.TemporaryDirectory(prefix="ramcli-bench-") as tmp:
        installed = resolve_model(model, download=False, report=_say)
        files = [p for p in iter_photos([photos], []) if isinstance(p, Path)] if photos else \
            synthetic_photos(Path(tmp), synthetic)
        if not files:
            raise RamcliError("no photos to measure", path=photos, hint="give a folder with photos, or --synthetic N")
        with _progress() as bar:
            task = bar.add_task("measuring", total=len(files), rate="")
            result = run_bench(installed, files, batch=batch,
                               engine=EngineOptions(device=device, threads=threads, precision=precision,
                                                    decode=decode),
                               report=_print_error,
                               on_photo=lambda: bar.update(task, advance=1))
    if json_out:
        _emit_json(result)
    else:
        table = _table(show_header=False, box=None)
        for k, v in result.items():
            table.add_row(k, ", ".join(f"{s} {ms}" for s, ms in v.items()) if isinstance(v, dict) else str(v))
        out().print(table)
    if result["errors"]:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------- models


@models_app.command("list")
def models_list(json_out: JsonOpt = False) -> None:
    """Known and installed models.

    Example: `ramcli models list --json`
    """
    from ramcli.models.catalog import list_models

    rows = list_models()
    if json_out:
        _emit_json(rows)
        return
    table = _table(title="models", title_justify="left")
    for col in ("name", "family", "installed", "size", "can", "what it is"):
        table.add_column(col)
    for r in rows:
        name = r["name"] + (" (default)" if r.get("default") else "")
        size = r.get("installed_size") or r.get("download_size") or ""
        table.add_row(name, r["family"], "yes" if r["installed"] else "no", size, ", ".join(r.get("capabilities", [])),
                      r.get("title", ""))
    out().print(table)


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="Model name from `ramcli models list`.")],
    json_out: JsonOpt = False,
) -> None:
    """Download a model (resumable, checksummed) and convert it to ONNX.

    Example: `ramcli models pull ram_plus_swin_large_14m`
    """
    from ramcli.models.download import pull

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
    vocab: Annotated[Path | None, typer.Option(
        "--vocab", help="Tag2Text: the BERT vocabulary (bert-base-uncased's vocab.txt); fetched for "
                        "tag2text_swin_14m if left out.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Convert a checkpoint you already have (air-gapped machines, fine-tunes).

    Example: `ramcli models import ram_plus_swin_large_14m.pth --name ram_plus_swin_large_14m`

    For a known model name the official tag files are fetched unless given.
    """
    from ramcli.models.catalog import import_local

    with _errors():
        m = import_local(checkpoint, name, tag_list=tag_list, tag_list_zh=tag_list_zh, thresholds=thresholds,
                         image_size=image_size, vocab=vocab, report=_say)
    _done(m, json_out)


def _done(m: Any, json_out: bool) -> None:
    parity = m.meta.get("parity", {})
    tags = m.meta.get("num_tags")
    if json_out:
        _emit_json({"name": m.name, "path": str(m.path), "family": m.family, "num_tags": tags, "parity": parity})
    else:
        worst = max((v for k, v in parity.items() if k.endswith("_max_abs")), default=float("nan"))
        what = f"{m.family}, {tags} tags" if tags else m.family
        out().print(f"installed [bold]{m.name}[/] ({what}) in {m.path}; ONNX vs PyTorch max |difference| {worst:.2e}")


@models_app.command("verify")
def models_verify(
    name: Annotated[str, typer.Argument(help="An installed model.")],
    photos: Annotated[Path | None, typer.Option("--photos", help="Measure int8 and draft-decoding agreement "
                                                                 "on photos in this folder.")] = None,
    count: Annotated[int, typer.Option("--count", min=1, help="At most this many of those photos.")] = 32,
    json_out: JsonOpt = False,
) -> None:
    """Run PyTorch and the ONNX engine on fixed inputs; print the max abs differences.
    Where `ramcli models quantize` made an int8 version, also how far its tags are from fp32's;
    with --photos, also how far draft JPEG decoding (`--decode draft`) moves them.

    Example: `ramcli models verify ram_plus_swin_large_14m --photos ~/Photos/2024`
    """
    from ramcli.models.convert.converters import verify

    with _errors():
        result = verify(name)
        _speed_option_agreement(name, photos, count, result)
    if json_out:
        _emit_json(result)
    else:
        out().print(f"{name}: max |Δ image embeds| {result['image_embeds_max_abs']:.2e}, "
                  f"max |Δ logits| {result['logits_max_abs']:.2e}, max |Δ scores| {result['scores_max_abs']:.2e} "
                  + (f"(few-tags head {result['few_tags_logits_max_abs']:.2e}) "
                     if "few_tags_logits_max_abs" in result else "")
                  + f"on {result['images']} images: {'[green]ok[/]' if result['ok'] else '[red]MISMATCH[/]'}")
        for key in ("int8", "fp16", "draft_decode"):
            if key in result:
                out().print(_agreement_line(result[key]))
    if not result["ok"]:
        raise typer.Exit(1)


def _speed_option_agreement(name: str, photos: Path | None, count: int, result: dict[str, Any]) -> None:
    from ramcli.models import quantize, store
    from ramcli.pipeline import samples

    installed = store.get(name)
    made = [p for p in (quantize.INT8, quantize.FP16) if quantize.has_precision(installed, p)]
    images = samples.sample_inputs(installed, photos, count, _print_error) if made or photos else None
    for precision in made:
        result[precision] = quantize.measure(installed, images, precision)
    if photos is not None:
        result["draft_decode"] = samples.decode_agreement(installed, photos, count, _print_error, exact=images)


def _agreement_line(a: dict[str, Any]) -> str:
    what = f"{a['precision']} against fp32" if "precision" in a else "draft against exact JPEG decoding"
    line = (f"{what} on {a['images']} images ({a['reference_tags']} tags): {100 * a['tag_agreement']:.1f} % of "
            f"tags shared, {100 * a['identical_tag_sets']:.0f} % identical tag sets, "
            f"max |Δ score| {a['scores_max_abs']:.3f}, {100 * a['top10_overlap']:.0f} % of the top 10 kept")
    if "identical_captions" in a:
        line += f", {100 * a['identical_captions']:.0f} % identical captions"
    return line


@models_app.command("quantize")
def models_quantize(
    name: Annotated[str, typer.Argument(help="An installed model.")],
    photos: Annotated[Path | None, typer.Option("--photos", help="Measure the agreement on photos in this "
                                                                 "folder (default: sample images).")] = None,
    count: Annotated[int, typer.Option("--count", min=1, help="At most this many of those photos.")] = 32,
    to: Annotated[str, typer.Option("--to", help="int8 (CPUs) or fp16 (CUDA).")] = "int8",
    json_out: JsonOpt = False,
) -> None:
    """Make an int8 (or fp16) version of a model for `--precision`, and measure how far its tags are from fp32's.

    Example: `ramcli models quantize ram_plus_swin_large_14m --photos ~/Photos/2024`

    int8: weights of the matrix products become int8 (onnxruntime dynamic quantisation); on CPUs
    that is faster. fp16 (`--to fp16`): float16 weights and activations, for CUDA; on a CPU it is
    slower. Either way the tags may differ a little: the agreement is printed and kept.
    """
    from ramcli.models import quantize, store
    from ramcli.pipeline import samples

    if to not in {quantize.INT8, quantize.FP16}:
        _fail(UsageError(f"--to must be int8 or fp16, not {to!r}"))
    with _errors():
        installed = store.get(name)
        files = quantize.quantize(installed, to, _say)
        result = quantize.measure(installed, samples.sample_inputs(installed, photos, count, _print_error), to)
    if json_out:
        _emit_json({"model": name, "files": [str(f) for f in files], **result})
    else:
        out().print(_agreement_line(result))


@models_app.command("rm")
def models_rm(name: Annotated[str, typer.Argument(help="An installed model.")], json_out: JsonOpt = False) -> None:
    """Remove a converted model from the cache (downloaded weights stay in the hub cache).

    Example: `ramcli models rm ram_swin_large_14m`
    """
    from ramcli.models.store import remove

    with _errors():
        path = remove(name)
    if json_out:
        _emit_json({"removed": name, "path": str(path)})
    else:
        out().print(f"removed {name} ({path})")


# ------------------------------------------------------------------------------------- doctor


@app.command()
def doctor(json_out: JsonOpt = False) -> None:
    """Show versions, execution providers (what really loads), models, cache and index paths.

    Example: `ramcli doctor --json`
    """
    from ramcli.models.catalog import doctor_report

    with _errors():
        report = doctor_report()
    if json_out:
        _emit_json(report)
        return
    table = _table(show_header=False, box=None)
    for key, value in report.items():
        table.add_row(f"[bold]{key}[/]", escape(", ".join(map(str, value)) if isinstance(value, list) else str(value)))
    out().print(table)


def main() -> None:
    """Entry point: run the Typer app, built for the one command the arguments name."""
    first = sys.argv[1:2]
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
