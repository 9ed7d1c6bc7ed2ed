"""The keywords ramcli gave a photo, kept in the photo's own metadata (or its XMP sidecar), safely.

This is the public API; each concern lives in its own module:

* ``fields``: the logical fields, "the keywords ramcli gave this photo" and "the description ramcli
  wrote", each declared once as the storage styles it lives in per container; ``styles``: one class per
  storage style (how it reads, renders and plans its entries); ``text``: cleaning and comparing text.
* ``sidecar``: embed or sidecar, and the sidecar's name; ``exiv``: pyexiv2 I/O from bytes;
  ``imagedata``: the picture a write must not change; ``safefile``: the atomic replacement.

Only keywords ramcli wrote are ever removed (the caller remembers them); the user's keywords keep their
place and order in every field. A write rebuilds the file in memory with pyexiv2 (exiv2 0.28), checks
the result (our fields read back as planned; JPEG tables and scan data byte-identical, other formats'
decoded pixels identical), then replaces the original safely (``safefile``). Nothing needing a change
means nothing is written. Measured library facts behind these choices: docs/metadata.md.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ramcli import faults
from ramcli.errors import ImageError
from ramcli.files import read_regular
from ramcli.metadata import exiv, provenance, safefile
from ramcli.metadata.exiv import UTF8, Snapshot
from ramcli.metadata.fields import FIELDS, CaptionChange, CaptionStatus, caption, keywords
from ramcli.metadata.imagedata import decodes, image_digest, xmp_packets
from ramcli.metadata.safefile import State, guard, state, writable
from ramcli.metadata.safefile import atomic_write as _atomic_write
from ramcli.metadata.sidecar import EMBED, EMPTY_PACKET, naming_for, sidecar_paths, stem_shared
from ramcli.metadata.sidecar import sidecar_path as _sidecar_path
from ramcli.metadata.sidecar import storage_for as _storage_for
from ramcli.metadata.styles import Style
from ramcli.metadata.text import blank, clean_caption, clean_keywords, fold, nfc

__all__ = ["EMBED", "UTF8", "CaptionStatus", "Intent", "Journal", "WriteOptions", "WriteResult", "forget_sidecars",
           "read_caption", "read_keywords", "remove_keywords", "sidecar_path", "storage_for", "write_keywords"]
_SCHEMA: tuple[Style, ...] = (*(s for f in FIELDS for s in f.styles), *provenance.STYLES)


@dataclass(frozen=True)
class WriteOptions:
    """How keywords are stored; the CLI's --sidecar/--sidecar-name/--touch map onto these."""

    sidecar: bool = False  # force an XMP sidecar even for formats that can embed
    # "auto": IMG_0001.xmp for camera RAW, photo.jpg.xmp for the rest | "ext": photo.jpg.xmp (darktable/digiKam/
    # Immich) | "stem": photo.xmp (Lightroom)
    sidecar_name: str = "auto"
    hierarchical_root: str | None = "ramcli"  # lr:hierarchicalSubject "ramcli|dog"; None -> plain "dog"
    touch: bool = False  # False: restore the photo's original mtime/atime after writing
    # Broader tags above a keyword in the hierarchical storages, outermost first: {"red kite": ("bird",)}
    # gives "ramcli|bird|red kite" (custom.ancestry: the parents of `ramcli add-tag --parent`).
    ancestry: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


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
    # What is ramcli's in the file after the call (from the file's own record where it has one).
    ours: list[str] = field(default_factory=list)
    caption_ours: str | None = None
    # The user's verdicts as the file holds them after the call: ramcli keywords refused (``ramcli:rejected``,
    # and ours the user deleted from dc:subject), and the keywords in dc:subject that are not ramcli's.
    rejected: list[str] = field(default_factory=list)
    theirs: list[str] = field(default_factory=list)

    @property
    def storage(self) -> str:
        """Where the keywords are: "embed", "sidecar-ext" (photo.jpg.xmp) or "sidecar-stem" (photo.xmp)."""
        if not self.sidecar:
            return "embed"
        return "sidecar-ext" if self.target.name == self.path.name + ".xmp" else "sidecar-stem"


@dataclass(frozen=True)
class Intent:
    """A file about to be replaced, as the journal hears of it before the replace (the write-ahead intent)."""

    photo: Path
    target: Path  # the photo itself or its sidecar
    old: bytes | None  # None: the target did not exist (a new sidecar)
    new: bytes | None  # None: the target is about to be deleted (an emptied sidecar)
    claimed: bool  # the old file already held something of ramcli's
    keywords: list[str]  # ramcli's keywords in the new file


Journal = Callable[[Intent], None]


def storage_for(path: Path, opts: WriteOptions) -> str:
    """``"embed"`` or ``"sidecar"`` for ``path`` under ``opts`` (see ``sidecar.storage_for``)."""
    return _storage_for(path, opts.sidecar)


def sidecar_path(path: Path, opts: WriteOptions) -> Path:
    """Where ramcli writes the sidecar: ``photo.jpg.xmp`` ("ext") or ``photo.xmp`` ("stem", Lightroom).

    Always the chosen naming, even when the other one exists (read_keywords reads both).
    """
    return _sidecar_path(path, opts.sidecar_name)


def read_keywords(path: Path, opts: WriteOptions = WriteOptions()) -> set[str]:
    """Every keyword the photo carries: dc:subject, IPTC Keywords, XPKeywords and both sidecar namings.

    Embedded metadata of formats ramcli does not embed into (HEIC, RAW), and of pictures whose own metadata
    exiv2 cannot read (those get a sidecar), is read where exiv2 can, and silently skipped where it cannot;
    their sidecar is the storage of record.
    """
    path = Path(path)
    data = guard(read_regular, path)
    found: set[str] = set()
    try:
        values = _snapshot(data, path, keywords.plain_styles).values
        found.update(v for s in keywords.plain_styles for v in values.get(s, []))
    except ImageError:
        if path.suffix.lower() in EMBED and not decodes(data):
            raise
    for side in sidecar_paths(path):
        if side.is_file():
            found.update(_snapshot(guard(read_regular, side), side, (keywords.primary,)).values.get(
                keywords.primary, []))
    return found


def read_caption(path: Path, opts: WriteOptions = WriteOptions()) -> str | None:
    """The photo's description as a photo app would show it, or None.

    The storage ramcli writes to (``opts``) is read first, then the others (embedded, ``photo.ext.xmp``,
    ``photo.xmp``); within one, XMP dc:description (x-default) before EXIF ImageDescription before IPTC
    Caption-Abstract. Camera placeholders ("OLYMPUS DIGITAL CAMERA") are not descriptions.
    """
    path = Path(path)
    guard(os.stat, path)  # a missing photo is an error, as for read_keywords, even when its sidecar exists
    sources = [path, *sidecar_paths(path)]
    if storage_for(path, opts) == "sidecar":
        sources.insert(0, sources.pop(sources.index(sidecar_path(path, opts))))
    for source in sources:
        if source is path or source.is_file():
            for text in _captions_in(source, required=source is path and path.suffix.lower() in EMBED):
                return text
    return None


def write_keywords(path: Path, ours: list[str], previous_ours: list[str], opts: WriteOptions = WriteOptions(), *,
                   caption: str | None = None, previous_caption: str | None = None,
                   overwrite_description: bool = False, model: str | None = None,
                   journal: Journal | None = None, rejected: Sequence[str] = (),
                   accepted: Sequence[str] = ()) -> WriteResult:
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

    ``rejected``: keywords the user refused elsewhere (`ramcli tags reject`, the index's verdicts): never
    written, and added to the file's ``ramcli:rejected``, so another index or machine knows. ``accepted``
    (`ramcli tags confirm`): keywords taken off the file's refusals, so they may be written again.
    """
    change = None if caption is None else CaptionChange(clean_caption(caption) or None,
                                                         clean_caption(previous_caption or "") or None,
                                                         overwrite_description)
    return _update(Path(path), clean_keywords(ours), clean_keywords(previous_ours), opts, change, model=model,
                   journal=journal, rejected=clean_keywords(list(rejected)), accepted=clean_keywords(list(accepted)))


def remove_keywords(path: Path, previous_ours: list[str], opts: WriteOptions = WriteOptions(), *,
                    previous_caption: str | None = None, journal: Journal | None = None) -> WriteResult:
    """``ramcli untag``: remove exactly ``previous_ours`` from every field of the storage ``opts`` selects.

    ``previous_caption`` (what ramcli wrote) is removed from each description field that still holds
    exactly it; a description the user has edited since is theirs and stays ("kept").
    A sidecar left with no XMP property at all is deleted (exiv2 cannot write an empty one, and an
    empty sidecar carries nothing); a sidecar with anything else in it (another app's data) stays.
    """
    previous = clean_caption(previous_caption or "") or None
    change = CaptionChange(None, previous, False)
    return _update(Path(path), [], clean_keywords(previous_ours), opts, change, journal=journal, forget=True)


def forget_sidecars(path: Path, *, journal: Journal | None = None) -> list[Path]:
    """A photo that is gone (moved elsewhere, deleted): take ramcli's keywords, caption and record out of the
    sidecars it left behind, as ``untag`` would (a sidecar ramcli created and nothing else uses is deleted;
    another app's data stays). Only a sidecar whose record names this photo is touched: ``photo.xmp`` may be
    another photo's. Returns the sidecars changed. Embedded keywords went with the file; nothing to do there.
    """
    path = Path(path)
    if os.path.lexists(path):
        return []
    done = []
    for naming in ("ext", "stem"):
        side = _sidecar_path(path, naming)
        if not side.is_file():
            continue
        record = provenance.read(_snapshot(guard(read_regular, side), side, (keywords.primary,)).values)
        if record is None or record.photo not in (None, path.name):
            continue
        opts = WriteOptions(sidecar=True, sidecar_name=naming)
        result = _update(path, [], list(record.keywords), opts, CaptionChange(None, record.caption, False),
                         journal=journal, forget=True)
        if result.changed:
            done.append(side)
    return done


# --- one update: read, plan per field, check, replace ------------------------------------------------


def _update(path: Path, ours: list[str], previous: list[str], opts: WriteOptions,
            change: CaptionChange | None = None, *, model: str | None = None, journal: Journal | None = None,
            forget: bool = False, rejected: Sequence[str] = (), accepted: Sequence[str] = ()) -> WriteResult:
    """Read the target, plan per field (and ramcli's record), and write only if the plan is not empty.

    ``forget`` (untag): ramcli's record goes with everything it lists.
    """
    side = storage_for(path, opts) == "sidecar"
    real = sidecar_path(path, opts) if side else Path(os.path.realpath(path))
    # before any read: our reads must not move the atime we restore. A photo gone (moved, deleted) while its
    # sidecar is being forgotten: the sidecar stands alone.
    photo_st = guard(os.stat, real if forget and side and not os.path.lexists(path) else path)
    before = state(real)  # compared again just before the rename: another writer's change wins
    data = guard(read_regular, real) if before else EMPTY_PACKET
    if not side and xmp_packets(data) > 1:
        # exiv2 keeps one XMP packet and drops the others: the user's data in a second packet would be lost
        return _update(path, ours, previous, replace(opts, sidecar=True), change, model=model, journal=journal,
                       forget=forget, rejected=rejected, accepted=accepted)
    if side and before and not writable(real):
        raise ImageError("its sidecar is read-only", path=real, hint="make it writable to update the keywords")
    try:
        snap = _snapshot(data, real, keywords.styles_for("sidecar") if side else None, captions=change is not None)
    except ImageError:
        if side or not decodes(data):  # damaged, truncated or no picture at all: never written, an error
            raise
        # A sound picture whose own metadata exiv2 cannot take (malformed XMP, EXIF offsets out of bounds,
        # a GIF named .jpg): a rewrite would drop what exiv2 could not read, so the photo is left alone and
        # ours goes into its sidecar, as for two XMP packets.
        return _update(path, ours, previous, replace(opts, sidecar=True), change, model=model, journal=journal,
                       forget=forget, rejected=rejected, accepted=accepted)
    values, kind = snap.values, snap.kind
    record = provenance.read(values)
    if side and naming_for(path, opts.sidecar_name) == "stem" and (
            (record is not None and record.photo not in (None, path.name))
            or (not forget and stem_shared(path) and (record is None or record.photo != path.name))):
        # photo.xmp is (or could be) another photo's sidecar: never share it, never empty it
        if forget:
            return WriteResult(path, real, side, [], [], False, None)
        return _update(path, ours, previous, replace(opts, sidecar_name="ext"), change, model=model,
                       journal=journal, rejected=rejected, accepted=accepted)
    if record is not None:  # the file's own record wins over what the caller (the index) remembers
        previous = list(record.keywords)
        if change is not None:
            change = CaptionChange(change.text, record.caption, change.overwrite)
    foreign = _embedded_captions(path) if side and change is not None else []
    if not snap.iptc_writable:  # legacy 8-bit IPTC: read it, never rewrite it
        for s in [s for s in values if s.block == "iptc"]:
            held = values.pop(s)
            if s in caption.styles:
                foreign.append(held)
    carried = {fold(v) for s in keywords.plain_styles for v in values.get(s, [])}
    exact = {nfc(v) for s in keywords.plain_styles for v in values.get(s, [])}
    # A keyword of ours the user removed (in any app) is a rejection: never written again. dc:subject is
    # the field every app edits; Windows' XPKeywords or IPTC left behind by an older app do not count.
    subject = {fold(v) for v in values.get(keywords.primary, [])}
    found = [] if record is None else [*record.rejected, *(k for k in record.keywords if fold(k) not in subject)]
    refused = [k for k in dict.fromkeys([*found, *([] if forget else rejected)]) if k not in accepted]
    want = [k for k in ours if k not in refused]
    stale = [k for k in previous if k not in want]
    plan = keywords.plan(values, kind, want, stale, opts.hierarchical_root, opts.ancestry)
    status: CaptionStatus | None = None
    if change is not None:
        caption_plan, status = caption.plan(values, kind, change, foreign)
        plan.update(caption_plan)
    mine = [k for k in want if k in previous or fold(k) not in carried]
    if change is None:
        caption_ours = record.caption if record is not None else None
    elif change.text is None or status == "removed":
        caption_ours = None
    else:
        caption_ours = change.text if status in ("written", "unchanged") else change.previous
    after = None if forget else provenance.Record(tuple(mine), caption_ours, tuple(refused),
                                                   path.name if side else None,
                                                   model=model or (record.model if record else None))
    if (record is not None or (after is not None and not after.empty)) and (plan or after != record):
        plan.update(provenance.plan(after))
    theirs = [v for v in values.get(keywords.primary, []) if v not in previous and v not in mine]
    result = WriteResult(path, real, side, [k for k in want if fold(k) not in carried],
                         [k for k in stale if k in exact], bool(plan), status, mine, caption_ours, refused, theirs)
    if plan:
        claimed = record is not None or any(nfc(k) in exact for k in previous)
        _write(path, real, data, kind, plan, before=before, photo_st=photo_st, opts=opts,
               journal=journal, claimed=claimed, keywords=mine, fault="untag-after-replace" if forget else
               "after-replace")
    return result


def _write(path: Path, real: Path, data: bytes, kind: str, plan: dict[Style, list[str]], *,
           before: State | None, photo_st: os.stat_result, opts: WriteOptions, journal: Journal | None,
           claimed: bool, keywords: list[str], fault: str) -> None:
    """Apply ``plan`` to ``data`` and put the result at ``real`` (the photo or its sidecar), safely.

    The journal hears of the write (old and new bytes) before the file is replaced: that is the
    write-ahead intent a killed run is recovered from, and where the undo recipe comes from.
    """
    side = kind == "sidecar"
    if side and not writable(real.parent):
        raise ImageError("its folder is read-only, so no sidecar can be written", path=path,
                         hint="make the folder writable, or tag a writable copy")
    pixels = None if side else image_digest(data, kind, real, validate=True)
    out = _apply(data, real, kind, plan)
    if pixels is not None and out is not None and image_digest(out, kind, real, validate=False) != pixels:
        raise ImageError("writing metadata would change the image data; file left untouched", path=path,
                         hint="please report this file; use --sidecar meanwhile")
    if journal is not None:
        journal(Intent(path, real, data if before else None, out, claimed, keywords))
    faults.point("before-replace")
    if out is None:  # a sidecar left empty
        safefile.remove(real, before, path, "its emptied sidecar")
    else:
        mode = stat.S_IMODE(photo_st.st_mode) & 0o666 | stat.S_IWUSR  # a new sidecar: like its photo, but writable
        times = None if side or opts.touch else (photo_st.st_atime_ns, photo_st.st_mtime_ns)  # as before our read
        _atomic_write(real, out, before, times=times, new_mode=mode, path=path)
    faults.point(fault)


def _apply(data: bytes, path: Path, kind: str, plan: dict[Style, list[str]]) -> bytes | None:
    """The file's bytes with ``plan`` applied and checked; None for a sidecar left without any XMP."""
    out = exiv.rewrite(data, path, kind, plan, _SCHEMA)
    if out is None:
        return None
    got = _snapshot(out, path, tuple(plan)).values
    if any(got.get(s) != v for s, v in plan.items()):
        raise ImageError("metadata did not read back as written; file left untouched", path=path,
                         hint="please report this file; use --sidecar meanwhile")
    return out


def _snapshot(data: bytes, path: Path, styles: Sequence[Style] | None, *, captions: bool = False) -> Snapshot:
    """What a file holds: ``styles``, or (None) the keyword styles of its kind, which must be embeddable,
    and ramcli's record. ``captions`` adds the kind's caption styles (read only when a call involves a caption).
    """
    def want(kind: str | None, mime: str) -> tuple[Style, ...]:
        if styles is None and kind in (None, "sidecar"):
            raise ImageError(f"cannot embed keywords in {mime} files", path=path, hint="use --sidecar")
        chosen = tuple(styles) if styles is not None else keywords.styles_for(kind or "sidecar")
        return chosen + (caption.styles_for(kind or "sidecar") if captions else ()) + provenance.STYLES

    return exiv.read(data, path, want)


def _embedded_captions(path: Path) -> list[list[str]]:
    """Descriptions embedded in a photo whose storage is its sidecar (HEIC, RAW, read-only, --sidecar):
    apps that read the sidecar would hide them behind ours, so they count as the user's. Best effort:
    what exiv2 cannot read (many RAW/HEIC files) is no description."""
    try:
        values = _snapshot(guard(read_regular, path), path, caption.styles).values
    except ImageError:
        return []
    return [v for v in values.values() if v]


def _captions_in(path: Path, *, required: bool) -> list[str]:
    """The non-blank descriptions in one file, best storage first; ``required``: errors are raised."""
    data = None
    try:
        data = guard(read_regular, path)
        values = _snapshot(data, path, caption.styles).values
    except ImageError:
        if required and not (data and decodes(data)):  # a picture exiv2 cannot read: its sidecar speaks for it
            raise
        return []
    return [clean_caption(v[0]) for s in caption.styles if (v := values.get(s)) and not blank(v[:1])]
