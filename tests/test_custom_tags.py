"""`ramcli add-tag` and `ramcli tags ...`: the user's vocabulary, applied to the whole library from
stored embeddings. Scores are checked against a full run with the tag in the vocabulary."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED, make_photo, run_cli
from ramcli.vocab.custom import CustomTag


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def test_custom_tags_join_the_pass_without_moving_builtin_scores(tiny_model) -> None:
    """Mixed description counts in one pass (the reference's issue #154): each custom tag scores as
    it does alone, and the built-in tags' logits do not move."""
    from ramcli.runtime.engine import Engine
    from ramcli.runtime.vocabulary import Vocabulary

    rng = np.random.default_rng(0)
    engine = Engine(tiny_model)
    base = Vocabulary.builtin(tiny_model)
    tags = [CustomTag(i + 1, f"custom {i}", None, None, 0.5, (), _unit(rng.normal(size=(d, 512))), "", False)
            for i, d in enumerate([1, 3, 1, 7])]
    mixed = base.with_custom(tags)
    x = rng.normal(size=(2, 145, 512)).astype(np.float32)
    plain = engine.logits(x, base.tag_embeds(x))
    both = engine.logits(x, mixed.tag_embeds(x))
    assert np.abs(both[:, :base.size] - plain).max() <= 1e-5
    for t in tags:
        pos = mixed.ids.index(t.tag_index)
        alone = base.only([t])
        np.testing.assert_allclose(both[:, pos], engine.logits(x, alone.tag_embeds(x))[:, 0], atol=1e-5)
    # the D descriptions are weighted per image (RAM++), not averaged
    t = tags[3]
    w = np.exp(mixed.reweight_scale * _unit(x[0, 0]) @ t.embeds.T)
    want = (w / w.sum()) @ t.embeds
    np.testing.assert_allclose(mixed.tag_embeds(x)[0, mixed.ids.index(t.tag_index)], want, atol=1e-5)


def test_shadowed_and_disabled_builtins_are_not_reported(tiny_model) -> None:
    from ramcli.runtime.engine import Engine
    from ramcli.runtime.tagging import Selection, Tagger
    from ramcli.runtime.vocabulary import Vocabulary

    base = Vocabulary.builtin(tiny_model)
    shadow = CustomTag(5, base.names[2], "自定义", None, 0.5, (), _unit(np.ones((1, 512))), "", False)
    tagger = Tagger(Engine(tiny_model), base.with_custom([shadow], disabled=[base.names[7]]))
    x = np.random.default_rng(1).normal(size=(1, 145, 512)).astype(np.float32)
    tags = tagger.tags(tagger.logits(x)[0], Selection(threshold=0))
    indices = [t.index for t in tags]
    assert 2 not in indices and 7 not in indices and -5 in indices and len(tags) == base.size - 1
    assert next(t for t in tags if t.index == -5).name_zh == "自定义"


@pytest.fixture()
def library(tmp_path: Path, tiny_model, clip_model) -> dict:
    root = tmp_path / "lib"
    photos = [make_photo(root / f"p{i}.jpg", (150 + 7 * i, 110), seed=300 + i) for i in range(10)]
    index = tmp_path / "index.db"
    result = run_cli("tag", "-m", "tiny_ram_plus", "--index", str(index), str(root))
    assert result.returncode == 0, result.stderr
    return {"root": root, "photos": photos, "index": index}


def _dry_scores(library: dict, name: str) -> dict[str, float]:
    """A full run (encoder + head, custom tags in the vocabulary), every score listed."""
    res = run_cli("tag", "--dry-run", "--json", "--threshold", "0", "-m", "tiny_ram_plus",
                  "--index", str(library["index"]), str(library["root"]))
    assert res.returncode == 0, res.stderr
    out = {}
    for line in res.stdout.splitlines():
        d = json.loads(line)
        out[d["path"]] = next(t["score"] for t in d["tags"] if t["name"] == name)
    return out


def _index_scores(library: dict, name: str) -> dict[str, float]:
    db = sqlite3.connect(library["index"])
    return dict(db.execute("select p.path, t.score from image_tags t join photos p on p.hash = t.hash "
                           "where t.tag = ?", [name]).fetchall())


def _keywords(path: Path) -> set[str]:
    from ramcli.metadata import read_keywords

    return read_keywords(path)


def test_add_tag_rescores_from_tokens_like_a_full_run(library: dict) -> None:
    idx = ["--index", str(library["index"])]
    res = run_cli("add-tag", "golden retriever", "--threshold", "0.01", "--json", *idx)
    assert res.returncode == 0, res.stderr
    assert "0 re-encoded" in res.stderr
    full = _dry_scores(library, "golden retriever")
    # a threshold in the middle of the scores: some photos get the tag, some do not
    middle = float(np.median(list(full.values())))
    assert run_cli("tags", "set", "golden retriever", "--threshold", f"{middle:.6f}", *idx).returncode == 0
    stored = _index_scores(library, "golden retriever")
    fired = {p for p, s in full.items() if s > float(f"{middle:.6f}")}
    assert set(stored) == fired and 0 < len(fired) < len(full)
    assert max(abs(stored[p] - full[p]) for p in fired) <= 1e-4
    for p in library["photos"]:
        assert ("golden retriever" in _keywords(p)) == (str(p) in fired)

    again = run_cli("add-tag", "golden retriever", "--threshold", f"{middle:.6f}", *idx)  # idempotent
    assert again.returncode == 0 and "0 photos' keywords changed" in again.stderr
    listed = json.loads(run_cli("tags", "show", "golden retriever", "--json", *idx).stdout)
    assert listed["photos"] == len(fired) and listed["source"] == "custom" and not listed["pending"]

    found = run_cli("search", "golden retriever", "--json", *idx)  # a custom tag is a tag name to search
    assert {json.loads(line)["path"] for line in found.stdout.splitlines()} == fired

    removed = run_cli("tags", "remove", "golden retriever", *idx)
    assert removed.returncode == 0, removed.stderr
    assert not _index_scores(library, "golden retriever")
    assert not any("golden retriever" in _keywords(p) for p in library["photos"])


def test_user_keyword_survives_and_new_photos_get_custom_tags(library: dict) -> None:
    import pyexiv2

    idx = ["--index", str(library["index"])]
    target = library["photos"][0]
    with pyexiv2.Image(str(target)) as img:  # the user's own keyword, equal to the custom tag's name
        img.modify_xmp({"Xmp.dc.subject": [*_keywords(target), "lighthouse"]})
    assert run_cli("tag", "-m", "tiny_ram_plus", *idx, str(library["root"])).returncode == 0
    assert run_cli("add-tag", "lighthouse", "--threshold", "0.001", *idx).returncode == 0
    assert run_cli("tags", "remove", "lighthouse", *idx).returncode == 0
    assert "lighthouse" in _keywords(target)  # theirs, so it stays

    assert run_cli("add-tag", "harbour", "-d", "boats moored in a small harbour", "-d", "a quay with fishing boats",
                   "--threshold", "0.001", *idx).returncode == 0
    new = make_photo(library["root"] / "later.jpg", (140, 100), seed=999)
    assert run_cli("tag", "-m", "tiny_ram_plus", *idx, str(library["root"])).returncode == 0
    assert "harbour" in _keywords(new)
    info = json.loads(run_cli("tags", "show", "harbour", "--json", *idx).stdout)
    assert info["embeddings"] == 2 and info["photos"] == len(library["photos"]) + 1


def test_no_write_defers_and_photos_without_tokens_are_reencoded(tmp_path: Path, tiny_model, clip_model) -> None:
    root = tmp_path / "lib"
    photos = [make_photo(root / f"q{i}.png", (120, 90), seed=400 + i) for i in range(4)]
    idx = ["--index", str(tmp_path / "i.db")]
    assert run_cli("tag", "-m", "tiny_ram_plus", "--no-store-tokens", *idx, str(root)).returncode == 0
    res = run_cli("add-tag", "kite", "--threshold", "0.001", "--no-write", *idx)
    assert res.returncode == 0 and "4 re-encoded" in res.stderr
    assert not any("kite" in _keywords(p) for p in photos)
    res = run_cli("tags", "apply", *idx)
    assert res.returncode == 0, res.stderr
    assert all("kite" in _keywords(p) for p in photos)


def test_tags_list_disable_enable_export_import(library: dict, tiny_checkpoint: dict, tmp_path: Path) -> None:
    # a model whose built-in tags fire on these photos: the tiny checkpoint with low thresholds
    low = tmp_path / "low.txt"
    low.write_text("\n".join(["0.2"] * 40), encoding="utf-8")
    f = tiny_checkpoint
    assert run_cli("models", "import", str(f["checkpoint"]), "--name", "tiny_low", "--tag-list", str(f["tag_list"]),
                   "--thresholds", str(low)).returncode == 0
    idx = ["--index", str(tmp_path / "low.db")]
    assert run_cli("tag", "-m", "tiny_low", *idx, str(library["root"])).returncode == 0
    builtin = json.loads(run_cli("tags", "list", "--json", *idx).stdout.splitlines()[0])
    assert builtin["source"] == "builtin" and builtin["name"] == "tag 000" and builtin["threshold"] == 0.2
    db = sqlite3.connect(tmp_path / "low.db")
    name, before = db.execute("select tag, count(*) from image_tags group by tag order by count(*) desc").fetchone()
    carriers = [Path(p) for (p,) in db.execute("select p.path from photos p join image_tags t on t.hash = p.hash "
                                                "where t.tag = ?", [name])]
    assert before > 0
    assert all(name in _keywords(p) for p in carriers)
    assert run_cli("tags", "disable", name, *idx).returncode == 0
    assert db.execute("select count(*) from image_tags where tag = ?", [name]).fetchone()[0] == 0
    assert not any(name in _keywords(p) for p in carriers)
    assert json.loads(run_cli("tags", "show", name, "--json", *idx).stdout)["state"] == "disabled"
    assert run_cli("tags", "enable", name, *idx).returncode == 0  # re-scored from the stored tokens
    assert db.execute("select count(*) from image_tags where tag = ?", [name]).fetchone()[0] == before
    assert all(name in _keywords(p) for p in carriers)

    assert run_cli("add-tag", "sailboat", "--zh", "帆船", "--threshold", "0.3", *idx).returncode == 0
    shared_file = tmp_path / "vocab.json"
    assert run_cli("tags", "export", str(shared_file), *idx).returncode == 0
    other = tmp_path / "other.db"
    shutil.copyfile(library["index"], other)
    sqlite3.connect(other).execute("delete from custom_tags").connection.commit()
    assert run_cli("tags", "import", str(shared_file), "--index", str(other), "--no-write").returncode == 0
    a = np.frombuffer(db.execute("select embeds from custom_tags where name = 'sailboat'").fetchone()[0], np.float32)
    b = np.frombuffer(sqlite3.connect(other).execute("select embeds from custom_tags where name = 'sailboat'")
                      .fetchone()[0], np.float32)
    np.testing.assert_array_equal(a, b)
    mine = [json.loads(line) for line in run_cli("tags", "list", "--custom", "--json", "--index", str(other))
            .stdout.splitlines()]
    assert [(t["name"], t["name_zh"], t["threshold"]) for t in mine] == [("sailboat", "帆船", 0.3)]


def test_bad_input_is_one_clear_line(library: dict, tmp_path: Path) -> None:
    idx = ["--index", str(library["index"])]
    assert "there is no custom tag 'nope'" in run_cli("tags", "remove", "nope", *idx).stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    res = run_cli("add-tag", "--descriptions-file", str(bad), *idx)
    assert res.returncode == 1 and str(bad) in res.stderr and "is not valid JSON" in res.stderr
    assert run_cli("add-tag", "a|b", *idx).returncode == 1
    assert "there is no index yet" in run_cli("tags", "remove", "x", "--index", str(tmp_path / "none.db")).stderr


def test_authors_llm_description_file(library: dict, tmp_path: Path) -> None:
    """The authors' format: a list of {tag: [descriptions]}; without NAME every tag is added at once.
    The OpenImages-rare file when ../shared is there (5 of its tags, to keep the test short)."""
    src = SHARED / "data" / "recognize-anything" / "openimages_rare_200_llm_tag_descriptions.json"
    if src.is_file():
        entries = json.loads(src.read_text(encoding="utf-8"))[:5]
    else:
        entries = [{f"thing {i}": [f"a thing number {i}", f"another view of thing {i}"]} for i in range(5)]
    f = tmp_path / "llm.json"
    f.write_text(json.dumps(entries), encoding="utf-8")
    res = run_cli("add-tag", "--descriptions-file", str(f), "--index", str(library["index"]))
    assert res.returncode == 0, res.stderr
    mine = [json.loads(line) for line in run_cli("tags", "list", "--custom", "--json", "--index",
                                                  str(library["index"])).stdout.splitlines()]
    want = {next(iter(e)): len(next(iter(e.values()))) for e in entries}
    assert {t["name"]: t["embeddings"] for t in mine} == want
    assert all(t["threshold"] == 0.5 and not t["pending"] for t in mine)


def test_a_vanished_photo_without_tokens_is_one_error_line(tmp_path: Path, tiny_model, clip_model) -> None:
    root = tmp_path / "lib"
    keep = make_photo(root / "keep.jpg", (120, 90), seed=500)
    gone = make_photo(root / "gone.jpg", (120, 90), seed=501)
    idx = ["--index", str(tmp_path / "i.db")]
    assert run_cli("tag", "-m", "tiny_ram_plus", "--no-store-tokens", *idx, str(root)).returncode == 0
    gone.unlink()
    res = run_cli("add-tag", "kite", "--threshold", "0.001", *idx)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 1 and len(errors) == 1 and str(gone) in errors[0]
    assert "kite" in _keywords(keep)  # the run went on


def test_parent_goes_into_the_hierarchical_keywords(library: dict) -> None:
    """`add-tag --parent`: the photos carrying the tag hold ramcli|parent|tag in lr:hierarchicalSubject
    (read back with exiftool where installed); a parent that is a custom tag brings its own; defining
    the tag again under another parent moves the entry in every photo that carries it."""
    from test_metadata import fields

    idx = ["--index", str(library["index"])]
    assert run_cli("add-tag", "raptor", "--parent", "animal", "--threshold", "0.999", *idx).returncode == 0
    res = run_cli("add-tag", "red kite", "--parent", "raptor", "--threshold", "0.001", "--json", *idx)
    assert res.returncode == 0, res.stderr
    carriers = [p for p in library["photos"] if "red kite" in _keywords(p)]
    assert carriers
    for p in carriers:
        got = fields(p)
        assert "ramcli|animal|raptor|red kite" in got["lr"] and "red kite" in got["dc"]
        assert not any(k.endswith("|red kite") and k != "ramcli|animal|raptor|red kite" for k in got["lr"])

    moved = run_cli("add-tag", "red kite", "--parent", "bird", "--threshold", "0.001", *idx)
    assert moved.returncode == 0, moved.stderr
    for p in carriers:
        assert [k for k in fields(p)["lr"] if k.endswith("red kite")] == ["ramcli|bird|red kite"]
    again = run_cli("add-tag", "red kite", "--parent", "bird", "--threshold", "0.001", *idx)
    assert again.returncode == 0 and "0 photos' keywords changed" in again.stderr  # nothing left to move

    assert run_cli("tags", "remove", "red kite", *idx).returncode == 0
    for p in carriers:
        assert not any(k.endswith("red kite") for k in fields(p)["lr"])


@pytest.mark.parametrize("lang", ["zh", "both"])
def test_add_tag_writes_in_the_language_the_photos_were_tagged_in(tmp_path: Path, tiny_model, clip_model,
                                                                   lang: str) -> None:
    """Photos tagged with --lang zh get a custom tag's Chinese name (and keep only Chinese built-in
    names); with --lang both, both names. Removing the tag restores what they had."""
    root = tmp_path / "lib"
    photos = [make_photo(root / f"z{i}.jpg", (150 + 9 * i, 110), seed=500 + i) for i in range(4)]
    idx = ["--index", str(tmp_path / "index.db")]
    assert run_cli("tag", "-m", "tiny_ram_plus", "--lang", lang, "--threshold", "0", "--top-k", "3", *idx,
                   str(root)).returncode == 0
    before = {p: _keywords(p) for p in photos}
    assert all(any(k.startswith("标签") for k in kw) for kw in before.values())
    assert all(any(k.startswith("tag ") for k in kw) == (lang == "both") for kw in before.values())

    res = run_cli("add-tag", "red kite", "--zh", "红鸢", "--threshold", "0.001", *idx)
    assert res.returncode == 0, res.stderr
    for p in photos:
        kw = _keywords(p)
        assert "红鸢" in kw and ("red kite" in kw) == (lang == "both") and before[p] <= kw
        assert any(k.startswith("tag ") for k in kw) == (lang == "both")  # no English names added to zh photos
    again = run_cli("add-tag", "red kite", "--zh", "红鸢", "--threshold", "0.001", *idx)
    assert again.returncode == 0 and "0 photos' keywords changed" in again.stderr  # nothing reported twice
    assert run_cli("tags", "remove", "red kite", *idx).returncode == 0
    assert {p: _keywords(p) for p in photos} == before
