"""The library index: SQLite (WAL), a schema version and migrations. All of ramcli's SQL lives in
this package (tests/test_index_sql.py checks it); the rest of ramcli calls typed ``Index`` methods.

What is stored, and why it is split this way:

* ``photos`` — one row per file path: the *file state* (size, mtime_ns as recorded right after
  our own write) that makes an unchanged photo cost one stat, the image hash that identifies
  its pixels, and the keywords ramcli last wrote into it (so a re-run or ``untag`` touches only
  ramcli's own keywords).
* ``images`` — one row per image hash and model: dimensions, EXIF date, the CLS embedding
  (512 float32) and optionally the 145x512 token matrix (float16). Keyed by pixels, not path,
  so a moved or renamed photo keeps its embeddings and tags.
* ``image_tags`` — tags with scores per image hash and model.
* ``custom_tags``, ``disabled_tags`` — the user's vocabulary; ``query_cache`` — search queries'
  embeddings; ``runs`` — one row per ``ramcli tag`` run, with its counts.
* ``feedback`` — the user's verdicts (confirm / reject) per image hash and tag, with their source;
  ``thresholds`` — per-tag thresholds `ramcli tags calibrate` fitted from them.
* ``failures`` — files whose image data could not be read, with the (size, mtime_ns) they failed in,
  so a re-run reports them without reading them again until they change.

Modules, one owner each: ``schema`` (version, migrations), ``connection`` (opening the file,
sqlite-utils), ``lock`` (one writer), ``rows`` (the typed rows), and the method groups that
``core.Index`` composes: ``photos``, ``images``, ``vocabulary``, ``queries``, ``runs``, ``writes``
(the write journal and undo recipes), ``failures`` (remembered unreadable files).

One writer at a time: ``open_index(..., writer=True)`` takes an exclusive lock file beside the
database; a second writer gets a clear error instead of waiting silently.
"""

from __future__ import annotations

from ramcli.index.core import Index, open_index
from ramcli.index.queries import PhotoFilter
from ramcli.index.rows import (
           EMBED_DIM,
           CustomTagRow,
           DupeCandidate,
           FailureRow,
           FeedbackRow,
           ImageRecord,
           PhotoRef,
           PhotoRow,
           StillRow,
           ThresholdRow,
           WriteRow,
)
from ramcli.index.schema import MIGRATIONS, SCHEMA_VERSION, migrate, schema_version

__all__ = ["EMBED_DIM", "MIGRATIONS", "SCHEMA_VERSION", "CustomTagRow", "DupeCandidate", "FailureRow",
           "FeedbackRow", "ImageRecord", "Index", "PhotoFilter", "PhotoRef", "PhotoRow", "StillRow", "ThresholdRow",
           "WriteRow", "migrate", "open_index", "schema_version"]
