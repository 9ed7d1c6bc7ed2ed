"""OpenVINO as a second backend for the image encoder and the tag head, on the CPU.

Why: on CPUs with bfloat16 matrix units (Intel AMX, AVX512-BF16) OpenVINO runs the fp32 ONNX
graphs in bf16 when asked (``--backend openvino --precision bf16``), which onnxruntime's CPU
provider does not; and in fp32 its kernels are about as fast as onnxruntime's. Measured on a
Xeon with AMX (2 cores), full-size RAM++'s Swin-L encoder, one photo: onnxruntime fp32 0.80 s,
OpenVINO fp32 0.72 s, OpenVINO bf16 0.20 s (embeddings within 0.054 of fp32's, max 3.5). bf16
changes scores a little, so it is opt-in and `ramcli models verify --photos` measures it against
fp32; ``--backend auto`` only picks between backends for the precision asked (`backends.choose`).

:class:`Session` gives a compiled model the part of onnxruntime's session interface the engine
uses (``run``, ``get_providers``, ``get_outputs``/``get_inputs`` names), so the engine's code paths
stay one. OpenVINO is an optional package (``pip install 'ramcli[openvino]'``), imported only here.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from ramcli.errors import RamcliError

PROVIDER = "OpenVINO-CPU"
# ramcli's precision -> OpenVINO's inference precision hint (f32 must be explicit: on CPUs with
# AMX OpenVINO picks bf16 by default).
HINTS = {"fp32": "f32", "bf16": "bf16"}


def _ov() -> Any:
    try:
        import openvino
    except ImportError:
        raise RamcliError("--backend openvino needs OpenVINO", hint="pip install 'ramcli[openvino]'") from None
    return openvino


@cache
def available() -> bool:
    """Whether OpenVINO can be imported here."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


@cache
def capabilities() -> frozenset[str]:
    """OpenVINO's CPU capabilities (``BF16`` where the CPU has bfloat16 instructions); empty without it."""
    if not available():
        return frozenset()
    return frozenset(_ov().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


@dataclass(frozen=True)
class _Name:
    name: str


class Session:
    """One ONNX graph compiled by OpenVINO for the CPU, run like an onnxruntime session.

    ``streams``: how many images may run at once from different threads (the engine's
    side-by-side workers), each on ``threads / streams`` cores; every thread gets its own infer
    request. Denormals are flushed (Swin's masked attention, see ``engine.session_options``)."""

    def __init__(self, path: str | os.PathLike[str], precision: str, *, threads: int = 0, streams: int = 1,
                 cache_dir: str | None = None) -> None:
        ov = _ov()
        if precision not in HINTS:
            raise RamcliError(f"OpenVINO runs fp32 or bf16, not {precision}",
                              hint="use --precision fp32 or bf16 with --backend openvino, or --backend onnxruntime")
        if precision == "bf16" and "BF16" not in capabilities():
            raise RamcliError("this CPU has no bfloat16 instructions (AMX or AVX512-BF16): bf16 would be emulated",
                              hint="use --precision fp32 (or int8 with --backend onnxruntime)")
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": HINTS[precision], "CPU_DENORMALS_OPTIMIZATION": True,
                                  "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
                                  "NUM_STREAMS": str(streams)}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        if cache_dir:
            config["CACHE_DIR"] = cache_dir
        core = ov.Core()
        try:
            self.compiled = core.compile_model(os.fspath(path), "CPU", config)
        except RuntimeError as exc:
            raise RamcliError(f"OpenVINO cannot compile the graph ({str(exc).splitlines()[0][:200]})",
                              path=os.fspath(path), hint="use --backend onnxruntime") from None
        self._outputs = [o.get_any_name() for o in self.compiled.outputs]
        self._inputs = [i.get_any_name() for i in self.compiled.inputs]
        self._local = threading.local()

    def get_providers(self) -> list[str]:
        return [PROVIDER]

    def get_outputs(self) -> list[_Name]:
        return [_Name(n) for n in self._outputs]

    def get_inputs(self) -> list[_Name]:
        return [_Name(n) for n in self._inputs]

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        result = request.infer(dict(feeds))
        # copies: the request reuses its output buffers on the next call
        return [np.array(result[name]) for name in (output_names or self._outputs)]
