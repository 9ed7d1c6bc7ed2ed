"""`ramcli bench`: tagging speed on this machine, per stage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ramcli.cli import options as o
from ramcli.cli import render
from ramcli.cli.app import app
from ramcli.errors import RamcliError
from ramcli.settings import Backend, Decode, Device, Precision


@app.command()
def bench(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model to measure (default: RAM++).",
                                              rich_help_panel=o.MODEL)] = None,
    photos: Annotated[Path | None, typer.Option("--photos", help="A folder of your photos (copies are "
                                                                 "written to; yours are not touched).")] = None,
    synthetic: Annotated[int, typer.Option("--synthetic", min=1, help="Without --photos: this many generated "
                                                                      "1024x768 JPEGs.")] = 16,
    batch_size: Annotated[int, typer.Option("--batch", "-b", min=1, help="Photos per inference batch.",
                                            rich_help_panel=o.SPEED)] = 4,
    threads: o.ThreadsOpt = 0,
    device: o.DeviceOpt = Device.auto,
    precision: o.PrecisionOpt = Precision.auto,
    decode: o.DecodeOpt = Decode.auto,
    backend: o.BackendOpt = Backend.onnxruntime,
    screen: o.ScreenOpt = 0,
    json_out: o.JsonOpt = False,
) -> None:
    """Measure tagging on this machine: photos/s, ms per stage, provider, threads, peak memory.

    Example: `ramcli bench --synthetic 32 --batch 8 --threads 2 --json`
    """
    import tempfile

    from ramcli.pipeline.bench import run_bench, synthetic_photos
    from ramcli.pipeline.scan import iter_photos
    from ramcli.pipeline.tagger import resolve_model
    from ramcli.runtime.engine import EngineOptions

    with render.errors(), tempfile.TemporaryDirectory(prefix="ramcli-bench-") as tmp:
        installed = resolve_model(model, download=False, report=render.say)
        files = [p for p in iter_photos([photos], []) if isinstance(p, Path)] if photos else \
            synthetic_photos(Path(tmp), synthetic)
        if not files:
            raise RamcliError("no photos to measure", path=photos, hint="give a folder with photos, or --synthetic N")
        engine = EngineOptions(device=device.value, threads=threads, precision=precision.value, decode=decode.value,
                               screen=screen, backend=backend.value)
        with render.progress("measuring", total=len(files)) as bar:
            result = run_bench(installed, files, batch=batch_size, engine=engine, report=render.print_error,
                               on_photo=bar.tick)
    if json_out:
        render.emit_json(result)
    else:
        table = render.table(show_header=False, box=None)
        for k, v in result.items():
            table.add_row(k, ", ".join(f"{s} {ms}" for s, ms in v.items()) if isinstance(v, dict) else str(v))
        render.out().print(table)
    if result["errors"]:
        raise typer.Exit(1)
