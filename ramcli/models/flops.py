"""How much arithmetic a photo costs, counted on the model's own ONNX graphs, and how fast this
machine multiplies matrices: the two numbers that say how near the limit a run is.

``ramcli bench`` divides the FLOPs of each stage by its time (achieved GFLOP/s) and by the rate a
plain matrix product reaches here with the same threads (the practical ceiling: Swin-L and the
tag head are ~99 % matrix products). Counting reads the fp32 graphs whatever precision runs, so
an int8 or bf16 run is measured in the same fp32-equivalent FLOPs and its rate can pass the fp32
ceiling.

Counting: 2 FLOPs per multiply-add of MatMul, Gemm and Conv; everything else (softmax, norms,
GELU, adds) is left out, as FLOP counts of transformers usually do. Shapes come from
onnxruntime's symbolic shape inference with the batch fixed to 1 (onnx's own inference leaves
Swin's attention products unknown after its Shape -> Reshape chains). The tag head is linear in
the number of tags, so it is counted at 1 and 2 tags and kept as ``fixed + per_tag * tags``.
On full-size RAM++ this gives the FLOPs that ``docs/ram-plus.md`` states from the reference.
The result is cached in the model folder (``flops.json``), keyed by the graphs' sizes and times.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ramcli.models.store import ENCODER, HEAD, InstalledModel

CACHE = "flops.json"


@dataclass(frozen=True)
class ModelFlops:
    """GFLOP per image: the image encoder, and the tag head as ``head_fixed + head_per_tag * tags``."""

    encoder: float
    head_fixed: float
    head_per_tag: float

    def head(self, tags: int) -> float:
        return self.head_fixed + self.head_per_tag * tags


def reweight_gflop(tags: int, descriptions: int, dim: int = 512) -> float:
    """RAM++'s description weighting per image: the similarities to every description and their
    weighted sum, each tags x descriptions x dim multiply-adds (ramcli/runtime/reweight.py)."""
    return 4 * tags * descriptions * dim / 1e9


def graph_gflop(path: Path, dims: dict[str, int]) -> float:
    """GFLOP of one run of the graph at ``path`` with its symbolic input dims set from ``dims``
    (a name missing there counts as 1). Raises ValueError where a product's shape stays unknown:
    a count with holes would understate the work and flatter the rate."""
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.load(os.fspath(path), load_external_data=False)
    for value in model.graph.input:
        for d in value.type.tensor_type.shape.dim:
            if d.dim_param:
                size = dims.get(d.dim_param, 1)
                d.Clear()
                d.dim_value = size
    model = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    shapes: dict[str, list[int | None]] = {
        v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
        for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    shapes.update({t.name: list(t.dims) for t in model.graph.initializer})
    total = 0
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm", "Conv"):
            continue
        a, w, out = shapes.get(node.input[0]), shapes.get(node.input[1]), shapes.get(node.output[0])
        if not a or not w or not out or None in (*a, *w, *out):
            raise ValueError(f"{path.name}: the shape of {node.op_type} {node.name!r} is unknown")
        if node.op_type == "Conv":  # out (N, Cout, H, W), weight (Cout, Cin/groups, kh, kw)
            total += 2 * math.prod(out) * math.prod(w[1:])  # type: ignore[arg-type]
        elif node.op_type == "Gemm" and any(at.name == "transA" and at.i for at in node.attribute):
            total += 2 * math.prod(out) * a[0]  # type: ignore[operator]
        else:  # out (..., M, N) with a (..., M, K)
            total += 2 * math.prod(out) * a[-1]  # type: ignore[arg-type, operator]
    return total / 1e9


def _key(model: InstalledModel) -> list[list[float]]:
    return [[(model.path / g).stat().st_size, (model.path / g).stat().st_mtime] for g in (ENCODER, HEAD)]


def model_flops(model: InstalledModel) -> ModelFlops | None:
    """The model's FLOPs per image, counted once and cached beside its graphs; None for a family
    whose graphs are not the encoder + tag head pair this counts (Tag2Text's captioner)."""
    cache = model.path / CACHE
    key = _key(model)
    try:
        stored = json.loads(cache.read_text(encoding="utf-8"))
        if stored.get("key") == key:
            return ModelFlops(**stored["gflop"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        one, two = (graph_gflop(model.path / HEAD, {"tags": t}) for t in (1, 2))
        flops = ModelFlops(encoder=graph_gflop(model.path / ENCODER, {}), head_fixed=2 * one - two,
                           head_per_tag=two - one)
    except (ValueError, KeyError, OSError):
        return None
    tmp = cache.with_name(f".{CACHE}.{os.getpid()}")
    try:  # a read-only model folder still gets its numbers, only not cached
        tmp.write_text(json.dumps({"key": key, "gflop": asdict(flops)}), encoding="utf-8")
        os.replace(tmp, cache)
    except OSError:
        tmp.unlink(missing_ok=True)
    return flops


def matmul_gflops(threads: int, size: int = 2048, seconds: float = 1.5) -> float:
    """This machine's float32 matrix-product rate through onnxruntime (the kernels the model runs
    on) with ``threads`` threads (0: onnxruntime's default): the best of repeated size^3 products
    within about ``seconds``. The ceiling a run's achieved rate is compared with."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from ramcli.runtime.engine import session_options

    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [size, size]) for n in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    so = session_options()
    if threads:
        so.intra_op_num_threads = threads
    session = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal((size, size), dtype=np.float32) for n in "ab"}
    session.run(None, feeds)  # warm-up: thread pool, packing
    best = math.inf
    end = time.perf_counter() + seconds
    while True:
        t = time.perf_counter()
        session.run(None, feeds)
        best = min(best, time.perf_counter() - t)
        if time.perf_counter() > end:
            break
    return 2 * size**3 / best / 1e9
