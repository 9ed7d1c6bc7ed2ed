"""The schema: its version, the migrations that build it, and the check that refuses an index
written by a newer ramcli.

``pragma user_version`` holds the version. ``MIGRATIONS[i]`` brings a file from version ``i`` to
``i + 1``; each runs in its own transaction. A migration that has shipped is never edited: index
files in the wild were built by exactly this code, and a fresh file must end up the same.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Protocol

from ramcli.errors import RamcliError
from ramcli.index.connection import utils

SCHEMA_VERSION = 7


class _Executes(Protocol):
    def execute(self, sql: str, /) -> Any: ...


def _v1(db: Any) -> None:  # db: sqlite_utils.Database
    db["photos"].create({"path": str, "hash": str, "size": int, "mtime_ns": int, "written": str,
                         "storage": str, "model": str, "updated_at": str}, pk="path")
    db["photos"].create_index(["hash"])
    db["images"].create({"hash": str, "model": str, "width": int, "height": int, "taken_at": str,
                         "cls": bytes, "tokens": bytes, "tagged_at": str}, pk=("hash", "model"))
    db["image_tags"].create({"hash": str, "model": str, "tag_index": int, "tag": str, "score": float},
                            pk=("hash", "model", "tag_index"))
    db["image_tags"].create_index(["tag"])
    db["runs"].create({"id": int, "started_at": str, "finished_at": str, "model": str, "roots": str,
                       "counts": str}, pk="id")


def _v2(db: Any) -> None:
    """Search: CLIP embeddings of past queries, so a repeated query needs no text encoder."""
    db["query_cache"].create({"encoder": str, "text": str, "embedding": bytes, "created_at": str},
                             pk=("encoder", "text"))


def _v3(db: Any) -> None:
    """A change counter for ``images``, kept by triggers, so derived files (the search matrix of
    CLS embeddings) know exactly when they are stale: rowids alone are reused after a delete."""
    db["counters"].create({"name": str, "value": int}, pk="name")
    # Search joins photos to images for the capture date and the row of the CLS matrix. An images
    # row is 2 KB (CLS) to 150 KB (tokens): this covering index keeps those reads off the table
    # (100k photos: 0.97 -> 0.2 s).
    db.execute("create index images_search on images (hash, model, taken_at)")
    # Tag search reads (tag -> image, score) pairs only: covering, it skips the table (0.14 -> 0.09 s
    # for a tag on 12k of 100k photos). It starts with tag, so the older index on tag alone goes.
    db.execute("create index image_tags_search on image_tags (tag, model, hash, score)")
    db.execute("drop index if exists idx_image_tags_tag")
    db.execute("insert into counters (name, value) values ('images', 0)")
    for event in ("insert", "update", "delete"):
        db.execute(f"create trigger images_{event}_count after {event} on images begin "
                   "update counters set value = value + 1 where name = 'images'; end")


def _v4(db: Any) -> None:
    """The user's own vocabulary (``ramcli add-tag``): custom tags with their label embeddings, and
    built-in tags switched off. A custom tag's rows in ``image_tags`` have ``tag_index = -id``.
    Also Tag2Text captions."""
    db["custom_tags"].create({"id": int, "name": str, "name_zh": str, "parent": str, "threshold": float,
                              "descriptions": str, "embeds": bytes, "encoder": str, "dirty": int,
                              "created_at": str, "updated_at": str}, pk="id", not_null={"name", "threshold"})
    db["custom_tags"].create_index(["name"], unique=True)
    db["disabled_tags"].create({"name": str, "disabled_at": str}, pk="name")
    # Tag2Text's caption of each image, and the caption ramcli last wrote into each photo (the one
    # it may replace or remove; a description the user wrote is never touched).
    db.execute("alter table images add column caption text")
    db.execute("alter table photos add column written_caption text")


def _v5(db: Any) -> None:
    """Nothing lost, ever. ``writes``: per file ramcli rewrote (a photo or its sidecar), the journal of
    that write and how to undo it. A row is committed with ``pending = 1`` *before* the file is
    replaced (the write-ahead intent: planned keywords, the new file's sha256) and cleared in the
    batch's index transaction, so a kill at any instant is recovered by the next run. ``recipe``
    rebuilds the file as it was before ramcli's first write from the current bytes (NULL: no exact
    undo is possible); ``prev_*`` hold the row's values before the pending write, restored when the
    write never happened. ``failures``: files that could not be tagged, by (size, mtime), so a re-run
    does not retry them until they change."""
    db["writes"].create({"target": str, "photo": str, "recipe": bytes, "after_sha": str, "prev_recipe": bytes,
                         "prev_after_sha": str, "pending": int, "keywords": str, "written_at": str}, pk="target")
    db["writes"].create_index(["photo"])
    db["failures"].create({"path": str, "size": int, "mtime_ns": int, "model": str, "error": str,
                           "failed_at": str}, pk="path")


def _v6(db: Any) -> None:
    """The user's verdicts and what they teach. ``feedback``: one verdict (confirm | reject) per image
    and tag, with who gave it (source: cli | file | import) and when. Keyed by the image hash, not the
    path: the hash survives moves, renames and metadata edits, is the same in a copy on another
    machine (so an exported verdict finds its photo there), and is what ``image_tags`` is keyed by.
    ``tag`` is the English tag name, the same for every model that knows the tag (RAM and RAM++ share
    their list; a custom tag is its name). ``path`` is where the photo was when the verdict was given,
    for people only. ``thresholds``: per-tag thresholds that ``ramcli tags calibrate`` fitted from the
    verdicts, per model, used in place of the model's shipped ones (``official``, kept for the report);
    ``pending`` until every photo has been re-decided with it (an interrupted calibration finishes next time)."""
    db["feedback"].create({"hash": str, "tag": str, "verdict": str, "source": str, "path": str, "at": str},
                          pk=("hash", "tag"), not_null={"verdict", "source"})
    db["feedback"].create_index(["tag"])
    db["thresholds"].create({"model": str, "tag": str, "threshold": float, "official": float, "confirmed": int,
                             "rejected": int, "pending": int, "at": str}, pk=("model", "tag"), not_null={"threshold"})


def _v7(db: Any) -> None:
    """Videos. ``stills``: each sampled moment of a video image (its hash in ``images``, where the video's
    own row holds the union of the stills' tags, each scored by its best still, and its best still's
    embedding): when it is (``t``, seconds), its CLS embedding (float32, 2 KB: search says at which moment
    a video matches), its tokens (float16, as ``images.tokens``, when tokens are stored: re-scoring a video
    for a new tag or threshold takes the best still again), and the tags that still alone gets (JSON
    ``[[tag_index, name, score], ...]``). ``images.duration``: a video's length in seconds (NULL for photos)."""
    db["stills"].create({"hash": str, "model": str, "idx": int, "t": float, "cls": bytes, "tokens": bytes,
                         "tags": str},
                        pk=("hash", "model", "idx"), not_null={"t"})
    db.execute("alter table images add column duration real")


# Migrations: MIGRATIONS[i] brings the schema from version i to i + 1.
MIGRATIONS = [_v1, _v2, _v3, _v4, _v5, _v6, _v7]


def schema_version(db: _Executes) -> int:
    """The version of the file behind ``db`` (a ``sqlite3.Connection`` or a ``sqlite_utils.Database``)."""
    return int(db.execute("pragma user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations, each in its own transaction; returns the resulting version.
    sqlite-utils is loaded only when there is something to migrate."""
    version = schema_version(conn)
    if version > SCHEMA_VERSION:
        raise RamcliError(f"the index has schema version {version}, newer than this ramcli ({SCHEMA_VERSION})",
                          hint="upgrade ramcli")
    if version == SCHEMA_VERSION:
        return version
    db = utils(conn)
    for target in range(version, SCHEMA_VERSION):
        conn.execute("begin immediate")
        try:
            MIGRATIONS[target](db)
            conn.execute(f"pragma user_version = {target + 1}")
        except BaseException:
            conn.execute("rollback")
            raise
        conn.execute("commit")
    return SCHEMA_VERSION
