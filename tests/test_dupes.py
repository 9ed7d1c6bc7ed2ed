"""`ramcli dupes`: exact duplicates through the real CLI on real files tagged by the tiny model, and near
duplicates through the index API with controlled embeddings.

Why the split: the tiny random RAM++ maps every photo to nearly the same CLS embedding (measured: cosine
0.9998-0.9999 between a photo, its half-size copy, a quality-60 re-encode and four unrelated photos), and
the real photos in ../shared would go through the same random weights, so no test here can plant near
duplicates through the model. The near grouping is therefore tested on a real index file written through
``Index.put_image``/``put_photo`` with embeddings whose similarities are known, and real files at the paths.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import add_user_keywords, make_photo, run_cli
from ramcli import Library
from ramcli.index import ImageRecord, PhotoRow, open_index
from ramcli.search.dupes import join_capped, lsh_pairs, similar_pairs

TAG = ("tag", "-m", "tiny_ram_plus", "--threshold", "0", "--top-k", "3", "--json")


def pairs(groups: list[list[str]]) -> set[frozenset[str]]:
    return {frozenset(p) for g in groups for p in itertools.combinations(g, 2)}


def precision_recall(found: list[list[str]], planted: list[list[str]]) -> tuple[float, float]:
    got, want = pairs(found), pairs(planted)
    return (len(got & want) / len(got) if got else 1.0), (len(got & want) / len(want) if want else 1.0)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- exact duplicates: the real CLI, real files, the tiny model
@pytest.fixture
def exact_library(tiny_model, tmp_path: Path) -> dict:
    root = tmp_path / "lib"
    a = make_photo(root / "a.jpg", (400, 300), seed=1, quality=92)
    copy = root / "copy of a.jpg"
    shutil.copy(a, copy)
    add_user_keywords(copy, ["holiday"])  # other metadata, the same image data
    renamed = root / "sub" / "IMG_0001.jpg"
    renamed.parent.mkdir()
    shutil.copy(a, renamed)
    with Image.open(a) as img:  # not exact copies: other image data
        img.resize((200, 150)).save(root / "a_small.jpg", quality=92)
        img.save(root / "a_q60.jpg", quality=60)
    b = make_photo(root / "png" / "b.png", (160, 120), seed=2)
    shutil.copy(b, root / "png" / "b copy.png")
    make_photo(root / "c.jpg", (400, 300), seed=3, quality=92)
    for n, path in enumerate([renamed, a, copy, b, root / "png" / "b copy.png"]):
        os.utime(path, ns=(1_600_000_000_000_000_000 + n * 10**12,) * 2)  # renamed: oldest, b before its copy
    index = tmp_path / "index.db"
    res = run_cli(*TAG, "--index", str(index), str(root))
    assert res.returncode == 0, res.stderr
    return {"root": root, "index": index, "a": a, "copy": copy, "renamed": renamed, "b": b,
            "b_copy": root / "png" / "b copy.png"}


def dupes_json(index: Path, *args: str) -> list[dict]:
    res = run_cli("dupes", "--index", str(index), "--json", *args)
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


def test_exact_duplicates_whatever_the_metadata_or_name(exact_library: dict) -> None:
    lib = exact_library
    before = {p: sha(p) for p in lib["root"].rglob("*") if p.is_file()}
    groups = dupes_json(lib["index"], "--exact")
    assert {g["kind"] for g in groups} == {"exact"}
    planted = [[str(lib["renamed"]), str(lib["a"]), str(lib["copy"])], [str(lib["b"]), str(lib["b_copy"])]]
    precision, recall = precision_recall([g["paths"] for g in groups], planted)
    assert (precision, recall) == (1.0, 1.0), groups
    keepers = {g["keeper"]: g["reason"] for g in groups}
    # all carry ramcli's keywords (--threshold 0) and have the same size and capture date: the oldest file wins
    assert keepers == {str(lib["renamed"]): "oldest file", str(lib["b"]): "oldest file"}
    assert all(g["paths"][0] == g["keeper"] for g in groups)
    assert {p: sha(p) for p in lib["root"].rglob("*") if p.is_file()} == before  # reports only

    # the folders named limit the photos; a group needs two of them
    sub = dupes_json(lib["index"], "--exact", str(lib["root"] / "png"))
    assert [sorted(g["paths"]) for g in sub] == [sorted(planted[1])]
    assert dupes_json(lib["index"], "--exact", str(lib["root"] / "sub")) == []


def test_a_deleted_copy_is_left_out_and_said(exact_library: dict) -> None:
    lib = exact_library
    lib["b_copy"].unlink()  # still in the index: no tag run since
    res = run_cli("dupes", "--index", str(lib["index"]), "--exact", "--json")
    assert res.returncode == 0, res.stderr
    groups = [json.loads(line) for line in res.stdout.splitlines()]
    assert [g["keeper"] for g in groups] == [str(lib["renamed"])]
    assert "1 indexed photos are gone" in res.stderr


def test_near_pass_runs_through_the_cli_and_human_output(exact_library: dict) -> None:
    """With the tiny model every photo is alike (see the module docstring): this checks the near pass runs
    end to end on real stored embeddings and prints both kinds, not what it groups."""
    lib = exact_library
    groups = dupes_json(lib["index"])
    assert {"exact", "near"} <= {g["kind"] for g in groups}
    near = [g for g in groups if g["kind"] == "near"]
    # one photo per image in near groups: exact copies are the exact groups' business
    assert not ({str(lib["a"]), str(lib["copy"])} & {p for g in near for p in g["paths"]})
    assert all(0.95 <= g["similarity"] <= 1.0 and g["keeper"] in g["paths"] for g in near)
    res = run_cli("dupes", "--index", str(lib["index"]))
    assert res.returncode == 0, res.stderr
    assert "keep" in res.stdout and "exact and" in res.stderr and "nothing was changed" in res.stderr
    assert run_cli("dupes", "--index", str(lib["root"] / "none.db")).returncode == 1  # no index: one clear error


# ---- near duplicates: the index API with controlled embeddings
def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def _put(ix, root: Path, name: str, cls: np.ndarray, size: tuple[int, int], taken: str | None,
         keywords: list[str], hash_: str | None = None) -> str:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not read by dupes")  # a real file: dupes leaves out indexed photos that are gone
    h = hash_ or hashlib.sha256(name.encode()).hexdigest()
    if hash_ is None:  # a known hash: another photo of an image already stored
        ix.put_image(ImageRecord(h, "m", size[0], size[1], taken, cls, None, []))
    st = path.stat()
    ix.put_photo(PhotoRow(str(path), h, st.st_size, st.st_mtime_ns, keywords, "embed", "m"))
    return str(path)


@pytest.fixture
def near_library(tmp_path: Path) -> dict:
    rng = np.random.default_rng(7)
    root = tmp_path / "lib"
    index = tmp_path / "index.db"
    ix = open_index(index, writer=True)
    planted: dict[str, list[str]] = {}
    with ix.transaction():
        # a burst: 4 frames around one scene (cosine ~0.98 with one another), taken a second apart
        scene = _unit(rng.normal(size=512))
        planted["burst"] = [_put(ix, root, f"burst/{k}.jpg", _unit(scene + rng.normal(size=512) * 0.006),
                                 (4000, 3000), f"2021-06-05T14:03:0{3 - k}", ["dog"]) for k in range(4)]
        # an original, a resized copy (smaller), a re-encoded copy (same size, no keywords): cosine ~0.99
        orig = _unit(rng.normal(size=512))
        planted["copies"] = [
            _put(ix, root, "trip/original.jpg", orig, (4000, 3000), "2019-01-01T10:00:00", ["beach"]),
            _put(ix, root, "trip/small.jpg", _unit(orig + rng.normal(size=512) * 0.004), (1000, 750),
                 "2019-01-01T10:00:00", ["beach"]),
            _put(ix, root, "export/reencoded.jpg", _unit(orig + rng.normal(size=512) * 0.004), (4000, 3000),
                 "2019-01-01T10:00:00", [])]
        # an exact copy of a burst frame at another path: the exact group, not a second near member
        burst0_hash = ix.photo(planted["burst"][0]).hash
        exact_copy = _put(ix, root, "backup/0.jpg", scene, (4000, 3000), None, [], hash_=burst0_hash)
        # and one tagged by another model, stored larger: the exact keeper, but not in model m's space
        ix.put_image(ImageRecord(burst0_hash, "other", 8000, 6000, None, _unit(rng.normal(size=512)), None, []))
        (root / "big" / "0.jpg").parent.mkdir(parents=True)
        (root / "big" / "0.jpg").write_bytes(b"x")
        st = (root / "big" / "0.jpg").stat()
        ix.put_photo(PhotoRow(str(root / "big" / "0.jpg"), burst0_hash, st.st_size, st.st_mtime_ns, [], "embed",
                              "other"))
        for k in range(3):  # model m stays the one that tagged most photos
            _put(ix, root, f"other/extra{k}.jpg", _unit(rng.normal(size=512)), (4000, 3000), None, ["x"])
        # 300 unrelated photos (random directions: cosine ~0 +- 0.05)
        for k in range(300):
            _put(ix, root, f"other/{k:03d}.jpg", _unit(rng.normal(size=512)), (4000, 3000), None, ["x"])
    ix.close()
    return {"index": index, "root": root, "planted": planted, "exact_copy": exact_copy}


def test_near_groups_found_with_the_right_keeper(near_library: dict) -> None:
    lib = near_library
    report = Library(lib["index"]).dupes(near=0.95)
    near = [g for g in report.groups if g.kind == "near"]
    exact = [g for g in report.groups if g.kind == "exact"]
    precision, recall = precision_recall([g.paths for g in near], list(lib["planted"].values()))
    assert (precision, recall) == (1.0, 1.0), [g.paths for g in near]
    assert [sorted(g.paths) for g in exact] == [sorted([lib["planted"]["burst"][0], lib["exact_copy"],
                                                        str(lib["root"] / "big" / "0.jpg")])]
    assert exact[0].keeper == str(lib["root"] / "big" / "0.jpg") and exact[0].reason.startswith("largest")
    keepers = {g.keeper: g.reason for g in near}
    burst, copies = lib["planted"]["burst"], lib["planted"]["copies"]
    assert keepers[burst[3]] == "earliest date (2021-06-05T14:03:00)"  # same resolution: the first frame
    assert keepers[copies[0]] == "has keywords"  # the resized copy is smaller; the re-encode has no keywords
    assert all(0.95 <= (g.similarity or 0) < 1 for g in near)
    assert report.compared == 310 and report.model == "m"  # one row per image: the exact copy is not compared


def test_threshold_and_folders_limit_the_groups(near_library: dict) -> None:
    lib = near_library
    strict = Library(lib["index"]).dupes(near=0.995)  # the burst (~0.98) is not that alike
    found = [g.paths for g in strict.groups if g.kind == "near"]
    precision, recall = precision_recall(found, list(lib["planted"].values()))
    assert precision == 1.0 and recall < 0.5
    trip = Library(lib["index"]).dupes([lib["root"] / "trip"], near=0.95)
    assert [sorted(g.paths) for g in trip.groups] == [sorted(lib["planted"]["copies"][:2])]
    assert [g.kind for g in Library(lib["index"]).dupes(near=None).groups] == ["exact"]


def test_transitive_joins_stop_at_the_cap() -> None:
    """A slow pan: each frame is like its neighbours (cosine 0.969) but not like frames two apart (0.878)."""
    n, theta = 8, 0.25
    v = np.zeros((n, 512), np.float32)
    v[:, 0], v[:, 1] = np.cos(np.arange(n) * theta), np.sin(np.arange(n) * theta)
    i, j = np.nonzero(np.triu(v @ v.T, 1) >= 0.95)
    sims = (v @ v.T)[i, j]
    assert [sorted(g) for g, _ in join_capped(n, i, j, sims, max_group=50)] == [list(range(n))]
    capped = join_capped(n, i, j, sims, max_group=3)
    assert all(len(g) <= 3 for g, _ in capped) and sum(len(g) for g, _ in capped) >= 6


def test_lsh_finds_what_the_exact_product_finds() -> None:
    """Above EXACT_UP_TO images the pairs come from SimHash buckets: every pair it reports is one the exact
    product reports (each is checked exactly), and it misses none of the planted pairs (cosine ~0.98-0.99;
    the chance of a miss there is ~1e-5 each)."""
    rng = np.random.default_rng(3)
    base = rng.normal(size=(3000, 512)).astype(np.float32)
    near = base[:300] + rng.normal(size=(300, 512)).astype(np.float32) * 0.005
    v = np.vstack([base, near])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    exact = set(zip(*[a.tolist() for a in similar_pairs(v, 0.95)[:2]], strict=True))
    i, j, sims = lsh_pairs(v, 0.95)
    found = set(zip(i.tolist(), j.tolist(), strict=True))
    assert {(k, 3000 + k) for k in range(300)} <= exact  # the planted pairs, and nothing by chance
    assert len(exact) == 300 and found == exact
    assert np.allclose(sims, np.einsum("ij,ij->i", v[i], v[j]), atol=1e-5) and (sims >= 0.95).all()
