"""RAM++'s description weighting as an ONNX graph (ramcli.runtime.reweight), run by the engine: the same
tag embeddings as the paper's formula and as the numpy step, the same logits through the tagger,
and the device path (I/O binding) run on the CPU, where onnxruntime binds host memory the same way."""

from __future__ import annotations

import numpy as np
import pytest
from test_tagging import naive_reweight

from ramcli.vocab.custom import CustomTag


def _unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    x = rng.normal(size=shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("batch", [1, 3])
def test_graph_weights_descriptions_like_the_formula_and_numpy(tiny_model, batch: int) -> None:
    from ramcli.runtime.engine import Engine
    from ramcli.runtime.vocabulary import LabelGroup, Vocabulary

    rng = np.random.default_rng(batch)
    engine = Engine(tiny_model)
    groups = [LabelGroup(0, _unit(rng, 6, 51, 512)), LabelGroup(6, _unit(rng, 2, 7, 512))]
    vocab = Vocabulary([f"t{i}" for i in range(8)], None, np.full(8, 0.5, np.float32), groups, 30.0)
    embeds = rng.normal(size=(batch, 145, 512)).astype(np.float32)
    with_numpy = vocab.tag_embeds(embeds)
    for g in groups:
        got = engine.reweigh(embeds[:, 0], g.embeds, 30.0)
        assert isinstance(got, np.ndarray) and got.shape == (batch, g.count, 512)
        np.testing.assert_allclose(got, with_numpy[:, g.start:g.start + g.count], atol=1e-6)
        for b in range(batch):
            want = naive_reweight(embeds[b, 0].astype(np.float64), [e.astype(np.float64) for e in g.embeds], 30.0)
            np.testing.assert_allclose(got[b], want, atol=2e-6)


def _mixed_vocabulary(model, rng: np.random.Generator):
    from ramcli.runtime.vocabulary import Vocabulary

    tags = [CustomTag(i + 1, f"custom {i}", None, None, 0.5, (), _unit(rng, d, 512), "", False)
            for i, d in enumerate([3, 1, 3])]
    return Vocabulary.builtin(model).with_custom(tags)


def test_tagger_scores_every_group_on_the_engine_like_the_numpy_step(tiny_model) -> None:
    """Built-in and custom groups (51, 1 and 3 descriptions): the tagger's logits, each group
    weighted by the graph and scored by its own head run, match one head run over numpy's
    embeddings of the whole vocabulary."""
    from ramcli.runtime.engine import Engine
    from ramcli.runtime.tagging import Tagger

    rng = np.random.default_rng(7)
    vocab = _mixed_vocabulary(tiny_model, rng)
    assert len(vocab.groups) == 3
    engine = Engine(tiny_model)
    x = rng.normal(size=(2, 145, 512)).astype(np.float32)
    got = Tagger(engine, vocab).logits(x)
    want = engine.logits(x, vocab.tag_embeds(x))
    assert got.shape == (2, vocab.size)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_bound_path_keeps_descriptions_resident_and_gives_the_same_logits(tiny_model) -> None:
    """On CUDA the descriptions are copied to the device once and the weighted embeddings go into
    the tag head without coming back (I/O binding). The same calls with host memory bound."""
    import onnxruntime as ort

    from ramcli.runtime.engine import Engine
    from ramcli.runtime.tagging import Tagger

    class Bound(Engine):
        bind = True  # what a CUDA session does, with onnxruntime's "cpu" device

    rng = np.random.default_rng(8)
    vocab = _mixed_vocabulary(tiny_model, rng)
    x = rng.normal(size=(3, 145, 512)).astype(np.float32)
    plain = Tagger(Engine(tiny_model), vocab).logits(x)
    bound_engine = Bound(tiny_model)
    bound = Tagger(bound_engine, vocab)
    on_device = bound_engine.reweigh(x[:, 0], vocab.groups[0].embeds, vocab.reweight_scale)
    assert isinstance(on_device, ort.OrtValue) and on_device.shape() == [3, vocab.groups[0].count, 512]
    np.testing.assert_allclose(bound.logits(x), plain, atol=1e-6)
    np.testing.assert_allclose(bound.logits(x[:1]), plain[:1], atol=1e-6)
    # one copy per group, reused by every later batch
    assert sorted(id(a) for a, _ in bound_engine._resident.values()) == sorted(id(g.embeds) for g in vocab.groups)


def test_the_stored_graph_is_what_its_definition_builds() -> None:
    """ramcli/runtime/reweight.onnx ships so that tagging need not import onnx; it must stay the
    graph reweight.build() defines (if not: `python -m ramcli.runtime.reweight` writes it again)."""
    import onnx

    from ramcli.runtime import reweight

    assert onnx.load_from_string(reweight.graph()) == onnx.load_from_string(reweight.build())
    onnx.checker.check_model(onnx.load_from_string(reweight.graph()), full_check=True)


def test_tagging_with_ram_plus_does_not_import_onnx(tiny_model) -> None:
    """The weighting graph is read from the package: onnx (and torch) stay conversion-only."""
    import subprocess
    import sys

    code = ("import sys, numpy as np; from ramcli.models import store; from ramcli.pipeline.tagger import open_tagger; "
            f"m = store.get({tiny_model.name!r}); t = open_tagger(m); s = m.preprocess.image_size; "
            "embeds, logits = t.infer(np.zeros((2, 3, s, s), np.float32)); assert t.engine.reweigher is not None; "
            "print(logits.shape, sorted(n for n in ('onnx', 'torch') if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split(")")[-1].strip() == "[]", out.stdout
