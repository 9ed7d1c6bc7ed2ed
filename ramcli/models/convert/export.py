"""Checkpoint -> installed ONNX model, with the parity check in the same place (as rclip does).

``import_checkpoint`` loads the official file strictly, infers the architecture, exports the
image encoder and the tag head to ONNX, saves the label embeddings, then runs the *runtime*
path (onnxruntime + numpy) against the PyTorch model on fixed inputs before the model folder
is committed. A conversion that does not reproduce PyTorch is never installed.
"""

from __future__ import annotations

import json
import shutil
import stat
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ramcli import __version__
from ramcli.errors import CheckpointError, RamcliError
from ramcli.hashing import sha256_file
from ramcli.models import store
from ramcli.models.convert.checkpoint import build_model, infer_config, load_state_dict, remap_keys
from ramcli.models.convert.ram import FewTagHead, ImageEncoder, RamModel, TagHead
from ramcli.runtime.engine import Engine, EngineOptions, session_options
from ramcli.runtime.images import parity_images
from ramcli.runtime.tagging import Tagger
from ramcli.runtime.vocabulary import Vocabulary

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


def export_onnx(model: RamModel, out: Path) -> None:
    cfg = model.cfg
    size = cfg.swin.image_size
    image = torch.zeros(1, cfg.swin.in_chans, size, size)
    export_graph(ImageEncoder(model), (image,), out / store.ENCODER, ["image"], "image_embeds",
            {"image": {0: "batch"}, "image_embeds": {0: "batch"}})
    embeds = torch.zeros(2, cfg.swin.num_tokens, cfg.embed_dim)
    tags = torch.zeros(2, 3, cfg.embed_dim)
    axes = {"image_embeds": {0: "batch"}, "tag_embeds": {0: "batch", 1: "tags"}, "logits": {0: "batch", 1: "tags"}}
    export_graph(TagHead(model), (embeds, tags), out / store.HEAD, ["image_embeds", "tag_embeds"], "logits", axes,
                 simplify=True)
    export_graph(FewTagHead(model), (embeds.half(), tags), out / store.HEAD_FEW, ["image_embeds", "tag_embeds"],
                 "logits", axes, simplify=True)


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


def parity_check(model: RamModel, installed: store.InstalledModel, images: np.ndarray) -> dict[str, float]:
    """Max |PyTorch - runtime| over image embeddings, logits and scores, on ``images``."""
    with torch.no_grad():
        x = torch.from_numpy(images)
        ref_embeds = model.encode_image(x).numpy()
        ref_logits = model(x).numpy()
    engine = Engine(installed, EngineOptions(device="cpu"))
    tagger = Tagger(engine, Vocabulary.builtin(installed))
    embeds, logits = tagger.infer(images)
    sig = lambda v: 1 / (1 + np.exp(-v.astype(np.float64)))  # noqa: E731
    report = {
        "image_embeds_max_abs": float(np.abs(embeds - ref_embeds).max()),
        "logits_max_abs": float(np.abs(logits - ref_logits).max()),
        "scores_max_abs": float(np.abs(sig(logits) - sig(ref_logits)).max()),
        "images": int(images.shape[0]),
    }
    if engine.few_head is not None:  # the few-tags head (float16 tokens in) against PyTorch on the same inputs
        tokens = embeds.astype(np.float16)
        labels = tagger.vocab.tag_embeds(embeds)[:, : min(5, logits.shape[1])]
        got = engine.few_head.run(None, {"image_embeds": tokens, "tag_embeds": labels})[0]
        with torch.no_grad():
            want = model.tag_logits(torch.from_numpy(tokens).float(), torch.from_numpy(labels)).numpy()
        report["few_tags_logits_max_abs"] = float(np.abs(got - want).max())
    return report


def _worst_logits(parity: dict[str, float]) -> float:
    """The largest logit difference of a parity report: the tag head's, or the few-tags head's."""
    return max(parity["logits_max_abs"], parity.get("few_tags_logits_max_abs", 0.0))


def _copy_text(src: Path | None, dst: Path) -> None:
    if src is not None:
        if not src.is_file():
            raise RamcliError("no such file", path=src, hint="check the path")
        shutil.copyfile(src, dst)


def import_checkpoint(
    checkpoint: Path,
    name: str,
    *,
    tag_list: Path,
    tag_list_zh: Path | None = None,
    thresholds: Path | None = None,
    extra_files: dict[str, Path] | None = None,
    image_size: int | None = None,
    default_threshold: float = 0.68,
    source: dict[str, Any] | None = None,
    report: Report = lambda _msg: None,
    state: Mapping[str, torch.Tensor] | None = None,
) -> store.InstalledModel:
    """Convert ``checkpoint`` (``state``: its already-loaded tensors) and install it as ``name``."""
    names, state = read_inputs(checkpoint, tag_list, state, report)
    state = remap_keys(state)
    cfg = infer_config(state, len(names), image_size)
    model = build_model(state, cfg, source=checkpoint)
    if tag_list_zh is not None and len(store.read_lines(tag_list_zh)) != len(names):
        raise CheckpointError(f"does not have {len(names)} lines like the tag list", path=tag_list_zh)
    if thresholds is not None:
        store.read_thresholds(thresholds, len(names))

    with store.staging(name) as staging:
        report("exporting to ONNX")
        t0 = time.perf_counter()
        export_onnx(model, staging)
        np.save(staging / store.LABELS, state["label_embed"].float().numpy())
        _copy_text(tag_list, staging / store.TAG_LIST)
        _copy_text(tag_list_zh, staging / store.TAG_LIST_ZH)
        _copy_text(thresholds, staging / store.THRESHOLDS)
        for filename, path in (extra_files or {}).items():
            _copy_text(path, staging / filename)
        meta = {
            "name": name,
            "family": cfg.family,
            "num_tags": cfg.num_tags,
            "descriptions_per_tag": cfg.descriptions_per_tag,
            "reweight_scale": float(state["reweight_scale"]) if "reweight_scale" in state else None,
            "default_threshold": default_threshold,
            "architecture": {"swin": {k: v for k, v in asdict(cfg.swin).items() if k != "extra"},
                             "tag_head": asdict(cfg.head), "embed_dim": cfg.embed_dim,
                             "num_tokens": cfg.swin.num_tokens},
            **provenance(checkpoint, cfg.swin.image_size, t0, source),
        }
        (staging / store.META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        report("checking ONNX against PyTorch")
        partial = store.InstalledModel(name, staging)
        parity = parity_check(model, partial, parity_images(partial.preprocess))
        worst = _worst_logits(parity)
        if worst > PARITY_TOLERANCE:
            raise RamcliError(f"ONNX export does not reproduce PyTorch (max logit difference {worst:.2e})",
                              path=checkpoint, hint="please report this with `ramcli doctor --json`")
        meta["parity"] = parity
        (staging / store.META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return store.InstalledModel(name, store.commit(staging, name))


def verify(name: str, images: np.ndarray | None = None) -> dict[str, Any]:
    """Re-run the parity check of an installed model against its source checkpoint.

    One entry point for every convertible family (``ramcli models verify`` calls only this), so a
    new family is one branch here rather than a change to the CLI. The result always has
    ``image_embeds_max_abs``, ``logits_max_abs``, ``scores_max_abs``, ``images`` and ``ok``.
    """
    installed = store.get(name)
    if installed.family == "tag2text":
        from ramcli.models.convert.tag2text_export import (
            verify as verify_tag2text,  # imports this module: not at the top
        )

        return verify_tag2text(name, images)
    if installed.family not in {"ram", "ram_plus"}:
        raise RamcliError(f"model {name!r} ({installed.family}) has no parity check to re-run",
                          hint="its parity was checked when it was converted; see meta.json")
    src = Path(installed.meta["source"]["checkpoint"])
    if not src.is_file():
        raise RamcliError("the source checkpoint is gone", path=src,
                          hint=f"pull or import {name} again to verify it")
    state = remap_keys(load_state_dict(src))
    cfg = infer_config(state, installed.num_tags, installed.preprocess.image_size)
    model = build_model(state, cfg, source=src)
    imgs = images if images is not None else parity_images(installed.preprocess)
    result = parity_check(model, installed, imgs)
    return {"model": name, "checkpoint": str(src), **result, "ok": _worst_logits(result) <= PARITY_TOLERANCE}
