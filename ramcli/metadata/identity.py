"""A photo's identity: a hash of its *image data*, blind to metadata edits.

Writing keywords changes a file's size, mtime and early bytes (embedded XMP sits near the start
of a JPEG), so neither a file hash nor (size, mtime) can tell "same picture, new metadata" from
"new picture". The image hash can:

* JPEG: the bytes from the first SOS marker to the end (entropy-coded data; metadata segments
  all come before it) — no decoding needed. The segment walk is ``metadata.imagedata``'s, the one the
  metadata writer checks its rewrites with, so both agree on where the picture starts.
* PNG: the IHDR, PLTE and IDAT chunk payloads (metadata lives in other chunks).
* camera RAW: the sensor data (``runtime.raw.raw_hash``), not the preview or the metadata around it;
* video: the video stream's packets (``runtime.video.video_hash``), not the container's metadata;
* anything else (TIFF, WebP, HEIC, GIF, ...): the decoded first frame's mode, size and pixels.

Files are opened with ``files.open_regular``: a FIFO under a photo's name never blocks a worker.
"""

from __future__ import annotations

import hashlib
import struct
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ramcli.errors import ImageError, first_line
from ramcli.files import open_regular
from ramcli.media import kind_of
from ramcli.metadata.imagedata import jpeg_scan_offset
from ramcli.runtime.images import SCALE_DOWN, TOO_MANY_PIXELS, unidentified

_CHUNK = 1 << 20


def _hasher() -> hashlib.blake2b:
    return hashlib.blake2b(digest_size=16)


def _hash_jpeg(path: Path) -> str | None:
    with open_regular(path) as f:
        offset = jpeg_scan_offset(f)
        if offset is None:
            return None
        f.seek(offset)
        h = _hasher()
        h.update(b"jpeg-scan:")
        while block := f.read(_CHUNK):
            h.update(block)
        return h.hexdigest()


def _hash_png(path: Path) -> str | None:
    h = _hasher()
    h.update(b"png-data:")
    seen_idat = False
    with open_regular(path) as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return None
        while True:
            head = f.read(8)
            if len(head) < 8:
                return None
            length, kind = struct.unpack(">I4s", head)
            if kind in (b"IHDR", b"PLTE", b"IDAT"):
                data = f.read(length)
                if len(data) != length:
                    return None
                h.update(kind)
                h.update(data)
                seen_idat |= kind == b"IDAT"
                f.seek(4, 1)
            elif kind == b"IEND":
                return h.hexdigest() if seen_idat else None
            else:
                f.seek(length + 4, 1)


def _hash_pixels(path: Path) -> str:
    """The decoded first frame's hash, with Pillow's warnings handled as decoding them does.

    Pillow *warns* about a picture over its pixel limit (and decodes it anyway) and about EXIF it
    cannot parse: the first is the decompression-bomb guard, refused here as it is for tagging, before
    hundreds of megabytes are decoded; the second is harmless. Either warning would otherwise print a
    stray line, naming no file, on stderr.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open_regular(path) as f, Image.open(f) as img:
                img.seek(0)
                img.load()
                h = _hasher()
                h.update(f"pixels:{img.mode}:{img.size[0]}x{img.size[1]}:".encode())
                h.update(img.tobytes())
                return h.hexdigest()
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError("file vanished before it could be read", path=path, lasting=False) from None
    except PermissionError:
        raise ImageError("permission denied", path=path, hint="check the file's permissions", lasting=False) from None
    except UnidentifiedImageError:
        raise unidentified(path) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(TOO_MANY_PIXELS, path=path, hint=SCALE_DOWN) from None
    except Exception as exc:  # any decoder failure is the file's problem, reported per file
        raise ImageError(f"cannot read image data ({first_line(exc)})", path=path,
                         hint="it may be truncated, corrupt or not an image; copy it again from its source, "
                              "or skip it") from None


def image_hash(path: Path) -> str:
    """Identity of the picture in ``path``; equal before and after any metadata-only edit."""
    suffix = path.suffix.lower()
    kind = kind_of(path)
    if kind == "raw":
        from ramcli.runtime.raw import raw_hash

        return raw_hash(path)
    if kind == "video":
        from ramcli.runtime.video import video_hash

        return video_hash(path)
    try:
        if suffix in {".jpg", ".jpeg", ".jpe"}:
            got = _hash_jpeg(path)
        elif suffix == ".png":
            got = _hash_png(path)
        else:
            got = None
    except FileNotFoundError:
        raise ImageError("file vanished before it could be read", path=path, lasting=False) from None
    except PermissionError:
        raise ImageError("permission denied", path=path, hint="check the file's permissions", lasting=False) from None
    return got or _hash_pixels(path)
