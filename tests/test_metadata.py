"""Keywords written into photos: every storage per format as exiftool reads it, and the safety rules.

exiftool is the independent reader (``exiftool -j -G1 -struct``); the assertions that need it skip when it
is not installed, the rest always run (field reads then fall back to pyexiv2 directly). Photos are built
here with Pillow and piexif, small, so the whole file runs in seconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import piexif
import pyexiv2
import pytest
from PIL import Image, ImageCms, ImageSequence

from conftest import SHARED
from ramcli import metadata
from ramcli.errors import ImageError
from ramcli.metadata import (
    WriteOptions,
    read_caption,
    read_keywords,
    remove_keywords,
    safefile,
    sidecar_path,
    storage_for,
    write_keywords,
)

EXIFTOOL = shutil.which("exiftool")
KW = ["dog", "修道院", "café"]
USER = ["sunset", "Ünïcode", "Ferien 2023"]
KEYWORD_TAGS = {"XMP-dc:Subject", "XMP-lr:HierarchicalSubject", "IPTC:Keywords", "IFD0:XPKeywords"}


# --- readers independent of ramcli ------------------------------------------------------------------


def need_exiftool() -> None:
    if EXIFTOOL is None:
        pytest.skip("exiftool not installed (apt-get install libimage-exiftool-perl)")


def exiftool(path: Path, *args: str) -> dict:
    need_exiftool()
    out = subprocess.run([EXIFTOOL, "-j", "-G1", "-struct", "-a", *args, str(path)], capture_output=True,
                         check=True).stdout
    return json.loads(out.decode("utf-8"))[0]


def as_list(value: object) -> list[str]:
    if value is None or value == "":
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def fields(path: Path) -> dict[str, list[str]]:
    """Each keyword field on its own; exiftool when installed, else pyexiv2 directly."""
    if EXIFTOOL:
        d = exiftool(path)
        xp = str(d.get("IFD0:XPKeywords", ""))
        return {"dc": as_list(d.get("XMP-dc:Subject")), "lr": as_list(d.get("XMP-lr:HierarchicalSubject")),
                "iptc": as_list(d.get("IPTC:Keywords")), "xp": [k for k in xp.split(";") if k],
                "tagslist": as_list(d.get("XMP-digiKam:TagsList"))}
    with pyexiv2.Image(str(path)) as img:
        xmp, iptc = img.read_xmp(), img.read_iptc()
        xp = (img.read_exif().get("Exif.Image.XPKeywords") or "").rstrip("\x00")
    return {"dc": as_list(xmp.get("Xmp.dc.subject")), "lr": as_list(xmp.get("Xmp.lr.hierarchicalSubject")),
            "iptc": as_list(iptc.get("Iptc.Application2.Keywords")), "xp": [k for k in xp.split(";") if k],
            "tagslist": as_list(xmp.get("Xmp.digiKam.TagsList"))}


def scan_data(data: bytes) -> bytes:
    """Bytes from the first SOS marker on, walking segment lengths (an EXIF thumbnail has its own SOS)."""
    assert data[:2] == b"\xff\xd8"
    i = 2
    while True:
        assert data[i] == 0xFF
        marker = data[i + 1]
        if marker == 0xDA:
            return data[i:]
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]


def frames(path: Path) -> list[tuple[str, tuple[int, int], bytes]]:
    with Image.open(path) as im:
        return [(f.mode, f.size, f.tobytes()) for f in ImageSequence.Iterator(im)]


def png_idat(data: bytes) -> bytes:
    i, out = 8, b""
    while i < len(data):
        size, kind = struct.unpack(">I4s", data[i:i + 8])
        if kind == b"IDAT":
            out += data[i + 8:i + 8 + size]
        i += 12 + size
    return out


def other_tags(path: Path) -> dict:
    """Everything exiftool sees except keyword fields and the file system's own data."""
    skip = ("SourceFile", "ExifTool:", "System:", "File:")
    return {k: v for k, v in exiftool(path).items() if not k.startswith(skip) and k not in KEYWORD_TAGS}


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- test photos --------------------------------------------------------------------------------------


def pixels(seed: int, size: tuple[int, int] = (96, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    grad = np.linspace(0, 200, size[0], dtype=np.uint8)[None, :, None]
    noise = rng.integers(0, 55, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(grad + noise)


CAMERA_EXIF = {
    "0th": {piexif.ImageIFD.Make: b"Canon", piexif.ImageIFD.Model: b"EOS R5", piexif.ImageIFD.Orientation: 6},
    "Exif": {piexif.ExifIFD.DateTimeOriginal: b"2023:05:06 07:08:09"},
    "GPS": {piexif.GPSIFD.GPSLatitudeRef: b"N", piexif.GPSIFD.GPSLatitude: ((48, 1), (51, 1), (2956, 100)),
            piexif.GPSIFD.GPSLongitudeRef: b"E", piexif.GPSIFD.GPSLongitude: ((2, 1), (17, 1), (4020, 100))},
}


def make_photo(path: Path, *, icc: bool = False) -> Path:
    """A small photo; JPEGs carry real camera EXIF (Make, Model, DateTimeOriginal, Orientation, GPS)."""
    img, ext = pixels(len(path.name)), path.suffix.lower()
    kwargs: dict = {}
    if icc:
        kwargs["icc_profile"] = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    if ext == ".jpg":
        kwargs.update(exif=piexif.dump(CAMERA_EXIF), quality=90)
    elif ext == ".webp":
        kwargs.update(quality=80)
    elif ext == ".heic":
        pillow_heif = pytest.importorskip("pillow_heif")
        pillow_heif.register_heif_opener()
    try:
        img.save(path, **kwargs)
    except Exception as exc:  # pragma: no cover - depends on the platform's libheif
        pytest.skip(f"cannot encode {ext} here: {exc}")
    return path


def add_user_keywords(path: Path, *, tagslist: list[str] | None = None) -> None:
    """The user's own keywords in every field (exiftool, as another program would), plus a title and a city."""
    if EXIFTOOL:
        args = ["-codedcharacterset=utf8", *(f"-XMP-dc:Subject={k}" for k in USER),
                *(f"-IPTC:Keywords={k}" for k in USER), f"-XPKeywords={';'.join(USER)}",
                "-XMP-lr:HierarchicalSubject=Places|Paris", "-XMP-dc:Title=My title", "-IPTC:City=Paris",
                *(f"-XMP-digiKam:TagsList={t}" for t in tagslist or [])]
        subprocess.run([EXIFTOOL, "-q", "-overwrite_original", *args, str(path)], check=True)
        return
    with pyexiv2.Image(str(path)) as img:
        img.modify_iptc({"Iptc.Envelope.CharacterSet": "\x1b%G", "Iptc.Application2.Keywords": USER,
                         "Iptc.Application2.City": "Paris"})
        img.modify_exif({"Exif.Image.XPKeywords": ";".join(USER)})
        img.modify_xmp({"Xmp.dc.subject": USER, "Xmp.lr.hierarchicalSubject": ["Places|Paris"],
                        "Xmp.dc.title": {'lang="x-default"': "My title"},
                        **({"Xmp.digiKam.TagsList": tagslist} if tagslist else {})})


SIDECAR_XMP = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/"
 xmp:Rating="3"><dc:subject><rdf:Bag><rdf:li>{kw}</rdf:li></rdf:Bag></dc:subject></rdf:Description>
</rdf:RDF></x:xmpmeta>
<?xpacket end="w"?>
"""


# --- where keywords go ----------------------------------------------------------------------------------


def test_storage_for_and_sidecar_path(tmp_path: Path) -> None:
    default, stem = WriteOptions(), WriteOptions(sidecar_name="stem")
    for name in ["b.JPEG", "c.png", "d.tif", "e.tiff", "f.webp", "g.jpe"]:
        (tmp_path / name).touch()  # storage_for decides by name and permissions, never by content
        assert storage_for(tmp_path / name, default) == "embed", name
    photo = make_photo(tmp_path / "a.jpg")
    assert storage_for(photo, default) == "embed"
    assert storage_for(photo, WriteOptions(sidecar=True)) == "sidecar"
    for name in ["x.heic", "x.HEIF", "x.avif", "x.cr2", "x.CR3", "x.nef", "x.arw", "x.dng", "x.orf", "x.rw2",
                 "x.raf", "x.gif"]:
        assert storage_for(tmp_path / name, default) == "sidecar", name
    assert sidecar_path(photo, default) == tmp_path / "a.jpg.xmp"
    assert sidecar_path(photo, stem) == tmp_path / "a.xmp"
    assert sidecar_path(tmp_path / "IMG_1.CR2", stem) == tmp_path / "IMG_1.xmp"
    photo.chmod(0o444)  # root may still write it; no write bit is the user saying "leave it alone"
    assert storage_for(photo, default) == "sidecar"
    photo.chmod(0o644)
    tmp_path.chmod(0o555)
    try:
        assert storage_for(photo, default) == "sidecar"
    finally:
        tmp_path.chmod(0o755)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".tif", ".webp"])
def test_embedded_storages_per_format(tmp_path: Path, ext: str) -> None:
    photo = make_photo(tmp_path / f"photo{ext}")
    before, raw = frames(photo), photo.read_bytes()

    result = write_keywords(photo, KW, [])

    assert (result.target, result.sidecar, result.changed, result.added) == (photo, False, True, KW)
    assert read_keywords(photo) == set(KW)
    assert frames(photo) == before, "decoded pixels changed"
    if ext == ".jpg":
        assert scan_data(photo.read_bytes()) == scan_data(raw)
    if ext == ".png":
        assert png_idat(photo.read_bytes()) == png_idat(raw)
    assert not list(tmp_path.glob("*.xmp")) and temp_files(tmp_path) == []
    got = fields(photo)
    assert got["dc"] == KW
    assert got["lr"] == [f"ramcli|{k}" for k in KW]
    assert got["iptc"] == (KW if ext in (".jpg", ".tif", ".png") else [])
    assert got["xp"] == (KW if ext in (".jpg", ".tif") else [])

    if EXIFTOOL:  # bags, not sequences, and IPTC declared UTF-8 (else exiftool shows mojibake)
        packet = subprocess.run([EXIFTOOL, "-b", "-XMP", str(photo)], capture_output=True, check=True).stdout
        assert re.search(rb"<dc:subject>\s*<rdf:Bag>", packet)
        assert re.search(rb"<lr:hierarchicalSubject>\s*<rdf:Bag>", packet)
        if got["iptc"]:
            assert exiftool(photo)["IPTC:CodedCharacterSet"] == "UTF8"

    removed = remove_keywords(photo, KW)
    assert (removed.changed, removed.removed, read_keywords(photo)) == (True, KW, set())
    assert frames(photo) == before
    assert fields(photo) == {"dc": [], "lr": [], "iptc": [], "xp": [], "tagslist": []}
    if EXIFTOOL:
        assert "Warning" not in exiftool(photo, "-validate", "-warning"), exiftool(photo, "-validate", "-warning")


def test_jpeg_scan_data_icc_and_camera_exif_kept(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "camera.jpg", icc=True)
    raw = photo.read_bytes()
    with Image.open(photo) as im:
        icc = im.info["icc_profile"]
    exif_before = piexif.load(raw)
    others = other_tags(photo) if EXIFTOOL else None

    write_keywords(photo, KW, [])

    data = photo.read_bytes()
    assert scan_data(data) == scan_data(raw)
    with Image.open(photo) as im:
        assert im.info["icc_profile"] == icc
    exif_after = piexif.load(data)
    for ifd in ("Exif", "GPS"):
        assert exif_after[ifd] == exif_before[ifd]
    for tag in (piexif.ImageIFD.Make, piexif.ImageIFD.Model, piexif.ImageIFD.Orientation):
        assert exif_after["0th"][tag] == exif_before["0th"][tag]
    if others is not None:
        after = other_tags(photo)
        # New: the IPTC envelope exiv2 creates around the keywords (there was no IPTC before), XMP's toolkit,
        # and ramcli's own record (metadata/provenance.py).
        added = {k: after.pop(k) for k in list(after) if k not in others}
        assert set(added) - {"IPTC:CodedCharacterSet", "IPTC:EnvelopeRecordVersion",
                             "IPTC:ApplicationRecordVersion", "XMP-x:XMPToolkit"} == {
            "XMP-ramcli:Agent", "XMP-ramcli:Date", "XMP-ramcli:Keywords"}, added
        assert after == others


def test_real_camera_jpeg_keeps_thumbnail_and_photoshop_data(tmp_path: Path) -> None:
    source = SHARED / "data" / "photos" / "demo3.jpg"  # 13 MP Kodak JPEG: EXIF thumbnail, Photoshop IRB, IPTC
    if not source.is_file():
        pytest.skip(f"{source} not found")
    photo = tmp_path / "demo3.jpg"
    photo.write_bytes(source.read_bytes())
    raw = photo.read_bytes()
    others = other_tags(photo) if EXIFTOOL else None

    write_keywords(photo, KW, [])

    data = photo.read_bytes()
    assert scan_data(data) == scan_data(raw)  # the first FFDA is the thumbnail's: scan_data walks segments
    assert piexif.load(data)["thumbnail"] == piexif.load(raw)["thumbnail"]
    assert fields(photo)["iptc"] == KW
    if others is not None:
        after = other_tags(photo)
        # Known exiv2 behaviour: it drops IFD0 PhotometricInterpretation (meaningless in a JPEG's IFD0) and
        # moves the thumbnail (its offset changes, its bytes do not).
        changed = {k for k in set(after) | set(others) if after.get(k) != others.get(k)}
        assert changed - {"IFD0:PhotometricInterpretation", "IFD1:ThumbnailOffset", "XMP-x:XMPToolkit"} == {
            "XMP-ramcli:Agent", "XMP-ramcli:Date", "XMP-ramcli:Keywords"}, changed  # + ramcli's record


# --- the user's keywords --------------------------------------------------------------------------------


def test_user_keywords_survive_write_rewrite_and_untag(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "user.jpg")
    add_user_keywords(photo)
    original = fields(photo)
    assert original["dc"] == USER and original["iptc"] == USER and original["xp"] == USER
    title = exiftool(photo).get("XMP-dc:Title") if EXIFTOOL else None

    first = write_keywords(photo, ["dog", "修道院", "café"], [])
    assert first.added == ["dog", "修道院", "café"]
    got = fields(photo)
    for key in ("dc", "iptc", "xp"):
        assert got[key] == [*USER, "dog", "修道院", "café"], key
    assert got["lr"] == ["Places|Paris", "ramcli|dog", "ramcli|修道院", "ramcli|café"]

    second = write_keywords(photo, ["dog", "cat"], ["dog", "修道院", "café"])
    assert (second.added, second.removed) == (["cat"], ["修道院", "café"])
    got = fields(photo)
    for key in ("dc", "iptc", "xp"):
        assert got[key] == [*USER, "dog", "cat"], key
    assert got["lr"] == ["Places|Paris", "ramcli|dog", "ramcli|cat"]

    untag = remove_keywords(photo, ["dog", "cat"])
    assert untag.removed == ["dog", "cat"]
    assert fields(photo) == original  # field by field, order included
    assert read_keywords(photo) == set(USER)
    if EXIFTOOL:
        assert exiftool(photo).get("XMP-dc:Title") == title == "My title"
        assert exiftool(photo).get("IPTC:City") == "Paris"


def test_keyword_present_in_another_case_is_not_added_nor_removed(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "case.jpg")
    with pyexiv2.Image(str(photo)) as img:  # the user's own keyword, in every field ramcli writes
        img.modify_xmp({"Xmp.dc.subject": ["Dog"], "Xmp.lr.hierarchicalSubject": ["ramcli|Dog"]})
        img.modify_iptc({"Iptc.Envelope.CharacterSet": "\x1b%G", "Iptc.Application2.Keywords": ["Dog"]})
        img.modify_exif({"Exif.Image.XPKeywords": "Dog"})
    result = write_keywords(photo, ["dog"], [])
    assert (result.added, result.changed) == ([], False)
    remove_keywords(photo, ["dog"])
    assert fields(photo)["dc"] == ["Dog"]


def test_odd_keywords(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "odd.jpg")
    long = "長" * 30  # 90 bytes of UTF-8: over the IPTC IIM limit of 64
    write_keywords(photo, ["a;b", "x|y", long, "  spaced  ", "cafe\u0301", "", "dup", "dup", "tab\tbed"], [])
    clean = ["a;b", "x|y", long, "spaced", "café", "dup", "tab bed"]
    got = fields(photo)
    assert got["dc"] == clean  # XMP holds anything
    assert got["xp"] == [k for k in clean if ";" not in k]  # ";" is XPKeywords' separator
    assert got["lr"] == [f"ramcli|{k}" for k in clean if "|" not in k]  # "|" is the hierarchy separator
    assert got["iptc"] == [k for k in clean if k != long]
    assert write_keywords(photo, clean, clean).changed is False
    remove_keywords(photo, clean)
    assert read_keywords(photo) == set()


def test_hierarchical_root_can_be_turned_off(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "plain.jpg")
    write_keywords(photo, KW, [], WriteOptions(hierarchical_root=None))
    assert fields(photo)["lr"] == KW


def test_parents_go_into_the_hierarchical_fields_and_move_with_them(tmp_path: Path) -> None:
    """A keyword with broader tags: root|parent|keyword in lr:hierarchicalSubject (and digiKam's
    TagsList); the plain fields hold the keyword itself. A new parent replaces the old entry, the
    user's own hierarchy (another root) is left alone, and removal finds the entry under any parent."""
    photo = make_photo(tmp_path / "tree.jpg")
    add_user_keywords(photo, tagslist=["People/Ann"])  # also the user's own hierarchy: Places|Paris
    bird = WriteOptions(ancestry={"red kite": ("animal", "bird")})
    write_keywords(photo, ["dog", "red kite"], [], bird)
    got = fields(photo)
    assert "ramcli|animal|bird|red kite" in got["lr"] and "ramcli|dog" in got["lr"]
    assert "ramcli/animal/bird/red kite" in got["tagslist"] and "People/Ann" in got["tagslist"]
    assert "red kite" in got["dc"] and "red kite" in got["iptc"] and not any("|" in k for k in got["dc"])
    assert write_keywords(photo, ["dog", "red kite"], ["dog", "red kite"], bird).changed is False
    write_keywords(photo, ["dog", "red kite"], ["dog", "red kite"], WriteOptions(ancestry={"red kite": ("raptor",)}))
    got = fields(photo)
    assert [k for k in got["lr"] if k.endswith("red kite")] == ["ramcli|raptor|red kite"]
    assert [k for k in got["tagslist"] if k.endswith("red kite")] == ["ramcli/raptor/red kite"]
    remove_keywords(photo, ["dog", "red kite"])
    got = fields(photo)
    assert got["lr"] == ["Places|Paris"] and got["tagslist"] == ["People/Ann"]
    assert read_keywords(photo) == set(USER)


def test_a_parent_with_the_separator_is_left_out_of_that_field(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "sep.jpg")
    write_keywords(photo, ["kite"], [], WriteOptions(ancestry={"kite": ("toys|games",)}))
    got = fields(photo)
    assert got["dc"] == ["kite"] and got["lr"] == []  # "|" would split the hierarchy wrongly


def test_digikam_tagslist_kept_in_step_only_when_present(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "digikam.jpg")
    add_user_keywords(photo, tagslist=["People/Ann"])
    write_keywords(photo, ["dog"], [])
    assert fields(photo)["tagslist"] == ["People/Ann", "ramcli/dog"]  # Immich reads TagsList first
    remove_keywords(photo, ["dog"])
    assert fields(photo)["tagslist"] == ["People/Ann"]
    other = make_photo(tmp_path / "plain.jpg")
    write_keywords(other, ["dog"], [])
    assert fields(other)["tagslist"] == []


def test_read_keywords_merges_every_field_and_both_sidecars(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "merge.jpg")
    with pyexiv2.Image(str(photo)) as img:
        img.modify_xmp({"Xmp.dc.subject": ["in-xmp"]})
        img.modify_iptc({"Iptc.Application2.Keywords": ["in-iptc"]})
        img.modify_exif({"Exif.Image.XPKeywords": "in-xp\x00"})
    (tmp_path / "merge.xmp").write_text(SIDECAR_XMP.format(kw="in-stem-sidecar"), encoding="utf-8")
    (tmp_path / "merge.jpg.xmp").write_text(SIDECAR_XMP.format(kw="in-ext-sidecar"), encoding="utf-8")
    assert read_keywords(photo) == {"in-xmp", "in-iptc", "in-xp", "in-stem-sidecar", "in-ext-sidecar"}


def test_legacy_8bit_iptc_is_left_alone(tmp_path: Path) -> None:
    need_exiftool()
    photo = make_photo(tmp_path / "latin1.jpg")
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", "-charset", "iptc=Latin", "-IPTC:City=Müller",
                    "-IPTC:Keywords=Grüße", str(photo)], check=True)
    write_keywords(photo, KW, [])
    d = exiftool(photo, "-charset", "iptc=Latin")
    assert (d["IPTC:City"], as_list(d["IPTC:Keywords"])) == ("Müller", ["Grüße"])  # not re-encoded, not extended
    assert as_list(d["XMP-dc:Subject"]) == KW
    assert "Grüße" in read_keywords(photo)


# --- re-runs, times, permissions ------------------------------------------------------------------------


@pytest.mark.parametrize("sidecar", [False, True])
def test_second_identical_write_touches_nothing(tmp_path: Path, sidecar: bool) -> None:
    photo = make_photo(tmp_path / "idem.jpg")
    opts = WriteOptions(sidecar=sidecar)
    write_keywords(photo, KW, [], opts)
    target = sidecar_path(photo, opts) if opts.sidecar else photo
    data, st = target.read_bytes(), target.stat()

    again = write_keywords(photo, KW, KW, opts)

    assert (again.changed, again.added, again.removed) == (False, [], [])
    assert target.read_bytes() == data
    after = target.stat()
    assert (after.st_mtime_ns, after.st_ctime_ns, after.st_ino) == (st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    assert remove_keywords(make_photo(tmp_path / "never.jpg"), KW).changed is False


def test_times_restored_unless_touch_and_mode_kept(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "times.jpg")
    photo.chmod(0o640)
    old = 1_000_000_000_123_456_789
    os.utime(photo, ns=(old, old))
    write_keywords(photo, ["dog"], [])
    st = photo.stat()
    assert (st.st_atime_ns, st.st_mtime_ns, st.st_mode & 0o777) == (old, old, 0o640)
    write_keywords(photo, ["cat"], ["dog"], WriteOptions(touch=True))
    assert photo.stat().st_mtime_ns > old
    assert photo.stat().st_mode & 0o777 == 0o640


# --- sidecars ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("naming", ["ext", "stem"])
@pytest.mark.parametrize("name", ["photo.heic", "IMG_0001.CR2", "readonly.jpg"])
def test_sidecar_formats_and_read_only_photos(tmp_path: Path, name: str, naming: str) -> None:
    if name.endswith(".CR2"):  # no RAW encoder here; the sidecar path never reads the photo's content
        photo = tmp_path / name
        photo.write_bytes(make_photo(tmp_path / "raw.tif").read_bytes())
    else:
        photo = make_photo(tmp_path / name)
    if name.startswith("readonly"):
        photo.chmod(0o444)
    opts = WriteOptions(sidecar_name=naming)
    raw, st = photo.read_bytes(), photo.stat()
    expected = tmp_path / (f"{name}.xmp" if naming == "ext" else f"{Path(name).stem}.xmp")

    result = write_keywords(photo, KW, [], opts)

    assert (result.sidecar, result.target, result.changed) == (True, expected, True)
    assert expected.is_file() and temp_files(tmp_path) == []
    assert photo.read_bytes() == raw and photo.stat().st_mtime_ns == st.st_mtime_ns  # the photo is not touched
    assert read_keywords(photo) == set(KW)
    got = fields(expected)
    assert (got["dc"], got["lr"]) == (KW, [f"ramcli|{k}" for k in KW])
    if EXIFTOOL:
        assert b"rdf:Seq" not in expected.read_bytes()

    write_keywords(photo, ["dog", "cat"], KW, opts)
    assert fields(expected)["dc"] == ["dog", "cat"]
    gone = remove_keywords(photo, ["dog", "cat"], opts)
    assert gone.changed and not expected.exists()  # it held nothing but ours: deleted
    assert photo.read_bytes() == raw


def test_sidecar_with_other_data_is_updated_not_replaced(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "shared.heic")
    side = tmp_path / "shared.heic.xmp"
    side.write_text(SIDECAR_XMP.format(kw="user kw"), encoding="utf-8")
    write_keywords(photo, ["dog"], [])
    assert fields(side)["dc"] == ["user kw", "dog"]
    remove_keywords(photo, ["dog"])
    assert side.exists() and fields(side)["dc"] == ["user kw"]
    if EXIFTOOL:
        assert exiftool(side)["XMP-xmp:Rating"] == 3


def test_embedding_leaves_an_existing_sidecar_alone(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "both.jpg")
    side = tmp_path / "both.jpg.xmp"
    side.write_text(SIDECAR_XMP.format(kw="darktable kw"), encoding="utf-8")
    text = side.read_bytes()
    assert write_keywords(photo, ["dog"], []).target == photo
    assert side.read_bytes() == text
    raw = photo.read_bytes()
    assert write_keywords(photo, ["cat"], [], WriteOptions(sidecar=True)).target == side
    assert photo.read_bytes() == raw and fields(side)["dc"] == ["darktable kw", "cat"]


def test_read_only_folder_is_a_clean_error(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    photo = make_photo(folder / "photo.jpg")
    raw = photo.read_bytes()
    folder.chmod(0o555)
    try:
        with pytest.raises(ImageError, match="read-only") as err:
            write_keywords(photo, KW, [])
    finally:
        folder.chmod(0o755)
    assert str(photo) in str(err.value)
    assert sorted(p.name for p in folder.iterdir()) == ["photo.jpg"] and photo.read_bytes() == raw


# --- failures leave the original untouched --------------------------------------------------------------


@pytest.mark.parametrize(("where", "exc", "raised"), [
    ("replace", OSError(5, "Input/output error"), ImageError),
    ("fsync", OSError(28, "No space left on device"), ImageError),
    ("replace", KeyboardInterrupt(), KeyboardInterrupt),
    ("exiv2", RuntimeError("boom"), ImageError),
])
def test_failure_mid_write_leaves_original_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      where: str, exc: BaseException, raised: type) -> None:
    photo = make_photo(tmp_path / "atomic.jpg")
    raw, st = photo.read_bytes(), photo.stat()

    def boom(*args: object, **kwargs: object) -> None:
        raise exc

    target = {"replace": (os, "replace"), "fsync": (os, "fsync"), "exiv2": (pyexiv2.ImageData, "modify_exif")}
    monkeypatch.setattr(*target[where], boom)
    with pytest.raises(raised):
        write_keywords(photo, KW, [])
    monkeypatch.undo()
    assert photo.read_bytes() == raw and photo.stat().st_ino == st.st_ino
    assert temp_files(tmp_path) == []


def test_temp_left_by_a_killed_run_is_removed_by_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 between the temp and the rename leaves ``.NAME.PID.x.ramcli-tmp``; a later write in
    that folder removes it when PID is gone, and leaves a running writer's temp alone."""
    photo = make_photo(tmp_path / "sweep.jpg")
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".other.jpg.{dead.pid}.abc_12.ramcli-tmp"
    running = tmp_path / f".other.jpg.{os.getppid()}.def34.ramcli-tmp"
    not_ours = tmp_path / ".notes.ramcli-tmp"
    for f in (stale, running, not_ours):
        f.write_bytes(b"half a photo")
    monkeypatch.setattr(safefile, "_SWEPT", set())
    write_keywords(photo, KW, [])
    assert not stale.exists()
    assert running.exists() and not_ours.exists()
    assert set(read_keywords(photo)) >= set(KW)


def test_file_changed_by_someone_else_mid_write_is_not_overwritten(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    photo = make_photo(tmp_path / "race.jpg")
    real_apply = metadata._apply

    def apply_then_other_program_writes(*args: object, **kwargs: object) -> bytes | None:
        out = real_apply(*args, **kwargs)
        with open(photo, "ab") as f:
            f.write(b"other program")
        return out

    monkeypatch.setattr(metadata, "_apply", apply_then_other_program_writes)
    with pytest.raises(ImageError, match="changed on disk"):
        write_keywords(photo, KW, [])
    assert photo.read_bytes().endswith(b"other program") and temp_files(tmp_path) == []


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _corrupt_exif(data: bytes) -> bytes:
    i = data.find(b"Exif\x00\x00") + 6
    return data[:i] + b"\xff" * 24 + data[i + 24:]


@pytest.mark.parametrize(("name", "damage"), [
    ("garbage.jpg", lambda d: b"this is not a photo at all\n" * 20),
    ("empty.jpg", lambda d: b""),
    ("truncated.jpg", _truncate),
    ("truncated.png", _truncate),
    ("truncated.tif", _truncate),
    ("truncated.webp", _truncate),
])
def test_damaged_files_raise_image_error_and_stay_untouched(tmp_path: Path, name: str, damage) -> None:
    photo = tmp_path / name
    photo.write_bytes(damage(make_photo(tmp_path / f"good{photo.suffix}").read_bytes()))
    raw = photo.read_bytes()
    with pytest.raises(ImageError) as err:
        write_keywords(photo, KW, [])
    assert str(photo) in str(err.value) and "\n" not in str(err.value)
    assert photo.read_bytes() == raw and temp_files(tmp_path) == []
    assert not list(tmp_path.glob("*.xmp"))


def test_a_sound_picture_with_metadata_exiv2_cannot_read_gets_a_sidecar(tmp_path: Path) -> None:
    """Its pixels decode, its EXIF does not parse: a rewrite would drop what exiv2 could not read, so the
    photo stays byte-identical and the keywords go into its sidecar (untag deletes it again)."""
    photo = tmp_path / "bad-exif.jpg"
    photo.write_bytes(_corrupt_exif(make_photo(tmp_path / "good.jpg").read_bytes()))
    raw = photo.read_bytes()
    result = write_keywords(photo, KW, [])
    assert result.storage == "sidecar-ext" and photo.read_bytes() == raw
    assert read_keywords(photo) == set(KW)
    assert remove_keywords(photo, KW).changed and not (tmp_path / "bad-exif.jpg.xmp").exists()
    assert photo.read_bytes() == raw


def test_wrong_extension_is_written_as_what_the_file_is(tmp_path: Path) -> None:
    source = make_photo(tmp_path / "real.png")
    photo = tmp_path / "named.jpg"
    photo.write_bytes(source.read_bytes())
    write_keywords(photo, KW, [])
    assert frames(photo) == frames(source) and read_keywords(photo) == set(KW)
    assert fields(photo)["xp"] == []  # PNG storages: XMP + IPTC


# --- captions ------------------------------------------------------------------------------------------

CAPTION = "a dog sitting on a wooden bench"
DESCRIPTION_TAGS = ("XMP-dc:Description", "IFD0:ImageDescription", "IPTC:Caption-Abstract")


def descriptions(path: Path) -> dict[str, str]:
    """The description fields exiftool finds in ``path`` (missing ones left out)."""
    d = exiftool(path)
    return {k: str(d[k]) for k in DESCRIPTION_TAGS if k in d}


def add_user_description(path: Path, text: str, *tags: str) -> None:
    need_exiftool()
    args = [f"-{t}={text}" for t in tags or ("XMP-dc:Description", "EXIF:ImageDescription")]
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", "-codedcharacterset=utf8", *args, str(path)],
                   check=True)


@pytest.mark.parametrize("ext", [".jpg", ".tif", ".png", ".webp"])
def test_caption_storages_per_format(tmp_path: Path, ext: str) -> None:
    photo = make_photo(tmp_path / f"caption{ext}")
    before, raw, mtime = frames(photo), photo.read_bytes(), photo.stat().st_mtime_ns
    exif_ok = ext in (".jpg", ".tif")

    result = write_keywords(photo, KW, [], caption=CAPTION)

    assert (result.changed, result.caption_status, result.added) == (True, "written", KW)
    assert frames(photo) == before and photo.stat().st_mtime_ns == mtime
    if ext == ".jpg":
        assert scan_data(photo.read_bytes()) == scan_data(raw)
    assert read_caption(photo) == CAPTION and read_keywords(photo) == set(KW)
    want = {"XMP-dc:Description": CAPTION, **({"IFD0:ImageDescription": CAPTION} if exif_ok else {})}
    assert descriptions(photo) == want
    packet = subprocess.run([EXIFTOOL, "-b", "-XMP", str(photo)], capture_output=True, check=True).stdout
    assert re.search(rb'<dc:description>\s*<rdf:Alt>\s*<rdf:li xml:lang="x-default">', packet)

    data = photo.read_bytes()
    again = write_keywords(photo, KW, KW, caption=CAPTION, previous_caption=CAPTION)
    assert (again.changed, again.caption_status) == (False, "unchanged") and photo.read_bytes() == data

    gone = remove_keywords(photo, KW, previous_caption=CAPTION)
    assert (gone.changed, gone.caption_status, gone.removed) == (True, "removed", KW)
    assert descriptions(photo) == {} and read_caption(photo) is None and read_keywords(photo) == set()
    assert frames(photo) == before
    assert "Warning" not in exiftool(photo, "-validate", "-warning")


def test_caption_and_keywords_are_one_rewrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photo = make_photo(tmp_path / "once.jpg")
    writes: list[Path] = []
    real = metadata._atomic_write

    def counting(target: Path, *args: object, **kwargs: object) -> None:
        writes.append(target)
        real(target, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(metadata, "_atomic_write", counting)
    write_keywords(photo, KW, [], caption=CAPTION)
    assert writes == [photo]
    write_keywords(photo, KW, KW, caption="a cat", previous_caption=CAPTION)  # caption only: still one
    assert writes == [photo, photo] and read_caption(photo) == "a cat"


def test_new_caption_replaces_ramcli_previous_one(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "rerun.jpg")
    write_keywords(photo, ["dog"], [], caption=CAPTION)
    result = write_keywords(photo, ["dog"], ["dog"], caption="a brown dog", previous_caption=CAPTION)
    assert (result.changed, result.caption_status) == (True, "written")
    assert descriptions(photo) == {"XMP-dc:Description": "a brown dog", "IFD0:ImageDescription": "a brown dog"}


def test_unicode_caption_is_xmp_only_and_round_trips(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "unicode.jpg")
    write_keywords(photo, [], [], caption=CAPTION)
    text = "ein Hund vor dem Café, 修道院 — « quoted »"

    result = write_keywords(photo, [], [], caption=text, previous_caption=CAPTION)

    assert result.caption_status == "written"
    assert descriptions(photo) == {"XMP-dc:Description": text}  # our stale ASCII EXIF copy went with it
    assert read_caption(photo) == text
    remove_keywords(photo, [], previous_caption=text)
    assert descriptions(photo) == {}


def test_read_caption_of_a_missing_photo_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="file not found"):
        read_caption(tmp_path / "gone.heic")


def test_caption_text_is_cleaned(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "clean.jpg")
    write_keywords(photo, [], [], caption="  a dog\non a\tbench  cafe\u0301 ")
    assert read_caption(photo) == "a dog on a bench café"
    emptied = write_keywords(photo, [], [], caption="", previous_caption="a dog on a bench café")
    assert emptied.caption_status == "removed"
    assert read_caption(photo) is None


@pytest.mark.parametrize("tags", [("XMP-dc:Description", "EXIF:ImageDescription"), ("EXIF:ImageDescription",),
                                  ("IPTC:Caption-Abstract",), ("XMP-dc:Description",)])
def test_user_description_is_kept_and_survives_untag(tmp_path: Path, tags: tuple[str, ...]) -> None:
    photo = make_photo(tmp_path / "user.jpg")
    add_user_description(photo, "Grandma's garden, 1998", *tags)
    theirs = descriptions(photo)

    result = write_keywords(photo, KW, [], caption=CAPTION)

    assert (result.changed, result.caption_status) == (True, "kept")  # the keywords were still written
    assert descriptions(photo) == theirs and fields(photo)["dc"] == KW
    assert read_caption(photo) == "Grandma's garden, 1998"
    untag = remove_keywords(photo, KW, previous_caption=CAPTION)
    assert (untag.caption_status, descriptions(photo)) == ("kept", theirs)


def test_overwrite_description_replaces_the_user_one(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "overwrite.jpg")
    add_user_description(photo, "old words", "XMP-dc:Description", "EXIF:ImageDescription", "IPTC:Caption-Abstract")
    with pyexiv2.Image(str(photo)) as img:  # a translation beside x-default: replaced along with it
        img.modify_xmp({"Xmp.dc.description": {'lang="x-default"': "old words", 'lang="de-DE"': "alte Worte"}})

    result = write_keywords(photo, [], [], caption=CAPTION, overwrite_description=True)

    assert result.caption_status == "written"
    assert descriptions(photo) == dict.fromkeys(DESCRIPTION_TAGS, CAPTION)  # IPTC kept in step: it was there
    assert "XMP-dc:Description-de-DE" not in exiftool(photo)
    assert remove_keywords(photo, [], previous_caption=CAPTION).caption_status == "removed"
    assert descriptions(photo) == {}


def test_description_edited_after_ramcli_is_the_users(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "edited.jpg")
    write_keywords(photo, ["dog"], [], caption=CAPTION)
    add_user_description(photo, "Rex on the bench", "XMP-dc:Description")  # EXIF still holds ours

    rerun = write_keywords(photo, ["dog"], ["dog"], caption="a brown dog", previous_caption=CAPTION)
    assert (rerun.changed, rerun.caption_status) == (False, "kept")
    untag = remove_keywords(photo, ["dog"], previous_caption=CAPTION)
    assert untag.caption_status == "removed"  # only our untouched EXIF copy went
    assert descriptions(photo) == {"XMP-dc:Description": "Rex on the bench"}


def test_camera_placeholder_is_not_a_description(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "olympus.jpg")
    exif = piexif.load(photo.read_bytes())
    exif["0th"][piexif.ImageIFD.ImageDescription] = b"OLYMPUS DIGITAL CAMERA         "
    piexif.insert(piexif.dump(exif), str(photo))
    assert read_caption(photo) is None

    assert write_keywords(photo, [], [], caption=CAPTION).caption_status == "written"
    assert descriptions(photo) == {"XMP-dc:Description": CAPTION, "IFD0:ImageDescription": CAPTION}


def test_caption_none_leaves_descriptions_alone(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "none.jpg")
    write_keywords(photo, ["dog"], [], caption=CAPTION)
    result = write_keywords(photo, ["cat"], ["dog"], previous_caption=CAPTION)  # no caption this run
    assert (result.changed, result.caption_status) == (True, None)
    assert read_caption(photo) == CAPTION
    # untag: the file's own record says the caption is ramcli's, so it goes with the keywords
    assert remove_keywords(photo, ["cat"]).caption_status == "removed" and read_caption(photo) is None


@pytest.mark.parametrize("naming", ["ext", "stem"])
def test_caption_in_heic_sidecar(tmp_path: Path, naming: str) -> None:
    photo = make_photo(tmp_path / "phone.heic")
    raw = photo.read_bytes()
    opts = WriteOptions(sidecar_name=naming)

    result = write_keywords(photo, KW, [], opts, caption="un chien, café")

    side = sidecar_path(photo, opts)
    assert (result.sidecar, result.target, result.caption_status) == (True, side, "written")
    assert photo.read_bytes() == raw
    assert descriptions(side) == {"XMP-dc:Description": "un chien, café"} and fields(side)["dc"] == KW
    assert read_caption(photo, opts) == "un chien, café"
    again = write_keywords(photo, KW, KW, opts, caption="a dog", previous_caption="un chien, café")
    assert again.caption_status == "written" and descriptions(side) == {"XMP-dc:Description": "a dog"}
    gone = remove_keywords(photo, KW, opts, previous_caption="a dog")
    assert gone.caption_status == "removed" and not side.exists()  # nothing else was in it


def test_sidecar_caption_respects_the_photo_embedded_description(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "locked.jpg")
    add_user_description(photo, "Our wedding")
    photo.chmod(0o444)  # read-only: its sidecar is written instead, and apps reading it would hide the photo's

    result = write_keywords(photo, ["dog"], [], caption=CAPTION)

    assert (result.sidecar, result.caption_status) == (True, "kept")
    assert "XMP-dc:Description" not in descriptions(result.target) and fields(result.target)["dc"] == ["dog"]
    assert read_caption(photo) == "Our wedding"


def test_user_sidecar_description_is_kept(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "shared.heic")
    side = tmp_path / "shared.heic.xmp"
    side.write_text(SIDECAR_XMP.format(kw="user kw"), encoding="utf-8")
    add_user_description(side, "darktable note", "XMP-dc:Description")
    assert write_keywords(photo, ["dog"], [], caption=CAPTION).caption_status == "kept"
    assert descriptions(side) == {"XMP-dc:Description": "darktable note"}
    assert remove_keywords(photo, ["dog"], previous_caption=CAPTION).caption_status == "kept"
    assert side.exists() and descriptions(side) == {"XMP-dc:Description": "darktable note"}
