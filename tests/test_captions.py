"""Tag2Text in the product: `ramcli tag` writes captions (XMP dc:description, EXIF ImageDescription)
beside the keywords, never over the user's own description, `search` finds photos by caption
words, `untag` takes only ours back; `--lang` for the RAM/RAM++ Chinese names."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pyexiv2
import pytest

from conftest import make_photo, run_cli, write_tag_files

EXIFTOOL = shutil.which("exiftool")


@pytest.fixture(scope="module")
def t2t(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A random tiny Tag2Text in the official layout, imported through the CLI."""
    from test_tag2text import SYNTH_VOCAB

    from ramcli.models.convert.tag2text import random_model, save_checkpoint, tiny_config

    folder = tmp_path_factory.mktemp("t2t")
    files = write_tag_files(folder)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(SYNTH_VOCAB) + "\n", encoding="utf-8")
    ckpt = save_checkpoint(random_model(tiny_config(vocab_size=len(SYNTH_VOCAB) + 2)), folder / "t2t.pth")
    res = run_cli("models", "import", str(ckpt), "--name", "t2t_cli", "--tag-list", str(files["tag_list"]),
                  "--vocab", str(vocab), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["family"] == "tag2text"
    return {"vocab": vocab}


def _exif(path: Path, *tags: str) -> dict:
    res = subprocess.run([EXIFTOOL, "-j", "-G1", *(f"-{t}" for t in tags), str(path)], capture_output=True,
                         text=True, check=True)
    return json.loads(res.stdout)[0]


def test_dry_run_json_carries_the_runtime_caption(t2t: dict, tmp_path: Path) -> None:
    from ramcli.models import store
    from ramcli.runtime.caption import Tag2Text
    from ramcli.runtime.engine import EngineOptions
    from ramcli.runtime.images import load_input

    photos = [make_photo(tmp_path / f"d{i}.jpg", (200, 150), seed=50 + i) for i in range(2)]
    res = run_cli("tag", "--dry-run", "--json", "-m", "t2t_cli", *map(str, photos))
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    model = store.get("t2t_cli")
    rt = Tag2Text(model, EngineOptions(device="cpu"))
    want = rt.run(np.stack([load_input(p, model.preprocess)[0] for p in photos]))
    assert [d["caption"] for d in lines] == [w.caption for w in want]
    guided = run_cli("tag", "--dry-run", "--json", "-m", "t2t_cli", "--caption-tags", "dog,cafe", str(photos[0]))
    embeds = rt.encode(np.stack([load_input(photos[0], model.preprocess)[0]]))
    assert json.loads(guided.stdout)["caption"] == rt.caption(embeds, ["dog | cafe"])[0][0]


@pytest.mark.skipif(EXIFTOOL is None, reason="exiftool (libimage-exiftool-perl) not installed")
def test_captions_into_files_index_and_search(t2t: dict, tmp_path: Path) -> None:
    root = tmp_path / "lib"
    jpg = make_photo(root / "a.jpg", (220, 160), seed=60)
    tif = make_photo(root / "b.tiff", (180, 140), seed=61)
    mine = make_photo(root / "c.jpg", (200, 150), seed=62)
    with pyexiv2.Image(str(mine)) as img:  # the user's own description
        img.modify_xmp({"Xmp.dc.description": {'lang="x-default"': "Our first holiday"}})
    idx = ["--index", str(tmp_path / "i.db")]
    res = run_cli("tag", "-m", "t2t_cli", "--json", *idx, str(root))
    assert res.returncode == 0, res.stderr
    captions = {Path(e["path"]).name: e["caption"] for e in map(json.loads, res.stdout.splitlines())}
    stored = dict(sqlite3.connect(tmp_path / "i.db").execute("select p.path, i.caption from photos p join images i "
                                                              "on i.hash = p.hash"))
    assert {Path(p).name: c for p, c in stored.items()} == captions
    for photo in (jpg, tif):
        got = _exif(photo, "XMP-dc:Description", "IFD0:ImageDescription")
        assert got["XMP-dc:Description"] == captions[photo.name]
        if captions[photo.name].isascii():
            assert got["IFD0:ImageDescription"] == captions[photo.name]
    assert _exif(mine, "XMP-dc:Description")["XMP-dc:Description"] == "Our first holiday"

    word = next(w for w in captions["a.jpg"].split() if w.isascii() and w.isalpha() and len(w) > 1)
    hits = run_cli("search", word, "--json", *idx)
    found = {Path(json.loads(line)["path"]).name for line in hits.stdout.splitlines()}
    assert "a.jpg" in found
    assert found == {n for n, c in captions.items() if word in c.lower().split()} | {
        Path(json.loads(line)["path"]).name for line in hits.stdout.splitlines() if json.loads(line)["via"] == "tag"}

    again = run_cli("tag", "-m", "t2t_cli", "--overwrite-description", *idx, str(root))
    assert again.returncode == 0  # unchanged photos are not looked at: the user's text stays
    assert _exif(mine, "XMP-dc:Description")["XMP-dc:Description"] == "Our first holiday"

    assert run_cli("untag", *idx, str(root)).returncode == 0
    assert "XMP-dc:Description" not in _exif(jpg, "XMP-dc:Description")
    assert "IFD0:ImageDescription" not in _exif(jpg, "IFD0:ImageDescription")
    assert _exif(mine, "XMP-dc:Description")["XMP-dc:Description"] == "Our first holiday"

    res = run_cli("tag", "-m", "t2t_cli", "--overwrite-description", *idx, str(root))
    assert res.returncode == 0
    assert _exif(mine, "XMP-dc:Description")["XMP-dc:Description"] == captions["c.jpg"]


def test_lang_writes_chinese_names(tiny_model, tmp_path: Path) -> None:
    from ramcli.metadata import read_keywords

    root = tmp_path / "lib"
    photo = make_photo(root / "z.jpg", (160, 120), seed=70)
    idx = ["--index", str(tmp_path / "i.db")]
    res = run_cli("tag", "-m", "tiny_ram_plus", "--threshold", "0", "--top-k", "3", "--lang", "both", "--json",
                  *idx, str(root))
    assert res.returncode == 0, res.stderr
    written = json.loads(res.stdout)["tags"]
    english = [w for w in written if w.startswith("tag ")]
    assert len(english) == 3 and {f"标签{e[4:]}" for e in english} == set(written) - set(english)
    assert read_keywords(photo) == set(written)
    assert run_cli("tag", "--lang", "fr", str(root)).returncode == 2
