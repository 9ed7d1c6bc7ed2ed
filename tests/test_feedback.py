"""The user's feedback: `ramcli tags reject / confirm`, verdicts read from the files, and what they survive.

Every test runs the real CLI as a subprocess on real JPEGs tagged by the tiny random RAM++ model;
exiftool is the independent reader of what the files hold, and the index is read with plain SQLite.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import piexif
import pytest

from conftest import add_user_keywords, make_photo, run_cli

TAG = ("tag", "-m", "tiny_ram_plus", "--threshold", "0", "--top-k", "3", "--json")
EXIFTOOL = shutil.which("exiftool")
pytestmark = pytest.mark.skipif(EXIFTOOL is None, reason="exiftool not installed")


def seen(path: Path) -> dict[str, list[str]]:
    """What another program sees: dc:subject, IPTC Keywords and ramcli's record, per exiftool."""
    out = subprocess.run([EXIFTOOL, "-j", "-G1", "-XMP-dc:Subject", "-IPTC:Keywords", "-XMP-ramcli:Keywords",
                          "-XMP-ramcli:Rejected", str(path)], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)[0]
    return {k: [str(x) for x in (v if isinstance(v, list) else [v])] for k, v in got.items() if k != "SourceFile"}


def subject(path: Path) -> set[str]:
    s = seen(path)
    return set(s.get("XMP-dc:Subject", [])) | set(s.get("IPTC:Keywords", []))


def rejected_in_file(path: Path) -> list[str]:
    return seen(path).get("XMP-ramcli:Rejected", [])


def verdicts(index: Path) -> set[tuple[str, str, str, str]]:
    """(path, tag, verdict, source) of every verdict in the index."""
    with sqlite3.connect(index) as db:
        return set(db.execute("select path, tag, verdict, source from feedback"))


def tags_of(result: subprocess.CompletedProcess[str]) -> dict[str, list[str]]:
    assert result.returncode == 0, result.stderr
    return {r["path"]: r.get("tags", []) for r in map(json.loads, result.stdout.splitlines()) if "path" in r}


@pytest.fixture
def lib(tmp_path: Path, tiny_model) -> dict[str, Path]:
    a = make_photo(tmp_path / "lib" / "a.jpg", (320, 240), seed=3, quality=90)
    piexif.insert(piexif.dump({"0th": {piexif.ImageIFD.Make: b"Maker"}}), str(a))
    add_user_keywords(a, ["grandma"])
    b = make_photo(tmp_path / "lib" / "b.jpg", (320, 240), seed=4, quality=90)
    return {"a": a, "b": b, "root": tmp_path / "lib", "index": tmp_path / "index.db"}


def dry_scores(photo: Path) -> dict[str, float]:
    """Every tag's score for ``photo`` (a dry run with no index there: no verdict touches it)."""
    res = run_cli("tag", "-m", "tiny_ram_plus", "--dry-run", "--json", "--threshold", "0", "--index",
                  str(photo.parent.parent / "no-index.db"), str(photo))
    assert res.returncode == 0, res.stderr
    return {t["name"]: t["score"] for t in json.loads(res.stdout.splitlines()[0])["tags"]}


def test_a_rejected_tag_never_comes_back(lib: dict[str, Path], tmp_path: Path, clip_model) -> None:
    """reject -> re-tag (untag + tag: the file's record is gone, only the index remembers) -> a copy ->
    add-tag -> calibrate -> re-tag -> a fresh index: the tag the user rejected is never written to that
    photo again."""
    a, index = lib["a"], lib["index"]
    idx = ("--index", str(index))
    first = tags_of(run_cli(*TAG, *idx, str(lib["root"])))
    top = first[str(a)][0]  # the best-scoring tag of a: it comes back on every plain re-tag
    assert top in subject(a)

    res = run_cli("tags", "reject", top, str(a), "--json", *idx)
    assert res.returncode == 0, res.stderr
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert {"verdict": "reject", "tag": top, "path": str(a), "source": "cli"}.items() <= lines[0].items()
    assert top not in subject(a) and rejected_in_file(a) == [top]
    assert "grandma" in subject(a)  # the user's keyword stays
    assert (str(a), top, "reject", "cli") in verdicts(index)
    assert top in subject(lib["b"]) or top not in first[str(lib["b"])]  # b untouched: the verdict is a's only

    # re-tag from scratch: untag restores the file's bytes (record and all), then a full run
    assert run_cli("untag", *idx, str(a)).returncode == 0
    assert rejected_in_file(a) == []
    again = tags_of(run_cli(*TAG, *idx, str(a)))
    assert top not in again[str(a)] and top not in subject(a)
    assert rejected_in_file(a) == [top]  # the index told the file again
    assert top in sorted(dry_scores(a), key=lambda n: -dry_scores(a)[n])[:3]  # the model still says so

    # a copy of the same picture is the same image: the verdict goes with it
    copy = shutil.copy2(a, tmp_path / "lib" / "copy.jpg")
    run_cli(*TAG, *idx, str(copy))
    assert top not in subject(Path(copy))

    # add-tag re-scores the library from stored tokens: still not back
    assert run_cli("add-tag", "lighthouse", "--threshold", "0.001", *idx).returncode == 0
    assert "lighthouse" in subject(a) and top not in subject(a)

    # calibration: one rejection is enough evidence here; whatever threshold it gives, a stays without it
    res = run_cli("tags", "calibrate", "--min-evidence", "1", "--json", *idx)
    assert res.returncode == 0, res.stderr
    plans = [json.loads(x)["plan"] for x in res.stdout.splitlines() if "plan" in json.loads(x)]
    mine = next(p for p in plans if p["tag"] == top)
    assert (mine["confirmed"], mine["rejected"]) == (0, 1) and mine["after"] >= mine["before"]  # never lowered
    assert top not in subject(a) and top not in subject(Path(copy))
    assert run_cli("untag", *idx, str(a)).returncode == 0
    assert top not in tags_of(run_cli(*TAG, *idx, str(a)))[str(a)] and top not in subject(a)

    # a fresh index over the same files: the files' records say what the user rejected
    other = ("--index", str(tmp_path / "other.db"))
    assert run_cli(*TAG, *other, str(a)).returncode == 0
    assert top not in subject(a)


def test_a_keyword_deleted_in_another_program_becomes_a_rejection(lib: dict[str, Path]) -> None:
    a, index = lib["a"], lib["index"]
    idx = ("--index", str(index))
    ours = tags_of(run_cli(*TAG, *idx, str(a)))[str(a)]
    gone = ours[1]
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", f"-XMP-dc:Subject-={gone}", f"-IPTC:Keywords-={gone}",
                    str(a)], check=True)
    assert run_cli(*TAG, *idx, str(a)).returncode == 0  # the next run sees the edit ("updated")
    assert (str(a), gone, "reject", "file") in verdicts(index)
    assert gone in rejected_in_file(a) and gone not in subject(a)
    with sqlite3.connect(index) as db:  # reject wins over score: the tag left the image's rows
        assert not db.execute("select 1 from image_tags where tag = ?", [gone]).fetchall()

    # the index alone now remembers it: untag (record gone) and tag again
    assert run_cli("untag", *idx, str(a)).returncode == 0
    assert gone not in tags_of(run_cli(*TAG, *idx, str(a)))[str(a)] and gone not in subject(a)
    with sqlite3.connect(index) as db:  # the model's choice itself left it out, not only the file's write
        assert not db.execute("select 1 from image_tags where tag = ?", [gone]).fetchall()


def test_a_tag_name_the_user_added_is_a_confirmation(lib: dict[str, Path]) -> None:
    a, index = lib["a"], lib["index"]
    idx = ("--index", str(index))
    ours = tags_of(run_cli(*TAG, *idx, str(a)))[str(a)]
    scores = dry_scores(a)
    low = min(scores, key=lambda n: scores[n])  # the tag the model is least sure of: never in a top 3
    assert low not in ours
    add_user_keywords(a, [low])
    assert run_cli(*TAG, *idx, str(a)).returncode == 0
    assert (str(a), low, "confirm", "file") in verdicts(index)
    # untag removes only ramcli's keywords; the user's own `low` stays; a re-tag keeps the verdict
    assert run_cli("untag", *idx, str(a)).returncode == 0
    assert low in subject(a)


def test_confirm_wins_over_the_threshold_and_undoes_a_rejection(lib: dict[str, Path]) -> None:
    a, index = lib["a"], lib["index"]
    idx = ("--index", str(index))
    ours = tags_of(run_cli(*TAG, *idx, str(lib["root"])))[str(a)]
    scores = dry_scores(a)
    low = min(scores, key=lambda n: scores[n])
    res = run_cli("tags", "confirm", low, str(lib["root"] / "*.jpg"), *idx)  # a glob the shell left alone
    assert res.returncode == 0, res.stderr
    assert low in subject(a) and low in subject(lib["b"]) and low in seen(a)["XMP-ramcli:Keywords"]
    assert {(str(a), low, "confirm", "cli"), (str(lib["b"]), low, "confirm", "cli")} <= verdicts(index)
    # re-tag with the model's own thresholds (and top 1): the confirmed tag is kept, whatever its score
    assert run_cli("untag", *idx, str(a)).returncode == 0
    again = tags_of(run_cli("tag", "-m", "tiny_ram_plus", "--top-k", "1", "--json", *idx, str(a)))
    assert low in again[str(a)] and low in subject(a)

    # the user deletes one of ours in another app (a rejection), then confirms it after all
    assert run_cli("untag", *idx, str(a)).returncode == 0
    ours = tags_of(run_cli(*TAG, *idx, str(a)))[str(a)]
    gone = next(t for t in ours if t != low)
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", f"-XMP-dc:Subject-={gone}", f"-IPTC:Keywords-={gone}",
                    str(a)], check=True)
    assert run_cli(*TAG, *idx, str(a)).returncode == 0
    assert gone in rejected_in_file(a)
    assert run_cli("tags", "confirm", gone, str(a), *idx).returncode == 0
    assert gone in subject(a) and gone not in rejected_in_file(a)
    assert (str(a), gone, "confirm", "cli") in verdicts(index)

    # ... and deletes it once more in the other app: that newer word wins over the confirmation
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", f"-XMP-dc:Subject-={gone}", f"-IPTC:Keywords-={gone}",
                    str(a)], check=True)
    assert run_cli(*TAG, *idx, str(a)).returncode == 0
    assert gone not in subject(a) and gone in rejected_in_file(a)
    assert (str(a), gone, "reject", "file") in verdicts(index)


def test_verdicts_need_indexed_photos_and_known_tags(lib: dict[str, Path]) -> None:
    idx = ("--index", str(lib["index"]))
    assert run_cli(*TAG, *idx, str(lib["a"])).returncode == 0
    res = run_cli("tags", "reject", "tag 001", str(lib["b"]), *idx)  # b was never tagged
    assert res.returncode == 1 and "no indexed photo" in res.stderr
    res = run_cli("tags", "reject", "no such tag", str(lib["a"]), *idx)
    assert res.returncode == 1 and "no such tag" in res.stderr
    assert verdicts(lib["index"]) == set()


def test_verdicts_travel_with_the_vocabulary(lib: dict[str, Path], tmp_path: Path) -> None:
    """`tags export` carries the verdicts (by image hash); `tags import` on another library holding a copy
    of the same picture (never tagged by the first) applies them to its file."""
    a = lib["a"]
    (tmp_path / "elsewhere").mkdir()
    twin = shutil.copy2(a, tmp_path / "elsewhere" / "a-copy.jpg")  # before any tagging: no record in it
    one, two = ("--index", str(lib["index"])), ("--index", str(tmp_path / "two.db"))
    top = tags_of(run_cli(*TAG, *one, str(a)))[str(a)][0]
    assert run_cli("tags", "reject", top, str(a), *one).returncode == 0
    exported = tmp_path / "vocab.json"
    assert run_cli("tags", "export", str(exported), *one).returncode == 0
    doc = json.loads(exported.read_text(encoding="utf-8"))
    assert [(f["tag"], f["verdict"], f["source"]) for f in doc["feedback"]] == [(top, "reject", "cli")]

    assert top in tags_of(run_cli(*TAG, *two, str(twin)))[str(twin)] and top in subject(Path(twin))
    res = run_cli("tags", "import", str(exported), *two)
    assert res.returncode == 0, res.stderr
    assert top not in subject(Path(twin)) and rejected_in_file(Path(twin)) == [top]
    with sqlite3.connect(tmp_path / "two.db") as db:
        assert db.execute("select tag, verdict, source from feedback").fetchall() == [(top, "reject", "import")]


def test_a_dry_run_shows_what_a_real_run_would_write(lib: dict[str, Path]) -> None:
    """With an index there, `tag --dry-run` applies its verdicts: a rejected tag is not shown for that photo
    (a real run would not write it), still shown for the others; nothing is written."""
    a, b, idx = lib["a"], lib["b"], ("--index", str(lib["index"]))
    first = tags_of(run_cli(*TAG, *idx, str(lib["root"])))
    shared = next(t for t in first[str(a)] if t in first[str(b)])
    assert run_cli("tags", "reject", shared, str(a), *idx).returncode == 0
    before = {p: p.read_bytes() for p in (a, b)}
    dry = run_cli(*TAG, "--dry-run", *idx, str(lib["root"]))
    assert dry.returncode == 0, dry.stderr
    shown = {json.loads(x)["path"]: [t["name"] for t in json.loads(x)["tags"]] for x in dry.stdout.splitlines()}
    assert shared not in shown[str(a)] and shared in shown[str(b)]
    assert {p: p.read_bytes() for p in (a, b)} == before
    # and the verdict is listed, where the photo is now
    listed = run_cli("tags", "verdicts", shared, *idx, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(x) for x in listed.stdout.splitlines()]
    assert [(r["tag"], r["verdict"], r["source"], r["path"]) for r in rows] == [(shared, "reject", "cli", str(a))]
    table = run_cli("tags", "verdicts", *idx)
    assert "reject" in table.stdout and "a.jpg" in table.stdout
