"""What kind of picture a file is, by its extension: a photo, a camera RAW or a video.

One table for everything that decides by kind: the folder walk (which files to take), the prepare stage
(which decoder: Pillow, LibRaw's preview or demosaic, or PyAV's keyframes), the image hash (JPEG scan
data, RAW sensor data, video packets) and the metadata writer (RAW and video always get a sidecar).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

Kind = Literal["photo", "raw", "video"]
Media = Literal["all", "photos", "videos"]  # what a run takes: everything, all but videos, only videos

PHOTO_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".png", ".webp", ".tif", ".tiff", ".heic", ".heif", ".hif", ".avif",
    ".gif", ".bmp",
})
# Camera RAW that LibRaw reads (rawpy): Canon, Nikon, Sony, Adobe DNG, Olympus, Panasonic, Fujifilm, Pentax,
# Samsung, Sigma, Hasselblad, Epson, Kodak, Minolta, Leica, Phase One.
RAW_EXTENSIONS = frozenset({
    ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".dng", ".orf", ".rw2", ".raf", ".pef",
    ".srw", ".x3f", ".3fr", ".erf", ".kdc", ".mrw", ".rwl", ".iiq", ".mef", ".mos", ".dcr",
})
# Containers PyAV (FFmpeg) opens; phones write mp4/mov/3gp, camcorders mts/m2ts, the web webm/mkv.
VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".mov", ".m4v", ".3gp", ".3g2", ".mkv", ".webm", ".avi", ".mts", ".m2ts", ".wmv", ".mpg", ".mpeg",
})


def kind_of(path: str | Path) -> Kind | None:
    """``"photo"``, ``"raw"``, ``"video"``, or None for a file ramcli does not take from a folder."""
    suffix = Path(path).suffix.lower()
    if suffix in PHOTO_EXTENSIONS:
        return "photo"
    if suffix in RAW_EXTENSIONS:
        return "raw"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return None


def is_raw(path: str | Path) -> bool:
    return Path(path).suffix.lower() in RAW_EXTENSIONS


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS
