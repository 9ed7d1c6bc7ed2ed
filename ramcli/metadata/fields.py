"""The logical fields ramcli writes, each declared once as the storage styles it lives in.

``keywords`` is "the keywords ramcli gave this photo": XMP dc:subject (bag) and lr:hierarchicalSubject
(``ramcli|dog``) always, since every photo app reads one of them; digiKam:TagsList and
MicrosoftPhoto:LastKeywordXMP kept in step only where a photo already has them (Immich and Windows prefer
them over dc:subject when present). JPEG/TIFF also IPTC Keywords (UTF-8 declared) and EXIF XPKeywords
(Windows); PNG also IPTC; WebP XMP only (exiv2 drops IPTC there silently); a sidecar is XMP.

``caption`` is "the description ramcli wrote": XMP dc:description (x-default) everywhere, EXIF
ImageDescription in JPEG/TIFF when it is ASCII (the EXIF type; other text stays XMP-only), and IPTC
Caption-Abstract where a photo already has one. It is written only where no description of the user's is
found (camera placeholders such as "OLYMPUS DIGITAL CAMERA" do not count) unless the caller overwrites,
and removed only while it still reads as ramcli wrote it.

A new place for a field is one more style in its declaration; which containers (``jpeg``, ``tiff``,
``png``, ``webp``, ``sidecar``) use it is the style's ``where``. Declaration order is the order fields are
read, planned and written in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from ramcli.metadata.styles import (
    Container,
    DigikamTagsList,
    ExifAscii,
    ExifUtf16List,
    IptcRepeated,
    IptcText,
    ListStyle,
    Style,
    TextStyle,
    XmpBag,
    XmpHierarchy,
    XmpLangAlt,
)
from ramcli.metadata.text import blank, holds

S = TypeVar("S", bound=Style)
CaptionStatus = Literal["written", "unchanged", "kept", "removed"]

XMP: frozenset[Container] = frozenset({"jpeg", "tiff", "png", "webp", "sidecar"})
IPTC: frozenset[Container] = frozenset({"jpeg", "tiff", "png"})  # exiv2 drops IPTC in WebP silently
EXIF: frozenset[Container] = frozenset({"jpeg", "tiff"})


class Field(Generic[S]):
    """A logical field: its styles in declaration order."""

    def __init__(self, *styles: S) -> None:
        self.styles: tuple[S, ...] = styles

    def styles_for(self, kind: str) -> tuple[S, ...]:
        """The styles written in container ``kind`` ("jpeg", "tiff", "png", "webp" or "sidecar")."""
        return tuple(s for s in self.styles if kind in s.where)


class ListField(Field[ListStyle]):
    """A keyword list kept in step across its styles."""

    @property
    def primary(self) -> ListStyle:
        """The style every app reads (dc:subject): what a sidecar's keywords are read from."""
        return self.styles[0]

    @property
    def plain_styles(self) -> tuple[ListStyle, ...]:
        """The styles whose entries are the keywords themselves (not hierarchical paths)."""
        return tuple(s for s in self.styles if s.holds_keywords)

    def plan(self, values: Mapping[Style, list[str]], kind: str, ours: list[str], stale: list[str],
             root: str | None, ancestry: Mapping[str, tuple[str, ...]]) -> dict[Style, list[str]]:
        """New entries for each style of ``kind`` that was read (``values``) and needs a change."""
        plan: dict[Style, list[str]] = {}
        for s in self.styles_for(kind):
            if s in values and (new := s.plan(values[s], ours, stale, root, ancestry)) is not None:
                plan[s] = new
        return plan


@dataclass(frozen=True)
class CaptionChange:
    """What a call asks of the caption: ``text`` (None: remove ours), ours from last time, overwrite."""

    text: str | None
    previous: str | None
    overwrite: bool


class TextField(Field[TextStyle]):
    """One description across its styles, written only where no description of the user's is found."""

    def plan(self, values: Mapping[Style, list[str]], kind: str, change: CaptionChange,
             foreign: list[list[str]]) -> tuple[dict[Style, list[str]], CaptionStatus]:
        """New text per style of ``kind`` that was read, and the outcome. ``foreign``: descriptions ramcli
        cannot write but must respect (legacy IPTC, a sidecar photo's embedded ones)."""
        writable = tuple(s for s in self.styles_for(kind) if s in values)
        held = [values[s] for s in writable] + foreign
        users = [e for e in held if not blank(e) and not holds(e, change.previous) and not holds(e, change.text)]
        plan: dict[Style, list[str]] = {}
        if change.text is None:  # untag: ours out, wherever it is still exactly ours
            plan = {s: [] for s in writable if holds(values.get(s, []), change.previous)}
            return plan, "removed" if plan else ("kept" if users else "unchanged")
        if users and not change.overwrite:
            return {}, "kept"
        for s in writable:
            if (new := s.plan(values.get(s, []), change.text, change.previous, change.overwrite)) is not None:
                plan[s] = new
        return plan, "written" if plan else "unchanged"


keywords = ListField(
    XmpBag("Xmp.dc.subject", where=XMP, sidecar_copies=("Iptc.Application2.Keywords",)),
    XmpHierarchy("Xmp.lr.hierarchicalSubject", sep="|", where=XMP),
    DigikamTagsList("Xmp.digiKam.TagsList", where=XMP, if_present=True),
    XmpBag("Xmp.MicrosoftPhoto.LastKeywordXMP", where=XMP, if_present=True),
    IptcRepeated("Iptc.Application2.Keywords", max_bytes=64, where=IPTC),
    ExifUtf16List("Exif.Image.XPKeywords", where=EXIF),
)

caption = TextField(
    XmpLangAlt("Xmp.dc.description", where=XMP,
               sidecar_copies=("Iptc.Application2.Caption", "Exif.Image.ImageDescription")),
    ExifAscii("Exif.Image.ImageDescription", where=EXIF),
    IptcText("Iptc.Application2.Caption", max_bytes=2000, where=IPTC, if_present=True),
)

FIELDS: tuple[Field, ...] = (keywords, caption)
