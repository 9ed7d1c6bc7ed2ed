"""pyexiv2 (exiv2 0.28) I/O from bytes: read styles' values, rebuild a file with a plan applied.

Files are handled in memory (``pyexiv2.ImageData``), never by path, so that the caller can check the
rebuilt bytes before anything on disk changes. pyexiv2 collects exiv2 errors in one global buffer, so
every call into it holds ``LOCK``, whatever the caller's threads. Warnings are silenced: exiv2 prints them
to stdout, which would corrupt ``--json`` output; errors still raise.

What each style stores is the style's business (``styles``); here live the rules of the families as
exiv2 handles them: IPTC text needs its UTF-8 declaration (pyexiv2 does not set it; without it exiftool
shows mojibake), 8-bit legacy IPTC is read but never rewritten, EXIF that cannot be decoded is left alone,
a PNG's or WebP's chunks other than the ones ramcli writes are kept verbatim (exiv2 re-encodes them), and a
WebP whose XMP became empty loses its XMP chunk (exiv2 would keep the old packet).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyexiv2

from ramcli.errors import ImageError, first_line
from ramcli.metadata import provenance
from ramcli.metadata.imagedata import png_others_kept, webp_others_kept, webp_simple_again, webp_without_xmp
from ramcli.metadata.sidecar import EMPTY_PACKET
from ramcli.metadata.styles import Style, as_list
from ramcli.metadata.xmptext import sidecar_others_kept

pyexiv2.set_log_level(3)
pyexiv2.registerNs(provenance.NAMESPACE, provenance.PREFIX)  # ramcli's record in each file (``provenance``)
LOCK = threading.Lock()
UTF8 = "\x1b%G"  # IPTC CodedCharacterSet for UTF-8
CHARSET = "Iptc.Envelope.CharacterSet"
_MIME = {"image/jpeg": "jpeg", "image/tiff": "tiff", "image/png": "png", "image/webp": "webp"}
_SIDECAR_MIME = "application/rdf+xml"
# IPTC datasets that carry nothing by themselves (exiv2/ramcli add them around keywords)
_IPTC_ENVELOPE = {CHARSET, "Iptc.Envelope.ModelVersion", "Iptc.Application2.RecordVersion"}
# exiv2 writes MicrosoftPhoto's namespace with a final slash (as Windows does); exiftool and other writers
# use it without. Whichever form a photo had is the form it keeps.
_MS_URI = (b'xmlns:MicrosoftPhoto="http://ns.microsoft.com/photo/1.0/"',
           b'xmlns:MicrosoftPhoto="http://ns.microsoft.com/photo/1.0" ')
_MS_NO_SLASH = re.compile(rb"""xmlns:MicrosoftPhoto=['"]http://ns\.microsoft\.com/photo/1\.0['"]""")


@dataclass(frozen=True)
class Snapshot:
    """What a file holds: entries per style read, its kind, and whether its IPTC may be rewritten."""

    values: dict[Style, list[str]]  # a style that could not be read is absent (so never planned either)
    kind: str  # "jpeg", "tiff", "png", "webp" or "sidecar"
    iptc_writable: bool  # UTF-8 declared, or only ASCII so far


def open_image(data: bytes, path: Path) -> pyexiv2.ImageData:
    """exiv2's view of ``data``; hold ``LOCK`` and close it after use."""
    if len(data) >= 2**31:
        raise ImageError("too large to rewrite in memory (2 GB)", path=path, hint="use --sidecar")
    try:
        return pyexiv2.ImageData(data)
    except RuntimeError as exc:
        raise ImageError(f"unreadable metadata or not an image ({first_line(exc)})", path=path,
                         hint="check the file; a damaged file is never written to") from None


def read(data: bytes, path: Path, want: Callable[[str | None, str], Sequence[Style]]) -> Snapshot:
    """The entries of the styles ``want(kind, mime)`` chooses; kind is None for a format ramcli neither
    embeds into nor reads as a sidecar (read as a sidecar would be)."""
    with LOCK:
        img = open_image(data, path)
        try:
            mime = img.get_mime_type()
            kind = "sidecar" if mime == _SIDECAR_MIME else _MIME.get(mime)
            values, iptc_ok = _read_values(img, tuple(want(kind, mime)))
        except (RuntimeError, UnicodeDecodeError) as exc:
            raise ImageError(f"unreadable metadata ({first_line(exc)})", path=path) from None
        finally:
            img.close()
    return Snapshot(values, kind or "sidecar", iptc_ok)


def _read_values(img: pyexiv2.ImageData, styles: tuple[Style, ...]) -> tuple[dict[Style, list[str]], bool]:
    """Entries per style (XMP, then IPTC, then EXIF), and whether IPTC may be written."""
    values: dict[Style, list[str]] = {}
    iptc_ok = True
    xmp = img.read_xmp()
    values.update({s: s.decode(xmp.get(s.key)) for s in styles if s.block == "xmp"})
    if any(s.block == "iptc" for s in styles):
        iptc, iptc_ok = _read_iptc(img)
        values.update({s: s.decode(iptc.get(s.key)) for s in styles if s.block == "iptc"})
    if any(s.block == "exif" for s in styles):
        try:  # values are decoded from exiv2's numeric dump; latin-1 keeps odd 8-bit EXIF text from failing
            exif = img.read_exif(encoding="latin-1")
        except (UnicodeDecodeError, ValueError):  # odd-length UTF-16 XPKeywords: not ours to touch
            exif = None
        if exif is not None:
            values.update({s: s.decode(exif.get(s.key)) for s in styles if s.block == "exif"})
    return values, iptc_ok


def _read_iptc(img: pyexiv2.ImageData) -> tuple[dict[str, object], bool]:
    """IPTC, and whether it may be written (UTF-8 declared, or only ASCII so far)."""
    try:
        iptc = img.read_iptc()
    except UnicodeDecodeError:  # legacy 8-bit IPTC
        return img.read_iptc(encoding="latin-1"), False
    ok = iptc.get(CHARSET) == UTF8 or all(
        v.isascii() for v in (x for k, val in iptc.items() if k != CHARSET for x in as_list(val)))
    return iptc, ok


def changes(plan: Mapping[Style, list[str]], kind: str) -> dict[str, dict[str, object]]:
    """What ``plan`` sets per metadata block ("xmp", "iptc", "exif"; None deletes), in plan order.

    IPTC gets its UTF-8 declaration when text is added to an embedded file. In a sidecar, exiv2 holds
    IPTC and EXIF copies of dc:subject/dc:description in memory and turns them back into XMP when
    writing, so those copies (``Style.sidecar_copies``) are set to the planned values there too.
    """
    out: dict[str, dict[str, object]] = {"xmp": {}, "iptc": {}, "exif": {}}
    for s, entries in plan.items():
        out[s.block][s.key] = s.encode(entries)
    if kind != "sidecar" and any(v is not None for v in out["iptc"].values()):
        out["iptc"] = {CHARSET: UTF8, **out["iptc"]}
    if kind == "sidecar":
        for s, entries in plan.items():
            for key in s.sidecar_copies:
                out["iptc" if key.startswith("Iptc.") else "exif"][key] = s.plain(entries)
    return out


def rewrite(data: bytes, path: Path, kind: str, plan: Mapping[Style, list[str]],
            schema: Sequence[Style]) -> bytes | None:
    """``data`` with ``plan`` applied; None for a sidecar left without any XMP.

    ``schema``: every style ramcli knows, whose ``fix_packet`` corrects the XMP packet after writing
    (pyexiv2 writes every array as rdf:Seq). An existing sidecar keeps every byte but ramcli's properties
    (``xmptext``): it is another app's file (Lightroom's develop settings, darktable's history).
    """
    with LOCK:
        img = open_image(data, path)
        try:
            todo = changes(plan, kind)
            if todo["iptc"]:
                img.modify_iptc(todo["iptc"])
                if kind != "sidecar" and set(img.read_iptc(encoding="latin-1")) <= _IPTC_ENVELOPE:
                    img.clear_iptc()  # only the UTF-8 declaration left: no IPTC block at all, as before ramcli
            if todo["exif"]:
                img.modify_exif(todo["exif"])
            emptied = keep_ms_uri = False
            if todo["xmp"]:
                keep_ms_uri = _MS_NO_SLASH.search(data) is not None  # the file's bytes: exiv2 shows its own form
                img.modify_xmp(todo["xmp"])
                if not img.read_xmp():  # nothing left: exiv2 would keep the old packet (sidecar, WebP)
                    if kind == "sidecar":
                        return None
                    emptied = kind == "webp"
                packet = img.read_raw_xmp()
                fixed = packet
                for s in schema:
                    fixed = s.fix_packet(fixed)
                if fixed != packet:
                    img.modify_raw_xmp(fixed)
            out = img.get_bytes()
            if kind == "png":  # exiv2 rebuilds every metadata chunk: only the blocks planned are ours to change
                out = png_others_kept(data, out, [b for b in ("xmp", "iptc") if todo[b]])
            elif kind == "webp":
                out = webp_others_kept(data, out)
            if emptied:
                out = webp_without_xmp(out, path)
            if keep_ms_uri and kind != "png":  # exiv2 re-parses any packet it is given: patch its bytes instead,
                # at the same length (a space for the slash), so no segment length or offset moves; PNG's
                # chunk CRC would, so PNG keeps exiv2's form
                out = out.replace(*_MS_URI)
            if kind == "sidecar" and data != EMPTY_PACKET:  # another app's sidecar (Lightroom's develop
                # settings, darktable's history): exiv2 re-serialised all of it; only ramcli's properties change
                out = sidecar_others_kept(data, out)
            if emptied:  # nothing left for the extended header to announce: the simple layout, as before
                out = webp_simple_again(out)
        except RuntimeError as exc:
            raise ImageError(f"exiv2 could not write the metadata ({first_line(exc)})", path=path) from None
        finally:
            img.close()
    return out
