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

import glob
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ramcli.index import FeedbackRow
from ramcli.models import store
from ramcli.pipeline.keywords import Synced, keywords, zh_names
from ramcli.vocab import custom

if TYPE_CHECKING:
    from ramcli.index import Index, PhotoRow
    from ramcli.vocab.custom import CustomTag

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


# ---------------------------------------------------------------- `ramcli tags confirm / reject`

GLOB = frozenset("*?[")


def targets(ix: Index, paths: Sequence[str | Path], query: str | None = None,
            model: str | None = None) -> tuple[list[PhotoRow], list[str]]:
    """The indexed photos a verdict is about, and the arguments that named none.

    ``paths``: photos, folders (every indexed photo below) or glob patterns the shell did not expand
    (``"~/Photos/2019/*.jpg"``); ``query``: the photos `ramcli search QUERY` shows (its default limit)."""
    found: dict[str, PhotoRow] = {}
    missing: list[str] = []
    for arg in paths:
        text = os.path.expanduser(str(arg))
        names = sorted(glob.glob(text, recursive=True)) if GLOB & set(text) and not os.path.lexists(text) else [text]
        hit = False
        for name in names:
            p = Path(name).absolute()
            rows = [ix.photo(str(p))] if not p.is_dir() else list(ix.photos_under([p]))
            for row in rows:
                if row is not None:
                    found[row.path] = row
                    hit = True
        if not hit:
            missing.append(str(arg))
    if query is not None:
        from ramcli.search.ranking import SearchOptions, open_searcher

        for h in open_searcher(ix, model).search(query, SearchOptions()):
            row = ix.photo(h.path)
            if row is not None:
                found[row.path] = row
    return list(found.values()), missing


def tag_for_verdict(ix: Index, name: str, model: store.InstalledModel) -> CustomTag:
    """The tag a verdict names, in the shape re-scoring takes: a custom tag, else one of the model's."""
    from ramcli.vocab import tagops

    return custom.get(ix, name) or tagops.builtin_as_custom(model, name, ix)


def give(ix: Index, verdict: str, tag: str, photos: Sequence[PhotoRow], source: str = "cli") -> list[FeedbackRow]:
    """Store the verdict on every photo's image; a rejected tag also leaves the images' rows at once."""
    rows = [FeedbackRow(p.hash, tag, verdict, source, p.path) for p in photos]
    with ix.transaction():
        changed = ix.put_feedback(rows)
        for r in rows if verdict == "reject" else []:
            ix.drop_tag_named(r.hash, tag)
    return changed
