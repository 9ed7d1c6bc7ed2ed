"""`ramcli add-tag` and `ramcli tags ...`: your own tags; each change re-scores the library."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from ramcli.cli import options as o
from ramcli.cli import render
from ramcli.cli.app import app, tags_app
from ramcli.errors import RamcliError

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

    _show(Rescore(ix, changed, removed, RescoreOptions(write=not no_write), removed_builtin), json_out)


def _show(run: Any, json_out: bool, resume: str = "run `ramcli tags apply` to finish") -> None:
    """A re-scoring run with a progress bar and a summary; exit 1 if a photo failed."""
    with render.interrupted(resume), render.progress("re-scoring", unit="images") as bar:
        run.on_total, run.on_image = bar.total, bar.tick
        render.render_events(run.events(), json_out=json_out)
    c = run.counts
    render.say(f"{c.get('scored', 0)} images re-scored ({c.get('reencoded', 0)} re-encoded: indexed without "
               f"tokens), {c.get('updated', 0)} photos' keywords changed, {c.get('error', 0)} errors "
               f"in {bar.elapsed():.1f} s")
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
    index: o.IndexOpt = None,
    json_out: o.JsonOpt = False,
) -> None:
    """Add your own tag and apply it to every indexed photo, from stored embeddings (no re-encoding).

    Example: `ramcli add-tag "grandma's garden" -d "a cottage garden with roses and a wooden bench"`

    Without descriptions the tag's embedding comes from CLIP prompt templates. Again with the same
    NAME: the tag is redefined. Photos tagged later get it too.
    """
    from ramcli.vocab import tagops

    with render.errors(), _tag_index(index, create=True) as ix:
        wanted = tagops.specs(name, description or [], descriptions_file, threshold, zh, parent)
        tags = tagops.define(ix, wanted, render.say)
        if json_out:
            for t in tags:
                render.emit_json({"added": t.as_dict()})
        _apply(ix, tags, [], no_write, json_out)


QueryOpt = Annotated[str | None, typer.Option("--query", help="Also the photos `ramcli search QUERY` "
                                                                   "shows (its first 20).")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Which model's tags (default: the one that "
                                                                   "tagged most photos).")]
PhotosArg = Annotated[list[str] | None, typer.Argument(help="Photos, folders (every indexed photo below) or glob "
                                                            "patterns like \"~/Photos/2019/*.jpg\".")]


def _verdict(verdict: str, tag: str, photos: list[str] | None, query: str | None, model: str | None,
             index: Path | None, json_out: bool) -> None:
    """`tags confirm` and `tags reject`: one front-door call, then the re-scoring run it returns."""
    from ramcli.library import Library

    with render.errors():
        run = Library(index, model=model, report=render.say).feedback(verdict, tag, photos or [], query=query)
        for arg in run.missing:
            render.say(f"{arg}: no indexed photo there")
        if json_out:
            for row in run.given:
                render.emit_json({"verdict": row.verdict, "tag": row.tag, "path": row.path, "hash": row.hash,
                                  "source": row.source})
        render.say(f"{len(run.given)} new {verdict}ed verdicts on {tag!r}")
        _show(run, json_out, f"run `ramcli tags {verdict}` again to finish")


@tags_app.command("reject")
def tags_reject(
    tag: Annotated[str, typer.Argument(help="The tag, e.g. \"dog\".")],
    photos: PhotosArg = None,
    query: QueryOpt = None,
    model: ModelOpt = None,
    index: o.IndexOpt = None,
    json_out: o.JsonOpt = False,
) -> None:
    """Say a tag is wrong on these photos: it leaves them and is never written to them again.

    Example: `ramcli tags reject dog ~/Photos/2019/IMG_0042.jpg`  or  `ramcli tags reject dog --query "cat on sofa"`

    The verdict is kept in the index (re-runs, add-tag, threshold changes and calibration respect it) and
    in each photo's own record (`ramcli:rejected`), so another index or machine knows. Deleting one of
    ramcli's keywords in another app does the same. `--json`: one line per new verdict, then per photo.
    """
    _verdict("reject", tag, photos, query, model, index, json_out)


@tags_app.command("confirm")
def tags_confirm(
    tag: Annotated[str, typer.Argument(help="The tag, e.g. \"dog\".")],
    photos: PhotosArg = None,
    query: QueryOpt = None,
    model: ModelOpt = None,
    index: o.IndexOpt = None,
    json_out: o.JsonOpt = False,
) -> None:
    """Say a tag is right on these photos: it stays even where its score is under the threshold.

    Example: `ramcli tags confirm "red kite" ~/Photos/birds/*.jpg`

    Undoes an earlier rejection (also one made by deleting the keyword in another app). Adding a tag
    name as your own keyword in another app does the same. `--json`: one line per new verdict, then per photo.
    """
    _verdict("confirm", tag, photos, query, model, index, json_out)


@tags_app.command("calibrate")
def tags_calibrate(
    target_precision: Annotated[float, typer.Option(
        "--target-precision", min=0.01, max=1.0,
        help="Of the judged photos a threshold lets through, at least this share must be confirmed ones.")] = 0.9,
    min_evidence: Annotated[int, typer.Option(
        "--min-evidence", min=1, help="Verdicts a tag needs before its threshold moves; also how strongly thin "
                                      "evidence is pulled back to the model's threshold.")] = 10,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would change; change nothing.")] = False,
    no_write: NoWriteOpt = False,
    index: o.IndexOpt = None,
    json_out: o.JsonOpt = False,
) -> None:
    """Set per-tag thresholds from your confirmations and rejections, and apply them to every photo.

    Example: `ramcli tags calibrate --dry-run`  then  `ramcli tags calibrate --target-precision 0.95`

    Scores come from the stored embeddings: no photo is decoded again. A tag with fewer than
    --min-evidence verdicts keeps its threshold; thin evidence moves it only part of the way (see the
    README). Your verdicts still win on the photos you judged. `--json`: one line per tag (the plan:
    thresholds before and after, images gained and lost, photos affected), then one per photo changed.
    """
    from ramcli.library import Library

    with render.errors():
        cal = Library(index, report=render.say).calibrate(target_precision=target_precision,
                                                          min_evidence=min_evidence)
        try:
            with render.interrupted("nothing was changed"), \
                    render.progress("scoring judged tags", unit="images") as bar:
                cal.on_total, cal.on_image = bar.total, bar.tick
                plans = cal.plan()
            _show_plan(plans, json_out)
            if not dry_run:
                _show(cal.apply(plans, write=not no_write), json_out, "run `ramcli tags calibrate` again to finish")
        finally:
            cal.index.close()


def _show_plan(plans: list[Any], json_out: bool) -> None:
    if json_out:
        for p in plans:
            render.emit_json({"plan": p.as_dict()})
        return
    if not plans:
        render.say("no tag has enough verdicts yet (`ramcli tags reject|confirm`, or --min-evidence)")
        return
    table = render.table(title="calibrated thresholds", title_justify="left")
    for col in ("tag", "model", "confirmed", "rejected", "before", "after", "gained", "lost", "photos"):
        table.add_column(col)
    for p in plans:
        table.add_row(render.escape(p.tag), p.model, str(p.confirmed), str(p.rejected), f"{p.before:.3f}",
                      f"{p.after:.3f}", str(p.gained), str(p.lost), str(p.photos))
    render.out().print(table)


@tags_app.command("list")
def tags_list(
    custom_only: Annotated[bool, typer.Option("--custom", help="Only your own tags.")] = False,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Whose built-in tags.")] = None,
    index: o.IndexOpt = None,
    json_out: o.JsonOpt = False,
) -> None:
    """Tags: yours and the model's, with thresholds and how many photos carry each.

    Example: `ramcli tags list --custom`
    """
    from ramcli.vocab import tagops

    with render.errors(), _tag_index(index, writer=False) as ix:
        rows = tagops.listing(ix, None if custom_only else tagops.main_model(ix, model), custom_only=custom_only)
    if json_out:
        for r in rows:
            render.emit_json(r)
        return
    table = render.table(title=f"{len(rows)} tags", title_justify="left")
    table.add_column("name", overflow="fold")
    for col in ("中文", "source", "threshold", "photos", "state"):
        table.add_column(col)
    for r in rows:
        state = r.get("state") or ("pending" if r.get("pending") else "on")
        table.add_row(render.escape(r["name"]), render.escape(r.get("name_zh") or ""), r["source"],
                      f"{r['threshold']:.2f}", str(r["photos"]), state)
    render.out().print(table)


@tags_app.command("verdicts")
def tags_verdicts(
    names: Annotated[list[str] | None, typer.Argument(metavar="TAG...", help="Only these tags.")] = None,
    index: o.IndexOpt = None,
    json_out: o.JsonOpt = False,
) -> None:
    """Your verdicts: which tags you confirmed or rejected on which photos, and who said so (cli: `tags
    confirm/reject`; file: read from a photo's keywords; import: `tags import`).

    Example: `ramcli tags verdicts dog --json`
    """
    from ramcli.vocab import tagops

    with render.errors(), _tag_index(index, writer=False) as ix:
        rows = tagops.verdicts(ix, names or ())
    if json_out:
        for r in rows:
            render.emit_json(r)
        return
    table = render.table(title=f"{len(rows)} verdicts", title_justify="left")
    for col in ("tag", "verdict", "source", "photo", "when"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(render.escape(r["tag"]), r["verdict"], r["source"],
                      render.escape(str(r["path"] or r["hash"])) + ("" if r["indexed"] else " (not indexed now)"),
                      (r["at"] or "")[:19])
    render.out().print(table)


@tags_app.command("show")
def tags_show(
    name: Annotated[str, typer.Argument(help="Tag name.")],
    index: o.IndexOpt = None,
    json_out: o.JsonOpt = False,
) -> None:
    """One tag: threshold, descriptions, how many photos carry it.

    Example: `ramcli tags show "grandma's garden"`
    """
    from ramcli.vocab import custom, tagops

    with render.errors(), _tag_index(index, writer=False) as ix:
        model = None if custom.get(ix, name) else tagops.main_model(ix)
        row = tagops.show(ix, name, model)
    if json_out:
        render.emit_json(row)
        return
    table = render.table(show_header=False, box=None)
    for k, v in row.items():
        if v is None or v == []:  # not set (no Chinese name, no parent): nothing to say
            continue
        table.add_row(k, render.escape("\n".join(v) if isinstance(v, list) else str(v)))
    render.out().print(table)


@tags_app.command("set")
def tags_set(
    name: Annotated[str, typer.Argument(help="Your tag's name.")],
    threshold: Annotated[float, typer.Option("--threshold", min=0.0, max=1.0, help="New threshold.")],
    no_write: NoWriteOpt = False,
    index: o.IndexOpt = None,
    json_out: o.JsonOpt = False,
) -> None:
    """Change a custom tag's threshold and apply it to every photo.

    Example: `ramcli tags set "grandma's garden" --threshold 0.6`
    """
    from ramcli.vocab import custom

    with render.errors(), _tag_index(index) as ix:
        _apply(ix, [custom.set_threshold(ix, name, threshold)], [], no_write, json_out)


@tags_app.command("remove")
def tags_remove(
    name: Annotated[str, typer.Argument(help="Your tag's name.")],
    no_write: NoWriteOpt = False,
    index: o.IndexOpt = None,
    json_out: o.JsonOpt = False,
) -> None:
    """Remove a custom tag: from the vocabulary, the index and the photos' keywords.

    Example: `ramcli tags remove "grandma's garden"`
    """
    from ramcli.vocab import custom

    with render.errors(), _tag_index(index) as ix:
        _apply(ix, [], [custom.remove(ix, name).tag_index], no_write, json_out)


@tags_app.command("disable")
def tags_disable(
    name: Annotated[str, typer.Argument(help="A built-in tag's name.")],
    no_write: NoWriteOpt = False,
    index: o.IndexOpt = None,
    json_out: o.JsonOpt = False,
) -> None:
    """Switch a built-in tag off: it is no longer given, and leaves the photos that carry it.

    Example: `ramcli tags disable "selfie"`   (undo: `ramcli tags enable selfie`)
    """
    from ramcli.vocab import custom, tagops

    with render.errors(), _tag_index(index) as ix:
        tagops.builtin_as_custom(tagops.main_model(ix), name)  # a name the model has
        custom.set_disabled(ix, name, True)
        _apply(ix, [], [], no_write, json_out, removed_builtin=[name])


@tags_app.command("enable")
def tags_enable(
    name: Annotated[str, typer.Argument(help="A disabled built-in tag's name.")],
    no_write: NoWriteOpt = False,
    index: o.IndexOpt = None,
    json_out: o.JsonOpt = False,
) -> None:
    """Switch a disabled built-in tag back on, re-scoring it from the stored embeddings.

    Example: `ramcli tags enable selfie`
    """
    from ramcli.vocab import custom, tagops

    with render.errors(), _tag_index(index) as ix:
        tag = tagops.builtin_as_custom(tagops.main_model(ix), name)
        custom.set_disabled(ix, name, False)
        _apply(ix, [tag], [], no_write, json_out)


@tags_app.command("apply")
def tags_apply(
    no_write: NoWriteOpt = False,
    index: o.IndexOpt = None,
    json_out: o.JsonOpt = False,
) -> None:
    """Finish pending work: tags added with --no-write or interrupted, keywords not yet in the files.

    Example: `ramcli tags apply`
    """
    from ramcli.vocab import tagops

    with render.errors(), _tag_index(index) as ix:
        todo = tagops.pending(ix)
        render.say(f"{len(todo)} pending tags, {len(tagops.orphans(ix))} removed ones to clean up")
        _apply(ix, todo, tagops.orphans(ix), no_write, json_out)


@tags_app.command("export")
def tags_export(
    file: Annotated[Path, typer.Argument(help="JSON file to write; `-`: standard output.")],
    index: o.IndexOpt = None,
) -> None:
    """Write your tags (with their embeddings) and disabled built-ins to a file, to share or keep.

    Example: `ramcli tags export birds.json`  or  `ramcli tags export - | ssh other ramcli tags import -`
    """
    from ramcli.vocab import custom

    with render.errors(), _tag_index(index, writer=False) as ix, _through_stdio(file, write=True) as target:
        n = custom.export_vocabulary(ix, target)
    render.say(f"{n} tags written to {'standard output' if _is_stdio(file) else file}")


@tags_app.command("import")
def tags_import(
    file: Annotated[Path, typer.Argument(help="A file from `ramcli tags export`; `-`: standard input.")],
    no_write: NoWriteOpt = False,
    index: o.IndexOpt = None,
    json_out: o.JsonOpt = False,
) -> None:
    """Add the tags of an exported vocabulary (and its verdicts and calibrated thresholds) and apply them.

    Example: `ramcli tags import birds.json`

    Verdicts name photos by their image hash: they reach the same pictures in this library, wherever
    they lie. A verdict this index already has on a photo and tag is kept.
    """
    from ramcli.pipeline.rescore import Rescore, RescoreOptions
    from ramcli.vocab import custom, tagops

    with render.errors(), _tag_index(index, create=True) as ix, _through_stdio(file, write=False) as source:
        got = tagops.import_vocabulary(ix, source, render.say)
        off = sorted(custom.disabled(ix))
        _apply(ix, got.tags, [], no_write, json_out, removed_builtin=off)
        if got.verdicts and ix.models():
            render.say(f"{len(got.verdicts)} verdicts imported")
            model = tagops.main_model(ix)
            judged = [tagops.tag_for(ix, name, model) for name in sorted({r.tag for r in got.verdicts})]
            _show(Rescore(ix, [t for t in judged if t is not None], [], RescoreOptions(write=not no_write),
                          only={r.hash for r in got.verdicts}), json_out)


def _is_stdio(file: Path) -> bool:
    return str(file) == "-"


@contextmanager
def _through_stdio(file: Path, *, write: bool) -> Iterator[Path]:
    """``file`` itself, or for ``-`` a temporary file copied to stdout / filled from stdin.

    Why a file: the vocabulary functions read and write paths (and name them in errors); a
    vocabulary is a few MB at most.
    """
    if not _is_stdio(file):
        yield file
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ramcli-vocab-") as tmp:
        path = Path(tmp) / "standard input.json"
        if not write:
            path.write_bytes(sys.stdin.buffer.read())
        yield path
        if write:
            sys.stdout.buffer.write(path.read_bytes())
            sys.stdout.flush()
