"""Storage styles: one class per way a photo format stores a keyword list or a description.

A logical field (``fields.keywords``, ``fields.caption``) is a list of styles, one per place it lives
(beets' mediafile idea). Each style owns everything about its place: how exiv2's value reads as a list
(``decode``), what value to hand exiv2 to store a list (``encode``; None deletes), which keywords it can
hold and how (``render``), and what to change given the user's current entries, ramcli's previous
keywords and ramcli's keywords now (``plan``). Nothing outside a style interprets its parameters.

What the places cannot hold, measured (docs/metadata.md):

* XMP arrays: pyexiv2 serialises every array as ``rdf:Seq``; dc:subject, lr:hierarchicalSubject and
  MicrosoftPhoto:LastKeywordXMP are bags by their schemas, so the packet is fixed after writing
  (``fix_packet``); digiKam:TagsList is a Seq by its own.
* Hierarchical styles (lr:hierarchicalSubject ``ramcli|dog``, digiKam:TagsList ``ramcli/dog``) write a
  keyword under the root with its parents (``ramcli|bird|red kite``); a keyword holding the separator is
  left out of that style. An entry of ours is recognised by the root and its last part, so one written
  under a parent the tag no longer has is replaced, not kept beside the new one.
* IPTC Keywords: 64 bytes an entry (IIM); longer ones are left out (the XMP fields hold them).
  Caption-Abstract: 2000 bytes.
* EXIF XPKeywords: UTF-16LE, ``;``-separated and NUL-terminated (Windows); a keyword with ``;`` is left
  out. ImageDescription is ASCII by type: other text stays XMP-only.
* "if present" styles (digiKam:TagsList, MicrosoftPhoto:LastKeywordXMP, IPTC Caption-Abstract) are kept
  in step only when a photo already uses them (Immich and Windows prefer them over dc:subject when they
  are there; adding them everywhere would be noise).
* In a sidecar, exiv2 keeps IPTC/EXIF copies of dc:subject and dc:description in memory and turns them
  back into XMP when writing: such a style names those copies (``sidecar_copies``) so they are set too.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import KW_ONLY, dataclass
from functools import cache
from typing import ClassVar, Literal

from ramcli.metadata.text import blank, fold, holds, nfc

Ancestry = Mapping[str, tuple[str, ...]]  # keyword -> its parents, outermost first
Container = Literal["jpeg", "tiff", "png", "webp", "sidecar"]
Block = Literal["xmp", "iptc", "exif"]
XDEFAULT = 'lang="x-default"'


def as_list(value: object) -> list[str]:
    """exiv2's value of a list property (or a single text) as a list of texts; structures as nothing."""
    if value is None or isinstance(value, dict):
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


@dataclass(frozen=True)
class Style(ABC):
    """One place a field lives: an exiv2 key, and the containers where that place is used."""

    key: str  # exiv2 key, e.g. "Xmp.dc.subject"
    _: KW_ONLY
    where: frozenset[Container]  # the containers (file kinds) this style is written in
    if_present: bool = False  # kept in step only when the photo already has it
    # Keys exiv2 keeps as in-memory copies of this one in a sidecar (set to the same value when writing).
    sidecar_copies: tuple[str, ...] = ()

    block: ClassVar[Block]

    @abstractmethod
    def decode(self, raw: object) -> list[str]:
        """exiv2's value (None when absent) as a list of entries."""

    @abstractmethod
    def encode(self, entries: list[str]) -> object:
        """The value to give exiv2 for ``entries``; None deletes the property."""

    @abstractmethod
    def plain(self, entries: list[str]) -> object:
        """``entries`` as a plain exiv2 value (list or text; None when empty), for ``sidecar_copies``."""

    def fix_packet(self, packet: str) -> str:
        """The XMP packet after writing, corrected to this property's schema (most need nothing)."""
        return packet


# --- keyword lists ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListStyle(Style):
    """A keyword list: entries rendered from keywords, the user's entries kept in place and order."""

    # Entries are the keywords themselves (read_keywords merges these); False for hierarchical paths.
    holds_keywords: ClassVar[bool] = True

    def fits(self, keyword: str) -> bool:
        """Whether this style can hold ``keyword`` at all."""
        return True

    def render(self, keyword: str, root: str | None, ancestry: Ancestry | None = None) -> str | None:
        """The entry for ``keyword``, or None where it cannot be stored here."""
        return keyword if self.fits(keyword) else None

    def ours(self, entry: str, root: str | None, keywords: set[str]) -> bool:
        """An entry ramcli wrote for one of ``keywords`` in another form than ``render`` gives now."""
        return False

    def plan(self, old: list[str], ours: list[str], stale: list[str], root: str | None,
             ancestry: Ancestry) -> list[str] | None:
        """The new entries (None: no change): ``stale`` keywords out, missing ``ours`` appended.

        A keyword already here in any letter case is not added again; removal matches exactly (NFC).
        """
        if self.if_present and not old:
            return None
        want = [e for k in ours if (e := self.render(k, root, ancestry)) is not None]
        drop = {e for k in stale if (e := self.render(k, root)) is not None}
        moved = {e for e in old if nfc(e) not in want and self.ours(e, root, {*stale, *ours})}
        new = [e for e in old if nfc(e) not in drop and e not in moved]
        have = {fold(e) for e in new}
        for e in want:
            if fold(e) not in have:
                new.append(e)
                have.add(fold(e))
        return new if new != old else None

    def plain(self, entries: list[str]) -> object:
        return entries or None


@dataclass(frozen=True)
class XmpSeq(ListStyle):
    """An XMP ordered array (``rdf:Seq``), as pyexiv2 writes every array."""

    block: ClassVar[Block] = "xmp"
    array: ClassVar[str] = "Seq"

    def decode(self, raw: object) -> list[str]:
        return as_list(raw)

    def encode(self, entries: list[str]) -> object:
        return entries or None

    def fix_packet(self, packet: str) -> str:
        if self.array == "Seq":
            return packet
        # the packet was just serialised by the XMP SDK: a canonical layout
        return _array_pattern(self.key).sub(rf"\1<rdf:{self.array}>\2</rdf:{self.array}>\3", packet)


@cache
def _array_pattern(key: str) -> re.Pattern[str]:
    prop = key[4:].replace(".", ":", 1)  # "Xmp.dc.subject" -> "dc:subject"
    return re.compile(rf"(<{prop}>\s*)<rdf:Seq>(.*?)</rdf:Seq>(\s*</{prop}>)", re.S)


@dataclass(frozen=True)
class XmpBag(XmpSeq):
    """An XMP unordered array (``rdf:Bag``): dc:subject, MicrosoftPhoto:LastKeywordXMP."""

    array: ClassVar[str] = "Bag"


@dataclass(frozen=True)
class XmpHierarchy(XmpBag):
    """Keyword paths under a root, ``ramcli|bird|red kite`` (lr:hierarchicalSubject, a bag).

    Without a root (``hierarchical_root=None``) the entry is the plain keyword. A keyword or parent
    holding the separator is left out: it would read as a deeper path.
    """

    sep: str = "|"
    holds_keywords: ClassVar[bool] = False

    def render(self, keyword: str, root: str | None, ancestry: Ancestry | None = None) -> str | None:
        chain = (*(ancestry or {}).get(keyword, ()), keyword) if root else (keyword,)
        if any(self.sep in part for part in chain):
            return None
        return f"{root}{self.sep}{self.sep.join(chain)}" if root else keyword

    def ours(self, entry: str, root: str | None, keywords: set[str]) -> bool:
        """An entry under our root ending in one of ``keywords`` (NFC), whatever parents it was written with."""
        if not root or not entry.startswith(root + self.sep):
            return False
        return nfc(entry.rsplit(self.sep, 1)[-1]) in keywords


@dataclass(frozen=True)
class DigikamTagsList(XmpHierarchy):
    """digiKam:TagsList, ``ramcli/dog``: a hierarchy like lr's but an ``rdf:Seq`` by digiKam's schema."""

    sep: str = "/"
    array: ClassVar[str] = "Seq"


@dataclass(frozen=True)
class IptcRepeated(ListStyle):
    """A repeated IPTC dataset (Keywords): one entry per keyword, each at most ``max_bytes`` of UTF-8."""

    max_bytes: int = 64
    block: ClassVar[Block] = "iptc"

    def fits(self, keyword: str) -> bool:
        return len(keyword.encode()) <= self.max_bytes

    def decode(self, raw: object) -> list[str]:
        return as_list(raw)

    def encode(self, entries: list[str]) -> object:
        return entries or None


@dataclass(frozen=True)
class ExifUtf16List(ListStyle):
    """EXIF XPKeywords (Windows): one UTF-16LE text, ``;``-separated, NUL-terminated."""

    sep: ClassVar[str] = ";"
    block: ClassVar[Block] = "exif"

    def fits(self, keyword: str) -> bool:
        return self.sep not in keyword

    def decode(self, raw: object) -> list[str]:
        return [p.strip() for p in str(raw or "").replace("\x00", "").split(self.sep) if p.strip()]

    def encode(self, entries: list[str]) -> object:
        return self.sep.join(entries) + "\x00" if entries else None


# --- one text (the caption) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TextStyle(Style):
    """One description text; read as a list (a language alternative can hold several)."""

    def entry(self, text: str) -> str | None:
        """``text`` as this style can hold it, or None where it cannot."""
        return text

    def plan(self, old: list[str], text: str, previous: str | None, overwrite: bool) -> list[str] | None:
        """The new entries for writing ``text`` (None: no change), once the field has decided to write.

        Where ``text`` cannot be held, a stale text of ours (or, overwriting, the user's) goes; an
        "if present" style is written only over a description already there (a placeholder counts not).
        """
        entry = self.entry(text)
        if entry is None:
            return [] if old and (holds(old, previous) or (overwrite and not blank(old))) else None
        if (self.if_present and blank(old)) or old == [entry]:
            return None
        return [entry]

    def plain(self, entries: list[str]) -> object:
        return entries[0] if entries else None


@dataclass(frozen=True)
class XmpLangAlt(TextStyle):
    """An XMP language alternative (dc:description): written as x-default, read x-default first."""

    block: ClassVar[Block] = "xmp"

    def decode(self, raw: object) -> list[str]:
        if isinstance(raw, dict):
            texts = [str(v) for k, v in raw.items() if k != XDEFAULT]
            return [str(raw[XDEFAULT]), *texts] if XDEFAULT in raw else texts
        return as_list(raw)

    def encode(self, entries: list[str]) -> object:
        return {XDEFAULT: entries[0]} if entries else None


@dataclass(frozen=True)
class ExifAscii(TextStyle):
    """An EXIF ASCII text (ImageDescription): text outside ASCII is left out (XMP holds it)."""

    block: ClassVar[Block] = "exif"

    def entry(self, text: str) -> str | None:
        return text if text.isascii() else None

    def decode(self, raw: object) -> list[str]:
        """Read as latin-1 (bytes kept): UTF-8 where it decodes as such (what other tools write in
        practice), else the bytes as latin-1; NUL padding dropped."""
        if not isinstance(raw, str):
            return []
        with suppress(UnicodeError):
            raw = raw.encode("latin-1").decode("utf-8")
        raw = raw.rstrip("\x00")
        return [raw] if raw else []

    def encode(self, entries: list[str]) -> object:
        return self.plain(entries)


@dataclass(frozen=True)
class IptcText(TextStyle):
    """A single IPTC text dataset (Caption-Abstract), at most ``max_bytes`` of UTF-8."""

    max_bytes: int = 2000
    block: ClassVar[Block] = "iptc"

    def entry(self, text: str) -> str | None:
        return text if len(text.encode()) <= self.max_bytes else None

    def decode(self, raw: object) -> list[str]:
        return as_list(raw)

    def encode(self, entries: list[str]) -> object:
        return self.plain(entries)


@dataclass(frozen=True)
class XmpText(TextStyle):
    """A simple XMP text property (ramcli's own record: model, date, caption)."""

    block: ClassVar[Block] = "xmp"

    def decode(self, raw: object) -> list[str]:
        return [raw] if isinstance(raw, str) and raw else []

    def encode(self, entries: list[str]) -> object:
        return self.plain(entries)
