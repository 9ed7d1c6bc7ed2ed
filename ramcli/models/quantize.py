"""int8 copies of a model's graphs, and how far the speed options move the tags.

An opt-in speed-up for CPUs. ``ramcli models quantize NAME`` writes ``<graph>.int8.onnx``
beside the image encoder and the tag head (Tag2Text's caption graphs stay float32):
onnxruntime's dynamic quantisation, with the weights of every MatMul/Gemm
stored as int8 per output channel and the activations quantised on the fly at each call (the
attention products' two activations as well). ``--precision int8`` runs these files.
``--to fp16`` writes ``<graph>.fp16.onnx`` instead, for CUDA (float16 weights and activations,
float32 inputs and outputs).

Because int8 and fp16 move the scores, the tags can change. :func:`agreement` measures by how much,
on the user's photos or on fixed sample images: the share of tags both precisions report
(shared / either, over all images), the share of images with identical tag sets, the largest
score difference and, for Tag2Text, identical captions. The numbers of the last measurement are
kept in ``meta.json`` and printed by ``ramcli models quantize`` and ``ramcli models verify``.
``pipeline.samples.decode_agreement`` measures draft JPEG decoding (``--decode draft``) the same way.

Needs ``onnxruntime.quantization`` (with the ``onnx`` package), not torch.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ramcli.errors import RamcliError
from ramcli.models import store
from ramcli.models.families import family_of
from ramcli.runtime.engine import EngineOptions
from ramcli.runtime.images import parity_images
from ramcli.runtime.tagging import sigmoid

INT8 = "int8"
TOP_K = 10
FP16 = "fp16"  # for CUDA: half the memory traffic, tensor cores; on a CPU onnxruntime casts back


def graphs(model: store.InstalledModel) -> list[Path]:
    """The fp32 graphs that get variants: the image encoder and the tag head (the family says)."""
    return [model.path / name for name in family_of(model).quantized_graphs]


def has_precision(model: store.InstalledModel, precision: str) -> bool:
    return precision == "fp32" or all(store.graph_variant(g, precision).is_file() for g in graphs(model))


def quantize(model: store.InstalledModel, precision: str = INT8,
             report: Callable[[str], None] = lambda _m: None) -> list[Path]:
    """Write the ``precision`` variant of each graph (atomically: a partial file, then a rename)."""
    if not family_of(model).quantized_graphs:
        raise RamcliError(f"model {model.name!r} ({model.family}) is not a tagging model", hint="nothing to quantise")
    if precision not in {INT8, FP16}:
        raise RamcliError(f"cannot make a {precision!r} version", hint=f"use {INT8} or {FP16}")
    written = []
    for g in graphs(model):
        out = store.graph_variant(g, precision)
        partial = out.with_name(f".{out.name}.partial")
        t = time.perf_counter()
        try:
            (_int8 if precision == INT8 else _fp16)(g, partial)
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)
        report(f"{out.name}: {out.stat().st_size / 1e6:.0f} MB (fp32 {g.stat().st_size / 1e6:.0f} MB) "
               f"in {time.perf_counter() - t:.0f} s")
        written.append(out)
    return written


def _int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        # per_channel: one scale per output channel keeps Swin's widely ranging weights apart;
        # MatMul/Gemm only: they hold ~95 % of the FLOPs, the rest stays float32. The attention
        # products (both sides activations) too: Swin-L's encoder 1.42 instead of 1.70 s, with
        # the same max difference from fp32 (0.24 against 0.22 on its image embeddings).
        logging.disable(logging.WARNING)  # its advice to pre-process, via the root logger
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gemm"], extra_options={"MatMulConstBOnly": False})
    finally:
        logging.disable(logging.NOTSET)


def _fp16(src: Path, dst: Path) -> None:
    """Weights and activations in float16, inputs and outputs still float32 (for CUDA's tensor
    cores). Swin's shift masks (-100) and attention biases are well inside float16's range."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(os.fspath(src)), keep_io_types=True)
    onnx.save(model, os.fspath(dst))


def compare_tags(on_ref: np.ndarray, on_low: np.ndarray) -> tuple[int, int, int]:
    """(B, T) tag decisions -> (tags both report, tags either reports, images with identical sets)."""
    return (int((on_ref & on_low).sum()), int((on_ref | on_low).sum()),
            int((on_ref == on_low).all(axis=1).sum()))


def top_overlap(s_ref: np.ndarray, s_low: np.ndarray, k: int) -> int:
    """(B, T) scores -> how many of each image's ``k`` best tags both rankings share, summed."""
    k = min(k, s_ref.shape[1])
    ref = np.argpartition(-s_ref, k - 1, axis=1)[:, :k]
    low = np.argpartition(-s_low, k - 1, axis=1)[:, :k]
    return sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ref, low, strict=True))


def agreement(model: store.InstalledModel, images: np.ndarray | None = None, *,
              precision: str = INT8, backend: str = "onnxruntime") -> dict[str, Any]:
    """Tags of ``precision`` (on ``backend``) against fp32 on ``images`` (B, 3, S, S), at the model's thresholds."""
    # fp16 is for CUDA: measured there where it loads (what --precision auto reads), else on the CPU
    device = "auto" if precision == FP16 else "cpu"
    low, result = _against_fp32(model, images, EngineOptions(device=device, precision=precision, backend=backend))
    return {"precision": precision, **({"backend": backend} if backend != "onnxruntime" else {}),
            "device": low.engine.provider, **result}


def _against_fp32(model: store.InstalledModel, images: np.ndarray | None,
                  fast: EngineOptions) -> tuple[Any, dict[str, Any]]:
    """The tagger ``fast`` opens, and how far its tags on ``images`` (default: fixed samples) are from fp32's
    on the same device."""
    from ramcli.runtime.taggers import open_tagger

    imgs = images if images is not None else parity_images(model.preprocess, 4)
    ref = open_tagger(model, EngineOptions(device=fast.device))
    low = open_tagger(model, fast)
    return low, compare(model, ref, imgs, low, imgs)


def compare(model: store.InstalledModel, ref: Any, ref_x: np.ndarray, low: Any, low_x: np.ndarray,
            batch: int = 2) -> dict[str, Any]:
    """Run two taggers on their inputs (the same photos); how far ``low``'s tags are from ``ref``'s."""
    thresholds = model.thresholds
    captions = family_of(model).captions
    shared = either = same = captions_same = reported = top_shared = 0
    worst = 0.0
    for i in range(0, len(ref_x), batch):
        (e_ref, l_ref), (e_low, l_low) = ref.infer(ref_x[i:i + batch]), low.infer(low_x[i:i + batch])
        s_ref, s_low = sigmoid(l_ref), sigmoid(l_low)
        on_ref = s_ref > thresholds
        a, b, c = compare_tags(on_ref, s_low > thresholds)
        shared, either, same, reported = shared + a, either + b, same + c, reported + int(on_ref.sum())
        top_shared += top_overlap(s_ref, s_low, TOP_K)
        worst = max(worst, float(np.abs(s_ref - s_low).max()))
        if captions:
            captions_same += sum(x == y for x, y in zip(ref.captions(e_ref, l_ref), low.captions(e_low, l_low),
                                                        strict=True))
    n = len(ref_x)
    result: dict[str, Any] = {
        "images": n,
        "reference_tags": reported,  # how many tags the agreement is about
        "tag_agreement": round(shared / either, 4) if either else 1.0,
        # the reference's tags the other side also fires, and the tags only the other side fires
        "fired_kept": round(shared / reported, 4) if reported else 1.0,
        "tags_gained": either - reported,
        "identical_tag_sets": round(same / n, 4) if n else None,
        "scores_max_abs": worst,
        # thresholds aside: how much of each image's ranking survives (informative even when few tags fire)
        f"top{TOP_K}_overlap": round(top_shared / (n * min(TOP_K, len(thresholds))), 4) if n else None,
    }
    if captions:
        result["identical_captions"] = round(captions_same / n, 4) if n else None
    return result


def screen_agreement(model: store.InstalledModel, images: np.ndarray | None, k: int) -> dict[str, Any]:
    """Tag screening at ``k`` against the full tag head on ``images``: ``fired_kept`` is the screen's
    recall (the scores of the tags it keeps are the full head's, so it can only lose tags)."""
    return {"screen": k, **_against_fp32(model, images, EngineOptions(device="cpu", screen=k))[1]}


def measure(model: store.InstalledModel, images: np.ndarray | None, precision: str = INT8) -> dict[str, Any]:
    """:func:`agreement`, kept in meta.json."""
    result = agreement(model, images, precision=precision)
    remember(model, result)
    return result


def remember(model: store.InstalledModel, result: dict[str, Any]) -> None:
    """Keep the latest agreement in meta.json (rewritten whole, then renamed over)."""
    meta = json.loads((model.path / store.META).read_text(encoding="utf-8"))
    meta.setdefault("precisions", {})[result["precision"]] = {
        **{k: v for k, v in result.items() if k != "precision"},
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = model.path / f".{store.META}.partial"
    tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    os.replace(tmp, model.path / store.META)
