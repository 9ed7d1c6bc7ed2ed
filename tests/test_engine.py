"""Engine helpers: background loading, one-shot sessions, precision variants."""

from __future__ import annotations

import os
import shutil
import threading

import numpy as np
import pytest

from ramcli.errors import RamcliError
from ramcli.models import store
from ramcli.runtime.engine import EngineOptions, _session, in_background


def test_in_background_runs_concurrently_and_hands_back_value_and_error() -> None:
    started = threading.Event()
    go_on = threading.Event()

    def make() -> str:
        started.set()
        assert go_on.wait(10), "the caller never got control back: not in the background"
        return "loaded"

    result = in_background(make)
    assert started.wait(10)  # runs before anyone asks for it...
    go_on.set()  # ...while this thread goes on
    assert result() == "loaded" and result() == "loaded"

    def broken() -> str:
        raise RamcliError("cannot load")

    with pytest.raises(RamcliError, match="cannot load"):
        in_background(broken)()


def test_one_shot_session_gives_the_same_numbers(tiny_model) -> None:
    """Skipping weight prepacking changes load time, not results."""
    path = os.fspath(tiny_model.path / store.HEAD)
    rng = np.random.default_rng(0)
    feeds = {"image_embeds": rng.normal(size=(2, 145, 512)).astype(np.float32),
             "tag_embeds": rng.normal(size=(2, 7, 512)).astype(np.float32)}
    normal = _session(path, EngineOptions(device="cpu")).run(None, feeds)[0]
    once = _session(path, EngineOptions(device="cpu", one_shot=True)).run(None, feeds)[0]
    np.testing.assert_allclose(once, normal, rtol=0, atol=1e-5)


def test_graph_variants_are_named_beside_the_fp32_graph(tmp_path) -> None:
    head = tmp_path / store.HEAD
    assert store.graph_variant(head, "fp32") == head
    assert store.graph_variant(head, "int8") == tmp_path / "tag_head.int8.onnx"
    with pytest.raises(RamcliError, match="no int8 version"):
        _session(os.fspath(head), EngineOptions(precision="int8"))


def test_few_tags_head_gives_the_full_heads_logits(tiny_model) -> None:
    """The absorbed-attention head (re-ranking, new custom tags) against the full head; the engine
    gives the same logits whichever head it picks for the tag count."""
    from ramcli.runtime.engine import FEW_TAGS, Engine

    assert (tiny_model.path / store.HEAD_FEW).is_file()
    assert tiny_model.meta["parity"]["few_tags_logits_max_abs"] < 1e-4  # checked against PyTorch at import
    rng = np.random.default_rng(1)
    tokens = rng.normal(size=(3, 145, 512)).astype(np.float32)
    engine = Engine(tiny_model, EngineOptions(device="cpu"))
    assert engine.few_head is not None
    stored = tokens.astype(np.float16)  # the few-tags head takes tokens as the index keeps them
    served: list[str] = []

    class Spy:
        def __init__(self, session, name: str) -> None:
            self.session, self.name = session, name

        def run(self, *args):
            served.append(self.name)
            return self.session.run(*args)

    real_few = engine.few_head
    engine.__dict__["few_head"] = Spy(real_few, "few")
    engine.head = Spy(engine.head, "full")
    for tags in (1, 7, FEW_TAGS + 1):
        labels = rng.normal(size=(3, tags, 512)).astype(np.float32)
        full = engine.head.session.run(None, {"image_embeds": stored.astype(np.float32), "tag_embeds": labels})[0]
        few = real_few.run(None, {"image_embeds": stored, "tag_embeds": labels})[0]
        np.testing.assert_allclose(few, full, rtol=0, atol=1e-4)
        for given in (stored, stored.astype(np.float32)):  # stored tokens or fresh ones: the same logits
            np.testing.assert_allclose(engine.logits(given, labels), full, rtol=0, atol=1e-4)
    # stored tokens with few tags go to the few-tags head; fresh float32 ones and many tags do not
    assert served == ["few", "full", "few", "full", "full", "full"]


def test_engine_without_the_few_tags_head_uses_the_full_one(tiny_model, tmp_path) -> None:
    """Models converted before tag_head_few.onnx existed keep working."""
    from ramcli.runtime.engine import Engine

    old = tmp_path / "old"
    shutil.copytree(tiny_model.path, old)
    (old / store.HEAD_FEW).unlink()
    engine = Engine(store.InstalledModel("old", old), EngineOptions(device="cpu"))
    assert engine.few_head is None
    labels = np.random.default_rng(2).normal(size=(1, 2, 512)).astype(np.float32)
    tokens = np.random.default_rng(3).normal(size=(1, 145, 512)).astype(np.float32)
    want = Engine(tiny_model, EngineOptions(device="cpu")).logits(tokens, labels)
    np.testing.assert_allclose(engine.logits(tokens, labels), want, rtol=0, atol=1e-4)


_DENORMALS = r"""
import sys
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from ramcli.runtime.engine import EngineOptions, _session

one = numpy_helper.from_array(np.ones(1, np.float32), "one")
graph = helper.make_graph([helper.make_node("Mul", ["x", "one"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])], [one])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()
if sys.argv[1] == "engine":
    session = _session(model, EngineOptions(threads=2))
else:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
x = np.full(1 << 22, 1e-40, np.float32)  # large enough to be split over both threads
print(int(np.count_nonzero(session.run(None, {"x": x})[0])))
"""


@pytest.mark.parametrize(("how", "flushed"), [("engine", True), ("plain", False)])
def test_engine_sessions_flush_denormals_on_every_thread(how: str, flushed: bool) -> None:
    """Swin's shifted-window mask makes denormal attention weights, which x86 multiplies ~10x
    slower; the engine's sessions treat them as zero. A plain session (the control) keeps them,
    so this checks the option, not the CPU. A fresh process each: onnxruntime sets the calling
    thread's mode only from the first session in a process."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _DENORMALS, how], capture_output=True, text=True, check=True)
    nonzero = int(out.stdout.strip())
    assert (nonzero == 0) if flushed else (nonzero == 1 << 22)


def _flushes() -> bool:
    return bool(np.float32(2) * np.array([1e-40], dtype=np.float32)[0] == 0)


def test_images_side_by_side_give_the_same_tags_on_flushing_threads(tiny_model) -> None:
    """A batch's images on worker threads of their own (engine.for_batches): the same numbers as
    one after another, and the workers flush denormals as onnxruntime's threads do."""
    from ramcli.pipeline.tagger import open_tagger
    from ramcli.runtime.engine import _flushing_works

    if not _flushing_works():
        pytest.skip("no way to flush denormals from Python threads here (not x86-64 Linux)")
    x = np.random.default_rng(0).standard_normal((3, 3, 384, 384)).astype(np.float32)
    apart = open_tagger(tiny_model, EngineOptions(device="cpu", threads=2), batch_size=3)
    assert apart.engine.side_by_side == 2 and apart.engine.opts.side_by_side == 2
    together = open_tagger(tiny_model, EngineOptions(device="cpu", threads=2))
    assert together.engine.side_by_side == 1
    (e1, l1), (e2, l2) = apart.infer(x), together.infer(x)
    np.testing.assert_allclose(e1, e2, atol=1e-5)
    np.testing.assert_allclose(l1, l2, atol=1e-5)
    assert apart.engine.workers.submit(_flushes).result()


_FLUSH_HERE = r"""
import numpy as np
from ramcli.runtime.engine import flush_denormals_here
tiny = lambda: bool(np.float32(2) * np.array([1e-40], dtype=np.float32)[0] == 0)
before = tiny()
print(before, flush_denormals_here(), tiny())
"""


def test_flush_denormals_here_sets_the_calling_threads_mode() -> None:
    """In a fresh process (no onnxruntime session has set the mode yet) a thread computes with
    denormals until `flush_denormals_here` turns flushing on."""
    import platform
    import subprocess
    import sys

    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip("x86-64 Linux only")
    out = subprocess.run([sys.executable, "-c", _FLUSH_HERE], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "True"]


def test_for_batches_runs_images_side_by_side_only_where_it_pays() -> None:
    from ramcli.runtime.engine import _flushing_works, for_batches

    if not _flushing_works():
        pytest.skip("no way to flush denormals from Python threads here (not x86-64 Linux)")
    assert for_batches(EngineOptions(threads=2), 4).side_by_side == 2
    assert for_batches(EngineOptions(threads=4), 3).side_by_side == 3
    assert for_batches(EngineOptions(threads=2), 1).side_by_side == 1  # one image: all threads on it
    assert for_batches(EngineOptions(threads=1), 8).side_by_side == 1
    assert for_batches(EngineOptions(threads=2, device="cuda"), 8).side_by_side == 1


def test_tag_head_in_runs_of_a_few_tags_gives_the_same_logits(tiny_model, monkeypatch) -> None:
    """On the CPU the head scores at most HEAD_TAGS_PER_RUN tags per run (memory); every tag is
    scored on its own, so the logits are those of one run over all tags."""
    from ramcli.runtime import engine as engine_module
    from ramcli.runtime.engine import Engine

    e = Engine(tiny_model, EngineOptions(device="cpu"))
    rng = np.random.default_rng(3)
    image = rng.standard_normal((2, 145, 512)).astype(np.float32)
    tags = rng.standard_normal((2, tiny_model.num_tags, 512)).astype(np.float32)
    whole = e.logits(image, tags)
    monkeypatch.setattr(engine_module, "HEAD_TAGS_PER_RUN", 3)
    calls = []
    real = e.head.run
    monkeypatch.setattr(e.head, "run", lambda *a, **k: calls.append(1) or real(*a, **k), raising=False)
    in_runs = e.logits(image, tags)
    assert len(calls) == -(-tiny_model.num_tags // 3) > 1
    np.testing.assert_allclose(in_runs, whole, rtol=0, atol=1e-6)
