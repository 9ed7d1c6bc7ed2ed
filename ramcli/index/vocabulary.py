"""The user's vocabulary (``custom_tags``, ``disabled_tags``) and what the index knows about tag
names across all images (for ``ramcli tags list`` and for search without the model installed).
A custom tag's rows in ``image_tags`` have ``tag_index = -id``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ramcli.index.base import Tables
from ramcli.index.connection import now
from ramcli.index.rows import EMBED_DIM, CustomTagRow

if TYPE_CHECKING:
    import numpy as np

_COLUMNS = "id, name, name_zh, parent, threshold, descriptions, embeds, encoder, dirty"


def _custom(r: tuple) -> CustomTagRow:
    import numpy as np

    id_, name, zh, parent, threshold, descriptions, embeds, encoder, dirty = r
    return CustomTagRow(int(id_), name, zh, parent, float(threshold), tuple(json.loads(descriptions or "[]")),
                        np.frombuffer(embeds, np.float32).reshape(-1, EMBED_DIM), encoder or "", bool(dirty))


class Vocabulary(Tables):
    # ---- custom tags
    def custom_tags(self) -> list[CustomTagRow]:
        """Every definition, oldest first."""
        return [_custom(r) for r in self.conn.execute(f"select {_COLUMNS} from custom_tags order by id")]

    def custom_tag(self, name: str) -> CustomTagRow | None:
        row = self.conn.execute(f"select {_COLUMNS} from custom_tags where name = ?", [name]).fetchone()
        return _custom(row) if row else None

    def custom_tag_names(self) -> list[tuple[str, str]]:
        """(name, Chinese name or "") of every custom tag; no numpy, for search's vocabulary."""
        return [(r[0], r[1]) for r in self.conn.execute("select name, coalesce(name_zh, '') from custom_tags")]

    def put_custom_tag(self, name: str, embeds: np.ndarray, *, descriptions: Sequence[str], threshold: float,
                       name_zh: str | None, parent: str | None, encoder: str) -> None:
        """Create or redefine ``name`` (keeping its id, so its ``image_tags`` rows stay its own),
        marked pending (``dirty``) until applied. Inside ``index.transaction()``."""
        import numpy as np

        fields = {"name_zh": name_zh, "parent": parent, "threshold": float(threshold),
                  "descriptions": json.dumps(list(descriptions), ensure_ascii=False),
                  "embeds": np.ascontiguousarray(embeds, dtype=np.float32).tobytes(), "encoder": encoder,
                  "updated_at": now(), "dirty": 1}
        row = self.conn.execute("select id from custom_tags where name = ?", [name]).fetchone()
        if row is None:
            self.db["custom_tags"].insert({**fields, "name": name, "created_at": now()})
        else:
            self.db["custom_tags"].update(row[0], fields)

    def mark_custom_applied(self, ids: Iterable[int]) -> None:
        """These definitions now hold on every indexed photo (not pending any more). Ids that name no
        definition (a built-in tag re-scored as one has id <= 0) are skipped: plain SQL, because
        sqlite-utils' ``update`` insists that the row exists."""
        self.conn.executemany("update custom_tags set dirty = 0 where id = ?", [(i,) for i in ids])

    def delete_custom_tag(self, id_: int) -> None:
        self.db["custom_tags"].delete_where("id = ?", [id_])

    # ---- built-in tags switched off
    def disabled_tags(self) -> set[str]:
        return {r[0] for r in self.conn.execute("select name from disabled_tags")}

    def set_tag_disabled(self, name: str, off: bool) -> None:
        if off:
            self.db["disabled_tags"].insert({"name": name, "disabled_at": now()}, ignore=True)
        else:
            self.db["disabled_tags"].delete_where("name = ?", [name])

    # ---- tag names in image_tags
    def tag_names(self) -> list[str]:
        """Every tag name some image carries (search's vocabulary when the model is not installed)."""
        return [r[0] for r in self.conn.execute("select distinct tag from image_tags")]

    def tag_photo_counts(self) -> dict[str, int]:
        """Tag name -> number of photos carrying it."""
        return {r[0]: r[1] for r in self.conn.execute(
            "select t.tag, count(distinct p.path) from image_tags t join photos p on p.hash = t.hash "
            "and p.model = t.model group by t.tag")}

    def orphan_custom_indices(self) -> list[int]:
        """Custom tag indices still in ``image_tags`` whose definition is gone (an interrupted remove)."""
        return [r[0] for r in self.conn.execute(
            "select distinct tag_index from image_tags where tag_index < 0 and -tag_index not in "
            "(select id from custom_tags)")]
