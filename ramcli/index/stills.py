"""The ``stills`` table (schema v7): a video's sampled moments, read by search to say *when* a video matches.

A video is one image in ``images`` (its tags: the union over its stills, each scored by its best still), so
tag search, filters, feedback and dupes treat it as any photo; only the moment needs the stills.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ramcli.index.base import CHUNK, Tables
from ramcli.index.rows import EMBED_DIM, StillRow

if TYPE_CHECKING:
    import numpy as np


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

    def still_arrays(self, model: str, hashes: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Image hash -> its stills' (CLS (K, 512) float32, tokens (K, N, 512) float16 as stored), for the videos
        among ``hashes`` whose stills all have both (re-scoring takes a video's best still again)."""
        import numpy as np

        found: dict[str, list[tuple[bytes | None, bytes | None]]] = {}
        for start in range(0, len(hashes), CHUNK):
            chunk = list(hashes[start:start + CHUNK])
            for hash_, cls, tok in self.conn.execute(
                    f"select hash, cls, tokens from stills where model = ? and hash in ({_marks(len(chunk))}) "
                    "order by hash, idx", [model, *chunk]):
                found.setdefault(hash_, []).append((cls, tok))
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for hash_, rows in found.items():
            if all(c is not None and t is not None for c, t in rows):
                out[hash_] = (np.stack([np.frombuffer(c, np.float32) for c, _ in rows]),  # type: ignore[arg-type]
                              np.stack([np.frombuffer(t, np.float16).reshape(-1, EMBED_DIM)  # type: ignore[arg-type]
                                        for _, t in rows]))
        return out

    def still_cls_rows(self, model: str) -> tuple[np.ndarray, np.ndarray]:
        """(images.rowid of each still's video (S,), the stills' CLS embeddings (S, 512) float32): search
        scores a video by its best matching still. Empty arrays for a library without videos (one lookup)."""
        import numpy as np

        rows = self.conn.execute(
            "select i.rowid, s.cls from stills s join images i on i.hash = s.hash and i.model = s.model "
            "where s.model = ? and s.cls is not null and i.cls is not null order by i.rowid, s.idx", [model]).fetchall()
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, EMBED_DIM), np.float32)
        return (np.array([r[0] for r in rows], np.int64),
                np.stack([np.frombuffer(r[1], np.float32) for r in rows]))

    def video_count(self, model: str) -> int:
        return int(self.conn.execute("select count(distinct hash) from stills where model = ?", [model]).fetchone()[0])
