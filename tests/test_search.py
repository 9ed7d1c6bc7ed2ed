"""`ramcli search`: the CLIP text encoder import, open-set prompts, tag matching, and rankings
checked against an independent computation of the documented formula (torch + open_clip)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import piexif
import pytest

from conftest import make_photo, run_cli
from ramcli.search.ranking import Vocabulary
from ramcli.vocab.openset import TEMPLATES, prompts


def test_text_encoder_matches_open_clip(clip_model, clip_checkpoint: Path) -> None:
    """Our tokenizer + ONNX session against open_clip's own tokenizer + PyTorch model."""
    import open_clip
    import torch

    from ramcli.runtime.textenc import TextEncoder

    texts = ["a photo of a dog.", "red bicycle", "修道院", "golden retriever wearing a red scarf", ""]
    model = open_clip.create_model("ViT-B-16", pretrained=None, force_quick_gelu=True)
    model.load_state_dict(torch.load(clip_checkpoint, weights_only=True))
    with torch.no_grad():
        want = model.encode_text(open_clip.get_tokenizer("ViT-B-16")(texts), normalize=True).numpy()
    got = TextEncoder(clip_model)(texts)
    assert np.abs(got - want).max() < 1e-4


def test_text_encoder_graph_is_stored_simplified(clip_model) -> None:
    """The export is stored as onnxruntime's basic-level optimisation of itself (convert.export.
    simplify_graph): fewer nodes to resolve when a search loads it, weights still memory-mapped."""
    import stat
    from collections import Counter

    import onnx

    graph = clip_model.path / "text_encoder.onnx"
    data = clip_model.path / "text_encoder.onnx.data"
    ops = Counter(n.op_type for n in onnx.load(str(graph), load_external_data=False).graph.node)
    assert ops["Constant"] == 0 and ops["Identity"] == 0 and sum(ops.values()) < 700  # the raw export: 1267
    assert data.stat().st_size > 200e6 and graph.stat().st_size < 1e6
    assert stat.S_IMODE(data.stat().st_mode) == stat.S_IMODE(graph.stat().st_mode)
    assert not list(clip_model.path.glob(".simplify-*"))


def test_clip_checkpoint_missing_a_tensor_is_refused(clip_checkpoint: Path, tmp_path: Path) -> None:
    import torch

    state = torch.load(clip_checkpoint, weights_only=True)
    del state["ln_final.weight"]
    bad = tmp_path / "bad_clip.pt"
    torch.save(state, bad)
    result = run_cli("models", "import", str(bad), "--name", "bad_clip")
    assert result.returncode == 1 and "1 missing: ln_final.weight" in result.stderr


def test_openset_prompts_follow_the_reference() -> None:
    assert len(TEMPLATES) == 63
    got = prompts("Aerial_photography.")
    assert got[0] == "There is a aerial photography in the scene."  # article from the original "A"
    assert got[2] == "This is a photo of a aerial photography in the scene."
    assert "This is an embroidered aerial photography." in got
    assert prompts("owl/eagle")[8] == "This is a photo of an owl or eagle."


def test_vocabulary_matching() -> None:
    vocab = Vocabulary.build(["dog", "hot dog", "beach", "bicycle", "red"], ["狗", "热狗", "海滩", "自行车", "红色"])
    assert vocab.match("Dog  beach") == (["dog", "beach"], False)
    assert vocab.match("hot dog stand") == (["hot dog"], True)
    assert vocab.match("a red bicycle") == (["red", "bicycle"], True)
    assert vocab.match("热狗 海滩") == (["hot dog", "beach"], False)
    assert vocab.match("golden retriever") == ([], True)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, tiny_model, clip_model) -> dict:
    root = tmp_path_factory.mktemp("lib")
    photos = []
    for i in range(8):
        p = make_photo(root / ("trip" if i % 2 else "home") / f"p{i}.jpg", (160 + 10 * i, 120), seed=200 + i)
        date = f"2023:0{1 + i}:1{i} 10:00:00".encode()
        piexif.insert(piexif.dump({"Exif": {piexif.ExifIFD.DateTimeOriginal: date}}), str(p))
        photos.append(p)
    index = root.parent / f"{root.name}.db"
    result = run_cli("tag", "-m", "tiny_ram_plus", "--threshold", "0", "--top-k", "5", "--index", str(index), str(root))
    assert result.returncode == 0, result.stderr
    return {"root": root, "photos": photos, "index": index}


def search(indexed: dict, *args: str) -> list[dict]:
    result = run_cli("search", "--index", str(indexed["index"]), "--json", *args)
    assert result.returncode in (0, 1), result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def independent_ranking(indexed: dict, query: str, tiny_checkpoint: dict, clip_checkpoint: Path) -> list[tuple]:
    """The documented formula, computed with torch + open_clip from the index's raw rows."""
    import open_clip
    import torch

    from ramcli.models.convert.checkpoint import build_model, infer_config, load_state_dict, remap_keys

    state = remap_keys(load_state_dict(tiny_checkpoint["checkpoint"]))
    ram = build_model(state, infer_config(state, 40))
    clip = open_clip.create_model("ViT-B-16", pretrained=None, force_quick_gelu=True)
    clip.load_state_dict(torch.load(clip_checkpoint, weights_only=True))
    texts = [query, f"a photo of a {query}."]
    with torch.no_grad():
        e = clip.encode_text(open_clip.get_tokenizer("ViT-B-16")(texts), normalize=True)
        q = torch.nn.functional.normalize(e.mean(0), dim=0)
    db = sqlite3.connect(indexed["index"])
    rows = db.execute("select p.path, i.cls, i.tokens from photos p join images i on i.hash = p.hash").fetchall()
    out = []
    for path, cls, tokens in rows:
        c = torch.from_numpy(np.frombuffer(cls, np.float32).copy())
        t = torch.from_numpy(np.frombuffer(tokens, np.float16).astype(np.float32).reshape(1, 145, 512))
        with torch.no_grad():
            r = torch.sigmoid(ram.tag_logits(t, q.view(1, 1, 512))).item()
        out.append((path, r, float(torch.nn.functional.normalize(c, dim=0) @ q)))
    return sorted(out, key=lambda x: -x[1])


def test_open_set_ranking_equals_independent_formula(indexed: dict, tiny_checkpoint: dict,
                                                     clip_checkpoint: Path) -> None:
    query = "golden retriever wearing a scarf"
    ours = search(indexed, query, "--limit", "50")
    want = independent_ranking(indexed, query, tiny_checkpoint, clip_checkpoint)
    assert [r["path"] for r in ours] == [w[0] for w in want]
    for r, (_, rerank, clip) in zip(ours, want, strict=True):
        assert r["via"] == "rerank" and r["tag_hits"] == 0
        assert abs(r["score"] - rerank) < 1e-4 and abs(r["clip"] - clip) < 1e-4
    db = sqlite3.connect(indexed["index"])
    assert db.execute("select count(*) from query_cache where text = ?", [query]).fetchone()[0] == 1


def test_rerank_without_the_few_tags_head_gives_the_same_scores(indexed: dict, tiny_model) -> None:
    """A model converted before tag_head_few.onnx existed re-ranks with its full head, alike."""
    from ramcli.models import store

    query = "a lighthouse at dusk"
    with_few = search(indexed, query, "--limit", "50")
    few = tiny_model.path / store.HEAD_FEW
    away = few.with_name(few.name + ".away")
    few.rename(away)
    try:
        without = search(indexed, query, "--limit", "50")
    finally:
        away.rename(few)
    assert [r["path"] for r in without] == [r["path"] for r in with_few] and len(without) == 8
    assert all(r["via"] == "rerank" for r in without)
    assert max(abs(a["score"] - b["score"]) for a, b in zip(with_few, without, strict=True)) < 1e-4


def test_tag_query_ranks_carriers_first_by_stored_score(indexed: dict) -> None:
    db = sqlite3.connect(indexed["index"])
    tag, n = db.execute("select tag, count(*) from image_tags group by tag order by count(*) desc").fetchone()
    carriers = dict(db.execute("select p.path, t.score from photos p join image_tags t on t.hash = p.hash "
                               "where t.tag = ?", [tag]).fetchall())
    got = search(indexed, tag)
    assert [r["path"] for r in got] == sorted(carriers, key=lambda p: -carriers[p])
    assert all(r["via"] == "tag" for r in got) and len(got) == n
    mixed = search(indexed, f"{tag} under a purple sky", "--limit", "50")
    assert {r["path"] for r in mixed[:n]} == set(carriers)  # tag hits never lose to CLIP guesses
    assert all(r["tag_hits"] == 1 for r in mixed[:n]) and all(r["tag_hits"] == 0 for r in mixed[n:])


def test_like_an_indexed_photo_returns_it_first(indexed: dict, tmp_path: Path) -> None:
    target = indexed["photos"][3]
    got = search(indexed, "--like", str(target), "--limit", "3")
    assert got[0]["path"] == str(target) and abs(got[0]["score"] - 1.0) < 1e-5
    copy = tmp_path / "copy.jpg"  # not indexed, same pixels: found by image hash
    shutil.copyfile(target, copy)
    assert search(indexed, "--like", str(copy), "--limit", "1")[0]["path"] == str(target)


def test_filters(indexed: dict) -> None:
    trip = search(indexed, "anything at all", "--in", str(indexed["root"] / "trip"), "--limit", "50")
    assert trip and all("/trip/" in r["path"] for r in trip) and len(trip) == 4
    dated = search(indexed, "anything at all", "--since", "2023-03-01", "--until", "2023-05-14", "--limit", "50")
    assert sorted(r["taken_at"][:7] for r in dated) == ["2023-03", "2023-04", "2023-05"]
    db = sqlite3.connect(indexed["index"])
    tag = db.execute("select tag from image_tags group by tag order by count(*) desc").fetchone()[0]
    having = {r["path"] for r in search(indexed, "something", "--tag", tag, "--limit", "50")}
    lacking = {r["path"] for r in search(indexed, "something", "--not-tag", tag, "--limit", "50")}
    assert having and not having & lacking and len(having | lacking) == 8
    assert len(search(indexed, "something", "--limit", "2")) == 2
    scores = [r["score"] for r in search(indexed, "something", "--limit", "50")]
    floor = sorted(scores)[len(scores) // 2]
    assert all(r["score"] >= floor for r in search(indexed, "something", "--min-score", str(floor), "--limit", "50"))


def test_output_formats(indexed: dict) -> None:
    base = ("search", "--index", str(indexed["index"]), "bicycle in the rain", "--limit", "3")
    lines = run_cli(*base, "--paths").stdout.splitlines()
    assert len(lines) == 3 and all(Path(p).is_file() for p in lines)
    nul = run_cli(*base, "--paths", "-0").stdout
    assert nul.split("\0")[:-1] == lines and "\n" not in nul
    table = run_cli(*base).stdout
    assert "3 photos" in table and Path(lines[0]).name in table


def test_errors(tmp_path: Path, indexed: dict, tiny_model) -> None:
    missing = run_cli("search", "dog", "--index", str(tmp_path / "none.db"))
    assert missing.returncode == 1 and "ramcli tag" in missing.stderr
    usage = run_cli("search", "--index", str(indexed["index"]))
    assert usage.returncode == 2 and "--like" in usage.stderr
    bad_date = run_cli("search", "x", "--since", "yesterday", "--index", str(indexed["index"]))
    assert bad_date.returncode == 2 and "YYYY-MM-DD" in bad_date.stderr
    # a cache without the CLIP encoder: open-set queries say what to install, tag queries still work
    from ramcli.models import store

    cache = tmp_path / "cache"
    shutil.copytree(store.get("tiny_ram_plus").path, cache / "models" / "tiny_ram_plus")
    env = {"RAMCLI_CACHE_DIR": str(cache)}
    no_clip = run_cli("search", "never asked before", "--index", str(indexed["index"]), env=env)
    assert no_clip.returncode == 1 and "ramcli models pull clip_vit_b16_text" in no_clip.stderr
    tag = sqlite3.connect(indexed["index"]).execute("select tag from image_tags limit 1").fetchone()[0]
    assert run_cli("search", tag, "--index", str(indexed["index"]), env=env).returncode == 0


def test_search_imports_no_torch(indexed: dict) -> None:
    result = run_cli("search", "a quiet lake", "--index", str(indexed["index"]), env={"PYTHONPROFILEIMPORTTIME": "1"})
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "ramcli.search.ranking" in imported
    assert not {m for m in imported if m.split(".")[0] in {"torch", "open_clip", "torchvision"}}


def test_tag_only_search_needs_neither_numpy_nor_rich(indexed: dict) -> None:
    """The start-up budget of a tag-name search (0.3 s) has no room for numpy's or Rich's import."""
    tag = sqlite3.connect(indexed["index"]).execute("select tag from image_tags limit 1").fetchone()[0]
    result = run_cli("search", tag, "--index", str(indexed["index"]), "--json",
                     env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0 and json.loads(result.stdout.splitlines()[0])["via"] == "tag"
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "ramcli.search.ranking" in imported
    assert not {m for m in imported if m.split(".")[0] in {"numpy", "rich", "pydantic", "onnxruntime"}}
