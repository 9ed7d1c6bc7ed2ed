"""The one event type every pipeline run yields: what happened to one path.

`ramcli tag`, its `--dry-run`, `untag` and re-scoring (`add-tag`, `tags apply`) all report through
:class:`Event`, so the CLI has one renderer and scripts one thing to read (``Library.tag`` yields them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ramcli.errors import printable

if TYPE_CHECKING:
    from ramcli.runtime.tagging import Tag

#: Every status an event can have, in the order a run's summary lists them.
STATUSES = ("tagged", "retagged", "unchanged", "updated", "moved", "copied", "pruned", "restored", "untagged",
            "skipped", "error")


@dataclass
class Event:
    """What happened to one path.

    ``tags`` are the keywords (in the run's ``--lang``); ``scored`` is set only by the report sink
    (`--dry-run`), which shows every chosen tag with its score instead of writing anything — there
    ``tags`` holds one label per scored tag ("dog", "狗" or "dog 狗" as ``--lang`` says).
    """

    path: Path
    status: str  # one of STATUSES
    tags: list[str] = field(default_factory=list)
    error: str | None = None
    moved_from: str | None = None
    caption: str | None = None
    scored: list[Tag] | None = None  # report sink only
    model: str | None = None  # report sink only

    @property
    def failed(self) -> bool:
        return self.status == "error"

    def as_dict(self) -> dict[str, object]:
        """The event's `--json` line; a report (dry-run) line keeps the shape it always had."""
        if self.model is not None:  # the report sink
            if self.error is not None:
                return {"path": printable(self.path), "model": self.model, "error": self.error}
            d: dict[str, object] = {"path": printable(self.path), "model": self.model,
                                    "tags": [t.as_dict() for t in self.scored or []]}
            if self.caption is not None:
                d["caption"] = self.caption
            return d
        d = {"path": printable(self.path), "status": self.status}
        if self.status in {"tagged", "moved", "copied"}:
            d["tags"] = self.tags
            if self.caption is not None:
                d["caption"] = self.caption
        if self.moved_from:
            d["moved_from"] = self.moved_from
        if self.error:
            d["error"] = self.error
        return d
