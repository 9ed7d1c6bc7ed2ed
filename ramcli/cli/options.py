"""Options more than one command takes, declared once (sqlite-utils' ``@output_options`` idea).

Choices are the enums of :mod:`ramcli.settings`, so `--help` lists their values and click
rejects a bad one ("Invalid value for '--lang'", exit 2). Defaults here are the built-in ones;
the config file and ``RAMCLI_*`` variables replace them through click's ``default_map``
(:func:`ramcli.cli.app.default_map`), so `--help` shows what a run would use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ramcli.settings import Backend, Decode, Device, Lang, Precision, SidecarName

# Rich help panels of `ramcli tag --help` (and `bench`, which shares the model/speed options).
WHAT = "What to write"
MODEL = "Model"
SPEED = "Speed"
OUTPUT = "Output"

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output (JSON lines).", rich_help_panel=OUTPUT)]
IndexOpt = Annotated[Path | None, typer.Option(
    "--index", envvar="RAMCLI_INDEX", show_envvar=False,
    help="Index file (default: one per user; setting `index`).", rich_help_panel=OUTPUT)]
NoWriteOpt = Annotated[bool, typer.Option(
    "--no-write", help="Change the index only; leave the photos' files alone.", rich_help_panel=WHAT)]
DeviceOpt = Annotated[Device, typer.Option(
    "--device", help="auto (CUDA if it loads, else CPU), cuda, cpu, or tensorrt (CUDA through TensorRT: engines "
                     "built once, kept in the model folder).", rich_help_panel=SPEED)]
ThreadsOpt = Annotated[int, typer.Option("--threads", min=0, help="CPU threads (0: all cores).",
                                         rich_help_panel=SPEED)]
PrecisionOpt = Annotated[Precision, typer.Option(
    "--precision", help="fp32, int8 (faster on CPUs), fp16 (for CUDA) or bf16 (--backend openvino, CPUs with "
                        "AMX or AVX512-BF16); tags may differ a little: `ramcli models quantize [--to fp16]` makes "
                        "int8/fp16 once, `ramcli models verify --photos` measures them all. auto: fp32, and fp16 on "
                        "CUDA where its tags agree with fp32's to 99.5 % there.", rich_help_panel=SPEED)]
BackendOpt = Annotated[Backend, typer.Option(
    "--backend", help="Runtime of the model: onnxruntime, openvino (CPU; pip install 'ramcli[openvino]') or auto "
                      "(the faster of the two for --precision here, measured once).", rich_help_panel=SPEED)]
DecodeOpt = Annotated[Decode, typer.Option(
    "--decode", help="JPEG decoding: exact, draft (the decoder scales down first: 2-5x faster, tags may "
                     "differ a little) or auto (draft on CUDA, where decoding is the bottleneck).",
    rich_help_panel=SPEED)]
ScreenOpt = Annotated[int, typer.Option(
    "--screen", min=0, metavar="K", help="Tag screening: the tag head scores only the K tags nearest each photo in "
    "CLIP space (your own tags always); faster, may miss tags: `ramcli models verify --photos --screen K` says "
    "how many. 0: every tag.", rich_help_panel=SPEED)]
LangOpt = Annotated[Lang, typer.Option(
    "--lang", help="Tag names in keywords and output: en, zh (RAM/RAM++ Chinese names) or both.",
    rich_help_panel=WHAT)]
SidecarNameOpt = Annotated[SidecarName, typer.Option(
    "--sidecar-name", help="auto: IMG_0001.xmp for camera RAW (the RAW convention), photo.jpg.xmp for the rest; "
    "ext: photo.jpg.xmp (darktable, digiKam); stem: photo.xmp (Lightroom).",
    rich_help_panel=WHAT)]
HierarchyRootOpt = Annotated[str, typer.Option(
    "--hierarchy-root", help="Root of lr:hierarchicalSubject entries (ramcli|dog); empty: plain tags.",
    rich_help_panel=WHAT)]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Photos per inference batch.",
                                           rich_help_panel=SPEED)]
FilesFromOpt = Annotated[Path | None, typer.Option(
    "--files-from", help="Read more paths from FILE, one per line (`-`: standard input), like exiftool's -@.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="A line per photo, not only problems.",
                                          rich_help_panel=OUTPUT)]


def path_list(paths: list[Path] | None, files_from: Path | None) -> list[Path]:
    """PATHS with ``-`` (read from standard input) and `--files-from FILE` expanded, one path a line.

    Why: `find ... | ramcli tag -` and lists made by other tools, without the argument-length limit.
    Empty lines are skipped; a name is taken as it is (no globbing, no quoting).
    """
    from ramcli.errors import UsageError

    out: list[Path] = []
    stdin_used = False
    for p in paths or []:
        if str(p) == "-":
            stdin_used = True
            out += _read_list(None)
        else:
            out.append(p)
    if files_from is not None:
        if str(files_from) == "-" and stdin_used:
            raise UsageError("`-` and --files-from - both read standard input; give it once")
        out += _read_list(None if str(files_from) == "-" else files_from)
    if not out:
        raise UsageError("no photos or folders given", hint="give PATHS, `-` to read them from standard input, "
                                                            "or --files-from FILE")
    return out


def _read_list(file: Path | None) -> list[Path]:
    import sys

    from ramcli.errors import UsageError

    try:
        data = sys.stdin.buffer.read() if file is None else file.read_bytes()
    except OSError as err:
        raise UsageError(f"cannot read the list of paths ({err.strerror or err})", path=file) from None
    text = data.decode("utf-8", "surrogateescape")  # any file name, as the scan reads them
    return [Path(line) for line in text.splitlines() if line.strip()]
