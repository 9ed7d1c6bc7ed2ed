"""Camera RAW -> the picture the model sees, through LibRaw (``rawpy``).

The model looks at 384x384 pixels: a full demosaic of a 24-45 MP sensor (seconds, hundreds of MB) would be
thrown away. Nearly every camera embeds a full-size or large JPEG preview, the camera's own rendering of the
shot; LibRaw extracts it without touching the sensor data (``extract_thumb``). It is used when its short side
is at least ``min_side`` (the model's input size: a 160x120 thumbnail is not), else the sensor data is
demosaiced at half size (LibRaw's ``half_size``: one RGB pixel per 2x2 Bayer block, no interpolation, the
fastest demosaic there is). Either way the RAW's own orientation (LibRaw's ``flip``) is applied, as the EXIF
orientation is for JPEGs: embedded previews are stored as the sensor was held.

The image hash of a RAW (``raw_hash``) is over the sensor data itself, so a RAW keeps its identity whatever
another program writes into it (a DNG's XMP, a new preview after an edit in the camera maker's software).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from ramcli.errors import ImageError, first_line
from ramcli.files import open_regular

Source = Literal["preview", "demosaic"]
# LibRaw's flip -> the transpose that makes the picture upright
_FLIP = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}


@dataclass
class RawPicture:
    rgb: Image.Image  # upright RGB
    size: tuple[int, int]  # upright (width, height) of the full sensor image
    taken_at: str | None
    source: Source  # where the pixels came from: the embedded preview or a half-size demosaic


def _open(path: Path):  # -> rawpy.RawPy
    import rawpy

    with open_regular(path) as f:  # a FIFO under a RAW's name never blocks (files.open_regular)
        data = f.read()
    try:
        return rawpy.imread(io.BytesIO(data))
    except (rawpy.LibRawFileUnsupportedError, rawpy.LibRawIOError) as exc:
        raise ImageError(f"not a camera RAW LibRaw can read ({first_line(exc)})", path=path,
                         hint="it may be damaged, or from a camera newer than this LibRaw; convert it to DNG "
                              "(Adobe DNG Converter) or skip it") from None
    except rawpy.LibRawError as exc:
        raise ImageError(f"cannot read camera RAW ({first_line(exc)})", path=path,
                         hint="the file may be truncated or corrupt; copy it again from the card") from None


def _taken_at(raw) -> str | None:
    """The capture time LibRaw parsed (EXIF DateTimeOriginal), as the index stores it. Read only after the
    preview: rawpy 0.28 crashes (SIGSEGV) in ``extract_thumb`` called after ``other`` on some files."""
    stamp = getattr(raw.other, "timestamp", None)
    if stamp is None or not hasattr(stamp, "strftime") or stamp.year < 1971:
        return None
    return str(stamp.strftime("%Y-%m-%dT%H:%M:%S"))


def _preview(raw, min_side: int) -> Image.Image | None:
    import rawpy

    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    except rawpy.LibRawError:
        return None  # a damaged preview: the sensor data may still be fine
    try:
        if thumb.format == rawpy.ThumbFormat.JPEG:
            img = Image.open(io.BytesIO(thumb.data))
            if min(img.size) < min_side:
                return None
            img.draft("RGB", (min_side, min_side))  # decode at the smallest JPEG scale still >= min_side
            img.load()
        else:
            img = Image.fromarray(np.ascontiguousarray(thumb.data))
            if min(img.size) < min_side:
                return None
        return img if img.mode == "RGB" else img.convert("RGB")
    except (OSError, ValueError, SyntaxError):
        return None


def read_raw(path: Path, *, min_side: int = 384, orient: bool = True, prefer: Source = "preview") -> RawPicture:
    """Decode a camera RAW for the model (see the module's docstring); ImageError on any failure.
    ``prefer="demosaic"`` skips the preview (`ramcli bench` compares both)."""
    path = Path(path)
    try:
        with _open(path) as raw:
            sizes = raw.sizes
            flip = sizes.flip if orient else 0
            full = (sizes.width, sizes.height)
            if flip in (5, 6):
                full = (full[1], full[0])
            img = _preview(raw, min_side) if prefer == "preview" else None
            source: Source = "preview"
            if img is None:
                rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8,
                                      user_flip=flip)  # LibRaw turns it upright itself
                img, source = Image.fromarray(rgb), "demosaic"
            elif flip in _FLIP:
                img = img.transpose(_FLIP[flip])
            return RawPicture(img, full, _taken_at(raw), source)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError("file vanished before it could be read", path=path, lasting=False) from None
    except PermissionError:
        raise ImageError("permission denied", path=path, hint="check the file's permissions", lasting=False) from None
    except Exception as exc:  # LibRaw raises many types; any of them is this file's problem
        raise ImageError(f"cannot decode camera RAW ({first_line(exc)})", path=path,
                         hint="the file may be truncated or corrupt; copy it again from the card") from None


def raw_hash(path: Path) -> str:
    """Identity of a RAW: a hash of its sensor data (the visible area and its size), blind to metadata, previews
    and whatever another program writes into the file."""
    path = Path(path)
    try:
        with _open(path) as raw:
            data = np.ascontiguousarray(raw.raw_image_visible)
            h = hashlib.blake2b(digest_size=16)
            h.update(f"raw:{data.dtype.str}:{data.shape[1]}x{data.shape[0]}:".encode())
            h.update(data.data)
            return h.hexdigest()
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError("file vanished before it could be read", path=path, lasting=False) from None
    except PermissionError:
        raise ImageError("permission denied", path=path, hint="check the file's permissions", lasting=False) from None
    except Exception as exc:
        raise ImageError(f"cannot read camera RAW sensor data ({first_line(exc)})", path=path,
                         hint="the file may be truncated or corrupt; copy it again from the card") from None
