"""RAM++'s per-image description weighting as an ONNX graph, run by the engine beside the tag head.

RAM++ gives each tag D description embeddings (51 for the built-in tags) and, per image, weights
them by a softmax of their similarity to the image's CLS embedding (`vocab.Vocabulary.tag_embeds`
is the same step in numpy, and the definition the tests hold this graph to). The step does little
arithmetic but reads all 4,585 x 51 x 512 description embeddings (480 MB) twice per image,
which is why it belongs on the device that runs the tag head:

* on CUDA, numpy on the host took ~80 ms per photo here (2 cores), enough to cap a GPU at about
  a dozen photos per second. The engine keeps the descriptions on the GPU once and chains this
  graph's output into the tag head there (onnxruntime I/O binding): nothing of size tags x 512
  crosses the bus.
* on the CPU, onnxruntime's batched products beat numpy's loop: full-size RAM++, 2 cores, two
  images side by side on one thread each, 62-70 instead of 86-88 ms per photo; one image on 2
  threads, 59 instead of 91 ms.

The graph has no weights (the descriptions are an input, so the built-in tags and each group of
custom tags share it), and ships with ramcli (``reweight.onnx`` beside this module, 1 KB) rather
than with each model, so models converted before it existed use it too. :func:`build` defines it
with ``onnx.helper``; the stored file is what it builds (tests/test_reweight.py checks it), so
tagging reads bytes and never imports onnx. After changing :func:`build`, write the file again
with ``python -m ramcli.runtime.reweight``. Standard operators only (opset 17).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

OUTPUT = "tag_embeds"
STORED = Path(__file__).with_name("reweight.onnx")


@cache
def graph() -> bytes:
    """The serialized model :func:`build` makes, as stored with ramcli."""
    return STORED.read_bytes()


def build() -> bytes:
    """The serialized model: tag_embeds[b, i] = sum_k softmax_k(scale * <cls_b/|cls_b|, d_ik>) d_ik.

    Inputs ``cls`` (B, C), ``descriptions`` (n, D, C) and ``scale`` (a scalar, the checkpoint's
    exp(reweight_scale)), all float32; output ``tag_embeds`` (B, n, C)."""
    from onnx import TensorProto, helper

    def ints(name: str, *values: int) -> TensorProto:
        return helper.make_tensor(name, TensorProto.INT64, [len(values)], list(values))

    node = helper.make_node
    nodes = [
        # the query: the unit CLS embedding times the checkpoint's exp(reweight_scale), as in numpy
        node("ReduceL2", ["cls"], ["norm"], axes=[-1], keepdims=1),
        node("Div", ["cls", "norm"], ["unit"]),
        node("Mul", ["unit", "scale"], ["query"]),
        # similarities to every description at once: (B, C) x (n*D, C)^T, without a transposed copy
        node("Shape", ["descriptions"], ["shape"]),
        node("Slice", ["shape", "at0", "at2"], ["n_d"]),
        node("Slice", ["shape", "at2", "at3"], ["c"]),
        node("Concat", ["minus1", "c"], ["rows_shape"], axis=0),
        node("Reshape", ["descriptions", "rows_shape"], ["rows"]),
        node("Gemm", ["query", "rows"], ["sims"], transB=1),
        node("Concat", ["minus1", "n_d"], ["per_tag_shape"], axis=0),
        node("Reshape", ["sims", "per_tag_shape"], ["per_tag"]),
        node("Softmax", ["per_tag"], ["weights"], axis=-1),
        # (B, n, 1, D) x (n, D, C): one small product per image and tag, no (B, n, D, C) temporary
        node("Unsqueeze", ["weights", "minus2"], ["weights_row"]),
        node("MatMul", ["weights_row", "descriptions"], ["weighted"]),
        node("Squeeze", ["weighted", "minus2"], [OUTPUT]),
    ]
    f = TensorProto.FLOAT
    g = helper.make_graph(
        nodes, "ram_plus_description_weighting",
        [helper.make_tensor_value_info("cls", f, ["batch", "dim"]),
         helper.make_tensor_value_info("descriptions", f, ["tags", "per_tag", "dim"]),
         helper.make_tensor_value_info("scale", f, [])],
        [helper.make_tensor_value_info(OUTPUT, f, ["batch", "tags", "dim"])],
        [ints("at0", 0), ints("at2", 2), ints("at3", 3), ints("minus1", -1), ints("minus2", -2)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


if __name__ == "__main__":  # write the stored graph again from its definition
    STORED.write_bytes(build())
