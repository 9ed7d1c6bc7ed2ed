"""The ``stills`` table (schema v7): a video's sampled moments, read by search to say *when* a video matches.

A video is one image in ``images`` (its tags: the union over its stills, each scored by its best still), so
tag search, filters, feedback and dupes treat it as any photo; only the moment needs the stills.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ramcli.index.base import CHUNK, Tables
from ramcli.index.rows import StillRow


def _marks(n: int) -> str:
    return ",".join("?" * n)


class Stills(Tables):
    def stills_of(self, model: str, hashes: Sequence[str], *, cls: bool = True) -> dict[str, list[StillRow]]:
        """Image hash -> its stills in time order (only videos have any). ``cls=False`` skips the embeddings
        (tag search needs only the scores, and starts without numpy)."""
        out: dict[str, list[StillRow]] = {}
        column = "cls" if cls else "null"
        for start in range(0, len(hashes), CHUNK):
            chunk = list(hashes[start:start + CHUNK])
            for hash_, idx, t, blob, tags in self.conn.execute(
                    f"select hash, idx, t, {column}, tags from stills where model = ? and hash in "
                    f"({_marks(len(chunk))}) order by hash, idx", [model, *chunk]):
                vec = None
                if blob is not None:
                    import numpy as np

                    vec = np.frombuffer(blob, dtype=np.float32).copy()
                named = {str(name): float(score) for _, name, score in json.loads(tags or "[]")}
                out.setdefault(hash_, []).append(StillRow(hash_, int(idx), float(t), vec, named))
        return out

    def video_count(self, model: str) -> int:
        return int(self.conn.execute("select count(distinct hash) from stills where model = ?", [model]).fetchone()[0])
