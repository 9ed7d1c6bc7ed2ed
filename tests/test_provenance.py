"""Nothing lost, ever: ramcli's record in each file, the write-ahead journal, exact undo.

Every test runs the real CLI as a subprocess over real files; exiftool (when installed) is the
independent reader of what is left in them. Kills are deterministic: ``RAMCLI_FAULT=<point>``
makes the process die there as ``kill -9`` would (ramcli/faults.py).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import piexif
import pytest

from conftest import add_user_keywords, make_photo, run_cli
from ramcli import metadata

TAG = ("tag", "-m", "tiny_ram_plus", "--threshold", "0", "--top-k", "3", "--json")
EXIFTOOL = shutil.which("exiftool")
needs_exiftool = pytest.mark.skipif(EXIFTOOL is None, reason="exiftool not installed")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (sidecars included) by its sha256."""
    return {str(p.relative_to(root)): sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


def exiftool_keywords(path: Path) -> dict[str, object]:
    """What another program sees: every keyword field ramcli writes, read by exiftool."""
    out = subprocess.run([EXIFTOOL, "-j", "-G1", "-XMP-dc:Subject", "-XMP-lr:HierarchicalSubject", "-IPTC:Keywords",
                          "-XPKeywords", "-XMP-ramcli:all", str(path)], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)[0]
    got.pop("SourceFile")
    return got


def ours_left(path: Path, keywords: set[str]) -> set[str]:
    """ramcli's keywords (and hierarchy entries, record) still anywhere in the file, per exiftool."""
    left: set[str] = set()
    for key, value in exiftool_keywords(path).items():
        values = value if isinstance(value, list) else [value]
        for v in map(str, values):
            if key.startswith("XMP-ramcli") or v.startswith("ramcli|") or v in keywords or \
                    any(k in v.split(";") for k in keywords):
                left.add(f"{key}={v}")
    return left


def tagged(result: subprocess.CompletedProcess[str]) -> set[str]:
    return {t for r in map(json.loads, result.stdout.splitlines()) for t in r.get("tags", [])}


@pytest.fixture
def photo(tmp_path: Path, tiny_model) -> Path:
    p = make_photo(tmp_path / "lib" / "photo.jpg", (320, 240), seed=3, quality=90)
    piexif.insert(piexif.dump({"0th": {piexif.ImageIFD.Make: b"Maker"}}), str(p))
    add_user_keywords(p, ["grandma"])
    return p


@needs_exiftool
@pytest.mark.parametrize("point", ["after-replace", "before-replace"])
def test_a_kill_around_the_replace_claims_nothing_wrongly(photo: Path, tmp_path: Path, point: str) -> None:
    """Defect 1: killed between the file replace and the index commit (or just before the replace);
    the next `tag` and `untag` still know which keywords are ramcli's."""
    original = sha(photo)
    index = str(tmp_path / "index.db")
    killed = run_cli(*TAG, "--index", index, str(photo), env={"RAMCLI_FAULT": point})
    assert killed.returncode == 137
    again = run_cli(*TAG, "--index", index, str(photo))
    assert again.returncode == 0, again.stderr
    ours = tagged(again) - {"grandma"}
    assert ours and ours <= metadata.read_keywords(photo)
    undone = run_cli("untag", "--index", index, "--json", str(photo))
    assert undone.returncode == 0, undone.stderr
    assert ours_left(photo, ours) == set()
    assert "grandma" in metadata.read_keywords(photo)
    assert json.loads(undone.stdout)["status"] == "restored" and sha(photo) == original


@needs_exiftool
def test_a_lost_index_still_untags(photo: Path, tmp_path: Path) -> None:
    """Tag with index A, delete A, untag with a fresh index B: every ramcli keyword goes, the user's stay."""
    first = run_cli(*TAG, "--index", str(tmp_path / "a.db"), str(photo.parent))
    ours = tagged(first) - {"grandma"}
    assert ours
    for p in tmp_path.glob("a.db*"):
        p.unlink()
    result = run_cli("untag", "--index", str(tmp_path / "b.db"), "--json", str(photo.parent))
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["status"] for line in result.stdout.splitlines()] == ["untagged"]
    assert ours_left(photo, ours) == set()
    assert metadata.read_keywords(photo) == {"grandma"}


@needs_exiftool
def test_a_second_index_claims_what_ramcli_wrote(photo: Path, tmp_path: Path) -> None:
    """Two indexes over one library: the second reads each file's record instead of claiming nothing."""
    ours = tagged(run_cli(*TAG, "--index", str(tmp_path / "a.db"), str(photo.parent))) - {"grandma"}
    run_cli(*TAG, "--index", str(tmp_path / "b.db"), str(photo.parent))
    written = sqlite3.connect(tmp_path / "b.db").execute("select written from photos").fetchone()[0]
    assert set(json.loads(written)) == ours
    assert run_cli("untag", "--index", str(tmp_path / "b.db"), str(photo.parent)).returncode == 0
    assert ours_left(photo, ours) == set() and metadata.read_keywords(photo) == {"grandma"}


@needs_exiftool
def test_a_keyword_the_user_removed_is_never_written_again(photo: Path, tmp_path: Path) -> None:
    index = str(tmp_path / "index.db")
    ours = sorted(tagged(run_cli(*TAG, "--index", index, str(photo))) - {"grandma"})
    gone = ours[0]
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", f"-XMP-dc:Subject-={gone}", f"-IPTC:Keywords-={gone}",
                    str(photo)], check=True)
    photo.touch()
    run_cli(*TAG, "--index", index, str(photo))
    assert gone not in metadata.read_keywords(photo)
    assert gone in exiftool_keywords(photo)["XMP-ramcli:Rejected"]
    assert run_cli("untag", "--index", index, str(photo)).returncode == 0
    assert metadata.read_keywords(photo) == {"grandma"}


@needs_exiftool
def test_an_untag_killed_after_its_replace_finishes_next_time(photo: Path, tmp_path: Path) -> None:
    original = sha(photo)
    index = str(tmp_path / "index.db")
    ours = tagged(run_cli(*TAG, "--index", index, str(photo))) - {"grandma"}
    killed = run_cli("untag", "--index", index, str(photo), env={"RAMCLI_FAULT": "untag-after-replace"})
    assert killed.returncode == 137
    assert sha(photo) == original  # the restore itself had landed
    again = run_cli("untag", "--index", index, "--json", str(photo))
    assert again.returncode == 0, again.stderr
    assert ours_left(photo, ours) == set() and sha(photo) == original


def _mixed_library(root: Path) -> list[Path]:
    """JPEG/PNG/WebP/TIFF with and without prior IPTC/XMP/MicrosoftPhoto, and sidecar formats."""
    photos = [make_photo(root / "plain.jpg", seed=1, quality=90),
              make_photo(root / "exif.jpg", seed=2, quality=90),
              make_photo(root / "iptc.jpg", seed=3, quality=90),
              make_photo(root / "ms.jpg", seed=4, quality=90),
              make_photo(root / "a.png", (200, 150), seed=5),
              make_photo(root / "xmp.png", (200, 150), seed=6),
              make_photo(root / "lossy.webp", (180, 120), seed=7, quality=80),
              make_photo(root / "lossless.webp", (180, 120), seed=8, lossless=True),
              make_photo(root / "scan.tif", (160, 200), seed=9),
              make_photo(root / "lzw.tif", (160, 200), seed=10, compression="tiff_lzw"),
              make_photo(root / "anim.gif", (90, 60), mode="P", seed=11),
              make_photo(root / "sub" / "old.bmp", (90, 60), seed=12)]
    piexif.insert(piexif.dump({"0th": {piexif.ImageIFD.Make: b"Maker", piexif.ImageIFD.Model: b"Cam"}}),
                  str(photos[1]))
    et = [EXIFTOOL, "-q", "-overwrite_original"]
    subprocess.run([*et, "-IPTC:Keywords=Paris", "-IPTC:City=Paris", str(photos[2])], check=True)
    subprocess.run([*et, "-XMP-microsoft:LastKeywordXMP=family", "-XMP-dc:Subject=family", str(photos[3])],
                   check=True)
    subprocess.run([*et, "-XMP-dc:Subject=beach", "-XMP-dc:Title=Summer", str(photos[5])], check=True)
    subprocess.run([*et, "-XMP-dc:Subject=trip", str(photos[6])], check=True)
    # a sidecar another app already started for the BMP (Lightroom-style name)
    subprocess.run([*et, "-XMP-dc:Subject=old scan", "-o", str(root / "sub" / "old.xmp"), str(photos[11])],
                   check=True)
    return photos


@needs_exiftool
@pytest.mark.parametrize("sidecar", [False, True])
def test_tag_then_untag_leaves_every_file_byte_identical(tmp_path: Path, tiny_model, sidecar: bool) -> None:
    root = tmp_path / "lib"
    photos = _mixed_library(root)
    before = tree(root)
    index = str(tmp_path / "index.db")
    extra = ("--sidecar", "--sidecar-name", "stem") if sidecar else ()
    result = run_cli(*TAG, "--index", index, *extra, str(root))
    assert result.returncode == 0, result.stderr
    assert tree(root) != before
    undone = run_cli("untag", "--index", index, "--json", str(root))
    assert undone.returncode == 0, undone.stderr
    assert {json.loads(line)["status"] for line in undone.stdout.splitlines()} == {"restored"}
    assert tree(root) == before
    assert len(photos) == len(undone.stdout.splitlines())


@needs_exiftool
def test_untag_after_someone_else_edited_removes_only_ours(tmp_path: Path, tiny_model) -> None:
    root = tmp_path / "lib"
    photos = _mixed_library(root)
    index = str(tmp_path / "index.db")
    ours = tagged(run_cli(*TAG, "--index", index, str(root)))
    for p in photos[:4]:
        add_user_keywords(p, ["added later"])
    undone = run_cli("untag", "--index", index, "--json", str(root))
    statuses = {json.loads(line)["path"]: json.loads(line)["status"] for line in undone.stdout.splitlines()}
    for p in photos[:4]:
        assert statuses[str(p)] == "untagged"
        assert ours_left(p, ours - {"Paris", "family"}) == set()
        assert "added later" in metadata.read_keywords(p)
    assert metadata.read_keywords(photos[2]) == {"Paris", "added later"}


@needs_exiftool
def test_a_second_xmp_packet_is_never_lost(tmp_path: Path, tiny_model) -> None:
    """Defect 2: exiv2 keeps one XMP packet; a JPEG with two gets a sidecar and stays byte-identical."""
    p = make_photo(tmp_path / "lib" / "two.jpg", seed=4, quality=90)
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", "-XMP-dc:Subject=first", str(p)], check=True)
    data = p.read_bytes()
    second = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
              b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:my="http://example.com/my/">'
              b'<dc:subject><rdf:Seq><rdf:li>second</rdf:li></rdf:Seq></dc:subject><my:note>keep me</my:note>'
              b'</rdf:Description></rdf:RDF></x:xmpmeta>')
    payload = b"http://ns.adobe.com/xap/1.0/\x00" + second
    segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    p.write_bytes(data[:2] + segment + data[2:])
    assert metadata.imagedata.xmp_packets(p.read_bytes()) == 2
    before = sha(p)
    result = run_cli(*TAG, "--index", str(tmp_path / "i.db"), str(p))
    assert result.returncode == 0, result.stderr
    assert sha(p) == before and (p.parent / "two.jpg.xmp").is_file()
    assert tagged(result) <= metadata.read_keywords(p)


def test_stem_sidecars_never_collide(tmp_path: Path, tiny_model) -> None:
    """Defect 3: same.gif and same.bmp cannot share same.xmp; untagging one leaves the other's."""
    root = tmp_path / "lib"
    gif = make_photo(root / "same.gif", (90, 60), mode="P", seed=1)
    bmp = make_photo(root / "same.bmp", (90, 60), seed=2)
    index = str(tmp_path / "i.db")
    result = run_cli(*TAG, "--index", index, "--sidecar-name", "stem", str(root))
    assert result.returncode == 0, result.stderr
    sidecars = sorted(p.name for p in root.glob("*.xmp"))
    assert sidecars == ["same.bmp.xmp", "same.gif.xmp"]
    gif_keywords = metadata.read_keywords(gif)
    assert gif_keywords
    assert run_cli("untag", "--index", index, str(bmp)).returncode == 0
    assert metadata.read_keywords(gif) == gif_keywords
    assert not (root / "same.bmp.xmp").exists()


def test_recovery_settles_or_reverts_pending_writes(photo: Path, tmp_path: Path) -> None:
    """The write-ahead intent: committed before the replace, settled or rolled back by the next run."""
    index = tmp_path / "index.db"
    run_cli(*TAG, "--index", str(index), str(photo), env={"RAMCLI_FAULT": "before-replace"})
    rows = sqlite3.connect(index).execute("select pending, keywords from writes").fetchall()
    assert len(rows) == 1 and rows[0][0] == 1 and json.loads(rows[0][1])  # planned keywords, committed
    assert metadata.read_keywords(photo) == {"grandma"}  # the file was never replaced
    run_cli(*TAG, "--index", str(index), str(photo))
    assert sqlite3.connect(index).execute("select pending from writes").fetchall() == [(0,)]


@needs_exiftool
def test_untag_of_a_file_changed_since_leaves_no_residue(tmp_path: Path, tiny_model) -> None:
    """Defect 9: the metadata-equivalent undo (the file changed since ramcli's write) leaves no IPTC block
    holding only its UTF-8 declaration, no simple WebP turned extended, MicrosoftPhoto's namespace as it was."""
    root = tmp_path / "lib"
    plain = make_photo(root / "plain.jpg", seed=1, quality=90)
    webp = make_photo(root / "lossy.webp", (180, 120), seed=7, quality=80)
    ms = make_photo(root / "ms.jpg", seed=4, quality=90)
    et = [EXIFTOOL, "-q", "-overwrite_original"]
    subprocess.run([*et, "-XMP-microsoft:LastKeywordXMP=family", "-XMP-dc:Subject=family", str(ms)], check=True)
    index = str(tmp_path / "index.db")
    assert run_cli(*TAG, "--index", index, str(root)).returncode == 0
    for p in (plain, webp, ms):  # another program rewrites each file without changing what it holds
        subprocess.run([*et, "-XMP-dc:Rights=me", str(p)], check=True)
        subprocess.run([*et, "-XMP-dc:Rights=", str(p)], check=True)
    undone = run_cli("untag", "--index", index, "--json", str(root))
    assert {json.loads(line)["status"] for line in undone.stdout.splitlines()} == {"untagged"}

    def tags(p: Path) -> dict:
        out = subprocess.run([EXIFTOOL, "-j", "-G1", "-a", "-validate", "-warning", "-IPTC:all", "-FileType",
                              str(p)], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)[0]

    assert not any(k.startswith("IPTC:") for k in tags(plain)) and tags(plain)["ExifTool:Validate"] == "OK"
    assert tags(webp)["File:FileType"] == "WEBP"  # not "Extended WEBP"
    assert tags(ms)["ExifTool:Validate"] == "OK", tags(ms)  # no "Fixed incorrect URI for xmlns:MicrosoftPhoto"
    assert metadata.read_keywords(ms) == {"family"} and metadata.read_keywords(plain) == set()
