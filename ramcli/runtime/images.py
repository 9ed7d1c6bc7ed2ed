"""Photo -> model input, in numpy, matching the reference transform bit for bit.

The reference does ``Image.convert("RGB")`` (alpha dropped without compositing, Pillow's own
rules for palette, CMYK, 16-bit and grayscale), torchvision ``Resize((S, S))`` on the PIL image
(= PIL bilinear with antialiasing, aspect ratio not kept), ``ToTensor`` and ``Normalize``.
ramcli adds what a photo tool must: the EXIF orientation is applied first, so a portrait
photo shot sideways is seen upright. HEIC/HEIF open through pillow-heif when it is installed; camera RAW
through LibRaw (``runtime.raw``: the embedded preview, else a half-size demosaic).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ramcli.errors import ImageError, first_line
from ramcli.files import open_regular
from ramcli.media import is_raw
from ramcli.models.store import Preprocess as Preprocess  # the input contract, re-exported for the stages

try:  # HEIC/HEIF and AVIF; optional at import so a broken wheel can't take the CLI down
    from pillow_heif import register_heif_opener

    register_heif_opener()
except Exception:  # pragma: no cover - depends on the platform's wheel
    pass

# Pillow raises DecompressionBombError above 2x this; 178 MP is far beyond any camera.
Image.MAX_IMAGE_PIXELS = 178_956_970
# Above it, a file is refused (what Pillow only warns about between 1x and 2x, too): the same words wherever.
TOO_MANY_PIXELS = "too many pixels (decompression bomb guard)"
SCALE_DOWN = "pictures over 179 megapixels are refused; scale it down to tag it, or skip it"


@dataclass
class Photo:
    """A decoded photo: upright RGB pixels, and the EXIF capture time when the file has one."""

    rgb: Image.Image
    size: tuple[int, int]  # upright (width, height) of the full photo, also when decoded as a draft
    taken_at: str | None = None


def _taken_at(img: Image.Image) -> str | None:
    exif = img.getexif()
    value = exif.get_ifd(0x8769).get(0x9003) or exif.get(0x0132)  # DateTimeOriginal, else DateTime
    if not isinstance(value, str) or len(value) < 19:
        return None
    return value[:10].replace(":", "-") + "T" + value[11:19]


def read_photo(path: Path, *, orient: bool = True, draft: int | None = None) -> Photo:
    """Decode a photo to RGB, upright when ``orient``; ImageError on any failure.

    ``draft``: a JPEG may be decoded at a reduced scale whose sides stay >= ``draft`` (see
    :attr:`Preprocess.draft`). Copies are avoided (a 24 MP photo is 72 MB per copy): transposing
    happens in place and an RGB image is not converted again.
    """
    if is_raw(path):
        from ramcli.runtime.raw import read_raw

        raw = read_raw(path, min_side=draft or 384, orient=orient)
        return Photo(raw.rgb, raw.size, raw.taken_at)
    try:
        with warnings.catch_warnings():
            # Pillow warns (UserWarning, "Truncated File Read", "Corrupt EXIF data") about EXIF it cannot
            # parse and reads it as empty: the picture still decodes, upright as far as the EXIF says. A
            # warning would print a stray line, naming no file, on stderr (from a worker process).
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open_regular(path) as f, Image.open(f) as img:  # a FIFO named x.jpg never blocks
                img.seek(0)  # first frame of GIFs and multi-page TIFFs
                taken = _taken_at(img)
                full = img.size
                if draft and img.format == "JPEG":
                    img.draft("RGB", (draft, draft))
                img.load()
                if orient:
                    turned = img.getexif().get(0x0112) in (5, 6, 7, 8)
                    ImageOps.exif_transpose(img, in_place=True)
                    full = (full[1], full[0]) if turned else full
                return Photo(img if img.mode == "RGB" else img.convert("RGB"), full, taken)
    except FileNotFoundError:
        raise ImageError("file vanished before it could be read", path=path, lasting=False) from None
    except PermissionError:
        raise ImageError("permission denied", path=path, hint="check the file's permissions", lasting=False) from None
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, UnidentifiedImageError):
            raise unidentified(path) from None
        raise ImageError(TOO_MANY_PIXELS, path=path, hint=SCALE_DOWN) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise decode_error(exc, path) from None


def unidentified(path: Path) -> ImageError:
    """A file Pillow does not recognise as a picture: empty (an interrupted copy), or anything else (not an
    image, a format Pillow does not know, or a PNG/GIF whose header is damaged, such as a bad CRC).
    Pillow's own message would repeat the path."""
    try:
        empty = os.stat(path).st_size == 0
    except OSError:
        empty = False
    if empty:
        return ImageError("empty file (0 bytes)", path=path, hint="an interrupted copy or download? copy it again")
    return ImageError("not an image Pillow can read", path=path,
                      hint="it may be damaged or in a format Pillow does not know; repair or convert it, or skip it")


def decode_error(exc: BaseException, path: Path) -> ImageError:
    """Any decoder failure as this file's one-line error (decoders raise many exception types)."""
    return ImageError(f"cannot decode image ({first_line(exc)})", path=path,
                      hint="the file may be truncated or corrupt; copy it again from its source, or skip it")


def open_rgb(path: Path, *, orient: bool = True) -> Image.Image:
    """Decode a photo to an RGB PIL image, upright when ``orient``."""
    return read_photo(path, orient=orient).rgb


def to_input(img: Image.Image, pre: Preprocess) -> np.ndarray:
    """RGB PIL image -> float32 (3, S, S), normalised exactly as the reference does."""
    size = pre.image_size
    resized = img.resize((size, size), Image.Resampling.BILINEAR)
    x = np.asarray(resized, dtype=np.float32) / np.float32(255.0)
    mean = np.asarray(pre.mean, dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float32)
    return np.ascontiguousarray(((x - mean) / std).transpose(2, 0, 1))


def load_input(path: Path, pre: Preprocess, *, orient: bool = True) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode + preprocess one photo; also returns the upright (width, height) of the photo."""
    photo = read_photo(path, orient=orient, draft=pre.draft_size)
    return to_input(photo.rgb, pre), photo.size


def parity_images(pre: Preprocess, count: int = 2) -> np.ndarray:
    """Fixed, photo-like inputs: smooth gradients plus texture, run through the real preprocessing."""
    rng = np.random.default_rng(0)
    batch = []
    for i in range(count):
        h, w = 300 + 40 * i, 420 - 30 * i
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack([xx / w, yy / h, (xx + yy) / (w + h)], axis=-1) * 255
        pixels = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        batch.append(to_input(Image.fromarray(pixels), pre))
    return np.stack(batch)
