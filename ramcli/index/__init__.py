"""The library index: SQLite (WAL) through sqlite-utils, with a schema version and migrations.

What is stored, and why it is split this way:

* ``photos`` — one row per file path: the *file state* (size, mtime_ns as recorded right after
  our own write) that makes an unchanged photo cost one stat, the image hash that identifies
  its pixels, and the keywords ramcli last wrote into it (so a re-run or ``untag`` touches only
  ramcli's own keywords).
* ``images`` — one row per image hash and model: dimensions, EXIF date, the CLS embedding
  (512 float32) and optionally the 145x512 token matrix (float16). Keyed by pixels, not path,
  so a moved or renamed photo keeps its embeddings and tags.
* ``image_tags`` — tags with scores per image hash and model.
* ``runs`` — one row per ``ramcli tag`` run, with its counts.

One writer at a time: ``open_index(..., writer=True)`` takes an exclusive lock file beside the
database; a second writer gets a clear error instead of waiting silently.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ramcli.errors import RamcliError

if TYPE_CHECKING:
    import numpy as np

SCHEMA_VERSION = 4
EMBED_DIM = 512


class Database:
    """The connection, with the two helpers the index needs. sqlite-utils (0.4 s to import) is
    loaded only when a migration has to create or change tables."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, args: Iterable[object] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, tuple(args))

    def query(self, sql: str, args: Iterable[object] = ()) -> Iterator[dict[str, Any]]:
        cur = self.conn.execute(sql, tuple(args))
        cols = [d[0] for d in cur.description]
        return (dict(zip(cols, row, strict=True)) for row in cur)

    def table_names(self) -> list[str]:
        return [r[0] for r in self.conn.execute("select name from sqlite_master where type = 'table'")]

    def close(self) -> None:
        self.conn.close()


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


# Migrations: MIGRATIONS[i] brings the schema from version i to i + 1.
MIGRATIONS = [_v1, _v2, _v3, _v4]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class PhotoRow:
    path: str
    hash: str
    size: int
    mtime_ns: int
    written: list[str]
    storage: str
    model: str
    written_caption: str | None = None  # the caption ramcli put into the file (Tag2Text)


@dataclass(frozen=True)
class ImageRecord:
    """What one inference produced for one image."""

    hash: str
    model: str
    width: int
    height: int
    taken_at: str | None
    cls: np.ndarray | None  # (512,) float32, in CLIP space; None for Tag2Text (its encoder is not)
    tokens: np.ndarray | None  # (N, 512) stored as float16
    tags: list[tuple[int, str, float]]  # (tag index, name, score)
    caption: str | None = None  # Tag2Text


class Index:
    """A typed facade over the database; all writes of one batch go in one transaction."""

    def __init__(self, path: Path, db: Database, lock: Any | None) -> None:
        self.path = path
        self.db = db
        self._lock = lock

    # ---- reading
    def photo(self, path: str) -> PhotoRow | None:
        rows = list(self.db.query("select * from photos where path = ?", [path]))
        return _photo(rows[0]) if rows else None

    def photos_under(self, roots: Iterable[Path]) -> Iterator[PhotoRow]:
        """Rows whose path is one of ``roots`` or lies below one of them (exists on disk or not)."""
        seen: set[str] = set()
        for root in roots:
            r = str(root).rstrip(os.sep) or os.sep
            prefix = r.rstrip(os.sep) + os.sep  # substr, not LIKE: LIKE ignores ASCII case
            for row in self.db.query("select * from photos where path = ? or substr(path, 1, ?) = ?",
                                     [r, len(prefix), prefix]):
                if row["path"] not in seen:
                    seen.add(row["path"])
                    yield _photo(row)

    def has_image(self, hash_: str, model: str) -> bool:
        return bool(list(self.db.query("select 1 from images where hash = ? and model = ?", [hash_, model])))

    def paths_with_hash(self, hash_: str) -> list[str]:
        return [r["path"] for r in self.db.query("select path from photos where hash = ?", [hash_])]

    def photos_with_hash(self, hash_: str, model: str) -> list[PhotoRow]:
        return [_photo(r) for r in self.db.query("select * from photos where hash = ? and model = ? order by path",
                                                 [hash_, model])]

    def record_written(self, row: PhotoRow, written: list[str]) -> None:
        """After a keyword rewrite of ``row``'s file: what it now carries from us, and its new stat
        (so the next `ramcli tag` sees it unchanged)."""
        st = None
        with contextlib.suppress(OSError):
            st = os.stat(row.path)
        self.db.execute("update photos set written = ?, size = ?, mtime_ns = ?, updated_at = ? where path = ?",
                        [json.dumps(written, ensure_ascii=False), st.st_size if st else row.size,
                         st.st_mtime_ns if st else row.mtime_ns, _now(), row.path])

    def tags_of(self, hash_: str, model: str) -> list[tuple[int, str, float]]:
        rows = self.db.query("select tag_index, tag, score from image_tags where hash = ? and model = ? "
                             "order by score desc", [hash_, model])
        return [(r["tag_index"], r["tag"], r["score"]) for r in rows]

    def caption_of(self, hash_: str, model: str) -> str | None:
        row = self.db.execute("select caption from images where hash = ? and model = ?", [hash_, model]).fetchone()
        return row[0] if row else None

    def cls_embedding(self, hash_: str, model: str) -> np.ndarray | None:
        import numpy as np  # not at module level: a tag-only search never needs it

        rows = list(self.db.query("select cls from images where hash = ? and model = ?", [hash_, model]))
        return np.frombuffer(rows[0]["cls"], dtype=np.float32) if rows and rows[0]["cls"] is not None else None

    def tokens(self, hash_: str, model: str) -> np.ndarray | None:
        import numpy as np  # not at module level: a tag-only search never needs it

        rows = list(self.db.query("select tokens from images where hash = ? and model = ?", [hash_, model]))
        if not rows or rows[0]["tokens"] is None:
            return None
        return np.frombuffer(rows[0]["tokens"], dtype=np.float16).reshape(-1, EMBED_DIM)

    def images_generation(self) -> int:
        """Bumped by every change to ``images`` (schema v3 triggers)."""
        return int(self.db.execute("select value from counters where name = 'images'").fetchone()[0])

    def count(self, table: str) -> int:
        return int(self.db.execute(f"select count(*) from [{table}]").fetchone()[0])

    def models(self) -> list[tuple[str, int]]:
        """Models that tagged the indexed photos, most photos first."""
        return [(r[0], r[1]) for r in self.db.execute(
            "select model, count(*) from photos group by model order by count(*) desc")]

    def cached_query(self, encoder: str, text: str) -> np.ndarray | None:
        import numpy as np  # not at module level: a tag-only search never needs it

        row = self.db.execute("select embedding from query_cache where encoder = ? and text = ?",
                              [encoder, text]).fetchone()
        return np.frombuffer(row[0], dtype=np.float32).copy() if row else None

    def cache_query(self, encoder: str, text: str, embedding: np.ndarray) -> None:
        """Best effort: a read-only index or a busy writer just means no cache."""
        import numpy as np  # not at module level: a tag-only search never needs it

        with contextlib.suppress(sqlite3.OperationalError):
            self.db.execute("insert or replace into query_cache (encoder, text, embedding, created_at) "
                            "values (?, ?, ?, ?)",
                            [encoder, text, np.ascontiguousarray(embedding, dtype=np.float32).tobytes(), _now()])

    # ---- writing (inside `with index.transaction():`, which is one SQLite transaction)
    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT by hand: sqlite-utils' helpers commit on their own, so the
        writes of a batch use plain SQL here and land together or not at all."""
        self.db.execute("begin immediate")
        try:
            yield
        except BaseException:
            self.db.execute("rollback")
            raise
        self.db.execute("commit")

    def put_image(self, rec: ImageRecord) -> None:
        import numpy as np  # not at module level: a tag-only search never needs it

        tokens = None if rec.tokens is None else np.ascontiguousarray(rec.tokens, dtype=np.float16).tobytes()
        self.db.execute(
            "insert or replace into images (hash, model, width, height, taken_at, cls, tokens, tagged_at, caption) "
            "values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [rec.hash, rec.model, rec.width, rec.height, rec.taken_at,
             None if rec.cls is None else np.ascontiguousarray(rec.cls, dtype=np.float32).tobytes(), tokens, _now(),
             rec.caption])
        self.db.execute("delete from image_tags where hash = ? and model = ?", [rec.hash, rec.model])
        self.db.conn.executemany(
            "insert into image_tags (hash, model, tag_index, tag, score) values (?, ?, ?, ?, ?)",
            [(rec.hash, rec.model, i, name, float(score)) for i, name, score in rec.tags])

    def put_photo(self, row: PhotoRow) -> None:
        self.db.execute(
            "insert or replace into photos (path, hash, size, mtime_ns, written, storage, model, updated_at, "
            "written_caption) values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [row.path, row.hash, row.size, row.mtime_ns, json.dumps(row.written, ensure_ascii=False),
             row.storage, row.model, _now(), row.written_caption])

    def delete_photo(self, path: str) -> None:
        self.db.execute("delete from photos where path = ?", [path])

    def prune_images(self) -> int:
        """Drop images (and their tags) that no photo points at any more."""
        orphans = "select hash from images where hash not in (select hash from photos)"
        n = self.db.execute(f"select count(*) from ({orphans})").fetchone()[0]
        self.db.execute(f"delete from image_tags where hash in ({orphans})")
        self.db.execute(f"delete from images where hash in ({orphans})")
        return int(n)

    def start_run(self, model: str, roots: list[str]) -> int:
        cur = self.db.execute("insert into runs (started_at, model, roots) values (?, ?, ?)",
                              [_now(), model, json.dumps(roots, ensure_ascii=False)])
        return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, counts: dict[str, int]) -> None:
        self.db.execute("update runs set finished_at = ?, counts = ? where id = ?",
                        [_now(), json.dumps(counts), run_id])

    def close(self) -> None:
        self.db.close()
        if self._lock is not None:
            self._lock.close()


def _photo(row: dict[str, Any]) -> PhotoRow:
    return PhotoRow(row["path"], row["hash"], row["size"], row["mtime_ns"], json.loads(row["written"] or "[]"),
                    row["storage"] or "", row["model"] or "", row.get("written_caption"))


def schema_version(db: Database) -> int:
    return int(db.execute("pragma user_version").fetchone()[0])


def migrate(db: Database) -> int:
    """Apply pending migrations, each in its own transaction; returns the resulting version."""
    version = schema_version(db)
    if version > SCHEMA_VERSION:
        raise RamcliError(f"the index has schema version {version}, newer than this ramcli ({SCHEMA_VERSION})",
                          hint="upgrade ramcli")
    if version == SCHEMA_VERSION:
        return version
    import sqlite_utils

    utils = sqlite_utils.Database(db.conn)
    for target in range(version, SCHEMA_VERSION):
        db.execute("begin immediate")
        try:
            MIGRATIONS[target](utils)
            db.execute(f"pragma user_version = {target + 1}")
        except BaseException:
            db.execute("rollback")
            raise
        db.execute("commit")
    return SCHEMA_VERSION


def _take_lock(path: Path) -> Any:
    lock = open(path.with_name(path.name + ".lock"), "a+")  # noqa: SIM115 - held for the index's lifetime
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise RamcliError(f"another ramcli run ({holder}) is writing to this index", path=path,
                          hint="wait for it to finish, or use --index for a different library") from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()}")
    lock.flush()
    return lock


def open_index(path: Path, *, writer: bool = False) -> Index:
    """Open (creating and migrating when needed) the index at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = _take_lock(path) if writer else None
    try:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)  # autocommit; batches use BEGIN
        db = Database(conn)
        db.execute("pragma journal_mode = wal")
        db.execute("pragma synchronous = normal")
        db.execute("pragma busy_timeout = 30000")
        migrate(db)
    except sqlite3.DatabaseError as exc:
        if lock is not None:
            lock.close()
        raise RamcliError(f"cannot open the index ({exc})", path=path,
                          hint="if it is damaged, move it away and re-run `ramcli tag`") from None
    return Index(path, db, lock)
