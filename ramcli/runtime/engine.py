"""onnxruntime sessions for one installed model: CUDA when it really loads, else CPU.

``get_available_providers()`` lists CUDA whenever onnxruntime-gpu is installed, GPU or not, so
the provider in use is read back from the session. onnxruntime's own messages about a CUDA
library it could not load are silenced; ramcli says once which provider runs instead.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import onnxruntime as ort

from ramcli.config import models_dir
from ramcli.errors import BrokenModel, RamcliError, first_line
from ramcli.models.store import ENCODER, HEAD, HEAD_FEW, PRECISIONS, QUANTIZED, InstalledModel, graph_variant

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from ramcli.runtime.images import Preprocess

T = TypeVar("T")
# Up to this many tags per image the few-tags head is faster (full-size RAM++ head, 32 images,
# 2 cores: 1 tag 0.028 instead of 0.135 s, 16 tags 0.18 vs 0.30, 32 tags 0.36 vs 0.39, 64 tags
# 0.67 vs 0.62), so tagging with all 4,585 tags never uses it.
FEW_TAGS = 32
# On the CPU the tag head runs over at most this many tags at a time. Each tag is scored on its own
# (the head has no self-attention), so this changes no result, only memory: with two images side
# by side (for_batches) full-size RAM++ peaked at 3.18 GB whole, 2.78 GB in runs of 1024 tags.
HEAD_TAGS_PER_RUN = 1024
_QUIET = 3  # errors only
_SILENT = 4  # fatal only: while probing for CUDA


def _cuda_wanted(device: str) -> bool:
    if device == "cpu":
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


@dataclass(frozen=True)
class EngineOptions:
    device: str = "auto"  # auto | cpu | cuda | tensorrt (CUDA through onnxruntime's TensorRT provider)
    threads: int = 0  # 0: onnxruntime's default (all physical cores)
    cpu_chunk: int = 2  # images per encoder call on the CPU (see Engine.chunk)
    precision: str = "fp32"  # or "int8": the graphs `ramcli models quantize` made (ramcli.quantize)
    # A session that runs once or twice (a search query): skip onnxruntime's repacking of the
    # weights for its GEMM kernels and arena copies of them. CLIP's text encoder loads in 0.37
    # instead of 0.68 s and its one run takes 0.10 instead of 0.05 s.
    one_shot: bool = False
    # Draft JPEG decoding (images.Preprocess.draft): "auto" uses it where decoding is the
    # bottleneck, i.e. when the model runs on CUDA; on the CPU inference dwarfs decoding.
    decode: str = "auto"  # auto | exact | draft
    # On the CPU, this many images of a batch run at once, each on its share of the threads,
    # instead of one after another on all of them (set by `for_batches`).
    side_by_side: int = 1
    # Tag screening (`tagging.Tagger._screened`): the tag head scores only this many tags per image,
    # those nearest the image in CLIP space (plus the user's own tags); 0: every tag.
    screen: int = 0
    # Which runtime runs the encoder and the tag head: onnxruntime, openvino (CPU; fp32 or bf16:
    # ramcli.runtime.openvino) or auto (the faster of the two here, measured once: runtime.backends,
    # decided by taggers.open_tagger before an Engine is made).
    backend: str = "onnxruntime"


def for_batches(opts: EngineOptions, batch_size: int) -> EngineOptions:
    """``opts`` for tagging in batches of ``batch_size``: the CPU runs the images of a batch side
    by side, each on its share of the cores, instead of splitting every matrix product of one
    image over all of them (Swin-L's last stage has only 576 rows per image). Full-size Swin-L on
    2 cores, encoder + tag head: 1.16x the photos/s in fp32 and 1.07x in int8 (medians of 6
    alternating rounds of 4 photos; not measured on more cores). Where the worker threads cannot
    flush denormals (`flush_denormals_here`) they would lose ~0.4 s per photo to Swin's masked
    attention (see `_session`), more than this gains, so it stays off there."""
    n = min(batch_size, opts.threads or _cores())
    if opts.device in ("cuda", "tensorrt") or n < 2 or not _flushing_works():
        return opts
    return replace(opts, side_by_side=n)


def _cores() -> int:
    """The CPUs this process may run on (a container's or taskset's limit, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_FTZ_DAZ = 0x8040  # MXCSR: flush-to-zero (bit 15), denormals-are-zero (bit 6)


def flush_denormals_here() -> bool:
    """Flush denormals to zero in the calling thread, as onnxruntime does in its own threads
    (see `_session`); True where it took effect. Python has no call for the x86 MXCSR register,
    so this goes through C's fegetenv/fesetenv: on x86-64 Linux their fenv_t is 28 bytes of x87
    state followed by the MXCSR. Checked by multiplying a denormal afterwards."""
    import platform

    if sys.platform != "linux" or platform.machine() != "x86_64":
        return False
    import ctypes  # here, not at the top: search imports this module and never needs them
    import ctypes.util

    try:
        libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        env = (ctypes.c_uint8 * 32)()
        if libm.fegetenv(env) != 0:
            return False
        mxcsr = int.from_bytes(bytes(env[28:32]), "little") | _FTZ_DAZ
        env[28:32] = list(mxcsr.to_bytes(4, "little"))
        if libm.fesetenv(env) != 0:
            return False
    except (OSError, AttributeError):
        return False
    return bool(np.float32(2) * np.array([1e-40], dtype=np.float32)[0] == 0)


@cache
def _flushing_works() -> bool:
    """Whether `flush_denormals_here` works here, tried once in a thread of its own."""
    box: list[bool] = []
    t = threading.Thread(target=lambda: box.append(flush_denormals_here()), name="ramcli-probe")
    t.start()
    t.join()
    return bool(box and box[0])


# fp16 runs by default on CUDA (--precision auto) only where its tags, measured on CUDA against
# fp32 (`ramcli models quantize --to fp16` / `models verify` there), agree to this share.
FP16_DEFAULT_AGREEMENT = 0.995


def resolve_precision(model: InstalledModel, opts: EngineOptions) -> EngineOptions:
    """``opts`` with ``--precision auto`` decided for ``model``: fp32 on the CPU (exact; int8 and bf16
    stay opt-in: they change scores); on CUDA fp16 where the model has its fp16 graphs and their
    recorded agreement with fp32, measured on CUDA, is at least FP16_DEFAULT_AGREEMENT; else fp32."""
    if opts.precision != "auto":
        return opts
    gpu = opts.device == "tensorrt" or (opts.device != "cpu" and _cuda_wanted(opts.device))
    fp16 = (model.meta.get("precisions") or {}).get("fp16") or {}
    measured = fp16.get("device") == "CUDA" and float(fp16.get("tag_agreement") or 0) >= FP16_DEFAULT_AGREEMENT
    made = all(graph_variant(model.path / g, "fp16").is_file() for g in (ENCODER, HEAD))
    return replace(opts, precision="fp16" if gpu and measured and made else "fp32")


def input_contract(model: InstalledModel, opts: EngineOptions, provider: str) -> Preprocess:
    """The model's preprocessing, with draft decoding as ``opts.decode`` and the provider decide."""
    draft = opts.decode == "draft" or (opts.decode == "auto" and provider == "CUDA")
    return replace(model.preprocess, draft=draft)


def in_background(make: Callable[[], T]) -> Callable[[], T]:
    """Start ``make`` in a thread now; the returned function waits for its result (or raises its
    error). onnxruntime builds a session without holding the GIL, so a session loads while Python
    goes on (a first open-set search: the CLIP tokenizer is built meanwhile)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = make()
        except BaseException as exc:  # handed to the waiting thread
            box["error"] = exc

    # Not a daemon: a load nobody waited for (a search that found nothing to re-rank) is joined
    # at exit instead of being cut off inside onnxruntime while the interpreter tears down.
    thread = threading.Thread(target=run, name="ramcli-load", daemon=False)
    thread.start()

    def result() -> T:
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["value"]

    return result


def _graph(path: str, precision: str) -> str:
    """The file of ``path``'s graph at ``precision``; a clear error where it was never made."""
    if precision == "fp32" or Path(path).name not in QUANTIZED:
        return path
    if precision == "bf16":
        raise RamcliError("bf16 runs on OpenVINO", hint="add --backend openvino (pip install 'ramcli[openvino]')")
    if precision not in PRECISIONS:
        raise RamcliError(f"unknown precision {precision!r}", hint=f"use one of: {', '.join(PRECISIONS)}")
    variant = graph_variant(Path(path), precision)
    if not variant.is_file():
        name = variant.parent.name
        raise RamcliError(f"model {name!r} has no {precision} version yet", path=variant,
                          hint=f"run `ramcli models quantize {name}` once, or use --precision fp32")
    return os.fspath(variant)


def session_options() -> ort.SessionOptions:
    """What every onnxruntime session of ramcli starts from (the engine's, the export's): quiet,
    and denormals flushed to zero (FTZ/DAZ).

    Why flush: Swin's shifted-window mask adds -100 before the softmax, so many attention weights
    land below 1.2e-38, and x86 cores take a microcode assist for every product with such a
    number. Full-size Swin-L on 2 cores, the shifted blocks only: 0.32 s of 2.6 spent in the
    attention-times-values MatMuls and 0.16 s in Softmax; flushed, 0.04 s each (onnxruntime's
    profiler; the tags do not change). A session's pool threads get the mode per session; the
    calling thread only from the process's first session (onnxruntime sets it once), which is why
    every session must ask for it. Threads of ramcli's own that run sessions set it themselves
    (`flush_denormals_here`).
    """
    so = ort.SessionOptions()
    so.log_severity_level = _QUIET
    so.add_session_config_entry("session.set_denormal_as_zero", "1")
    return so


def _session(path: str | bytes, opts: EngineOptions, *, cpu_arena: bool = True) -> ort.InferenceSession:
    if isinstance(path, str) and opts.backend == "openvino" and Path(path).name in (ENCODER, HEAD):
        return _openvino(path, opts)  # type: ignore[return-value]  # the same interface (runtime.openvino)
    if isinstance(path, str):
        path = _graph(path, opts.precision)
    so = session_options()
    so.enable_cpu_mem_arena = cpu_arena
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if opts.side_by_side > 1:  # each image gets its share of the cores (see for_batches)
        so.intra_op_num_threads = max(1, (opts.threads or _cores()) // opts.side_by_side)
    elif opts.threads:
        so.intra_op_num_threads = opts.threads
    if opts.one_shot:
        so.add_session_config_entry("session.disable_prepacking", "1")
        so.add_session_config_entry("session.use_device_allocator_for_initializers", "1")
        # After a run, idle pool threads spin for more work that a one-shot session never has,
        # taking cores from the other session loading beside it (search: -0.02 s measured).
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers: list[Any] = ["CPUExecutionProvider"]
    if _cuda_wanted(opts.device):
        providers.insert(0, "CUDAExecutionProvider")
        with contextlib.suppress(Exception):  # CUDA/cuDNN from the nvidia-* wheels, if present
            ort.preload_dlls(directory="")
    if opts.device == "tensorrt":
        providers.insert(0, _tensorrt(path, opts))
    ort.set_default_logger_severity(_SILENT if len(providers) > 1 else _QUIET)
    # A graph onnxruntime cannot load (a truncated weights file) is also logged, in colour, by the
    # session's logger; the exception below says it once, in one line.
    so.log_severity_level = _SILENT
    try:
        # onnxruntime prints ("EP Error ... Falling back") where TensorRT does not load: said below in one line
        with contextlib.redirect_stdout(io.StringIO()) if opts.device == "tensorrt" else contextlib.nullcontext():
            session = ort.InferenceSession(path, so, providers=providers)
    except Exception as exc:
        raise _unloadable(path, exc) from None
    finally:
        ort.set_default_logger_severity(_QUIET)
    if opts.device == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
        raise RamcliError("--device cuda was asked for, but CUDA could not be loaded",
                          hint="check the NVIDIA driver and the nvidia-* CUDA 12/13 wheels, or use --device auto")
    if opts.device == "tensorrt" and session.get_providers()[0] != TENSORRT:
        raise RamcliError("--device tensorrt was asked for, but TensorRT could not be loaded",
                          hint="pip install tensorrt (the version onnxruntime-gpu was built for), or use --device cuda")
    return session


TENSORRT = "TensorrtExecutionProvider"
GPU_PROVIDERS = ("CUDAExecutionProvider", TENSORRT)


def _tensorrt(path: str | bytes, opts: EngineOptions) -> tuple[str, dict[str, Any]]:
    """onnxruntime's TensorRT provider for ``path``: engines built once per graph and GPU and kept
    in the model's folder (``tensorrt/``; building one for Swin-L takes minutes), fp16 kernels where
    --precision fp16 asks. Graphs TensorRT cannot take fall back to CUDA, then the CPU, per node."""
    options: dict[str, Any] = {"trt_fp16_enable": opts.precision == "fp16", "trt_engine_cache_enable": True,
                               "trt_timing_cache_enable": True}
    if isinstance(path, str):
        options["trt_engine_cache_path"] = options["trt_timing_cache_path"] = os.fspath(Path(path).parent / "tensorrt")
    return TENSORRT, options


def _openvino(path: str, opts: EngineOptions) -> Any:
    """The graph at ``path`` (its fp32 file) compiled by OpenVINO for this machine's CPU."""
    from ramcli.runtime import openvino

    if opts.device in ("cuda", "tensorrt"):
        raise RamcliError("--backend openvino runs on the CPU", hint="use --backend onnxruntime for CUDA")
    threads = opts.threads or _cores()
    return openvino.Session(path, opts.precision, threads=threads, streams=max(1, opts.side_by_side))


# onnxruntime's messages carry its own source locations ("tensorprotoutils.cc:1876 GetExtDataFromTensorProto ",
# "/onnxruntime_src/.../initializer.cc:79 onnxruntime::Initializer::Initializer(...) "): not for people.
_ORT_STATUS = re.compile(r"\[ONNXRuntimeError\] : \d+ : \w+ : ")
_ORT_SOURCE = re.compile(r"(?:\S*/)?\w+\.(?:cc|h|cpp):\d+ (?:[\w:~]+\([^)]*\)(?: const)?|[\w:~]+) ")


def ort_reason(exc: BaseException) -> str:
    """onnxruntime's error as one short line: the innermost status message, without source locations."""
    text = first_line(exc)
    text = _ORT_STATUS.split(text)[-1]
    text = _ORT_SOURCE.sub("", text).strip()
    return text[:300] or type(exc).__name__


def _unloadable(path: str | bytes, exc: BaseException) -> RamcliError:
    """The one-line error for a graph onnxruntime refused: a model's file names the model and its
    repair (a damaged int8/fp16 copy: make it again); a graph being converted, the conversion."""
    if not isinstance(path, str):
        return RamcliError(f"onnxruntime cannot load a graph ({ort_reason(exc)})",
                           hint="please report this with `ramcli doctor --json`")
    file = Path(path)
    if file.parent.parent == models_dir() and not file.parent.name.startswith("."):
        name = file.parent.name
        precision = next((p for p in PRECISIONS[1:] if file.name.endswith(f".{p}.onnx")), None)
        what = f"onnxruntime cannot load it ({ort_reason(exc)})"
        if precision is not None:
            return BrokenModel(name, what, path=file, hint=f"make it again: `ramcli models quantize {name} --to "
                                                           f"{precision}`, or use --precision fp32")
        return InstalledModel(name, file.parent).broken(file.name, what)
    return RamcliError(f"onnxruntime cannot load the model ({ort_reason(exc)})", path=path,
                       hint="convert it again with `ramcli models import` or `ramcli models pull`")


class Engine:
    """The ONNX graphs of a RAM/RAM++ model (image encoder, tag head, few-tags head) on numpy arrays."""

    def __init__(self, model: InstalledModel, opts: EngineOptions | None = None) -> None:
        self.model = model
        self.opts = resolve_precision(model, opts or EngineOptions())
        # arrays copied to the device once (`_on_device`), by id; each entry holds its array, so
        # the id cannot pass to another array while the copy is kept
        self._resident: dict[int, tuple[np.ndarray, ort.OrtValue]] = {}
        self._resident_lock = threading.Lock()

    # Each graph is loaded on first use: re-scoring stored tokens (`ramcli add-tag`, search's
    # re-ranking) needs no encoder and, for a few tags, only the few-tags head.
    @cached_property
    def head(self) -> ort.InferenceSession:
        # Swin-L measured on 2 cores: the tag head is 24% faster with the CPU arena (see encoder).
        return _session(os.fspath(self.model.path / HEAD), self.opts)

    @cached_property
    def encoder(self) -> ort.InferenceSession:
        # Swin-L measured on 2 cores: without the CPU arena the encoder holds 961 instead of 1308 MB
        # after load and peaks 280 MB lower, for ~4% speed.
        return _session(os.fspath(self.model.path / ENCODER), self.opts, cpu_arena=False)

    @property
    def provider(self) -> str:
        """What actually runs: "CUDA" or "CPU"."""
        return "CUDA" if self.head.get_providers()[0] in GPU_PROVIDERS else "CPU"

    @property
    def preprocess(self) -> Preprocess:
        return input_contract(self.model, self.opts, self.provider)

    @property
    def chunk(self) -> int:
        """Images per onnxruntime call. On the CPU, activations grow with the batch while speed
        does not (measured on Swin-L: encoder 3.0 s/photo at batch 1, 2.7 at 8, peak +1.2 GB;
        tag head 1.31 vs 1.18 s/photo, peak 0.56 vs 4.0 GB), so the CPU runs small chunks."""
        return self.opts.cpu_chunk if self.provider == "CPU" else 1 << 30

    def encode(self, images: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) -> image embeddings (B, N, 512)."""
        x = np.ascontiguousarray(images, dtype=np.float32)
        step = self.chunk
        parts = [self.encoder.run(None, {"image": x[i:i + step]})[0] for i in range(0, len(x), step)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    @cached_property
    def reweigher(self) -> ort.InferenceSession:
        """RAM++'s per-image description weighting (`ramcli.reweight`), on this engine's device."""
        from ramcli.runtime.reweight import graph

        # Without the CPU arena: no slower (two images side by side, full-size RAM++), and its
        # buffers go back after each call. `ramcli bench --batch 4` (fp32) peaked at 2.50-2.95 GiB
        # with it (median 2.83, 8 runs), 2.60-2.93 without (median 2.69, 10 runs); 2.67-2.75
        # when numpy did this step (8 runs).
        return _session(graph(), self.opts, cpu_arena=False)

    @property
    def device_type(self) -> str:
        """onnxruntime's name for where this engine's tensors live."""
        return "cpu" if self.provider == "CPU" else "cuda"

    @property
    def bind(self) -> bool:
        """Whether tensors stay on the device from one graph to the next (onnxruntime I/O binding):
        on CUDA. On the CPU plain numpy in and out costs no copies."""
        return self.device_type != "cpu"

    def _on_device(self, array: np.ndarray) -> ort.OrtValue:
        """``array`` on the device, copied there on first use and kept while this engine lives (the
        480 MB of built-in description embeddings would otherwise cross the bus for every batch)."""
        with self._resident_lock:
            hit = self._resident.get(id(array))
            if hit is None:
                value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array, dtype=np.float32),
                                                         self.device_type, 0)
                hit = self._resident[id(array)] = (array, value)
            return hit[1]

    def reweigh(self, cls: np.ndarray, descriptions: np.ndarray, scale: float) -> np.ndarray | ort.OrtValue:
        """RAM++'s tag embeddings (B, n, 512) from CLS embeddings (B, 512) and a group's descriptions
        (n, D, 512): a numpy array, or where `bind` a tensor left on the device for `logits`."""
        feeds = {"cls": np.ascontiguousarray(cls, dtype=np.float32), "scale": np.asarray(scale, dtype=np.float32)}
        if not self.bind:
            return self.reweigher.run(None, {**feeds, "descriptions": descriptions})[0]
        io = self.reweigher.io_binding()
        for name, value in feeds.items():
            io.bind_cpu_input(name, value)
        io.bind_ortvalue_input("descriptions", self._on_device(descriptions))
        io.bind_output(self.reweigher.get_outputs()[0].name, self.device_type)
        self.reweigher.run_with_iobinding(io)
        return io.get_outputs()[0]

    @cached_property
    def few_head(self) -> ort.InferenceSession | None:
        """The tag head for a few tags per image on stored tokens (``store.HEAD_FEW``: float16
        image embeddings in), fp32 weights only; None where the model was converted without it
        or another precision was asked for."""
        path = self.model.path / HEAD_FEW
        return _session(os.fspath(path), self.opts) if self.opts.precision == "fp32" and path.is_file() else None

    def logits(self, image_embeds: np.ndarray, tag_embeds: np.ndarray | ort.OrtValue) -> np.ndarray:
        """(B, N, 512) x (B, T, 512) -> (B, T). Float16 image embeddings are stored tokens: for
        up to FEW_TAGS tags the few-tags head takes them as they are. Float32 ones (fresh from
        the encoder) go to the full head, which sees them unrounded. Tag embeddings already on
        the device (`reweigh`) stay there."""
        if isinstance(tag_embeds, ort.OrtValue):
            io = self.head.io_binding()
            io.bind_cpu_input("image_embeds", np.ascontiguousarray(image_embeds, dtype=np.float32))
            io.bind_ortvalue_input("tag_embeds", tag_embeds)
            io.bind_output(self.head.get_outputs()[0].name)  # logits: to the host
            self.head.run_with_iobinding(io)
            return io.copy_outputs_to_cpu()[0]
        few = image_embeds.dtype == np.float16 and tag_embeds.shape[1] <= FEW_TAGS and self.few_head is not None
        head = self.few_head if few else self.head
        image_embeds = np.ascontiguousarray(image_embeds, dtype=np.float16 if few else np.float32)
        tag_embeds = np.ascontiguousarray(tag_embeds, dtype=np.float32)
        t = tag_embeds.shape[1]
        step = HEAD_TAGS_PER_RUN if t > HEAD_TAGS_PER_RUN and self.provider == "CPU" else t
        parts = [head.run(None, {"image_embeds": image_embeds,
                                 "tag_embeds": np.ascontiguousarray(tag_embeds[:, i:i + step])})[0]
                 for i in range(0, t, step)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    @property
    def head_per_image(self) -> bool:
        return self.provider == "CPU"

    @property
    def side_by_side(self) -> int:
        """How many images run at once (`for_batches`): on the CPU only."""
        return self.opts.side_by_side if self.provider == "CPU" else 1

    @cached_property
    def workers(self) -> ThreadPoolExecutor:
        """The threads running images side by side; they flush denormals like onnxruntime's own."""
        from concurrent.futures import ThreadPoolExecutor

        self.encoder, self.head  # noqa: B018 - loaded here, not raced for by the workers
        return ThreadPoolExecutor(self.side_by_side, thread_name_prefix="ramcli-infer",
                                  initializer=flush_denormals_here)

