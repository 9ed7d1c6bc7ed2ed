"""Where a photo's metadata is written: into the photo, or into an XMP sidecar beside it.

Only the formats measured to keep pixels and foreign metadata intact are embedded into (JPEG, PNG, TIFF,
WebP). HEIC/AVIF, camera RAW, videos, anything else, read-only and hard-linked photos and ``--sidecar`` get an
XMP sidecar: by default ("auto") ``IMG_0001.xmp`` for a camera RAW (the RAW convention) and ``photo.jpg.xmp``
for the rest (darktable, digiKam, Immich); "ext" or "stem" (Lightroom) for every file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from ramcli.media import is_raw
from ramcli.metadata.safefile import writable

EMBED = {".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".webp"}
SidecarName = Literal["auto", "ext", "stem"]
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


def naming_for(path: Path, naming: str) -> str:
    """The naming ``"auto"`` stands for: ``IMG_0001.xmp`` ("stem") for a camera RAW, the convention of RAW
    workflows (Lightroom writes it; darktable and digiKam read it), ``photo.jpg.xmp`` ("ext") for the rest."""
    if naming == "auto":
        return "stem" if is_raw(path) else "ext"
    return naming


def sidecar_path(path: Path, naming: str) -> Path:
    """``photo.jpg.xmp`` ("ext") or ``photo.xmp`` ("stem", Lightroom); "auto": :func:`naming_for`.

    Always the chosen naming, even when the other one exists (keywords are read from both); one rule
    is easier to predict than guessing which app owns an existing sidecar.
    """
    path = Path(path)
    naming = naming_for(path, naming)
    if naming == "stem":
        return path.with_suffix(".xmp")
    if naming != "ext":
        raise ValueError(f"sidecar_name must be 'ext' or 'stem', not {naming!r}")
    return path.with_name(path.name + ".xmp")


# Suffixes that may share a stem with another file ramcli tags (and so a Lightroom-style sidecar name).
_PHOTO_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".webp", ".heic", ".heif", ".hif", ".avif",
                   ".gif", ".bmp", ".mp4", ".mov", ".m4v")
_RAW_SUFFIXES = (".cr2", ".cr3", ".nef", ".nrw", ".arw", ".dng", ".orf", ".rw2", ".raf", ".pef", ".srw", ".x3f",
                 ".3fr", ".iiq", ".erf", ".mrw", ".sr2", ".kdc", ".rwl")


def stem_shared(path: Path) -> bool:
    """Another file beside ``path`` that ramcli tags has the same stem (``same.gif`` and ``same.bmp``):
    ``same.xmp`` cannot be both files' sidecar. A RAW+JPEG pair (``IMG_0001.CR2`` + ``IMG_0001.JPG``) is
    settled by the RAW convention: ``IMG_0001.xmp`` is the RAW's, so for the RAW only another RAW counts,
    and the JPEG (when it needs a sidecar at all) takes ``IMG_0001.JPG.xmp``. One stat per candidate
    suffix, not a folder listing (which would cost O(folder) per photo)."""
    path = Path(path)
    for suffix in _RAW_SUFFIXES if is_raw(path) else _PHOTO_SUFFIXES + _RAW_SUFFIXES:
        for s in (suffix, suffix.upper()):
            other = path.with_suffix(s)
            if other.name != path.name and other.is_file():
                return True
    return False


def sidecar_paths(path: Path) -> list[Path]:
    """Both namings, the default first: where a photo's sidecar may be found."""
    return [sidecar_path(path, naming) for naming in ("ext", "stem")]
