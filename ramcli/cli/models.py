"""`ramcli models ...`: list, pull, import, verify, quantize, rm."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ramcli.cli import options as o
from ramcli.cli import render
from ramcli.cli.app import models_app
from ramcli.settings import QuantizeTo


@models_app.command("list")
def models_list(json_out: o.JsonOpt = False) -> None:
    """Known and installed models.

    Example: `ramcli models list --json`
    """
    from ramcli.models.catalog import list_models

    rows = list_models()
    if json_out:
        render.emit_json(rows)
        return
    if render.out().width < 100:
        render.out().print(_narrow_table(rows))
        _broken_note(rows)
        return
    table = render.table(title="models", title_justify="left")
    table.add_column("name", no_wrap=True)
    for col in ("family", "installed", "size", "can", "what it is"):
        table.add_column(col, overflow="fold")
    for r in rows:
        name = r["name"] + (" (default)" if r.get("default") else "")
        size = r.get("installed_size") or r.get("download_size") or ""
        table.add_row(name, r["family"], _installed(r), size, ", ".join(r.get("capabilities", [])), _what(r))
    render.out().print(table)
    _broken_note(rows)


def _installed(row: dict[str, Any]) -> str:
    if "broken" in row:
        return "[bold red]BROKEN[/]"
    return "yes" if row["installed"] else "no"


def _what(row: dict[str, Any]) -> str:
    """The title, or for a broken model what is wrong with it and the repair."""
    if "broken" in row:
        return render.escape(f"{row['broken']} ({row['fix']})")
    return render.escape(row.get("title", ""))


def _broken_note(rows: list[dict[str, Any]]) -> None:
    """One line on stderr per broken model, so it is seen under a long table too."""
    for r in rows:
        if "broken" in r:
            render.err().print(f"[yellow]broken:[/] {render.escape(r['name'])}: {render.escape(r['broken'])}")


def _narrow_table(rows: list[dict[str, Any]]) -> Any:
    """`models list` for a narrow terminal: the names whole (they are what people type), the
    default marked with `*`, what each is folded; family and capabilities are in `--json`."""
    table = render.table(title="models", title_justify="left", box=None, caption="* the default model; "
                         "--json for family and capabilities", caption_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("installed", overflow="fold")
    table.add_column("size", no_wrap=True)
    table.add_column("what it is", overflow="fold", ratio=1)
    for r in rows:
        table.add_row(r["name"] + (" *" if r.get("default") else ""), _installed(r),
                      r.get("installed_size") or r.get("download_size") or "", _what(r))
    return table


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="Model name from `ramcli models list`.")],
    json_out: o.JsonOpt = False,
) -> None:
    """Download a model (resumable, checksummed) and convert it to ONNX.

    Example: `ramcli models pull ram_plus_swin_large_14m`
    """
    from ramcli.models.download import pull

    with render.errors():
        m = pull(name, report=render.say)
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
    json_out: o.JsonOpt = False,
) -> None:
    """Convert a checkpoint you already have (air-gapped machines, fine-tunes).

    Example: `ramcli models import ram_plus_swin_large_14m.pth --name ram_plus_swin_large_14m`

    For a known model name the official tag files are fetched unless given.
    """
    from ramcli.models.catalog import import_local

    with render.errors():
        m = import_local(checkpoint, name, tag_list=tag_list, tag_list_zh=tag_list_zh, thresholds=thresholds,
                         image_size=image_size, vocab=vocab, report=render.say)
    _done(m, json_out)


def _done(m: Any, json_out: bool) -> None:
    parity = m.meta.get("parity", {})
    tags = m.meta.get("num_tags")
    if json_out:
        render.emit_json({"name": m.name, "path": str(m.path), "family": m.family, "num_tags": tags, "parity": parity})
    else:
        worst = max((v for k, v in parity.items() if k.endswith("_max_abs")), default=float("nan"))
        what = f"{m.family}, {tags} tags" if tags else m.family
        render.out().print(f"installed [bold]{m.name}[/] ({what}) in {m.path}; ONNX vs PyTorch max |difference| "
                           f"{worst:.2e}")


@models_app.command("verify")
def models_verify(
    name: Annotated[str, typer.Argument(help="An installed model.")],
    photos: Annotated[Path | None, typer.Option("--photos", help="Measure int8 and draft-decoding agreement "
                                                                 "on photos in this folder.")] = None,
    count: Annotated[int, typer.Option("--count", min=1, help="At most this many of those photos.")] = 32,
    screen: Annotated[list[int] | None, typer.Option(
        "--screen", min=1, metavar="K", help="Also measure tag screening at K (repeatable): how many of the "
        "full head's tags it keeps.")] = None,
    json_out: o.JsonOpt = False,
) -> None:
    """Run PyTorch and the ONNX engine on fixed inputs; print the max abs differences.
    Where `ramcli models quantize` made an int8 version, also how far its tags are from fp32's;
    with --photos, also how far draft JPEG decoding (`--decode draft`) moves them, and with
    --screen K how many tags tag screening keeps (`tag --screen K`).

    Example: `ramcli models verify ram_plus_swin_large_14m --photos ~/Photos/2024 --screen 256 --screen 1024`
    """
    from ramcli.models.convert.converters import verify

    with render.errors():
        result = verify(name)
        _speed_option_agreement(name, photos, count, result, screen or [])
    if json_out:
        render.emit_json(result)
    else:
        render.out().print(
            f"{name}: max |Δ image embeds| {result['image_embeds_max_abs']:.2e}, "
            f"max |Δ logits| {result['logits_max_abs']:.2e}, max |Δ scores| {result['scores_max_abs']:.2e} "
            + (f"(few-tags head {result['few_tags_logits_max_abs']:.2e}) " if "few_tags_logits_max_abs" in result
               else "")
            + f"on {result['images']} images: {'[green]ok[/]' if result['ok'] else '[red]MISMATCH[/]'}")
        for key in ("int8", "fp16", "bf16", "draft_decode", *(f"screen_{k}" for k in screen or [])):
            if key in result:
                render.out().print(_agreement_line(result[key]))
    if not result["ok"]:
        raise typer.Exit(1)


def _speed_option_agreement(name: str, photos: Path | None, count: int, result: dict[str, Any],
                            screen: list[int]) -> None:
    from ramcli.models import quantize, store
    from ramcli.models.families import family_of
    from ramcli.pipeline import samples

    installed = store.get(name)
    made = [p for p in (quantize.INT8, quantize.FP16) if quantize.has_precision(installed, p)]
    images = samples.sample_inputs(installed, photos, count, render.print_error) \
        if made or photos or screen else None
    for precision in made:
        result[precision] = quantize.measure(installed, images, precision)
    if photos is not None and not family_of(installed).captions:  # Tag2Text runs on onnxruntime only
        from ramcli.runtime import openvino

        if "BF16" in openvino.capabilities():  # OpenVINO here, on a CPU with bfloat16 instructions
            result["bf16"] = quantize.agreement(installed, images, precision="bf16", backend="openvino")
    for k in screen:
        result[f"screen_{k}"] = quantize.screen_agreement(installed, images, k)
    if photos is not None:
        result["draft_decode"] = samples.decode_agreement(installed, photos, count, render.print_error,
                                                           exact=images)


def _agreement_line(a: dict[str, Any]) -> str:
    runtime = f" ({a['backend']})" if "backend" in a else ""
    what = f"{a['precision']}{runtime} against fp32" if "precision" in a else \
        f"tag screening at K={a['screen']}" if "screen" in a else "draft against exact JPEG decoding"
    kept = f"{100 * a['fired_kept']:.1f} % kept, {a['tags_gained']} gained, " if "fired_kept" in a else ""
    line = (f"{what} on {a['images']} images ({a['reference_tags']} tags): {kept}{100 * a['tag_agreement']:.1f} % of "
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
    to: Annotated[QuantizeTo, typer.Option("--to", help="int8 (CPUs) or fp16 (CUDA).")] = QuantizeTo.int8,
    json_out: o.JsonOpt = False,
) -> None:
    """Make an int8 (or fp16) version of a model for `--precision`, and measure how far its tags are from fp32's.

    Example: `ramcli models quantize ram_plus_swin_large_14m --photos ~/Photos/2024`

    int8: weights of the matrix products become int8 (onnxruntime dynamic quantisation); on CPUs
    that is faster. fp16 (`--to fp16`): float16 weights and activations, for CUDA; on a CPU it is
    slower. Either way the tags may differ a little: the agreement is printed and kept.
    """
    from ramcli.models import quantize, store
    from ramcli.pipeline import samples

    with render.errors():
        installed = store.get(name)
        files = quantize.quantize(installed, to.value, render.say)
        result = quantize.measure(installed, samples.sample_inputs(installed, photos, count, render.print_error),
                                  to.value)
    if json_out:
        render.emit_json({"model": name, "files": [str(f) for f in files], **result})
    else:
        render.out().print(_agreement_line(result))


@models_app.command("rm")
def models_rm(name: Annotated[str, typer.Argument(help="An installed model.")], json_out: o.JsonOpt = False) -> None:
    """Remove a converted model from the cache (downloaded weights stay in the hub cache).

    Example: `ramcli models rm ram_swin_large_14m`
    """
    from ramcli.models.store import remove

    with render.errors():
        path = remove(name)
    if json_out:
        render.emit_json({"removed": name, "path": str(path)})
    else:
        render.out().print(f"removed {name} ({path})")
