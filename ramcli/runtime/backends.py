"""``--backend auto``: of the runtimes that can run the asked precision here, the faster one, measured.

Which runtime is faster depends on the CPU (AMX, AVX-512, VNNI), the threads and the model, so
nothing is assumed: the first run with ``auto`` times the image encoder (~2/3 of the FLOPs) on
each candidate, one image after a warm-up, the best of two runs, and keeps the answer in
``backends.json`` in ramcli's cache, keyed by model (and its graphs' size and time), CPU (name
and flags), precision, threads and images side by side. Later runs read it. On CUDA, and for
precisions only one runtime has (int8 and fp16 files: onnxruntime; bf16: OpenVINO), there is
nothing to measure.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ramcli.config import cache_dir
from ramcli.models.store import ENCODER, InstalledModel
from ramcli.runtime import openvino

if TYPE_CHECKING:
    from ramcli.runtime.engine import EngineOptions

RUNTIMES = ("onnxruntime", "openvino")
CACHE = "backends.json"


def candidates(opts: EngineOptions) -> list[str]:
    """The runtimes that can run ``opts.precision`` on ``opts.device`` here."""
    if opts.device in ("cuda", "tensorrt") or opts.precision in ("int8", "fp16"):
        return ["onnxruntime"]
    ov = openvino.available() and (opts.precision != "bf16" or "BF16" in openvino.capabilities())
    if opts.precision == "bf16":
        return ["openvino"] if ov else []
    return ["onnxruntime", *(["openvino"] if ov else [])]


def cpu_signature() -> str:
    """The CPU's name and the flags that decide the kernels (Linux; the platform elsewhere)."""
    import platform

    name, flags = platform.processor() or platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name == platform.machine():
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                have = set(line.split(":", 1)[1].split())
                flags = " ".join(sorted(f for f in have if f.startswith(("avx", "amx", "fma", "f16c"))))
    except OSError:
        pass
    return f"{name} [{flags}]"


def _key(model: InstalledModel, opts: EngineOptions) -> str:
    graph = (model.path / ENCODER).stat()
    return (f"{model.name} {graph.st_size} {int(graph.st_mtime)} | {cpu_signature()} | {opts.precision} "
            f"threads={opts.threads} side_by_side={opts.side_by_side}")


def seconds_per_image(model: InstalledModel, opts: EngineOptions) -> float:
    """The image encoder on one random image with ``opts``: the best of two runs after a warm-up."""
    from ramcli.runtime.engine import Engine

    size = model.preprocess.image_size
    x = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
    engine = Engine(model, opts)
    engine.encode(x)
    best = float("inf")
    for _ in range(2):
        t = time.perf_counter()
        engine.encode(x)
        best = min(best, time.perf_counter() - t)
    return best


def choose(model: InstalledModel, opts: EngineOptions) -> str:
    """The runtime ``--backend auto`` runs ``opts`` on: the only candidate, or the faster, measured once."""
    from ramcli.errors import RamcliError

    found = candidates(opts)
    if not found:
        raise RamcliError(f"nothing here runs {opts.precision}", hint="bf16 needs OpenVINO "
                          "(pip install 'ramcli[openvino]') and a CPU with AMX or AVX512-BF16; or use fp32")
    if len(found) == 1:
        return found[0]
    path = cache_dir() / CACHE
    key = _key(model, opts)
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    hit = known.get(key)
    if not (isinstance(hit, dict) and hit.get("chosen") in found):
        times = {name: seconds_per_image(model, replace(opts, backend=name)) for name in found}
        hit = {"seconds_per_image": {k: round(v, 4) for k, v in times.items()}, "chosen": min(times, key=times.get),
               "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        known[key] = hit
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{CACHE}.{os.getpid()}")
        tmp.write_text(json.dumps(known, indent=2), encoding="utf-8")
        os.replace(tmp, path)
    return str(hit["chosen"])
