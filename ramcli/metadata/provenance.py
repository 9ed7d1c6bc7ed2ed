"""ramcli's record in the photo itself: which keywords and which caption ramcli wrote.

The index also knows, but an index can be lost, rebuilt, be a second index over the same library, or
sit on another machine; and a run can be killed between replacing a file and committing its index rows.
So every file ramcli writes carries its own record, in a private XMP namespace::

    ramcli:agent     "ramcli 0.1.0"          the record's marker
    ramcli:model     "ram_plus_swin_large_14m"
    ramcli:date      "2026-12-04T21:19:24Z"  the last write
    ramcli:keywords  bag                     the keywords ramcli put there (and the user did not have)
    ramcli:caption   text                    the description ramcli wrote
    ramcli:rejected  bag                     ramcli keywords the user removed: never written again
    ramcli:photo     "IMG_1.gif"             in a sidecar: the photo it belongs to

The rules (the file wins over the index, and the user wins over ramcli):

* a keyword is ramcli's if and only if the record lists it; `untag` removes exactly those;
* a keyword ramcli wrote that the user removed from the photo (in any app) is a rejection: it is not
  written again, and the record keeps it under ``rejected``;
* a user who deletes a keyword from ``ramcli:keywords`` by hand makes it theirs (`untag` leaves it);
  deleting the whole record makes every keyword theirs;
* a file without a record (tagged before records existed) falls back to what the index says.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from ramcli import __version__
from ramcli.metadata.fields import XMP
from ramcli.metadata.styles import Style, XmpBag, XmpText

NAMESPACE = "http://ns.ramcli.dev/xmp/1.0/"
PREFIX = "ramcli"

agent = XmpText("Xmp.ramcli.agent", where=XMP)
model = XmpText("Xmp.ramcli.model", where=XMP)
date = XmpText("Xmp.ramcli.date", where=XMP)
keywords = XmpBag("Xmp.ramcli.keywords", where=XMP)
caption = XmpText("Xmp.ramcli.caption", where=XMP)
rejected = XmpBag("Xmp.ramcli.rejected", where=XMP)
photo = XmpText("Xmp.ramcli.photo", where=XMP)
STYLES: tuple[Style, ...] = (agent, model, date, keywords, caption, rejected, photo)


@dataclass(frozen=True)
class Record:
    """What the record says; ``model``/``date`` describe the last write and are not compared."""

    keywords: tuple[str, ...] = ()
    caption: str | None = None
    rejected: tuple[str, ...] = ()
    photo: str | None = None
    model: str | None = field(default=None, compare=False)
    date: str | None = field(default=None, compare=False)

    @property
    def empty(self) -> bool:
        """Nothing of ramcli's left to record: the record goes."""
        return not (self.keywords or self.caption or self.rejected)


def read(values: Mapping[Style, list[str]]) -> Record | None:
    """The record among a snapshot's values, or None when the file has none."""
    if not values.get(agent):
        return None

    def one(s: Style) -> str | None:
        got = values.get(s) or []
        return got[0] if got else None

    return Record(tuple(values.get(keywords) or ()), one(caption), tuple(values.get(rejected) or ()), one(photo),
                  one(model), one(date))


def plan(record: Record | None) -> dict[Style, list[str]]:
    """The entries that make a file carry ``record`` (None or empty: no record at all)."""
    if record is None or record.empty:
        return {s: [] for s in STYLES}
    stamp = record.date or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {agent: [f"ramcli {__version__}"], model: [record.model] if record.model else [], date: [stamp],
            keywords: list(record.keywords), caption: [record.caption] if record.caption else [],
            rejected: list(record.rejected), photo: [record.photo] if record.photo else []}
