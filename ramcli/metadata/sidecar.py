"""Where a photo's metadata is written: into the photo, or into an XMP sidecar beside it.

Only the formats measured to keep pixels and foreign metadata intact are embedded into (JPEG, PNG, TIFF,
WebP). HEIC/AVIF, camera RAW, anything else, read-only and hard-linked photos and ``--sidecar`` get an XMP
sidecar, ``photo.jpg.xmp`` by default (darktable, digiKam, Immich) or ``photo.xmp`` (Lightroom).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from ramcli.metadata.safefile import writable

EMBED = {".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".webp"}
SidecarName = Literal["ext", "stem"]
# exiv2 cannot write into an empty file; a new sidecar starts from this packet.
EMPTY_PACKET = (b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
                b'<x:xmpmeta xmlns:x="adobe:ns:meta/">\n</x:xmpmeta>\n<?xpacket end="w"?>\n')


def storage_for(path: Path, sidecar: bool) -> str:
    """``"embed"`` or ``"sidecar"``.

    Sidecar when asked (``sidecar``), for every extension outside ``EMBED`` (HEIC/HEIF/AVIF, camera RAW
    such as .cr2 .cr3 .nef .arw .dng .orf .rw2 .raf, and anything unknown), for read-only photos: a
    photo or folder with no write bit for anyone counts as read-only even for root (``os.access`` always
    says yes to root, but ``chmod a-w`` is the user saying "don't modify this"), and for a photo with
    several names (hard links: a backup tool's snapshots, a photo filed in two albums): a write replaces
    the file by renaming a new one over one name, which would split that name from the others, and they
    would keep the old bytes.
    """
    path = Path(path)
    if sidecar or path.suffix.lower() not in EMBED:
        return "sidecar"
    real = Path(os.path.realpath(path))  # a symlinked photo is rewritten where it really lives
    return "embed" if writable(real) and writable(real.parent) and _one_name(real) else "sidecar"


def _one_name(path: Path) -> bool:
    """The file has no other hard link (a missing file counts as one name: the write reports it)."""
    try:
        return os.stat(path).st_nlink <= 1
    except OSError:
        return True


def sidecar_path(path: Path, naming: str) -> Path:
    """``photo.jpg.xmp`` ("ext") or ``photo.xmp`` ("stem", Lightroom).

    Always the chosen naming, even when the other one exists (keywords are read from both); one rule
    is easier to predict than guessing which app owns an existing sidecar.
    """
    path = Path(path)
    if naming == "stem":
        return path.with_suffix(".xmp")
    if naming != "ext":
        raise ValueError(f"sidecar_name must be 'ext' or 'stem', not {naming!r}")
    return path.with_name(path.name + ".xmp")


# Photo suffixes that may share a stem with another photo (and so a Lightroom-style sidecar name).
_PHOTO_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".webp", ".heic", ".heif", ".hif", ".avif",
                   ".gif", ".bmp", ".cr2", ".cr3", ".nef", ".arw", ".dng", ".orf", ".rw2", ".raf", ".pef", ".srw")


def stem_shared(path: Path) -> bool:
    """Another photo beside ``path`` has the same stem (``same.gif`` and ``same.bmp``): ``same.xmp``
    cannot be both photos' sidecar. One stat per candidate suffix, not a folder listing (which would
    cost O(folder) per photo)."""
    path = Path(path)
    for suffix in _PHOTO_SUFFIXES:
        for s in (suffix, suffix.upper()):
            other = path.with_suffix(s)
            if other.name != path.name and other.is_file():
                return True
    return False


def sidecar_paths(path: Path) -> list[Path]:
    """Both namings, the default first: where a photo's sidecar may be found."""
    return [sidecar_path(path, naming) for naming in ("ext", "stem")]
