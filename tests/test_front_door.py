"""`from ramcli import Library`: the front door scripts use, and the CLI is a renderer over.

Real index files, real photos written and re-read, the tiny random RAM++ and CLIP text encoder
built by ramcli's own conversion code."""

from __future__ import annotations

import pyexiv2
import pytest

from conftest import make_photo


def _subjects(path) -> list[str]:
    img = pyexiv2.Image(str(path))
    try:
        return list(img.read_xmp().get("Xmp.dc.subject", []))
    finally:
        img.close()


def test_library_tags_searches_and_adds_a_tag(tmp_path, tiny_model, clip_model) -> None:
    from ramcli import Event, Library, SearchOptions, TagOptions
    from ramcli.runtime.tagging import Selection

    folder = tmp_path / "photos"
    photos = [make_photo(folder / f"p{i}.jpg", seed=i) for i in range(3)]
    lib = Library(tmp_path / "index.db", model="tiny_ram_plus", download=False)

    # a dry run: tags with scores, nothing written anywhere
    report = list(lib.tag([folder], TagOptions(dry_run=True, selection=Selection(threshold=0, top_k=3))))
    assert [e.status for e in report] == ["tagged"] * 3
    assert all(isinstance(e, Event) and len(e.scored or []) == 3 for e in report)
    assert not (tmp_path / "index.db").exists() and all(_subjects(p) == [] for p in photos)

    run = lib.tag([folder], TagOptions(selection=Selection(threshold=0, top_k=3)))
    events = list(run)
    assert sorted(e.path.name for e in events if e.status == "tagged") == ["p0.jpg", "p1.jpg", "p2.jpg"]
    assert run.counts["tagged"] == 3 and run.failed == 0
    first = next(e for e in events if e.path.name == "p0.jpg")
    assert _subjects(photos[0]) == first.tags  # the keywords are in the file
    # again: nothing to do
    assert {e.status for e in lib.tag([folder])} == {"unchanged"}

    hits = lib.search(first.tags[0], SearchOptions(limit=5))
    assert hits and hits[0].via == "tag" and str(photos[0]) in [h.path for h in hits]
    assert lib.search("a quiet lake at dawn", SearchOptions(limit=2))  # open-set, through the CLIP text encoder

    grown = lib.add_tag("my garden", ["a cottage garden with roses"], threshold=0.001)
    applied = list(grown)
    assert [t.name for t in grown.defined] == ["my garden"]
    assert {e.status for e in applied} == {"retagged"} and len(applied) == 3
    assert all("my garden" in _subjects(p) for p in photos)
    assert [t["name"] for t in lib.tags(custom_only=True)] == ["my garden"]

    gone = list(lib.untag([folder]))
    assert [e.status for e in gone] == ["restored"] * 3 and all(_subjects(p) == [] for p in photos)


def test_library_without_index_says_so(tmp_path) -> None:
    from ramcli import Library
    from ramcli.errors import RamcliError

    with pytest.raises(RamcliError, match="there is no index yet"):
        Library(tmp_path / "none.db").search("dog")
