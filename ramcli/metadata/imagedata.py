"""The picture inside a file, apart from its metadata: what a metadata write must never change.

A write rebuilds the whole file, so before it replaces the photo ramcli checks that the picture is the
same: a JPEG's tables and entropy-coded scan data byte-identical (metadata lives only in APPn/COM
segments, all before the first SOS), every other format's decoded pixels identical (every frame).

The JPEG segment walk is shared with ``ramcli.metadata.identity``, whose image hash (the bytes from the
first SOS on) must stay equal across metadata edits: one walker, so both agree on where the picture
starts. It reports what it finds and lets each caller judge: the identity hash falls back to pixels on
an odd segment, the write check refuses the file.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageSequence, UnidentifiedImageError

from ramcli.errors import ImageError, first_line

SOI = b"\xff\xd8"
SOS = 0xDA
# JPEG markers that stand alone, without a length field (TEM, RST0-7).
_STANDALONE = {0x01, *range(0xD0, 0xD8)}


@dataclass(frozen=True)
class Segment:
    """One JPEG marker before the picture data: where its 0xFF is and its length field."""

    marker: int
    start: int  # offset of the 0xFF right before the marker byte (after any fill bytes)
    length: int | None  # the length field (counts itself, not the marker); None: standalone marker or SOS

    @property
    def end(self) -> int:
        """Offset just past the segment (what the length field says; may lie past the end of the file)."""
        return self.start + 2 + (self.length or 0)

    @property
    def metadata(self) -> bool:
        """APPn (EXIF, XMP, ICC, ...) or COM: where metadata lives, never the picture."""
        return 0xE0 <= self.marker <= 0xEF or self.marker == 0xFE


def jpeg_segments(f: BinaryIO) -> Iterator[Segment]:
    """The segments of a JPEG stream up to and including the first SOS, following the length fields.

    Stops early, without an SOS, when the stream does not start with SOI, a byte where a marker should
    be is not 0xFF, or the stream ends; the consumer tells a complete walk by the SOS segment. Length
    fields are reported as found (even below 2): judging them is the consumer's business.
    """
    if f.read(2) != SOI:
        return
    while True:
        byte = f.read(1)
        if byte != b"\xff":
            return
        marker = f.read(1)
        while marker == b"\xff":  # fill bytes
            marker = f.read(1)
        if not marker:
            return
        m, start = marker[0], f.tell() - 2
        if m == SOS or m in _STANDALONE:
            yield Segment(m, start, None)
            if m == SOS:
                return
            continue
        raw = f.read(2)
        if len(raw) != 2:
            return
        segment = Segment(m, start, int.from_bytes(raw, "big"))
        yield segment
        f.seek(segment.end)


def jpeg_scan_offset(f: BinaryIO) -> int | None:
    """Offset of the first SOS marker; None when the walk meets anything but clean segments before it.

    The image hash starts here (``ramcli.metadata.identity``); a length field below 2 is not clean.
    """
    for segment in jpeg_segments(f):
        if segment.marker == SOS:
            return segment.start
        if segment.length is not None and segment.length < 2:
            return None
    return None


def jpeg_image_data(data: bytes, path: Path) -> bytes:
    """A JPEG minus its metadata: every non-APPn/COM segment before the first SOS, and all bytes from it.

    An SOS needs two bytes after it to count (a scan header at least); otherwise the file is refused
    as truncated.
    """
    if data[:2] != SOI:
        raise ImageError("not a JPEG file", path=path)
    parts = []
    for segment in jpeg_segments(io.BytesIO(data)):
        if segment.start + 4 > len(data):
            break
        if segment.marker == SOS:
            return b"".join([*parts, data[segment.start:]])
        if segment.length is not None and not segment.metadata:
            parts.append(data[segment.start:segment.end])
    raise ImageError("corrupt or truncated JPEG (no image data found)", path=path, hint="check the file")


XMP_ID = b"http://ns.adobe.com/xap/1.0/\x00"


def xmp_packets(data: bytes) -> int:
    """How many standard XMP packets (APP1 segments) a JPEG holds; 0 for other formats.

    The standard allows one; files with two exist in the wild, and exiv2 keeps only one of them when it
    rewrites the file, so a second one means "do not embed".
    """
    if data[:2] != SOI:
        return 0
    f = io.BytesIO(data)
    count = 0
    for segment in jpeg_segments(f):
        if segment.marker == 0xE1 and data[segment.start + 4:segment.start + 4 + len(XMP_ID)] == XMP_ID:
            count += 1
    return count


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT = (b"tEXt", b"zTXt", b"iTXt")
# The PNG text chunks (by keyword) holding what ramcli writes, per metadata block.
_PNG_KEYWORDS = {"xmp": (b"XML:com.adobe.xmp",), "iptc": (b"Raw profile type iptc",)}


def _png_chunks(data: bytes) -> tuple[list[bytes], bytes] | None:
    """A PNG's whole chunks (length, type, data, CRC) up to IEND, and any bytes after it; None when the
    chunk lengths do not add up (nothing is spliced then)."""
    if data[:8] != PNG_SIGNATURE:
        return None
    chunks, i = [], 8
    while i + 12 <= len(data):
        end = i + 12 + int.from_bytes(data[i:i + 4], "big")
        if end > len(data):
            return None
        chunks.append(data[i:end])
        i = end
        if chunks[-1][4:8] == b"IEND":
            return chunks, data[i:]
    return None


def _png_keyword(chunk: bytes) -> bytes | None:
    return chunk[8:].split(b"\x00", 1)[0] if chunk[4:8] in _PNG_TEXT else None


def png_others_kept(original: bytes, out: bytes, blocks: Collection[str]) -> bytes:
    """``out`` (exiv2's rewrite of ``original``) with every chunk but the ``blocks`` ramcli changed
    (``"xmp"``, ``"iptc"``) taken back, verbatim and in place, from ``original``.

    exiv2 rebuilds all of a PNG's metadata chunks when it writes one: an eXIf chunk comes back re-encoded
    (little-endian), and a "Description" text chunk, which exiv2 takes as the image comment, comes back as
    one compressed UTF-8 iTXt: a Latin-1 tEXt as invalid UTF-8, an iTXt without its language and
    translated keyword, a second one gone. ramcli writes none of those. Chunks of a changed block go
    where the original had that block's first chunk, or, new, right after IHDR (where exiv2 puts them).
    """
    old, new = _png_chunks(original), _png_chunks(out)
    if old is None or new is None:
        return out
    keys = {k for b in blocks for k in _PNG_KEYWORDS.get(b, ())}
    ours = [c for c in new[0] if _png_keyword(c) in keys]
    had = any(_png_keyword(c) in keys for c in old[0])
    chunks: list[bytes] = []
    for c in old[0]:
        if _png_keyword(c) in keys:
            chunks += ours
            ours = []
            continue
        chunks.append(c)
        if c[4:8] == b"IHDR" and not had:
            chunks += ours
            ours = []
    return PNG_SIGNATURE + b"".join(chunks) + old[1]


def _riff_chunks(data: bytes) -> list[bytes] | None:
    """A WebP's whole chunks (padding included) after the RIFF header; None when they do not add up."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunks, i = [], 12
    while i + 8 <= len(data):
        size = int.from_bytes(data[i + 4:i + 8], "little")
        end = i + 8 + size + (size & 1)
        if end > len(data) + (size & 1):  # a missing final pad byte is common and harmless
            return None
        chunks.append(data[i:end])
        i = end
    return chunks if i >= len(data) else None


def webp_others_kept(original: bytes, out: bytes) -> bytes:
    """``out`` (exiv2's rewrite of ``original``) with every chunk but the extended header (VP8X) and
    XMP taken back, verbatim and in order, from ``original``.

    exiv2 re-encodes a WebP's EXIF chunk (little-endian, the tags it knows) whenever it writes XMP;
    ramcli never writes EXIF into a WebP. The header comes from ``out`` because its flags announce the
    XMP; XMP goes last, where exiv2 puts it and the format wants it.
    """
    old, new = _riff_chunks(original), _riff_chunks(out)
    if old is None or new is None:
        return out
    header = [c for c in new if c[:4] == b"VP8X"]
    xmp = [c for c in new if c[:4] == b"XMP "]
    body = b"".join([*header, *(c for c in old if c[:4] not in (b"VP8X", b"XMP ")), *xmp])
    return b"RIFF" + (4 + len(body)).to_bytes(4, "little") + b"WEBP" + body


def webp_without_xmp(data: bytes, path: Path) -> bytes:
    """Drop a WebP's "XMP " chunk and its VP8X flag (exiv2 keeps the old chunk when XMP becomes empty)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ImageError("not a WebP file", path=path)
    out, i = bytearray(data[:12]), 12
    while i + 8 <= len(data):
        size = int.from_bytes(data[i + 4:i + 8], "little")
        chunk = data[i:i + 8 + size + (size & 1)]
        if chunk[:4] == b"VP8X":
            chunk = chunk[:8] + bytes([chunk[8] & ~0x04]) + chunk[9:]
        if chunk[:4] != b"XMP ":
            out += chunk
        i += len(chunk)
    out[4:8] = (len(out) - 8).to_bytes(4, "little")
    return bytes(out)


def webp_simple_again(out: bytes) -> bytes:
    """``out`` in the simple WebP layout when its extended header (VP8X) announces nothing (no alpha,
    EXIF, XMP, ICC or animation) and one VP8/VP8L chunk follows: the two are the same picture (the
    canvas of a still image is its frame), so untag leaves no format upgrade behind."""
    if out[12:16] != b"VP8X":
        return out
    size = int.from_bytes(out[16:20], "little")
    if size != 10 or any(out[20:24]):  # flags (alpha, EXIF, XMP, ICC, animation) and reserved bits
        return out
    rest = out[20 + size:]
    if rest[:4] not in (b"VP8 ", b"VP8L"):
        return out
    chunk = int.from_bytes(rest[4:8], "little")
    if 8 + chunk + (chunk & 1) != len(rest):  # another chunk follows: keep the extended layout
        return out
    return b"RIFF" + (4 + len(rest)).to_bytes(4, "little") + b"WEBP" + rest


def decodes(data: bytes) -> bool:
    """Whether Pillow decodes the picture in ``data`` (a JPEG at 1/8 scale, the first frame of others).

    Tells "exiv2 cannot read this photo's metadata" (a sound picture: it gets a sidecar) from a damaged
    or truncated file, or no picture at all (an error), when exiv2 refuses a file.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a damaged EXIF block warns; the question is only the picture
            with Image.open(io.BytesIO(data)) as im:
                if im.format == "JPEG":
                    im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
                return True
    except Exception:  # any refusal, whatever the plugin raises, means no
        return False


def image_digest(data: bytes, kind: str, path: Path, *, validate: bool) -> str:
    """What must not change: JPEG tables + scan bytes, else every frame's decoded pixels.

    ``validate`` also decodes a JPEG (at 1/8 scale: cheap) so a truncated photo is refused, not rewritten.
    """
    h = hashlib.sha256()
    if kind == "jpeg":
        h.update(jpeg_image_data(data, path))
        if not validate:
            return h.hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as im:
            if kind == "jpeg":
                im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
                return h.hexdigest()
            for frame in ImageSequence.Iterator(im):
                frame.load()
                h.update(f"{frame.mode}{frame.size}".encode())
                h.update(frame.tobytes())
    except (OSError, SyntaxError, ValueError, EOFError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ImageError(f"image data cannot be decoded ({first_line(exc)})", path=path,
                         hint="a damaged or truncated photo is never written to") from None
    return h.hexdigest()
