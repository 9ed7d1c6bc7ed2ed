"""Another app's XMP sidecar keeps every byte of its data: only ramcli's keyword properties change.

Each sidecar below is written by hand from pieces, so the test knows exactly which bytes are the
managed properties (``SUBJECT``) and which are the other app's: the result must be the other app's
bytes verbatim with one new rdf:Description (ramcli's properties) before ``</rdf:RDF>``. Real exiv2
reads every result; real exiftool too, where it is installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pyexiv2
import pytest

from conftest import make_photo
from ramcli import metadata
from ramcli.metadata import Intent, WriteOptions, undo, xmptext
from ramcli.metadata.sidecar import EMPTY_PACKET

EXIFTOOL = shutil.which("exiftool")
STEM = WriteOptions(sidecar=True, sidecar_name="stem")
OURS = ["dog", "beach"]

# --- Lightroom: develop settings as crs: attributes, a tone curve, a rating, the user's keyword ---------
LR_HEAD = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="Adobe XMP Core 7.0-c000 1.000000, 0000/00/00-00:00:00        ">\n'
    ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
    '  <rdf:Description rdf:about=""\n'
    '    xmlns:xmp="http://ns.adobe.com/xap/1.0/"\n'
    '    xmlns:tiff="http://ns.adobe.com/tiff/1.0/"\n'
    '    xmlns:crs="http://ns.adobe.com/camera-raw-settings/1.0/"\n'
    '    xmlns:dc="http://purl.org/dc/elements/1.1/"\n'
    '   xmp:Rating="4"\n'
    '   xmp:ModifyDate="2023-05-01T10:11:12+02:00"\n'
    '   tiff:Orientation="1"\n'
    '   crs:Version="15.3"\n'
    '   crs:ProcessVersion="11.0"\n'
    '   crs:WhiteBalance="As Shot"\n'
    '   crs:Exposure2012="+0.35"\n'
    '   crs:Contrast2012="+12"\n'
    '   crs:Highlights2012="-45"\n'
    '   crs:Shadows2012="+30"\n'
    '   crs:Whites2012="+5"\n'
    '   crs:Blacks2012="-7"\n'
    '   crs:Clarity2012="+8"\n'
    '   crs:Vibrance="+10"\n'
    '   crs:LensProfileEnable="1"\n'
    '   crs:ToneCurveName2012="Linear"\n'
    '   crs:HasSettings="True"\n'
    '   crs:HasCrop="False"\n'
    '   crs:AlreadyApplied="False">\n'
    '   <crs:ToneCurvePV2012>\n'
    '    <rdf:Seq>\n'
    '     <rdf:li>0, 0</rdf:li>\n'
    '     <rdf:li>64, 58</rdf:li>\n'
    '     <rdf:li>192, 200</rdf:li>\n'
    '     <rdf:li>255, 255</rdf:li>\n'
    '    </rdf:Seq>\n'
    '   </crs:ToneCurvePV2012>').encode()
LR_SUBJECT = (
    b'\n   <dc:subject>\n'
    b'    <rdf:Bag>\n'
    b'     <rdf:li>Family</rdf:li>\n'
    b'    </rdf:Bag>\n'
    b'   </dc:subject>')
LR_REST = (
    b'\n   <crs:ToneCurvePV2012Red>\n'
    b'    <rdf:Seq>\n'
    b'     <rdf:li>0, 0</rdf:li>\n'
    b'     <rdf:li>255, 255</rdf:li>\n'
    b'    </rdf:Seq>\n'
    b'   </crs:ToneCurvePV2012Red>\n'
    b'  </rdf:Description>')
TAIL = (b"\n </rdf:RDF>\n</x:xmpmeta>\n" + (b" " * 99 + b"\n") * 20 + b'<?xpacket end="w"?>')

# --- darktable: no xpacket, an XML declaration, history as rdf:li with attributes -------------------
DT_HEAD = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">\n'
    b' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
    b'  <rdf:Description rdf:about=""\n'
    b'    xmlns:xmp="http://ns.adobe.com/xap/1.0/"\n'
    b'    xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"\n'
    b'    xmlns:darktable="http://darktable.sf.net/"\n'
    b'    xmlns:dc="http://purl.org/dc/elements/1.1/"\n'
    b'   xmp:Rating="2"\n'
    b'   xmpMM:DerivedFrom="IMG_0002.CR2"\n'
    b'   darktable:import_timestamp="63818000000000000"\n'
    b'   darktable:change_timestamp="63818000100000000"\n'
    b'   darktable:xmp_version="5"\n'
    b'   darktable:raw_params="0"\n'
    b'   darktable:auto_presets_applied="1"\n'
    b'   darktable:history_end="2"\n'
    b'   darktable:iop_order_version="4">')
DT_SUBJECT = (
    b'\n   <dc:subject>\n'
    b'    <rdf:Seq>\n'
    b'     <rdf:li>holiday</rdf:li>\n'
    b'    </rdf:Seq>\n'
    b'   </dc:subject>')
DT_REST = (
    b'\n   <darktable:masks_history>\n'
    b'    <rdf:Seq/>\n'
    b'   </darktable:masks_history>\n'
    b'   <darktable:history>\n'
    b'    <rdf:Seq>\n'
    b'     <rdf:li\n'
    b'      darktable:num="0"\n'
    b'      darktable:operation="rawprepare"\n'
    b'      darktable:enabled="1"\n'
    b'      darktable:modversion="2"\n'
    b'      darktable:params="00000000000000000000000000000000ff3f0000ff3f0000"\n'
    b'      darktable:multi_name=""\n'
    b'      darktable:multi_priority="0"\n'
    b'      darktable:blendop_version="13"\n'
    b'      darktable:blendop_params="gz11eJxjYIAACQYYOOHEgAYY0QUYGAAYkwFm"/>\n'
    b'     <rdf:li\n'
    b'      darktable:num="1"\n'
    b'      darktable:operation="exposure"\n'
    b'      darktable:enabled="1"\n'
    b'      darktable:modversion="6"\n'
    b'      darktable:params="0000000000000000000080b90000004000"\n'
    b'      darktable:multi_name=""\n'
    b'      darktable:multi_priority="0"\n'
    b'      darktable:blendop_version="13"\n'
    b'      darktable:blendop_params="gz11eJxjYIAACQYYOOHEgAYY0QUYGAAYkwFm"/>\n'
    b'    </rdf:Seq>\n'
    b'   </darktable:history>\n'
    b'  </rdf:Description>')
DT_TAIL = b"\n </rdf:RDF>\n</x:xmpmeta>\n"

# --- no keywords at all: a freshly imported RAW's develop settings, one empty-element Description ----
BARE = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="Adobe XMP Core 5.6-c140 79.160451, 2017/05/06-01:08:21        ">\n'
    b' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
    b'  <rdf:Description rdf:about="uuid:5fd0c1d4-0001-11ee-9b8e-aa21c3e7d412"\n'
    b'    xmlns:crs="http://ns.adobe.com/camera-raw-settings/1.0/"\n'
    b'    xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"\n'
    b'   photoshop:DateCreated="2023-05-01T10:11:12"\n'
    b"   crs:Temperature='5200'\n"  # single quotes: any valid attribute form stays as it was
    b'   crs:Tint="+6"\n'
    b'   crs:HasSettings="True"/>')
BARE_TAIL = b"\n </rdf:RDF>\n</x:xmpmeta>\n"


def exiftool(path: Path) -> dict[str, object]:
    """Every XMP tag exiftool reads from ``path``, by group and name."""
    out = subprocess.run([EXIFTOOL, "-j", "-G1", "-struct", "-XMP:all", str(path)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)[0]


def as_list(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [] if value is None else [str(value)]


def read_xmp(data: bytes) -> dict[str, object]:
    img = pyexiv2.ImageData(data)
    try:
        return img.read_xmp()
    finally:
        img.close()


def inserted(result: bytes, before: bytes, after: bytes) -> bytes:
    """What the splice added: ``result`` is ``before`` + this + ``after``, else the test fails."""
    assert result.startswith(before), "the other app's bytes before the insertion changed"
    assert result.endswith(after), "the other app's bytes after the insertion changed"
    middle = result[len(before):len(result) - len(after)]
    assert middle.startswith(b"\n  <rdf:Description rdf:about=") and middle.endswith(b"</rdf:Description>")
    assert middle.count(b"<rdf:Description") == 1
    return middle


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    """A camera RAW (any bytes: RAW always gets a sidecar)."""
    p = tmp_path / "IMG_0001.cr2"
    p.write_bytes(b"II*\x00\x10\x00\x00\x00CR\x02\x00" + bytes(range(256)) * 8)
    return p


@pytest.mark.parametrize("photo_name", ["IMG_0001.cr2", "IMG_0001.jpg"])
def test_lightroom_sidecar_keeps_every_other_byte(tmp_path: Path, photo_name: str) -> None:
    photo = tmp_path / photo_name
    if photo.suffix == ".jpg":
        make_photo(photo, (64, 48), seed=1, quality=90)
    else:
        photo.write_bytes(b"II*\x00\x10\x00\x00\x00CR\x02\x00" + bytes(1000))
    side = tmp_path / "IMG_0001.xmp"
    original = LR_HEAD + LR_SUBJECT + LR_REST + TAIL
    side.write_bytes(original)
    intents: list[Intent] = []

    result = metadata.write_keywords(photo, OURS, [], STEM, journal=intents.append)
    assert result.changed and result.target == side
    tagged = side.read_bytes()
    added = inserted(tagged, LR_HEAD + LR_REST, TAIL)
    assert b"crs:" not in added and b"Family" in added and b"dog" in added
    assert re.search(rb"xmlns:dc=.*xmlns:lr=|xmlns:lr=.*xmlns:dc=", added, re.S)
    xmp = read_xmp(tagged)
    assert xmp["Xmp.dc.subject"] == ["Family", *OURS]
    assert xmp["Xmp.lr.hierarchicalSubject"] == ["ramcli|dog", "ramcli|beach"]
    assert xmp["Xmp.crs.Exposure2012"] == "+0.35" and xmp["Xmp.xmp.Rating"] == "4"
    assert xmp["Xmp.crs.ToneCurvePV2012"] == ["0, 0", "64, 58", "192, 200", "255, 255"]
    assert metadata.read_keywords(photo) >= {"Family", *OURS}

    # a second write splices into the spliced file: ramcli's Description is replaced, not duplicated
    metadata.write_keywords(photo, [*OURS, "sand"], OURS, STEM, journal=intents.append)
    again = inserted(side.read_bytes(), LR_HEAD + LR_REST, TAIL)
    assert b"sand" in again and read_xmp(side.read_bytes())["Xmp.dc.subject"] == ["Family", *OURS, "sand"]

    # untag: only the user's keyword is left, and the other app's bytes are still the same
    metadata.remove_keywords(photo, [*OURS, "sand"], STEM, journal=intents.append)
    untagged = side.read_bytes()
    left = inserted(untagged, LR_HEAD + LR_REST, TAIL)
    assert b"ramcli" not in left and b"lr:" not in left
    xmp = read_xmp(untagged)
    assert xmp["Xmp.dc.subject"] == ["Family"] and "Xmp.lr.hierarchicalSubject" not in xmp
    assert not [k for k in xmp if k.startswith("Xmp.ramcli.")]
    assert metadata.read_keywords(photo) == {"Family"}

    # exact undo: each write's recipe rebuilds the file before it from the file after it
    assert len(intents) == 3
    for intent in intents:
        recipe = undo.delta(intent.old, intent.new)
        assert recipe is not None and undo.patch(recipe, intent.new) == intent.old
    assert intents[0].old == original


@pytest.mark.skipif(EXIFTOOL is None, reason="exiftool not installed")
def test_exiftool_reads_everything_back(raw: Path) -> None:
    side = raw.with_suffix(".xmp")
    side.write_bytes(LR_HEAD + LR_SUBJECT + LR_REST + TAIL)
    before = exiftool(side)
    metadata.write_keywords(raw, OURS, [], STEM)
    got = exiftool(side)
    assert as_list(got["XMP-dc:Subject"]) == ["Family", *OURS]
    assert as_list(got["XMP-lr:HierarchicalSubject"]) == ["ramcli|dog", "ramcli|beach"]
    assert as_list(got["XMP-ramcli:Keywords"]) == OURS
    for key, value in before.items():  # every crs: setting, the rating, the tone curve, the toolkit
        if key not in ("SourceFile", "XMP-dc:Subject"):
            assert got[key] == value, key
    assert got["XMP-crs:Exposure2012"] == "+0.35" and got["XMP-xmp:Rating"] == 4
    assert got["XMP-x:XMPToolkit"].startswith("Adobe XMP Core 7.0")

    metadata.remove_keywords(raw, OURS, STEM)
    got = exiftool(side)
    assert as_list(got["XMP-dc:Subject"]) == ["Family"]
    assert not [k for k in got if k.startswith(("XMP-ramcli", "XMP-lr"))]
    assert {k: v for k, v in got.items() if k != "XMP-dc:Subject"} == \
        {k: v for k, v in before.items() if k != "XMP-dc:Subject"}


def test_darktable_history_is_kept(tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "IMG_0002.jpg", (64, 48), seed=2, quality=90)
    side = tmp_path / "IMG_0002.xmp"
    side.write_bytes(DT_HEAD + DT_SUBJECT + DT_REST + DT_TAIL)
    metadata.write_keywords(photo, OURS, [], STEM)
    tagged = side.read_bytes()
    added = inserted(tagged, DT_HEAD + DT_REST, DT_TAIL)
    assert b"darktable" not in added
    xmp = read_xmp(tagged)
    assert xmp["Xmp.dc.subject"] == ["holiday", *OURS]
    assert xmp["Xmp.xmpMM.DerivedFrom"] == "IMG_0002.CR2"
    if EXIFTOOL is not None:
        got = exiftool(side)
        assert as_list(got["XMP-dc:Subject"]) == ["holiday", *OURS]
        history = got["XMP-darktable:History"]
        assert [h["Operation"] for h in history] == ["rawprepare", "exposure"]
    metadata.remove_keywords(photo, OURS, STEM)
    assert read_xmp(side.read_bytes())["Xmp.dc.subject"] == ["holiday"]
    inserted(side.read_bytes(), DT_HEAD + DT_REST, DT_TAIL)


def test_sidecar_without_keywords_gets_them_and_gives_them_back(raw: Path) -> None:
    side = raw.with_suffix(".xmp")
    original = BARE + BARE_TAIL
    side.write_bytes(original)
    metadata.write_keywords(raw, OURS, [], STEM)
    tagged = side.read_bytes()
    added = inserted(tagged, BARE, BARE_TAIL)
    # the new Description is about the same resource as the original's (XMP requires one rdf:about)
    assert added.startswith(b'\n  <rdf:Description rdf:about="uuid:5fd0c1d4-0001-11ee-9b8e-aa21c3e7d412"')
    xmp = read_xmp(tagged)
    assert xmp["Xmp.dc.subject"] == OURS and xmp["Xmp.crs.Temperature"] == "5200"
    if EXIFTOOL is not None:
        got = exiftool(side)
        assert as_list(got["XMP-dc:Subject"]) == OURS and got["XMP-crs:ColorTemperature"] == 5200
    # untag: nothing of ours left; the develop settings keep the sidecar, exactly as it was
    metadata.remove_keywords(raw, OURS, STEM)
    assert side.read_bytes() == original


def test_ramcli_properties_inside_another_description_are_cut_out() -> None:
    """A sidecar exiv2 wrote whole (ramcli before this module, or another exiv2 tool): ramcli's attribute
    and element properties sit in the one Description among others; they are cut from there."""
    with_ours = metadata_rewrite(BARE + BARE_TAIL, {"Xmp.dc.subject": ["a"], "Xmp.ramcli.agent": "ramcli 0.1",
                                                   "Xmp.ramcli.keywords": ["a"]})
    assert b'ramcli:agent="ramcli 0.1"' in with_ours  # attribute form, among crs: attributes
    rewritten = metadata_rewrite(with_ours, {"Xmp.dc.subject": ["a", "b"], "Xmp.ramcli.agent": "ramcli 0.2",
                                             "Xmp.ramcli.keywords": ["a", "b"]})
    spliced = xmptext.xmp_others_kept(with_ours, rewritten, xmptext.managed())
    assert spliced != rewritten
    head, _, _ = with_ours.partition(b"\n </rdf:RDF>")
    kept = re.sub(rb'\s+ramcli:agent="[^"]*"', b"", head)  # the test's own view of the spans cut
    kept = re.sub(rb"\s+<(dc:subject|ramcli:keywords)>.*?</\1>", b"", kept, flags=re.S)
    assert spliced.startswith(kept + b"\n  <rdf:Description")
    xmp = read_xmp(spliced)
    assert xmp["Xmp.dc.subject"] == ["a", "b"] and xmp["Xmp.ramcli.agent"] == "ramcli 0.2"
    assert xmp["Xmp.crs.Temperature"] == "5200"
    assert xmptext.sidecar_others_kept(with_ours, rewritten) == spliced


def metadata_rewrite(data: bytes, changes: dict[str, object]) -> bytes:
    """exiv2's rewrite of an XMP packet, as ``exiv.rewrite`` gets it."""
    img = pyexiv2.ImageData(data)
    try:
        img.modify_xmp(changes)
        return img.get_bytes()
    finally:
        img.close()


@pytest.mark.parametrize("original", [
    b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF",  # not well-formed
    b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>",  # no rdf:RDF
    b'<!DOCTYPE x [<!ENTITY e "v">]><x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/></x:xmpmeta>',  # a DOCTYPE
    (BARE + BARE_TAIL).replace(b"<rdf:Description", b"<rdf:Bag", 1).replace(b'True"/>', b'True"></rdf:Bag>'),
    (BARE + BARE_TAIL).decode().encode("utf-16"),  # not UTF-8
    EMPTY_PACKET,  # no rdf:RDF either: a new sidecar is exiv2's
])
def test_unsure_falls_back_to_exiv2(original: bytes) -> None:
    rewritten = metadata_rewrite(EMPTY_PACKET, {"Xmp.dc.subject": ["a"]})
    assert xmptext.xmp_others_kept(original, rewritten, xmptext.managed()) is rewritten


def test_namespace_table_matches_exiv2() -> None:
    """The URIs ``managed`` uses are the ones exiv2 writes for each style's prefix."""
    keys = {k.rstrip(".") for k in xmptext.managed_keys()}
    for key in keys:
        value: object = "x" if key.startswith("Xmp.ramcli") else ["x"]
        name = key if key.count(".") == 2 else key + ".agent"
        prefix = name.split(".")[1]
        packet = metadata_rewrite(EMPTY_PACKET, {name: value})
        declared = re.search(rf'xmlns:{prefix}="([^"]*)"'.encode(), packet)
        assert declared is not None and declared.group(1).decode() == xmptext.URIS[prefix], key


def test_new_sidecar_is_exiv2s_own(raw: Path) -> None:
    """No sidecar before: nothing to keep, the file is exiv2's packet as before."""
    metadata.write_keywords(raw, OURS, [], STEM)
    data = raw.with_suffix(".xmp").read_bytes()
    assert data.startswith(b"<?xpacket") and b"XMP Core 4.4.0-Exiv2" in data
    assert data.count(b"<rdf:Description") == 1
    metadata.remove_keywords(raw, OURS, STEM)
    assert not raw.with_suffix(".xmp").exists()


@pytest.mark.skipif(EXIFTOOL is None, reason="exiftool not installed")
def test_exiftool_sidecar_one_description_per_namespace(raw: Path) -> None:
    """exiftool writes a Description per namespace, and MicrosoftPhoto's URI without its final slash:
    Descriptions holding only ramcli's properties go whole, the others stay, the URI keeps its form."""
    side = raw.with_suffix(".xmp")
    subprocess.run([EXIFTOOL, "-q", "-XMP-microsoft:LastKeywordXMP=family", "-XMP-dc:Subject=family",
                    "-XMP-digiKam:TagsList=People/family", "-XMP-xmp:Rating=3", "-XMP-dc:Title=Summer",
                    "-o", str(side), str(raw)], check=True)
    original = side.read_bytes()
    metadata.write_keywords(raw, OURS, [], STEM)
    tagged = side.read_bytes()
    # MicrosoftPhoto's and digiKam's Descriptions go, dc:title keeps its own, ours is added
    assert tagged.count(b"<rdf:Description") == original.count(b"<rdf:Description") - 2 + 1
    assert b"xmlns:MicrosoftPhoto=\"http://ns.microsoft.com/photo/1.0\"" in tagged
    assert b"<dc:title>" in tagged and tagged.startswith(original[:original.index(b"<rdf:Description")])
    got = exiftool(side)
    assert as_list(got["XMP-microsoft:LastKeywordXMP"]) == ["family", *OURS]
    assert as_list(got["XMP-digiKam:TagsList"]) == ["People/family", "ramcli/dog", "ramcli/beach"]
    assert as_list(got["XMP-dc:Subject"]) == ["family", *OURS] and got["XMP-dc:Title"] == "Summer"
    assert got["XMP-xmp:Rating"] == 3 and got["XMP-x:XMPToolkit"].startswith("Image::ExifTool")
    metadata.remove_keywords(raw, OURS, STEM)
    xmp = read_xmp(side.read_bytes())
    assert xmp["Xmp.dc.subject"] == ["family"] and xmp["Xmp.MicrosoftPhoto.LastKeywordXMP"] == ["family"]
    assert xmp["Xmp.dc.title"] == {'lang="x-default"': "Summer"}
