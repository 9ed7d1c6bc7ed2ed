"""The keywords ramcli gave a photo, kept in the photo's own metadata (or its XMP sidecar), safely.

One logical field, "the keywords ramcli gave this photo", is mapped onto each format's storages by a
small table (beets' mediafile idea): a new storage is one ``_Storage`` entry in ``STORAGES``.

* XMP ``dc:subject`` (bag) and ``lr:hierarchicalSubject`` (bag, ``ramcli|dog``; a custom tag with a
  parent: ``ramcli|bird|red kite``) always: every photo app reads one of them. ``digiKam:TagsList`` and
  ``MicrosoftPhoto:LastKeywordXMP`` are kept in step only when a photo already has them (Immich and
  Windows prefer them over dc:subject when present).
* JPEG/TIFF also IPTC Keywords (UTF-8 declared) and EXIF XPKeywords (Windows); PNG also IPTC;
  WebP XMP only (exiv2 drops IPTC there silently). HEIC/AVIF, camera RAW, anything else, read-only
  photos and ``--sidecar``: an XMP sidecar, ``photo.jpg.xmp`` by default or ``photo.xmp``.

An optional caption (one more logical field, "the description ramcli wrote") goes to XMP
``dc:description`` (x-default) everywhere, to EXIF ``ImageDescription`` in JPEG/TIFF when it is ASCII (the
EXIF type; other text stays XMP-only) and to IPTC Caption-Abstract where a photo already has one. It is
written only where no description of the user's is found (camera placeholders such as "OLYMPUS DIGITAL
CAMERA" do not count) unless the caller overwrites, and removed only while it still reads as ramcli wrote it.

Only keywords ramcli wrote are ever removed (the caller remembers them); the user's keywords keep their
place and order in every field. A write rebuilds the file in memory with pyexiv2 (exiv2 0.28), checks
the result (our fields read back as planned; JPEG tables and scan data byte-identical, other formats'
decoded pixels identical), then writes a dot-temp in the same folder, fsyncs and renames it over the
original with the original's mode, owner, xattrs and (unless ``touch``) times. Nothing needing a change
means nothing is written. Measured library facts behind these choices: docs/metadata.md.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import stat
import tempfile
import threading
import unicodedata
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import pyexiv2
from PIL import Image, ImageSequence, UnidentifiedImageError

from ramcli.errors import ImageError
from ramcli.errors import first_line as _first_line

# Warnings are printed to stdout by exiv2 (that would corrupt --json output); errors still raise.
pyexiv2.set_log_level(3)
# pyexiv2 collects exiv2 errors in one global buffer: one call at a time, whatever the caller's threads.
_LOCK = threading.Lock()
_TEMP_SUFFIX = ".ramcli-tmp"
# mkstemp's random part has no dots: ".photo.jpg.<pid>.<random>.ramcli-tmp"
_TEMP_NAME = re.compile(r"\..+\.(\d+)\.[^.]+\.ramcli-tmp")
_SWEPT: set[Path] = set()
T = TypeVar("T")

UTF8 = "\x1b%G"  # IPTC CodedCharacterSet for UTF-8; without it exiftool shows mojibake
# Only the formats measured to keep pixels and foreign metadata intact are embedded into.
EMBED = {".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".webp"}
_MIME = {"image/jpeg": "jpeg", "image/tiff": "tiff", "image/png": "png", "image/webp": "webp"}
# exiv2 cannot write into an empty file; a sidecar starts from this packet.
_EMPTY_XMP = (b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
              b'<x:xmpmeta xmlns:x="adobe:ns:meta/">\n</x:xmpmeta>\n<?xpacket end="w"?>\n')


@dataclass(frozen=True)
class WriteOptions:
    """How keywords are stored; the CLI's --sidecar/--sidecar-name/--touch map onto these."""

    sidecar: bool = False  # force an XMP sidecar even for formats that can embed
    sidecar_name: str = "ext"  # "ext": photo.jpg.xmp (darktable/digiKam/Immich) | "stem": photo.xmp (Lightroom)
    hierarchical_root: str | None = "ramcli"  # lr:hierarchicalSubject "ramcli|dog"; None -> plain "dog"
    touch: bool = False  # False: restore the photo's original mtime/atime after writing
    # Broader tags above a keyword in the hierarchical storages, outermost first: {"red kite": ("bird",)}
    # gives "ramcli|bird|red kite" (custom.ancestry: the parents of `ramcli add-tag --parent`).
    ancestry: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


CaptionStatus = Literal["written", "unchanged", "kept", "removed"]


@dataclass(frozen=True)
class WriteResult:
    """What one call did; the caller records ``target``'s new (size, mtime_ns) when ``changed``."""

    path: Path  # the photo
    target: Path  # the file actually written (the photo itself or its sidecar)
    sidecar: bool
    added: list[str]  # keywords the photo did not carry before this call
    removed: list[str]  # keywords removed by this call (were ours, no longer wanted)
    changed: bool  # False when nothing needed writing: the file was not touched at all
    # The caption, when the call was given one (None otherwise): "written" (the file now holds it: added,
    # replacing ramcli's previous one, or the user's with overwrite), "unchanged" (already held it), "kept"
    # (a description of the user's is there: left alone, ours not written/not removed), "removed" (untag).
    caption_status: CaptionStatus | None = None


@dataclass(frozen=True)
class _Storage:
    """One place a keyword list lives, and what that place cannot hold."""

    key: str  # exiv2 key
    sep: str | None = None  # "|" or "/": entries are hierarchical_root + sep + keyword
    bag: bool = False  # an XMP bag (pyexiv2 only writes rdf:Seq; fixed afterwards)
    if_present: bool = False  # kept in step only when the photo already has it
    forbidden: str = ""  # a keyword containing one of these is left out of this storage
    max_bytes: int = 0  # IPTC IIM limit for one entry; longer ones are left out
    alt: bool = False  # an XMP language alternative: one text, written as x-default
    ascii: bool = False  # an EXIF ASCII field: text outside ASCII is left out (XMP holds it)


DC = _Storage("Xmp.dc.subject", bag=True)
LR = _Storage("Xmp.lr.hierarchicalSubject", sep="|", bag=True, forbidden="|")
DIGIKAM = _Storage("Xmp.digiKam.TagsList", sep="/", if_present=True, forbidden="/")
MSPHOTO = _Storage("Xmp.MicrosoftPhoto.LastKeywordXMP", bag=True, if_present=True)
IPTC = _Storage("Iptc.Application2.Keywords", max_bytes=64)
XP = _Storage("Exif.Image.XPKeywords", forbidden=";")  # UTF-16LE, ";"-separated, NUL-terminated
_XMP = (DC, LR, DIGIKAM, MSPHOTO)
STORAGES: dict[str, tuple[_Storage, ...]] = {
    "jpeg": (*_XMP, IPTC, XP), "tiff": (*_XMP, IPTC, XP), "png": (*_XMP, IPTC), "webp": _XMP, "sidecar": _XMP}
_PLAIN = (DC, MSPHOTO, IPTC, XP)  # storages that hold the keyword itself (read_keywords merges these)
# The caption's storages: one text each, read and planned apart from the keyword lists.
DESC = _Storage("Xmp.dc.description", alt=True)
EXIF_DESC = _Storage("Exif.Image.ImageDescription", ascii=True)
IPTC_CAPTION = _Storage("Iptc.Application2.Caption", if_present=True, max_bytes=2000)
CAPTIONS: dict[str, tuple[_Storage, ...]] = {
    "jpeg": (DESC, EXIF_DESC, IPTC_CAPTION), "tiff": (DESC, EXIF_DESC, IPTC_CAPTION), "png": (DESC, IPTC_CAPTION),
    "webp": (DESC,), "sidecar": (DESC,)}
# What cameras write into ImageDescription by themselves: no one's description, so free to replace.
_CAMERA_PLACEHOLDERS = {"OLYMPUS DIGITAL CAMERA", "SONY DSC", "MINOLTA DIGITAL CAMERA", "KONICA MINOLTA DIGITAL CAMERA",
                        "DIGITAL CAMERA", "SAMSUNG DIGITAL CAMERA"}
_XDEFAULT = 'lang="x-default"'


def storage_for(path: Path, opts: WriteOptions) -> str:
    """``"embed"`` or ``"sidecar"``.

    Sidecar for ``opts.sidecar``, for every extension outside ``EMBED`` (HEIC/HEIF/AVIF, camera RAW such as
    .cr2 .cr3 .nef .arw .dng .orf .rw2 .raf, and anything unknown), and for read-only photos: a photo or folder
    with no write bit for anyone counts as read-only even for root (``os.access`` always says yes to root,
    but ``chmod a-w`` is the user saying "don't modify this").
    """
    path = Path(path)
    if opts.sidecar or path.suffix.lower() not in EMBED:
        return "sidecar"
    real = Path(os.path.realpath(path))  # a symlinked photo is rewritten where it really lives
    return "embed" if _writable(real) and _writable(real.parent) else "sidecar"


def sidecar_path(path: Path, opts: WriteOptions) -> Path:
    """Where ramcli writes the sidecar: ``photo.jpg.xmp`` ("ext") or ``photo.xmp`` ("stem", Lightroom).

    Always the chosen naming, even when the other one exists (read_keywords reads both); one rule is
    easier to predict than guessing which app owns an existing sidecar.
    """
    path = Path(path)
    if opts.sidecar_name == "stem":
        return path.with_suffix(".xmp")
    if opts.sidecar_name != "ext":
        raise ValueError(f"sidecar_name must be 'ext' or 'stem', not {opts.sidecar_name!r}")
    return path.with_name(path.name + ".xmp")


def read_keywords(path: Path, opts: WriteOptions = WriteOptions()) -> set[str]:
    """Every keyword the photo carries: dc:subject, IPTC Keywords, XPKeywords and both sidecar namings.

    Embedded metadata of formats ramcli does not embed into (HEIC, RAW) is read where exiv2 can, and
    silently skipped where it cannot; their sidecar is the storage of record.
    """
    path = Path(path)
    data = _guard(Path.read_bytes, path)
    found: set[str] = set()
    try:
        values, _, _ = _snapshot(data, path, (DC, MSPHOTO, IPTC, XP))
        found.update(v for s in _PLAIN for v in values.get(s, []))
    except ImageError:
        if path.suffix.lower() in EMBED:
            raise
    for naming in ("ext", "stem"):
        side = sidecar_path(path, WriteOptions(sidecar_name=naming))
        if side.is_file():
            found.update(_snapshot(_guard(Path.read_bytes, side), side, (DC,))[0].get(DC, []))
    return found


def read_caption(path: Path, opts: WriteOptions = WriteOptions()) -> str | None:
    """The photo's description as a photo app would show it, or None.

    The storage ramcli writes to (``opts``) is read first, then the others (embedded, ``photo.ext.xmp``,
    ``photo.xmp``); within one, XMP dc:description (x-default) before EXIF ImageDescription before IPTC
    Caption-Abstract. Camera placeholders ("OLYMPUS DIGITAL CAMERA") are not descriptions.
    """
    path = Path(path)
    _guard(os.stat, path)  # a missing photo is an error, as for read_keywords, even when its sidecar exists
    sources = [path] + [sidecar_path(path, WriteOptions(sidecar_name=n)) for n in ("ext", "stem")]
    if storage_for(path, opts) == "sidecar":
        sources.insert(0, sources.pop(sources.index(sidecar_path(path, opts))))
    for source in sources:
        if source is path or source.is_file():
            for text in _captions_in(source, required=source is path and path.suffix.lower() in EMBED):
                return text
    return None


def write_keywords(path: Path, ours: list[str], previous_ours: list[str], opts: WriteOptions = WriteOptions(), *,
                   caption: str | None = None, previous_caption: str | None = None,
                   overwrite_description: bool = False) -> WriteResult:
    """Make the photo carry ``ours``; drop what is in ``previous_ours`` but no longer in ``ours``.

    Keywords are NFC-normalised and stripped. A keyword already present in a field in any letter case is
    not added again; removal matches exactly, so a user's "Dog" survives removing ramcli's "dog". Other
    keywords keep their place. A keyword the user had *before* ramcli is indistinguishable from ramcli's:
    keep such keywords out of ``previous_ours`` (``added`` says which ones this call really added).

    ``caption`` (None: captions are not touched at all) is written in the same file rewrite as the
    keywords, replacing ``previous_caption`` (what ramcli wrote last time, from the index) but never a
    description of the user's unless ``overwrite_description``; ``result.caption_status`` says what
    happened. Record the caption as ramcli's when that is "written" or "unchanged"; keep the old record on
    "kept" (ramcli's previous text may still sit in a field the user did not edit). A caption that is empty
    after cleaning means "no caption": ramcli's previous one is removed.
    """
    change = None if caption is None else _CaptionChange(_clean_caption(caption) or None,
                                                          _clean_caption(previous_caption or "") or None,
                                                          overwrite_description)
    return _update(Path(path), _clean(ours), _clean(previous_ours), opts, change)


def remove_keywords(path: Path, previous_ours: list[str], opts: WriteOptions = WriteOptions(), *,
                    previous_caption: str | None = None) -> WriteResult:
    """``ramcli untag``: remove exactly ``previous_ours`` from every field of the storage ``opts`` selects.

    ``previous_caption`` (what ramcli wrote) is removed from each description field that still holds
    exactly it; a description the user has edited since is theirs and stays ("kept").
    A sidecar left with no XMP property at all is deleted (exiv2 cannot write an empty one, and an
    empty sidecar carries nothing); a sidecar with anything else in it (another app's data) stays.
    """
    previous = _clean_caption(previous_caption or "") or None
    change = None if previous is None else _CaptionChange(None, previous, False)
    return _update(Path(path), [], _clean(previous_ours), opts, change)


# --- planning -----------------------------------------------------------------------------------------


def _clean(keywords: list[str]) -> list[str]:
    """NFC, control characters as spaces, stripped; empties and exact duplicates dropped, order kept."""
    out: list[str] = []
    for k in keywords:
        k = "".join(" " if unicodedata.category(c) == "Cc" else c for c in unicodedata.normalize("NFC", k)).strip()
        if k and k not in out:
            out.append(k)
    return out


def _fold(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold()


def _render(s: _Storage, keyword: str, root: str | None,
            ancestry: Mapping[str, tuple[str, ...]] | None = None) -> str | None:
    """The entry for ``keyword`` in storage ``s``, or None where it cannot be stored there."""
    tree = bool(s.sep and root)
    chain = (*(ancestry or {}).get(keyword, ()), keyword) if tree else (keyword,)
    if any(c in part for part in chain for c in s.forbidden) or (s.max_bytes and len(keyword.encode()) > s.max_bytes):
        return None
    return f"{root}{s.sep}{s.sep.join(chain)}" if tree else keyword


def _ours_in_hierarchy(entry: str, s: _Storage, root: str | None, keywords: set[str]) -> bool:
    """An entry under our root ending in one of ``keywords`` (NFC), whatever parents it was written with."""
    if not (s.sep and root) or not entry.startswith(root + s.sep):
        return False
    return unicodedata.normalize("NFC", entry.rsplit(s.sep, 1)[-1]) in keywords


def _plan(values: dict[_Storage, list[str]], storages: tuple[_Storage, ...], ours: list[str], stale: list[str],
          opts: WriteOptions) -> dict[_Storage, list[str]]:
    """New list for each storage that needs a change: stale entries out, missing ones appended.

    In the hierarchical storages an entry of ours is recognised by its root and last part, so one
    written under a parent the tag no longer has is replaced, not kept beside the new one.
    """
    root = opts.hierarchical_root
    plan = {}
    for s in storages:
        old = values.get(s, [])
        if s.if_present and not old:
            continue
        want = [e for k in ours if (e := _render(s, k, root, opts.ancestry)) is not None]
        drop = {e for k in stale if (e := _render(s, k, root)) is not None}
        moved = {e for e in old if unicodedata.normalize("NFC", e) not in want
                 and _ours_in_hierarchy(e, s, root, {*stale, *ours})}
        new = [e for e in old if unicodedata.normalize("NFC", e) not in drop and e not in moved]
        have = {_fold(e) for e in new}
        for e in want:
            if _fold(e) not in have:
                new.append(e)
                have.add(_fold(e))
        if new != old:
            plan[s] = new
    return plan


@dataclass(frozen=True)
class _CaptionChange:
    """What a call asks of the caption: ``text`` (None: remove ours), ours from last time, overwrite."""

    text: str | None
    previous: str | None
    overwrite: bool


def _clean_caption(text: str) -> str:
    """NFC, control characters (newlines included) as spaces, runs of spaces as one, stripped."""
    text = "".join(" " if unicodedata.category(c) == "Cc" else c for c in unicodedata.normalize("NFC", text))
    return " ".join(text.split())


def _blank(entries: list[str]) -> bool:
    """No description: nothing, whitespace (cameras pad with spaces and NULs), or a camera placeholder."""
    return all(not (t := _clean_caption(e)) or t.upper() in _CAMERA_PLACEHOLDERS for e in entries)


def _is(entries: list[str], text: str | None) -> bool:
    """The storage holds exactly ``text`` (one entry: another language beside it makes it the user's)."""
    return text is not None and len(entries) == 1 and _clean_caption(entries[0]) == text


def _caption_entry(s: _Storage, text: str) -> str | None:
    """``text`` as storage ``s`` can hold it, or None where it cannot (non-ASCII EXIF, long IPTC)."""
    if (s.ascii and not text.isascii()) or (s.max_bytes and len(text.encode()) > s.max_bytes):
        return None
    return text


def _plan_caption(values: dict[_Storage, list[str]], writable: tuple[_Storage, ...], change: _CaptionChange,
                  foreign: list[list[str]]) -> tuple[dict[_Storage, list[str]], CaptionStatus]:
    """New text per caption storage, and the outcome. ``foreign``: descriptions ramcli cannot write but
    must respect (legacy IPTC, a sidecar photo's embedded ones)."""
    held = [values[s] for s in writable if s in values] + foreign
    users = [e for e in held if not _blank(e) and not _is(e, change.previous) and not _is(e, change.text)]
    plan: dict[_Storage, list[str]] = {}
    if change.text is None:  # untag: ours out, wherever it is still exactly ours
        plan = {s: [] for s in writable if _is(values.get(s, []), change.previous)}
        return plan, "removed" if plan else ("kept" if users else "unchanged")
    if users and not change.overwrite:
        return {}, "kept"
    for s in writable:
        old = values.get(s, [])
        entry = _caption_entry(s, change.text)
        if entry is None:  # this storage cannot hold it: a stale text of ours (or, overwriting, theirs) goes
            if old and (_is(old, change.previous) or (change.overwrite and not _blank(old))):
                plan[s] = []
        elif not (s.if_present and _blank(old)) and old != [entry]:
            plan[s] = [entry]
    return plan, "written" if plan else "unchanged"


def _update(path: Path, ours: list[str], previous: list[str], opts: WriteOptions,
            caption: _CaptionChange | None = None) -> WriteResult:
    """Read the target, plan per storage, and write only if the plan is not empty."""
    stale = [k for k in previous if k not in ours]
    side = storage_for(path, opts) == "sidecar"
    photo_st = _guard(os.stat, path)  # before any read: our reads must not move the atime we restore
    real = sidecar_path(path, opts) if side else Path(os.path.realpath(path))
    before = _state(real)  # compared again just before the rename: another writer's change wins
    data = _guard(Path.read_bytes, real) if before else _EMPTY_XMP
    if side and before and not _writable(real):
        raise ImageError("its sidecar is read-only", path=real, hint="make it writable to update the keywords")
    values, kind, iptc_ok = _snapshot(data, real, STORAGES["sidecar"] if side else None, captions=caption is not None)
    foreign = _embedded_captions(path) if side and caption is not None else []
    if not iptc_ok:
        del values[IPTC]  # legacy 8-bit IPTC: read it, never rewrite it
        if IPTC_CAPTION in values:
            foreign.append(values.pop(IPTC_CAPTION))
    plan = _plan(values, tuple(s for s in STORAGES[kind] if s in values), ours, stale, opts)
    status: CaptionStatus | None = None
    if caption is not None:
        caption_plan, status = _plan_caption(values, tuple(s for s in CAPTIONS[kind] if s in values), caption,
                                             foreign)
        plan.update(caption_plan)
    carried = {_fold(v) for s in _PLAIN for v in values.get(s, [])}
    exact = {unicodedata.normalize("NFC", v) for s in _PLAIN for v in values.get(s, [])}
    result = WriteResult(path, real, side, [k for k in ours if _fold(k) not in carried],
                         [k for k in stale if k in exact], bool(plan), status)
    if plan:
        _write(path, real, data, kind, plan, before=before, photo_st=photo_st, opts=opts)
    return result


def _write(path: Path, real: Path, data: bytes, kind: str, plan: dict[_Storage, list[str]], *,
           before: tuple[int, int, int] | None, photo_st: os.stat_result, opts: WriteOptions) -> None:
    """Apply ``plan`` to ``data`` and put the result at ``real`` (the photo or its sidecar), safely."""
    side = kind == "sidecar"
    if side and not _writable(real.parent):
        raise ImageError("its folder is read-only, so no sidecar can be written", path=path,
                         hint="make the folder writable, or tag a writable copy")
    pixels = None if side else _image_digest(data, kind, real, validate=True)
    out = _apply(data, real, kind, plan)
    if out is None:  # a sidecar left empty
        with _LOCK:
            _check_unchanged(real, before, path)
            try:
                real.unlink()
            except OSError as exc:
                raise ImageError(f"could not delete its emptied sidecar ({exc.strerror})", path=real) from None
        _fsync_dir(real.parent)
        return
    if pixels is not None and _image_digest(out, kind, real, validate=False) != pixels:
        raise ImageError("writing metadata would change the image data; file left untouched", path=path,
                         hint="please report this file; use --sidecar meanwhile")
    mode = stat.S_IMODE(photo_st.st_mode) & 0o666 | stat.S_IWUSR  # a new sidecar: like its photo, but writable
    times = None if side or opts.touch else (photo_st.st_atime_ns, photo_st.st_mtime_ns)  # as before our read
    _atomic_write(real, out, before, times=times, new_mode=mode, path=path)


def _embedded_captions(path: Path) -> list[list[str]]:
    """Descriptions embedded in a photo whose storage is its sidecar (HEIC, RAW, read-only, --sidecar):
    apps that read the sidecar would hide them behind ours, so they count as the user's. Best effort:
    what exiv2 cannot read (many RAW/HEIC files) is no description."""
    try:
        values, _, _ = _snapshot(_guard(Path.read_bytes, path), path, CAPTIONS["jpeg"])
    except ImageError:
        return []
    return [v for v in values.values() if v]


def _captions_in(path: Path, *, required: bool) -> list[str]:
    """The non-blank descriptions in one file, best storage first; ``required``: errors are raised."""
    try:
        values, _, _ = _snapshot(_guard(Path.read_bytes, path), path, CAPTIONS["jpeg"])
    except ImageError:
        if required:
            raise
        return []
    return [_clean_caption(v[0]) for s in CAPTIONS["jpeg"] if (v := values.get(s)) and not _blank(v[:1])]


# --- exiv2 --------------------------------------------------------------------------------------------


def _open(data: bytes, path: Path) -> pyexiv2.ImageData:
    if len(data) >= 2**31:
        raise ImageError("too large to rewrite in memory (2 GB)", path=path, hint="use --sidecar")
    try:
        return pyexiv2.ImageData(data)
    except RuntimeError as exc:
        raise ImageError(f"unreadable metadata or not an image ({_first_line(exc)})", path=path,
                         hint="check the file; a damaged file is never written to") from None


def _as_list(value: object) -> list[str]:
    if value is None or isinstance(value, dict):
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _alt_list(value: object) -> list[str]:
    """An XMP language alternative as a list, its x-default text first."""
    if isinstance(value, dict):
        texts = [str(v) for k, v in value.items() if k != _XDEFAULT]
        return [str(value[_XDEFAULT]), *texts] if _XDEFAULT in value else texts
    return _as_list(value)


def _exif_text(value: object) -> list[str]:
    """An EXIF ASCII value read as latin-1 (bytes kept): UTF-8 where it decodes as such (what other
    tools write in practice), else the bytes as latin-1; NUL padding dropped."""
    if not isinstance(value, str):
        return []
    with suppress(UnicodeError):
        value = value.encode("latin-1").decode("utf-8")
    value = value.rstrip("\x00")
    return [value] if value else []


def _read_iptc(img: pyexiv2.ImageData) -> tuple[dict[str, object], bool]:
    """IPTC, and whether it may be written (UTF-8 declared, or only ASCII so far)."""
    try:
        iptc = img.read_iptc()
    except UnicodeDecodeError:  # legacy 8-bit IPTC
        return img.read_iptc(encoding="latin-1"), False
    ok = iptc.get("Iptc.Envelope.CharacterSet") == UTF8 or all(
        v.isascii() for v in (x for k, val in iptc.items() if k != "Iptc.Envelope.CharacterSet" for x in _as_list(val)))
    return iptc, ok


def _read_exif(img: pyexiv2.ImageData, storages: tuple[_Storage, ...]) -> dict[_Storage, list[str]]:
    """XPKeywords and ImageDescription, where asked; nothing when EXIF cannot be read (not ours to touch)."""
    try:  # values are decoded from exiv2's numeric dump; latin-1 keeps odd 8-bit EXIF text from failing
        exif = img.read_exif(encoding="latin-1")
    except (UnicodeDecodeError, ValueError):  # odd-length UTF-16 XPKeywords
        return {}
    values: dict[_Storage, list[str]] = {}
    if XP in storages:
        raw = exif.get(XP.key) or ""
        values[XP] = [p.strip() for p in str(raw).replace("\x00", "").split(";") if p.strip()]
    if EXIF_DESC in storages:
        values[EXIF_DESC] = _exif_text(exif.get(EXIF_DESC.key))
    return values


def _read_values(img: pyexiv2.ImageData, storages: tuple[_Storage, ...]) -> tuple[dict[_Storage, list[str]], bool]:
    """Current lists per storage, and whether IPTC may be written (UTF-8 declared, or only ASCII so far).

    A storage that cannot be read is left out, so that it is never planned (overwritten) either.
    """
    values: dict[_Storage, list[str]] = {}
    iptc_ok = True
    xmp = img.read_xmp()
    for s in storages:
        if s.key.startswith("Xmp."):
            values[s] = _alt_list(xmp.get(s.key)) if s.alt else _as_list(xmp.get(s.key))
    if any(s.key.startswith("Iptc.") for s in storages):
        iptc, iptc_ok = _read_iptc(img)
        values.update({s: _as_list(iptc.get(s.key)) for s in storages if s.key.startswith("Iptc.")})
    if any(s.key.startswith("Exif.") for s in storages):
        values.update(_read_exif(img, storages))
    return values, iptc_ok


def _snapshot(data: bytes, path: Path, storages: tuple[_Storage, ...] | None,
              *, captions: bool = False) -> tuple[dict[_Storage, list[str]], str, bool]:
    """Keyword lists of a file, its kind ("jpeg", ... or "sidecar"), IPTC writable; storages=None: by kind.

    ``captions`` adds the kind's caption storages (read only when a call involves a caption).
    """
    with _LOCK:
        img = _open(data, path)
        try:
            mime = img.get_mime_type()
            kind = "sidecar" if mime == "application/rdf+xml" else _MIME.get(mime)
            if storages is None and kind in (None, "sidecar"):
                raise ImageError(f"cannot embed keywords in {mime} files", path=path, hint="use --sidecar")
            wanted = (storages or STORAGES[kind]) + (CAPTIONS[kind or "sidecar"] if captions else ())  # type: ignore[index]
            values, iptc_ok = _read_values(img, wanted)
        except (RuntimeError, UnicodeDecodeError) as exc:
            raise ImageError(f"unreadable metadata ({_first_line(exc)})", path=path) from None
        finally:
            img.close()
    return values, kind or "sidecar", iptc_ok


# pyexiv2 writes every XMP array as rdf:Seq; these are bags by their schemas ("Xmp.dc.subject" -> "dc:subject").
_BAG_FIX = [re.compile(rf"(<{p}>\s*)<rdf:Seq>(.*?)</rdf:Seq>(\s*</{p}>)", re.S)
            for p in (s.key[4:].replace(".", ":", 1) for s in _XMP if s.bag)]


def _apply(data: bytes, path: Path, kind: str, plan: dict[_Storage, list[str]]) -> bytes | None:
    """The file's bytes with ``plan`` applied and checked; None for a sidecar left without any XMP."""
    with _LOCK:
        img = _open(data, path)
        try:
            iptc, exif = _iptc_exif_changes(plan, kind)
            if iptc:
                img.modify_iptc(iptc)
            if exif:
                img.modify_exif(exif)
            xmp = {s.key: ({_XDEFAULT: v[0]} if s.alt else v) if v else None
                   for s, v in plan.items() if s.key.startswith("Xmp.")}
            emptied = False
            if xmp:
                img.modify_xmp(xmp)
                if not img.read_xmp():  # nothing left: exiv2 would keep the old packet (sidecar, WebP)
                    if kind == "sidecar":
                        return None
                    emptied = kind == "webp"
                packet = img.read_raw_xmp()
                fixed = packet
                for rx in _BAG_FIX:  # the packet was just serialised by the XMP SDK: a canonical layout
                    fixed = rx.sub(r"\1<rdf:Bag>\2</rdf:Bag>\3", fixed)
                if fixed != packet:
                    img.modify_raw_xmp(fixed)
            out = img.get_bytes()
            if emptied:
                out = _webp_without_xmp(out, path)
        except RuntimeError as exc:
            raise ImageError(f"exiv2 could not write the metadata ({_first_line(exc)})", path=path) from None
        finally:
            img.close()
    got = _snapshot(out, path, tuple(plan))[0]
    if any(got.get(s) != v for s, v in plan.items()):
        raise ImageError("metadata did not read back as written; file left untouched", path=path,
                         hint="please report this file; use --sidecar meanwhile")
    return out


def _iptc_exif_changes(plan: dict[_Storage, list[str]], kind: str) -> tuple[dict[str, object], dict[str, object]]:
    """What ``plan`` sets in IPTC and EXIF (None deletes), with the IPTC UTF-8 declaration when text is added.

    In a sidecar, exiv2 holds IPTC and EXIF copies of dc:subject/dc:description in memory and turns them
    back into XMP when writing, so they are set to the planned values there too.
    """
    one = lambda s: plan[s][0] if plan[s] else None  # noqa: E731  # a caption storage's text or None
    iptc: dict[str, object] = {}
    exif: dict[str, object] = {}
    if IPTC in plan:
        iptc[IPTC.key] = plan[IPTC] or None
    if IPTC_CAPTION in plan:
        iptc[IPTC_CAPTION.key] = one(IPTC_CAPTION)
    if kind != "sidecar" and any(v is not None for v in iptc.values()):
        iptc = {"Iptc.Envelope.CharacterSet": UTF8, **iptc}
    if XP in plan:
        exif[XP.key] = ";".join(plan[XP]) + "\x00" if plan[XP] else None
    if EXIF_DESC in plan:
        exif[EXIF_DESC.key] = one(EXIF_DESC)
    if kind == "sidecar" and DC in plan:
        iptc[IPTC.key] = plan[DC] or None
    if kind == "sidecar" and DESC in plan:
        iptc[IPTC_CAPTION.key] = exif[EXIF_DESC.key] = one(DESC)
    return iptc, exif


# --- image data and files -----------------------------------------------------------------------------


def _jpeg_image_data(data: bytes, path: Path) -> bytes:
    """A JPEG minus its metadata: every non-APPn/COM segment before the first SOS, and all bytes from it."""
    if data[:2] != b"\xff\xd8":
        raise ImageError("not a JPEG file", path=path)
    i, parts = 2, []
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
        elif marker == 0xDA:
            return b"".join([*parts, data[i:]])
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:
            i += 2
        else:
            end = i + 2 + int.from_bytes(data[i + 2:i + 4], "big")
            if not (0xE0 <= marker <= 0xEF or marker == 0xFE):
                parts.append(data[i:end])
            i = end
    raise ImageError("corrupt or truncated JPEG (no image data found)", path=path, hint="check the file")


def _webp_without_xmp(data: bytes, path: Path) -> bytes:
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


def _image_digest(data: bytes, kind: str, path: Path, *, validate: bool) -> str:
    """What must not change: JPEG tables + scan bytes, else every frame's decoded pixels.

    ``validate`` also decodes a JPEG (at 1/8 scale: cheap) so a truncated photo is refused, not rewritten.
    """
    h = hashlib.sha256()
    if kind == "jpeg":
        h.update(_jpeg_image_data(data, path))
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
        raise ImageError(f"image data cannot be decoded ({_first_line(exc)})", path=path,
                         hint="a damaged or truncated photo is never written to") from None
    return h.hexdigest()


def _atomic_write(target: Path, data: bytes, before: tuple[int, int, int] | None, *,
                  times: tuple[int, int] | None, new_mode: int, path: Path) -> None:
    """Dot-temp in the same folder, same mode/owner/xattrs, ``times`` or now, fsync, rename over, fsync folder.

    The temp's name carries our process id, so a run killed with ``kill -9`` between writing the
    temp and renaming it leaves a file that the next run writing in that folder recognises as
    stale (its writer is gone) and removes; the photo itself was never touched.
    """
    _remove_stale_temps(target.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=_TEMP_SUFFIX, dir=target.parent)
    except OSError as exc:
        raise ImageError(f"cannot write in its folder ({exc.strerror})", path=path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if before is None:
                os.chmod(tmp, new_mode)
            else:
                shutil.copystat(target, tmp)  # mode, xattrs (and times, set below)
                st = os.stat(target)
                with suppress(OSError):
                    os.chown(tmp, st.st_uid, st.st_gid)
                    os.chmod(tmp, stat.S_IMODE(st.st_mode))  # chown may clear setgid bits
            if times:
                os.utime(tmp, ns=times)
            else:
                os.utime(tmp)
            os.fsync(f.fileno())
        with _LOCK:
            _check_unchanged(target, before, path)
            os.replace(tmp, target)
    except BaseException as exc:
        with suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise ImageError(f"could not write the metadata ({exc.strerror or exc})", path=path) from None
        raise
    _fsync_dir(target.parent)


def _remove_stale_temps(folder: Path) -> None:
    """Delete ``.NAME.PID.xxxx.ramcli-tmp`` files in ``folder`` whose process no longer runs.

    Once per folder per process: our own later temps carry our pid, and a listdir per photo
    would cost seconds in a folder of 10,000.
    """
    with _LOCK:
        if folder in _SWEPT:
            return
        _SWEPT.add(folder)
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        m = _TEMP_NAME.fullmatch(name)
        if m and not _process_alive(int(m.group(1))):
            with suppress(OSError):
                os.unlink(folder / name)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _check_unchanged(target: Path, before: tuple[int, int, int] | None, path: Path) -> None:
    if _state(target) != before:
        raise ImageError("changed on disk while ramcli was writing it; left as the other program wrote it",
                         path=path, hint="run again")


def _state(p: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


def _fsync_dir(folder: Path) -> None:
    with suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _writable(p: Path) -> bool:
    try:
        return os.access(p, os.W_OK) and bool(os.stat(p).st_mode & 0o222)
    except OSError:
        return False


def _guard(fn: Callable[[Path], T], path: Path) -> T:
    """``fn(path)`` with OSErrors as ImageErrors naming the file."""
    try:
        return fn(path)
    except FileNotFoundError:
        raise ImageError("file not found", path=path) from None
    except OSError as exc:
        raise ImageError(f"cannot read it ({exc.strerror})", path=path, hint="check its permissions") from None
