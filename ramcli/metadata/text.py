"""How keywords and descriptions are cleaned and compared, so that every field agrees on "the same text".

Keywords and captions arrive from models, the index and other programs: NFC-normalised, control
characters as spaces and stripped before they are written or compared. A keyword already present in any
letter case is not added again (``fold``), but removal matches exactly, so a user's "Dog" survives
removing ramcli's "dog". A description that is empty, whitespace (cameras pad with spaces and NULs) or a
camera's own placeholder ("OLYMPUS DIGITAL CAMERA") is nobody's description (``blank``).
"""

from __future__ import annotations

import unicodedata

# What cameras write into ImageDescription by themselves: no one's description, so free to replace.
CAMERA_PLACEHOLDERS = {"OLYMPUS DIGITAL CAMERA", "SONY DSC", "MINOLTA DIGITAL CAMERA", "KONICA MINOLTA DIGITAL CAMERA",
                       "DIGITAL CAMERA", "SAMSUNG DIGITAL CAMERA"}


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def fold(text: str) -> str:
    """The form two keywords are compared in when deciding whether one is already there."""
    return nfc(text).casefold()


def _controls_as_spaces(text: str) -> str:
    return "".join(" " if unicodedata.category(c) == "Cc" else c for c in nfc(text))


def clean_keywords(keywords: list[str]) -> list[str]:
    """NFC, control characters as spaces, stripped; empties and exact duplicates dropped, order kept."""
    out: list[str] = []
    for k in keywords:
        k = _controls_as_spaces(k).strip()
        if k and k not in out:
            out.append(k)
    return out


def clean_caption(text: str) -> str:
    """NFC, control characters (newlines included) as spaces, runs of spaces as one, stripped."""
    return " ".join(_controls_as_spaces(text).split())


def blank(entries: list[str]) -> bool:
    """No description: nothing, whitespace (cameras pad with spaces and NULs), or a camera placeholder."""
    return all(not (t := clean_caption(e)) or t.upper() in CAMERA_PLACEHOLDERS for e in entries)


def holds(entries: list[str], text: str | None) -> bool:
    """The storage holds exactly ``text`` (one entry: another language beside it makes it the user's)."""
    return text is not None and len(entries) == 1 and clean_caption(entries[0]) == text
