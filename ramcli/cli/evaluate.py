"""`ramcli eval`: a model's mAP, CP and CR on a benchmark, as the authors compute them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ramcli.cli import options as o
from ramcli.cli import render
from ramcli.cli.app import app
from ramcli.settings import Decode, Device, Precision


@app.command("eval")
def eval_(
    dataset: Annotated[Path | None, typer.Argument(help="A folder laid out as the authors' datasets/NAME/: "
                                                        "*_taglist.txt, *_annots.txt (relpath,tag,tag), imgs/.")]
    = None,
    library: Annotated[bool, typer.Option(
        "--library", help="Measure on your own library instead: your confirmations as ground truth, scores "
                          "from the index's stored tokens.")] = False,
    index: o.IndexOpt = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model to evaluate (default: RAM++).",
                                              rich_help_panel=o.MODEL)] = None,
    images: Annotated[Path | None, typer.Option("--images", help="Where the images are (default: DATASET/imgs).")]
    = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder: cached scores and the authors' "
                                                                 "files per variant (default: DATASET/ramcli-eval).")]
    = None,
    threshold: Annotated[float | None, typer.Option("--threshold", min=0.0, max=1.0,
                                                    help="One threshold for every tag (default: the model's per-tag "
                                                         "ones, 0.5 for open-set tags).")] = None,
    threshold_file: Annotated[Path | None, typer.Option("--threshold-file", help="One threshold a line, in the "
                                                                                 "taglist's order.")] = None,
    open_set: Annotated[bool, typer.Option("--open-set", help="Score every tag open-set (LLM descriptions or "
                                                              "prompt templates), as the authors' --open-set.")]
    = False,
    # Named precisions/decodes, not precision/decode: the settings file's one value must not become the
    # default of a repeatable option (eval compares variants; its default is the reference's fp32, exact).
    precisions: Annotated[list[Precision] | None, typer.Option(
        "--precision", help="fp32, int8, fp16; repeat to compare side by side.", rich_help_panel=o.SPEED)] = None,
    decodes: Annotated[list[Decode] | None, typer.Option(
        "--decode", help="exact or draft JPEG decoding; repeat to compare side by side.", rich_help_panel=o.SPEED)]
    = None,
    batch_size: o.BatchSizeOpt = 8,
    threads: o.ThreadsOpt = 0,
    device: o.DeviceOpt = Device.auto,
    no_plot: Annotated[bool, typer.Option("--no-plot", help="Skip plot.png.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object: mAP, CP, CR (percent), per_tag, runs.",
                                           rich_help_panel=o.OUTPUT)] = False,
) -> None:
    """Measure a model on a benchmark: mAP, CP, CR and per-tag AP, exactly as the authors'
    batch_inference.py computes them, with their files (ap.txt, pr.txt, summary.txt, pred.txt)
    and a plot. Scores are cached: other thresholds cost nothing; Ctrl-C keeps what was scored.

    Example: `ramcli eval datasets/openimages_common_214 --precision fp32 --precision int8 --json`

    `ramcli eval --library`: the model on your own photos, for the tags you use: the photos you confirmed a
    tag on (`ramcli tags confirm`, or the tag typed as your own keyword) are its positives, every other one a
    negative.
    """
    from ramcli import Library
    from ramcli.errors import UsageError
    from ramcli.evaluate.run import EvalOptions

    if (dataset is None) == (not library):
        render.fail(UsageError("give a DATASET folder or --library (one of them)",
                               hint="e.g. ramcli eval datasets/openimages_common_214, or ramcli eval --library"))
    if library:
        lib = Library(index, model=model, download=False, report=render.say)
        with render.errors(), render.progress("scoring", unit="images") as bar:
            result = lib.evaluate_library(out=out, threshold=threshold, plot=not no_plot, on_total=bar.total,
                                          on_image=bar.tick)
        if json_out:
            render.emit_json(result)
        else:
            _show(result)
            render.say(f"ground truth: {result['ground_truth']}")
        return
    assert dataset is not None
    chosen = tuple(dict.fromkeys("exact" if d.value == "auto" else d.value for d in (decodes or [Decode.exact])))
    opts = EvalOptions(precisions=tuple(dict.fromkeys(p.value for p in (precisions or [Precision.fp32]))),
                       decodes=chosen, threshold=threshold, threshold_file=threshold_file, open_set=open_set,
                       images=images, out=out, batch_size=batch_size, device=device.value, threads=threads,
                       plot=not no_plot)
    lib = Library(model=model, download=False, report=render.say)
    with render.errors(), render.interrupted("the scores so far are cached; run the same command to go on"), \
            render.progress("scoring", unit="images") as bar:
        def variant(label: str, n: int) -> None:
            bar.restart(f"scoring {label}", n)

        result = lib.evaluate(dataset, opts, on_variant=variant, on_image=bar.tick)
    if json_out:
        render.emit_json(result)
    else:
        _show(result)
    if result["failed"]:
        render.say(f"{result['failed']} image(s) could not be read and were scored as black images, as the "
                   "authors' script does (failed.txt lists them)")


def _show(result: dict[str, Any]) -> None:
    table = render.table(title=f"{result['dataset']}: {result['images']} images, {len(result['per_tag'])} tags")
    for col in ("model", "precision", "decode", "mAP", "CP", "CR", "s/image", "folder"):
        table.add_column(col, justify="right" if col in ("mAP", "CP", "CR", "s/image") else "left")
    for r in result["runs"]:
        speed = "cached" if r["s_per_image"] is None and r["from_cache"] else "-" if r["s_per_image"] is None \
            else f"{r['s_per_image']:.3f}"
        table.add_row(r["model"], r["precision"], r["decode"] or "-", f"{r['mAP']:.2f}", f"{r['CP']:.2f}",
                      f"{r['CR']:.2f}", speed,
                      str(Path(r["files"]["summary"]).parent))
    render.out().print(table)
