"""What every family's conversion shares: ONNX export, provenance, reading inputs, copying files.

Both family converters (``export`` for RAM/RAM++, ``tag2text_export``) and the CLIP text
encoder's import this module; none of them imports another, so adding a family adds a
converter beside them, not an edge between them.
"""

from __future__ import annotations

import shutil
import stat
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ramcli import __version__
from ramcli.errors import RamcliError
from ramcli.hashing import sha256_file
from ramcli.models import store
from ramcli.models.convert.checkpoint import load_state_dict
from ramcli.runtime.engine import session_options

OPSET = 17
PARITY_TOLERANCE = 1e-3  # logits; a faithful export lands near 1e-6, a broken one far above
Report = Callable[[str], None]


def export_graph(module: torch.nn.Module, args: tuple[torch.Tensor, ...], path: Path, inputs: list[str],
                 output: str | list[str], axes: dict[str, dict[int, str]], *, external_data: bool = False,
                 simplify: bool = False) -> None:
    """Export ``module`` to ``path`` (one output name, or a list for a graph with several).

    ``external_data`` puts the weights in ``<path>.data``, which onnxruntime memory-maps: the 254 MB
    CLIP text encoder then loads in 0.70 s instead of 1.65 s, the five full-size Tag2Text graphs in
    6.2-7.1 s instead of 7.8-9.4 s with 0.64 instead of 1.59 GB resident after loading (2 cores).
    Such a graph must be loaded from its path (its weights are not in the ``.onnx`` file's bytes).
    ``simplify`` stores the graph as ``simplify_graph`` leaves it.
    """
    outputs = [output] if isinstance(output, str) else list(output)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript exporter deprecation and tracer chatter
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True, dynamo=False)
    if external_data:
        import onnx

        graph = onnx.load(str(path))
        onnx.save_model(graph, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
        # onnx creates the data file 0600: give it the graph's mode, or a model cache shared between
        # users (installed by another account) holds graphs whose weights only their owner can read.
        path.with_name(path.name + ".data").chmod(stat.S_IMODE(path.stat().st_mode))
    if simplify:
        simplify_graph(path, external_data=external_data)


def simplify_graph(path: Path, *, external_data: bool) -> None:
    """Replace the graph at ``path`` with onnxruntime's basic-level optimisation of it.

    Why: a session's start is mostly spent resolving nodes, and the TorchScript exporter leaves
    hundreds of Constant, Identity and duplicated shape nodes. The basic level folds constants and
    removes redundant nodes and repeated subexpressions. It writes only standard ONNX operators,
    the same for every execution provider, and changes no result. The CLIP text encoder goes from
    1267 to 630 nodes, and a search's one-run session for it loads and runs in 0.32 instead of
    0.37 s (2 cores; ``tests/benchmarks/search.py``). The higher levels, which fuse into
    provider-specific kernels, still run when a session loads the file.
    """
    import onnxruntime as ort

    work = path.parent / f".simplify-{path.name}"
    work.mkdir()
    try:
        so = session_options()  # often the process's first session: it sets the thread's mode for good
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = str(work / path.name)
        if external_data:
            so.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                        path.name + ".data")
            so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        mode = stat.S_IMODE(path.stat().st_mode)
        for name in (path.name + ".data",) if external_data else ():
            (work / name).chmod(mode)
            (work / name).replace(path.parent / name)
        (work / path.name).replace(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def provenance(checkpoint: Path, image_size: int, started: float, source: dict[str, Any] | None) -> dict[str, Any]:
    """The meta.json fields every converted image model has: its preprocessing (the authors'
    transform, plus EXIF orientation), where it came from (sha256) and how it was made."""
    return {
        "preprocess": {"image_size": image_size, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                       "resize": "bilinear", "exif_orientation": True},
        "source": {"checkpoint": str(checkpoint.resolve()), "sha256": sha256_file(checkpoint),
                   "bytes": checkpoint.stat().st_size, **(source or {})},
        "converted_by": f"ramcli {__version__}, torch {torch.__version__}",
        "export_seconds": round(time.perf_counter() - started, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def read_inputs(checkpoint: Path, tag_list: Path, state: Mapping[str, torch.Tensor] | None,
                report: Report) -> tuple[list[str], Mapping[str, torch.Tensor]]:
    """The tag names, checked first (cheap), and the checkpoint's tensors unless the caller has them."""
    if not tag_list.is_file():
        raise RamcliError("no such tag list", path=tag_list, hint="pass --tag-list with the model's tag file")
    names = store.read_lines(tag_list)
    if state is None:
        report(f"reading {checkpoint}")
        state = load_state_dict(checkpoint)
    return names, state


def copy_text(src: Path | None, dst: Path) -> None:
    if src is not None:
        if not src.is_file():
            raise RamcliError("no such file", path=src, hint="check the path")
        shutil.copyfile(src, dst)


def source_checkpoint(installed: store.InstalledModel) -> Path:
    """The checkpoint an installed model was converted from (``verify`` re-reads it), if still there."""
    recorded = (installed.meta.get("source") or {}).get("checkpoint")
    if not recorded:  # converted by hand or by an older ramcli that recorded no source
        raise RamcliError("meta.json records no source checkpoint", path=installed.path / "meta.json",
                          hint=f"import {installed.name} again from its checkpoint to verify it")
    src = Path(recorded)
    if not src.is_file():
        raise RamcliError("the source checkpoint is gone", path=src,
                          hint=f"pull or import {installed.name} again to verify it")
    return src
