"""Parity with the authors' implementation: the golden tiny checkpoints and their outputs.

../shared/golden holds tiny RAM++/RAM checkpoints in the official layout and what the official
code computed from them (README there: tolerance 1e-4 on logits, scores and embeddings, identical
tag strings). These run the full user path: import -> ONNX -> decode -> engine -> tags.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli

MODELS = ["ram_plus_tiny", "ram_tiny"]
TOL = 1e-4


@pytest.fixture(scope="module", params=MODELS)
def golden_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    from conftest import GOLDEN

    if not GOLDEN.is_dir():
        pytest.skip("shared golden fixtures not present")
    name = request.param
    g = GOLDEN / name
    result = run_cli("models", "import", str(g / "checkpoint.pth"), "--name", f"golden_{name}",
                     "--tag-list", str(g / "tag_list.txt"), "--tag-list-zh", str(g / "tag_list_chinese.txt"),
                     "--thresholds", str(g / "thresholds.txt"), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["parity"]["logits_max_abs"] < 1e-5
    return name, g, json.loads((g / "expected.json").read_text(encoding="utf-8"))


def test_image_embeddings_match(golden_model) -> None:
    from ramcli.models import store
    from ramcli.runtime.engine import Engine, EngineOptions

    name, g, _ = golden_model
    engine = Engine(store.get(f"golden_{name}"), EngineOptions(device="cpu"))
    embeds = engine.encode(np.load(g / "inputs.npy"))
    ref = np.load(g / "image_embeds.npy")
    assert embeds.shape == ref.shape == (1, 145, 512)
    assert np.abs(embeds - ref).max() < TOL


def test_logits_from_reference_inputs(golden_model) -> None:
    """Model parity alone, on the exact preprocessed tensor the reference used."""
    from ramcli.models import store
    from ramcli.pipeline.tagger import open_tagger

    name, g, expected = golden_model
    tagger = open_tagger(store.get(f"golden_{name}"))
    _, logits = tagger.infer(np.load(g / "inputs.npy"))
    ref = np.asarray(expected["results"]["demo4.jpg"]["logits"], dtype=np.float32)
    assert np.abs(logits[0] - ref).max() < TOL


def test_cli_scores_and_tags_match_reference(golden_model, shared: Path) -> None:
    """Decode + preprocess + engine through the CLI, on all four golden images."""
    name, _, expected = golden_model
    images = [shared / "golden" / "images" / img for img in expected["images"]]
    every = run_cli("tag", "--dry-run", "--json", "--threshold", "0", "--model", f"golden_{name}",
                    *map(str, images))
    official = run_cli("tag", "--dry-run", "--json", "--model", f"golden_{name}", *map(str, images))
    assert every.returncode == 0 and official.returncode == 0, every.stderr + official.stderr
    all_lines = [json.loads(line) for line in every.stdout.splitlines()]
    fired_lines = [json.loads(line) for line in official.stdout.splitlines()]
    assert [Path(r["path"]).name for r in all_lines] == expected["images"]
    for rec_all, rec_fired in zip(all_lines, fired_lines, strict=True):
        exp = expected["results"][Path(rec_all["path"]).name]
        scores = {t["name"]: t["score"] for t in rec_all["tags"]}
        tag_list = exp["tags"].split(" | ")
        assert len(scores) == 40
        ref_scores = np.asarray(exp["scores"])
        ours = np.asarray([scores[n] for n in _tag_list(name)])
        assert np.abs(ours - ref_scores).max() < TOL
        assert sorted(t["name"] for t in rec_fired["tags"]) == sorted(tag_list)
        zh = sorted(t["name_zh"] for t in rec_fired["tags"])
        assert zh == sorted(s.strip() for s in exp["tags_chinese"].split(" | "))


def _tag_list(name: str) -> list[str]:
    from conftest import GOLDEN

    return (GOLDEN / name / "tag_list.txt").read_text(encoding="utf-8").splitlines()


def test_batching_does_not_change_results(golden_model, shared: Path) -> None:
    from ramcli.models import store
    from ramcli.pipeline.tagger import open_tagger
    from ramcli.runtime.images import load_input

    name, _, expected = golden_model
    model = store.get(f"golden_{name}")
    tagger = open_tagger(model)
    batch = np.stack([load_input(shared / "golden" / "images" / img, model.preprocess)[0]
                      for img in expected["images"]])
    _, together = tagger.infer(batch)
    for i in range(len(batch)):
        _, alone = tagger.infer(batch[i:i + 1])
        assert np.abs(alone[0] - together[i]).max() < 1e-5


def test_fp16_keeps_swin_masks_and_the_reference_tags(golden_model, shared: Path) -> None:
    """fp16 (for CUDA) must not break Swin's shifted-window masks (one public fp16 export did):
    on all four golden images, panorama included, scores stay within float16 rounding of the
    authors' and every tag further from its threshold than that rounding is kept."""
    from ramcli.models import store
    from ramcli.models.quantize import FP16, quantize
    from ramcli.pipeline.tagger import open_tagger
    from ramcli.runtime.engine import EngineOptions
    from ramcli.runtime.images import load_input
    from ramcli.runtime.tagging import sigmoid

    name, _, expected = golden_model
    model = store.get(f"golden_{name}")
    if not store.graph_variant(model.path / store.ENCODER, FP16).exists():
        quantize(model, FP16)
    tagger = open_tagger(model, EngineOptions(device="cpu", precision=FP16))
    names = _tag_list(name)
    for img in expected["images"]:
        exp = expected["results"][img]
        x = load_input(shared / "golden" / "images" / img, model.preprocess)[0][None]
        scores = sigmoid(tagger.infer(x)[1][0])
        assert np.isfinite(scores).all()
        ref = np.asarray(exp["scores"], dtype=np.float32)
        err = np.abs(scores - ref)
        assert 0 < err.max() < 5e-3, (img, err.max())  # really float16, and close
        fired = {names[i] for i in np.flatnonzero(scores > model.thresholds)}
        clear = np.abs(ref - model.thresholds) > 5e-3
        want = set(exp["tags"].split(" | ")) if exp["tags"] else set()
        assert {names[i] for i in np.flatnonzero(clear)} & (fired ^ want) == set(), img
