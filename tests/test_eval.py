"""`ramcli eval` on a small dataset in the authors' exact layout (tiny random RAM++, generated JPEGs),
through the real CLI, checked against an independent implementation of the authors' definitions
(recognize-anything ``ram/utils/metrics.py``: AP, CP, CR), against scikit-learn's average precision
where the definitions agree, and against `ramcli tag --dry-run`'s scores for the same photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED, make_photo, run_cli

N_IMAGES = 24
IN_VOCAB = [f"tag {i:03d}" for i in (0, 1, 2, 3, 5, 7, 11, 13)]
OPEN = {"Red kite": ["a bird of prey with a forked tail", "a reddish raptor soaring", "a kite over a field"],
        "Aerial photography": ["a photo taken from above", "a landscape seen from a drone"]}
EMPTY_TAG = "tag 013"  # no image has it: the authors count its AP as 0 in the mean


def authors_ap(scores: np.ndarray, target: np.ndarray) -> float:
    """Precision at each positive's rank, averaged over the positives (0 without positives)."""
    ranked = sorted(range(len(scores)), key=lambda i: -scores[i])
    hits, precisions = 0, []
    for rank, i in enumerate(ranked, 1):
        if target[i]:
            hits += 1
            precisions.append(hits / rank)
    return sum(precisions) / (hits + 1e-8)


def authors_pr(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    tp = int(np.sum(pred & target))
    return tp / (tp + int(np.sum(pred & ~target)) + 1e-9), tp / (tp + int(np.sum(~pred & target)) + 1e-9)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """datasets/openimages_tiny/ as the authors lay out OpenImages: relpaths without a suffix, one
    broken JPEG, the LLM descriptions one level up."""
    root = tmp_path_factory.mktemp("datasets")
    ds = root / "openimages_tiny"
    taglist = [*IN_VOCAB[:4], "Red kite", *IN_VOCAB[4:], "Aerial photography"]
    (ds / "imgs" / "test").mkdir(parents=True)
    (ds / "openimages_tiny_ram_taglist.txt").write_text("\n".join(taglist) + "\n", encoding="utf-8")
    (root / "openimages_tiny_llm_tag_descriptions.json").write_text(
        json.dumps([{k: v} for k, v in OPEN.items()]), encoding="utf-8")
    rng = np.random.default_rng(7)
    lines, targets = [], np.zeros((N_IMAGES, len(taglist)), bool)
    for n in range(N_IMAGES):
        rel = f"test/{n:04x}abcd"
        make_photo(ds / "imgs" / f"{rel}.jpg", size=(160 + 8 * n, 120), seed=n, quality=90)
        tags = [t for t in taglist if t != EMPTY_TAG and rng.random() < 0.35]
        if n < len(taglist) and taglist[n] != EMPTY_TAG:  # every other tag has a positive
            tags = list(dict.fromkeys([taglist[n], *tags]))
        for t in tags:
            targets[n, taglist.index(t)] = True
        lines.append(",".join([rel, *tags]))
    broken = ds / "imgs" / "test" / f"{N_IMAGES - 1:04x}abcd.jpg"
    broken.write_bytes(broken.read_bytes()[:200])  # cut off: not decodable
    (ds / "openimages_tiny_ram_annots.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"root": ds, "taglist": taglist, "targets": targets, "relpaths": [ln.split(",")[0] for ln in lines]}


@pytest.fixture(scope="module")
def evaluated(tiny_model, clip_model, dataset: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("eval-out")
    res = run_cli("eval", str(dataset["root"]), "-m", tiny_model.name, "--out", str(out), "--json",
                  "--batch-size", "5")
    assert res.returncode == 0, res.stderr
    return {"result": json.loads(res.stdout), "stderr": res.stderr, "out": out}


def test_scores_are_the_models_own(tiny_model, evaluated: dict, dataset: dict) -> None:
    """The in-vocabulary columns are what `ramcli tag --dry-run` gives the same photos (the same engine),
    and the broken image is scored as the authors' black image, said once."""
    r = evaluated["result"]
    scores = np.load(r["files"]["scores"])
    assert scores.shape == (N_IMAGES, len(dataset["taglist"])) and scores.dtype == np.float32
    photos = [dataset["root"] / "imgs" / f"{rel}.jpg" for rel in dataset["relpaths"][:6]]
    tagged = run_cli("tag", "--dry-run", "--json", "--threshold", "0", "-m", tiny_model.name, *map(str, photos))
    assert tagged.returncode == 0, tagged.stderr
    by_path = {Path(d["path"]).name: {t["name"]: t["score"] for t in d["tags"]}
               for d in map(json.loads, tagged.stdout.splitlines())}
    for n, p in enumerate(photos):
        for k, tag in enumerate(dataset["taglist"]):
            if tag in IN_VOCAB:
                assert scores[n, k] == pytest.approx(by_path[p.name][tag], abs=2e-6)
    assert r["failed"] == 1 and "scored as a black image" in evaluated["stderr"]
    assert evaluated["stderr"].count(dataset["relpaths"][-1]) == 1
    assert Path(r["files"]["failed"]).read_text().startswith(dataset["relpaths"][-1] + ":")
    assert r["open_set_tags"] == 2 and r["open_set_with_descriptions"] == 2
    # the open-set tags really are scored (not a constant), by their descriptions through the tag head
    for tag in OPEN:
        assert np.std(scores[:, dataset["taglist"].index(tag)]) > 1e-4


def test_metrics_match_the_authors_definitions_and_sklearn(evaluated: dict, dataset: dict) -> None:
    from sklearn.metrics import average_precision_score

    r = evaluated["result"]
    scores = np.load(r["files"]["scores"]).astype(np.float64)
    targets, taglist = dataset["targets"], dataset["taglist"]
    aps = [authors_ap(scores[:, k], targets[:, k]) for k in range(len(taglist))]
    assert r["mAP"] == pytest.approx(100 * np.mean(aps), abs=1e-9)
    per = {t["tag"]: t for t in r["per_tag"]}
    assert per[EMPTY_TAG]["AP"] == 0 and r["tags_without_positives"] == 1
    for k, tag in enumerate(taglist):
        assert per[tag]["AP"] == pytest.approx(100 * aps[k], abs=1e-9)
        if targets[:, k].any() and len(set(scores[:, k])) == N_IMAGES:  # where sklearn's definition agrees
            assert aps[k] == pytest.approx(average_precision_score(targets[:, k], scores[:, k]), abs=1e-6)
    # thresholds: the model's per-tag ones (conftest: 0.8 for every third tag, else 0.65), 0.5 open-set
    for tag in taglist:
        want = 0.5 if tag in OPEN else (0.8 if int(tag.split()[1]) % 3 == 0 else 0.65)
        assert per[tag]["threshold"] == pytest.approx(want)
    thr = np.array([per[t]["threshold"] for t in taglist], np.float32)
    pred = np.load(r["files"]["scores"]) >= thr
    prs = [authors_pr(pred[:, k], targets[:, k]) for k in range(len(taglist))]
    assert r["CP"] == pytest.approx(100 * np.mean([p for p, _ in prs]), abs=1e-9)
    assert r["CR"] == pytest.approx(100 * np.mean([rc for _, rc in prs]), abs=1e-9)


def test_the_authors_files(evaluated: dict, dataset: dict) -> None:
    r, taglist = evaluated["result"], dataset["taglist"]
    f = r["files"]
    summary = Path(f["summary"]).read_text().splitlines()
    assert summary == [f"mAP: {r['mAP']}", f"CP: {r['CP']}", f"CR: {r['CR']}"]
    ap_lines = Path(f["ap"]).read_text().splitlines()
    assert ap_lines[0] == "Tag,AP" and len(ap_lines) == len(taglist) + 1
    assert ap_lines[1:] == [f"{t['tag']},{t['AP']:.2f}" for t in r["per_tag"]]
    pr_lines = Path(f["pr"]).read_text().splitlines()
    assert pr_lines[0] == "Tag,Precision,Recall"
    assert pr_lines[1:] == [f"{t['tag']},{t['precision']:.2f},{t['recall']:.2f}" for t in r["per_tag"]]
    scores = np.load(f["scores"])
    thr = np.array([t["threshold"] for t in r["per_tag"]], np.float32)
    pred_lines = Path(f["pred"]).read_text().splitlines()
    assert [ln.split(",")[0] for ln in pred_lines] == dataset["relpaths"]
    for n, ln in enumerate(pred_lines):
        assert ln.split(",")[1:] == [taglist[k] for k in range(len(taglist)) if scores[n, k] >= thr[k]]
    with Image.open(f["plot"]) as png:
        assert png.size[0] >= 800 and png.size[1] >= 300
        px = np.asarray(png.convert("L"), dtype=np.float32)
    assert px.std() > 10 and (px < 128).mean() > 0.005  # curves, bars and text, not a blank page


def test_rethresholding_uses_the_cache(tiny_model, evaluated: dict, dataset: dict, tmp_path: Path) -> None:
    """--threshold-file on the cached scores: no inference, and CP/CR follow the new thresholds."""
    first = evaluated["result"]
    scores = np.load(first["files"]["scores"])
    thr = np.median(scores, axis=0)
    tf = tmp_path / "thr.txt"
    tf.write_text("\n".join(f"{x:.6f}" for x in thr) + "\n")
    res = run_cli("eval", str(dataset["root"]), "-m", tiny_model.name, "--out", str(evaluated["out"]), "--json",
                  "--threshold-file", str(tf), "--no-plot")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert r["from_cache"] == N_IMAGES and r["inference_s"] == 0 and r["mAP"] == first["mAP"]
    pred = scores >= np.array([float(f"{x:.6f}") for x in thr], np.float32)
    t = dataset["targets"]
    prs = [authors_pr(pred[:, k], t[:, k]) for k in range(t.shape[1])]
    assert 0 < r["CP"] == pytest.approx(100 * np.mean([p for p, _ in prs]), abs=1e-9)
    assert 0 < r["CR"] == pytest.approx(100 * np.mean([rc for _, rc in prs]), abs=1e-9)
    bad = tmp_path / "short.txt"
    bad.write_text("0.5\n")
    res = run_cli("eval", str(dataset["root"]), "-m", tiny_model.name, "--out", str(evaluated["out"]),
                  "--threshold-file", str(bad))
    assert res.returncode != 0 and "1 thresholds for 10 tags" in res.stderr


def test_decodings_side_by_side(tiny_model, evaluated: dict, dataset: dict) -> None:
    res = run_cli("eval", str(dataset["root"]), "-m", tiny_model.name, "--out", str(evaluated["out"]), "--json",
                  "--decode", "exact", "--decode", "draft", "--no-plot")
    assert res.returncode == 0, res.stderr
    runs = json.loads(res.stdout)["runs"]
    assert [(x["precision"], x["decode"]) for x in runs] == [("fp32", "exact"), ("fp32", "draft")]
    assert runs[0]["from_cache"] == N_IMAGES and runs[1]["from_cache"] == 0
    assert runs[0]["files"]["scores"] != runs[1]["files"]["scores"]


def test_index_annotations_and_metric_edge_cases(tmp_path: Path) -> None:
    """ImageNet-multi/HICO write 0-based tag indices; ties are broken as argsort()[::-1] leaves them."""
    from ramcli.evaluate.dataset import load_dataset
    from ramcli.evaluate.metrics import average_precision

    ds = tmp_path / "hico_tiny"
    ds.mkdir()
    (ds / "hico_tiny_taglist.txt").write_text("person ride horse\nperson feed cat\nno interaction\n")
    (ds / "hico_tiny_annots.txt").write_text("a.jpg,0 2\nb.jpg,1\nc.jpg,\n")
    d = load_dataset(ds)
    assert d.targets.tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]
    assert d.image_path("a.jpg") == ds / "imgs" / "a.jpg"
    assert average_precision(np.zeros(3, np.float32), np.zeros(3)) == 0.0
    s = np.array([0.5, 0.5, 0.1], np.float32)
    order = np.argsort(s)[::-1]
    want = 1.0 if order[0] == 1 else 0.5
    assert average_precision(s, np.array([0, 1, 0])) == pytest.approx(want, abs=1e-7)


@pytest.mark.skipif(not (SHARED / "data/recognize-anything/datasets").is_dir(), reason="no ../shared data")
def test_the_authors_annotation_files_load() -> None:
    from ramcli.evaluate.dataset import load_dataset

    base = SHARED / "data/recognize-anything/datasets"
    common = load_dataset(base / "openimages_common_214")
    assert common.targets.shape == (57224, 214) and common.targets.sum(axis=0).min() > 0
    assert common.image_path(common.relpaths[0]).name.endswith(".jpg")
    rare = load_dataset(base / "openimages_rare_200")
    assert rare.targets.shape[1] == 200 and set(rare.descriptions) == set(rare.taglist)
    imagenet = load_dataset(base / "imagenet_multi")
    assert imagenet.targets.shape == (50000, 1000) and imagenet.targets.sum() >= 50000 - 1000


def test_eval_on_your_own_library(tmp_path: Path, tiny_model) -> None:
    """`ramcli eval --library`: the user's confirmations are the ground truth for the tags they use; the scores
    are the model's (a full run's, up to the float16 of the stored tokens); the numbers are sklearn's AP and
    the authors' CP/CR; the library is written in the authors' format, which `ramcli eval` reads back."""
    from sklearn.metrics import average_precision_score

    root = tmp_path / "lib"
    photos = [make_photo(root / f"p{i}.jpg", (160 + 9 * i, 120), seed=700 + i) for i in range(10)]
    idx = ("--index", str(tmp_path / "i.db"))
    assert run_cli("tag", "-m", "tiny_ram_plus", "--no-write", *idx, str(root)).returncode == 0
    none = run_cli("eval", "--library", "-m", "tiny_ram_plus", *idx, "--json")
    assert none.returncode == 1 and "no confirmed tags" in none.stderr
    tag = "tag 005"
    yes, no = photos[:3], photos[3:5]
    assert run_cli("tags", "confirm", tag, *map(str, yes), *idx).returncode == 0
    assert run_cli("tags", "reject", tag, *map(str, no), *idx).returncode == 0
    res = run_cli("eval", "--library", "-m", "tiny_ram_plus", *idx, "--json", "--out", str(tmp_path / "ev"))
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["dataset"] == "library" and got["images"] == 10 and [t["tag"] for t in got["per_tag"]] == [tag]
    assert got["confirmed"] == 3 and got["rejected"] == 2
    full = run_cli("tag", "--dry-run", "--json", "--threshold", "0", "-m", "tiny_ram_plus", str(root))
    scores = {json.loads(line)["path"]: next(t["score"] for t in json.loads(line)["tags"] if t["name"] == tag)
              for line in full.stdout.splitlines()}
    y_true = [str(p) in {str(q) for q in yes} for p in photos]
    y_score = [scores[str(p)] for p in photos]
    assert got["mAP"] == pytest.approx(100 * average_precision_score(y_true, y_score), abs=1e-4)
    threshold = got["per_tag"][0]["threshold"]
    fired = [s > threshold for s in y_score]
    tp = sum(f and t for f, t in zip(fired, y_true, strict=True))
    assert got["per_tag"][0]["tp"] == tp and got["per_tag"][0]["fn"] == 3 - tp
    annots = Path(got["files"]["annots"]).read_text(encoding="utf-8").splitlines()
    assert sorted(line for line in annots if line.endswith("," + tag)) == sorted(f"{p},{tag}" for p in yes)
    assert Path(got["files"]["plot"]).stat().st_size > 10_000
    # the written dataset is the authors' format: `ramcli eval` runs the model on it afresh, with the same AP
    again = run_cli("eval", str(Path(got["files"]["taglist"]).parent), "--images", "/", "-m", "tiny_ram_plus",
                    "--json", "--no-plot", "--out", str(tmp_path / "ev2"))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["mAP"] == pytest.approx(got["mAP"], abs=1e-4)


def test_precisions_side_by_side(tiny_checkpoint: dict, clip_model, dataset: dict, tmp_path: Path) -> None:
    """fp32, int8 and fp16 judged by mAP in one report: each variant its own run, scores and files; the low
    precisions score close to fp32 but not identically (they really ran other graphs)."""
    from ramcli.models.convert.export import import_checkpoint

    f = tiny_checkpoint
    import_checkpoint(f["checkpoint"], "tiny_eval_q", tag_list=f["tag_list"], thresholds=f["thresholds"])
    assert run_cli("models", "quantize", "tiny_eval_q").returncode == 0
    assert run_cli("models", "quantize", "tiny_eval_q", "--to", "fp16").returncode == 0
    res = run_cli("eval", str(dataset["root"]), "-m", "tiny_eval_q", "--out", str(tmp_path / "ev"), "--json",
                  "--precision", "fp32", "--precision", "int8", "--precision", "fp16", "--no-plot")
    assert res.returncode == 0, res.stderr
    runs = json.loads(res.stdout)["runs"]
    assert [x["precision"] for x in runs] == ["fp32", "int8", "fp16"]
    scores = [np.load(x["files"]["scores"]) for x in runs]
    for low in scores[1:]:
        assert not np.array_equal(low, scores[0])
        assert np.abs(low - scores[0]).max() < 0.1
    assert all(abs(x["mAP"] - runs[0]["mAP"]) < 25 for x in runs)
