"""How fast onnxruntime multiplies matrices here, float32 against int8: the ceiling of ``--precision int8``.

ramcli's int8 graphs are onnxruntime's dynamic quantisation (ramcli.models.quantize): every MatMul
becomes a u8 x s8 product. How much faster that is than float32 depends on the CPU, not on
ramcli: with VNNI (``avx512_vnni``/``avx_vnni``) or AMX one instruction does what takes three
without it (vpmaddubsw, vpmaddwd, vpaddd on AVX-512BW). Full-size RAM++ spends ~75 % of its
int8 time in these products (onnxruntime's profiler), so their rate bounds what int8 can gain.

Each shape is a one-node graph (float32 weights, the product's real sizes), timed as float32 and
as quantised by the same ``quantize_dynamic`` call that ``ramcli models quantize`` makes, in one
process, alternating, each the median of ``--repeats`` runs after a warm-up. Prints one JSON
document: the CPU's relevant flags, GFLOP/s (int8: giga-operations, the same count) per shape
and the int8 / float32 ratio.

Usage:
  python tests/benchmarks/gemm_rates.py [--threads 1] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

# (name, rows, inner, columns): the products that hold most of full-size RAM++'s FLOPs.
SHAPES = [
    ("swin stage 1 qkv (9216 tokens)", 9216, 192, 576),
    ("swin stage 3 qkv", 576, 768, 2304),
    ("swin stage 3 mlp fc1", 576, 768, 3072),
    ("swin stage 3 mlp fc2", 576, 3072, 768),
    ("swin stage 4 mlp fc1", 144, 1536, 6144),
    ("tag head ffn (1024 tags)", 1024, 768, 3072),
]
FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags() -> dict[str, bool]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    have = set(line.split(":", 1)[-1].split())
    return {f: f in have for f in FLAGS}


def matmul_graph(path: Path, k: int, n: int) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((k, n), dtype=np.float32) * 0.02
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n])],
        [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              str(path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()

    import numpy as np
    import onnxruntime as ort

    from ramcli.models.quantize import _int8
    from ramcli.runtime.engine import session_options

    def session(path: Path) -> ort.InferenceSession:
        so = session_options()
        so.intra_op_num_threads = args.threads
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, m, k, n in SHAPES:
            fp32, int8 = Path(tmp, f"{k}x{n}.onnx"), Path(tmp, f"{k}x{n}.int8.onnx")
            matmul_graph(fp32, k, n)
            _int8(fp32, int8)
            sessions = {"fp32": session(fp32), "int8": session(int8)}
            x = {"x": np.random.default_rng(1).standard_normal((m, k), dtype=np.float32)}
            times: dict[str, list[float]] = {p: [] for p in sessions}
            for s in sessions.values():
                s.run(None, x)  # warm-up: first-run allocations
            for _ in range(args.repeats):
                for p, s in sessions.items():
                    t = time.perf_counter()
                    s.run(None, x)
                    times[p].append(time.perf_counter() - t)
            ops = 2 * m * k * n
            rate = {p: ops / statistics.median(v) / 1e9 for p, v in times.items()}
            rows.append({"shape": name, "m": m, "k": k, "n": n,
                         "fp32_gflops": round(rate["fp32"], 1), "int8_gops": round(rate["int8"], 1),
                         "int8_over_fp32": round(rate["int8"] / rate["fp32"], 2)})
    ratios = [r["int8_over_fp32"] for r in rows]
    print(json.dumps({"threads": args.threads, "onnxruntime": ort.__version__, "cpu_flags": cpu_flags(),
                      "shapes": rows, "int8_over_fp32_median": round(statistics.median(ratios), 2)}, indent=2))


if __name__ == "__main__":
    main()
