"""The user's feedback between the index and the files: verdicts as keywords, and keywords as verdicts.

A verdict is kept per image hash and English tag name in the index (``feedback``); a file speaks in
keywords (English, Chinese or both, `--lang`). This module translates both ways, once, for the tag
run's sink and for re-scoring:

* index -> file: :meth:`TagNames.keywords_of` gives the keywords of rejected / confirmed tags, which the
  keyword sync carries into the file's record (``ramcli:rejected``), so another index or machine knows;
* file -> index: :func:`learn` turns what a sync found in a file into verdicts of source ``file``: a
  ramcli keyword the user deleted in another app (the file's refusals) is a rejection, and a keyword of
  the user's that is a tag name of the model is a confirmation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ramcli.index import FeedbackRow
from ramcli.models import store
from ramcli.pipeline.keywords import Synced, keywords, zh_names
from ramcli.vocab import custom

if TYPE_CHECKING:
    from ramcli.index import Index

Names = Callable[[Sequence[tuple[int, str]]], list[str]]


@dataclass
class TagNames:
    """A model's tag names (built-in and custom): tag index by English name, and English name by keyword."""

    index: dict[str, int]  # English name -> tag index
    by_keyword: dict[str, str]  # keyword (English or Chinese name) -> English name
    zh: dict[int, str]

    @classmethod
    def of(cls, ix: Index, model: str) -> TagNames:
        """From the installed model's tag lists (no model is loaded) and the index's custom tags."""
        names = store.get(model).tag_names if store.is_installed(model) else []
        zh = zh_names(enumerate((store.get(model).tag_names_zh if store.is_installed(model) else None) or []))
        index = {n: i for i, n in enumerate(names)}
        for t in custom.load(ix):
            index[t.name] = t.tag_index
            if t.name_zh:
                zh[t.tag_index] = t.name_zh
        by_keyword = {n: n for n in index}
        by_keyword.update({zh[i]: n for n, i in index.items() if i in zh})
        return cls(index, by_keyword, zh)

    def keywords_of(self, tags: Sequence[str], names: Names | None = None) -> list[str]:
        """The keywords ``tags`` (English names) are written as: ``names`` (the run's language), or all."""
        known = [(self.index[t], t) for t in tags if t in self.index]
        if names is not None:
            return names(known)
        return keywords(known, self.zh, "both") + [t for t in tags if t not in self.index]

    def split(self, verdicts: Mapping[str, str] | None, names: Names | None = None) -> tuple[list[str], list[str]]:
        """(keywords to refuse, keywords to allow again) for an image's verdicts."""
        v = verdicts or {}
        return (self.keywords_of([t for t, x in v.items() if x == "reject"], names),
                self.keywords_of([t for t, x in v.items() if x == "confirm"], names))


def learn(ix: Index, digest: str, path: str, synced: Synced, names: TagNames,
          known: Mapping[str, str] | None = None) -> list[FeedbackRow]:
    """Verdicts of source ``file`` from what one photo's file says (inside ``ix.transaction()``).

    ``known``: the image's verdicts before the sync (re-stating one changes nothing). A new rejection also
    takes the tag off the image's rows, so search and `tags list` stop counting it. Returns the verdicts
    that changed the index."""
    have = known or {}
    rows = [FeedbackRow(digest, tag, "reject", "file", path) for k in synced.rejected
            if (tag := names.by_keyword.get(k)) and have.get(tag) != "reject"]
    rejected = {r.tag for r in rows}
    rows += [FeedbackRow(digest, tag, "confirm", "file", path) for k in synced.theirs
             if (tag := names.by_keyword.get(k)) and tag not in rejected and have.get(tag) is None]
    changed = ix.put_feedback(rows)
    for r in changed:
        if r.verdict == "reject":
            ix.drop_tag_named(digest, r.tag)
    return changed
