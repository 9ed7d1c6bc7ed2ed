"""A hostile photo library: the kinds of files a real library holds, good and bad, for issue 15.

``build(root)`` writes one folder per *kind* under ``root`` and returns what each kind holds and what
ramcli must do with it. Every file is real (Pillow, piexif, pyexiv2 or raw bytes), tiny, and built the
way the program or accident that makes such files in the wild would make it: a camera's rotated JPEG,
a Windows copy with its keywords in XPKeywords, a half-copied file, a PNG with a flipped CRC bit, a
2009 Photoshop IPTC block in Latin-1, a phone's trailer after the JPEG's end, a hard link from a backup
tool, a name with a newline. ``tests/test_hostile.py`` runs the real CLI over it.

What each kind expects (``Kind.expect``):

* ``embed``: tagged, keywords written into the file itself;
* ``sidecar``: tagged, keywords in a new ``name.ext.xmp`` beside it, the file itself untouched;
* ``error``: one line naming the file, and the reason (``Kind.reason``); the file untouched;
* ``ignored``: never looked at (hidden files, a lone sidecar): no line, nothing touched.

Symlinks, FIFOs and broken model files are other modules' business and are left out.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
import unicodedata
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import piexif
from PIL import Image, ImageCms

from conftest import add_user_keywords, make_photo

Expect = Literal["embed", "sidecar", "error", "ignored"]
SIZE = (48, 32)  # tiny: the whole corpus is a few hundred KB
XMP_ID = b"http://ns.adobe.com/xap/1.0/\x00"


@dataclass(frozen=True)
class Kind:
    """One kind of file; ``build(folder)`` writes it into its own empty folder and returns its photos."""

    name: str
    build: Callable[[Path], list[Path]]
    expect: Expect
    reason: str = ""  # error kinds: what the line must say (a substring)
    root_bites: bool = True  # False: a permission that root ignores; the kind is left out for root


@dataclass
class Built:
    """A kind as built: its folder and the photos ramcli is expected to report on (or ignore)."""

    kind: Kind
    folder: Path
    photos: list[Path] = field(default_factory=list)


# --- bytes of the formats, by hand --------------------------------------------------------------------


def jpeg_bytes(seed: int = 0, size: tuple[int, int] = SIZE, mode: str = "RGB", **save: object) -> bytes:
    """A small photo-like JPEG made by Pillow (libjpeg)."""
    buf = io.BytesIO()
    _pixels(seed, size, mode).save(buf, "JPEG", **{"quality": 90, **save})
    return buf.getvalue()


def _pixels(seed: int, size: tuple[int, int] = SIZE, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(w, 1), yy * 255 // max(h, 1), (xx + yy) * 255 // max(w + h, 1)], -1)
    img = Image.fromarray(np.clip(base + rng.integers(-30, 30, base.shape), 0, 255).astype(np.uint8), "RGB")
    return img if mode == "RGB" else img.convert(mode)


def app_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def insert_after_soi(jpeg: bytes, *segments: bytes) -> bytes:
    """Segments right after SOI (before JFIF APP0 too: readers take APPn in any order)."""
    assert jpeg[:2] == b"\xff\xd8"
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


def xmp_app1(packet: bytes) -> bytes:
    return app_segment(0xE1, XMP_ID + packet)


def xmp_packet(body: str, *, namespaces: str = "") -> bytes:
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f'<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" {namespaces}>'
            f'{body}</rdf:Description></rdf:RDF></x:xmpmeta>\n<?xpacket end="w"?>').encode()


def iptc_app13(datasets: list[tuple[int, int, bytes]]) -> bytes:
    """A Photoshop APP13 with one IPTC-NAA resource (8BIM 0x0404), datasets as given (no charset added)."""
    iim = b"".join(b"\x1c" + bytes([rec, ds]) + len(v).to_bytes(2, "big") + v for rec, ds, v in datasets)
    resource = b"8BIM" + b"\x04\x04" + b"\x00\x00" + len(iim).to_bytes(4, "big") + iim + b"\x00" * (len(iim) & 1)
    return app_segment(0xED, b"Photoshop 3.0\x00" + resource)


def exif_with_bad_offsets() -> bytes:
    """An EXIF APP1 whose IFD0 is readable (Make, Model) but whose Exif-IFD pointer, a value offset and
    the next-IFD offset all point far past the segment: what a buggy phone editor leaves behind."""
    entries = []
    data_at = 8 + 2 + 4 * 12 + 4
    make = b"Maker\x00"
    model = b"Broken Cam Model\x00"
    entries.append(struct.pack(">HHII", 0x010F, 2, len(make), data_at))  # Make, valid offset
    entries.append(struct.pack(">HHII", 0x0110, 2, len(model), data_at + len(make)))  # Model, valid
    entries.append(struct.pack(">HHII", 0x0131, 2, 40, 0x00FFFF00))  # Software: offset past the end
    entries.append(struct.pack(">HHII", 0x8769, 4, 1, 0x7FFFFFF0))  # ExifIFD pointer: past the end
    tiff = b"MM\x00\x2a" + (8).to_bytes(4, "big") + (len(entries)).to_bytes(2, "big") + b"".join(entries)
    tiff += (0xFFFFFF00).to_bytes(4, "big")  # next IFD: past the end
    tiff += make + model
    return app_segment(0xE1, b"Exif\x00\x00" + tiff)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def png_bytes(img: Image.Image, **save: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **save)
    return buf.getvalue()


def png_chunks(data: bytes) -> list[tuple[int, bytes]]:
    """(offset, type) of each chunk."""
    out, i = [], 8
    while i + 8 <= len(data):
        size = int.from_bytes(data[i:i + 4], "big")
        out.append((i, data[i + 4:i + 8]))
        i += 12 + size
    return out


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A 1-bit PNG of width x height (400 MP: over twice Pillow's limit), all zero: ~50 KB on disk."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (width + 7) // 8)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


# --- the kinds ----------------------------------------------------------------------------------------


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _jpeg(name: str, seed: int, **save: object) -> Callable[[Path], list[Path]]:
    return lambda d: [_write(d / name, jpeg_bytes(seed, **save))]


def _plain(d: Path) -> list[Path]:
    return [make_photo(d / "plain.jpg", SIZE, seed=1, quality=90)]


def _garbage_after_eoi(d: Path) -> list[Path]:
    return [_write(d / "trailer.jpg", jpeg_bytes(2) + b"GARBAGE-AFTER-EOI\x00\xff\xd9" * 20)]


def _truncated(d: Path) -> list[Path]:
    data = jpeg_bytes(3, (160, 120), quality=95)
    return [_write(d / "half.jpg", data[:len(data) // 2])]


def _png_named_jpg(d: Path) -> list[Path]:
    return [_write(d / "really-a-png.jpg", png_bytes(_pixels(4)))]


def _jpeg_named_png(d: Path) -> list[Path]:
    return [_write(d / "really-a-jpeg.png", jpeg_bytes(5))]


def _png_bad_crc(d: Path) -> list[Path]:
    """One bit flipped in the IHDR's CRC (a bad copy): libpng and Pillow refuse the file."""
    data = bytearray(png_bytes(_pixels(6)))
    offset, kind = png_chunks(bytes(data))[0]
    assert kind == b"IHDR"
    data[offset + 8 + 13 + 3] ^= 0x01
    return [_write(d / "bad-crc.png", bytes(data))]


def _png_16bit(d: Path) -> list[Path]:
    arr = (np.arange(SIZE[0] * SIZE[1], dtype=np.uint16).reshape(SIZE[1], SIZE[0]) * 41) % 65535
    return [_write(d / "deep.png", png_bytes(Image.fromarray(arr.astype(np.uint16))))]


def _palette_png(d: Path) -> list[Path]:
    img = _pixels(7).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return [_write(d / "palette.png", png_bytes(img, transparency=0))]


def _la_png(d: Path) -> list[Path]:
    img = _pixels(8).convert("LA")
    return [_write(d / "gray-alpha.png", png_bytes(img))]


def _animated_gif(d: Path) -> list[Path]:
    frames = [_pixels(s).convert("P") for s in (9, 10, 11)]
    p = d / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return [p]


def _animated_webp(d: Path) -> list[Path]:
    frames = [_pixels(s) for s in (12, 13, 14)]
    p = d / "anim.webp"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
    return [p]


def _multipage_tiff(d: Path) -> list[Path]:
    pages = [_pixels(s) for s in (15, 16, 17)]
    p = d / "scan.tif"
    pages[0].save(p, save_all=True, append_images=pages[1:])
    return [p]


def _exif_rotated(d: Path) -> list[Path]:
    exif = piexif.dump({"0th": {piexif.ImageIFD.Orientation: 6, piexif.ImageIFD.Make: b"Canon"},
                        "Exif": {piexif.ExifIFD.DateTimeOriginal: b"2021:07:14 10:11:12"}})
    return [_write(d / "portrait.jpg", jpeg_bytes(18, exif=exif))]


def _corrupt_exif(d: Path) -> list[Path]:
    return [_write(d / "bad-exif.jpg", insert_after_soi(jpeg_bytes(19), exif_with_bad_offsets()))]


def _malformed_xmp(d: Path) -> list[Path]:
    broken = xmp_packet('<dc:subject><rdf:Bag><rdf:li>half written</rdf:li></rdf:Bag>'
                        '<dc:title><rdf:Alt><rdf:li xml:lang="x-default">unclosed')  # no closing tags
    return [_write(d / "bad-xmp.jpg", insert_after_soi(jpeg_bytes(20), xmp_app1(broken)))]


def _latin1_iptc(d: Path) -> list[Path]:
    """Keywords and a city in Latin-1 with no 1:90 charset: old Photoshop/Photo Mechanic files."""
    datasets = [(2, 0, b"\x00\x04"), (2, 25, "Café".encode("latin-1")), (2, 25, "Zürich".encode("latin-1")),
                (2, 90, "Genève".encode("latin-1"))]
    return [_write(d / "latin1-iptc.jpg", insert_after_soi(jpeg_bytes(21), iptc_app13(datasets)))]


def _custom_namespace_xmp(d: Path) -> list[Path]:
    """A cataloguing app's own namespace, and dc:subject as an ordered rdf:Seq (the schema says Bag)."""
    packet = xmp_packet('<dc:subject><rdf:Seq><rdf:li>zebra</rdf:li><rdf:li>aardvark</rdf:li></rdf:Seq>'
                        '</dc:subject><my:Project>Hostile Library</my:Project>'
                        '<my:Rating2>7</my:Rating2>', namespaces='xmlns:my="http://example.com/ns/my-catalog/1.0/"')
    return [_write(d / "custom-ns.jpg", insert_after_soi(jpeg_bytes(22), xmp_app1(packet)))]


def _two_xmp_packets(d: Path) -> list[Path]:
    first = xmp_packet('<dc:subject><rdf:Bag><rdf:li>first packet</rdf:li></rdf:Bag></dc:subject>')
    second = xmp_packet('<dc:rights><rdf:Alt><rdf:li xml:lang="x-default">second packet</rdf:li></rdf:Alt>'
                        '</dc:rights>')
    return [_write(d / "two-xmp.jpg", insert_after_soi(jpeg_bytes(23), xmp_app1(first), xmp_app1(second)))]


def _malformed_sidecar(d: Path) -> list[Path]:
    """A PNG (embedded into) beside a broken ``.png.xmp`` another app left: the sidecar is not ramcli's."""
    photo = _write(d / "with-sidecar.png", png_bytes(_pixels(24)))
    _write(d / "with-sidecar.png.xmp", b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>\n<x:xmpmeta '
                                        b'xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description dc:subject=')
    return [photo]


def _read_only_file(d: Path) -> list[Path]:
    p = _write(d / "locked.jpg", jpeg_bytes(25))
    p.chmod(0o444)
    return [p]


def _read_only_folder(d: Path) -> list[Path]:
    p = _write(d / "in-locked-folder.jpg", jpeg_bytes(26))
    d.chmod(0o555)
    return [p]


def _unreadable(d: Path) -> list[Path]:
    p = _write(d / "secret.jpg", jpeg_bytes(27))
    p.chmod(0o000)
    return [p]


def _nfd_name(d: Path) -> list[Path]:
    return [_write(d / unicodedata.normalize("NFD", "Café Zoë 北京.jpg"), jpeg_bytes(28))]


def _odd_names(d: Path) -> list[Path]:
    return [_write(d / name, jpeg_bytes(29 + i)) for i, name in enumerate(["my holiday photo.jpg", "-rf.jpg"])]


def _newline_name(d: Path) -> list[Path]:
    return [_write(d / "first line\nsecond line.jpg", jpeg_bytes(31))]


def _long_name(d: Path) -> list[Path]:
    name = "L" * 236 + ".jpg"
    assert len(name.encode()) == 240
    return [_write(d / name, jpeg_bytes(32))]


def _non_utf8_name(d: Path) -> list[Path]:
    name = os.fsdecode(b"latin1-\xe9t\xe9.jpg")  # a name written on an old Latin-1 system
    return [_write(d / name, jpeg_bytes(33))]


def _uppercase_ext(d: Path) -> list[Path]:
    return [_write(d / "IMG_0001.JPG", jpeg_bytes(34)), _write(d / "IMG_0002.JPEG", jpeg_bytes(35))]


def _hard_link(d: Path) -> list[Path]:
    a = _write(d / "original.jpg", jpeg_bytes(36))
    b = d / "second-name.jpg"
    os.link(a, b)
    return [a, b]


def _copies(d: Path) -> list[Path]:
    data = jpeg_bytes(37)
    return [_write(d / "2019" / "same.jpg", data), _write(d / "backup" / "same.jpg", data)]


def _tiny(d: Path) -> list[Path]:
    return [_write(d / "one-pixel.jpg", jpeg_bytes(38, (1, 1)))]


def _very_wide(d: Path) -> list[Path]:
    return [_write(d / "panorama.jpg", jpeg_bytes(39, (20000, 8), quality=50))]


def _bomb(d: Path) -> list[Path]:
    return [_write(d / "bomb.png", bomb_png())]


def _fake_heic(d: Path) -> list[Path]:
    return [_write(d / "not-really.heic", b"\x00\x00\x00\x18ftypjunk" + b"not an image at all" * 8)]


def _jpeg_named_avif(d: Path) -> list[Path]:
    return [_write(d / "really-a-jpeg.avif", jpeg_bytes(40))]


def _orphan_sidecar(d: Path) -> list[Path]:
    _write(d / "gone-photo.jpg.xmp", xmp_packet('<dc:subject><rdf:Bag><rdf:li>orphan</rdf:li></rdf:Bag>'
                                                '</dc:subject>'))
    return []


def _hidden(d: Path) -> list[Path]:
    return [_write(d / ".dotfile.jpg", jpeg_bytes(41))]


def _jpg_directory(d: Path) -> list[Path]:
    (d / "album.jpg").mkdir(parents=True)
    return [_write(d / "album.jpg" / "inside.jpg", jpeg_bytes(42))]


def _user_keywords(d: Path) -> list[Path]:
    p = _write(d / "lightroom.jpg", jpeg_bytes(43))
    add_user_keywords(p, ["grandma", "Summer 2019", "Ünïcode"])
    return [p]


def _user_keywords_png(d: Path) -> list[Path]:
    p = _write(d / "lightroom.png", png_bytes(_pixels(44)))
    add_user_keywords(p, ["grandpa"])
    return [p]


def _camera_jpeg(d: Path) -> list[Path]:
    """What a camera and an editor leave: EXIF with GPS and a thumbnail, an ICC profile, a COM comment."""
    thumb = jpeg_bytes(45, (16, 12))
    exif = piexif.dump({
        "0th": {piexif.ImageIFD.Make: b"Nikon", piexif.ImageIFD.Model: b"D750",
                piexif.ImageIFD.XPKeywords: "windows kw;family\x00".encode("utf-16-le"),
                piexif.ImageIFD.ImageDescription: b"At the lake"},
        "Exif": {piexif.ExifIFD.DateTimeOriginal: b"2018:08:09 10:11:12", piexif.ExifIFD.LensModel: b"50mm"},
        "GPS": {piexif.GPSIFD.GPSLatitudeRef: b"N", piexif.GPSIFD.GPSLatitude: ((48, 1), (51, 1), (2956, 100))},
        "1st": {piexif.ImageIFD.Compression: 6}, "thumbnail": thumb})
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = jpeg_bytes(46, exif=exif, icc_profile=icc)
    return [_write(d / "camera.jpg", insert_after_soi(data, app_segment(0xFE, b"a JPEG comment")))]


def _png_text(d: Path) -> list[Path]:
    """tEXt, zTXt and iTXt chunks and an ICC profile: what scanners and editors put in PNGs."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Author", "Ada")
    info.add_text("Comment", "compressed note " * 20, zip=True)
    info.add_itxt("Description", "Ünïcode description", lang="de", tkey="Beschreibung")
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return [_write(d / "texts.png", png_bytes(_pixels(47), pnginfo=info, icc_profile=icc))]


def _webp_with_exif(d: Path) -> list[Path]:
    exif = piexif.dump({"0th": {piexif.ImageIFD.Make: b"Pixel", piexif.ImageIFD.Artist: b"Me"}})
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    p = d / "phone.webp"
    p.parent.mkdir(parents=True, exist_ok=True)
    _pixels(48).save(p, "WEBP", quality=80, exif=exif, icc_profile=icc)
    return [p]


def _user_hierarchy(d: Path) -> list[Path]:
    """Lightroom's hierarchy, digiKam's TagsList and a description of the user's, already there."""
    packet = xmp_packet(
        '<dc:subject><rdf:Bag><rdf:li>Paris</rdf:li></rdf:Bag></dc:subject>'
        '<dc:description><rdf:Alt><rdf:li xml:lang="x-default">Our trip</rdf:li></rdf:Alt></dc:description>'
        '<lr:hierarchicalSubject><rdf:Bag><rdf:li>Places|France|Paris</rdf:li></rdf:Bag></lr:hierarchicalSubject>'
        '<digiKam:TagsList><rdf:Seq><rdf:li>Places/France/Paris</rdf:li></rdf:Seq></digiKam:TagsList>',
        namespaces='xmlns:lr="http://ns.adobe.com/lightroom/1.0/" xmlns:digiKam="http://www.digikam.org/ns/1.0/"')
    return [_write(d / "hierarchy.jpg", insert_after_soi(jpeg_bytes(49), xmp_app1(packet)))]


def _tiff(compression: str | None, name: str, seed: int) -> Callable[[Path], list[Path]]:
    def build(d: Path) -> list[Path]:
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        _pixels(seed).save(p, "TIFF", **({"compression": compression} if compression else {}))
        return [p]

    return build


def _webp(name: str, seed: int, **save: object) -> Callable[[Path], list[Path]]:
    def build(d: Path) -> list[Path]:
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        _pixels(seed).save(p, "WEBP", **save)
        return [p]

    return build


def _bmp(d: Path) -> list[Path]:
    p = d / "old.bmp"
    p.parent.mkdir(parents=True, exist_ok=True)
    _pixels(50).save(p, "BMP")
    return [p]


def _gif_named_jpg(d: Path) -> list[Path]:
    buf = io.BytesIO()
    _pixels(58).convert("P").save(buf, "GIF")
    return [_write(d / "really-a-gif.jpg", buf.getvalue())]


def _png_exif_chunk(d: Path) -> list[Path]:
    """EXIF in a PNG's eXIf chunk (big-endian, as piexif writes it): phones' screenshots, Pillow, exiftool."""
    exif = piexif.dump({"0th": {piexif.ImageIFD.Make: b"Phone", piexif.ImageIFD.Software: b"Screenshot 2.1"},
                        "Exif": {piexif.ExifIFD.DateTimeOriginal: b"2022:01:02 03:04:05"}})
    return [_write(d / "screenshot.png", png_bytes(_pixels(59), exif=exif))]


def _png_latin1_description(d: Path) -> list[Path]:
    """A tEXt "Description" in Latin-1 (the PNG spec's encoding for tEXt), and a second, French one (iTXt)."""
    chunks = png_chunk(b"tEXt", b"Description\x00Vacances \xe0 la plage, \xe9t\xe9 1998") + png_chunk(
        b"iTXt", b"Description\x00\x00\x00fr\x00Description\x00" + "Été à la plage".encode())
    data = png_bytes(_pixels(60))
    at = png_chunks(data)[1][0]  # right after IHDR
    return [_write(d / "scanned-slide.png", data[:at] + chunks + data[at:])]


def _big_tiff(d: Path) -> list[Path]:
    """19000 x 10000 = 190 MP, one bit a pixel, deflated: ~30 KB, over Pillow's limit but under twice it
    (where Pillow only warns)."""
    p = d / "huge-scan.tif"
    Image.new("1", (19000, 10000)).save(p, compression="tiff_adobe_deflate")
    return [p]


def _extended_xmp(d: Path) -> list[Path]:
    """A phone's portrait photo: a depth map in ExtendedXMP, split over APP1 segments past 64 KB."""
    gdepth = 'xmlns:GDepth="http://ns.google.com/photos/1.0/depthmap/"'
    ext = xmp_packet(f"<GDepth:Data>{'QUJD' * 20000}</GDepth:Data>", namespaces=gdepth)
    guid = hashlib.md5(ext).hexdigest().upper()
    main = xmp_packet(f"<xmpNote:HasExtendedXMP>{guid}</xmpNote:HasExtendedXMP><GDepth:Format>RangeInverse"
                      "</GDepth:Format>", namespaces=f'xmlns:xmpNote="http://ns.adobe.com/xmp/note/" {gdepth}')
    ext_id = b"http://ns.adobe.com/xmp/extension/\x00" + guid.encode() + len(ext).to_bytes(4, "big")
    parts = [app_segment(0xE1, ext_id + off.to_bytes(4, "big") + ext[off:off + 65000])
             for off in range(0, len(ext), 65000)]
    return [_write(d / "PXL_portrait.jpg", insert_after_soi(jpeg_bytes(61), xmp_app1(main), *parts))]


def _xmp_structures(d: Path) -> list[Path]:
    """XMP with structures and qualifiers: face regions (MWG), history, contact info, a title in three
    languages, an ordered creator list."""
    body = ('<dc:title><rdf:Alt><rdf:li xml:lang="x-default">Sunset</rdf:li><rdf:li xml:lang="de-DE">'
            'Sonnenuntergang</rdf:li><rdf:li xml:lang="fr">Coucher</rdf:li></rdf:Alt></dc:title>'
            '<dc:creator><rdf:Seq><rdf:li>Ada</rdf:li><rdf:li>Bob</rdf:li></rdf:Seq></dc:creator>'
            '<xmpMM:History><rdf:Seq><rdf:li rdf:parseType="Resource"><stEvt:action>saved</stEvt:action>'
            '<stEvt:when>2020-01-01T10:00:00+01:00</stEvt:when><stEvt:softwareAgent>Photoshop</stEvt:softwareAgent>'
            '</rdf:li></rdf:Seq></xmpMM:History>'
            '<Iptc4xmpCore:CreatorContactInfo rdf:parseType="Resource"><Iptc4xmpCore:CiAdrCity>Paris'
            '</Iptc4xmpCore:CiAdrCity></Iptc4xmpCore:CreatorContactInfo><xmp:Rating>4</xmp:Rating>'
            '<mwg-rs:Regions rdf:parseType="Resource"><mwg-rs:RegionList><rdf:Bag><rdf:li rdf:parseType="Resource">'
            '<mwg-rs:Name>Ada</mwg-rs:Name><mwg-rs:Type>Face</mwg-rs:Type><mwg-rs:Area stArea:x="0.5" stArea:y="0.5"'
            ' stArea:w="0.1" stArea:h="0.1" stArea:unit="normalized"/></rdf:li></rdf:Bag></mwg-rs:RegionList>'
            '</mwg-rs:Regions>')
    ns = ('xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/" xmlns:stEvt="http://ns.adobe.com/xap/1.0/sType/ResourceEvent#"'
          ' xmlns:Iptc4xmpCore="http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/" xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
          ' xmlns:mwg-rs="http://www.metadataworkinggroup.com/schemas/regions/"'
          ' xmlns:stArea="http://ns.adobe.com/xmp/sType/Area#"')
    return [_write(d / "faces.jpg", insert_after_soi(jpeg_bytes(62), xmp_app1(xmp_packet(body, namespaces=ns))))]


def _photoshop_irb(d: Path) -> list[Path]:
    """Photoshop's APP13 with more than IPTC: resolution info and a caption digest beside UTF-8 IPTC."""
    iim = b"".join(b"\x1c" + bytes([r, n]) + len(v).to_bytes(2, "big") + v for r, n, v in
                   [(1, 90, b"\x1b%G"), (2, 0, b"\x00\x04"), (2, 25, b"Hafen"), (2, 116, "© Ada".encode())])
    res = (b"8BIM\x03\xed\x00\x00" + (16).to_bytes(4, "big") + b"\x00\x48\x00\x00\x00\x01\x00\x01"
           b"\x00\x48\x00\x00\x00\x01\x00\x01")  # ResolutionInfo: 72 dpi
    iptc = b"8BIM\x04\x04\x00\x00" + len(iim).to_bytes(4, "big") + iim + b"\x00" * (len(iim) & 1)
    return [_write(d / "photoshop.jpg", insert_after_soi(jpeg_bytes(63), app_segment(0xED, b"Photoshop 3.0\x00" + res
                                                                                      + iptc)))]


def _gif_with_user_sidecar(d: Path) -> list[Path]:
    """digiKam already keeps this GIF's metadata in ``anim.gif.xmp``: ramcli adds to it, keeps the rest."""
    frames = [_pixels(s).convert("P") for s in (64, 65)]
    p = d / "party.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0)
    _write(d / "party.gif.xmp", xmp_packet(
        '<dc:subject><rdf:Bag><rdf:li>birthday</rdf:li></rdf:Bag></dc:subject><xmp:Rating>5</xmp:Rating>'
        '<digiKam:TagsList><rdf:Seq><rdf:li>Events/Birthday</rdf:li></rdf:Seq></digiKam:TagsList>',
        namespaces='xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:digiKam="http://www.digikam.org/ns/1.0/"'))
    return [p]


def _tiff_user_metadata(d: Path) -> list[Path]:
    """A scanner's TIFF with EXIF, GPS, an ICC profile and the user's keywords (as Lightroom writes them)."""
    import pyexiv2

    p = d / "scan-with-metadata.tif"
    p.parent.mkdir(parents=True, exist_ok=True)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    _pixels(66).save(p, "TIFF", icc_profile=icc, compression="tiff_deflate")
    with pyexiv2.Image(str(p)) as img:
        img.modify_exif({"Exif.Image.Make": "Epson", "Exif.Image.Artist": "Ada",
                         "Exif.GPSInfo.GPSLatitudeRef": "S", "Exif.GPSInfo.GPSLatitude": "33/1 51/1 0/1"})
    add_user_keywords(p, ["archive", "1987"])
    return [p]


def _text_named_jpg(d: Path) -> list[Path]:
    return [_write(d / "notes.jpg", b"Shopping list:\n- milk\n- film for the camera\n")]


def _empty(d: Path) -> list[Path]:
    return [_write(d / "empty.jpg", b"")]


KINDS: tuple[Kind, ...] = (
    Kind("plain-jpeg", _plain, "embed"),
    Kind("zero-byte-jpg", _empty, "error", "empty file"),
    Kind("text-named-jpg", _text_named_jpg, "error", "not an image"),
    Kind("truncated-jpeg", _truncated, "error", "truncated"),
    Kind("garbage-after-eoi", _garbage_after_eoi, "embed"),
    Kind("png-named-jpg", _png_named_jpg, "embed"),
    Kind("jpeg-named-png", _jpeg_named_png, "embed"),
    Kind("png-bad-crc", _png_bad_crc, "error", "not an image Pillow can read"),
    Kind("cmyk-jpeg", _jpeg("cmyk.jpg", 51, mode="CMYK"), "embed"),
    Kind("progressive-jpeg", _jpeg("progressive.jpg", 52, progressive=True), "embed"),
    Kind("grayscale-jpeg", _jpeg("gray.jpg", 53, mode="L"), "embed"),
    Kind("png-16bit", _png_16bit, "embed"),
    Kind("palette-png-transparency", _palette_png, "embed"),
    Kind("la-png", _la_png, "embed"),
    Kind("animated-gif", _animated_gif, "sidecar"),
    Kind("animated-webp", _animated_webp, "embed"),
    Kind("lossless-webp", _webp("lossless.webp", 54, lossless=True), "embed"),
    Kind("lossy-webp", _webp("lossy.webp", 55, quality=80), "embed"),
    Kind("multipage-tiff", _multipage_tiff, "embed"),
    Kind("lzw-tiff", _tiff("tiff_lzw", "lzw.tif", 56), "embed"),
    Kind("bmp", _bmp, "sidecar"),
    Kind("exif-rotated-jpeg", _exif_rotated, "embed"),
    Kind("corrupt-exif-jpeg", _corrupt_exif, "sidecar"),  # exiv2 cannot read its EXIF: never rewritten
    Kind("malformed-xmp-jpeg", _malformed_xmp, "sidecar"),
    Kind("latin1-iptc-jpeg", _latin1_iptc, "embed"),
    Kind("custom-namespace-xmp-jpeg", _custom_namespace_xmp, "embed"),
    Kind("two-xmp-packets-jpeg", _two_xmp_packets, "sidecar"),
    Kind("malformed-sidecar-beside-png", _malformed_sidecar, "embed"),
    Kind("read-only-file", _read_only_file, "sidecar"),
    Kind("read-only-folder", _read_only_folder, "error", "read-only"),  # ramcli honours mode bits, root too
    Kind("unreadable-file", _unreadable, "error", "ermission", root_bites=False),
    Kind("nfd-unicode-name", _nfd_name, "embed"),
    Kind("spaces-and-leading-dash", _odd_names, "embed"),
    Kind("newline-in-name", _newline_name, "embed"),
    Kind("240-byte-name", _long_name, "embed"),
    Kind("non-utf8-name", _non_utf8_name, "error", "not valid UTF-8"),
    Kind("uppercase-extensions", _uppercase_ext, "embed"),
    Kind("hard-link", _hard_link, "sidecar"),
    Kind("identical-copies", _copies, "embed"),
    Kind("tiny-1x1", _tiny, "embed"),
    Kind("very-wide-20000x8", _very_wide, "embed"),
    Kind("decompression-bomb-png", _bomb, "error", "too many pixels"),
    Kind("fake-heic", _fake_heic, "error", "not an image"),
    Kind("jpeg-named-avif", _jpeg_named_avif, "sidecar"),
    Kind("orphan-sidecar", _orphan_sidecar, "ignored"),
    Kind("hidden-dotfile", _hidden, "ignored"),
    Kind("jpg-named-directory", _jpg_directory, "embed"),
    Kind("user-keywords-jpeg", _user_keywords, "embed"),
    Kind("user-keywords-png", _user_keywords_png, "embed"),
    Kind("camera-jpeg-exif-icc-comment", _camera_jpeg, "embed"),
    Kind("png-text-chunks-icc", _png_text, "embed"),
    Kind("webp-exif-icc", _webp_with_exif, "embed"),
    Kind("user-hierarchy-description", _user_hierarchy, "embed"),
    Kind("plain-tiff", _tiff(None, "plain.tif", 57), "embed"),
    Kind("gif-named-jpg", _gif_named_jpg, "sidecar"),
    Kind("png-exif-chunk", _png_exif_chunk, "embed"),
    Kind("png-latin1-description", _png_latin1_description, "embed"),
    Kind("190-megapixel-tiff", _big_tiff, "error", "too many pixels"),
    Kind("extended-xmp-depth-jpeg", _extended_xmp, "embed"),
    Kind("xmp-structures-faces-jpeg", _xmp_structures, "embed"),
    Kind("photoshop-irb-jpeg", _photoshop_irb, "embed"),
    Kind("gif-with-user-sidecar", _gif_with_user_sidecar, "sidecar"),
    Kind("tiff-user-metadata", _tiff_user_metadata, "embed"),
)


def kinds_here() -> tuple[Kind, ...]:
    """The kinds that mean something for this user: permission kinds are left out for root."""
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    return tuple(k for k in KINDS if k.root_bites or not root)


def build(root: Path, kinds: tuple[Kind, ...] | None = None) -> list[Built]:
    """Write every kind into ``root/<kind name>/`` and return them as built."""
    out = []
    for kind in kinds if kinds is not None else kinds_here():
        folder = root / kind.name
        folder.mkdir(parents=True)
        out.append(Built(kind, folder, kind.build(folder)))
    return out


def unlock(root: Path) -> None:
    """Give every folder and file under ``root`` its owner's permissions back (so it can be deleted)."""
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            p = Path(folder, name)
            if not p.is_symlink():
                p.chmod(stat.S_IMODE(p.stat().st_mode) | stat.S_IRWXU)
    root.chmod(stat.S_IMODE(root.stat().st_mode) | stat.S_IRWXU)
