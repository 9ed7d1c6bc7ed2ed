"""Speed at the limit: FLOPs counted on the graphs, bench against the machine's matrix-product rate,
tag screening (the head on the K nearest tags), and the one-shot GPU check on the CPU provider."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import REPO, make_photo, run_cli
from ramcli.models.flops import graph_gflop, model_flops, reweight_gflop


def _graph(path: Path) -> Path:
    """MatMul (b, 8, 16) x (16, 32) then a 3x3 Conv 4 -> 6 channels on (b, 4, 10, 10), stride 1, no pad."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [16, 32], np.zeros(16 * 32, np.float32))
    k = helper.make_tensor("k", TensorProto.FLOAT, [6, 4, 3, 3], np.zeros(6 * 4 * 9, np.float32))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Conv", ["img", "k"], ["z"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 8, 16]),
         helper.make_tensor_value_info("img", TensorProto.FLOAT, ["b", 4, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], [w, k])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_flops_of_a_known_graph(tmp_path: Path) -> None:
    g = _graph(tmp_path / "g.onnx")
    one = 2 * 8 * 16 * 32 + 2 * (6 * 8 * 8) * (4 * 3 * 3)
    assert graph_gflop(g, {}) * 1e9 == pytest.approx(one)
    assert graph_gflop(g, {"b": 3}) * 1e9 == pytest.approx(3 * one)


def test_model_flops_are_linear_in_tags_and_cached(tiny_model) -> None:
    from ramcli.models.store import HEAD

    flops = model_flops(tiny_model)
    assert flops is not None and flops.encoder > 0 and flops.head_per_tag > 0
    assert flops.head(7) == pytest.approx(graph_gflop(tiny_model.path / HEAD, {"tags": 7}))
    assert graph_gflop(tiny_model.path / "image_encoder.onnx", {"batch": 2}) == pytest.approx(2 * flops.encoder)
    assert json.loads((tiny_model.path / "flops.json").read_text())["gflop"]["encoder"] == flops.encoder
    assert reweight_gflop(4585, 51) == pytest.approx(4 * 4585 * 51 * 512 / 1e9)


def test_bench_reports_the_rate_against_the_machines_matmul_rate(tiny_model, tmp_path: Path) -> None:
    out = run_cli("bench", "-m", tiny_model.name, "--synthetic", "4", "--batch", "2", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    flops = model_flops(tiny_model)
    head = flops.head(tiny_model.num_tags) + reweight_gflop(tiny_model.num_tags,
                                                            int(tiny_model.meta["descriptions_per_tag"]))
    assert res["gflop_per_photo"] == {"encoder": round(flops.encoder, 2), "head": round(head, 2)}
    assert res["matmul_gflops"] > 0
    e2e = res["gflops"]["end_to_end"]
    assert e2e == pytest.approx((flops.encoder + head) * res["photos_per_s"], rel=0.02)
    assert res["of_matmul_peak"] == pytest.approx(e2e / res["matmul_gflops"], abs=2e-3)
    # screening: the head's share shrinks to K tags
    out = run_cli("bench", "-m", tiny_model.name, "--synthetic", "2", "--batch", "2", "--screen", "8", "--json")
    assert out.returncode == 0, out.stderr
    screened = json.loads(out.stdout)["gflop_per_photo"]["head"]
    assert screened == round(flops.head(8) + head - flops.head(tiny_model.num_tags), 2)


def _custom(n: int) -> list:
    from ramcli.vocab.custom import CustomTag

    rng = np.random.default_rng(3)
    rows = rng.normal(size=(n, 2, 512))
    rows /= np.linalg.norm(rows, axis=-1, keepdims=True)
    return [CustomTag(i + 1, f"mine {i}", None, None, 0.5, (), rows[i].astype(np.float32), "", False)
            for i in range(n)]


def test_screening_scores_the_k_nearest_tags_exactly_and_always_the_users(tiny_model) -> None:
    from ramcli.runtime.engine import Engine, EngineOptions
    from ramcli.runtime.tagging import SCREENED_OUT, Tagger
    from ramcli.runtime.vocabulary import Vocabulary

    vocab = Vocabulary.builtin(tiny_model).with_custom(_custom(2))
    x = np.random.default_rng(0).normal(size=(3, 145, 512)).astype(np.float32)
    full = Tagger(Engine(tiny_model), vocab).logits(x)
    k = 9
    screened = Tagger(Engine(tiny_model, EngineOptions(screen=k)), vocab)
    assert screened.head_tags == k + 2
    got = screened.logits(x)
    # which tags: the k built-in tags whose (weighted) embedding is nearest the CLS, by cosine, in numpy
    embeds = vocab.tag_embeds(x)
    cls = x[:, 0] / np.linalg.norm(x[:, 0], axis=-1, keepdims=True)
    cos = np.einsum("btc,bc->bt", embeds, cls) / np.linalg.norm(embeds, axis=-1)
    builtin = tiny_model.num_tags
    for b in range(len(x)):
        nearest = set(np.argsort(-cos[b, :builtin])[:k].tolist()) | {builtin, builtin + 1}
        scored = set(np.flatnonzero(got[b] != SCREENED_OUT).tolist())
        assert scored == nearest
        idx = sorted(scored)
        np.testing.assert_allclose(got[b, idx], full[b, idx], atol=1e-5)  # the full head's own scores
    assert (got == SCREENED_OUT).sum() == len(x) * (vocab.size - k - 2)


def test_screening_off_when_k_covers_the_vocabulary(tiny_model) -> None:
    from ramcli.runtime.engine import Engine, EngineOptions
    from ramcli.runtime.tagging import Tagger
    from ramcli.runtime.vocabulary import Vocabulary

    tagger = Tagger(Engine(tiny_model, EngineOptions(screen=tiny_model.num_tags)), Vocabulary.builtin(tiny_model))
    assert tagger.screen == 0 and tagger.head_tags == tiny_model.num_tags


def test_verify_reports_the_screens_recall_on_photos(tiny_model, tmp_path: Path) -> None:
    for i in range(3):
        make_photo(tmp_path / f"p{i}.jpg", seed=i)
    out = run_cli("models", "verify", tiny_model.name, "--photos", str(tmp_path), "--screen", "5",
                  "--screen", str(tiny_model.num_tags - 1), "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    small, large = res["screen_5"], res[f"screen_{tiny_model.num_tags - 1}"]
    assert small["screen"] == 5 and small["images"] == 3 and small["tags_gained"] == 0
    assert small["top10_overlap"] <= large["top10_overlap"]  # a wider screen keeps more of the ranking
    assert large["top10_overlap"] >= 0.9
    assert 0 <= small["fired_kept"] <= 1
    text = run_cli("models", "verify", tiny_model.name, "--photos", str(tmp_path), "--screen", "5")
    assert "tag screening at K=5 on 3 images" in text.stdout, text.stdout
    assert math.isfinite(small["scores_max_abs"])


def test_tag_with_screen_writes_only_screened_tags(tiny_model, tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "a.jpg")
    full = run_cli("tag", "--dry-run", "--json", "--threshold", "0", "-m", tiny_model.name, str(photo))
    few = run_cli("tag", "--dry-run", "--json", "--threshold", "0", "-m", tiny_model.name, "--screen", "6",
                  str(photo))
    assert full.returncode == 0 and few.returncode == 0, few.stderr
    scores = {t["name"]: t["score"] for t in json.loads(full.stdout)["tags"]}
    kept = {t["name"]: t["score"] for t in json.loads(few.stdout)["tags"] if t["score"] > 0}
    assert len(kept) == 6
    for name, score in kept.items():
        assert score == pytest.approx(scores[name], abs=1e-5)


def _openvino() -> None:
    pytest.importorskip("openvino", reason="OpenVINO not installed (pip install 'ramcli[openvino]')")


def test_openvino_fp32_gives_onnxruntimes_scores(tiny_model) -> None:
    _openvino()
    from ramcli.runtime.engine import Engine, EngineOptions
    from ramcli.runtime.tagging import Tagger
    from ramcli.runtime.vocabulary import Vocabulary

    x = np.random.default_rng(1).normal(size=(2, 3, 384, 384)).astype(np.float32)
    vocab = Vocabulary.builtin(tiny_model)
    ort_embeds, ort_logits = Tagger(Engine(tiny_model), vocab).infer(x)
    ov = Tagger(Engine(tiny_model, EngineOptions(backend="openvino")), vocab)
    embeds, logits = ov.infer(x)
    assert type(ov.engine.encoder).__module__ == "ramcli.runtime.openvino"  # not onnxruntime under another name
    np.testing.assert_allclose(embeds, ort_embeds, atol=1e-4)
    np.testing.assert_allclose(logits, ort_logits, atol=1e-4)


def test_bf16_runs_on_openvino_and_verify_measures_it(tiny_model, tmp_path: Path) -> None:
    _openvino()
    from ramcli.runtime import openvino

    photo = make_photo(tmp_path / "a.jpg")
    out = run_cli("tag", "--dry-run", "-m", tiny_model.name, "--precision", "bf16", str(photo))
    assert out.returncode == 1 and "bf16 runs on OpenVINO" in out.stderr and "--backend openvino" in out.stderr
    if "BF16" not in openvino.capabilities():
        pytest.skip("this CPU has no bfloat16 instructions (AMX / AVX512-BF16)")
    out = run_cli("tag", "--dry-run", "--json", "--threshold", "0", "-m", tiny_model.name, "--backend", "openvino",
                  "--precision", "bf16", str(photo))
    assert out.returncode == 0, out.stderr
    full = run_cli("tag", "--dry-run", "--json", "--threshold", "0", "-m", tiny_model.name, str(photo))
    low = {t["name"]: t["score"] for t in json.loads(out.stdout)["tags"]}
    ref = {t["name"]: t["score"] for t in json.loads(full.stdout)["tags"]}
    worst = max(abs(low[k] - ref[k]) for k in ref)
    assert 0 < worst < 0.05  # bfloat16 moves scores a little, not at all would mean fp32 ran
    res = json.loads(run_cli("models", "verify", tiny_model.name, "--photos", str(tmp_path), "--json").stdout)
    assert res["bf16"]["backend"] == "openvino" and res["bf16"]["images"] == 1
    assert 0 < res["bf16"]["scores_max_abs"] < 0.05


def test_backend_auto_measures_once_and_keeps_the_faster(tiny_model, tmp_path: Path) -> None:
    _openvino()
    from ramcli.config import cache_dir
    from ramcli.runtime.backends import CACHE

    cache = cache_dir() / CACHE
    cache.unlink(missing_ok=True)
    out = run_cli("bench", "-m", tiny_model.name, "--synthetic", "2", "--batch", "1", "--backend", "auto", "--json")
    assert out.returncode == 0, out.stderr
    entries = json.loads(cache.read_text())
    (key, hit), = entries.items()
    assert tiny_model.name in key and "fp32" in key
    times = hit["seconds_per_image"]
    assert set(times) == {"onnxruntime", "openvino"} and hit["chosen"] == min(times, key=times.get)
    assert json.loads(out.stdout)["backend"] == hit["chosen"]
    again = run_cli("bench", "-m", tiny_model.name, "--synthetic", "2", "--batch", "1", "--backend", "auto", "--json")
    assert again.returncode == 0 and json.loads(cache.read_text()) == entries  # read, not measured again


def test_the_gpu_check_runs_on_the_cpu_provider(tmp_path: Path) -> None:
    """The one-shot GPU check (tests/benchmarks/cuda_check.py) keeps working where there is no GPU:
    the same script, the tiny model, the CPU provider; its JSON says what ran where."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAMCLI_")}
    out = subprocess.run([sys.executable, str(REPO / "tests" / "benchmarks" / "cuda_check.py"), "--small",
                          "--workdir", str(tmp_path), "--out", str(tmp_path / "check.json")],
                         capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads((tmp_path / "check.json").read_text())
    assert json.loads(out.stdout) == res
    assert res["model"]["parity"]["scores_max_abs"] < 1e-5  # the real conversion ran, with its parity check
    runs = res["end_to_end"]
    assert {(r["precision"], r["decode"], r["batch"]) for r in runs} == {
        (p, d, b) for p in ("fp32", "fp16") for d in ("exact", "draft") for b in (1, 4)}
    assert all(r["photos"] == 8 and r["photos_per_s"] > 0 for r in runs)
    assert set(res["stages_ms_per_photo"]) == {"fp32", "fp16"}
    assert 0 < res["fp16_vs_fp32"]["scores_max_abs"] < 0.01  # fp16 really ran, and stayed close
    cuda = res["placement"]["provider"] == "CUDA"
    assert res["placement"]["io_binding"] is cuda
    if not cuda:
        assert res["cuda_vs_cpu"] is None and res["fp16_default_ok"] is False
        assert all(r["gpu_peak_mib"] is None for r in runs)  # no nvidia-smi: nothing made up
    assert "photos/s end to end" in out.stderr


def test_tensorrt_that_does_not_load_is_one_clear_line(tiny_model, tmp_path: Path) -> None:
    from ramcli.runtime.engine import TENSORRT, Engine, EngineOptions

    try:
        if Engine(tiny_model, EngineOptions(device="tensorrt")).head.get_providers()[0] == TENSORRT:
            pytest.skip("TensorRT loads here: nothing to refuse")
    except Exception:  # the refusal itself: what the CLI must say in one line, below
        pass
    photo = make_photo(tmp_path / "a.jpg")
    out = run_cli("tag", "--dry-run", "--device", "tensorrt", "-m", tiny_model.name, str(photo))
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "error: --device tensorrt was asked for, but TensorRT could not be loaded (pip install tensorrt (the version "
        "onnxruntime-gpu was built for), or use --device cuda)"]
    assert "EP Error" not in out.stdout + out.stderr


@pytest.fixture
def fp16_model(tiny_checkpoint: dict[str, Path]):
    """A copy of the tiny model with its fp16 graphs (made by the real quantize)."""
    from ramcli.models.convert.export import import_checkpoint
    from ramcli.models.quantize import FP16, quantize

    f = tiny_checkpoint
    model = import_checkpoint(f["checkpoint"], "tiny_fp16_auto", tag_list=f["tag_list"], thresholds=f["thresholds"])
    quantize(model, FP16)
    return model


def test_precision_auto_takes_fp16_only_on_cuda_with_measured_agreement(fp16_model) -> None:
    from ramcli.models import store
    from ramcli.runtime.engine import EngineOptions, resolve_precision

    def decided(device: str, fp16: dict | None) -> str:
        meta = json.loads((fp16_model.path / "meta.json").read_text())
        meta["precisions"] = {"fp16": fp16} if fp16 else {}
        (fp16_model.path / "meta.json").write_text(json.dumps(meta))
        return resolve_precision(store.get(fp16_model.name), EngineOptions(device=device, precision="auto")).precision

    good = {"device": "CUDA", "tag_agreement": 0.997}
    assert decided("tensorrt", good) == "fp16"
    assert decided("cpu", good) == "fp32"  # the CPU stays exact
    assert decided("tensorrt", {**good, "tag_agreement": 0.99}) == "fp32"  # below 99.5 %
    assert decided("tensorrt", {**good, "device": "CPU"}) == "fp32"  # measured elsewhere says nothing of CUDA
    assert decided("tensorrt", None) == "fp32"
    for p in fp16_model.path.glob("*.fp16.onnx"):
        p.unlink()
    assert decided("tensorrt", good) == "fp32"  # the graphs are gone
    assert resolve_precision(fp16_model, EngineOptions(precision="int8")).precision == "int8"  # asked for: kept
