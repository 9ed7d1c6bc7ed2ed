"""`ramcli tag` on a real folder: metadata in the files (read back by exiftool), the index, re-runs,
moves/edits/deletes/hand edits, untag, --no-write, locking, and kill -9 at random moments."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import piexif
import pytest
from PIL import Image

from conftest import add_user_keywords, make_photo, run_cli
from ramcli import metadata

TAG = ("tag", "-m", "tiny_ram_plus", "--threshold", "0", "--top-k", "3", "--json")
EXIFTOOL = shutil.which("exiftool")


def pixels(path: Path) -> str:
    with Image.open(path) as img:
        return hashlib.sha256(img.convert("RGBA").tobytes()).hexdigest()


def exif_jpeg(path: Path, seed: int) -> Path:
    make_photo(path, (320, 240), seed=seed, quality=90)
    exif = {"0th": {piexif.ImageIFD.Make: b"Maker", piexif.ImageIFD.Model: b"Cam"},
            "Exif": {piexif.ExifIFD.DateTimeOriginal: b"2021:06:05 14:03:02"}}
    piexif.insert(piexif.dump(exif), str(path))
    return path


def build_library(root: Path, n_jpeg: int = 6) -> dict[str, list[Path]]:
    good = [exif_jpeg(root / f"img_{i:02d}.jpg", i) for i in range(n_jpeg)]
    good += [make_photo(root / "png" / "a.png", (200, 150), seed=50),
             make_photo(root / "png" / "b.webp", (180, 120), seed=51, lossless=True),
             make_photo(root / "scans" / "c.tiff", (160, 200), seed=52),
             make_photo(root / "scans" / "d.gif", (90, 60), mode="P", seed=53)]
    heic: list[Path] = []
    try:
        import pillow_heif

        (root / "phone").mkdir()
        with Image.open(good[0]) as img:
            pillow_heif.from_pillow(img.convert("RGB")).save(root / "phone" / "e.heic", quality=90)
        heic.append(root / "phone" / "e.heic")
    except Exception:
        pass
    bad = [root / "broken" / "empty.jpg", root / "broken" / "text.png", root / "broken" / "cut.jpg"]
    bad[0].parent.mkdir(parents=True)
    bad[0].write_bytes(b"")
    bad[1].write_text("not a png")
    bad[2].write_bytes(good[1].read_bytes()[:3000])
    return {"good": good + heic, "heic": heic, "bad": bad}


def records(result: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    return {r["path"]: r for r in map(json.loads, result.stdout.splitlines())}


def statuses(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records(result).values():
        out[r["status"]] = out.get(r["status"], 0) + 1
    return out


@pytest.fixture
def lib(tmp_path: Path, tiny_model) -> dict:
    root = tmp_path / "Photos"
    files = build_library(root)
    return {"root": root, "index": tmp_path / "index.db", **files,
            "pixels": {p: pixels(p) for p in files["good"]},
            "before": {p: metadata.read_keywords(p) for p in files["good"]}}


def tag(lib: dict, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*TAG, "--index", str(lib["index"]), *extra, str(lib["root"]))


def test_first_run_writes_every_readable_photo(lib: dict) -> None:
    result = tag(lib)
    assert result.returncode == 1, result.stderr  # the three broken files
    recs = records(result)
    for p in lib["good"]:
        assert recs[str(p)]["status"] == "tagged" and len(recs[str(p)]["tags"]) == 3
        assert pixels(p) == lib["pixels"][p]
        assert set(recs[str(p)]["tags"]) <= metadata.read_keywords(p)
    for p in lib["bad"]:
        assert recs[str(p)]["status"] == "error" and str(p) in recs[str(p)]["error"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3 and "Traceback" not in result.stderr
    for p in lib["heic"]:  # HEIC cannot embed: an XMP sidecar named photo.ext.xmp
        assert (p.parent / (p.name + ".xmp")).is_file()
    db = sqlite3.connect(lib["index"])
    assert db.execute("select count(*) from photos").fetchone()[0] == len(lib["good"])
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    taken = db.execute("select taken_at from images i join photos p on p.hash = i.hash where p.path = ?",
                       [str(lib["good"][0])]).fetchone()[0]
    assert taken == "2021-06-05T14:03:02"
    tokens = db.execute("select length(tokens), length(cls) from images limit 1").fetchone()
    assert tokens == (145 * 512 * 2, 512 * 4)


@pytest.mark.skipif(EXIFTOOL is None, reason="exiftool not installed")
def test_exiftool_reads_what_we_wrote(lib: dict) -> None:
    tag(lib)
    jpeg = lib["good"][0]
    tags = records(tag(lib, "--dry-run"))[str(jpeg)]  # dry-run prints the same tags, writes nothing
    names = [t["name"] for t in tags["tags"]]
    out = subprocess.run([EXIFTOOL, "-j", "-G1", "-a", "-XMP-dc:Subject", "-XMP-lr:HierarchicalSubject",
                          "-IPTC:Keywords", "-IPTC:CodedCharacterSet", "-IFD0:XPKeywords", "-IFD0:Make", str(jpeg)],
                         capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)[0]

    def as_list(v: object) -> list[str]:
        return v if isinstance(v, list) else [str(v)]

    assert sorted(as_list(info["XMP-dc:Subject"])) == sorted(names)
    assert sorted(as_list(info["XMP-lr:HierarchicalSubject"])) == sorted(f"ramcli|{n}" for n in names)
    assert sorted(as_list(info["IPTC:Keywords"])) == sorted(names)
    assert info["IPTC:CodedCharacterSet"] == "UTF8"
    assert sorted(info["IFD0:XPKeywords"].split(";")) == sorted(names)
    assert info["IFD0:Make"] == "Maker"  # the camera's own EXIF is still there
    for p in lib["heic"]:
        side = json.loads(subprocess.run([EXIFTOOL, "-j", "-XMP-dc:Subject", str(p) + ".xmp"], capture_output=True,
                                         text=True, check=True).stdout)[0]
        assert len(as_list(side["Subject"])) == 3


def test_second_run_does_no_inference(lib: dict) -> None:
    tag(lib)
    snapshot = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in lib["good"]}
    again = tag(lib)
    assert statuses(again) == {"unchanged": len(lib["good"]), "error": 3}
    assert {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in lib["good"]} == snapshot


def test_moves_edits_deletes_and_hand_edits(lib: dict) -> None:
    tag(lib)
    root, jpgs = lib["root"], lib["good"][:6]
    moved = [(jpgs[0], root / "renamed" / "first.jpg"), (jpgs[1], root / "renamed" / "second.jpg")]
    for src, dst in moved:
        dst.parent.mkdir(exist_ok=True)
        src.rename(dst)
    edited = jpgs[2]
    with Image.open(edited) as img:  # new pixels, same name
        img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(edited, quality=90)
    jpgs[3].unlink()
    hand = jpgs[4]
    mine = sorted(metadata.read_keywords(hand))
    add_user_keywords(hand, ["holiday 2021"])  # another tool adds a keyword by hand
    result = tag(lib)
    recs = records(result)
    assert statuses(result) == {"tagged": 1, "moved": 2, "updated": 1, "unchanged": len(lib["good"]) - 5,
                                "pruned": 1, "error": 3}
    assert recs[str(edited)]["status"] == "tagged"
    for src, dst in moved:
        assert recs[str(dst)]["status"] == "moved" and recs[str(dst)]["moved_from"] == str(src)
    assert recs[str(hand)]["status"] == "updated"
    assert metadata.read_keywords(hand) == {*mine, "holiday 2021"}
    assert recs[str(jpgs[3])]["status"] == "pruned"
    db = sqlite3.connect(lib["index"])
    paths = {r[0] for r in db.execute("select path from photos")}
    assert str(moved[0][1]) in paths and str(moved[0][0]) not in paths and str(jpgs[3]) not in paths
    # moved photos kept their embeddings and tags: nothing was re-inferred for them
    assert db.execute("select count(*) from images").fetchone()[0] == len(paths)


def test_untag_restores_original_keywords(lib: dict) -> None:
    user = lib["good"][5]
    add_user_keywords(user, ["grandma", "tag 001"])  # the user's own, before ramcli
    lib["before"][user] = metadata.read_keywords(user)
    tag(lib)
    assert metadata.read_keywords(user) > lib["before"][user]
    result = run_cli("untag", "--index", str(lib["index"]), "--json", str(lib["root"]))
    assert result.returncode == 0, result.stderr
    for p in lib["good"]:
        assert metadata.read_keywords(p) == lib["before"][p], p
        assert pixels(p) == lib["pixels"][p]
    for p in lib["heic"]:
        assert not (p.parent / (p.name + ".xmp")).exists()
    assert sqlite3.connect(lib["index"]).execute("select count(*) from photos").fetchone()[0] == 0


def test_no_write_leaves_files_byte_identical(lib: dict) -> None:
    digests = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in lib["good"]}
    result = tag(lib, "--no-write", "--no-store-tokens")
    assert statuses(result)["tagged"] == len(lib["good"])
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in lib["good"]} == digests
    assert not list(lib["root"].rglob("*.xmp"))
    db = sqlite3.connect(lib["index"])
    assert db.execute("select count(*) from images where tokens is not null").fetchone()[0] == 0
    assert db.execute("select count(*) from image_tags").fetchone()[0] == 3 * len(lib["good"])


def test_sidecar_option_and_stem_naming(lib: dict) -> None:
    digests = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in lib["good"]}
    tag(lib, "--sidecar", "--sidecar-name", "stem")
    for p in lib["good"]:
        assert hashlib.sha256(p.read_bytes()).hexdigest() == digests[p]
        assert p.with_suffix(".xmp").is_file()
    edited = lib["good"][0]  # new pixels, then an index-only run: the index must remember the sidecar
    with Image.open(edited) as img:
        img.transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(edited, quality=90)
    assert statuses(tag(lib, "--no-write"))["tagged"] == 1
    assert run_cli("untag", "--index", str(lib["index"]), str(lib["root"])).returncode == 0
    assert not list(lib["root"].rglob("*.xmp"))  # untag found the stem-named sidecars


def test_a_second_writer_is_told(lib: dict) -> None:
    from ramcli.index import open_index

    holder = open_index(lib["index"], writer=True)
    try:
        result = tag(lib)
    finally:
        holder.close()
    assert result.returncode == 1
    assert "another ramcli run" in result.stderr and "Traceback" not in result.stderr


def test_undecodable_file_name(lib: dict) -> None:
    odd = os.fsencode(lib["root"]) + b"/caf\xe9.jpg"  # Latin-1 name, invalid UTF-8
    with open(odd, "wb") as f:
        f.write(lib["good"][0].read_bytes())
    result = tag(lib)
    lines = [line for line in result.stderr.splitlines() if "not valid UTF-8" in line]
    assert len(lines) == 1 and "caf\\xe9.jpg" in lines[0]
    assert statuses(result)["tagged"] == len(lib["good"])


def test_kill_minus_nine_never_corrupts(tmp_path: Path, tiny_model) -> None:
    """kill -9 at random moments: photos decode the same, metadata parses, the index is sound,
    and a final run completes the rest with nothing written twice."""
    root = tmp_path / "Photos"
    photos = [exif_jpeg(root / f"k_{i:02d}.jpg", 100 + i) for i in range(24)]
    before = {p: pixels(p) for p in photos}
    index = tmp_path / "kill.db"
    cmd = [sys.executable, "-m", "ramcli", *TAG, "--index", str(index), "--batch-size", "2", str(root)]
    rng = random.Random(7)
    for _ in range(4):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(3.0, 8.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for p in photos:
            assert pixels(p) == before[p]
            metadata.read_keywords(p)  # parses
        if index.exists():
            assert sqlite3.connect(index).execute("pragma integrity_check").fetchone()[0] == "ok"
    # A kill between writing a temp and renaming it may leave the temp (never the photo) behind...
    final = subprocess.run(cmd, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert not list(root.glob(".*ramcli-tmp"))  # ...and the next run removes it
    assert set(statuses(final)) <= {"tagged", "unchanged", "updated"}
    for p in photos:
        kws = metadata.read_keywords(p)
        assert len(kws) == 3, (p, kws)  # each tag once, no duplicates from interrupted runs
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert statuses(again) == {"unchanged": len(photos)}


def test_json_and_exit_code_when_all_is_well(tmp_path: Path, tiny_model) -> None:
    """Something under a photo's name that is no file (a FIFO) is reported as skipped, which is not a
    failure: exit code 0."""
    root = tmp_path / "ok"
    make_photo(root / "one.jpg", seed=3)
    os.mkfifo(root / "pipe.jpg")
    result = run_cli(*TAG, "--index", str(tmp_path / "ok.db"), str(root))
    assert result.returncode == 0, result.stderr
    recs = records(result)
    assert recs[str(root / "one.jpg")]["status"] == "tagged"
    assert recs[str(root / "pipe.jpg")]["status"] == "skipped"
    lines = result.stderr.strip().splitlines()  # the skip, the model (said when it loads), the summary
    skipped = [line for line in lines if line.startswith("skipped:")]
    assert len(lines) == 3 and len(skipped) == 1 and "pipe.jpg" in skipped[0]
    assert "1 skipped, 0 errors" in lines[2]
