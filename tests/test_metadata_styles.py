"""Storage styles on small in-memory cases, and the fields declared once: what they cover is what a write writes.

test_metadata.py checks whole files as exiftool reads them; here each style's own rules (render, plan,
decode/encode) are checked without a file, and a real write per container is compared, key by key,
with the styles ``fields`` declares for that container.
"""

from __future__ import annotations

from pathlib import Path

import pyexiv2
import pytest
from test_metadata import make_photo

from ramcli.metadata import WriteOptions, exiv, sidecar_path, write_keywords
from ramcli.metadata import fields as md
from ramcli.metadata.fields import CaptionChange
from ramcli.metadata.styles import (
    XDEFAULT,
    DigikamTagsList,
    ExifAscii,
    ExifUtf16List,
    IptcRepeated,
    IptcText,
    XmpBag,
    XmpHierarchy,
    XmpLangAlt,
    XmpSeq,
)

EVERY = md.XMP
ROOT = "ramcli"


def plan(style, old: list[str], ours: list[str], stale: list[str] = (), root: str | None = ROOT,
         ancestry: dict | None = None) -> list[str] | None:
    return style.plan(old, list(ours), list(stale), root, ancestry or {})


# --- keyword lists --------------------------------------------------------------------------------------


def test_xmp_bag_keeps_the_users_entries_and_their_order() -> None:
    bag = XmpBag("Xmp.dc.subject", where=EVERY)
    assert bag.render("dog", ROOT, {"dog": ("animal",)}) == "dog"  # plain: no root, no parents
    assert plan(bag, ["sunset", "Dog", "cat"], ["dog", "café"], ["cat"]) == ["sunset", "Dog", "café"]
    assert plan(bag, ["sunset", "dog"], ["dog"]) is None  # nothing to change
    assert plan(bag, ["Dog"], [], ["dog"]) is None  # removal is exact: the user's "Dog" stays
    assert plan(bag, ["cafe\u0301"], [], ["café"]) == []  # compared in NFC
    assert bag.decode(["a", "b"]) == ["a", "b"] and bag.decode("a") == ["a"] and bag.decode(None) == []
    assert bag.encode(["a"]) == ["a"] and bag.encode([]) is None


def test_xmp_arrays_are_fixed_to_their_schema() -> None:
    packet = "<dc:subject>\n <rdf:Seq><rdf:li>a</rdf:li></rdf:Seq>\n</dc:subject><x:y><rdf:Seq/></x:y>"
    assert XmpBag("Xmp.dc.subject", where=EVERY).fix_packet(packet) == packet.replace(
        "<rdf:Seq><rdf:li>a</rdf:li></rdf:Seq>", "<rdf:Bag><rdf:li>a</rdf:li></rdf:Bag>")
    assert XmpSeq("Xmp.dc.subject", where=EVERY).fix_packet(packet) == packet
    assert DigikamTagsList("Xmp.digiKam.TagsList", where=EVERY).fix_packet(
        packet.replace("dc:subject", "digiKam:TagsList")) == packet.replace("dc:subject", "digiKam:TagsList")


def test_hierarchy_renders_paths_and_recognises_ours_under_old_parents() -> None:
    lr = XmpHierarchy("Xmp.lr.hierarchicalSubject", sep="|", where=EVERY)
    assert lr.render("red kite", ROOT, {"red kite": ("animal", "bird")}) == "ramcli|animal|bird|red kite"
    assert lr.render("red kite", ROOT) == "ramcli|red kite"
    assert lr.render("red kite", None, {"red kite": ("bird",)}) == "red kite"
    assert lr.render("a|b", ROOT) is None and lr.render("a|b", None) is None
    assert lr.render("kite", ROOT, {"kite": ("x|y",)}) is None  # a parent with the separator too
    old = ["Places|Paris", "ramcli|bird|red kite", "ramcli|dog"]
    assert plan(lr, old, ["red kite", "dog"], ancestry={"red kite": ("animal",)}) == [
        "Places|Paris", "ramcli|dog", "ramcli|animal|red kite"]
    assert plan(lr, old, [], ["dog", "red kite"]) == ["Places|Paris"]  # ours, whatever parents it had
    assert plan(lr, ["ramcli|Dog"], [], ["dog"]) is None  # removal is exact (NFC, not case)
    assert plan(lr, ["other|dog"], [], ["dog"], root="ramcli") is None  # another root is not ours
    assert not lr.holds_keywords


def test_if_present_styles_follow_only_where_the_photo_has_them() -> None:
    tags = DigikamTagsList("Xmp.digiKam.TagsList", where=EVERY, if_present=True)
    assert tags.sep == "/" and tags.render("dog", ROOT) == "ramcli/dog" and tags.render("a/b", ROOT) is None
    assert plan(tags, [], ["dog"]) is None
    assert plan(tags, ["People/Ann"], ["dog"]) == ["People/Ann", "ramcli/dog"]
    ms = XmpBag("Xmp.MicrosoftPhoto.LastKeywordXMP", where=EVERY, if_present=True)
    assert plan(ms, [], ["dog"]) is None and plan(ms, ["x"], ["dog"]) == ["x", "dog"]


def test_iptc_keywords_leave_out_what_does_not_fit() -> None:
    iptc = IptcRepeated("Iptc.Application2.Keywords", max_bytes=64, where=md.IPTC)
    assert iptc.render("k" * 64, ROOT) == "k" * 64 and iptc.render("é" * 33, ROOT) is None  # bytes, not chars
    assert plan(iptc, ["x"], ["k" * 65, "dog"]) == ["x", "dog"]
    assert iptc.encode([]) is None and iptc.decode("one") == ["one"]


def test_xp_keywords_are_one_separated_text() -> None:
    xp = ExifUtf16List("Exif.Image.XPKeywords", where=md.EXIF)
    assert xp.decode("a; b;;c\x00") == ["a", "b", "c"] and xp.decode(None) == []
    assert xp.encode(["a", "b"]) == "a;b\x00" and xp.encode([]) is None
    assert plan(xp, ["a"], ["x;y", "dog"]) == ["a", "dog"]


# --- the caption ----------------------------------------------------------------------------------------


def test_lang_alt_reads_x_default_first_and_writes_it() -> None:
    desc = XmpLangAlt("Xmp.dc.description", where=EVERY)
    assert desc.decode({'lang="de-DE"': "Hund", XDEFAULT: "dog"}) == ["dog", "Hund"]
    assert desc.decode({'lang="de-DE"': "Hund"}) == ["Hund"] and desc.decode(None) == []
    assert desc.encode(["a dog"]) == {XDEFAULT: "a dog"} and desc.encode([]) is None
    assert desc.plan([], "a dog", None, False) == ["a dog"]
    assert desc.plan(["a dog"], "a dog", None, False) is None


def test_exif_ascii_holds_ascii_only_and_drops_our_stale_text() -> None:
    exif = ExifAscii("Exif.Image.ImageDescription", where=md.EXIF)
    assert exif.entry("a dog") == "a dog" and exif.entry("ein Hund auf Grün") is None
    assert exif.plan(["a dog"], "ein Hund auf Grün", "a dog", False) == []  # ours, cannot hold the new one
    assert exif.plan(["theirs"], "ein Hund auf Grün", "a dog", False) is None
    assert exif.plan(["theirs"], "ein Hund auf Grün", "a dog", True) == []  # overwriting
    assert exif.decode("Gr\xc3\xbcn\x00\x00") == ["Grün"] and exif.decode("caf\xe9") == ["café"]
    assert exif.decode(None) == [] and exif.decode("\x00") == []


def test_iptc_caption_only_over_a_description_already_there() -> None:
    cap = IptcText("Iptc.Application2.Caption", max_bytes=2000, where=md.IPTC, if_present=True)
    assert cap.plan([], "a dog", None, False) is None
    assert cap.plan(["OLYMPUS DIGITAL CAMERA"], "a dog", None, False) is None  # a placeholder is no one's
    assert cap.plan(["old"], "a dog", None, True) == ["a dog"]
    assert cap.entry("x" * 2001) is None and cap.encode(["a"]) == "a" and cap.encode([]) is None


def test_caption_field_respects_the_users_description() -> None:
    values = {s: [] for s in md.caption.styles_for("jpeg")}
    desc, exif, iptc = md.caption.styles
    write = CaptionChange("a dog", None, False)
    assert md.caption.plan(values, "jpeg", write, []) == ({desc: ["a dog"], exif: ["a dog"]}, "written")
    assert md.caption.plan({**values, exif: ["my photo"]}, "jpeg", write, []) == ({}, "kept")
    assert md.caption.plan(values, "jpeg", write, [["legacy IPTC text"]]) == ({}, "kept")
    assert md.caption.plan({**values, exif: ["SONY DSC"]}, "jpeg", write, [])[1] == "written"
    mine = {desc: ["a dog"], exif: ["a dog"], iptc: ["edited by the user"]}
    assert md.caption.plan(mine, "jpeg", CaptionChange(None, "a dog", False), []) == (
        {desc: [], exif: []}, "removed")
    assert md.caption.plan({desc: ["a dog"]}, "webp", write, [])[1] == "unchanged"


def test_exiv_changes_declare_utf8_and_set_sidecar_copies() -> None:
    dc, lr = md.keywords.styles[:2]
    desc = md.caption.styles[0]
    iptc = md.keywords.styles_for("jpeg")[4]
    embedded = exiv.changes({dc: ["dog"], iptc: ["dog"]}, "jpeg")
    assert list(embedded["iptc"]) == [exiv.CHARSET, iptc.key] and embedded["xmp"] == {dc.key: ["dog"]}
    assert exiv.changes({iptc: []}, "jpeg")["iptc"] == {iptc.key: None}  # only deleting: no declaration
    side = exiv.changes({dc: ["dog"], lr: ["ramcli|dog"], desc: ["a dog"]}, "sidecar")
    assert side["iptc"] == {"Iptc.Application2.Keywords": ["dog"], "Iptc.Application2.Caption": "a dog"}
    assert side["exif"] == {"Exif.Image.ImageDescription": "a dog"}


# --- each field declared once ---------------------------------------------------------------------------


def test_each_key_belongs_to_one_style_of_one_field() -> None:
    keys = [s.key for f in md.FIELDS for s in f.styles]
    assert len(keys) == len(set(keys))
    assert (md.keywords, md.caption) == md.FIELDS
    for kind in ("jpeg", "tiff", "png", "webp", "sidecar"):
        assert md.keywords.styles_for(kind) and md.caption.styles_for(kind)


def _everything(path: Path, kind: str) -> dict[str, object]:
    """Every property; a sidecar's XMP only (exiv2 shows IPTC/EXIF copies of some XMP there)."""
    with pyexiv2.Image(str(path)) as img:
        if kind == "sidecar":
            return img.read_xmp()
        return {**img.read_xmp(), **img.read_iptc(), **img.read_exif()}


# Where data lies, not data: EXIF offsets exiv2 recomputes, and TIFF's tags that carry the XMP and IPTC blocks.
_LAYOUT = {"Exif.Image.ExifTag", "Exif.Image.GPSTag", "Exif.Thumbnail.JPEGInterchangeFormat",
           "Exif.Image.StripOffsets", "Exif.Image.XMLPacket", "Exif.Image.IPTCNAA"}


@pytest.mark.parametrize("name", ["p.jpg", "p.tif", "p.png", "p.webp", "side.jpg"])
def test_fields_cover_exactly_what_a_write_writes(tmp_path: Path, name: str) -> None:
    """Every declared style of the container is written, and nothing else changes (but IPTC's charset)."""
    photo = make_photo(tmp_path / name)
    opts = WriteOptions(sidecar=name.startswith("side"))
    target = sidecar_path(photo, opts) if opts.sidecar else photo
    kind = "sidecar" if opts.sidecar else {"jpg": "jpeg", "tif": "tiff"}.get(name[2:], name[2:])
    present = {"Xmp.digiKam.TagsList": ["People/Ann"], "Xmp.MicrosoftPhoto.LastKeywordXMP": ["old"]}
    if opts.sidecar:  # a sidecar another app started, using the "if present" fields
        img = pyexiv2.ImageData(b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
                                b'<x:xmpmeta xmlns:x="adobe:ns:meta/">\n</x:xmpmeta>\n<?xpacket end="w"?>\n')
        img.modify_xmp(present)
        target.write_bytes(img.get_bytes())
        img.close()
    else:
        with pyexiv2.Image(str(photo)) as img:
            img.modify_xmp(present)
            if kind != "webp":
                img.modify_iptc({exiv.CHARSET: exiv.UTF8, "Iptc.Application2.Caption": "my old caption"})
    before = _everything(target, kind)
    result = write_keywords(photo, ["dog"], [], opts, caption="a dog", overwrite_description=True)
    assert result.changed and result.caption_status == "written"
    after = _everything(target, kind)
    changed = {k for k in {*before, *after} if before.get(k) != after.get(k)} - _LAYOUT
    declared = {s.key for f in md.FIELDS for s in f.styles_for(kind)}
    # ramcli's own record (metadata/provenance.py): its marker, the date, what it wrote; in a sidecar, whose
    record = {"Xmp.ramcli.agent", "Xmp.ramcli.date", "Xmp.ramcli.keywords", "Xmp.ramcli.caption"}
    assert changed == declared | record | ({"Xmp.ramcli.photo"} if kind == "sidecar" else set())
