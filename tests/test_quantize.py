"""int8 variants: made by `ramcli models quantize`, run by `--precision int8`, agreement measured."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import SHARED, make_photo, run_cli
from ramcli.models import store
from ramcli.models.quantize import compare_tags, top_overlap


@pytest.fixture(scope="module")
def q8_model(tiny_checkpoint: dict[str, Path]) -> store.InstalledModel:
    """Its own copy of the tiny model, so the int8 files do not leak into other tests."""
    from ramcli.models.convert.export import import_checkpoint

    f = tiny_checkpoint
    return import_checkpoint(f["checkpoint"], "tiny_q8", tag_list=f["tag_list"], thresholds=f["thresholds"])


def all_scores(photo: Path, *options: str) -> dict[str, float]:
    """Every tag's score for ``photo`` from the real CLI with ``options``."""
    out = run_cli("tag", "--dry-run", "--json", "--threshold", "0", "-m", "tiny_q8", *options, str(photo))
    assert out.returncode == 0, out.stderr
    return {t["name"]: t["score"] for t in json.loads(out.stdout)["tags"]}


def test_compare_tags_counts_shared_either_and_identical_sets() -> None:
    ref = np.array([[1, 1, 0, 0], [0, 1, 0, 1]], dtype=bool)
    low = np.array([[1, 0, 1, 0], [0, 1, 0, 1]], dtype=bool)
    assert compare_tags(ref, low) == (3, 5, 1)  # image 0: {a,b} vs {a,c}; image 1 the same


def test_top_overlap_counts_shared_best_tags() -> None:
    ref = np.array([[0.9, 0.8, 0.1, 0.0], [0.1, 0.2, 0.3, 0.4]])
    low = np.array([[0.9, 0.1, 0.8, 0.0], [0.4, 0.3, 0.2, 0.1]])
    assert top_overlap(ref, low, 2) == 1 + 0  # {0,1} vs {0,2}; {2,3} vs {0,1}
    assert top_overlap(ref, low, 9) == 8  # k above T: every tag, both rows


def test_int8_is_opt_in_and_says_how_to_get_it(q8_model, tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "p.jpg", seed=2)
    res = run_cli("tag", "--dry-run", "-m", "tiny_q8", "--precision", "int8", str(photo))
    assert res.returncode == 1
    assert "tiny_q8" in res.stderr and "ramcli models quantize tiny_q8" in res.stderr
    bad = run_cli("tag", "--dry-run", "-m", "tiny_q8", "--precision", "int4", str(photo))
    assert bad.returncode == 2 and "Invalid value for '--precision'" in bad.stderr


def test_quantize_writes_int8_graphs_runs_them_and_reports_agreement(q8_model, tmp_path: Path) -> None:
    res = run_cli("models", "quantize", "tiny_q8", "--json")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["precision"] == "int8" and got["images"] == 4 and got["reference_tags"] >= 0
    assert 0.0 <= got["tag_agreement"] <= 1.0 and 0.0 <= got["identical_tag_sets"] <= 1.0
    assert 0.0 < got["scores_max_abs"] < 0.2  # int8 moves scores, a little
    for fp32 in (q8_model.path / store.ENCODER, q8_model.path / store.HEAD):
        int8 = store.graph_variant(fp32, "int8")
        assert str(int8) in got["files"] and int8.stat().st_size < fp32.stat().st_size
        ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
        assert ops & {"DynamicQuantizeMatMul", "MatMulInteger", "MatMulIntegerToFloat"}, ops
    meta = json.loads((q8_model.path / store.META).read_text())
    assert meta["precisions"]["int8"]["tag_agreement"] == got["tag_agreement"]
    assert not list(q8_model.path.glob(".*partial"))

    photo = make_photo(tmp_path / "p.jpg", seed=2)
    scores = {precision: all_scores(photo, "--precision", precision) for precision in ("fp32", "int8")}
    assert scores["fp32"].keys() == scores["int8"].keys()
    diff = max(abs(scores["fp32"][k] - scores["int8"][k]) for k in scores["fp32"])
    assert 0 < diff < 0.2  # really the int8 graphs, and close

    bench = run_cli("bench", "-m", "tiny_q8", "--synthetic", "2", "--precision", "int8", "--json")
    assert bench.returncode == 0, bench.stderr
    assert json.loads(bench.stdout)["photos"] == 2


def test_verify_measures_int8_on_the_users_photos(q8_model, tmp_path: Path) -> None:
    if not store.graph_variant(q8_model.path / store.HEAD, "int8").exists():
        assert run_cli("models", "quantize", "tiny_q8").returncode == 0
    folder = tmp_path / "mine"
    for i in range(3):
        make_photo(folder / f"{i}.jpg", seed=10 + i)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a photo")
    res = run_cli("models", "verify", "tiny_q8", "--photos", str(folder), "--json")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["ok"] and got["int8"]["images"] == 3
    assert got["draft_decode"]["images"] == 3 and 0.0 <= got["draft_decode"]["tag_agreement"] <= 1.0
    assert "broken.jpg" in res.stderr
    human = run_cli("models", "verify", "tiny_q8", "--photos", str(folder))
    assert "int8 against fp32 on 3 images (" in human.stdout and "% of tags shared" in human.stdout
    assert "draft against exact JPEG decoding on 3 images (" in human.stdout


def test_draft_decoding_in_the_library_keeps_the_photos_size(q8_model, tmp_path: Path) -> None:
    import sqlite3

    photo = make_photo(tmp_path / "lib" / "big.jpg", (2400, 1600), seed=8, quality=90)
    scores = {decode: all_scores(photo, "--decode", decode) for decode in ("exact", "draft")}
    assert scores["exact"] != scores["draft"]  # really decoded differently...
    assert max(abs(scores["exact"][k] - scores["draft"][k]) for k in scores["exact"]) < 0.05  # ...and close
    index = tmp_path / "d.db"
    res = run_cli("tag", "--no-write", "--decode", "draft", "-m", "tiny_q8", "--index", str(index), str(photo.parent))
    assert res.returncode == 0, res.stderr
    assert sqlite3.connect(index).execute("select width, height from images").fetchall() == [(2400, 1600)]
    bad = run_cli("tag", "--dry-run", "-m", "tiny_q8", "--decode", "fast", str(photo))
    assert bad.returncode == 2 and "Invalid value for '--decode'" in bad.stderr


def test_tag2text_quantizes_encoder_and_head_and_compares_captions(tmp_path: Path) -> None:
    golden = SHARED / "golden" / "tag2text_tiny"
    if not golden.is_dir():
        pytest.skip("shared golden fixtures not present")
    from ramcli.models.convert.tag2text_export import import_tag2text
    from ramcli.models.quantize import agreement, quantize

    config = json.loads((golden / "config.json").read_text(encoding="utf-8"))
    heads = config["official_config_files_used"]["med_config.json"]["num_attention_heads"]
    installed = import_tag2text(golden / "checkpoint.pth", "t2t_q8", tag_list=golden / "tag_list.txt",
                                vocab=SHARED / "data" / "bert-base-uncased" / "vocab.txt", text_heads=heads)
    written = quantize(installed)
    assert [p.name for p in written] == ["image_encoder.int8.onnx", "tag_head.int8.onnx"]
    result = agreement(installed)
    assert result["images"] == 4 and 0.0 <= result["identical_captions"] <= 1.0


def test_fp16_variant_for_cuda_runs_and_reports_agreement(q8_model, tmp_path: Path) -> None:
    res = run_cli("models", "quantize", "tiny_q8", "--to", "fp16", "--json")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["precision"] == "fp16" and got["tag_agreement"] >= 0.995 and 0 < got["scores_max_abs"] < 5e-3
    fp16 = store.graph_variant(q8_model.path / store.ENCODER, "fp16")
    graph = onnx.load(str(fp16))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.graph.initializer)
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # callers feed float32
    assert len(all_scores(make_photo(tmp_path / "p.jpg", seed=3), "--precision", "fp16")) > 0
    assert run_cli("models", "quantize", "tiny_q8", "--to", "int4").returncode == 2
    verify = run_cli("models", "verify", "tiny_q8", "--json")
    assert verify.returncode == 0 and json.loads(verify.stdout)["fp16"]["precision"] == "fp16"
