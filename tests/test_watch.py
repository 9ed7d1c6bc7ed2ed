"""`ramcli watch` as a user runs it: a real subprocess with the real watchdog observer, the tiny model on
onnxruntime, real files and the real index. Every check polls until its condition holds or a generous
deadline passes (a loaded machine is slow); nothing waits a short fixed time and hopes.

Steps: catch-up of what was there; photos copied in (one written slowly in chunks, which must not be read
half-written); one moved (tags and embeddings kept: no second inference); one deleted (pruned); one's
pixels edited (tagged again); another writer and a search while it is idle; SIGTERM; changes made while it
is down; a restart that catches up with them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyexiv2
import pytest

from conftest import make_photo, run_cli
from ramcli.metadata.identity import image_hash

DEADLINE = 300.0
ARGS = ("-m", "tiny_ram_plus", "--threshold", "0", "--top-k", "3", "--json", "--settle", "1.5")


def wait_for(what: str, cond: Callable[[], object], proc: subprocess.Popen | None = None, log: Path | None = None):
    """Poll ``cond`` until it is true or DEADLINE passes; fail early if the watcher died."""
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"watch exited ({proc.returncode}) while waiting for {what}: "
                        f"{log.read_text() if log else ''}")
        time.sleep(0.2)
    pytest.fail(f"not within {DEADLINE} s: {what}\n{log.read_text() if log else ''}")


class Watcher:
    def __init__(self, root: Path, index: Path, tmp: Path, n: int) -> None:
        self.out, self.err = tmp / f"watch{n}.out", tmp / f"watch{n}.err"
        env = {**os.environ, "COLUMNS": "200"}
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "ramcli", "watch", str(root), "--index", str(index),
                                          *ARGS], stdout=out, stderr=err, env=env)

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]

    def status_of(self, path: Path) -> list[str]:
        return [e["status"] for e in self.events() if e["path"] == str(path)]

    def wait(self, what: str, cond: Callable[[], object]) -> object:
        return wait_for(what, cond, self.proc, self.err)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + DEADLINE
        while self.proc.poll() is None and time.monotonic() < end:
            time.sleep(0.2)
        assert self.proc.returncode == 0, self.err.read_text()
        assert "stopped" in self.err.read_text()


def row(index: Path, path: Path) -> tuple | None:
    if not index.exists():
        return None
    db = sqlite3.connect(index, timeout=30)
    try:
        return db.execute("select hash, size, mtime_ns from photos where path = ?", [str(path)]).fetchone()
    except sqlite3.OperationalError:  # the file exists but the watcher has not created the tables yet
        return None
    finally:
        db.close()


def tagged_at(index: Path, hash_: str) -> str | None:
    db = sqlite3.connect(index, timeout=30)
    try:
        got = db.execute("select tagged_at from images where hash = ?", [hash_]).fetchone()
        return got[0] if got else None
    finally:
        db.close()


def keywords(path: Path) -> list[str]:
    try:
        with pyexiv2.Image(str(path)) as img:
            return list(img.read_xmp().get("Xmp.dc.subject") or [])
    except (OSError, RuntimeError):
        return []


def done(index: Path, path: Path) -> bool:
    """Indexed with the file's current image data, and its keywords are in the file, as the index says."""
    r = row(index, path)
    if r is None or not path.exists():
        return False
    try:
        st = path.stat()
        return r[0] == image_hash(path) and (r[1], r[2]) == (st.st_size, st.st_mtime_ns) and len(keywords(path)) == 3
    except (OSError, ValueError):
        return False


def write_slowly(src: Path, dest: Path, chunks: int = 5, pause: float = 0.5) -> None:
    """A copy that takes ~2 s, reopened for each chunk (as some import tools and network copies do)."""
    data = src.read_bytes()
    step = -(-len(data) // chunks)
    for k in range(chunks):
        with dest.open("ab") as f:
            f.write(data[k * step:(k + 1) * step])
        time.sleep(pause)  # the writer's pace, not a wait for the watcher


def test_watch_follows_a_living_folder(tiny_model, tmp_path: Path) -> None:
    root, index, spare = tmp_path / "lib", tmp_path / "index.db", tmp_path / "spare"
    a = make_photo(root / "a.jpg", (320, 240), seed=1, quality=90)
    b = make_photo(root / "b.jpg", (320, 240), seed=2, quality=90)
    c_src = make_photo(spare / "c.jpg", (320, 240), seed=3, quality=90)
    d_src = make_photo(spare / "d.jpg", (640, 480), seed=4, quality=95)

    w = Watcher(root, index, tmp_path, 1)
    try:
        w.wait("the catch-up pass tags what was there", lambda: done(index, a) and done(index, b))

        c, d = root / "c.jpg", root / "new" / "d.jpg"
        shutil.copy(c_src, c)
        d.parent.mkdir()
        write_slowly(d_src, d)
        w.wait("copied photos tagged", lambda: done(index, c) and done(index, d))
        assert w.status_of(d) == ["tagged"]  # never read half-written (that would be an error first)
        assert image_hash(d) == image_hash(d_src)

        c_hash = row(index, c)[0]
        first_tagging = tagged_at(index, c_hash)
        c2 = root / "sub" / "c moved.jpg"
        c2.parent.mkdir()
        c.rename(c2)
        w.wait("the move followed", lambda: row(index, c) is None and done(index, c2))
        assert w.status_of(c2) == ["moved"] and row(index, c2)[0] == c_hash
        assert tagged_at(index, c_hash) == first_tagging  # embeddings kept: no second inference

        a.unlink()
        w.wait("the delete pruned", lambda: row(index, a) is None and "pruned" in w.status_of(a))

        old_b = row(index, b)[0]
        make_photo(tmp_path / "b_new.jpg", (320, 240), seed=20, quality=90)
        shutil.copy(tmp_path / "b_new.jpg", b)  # new pixels, no keywords
        w.wait("edited pixels tagged again", lambda: done(index, b) and row(index, b)[0] != old_b)

        # idle: the lock is free for another writer, and search reads
        other = make_photo(tmp_path / "elsewhere" / "x.jpg", seed=9)
        w.wait("another writer gets the index while the watcher is idle",
               lambda: run_cli("tag", "-m", "tiny_ram_plus", "--no-write", "--index", str(index),
                               str(other)).returncode == 0)
        assert run_cli("search", "tag 001", "--index", str(index), "--json").returncode in (0, 1)

        # its own writes (temporary file renamed over each photo) never came back as work
        statuses = [e["status"] for e in w.events()]
        assert "unchanged" not in statuses and "updated" not in statuses and "error" not in statuses, statuses
    finally:
        if w.proc.poll() is None:
            w.stop()
    log = w.err.read_text()
    assert "catch-up:" in log and "batch:" in log

    # changes while it is down: a new photo, a delete, a move
    e = root / "e.jpg"
    make_photo(e, (320, 240), seed=5, quality=90)
    d.unlink()
    c3 = root / "c3.jpg"
    c2.rename(c3)
    w2 = Watcher(root, index, tmp_path, 2)
    try:
        w2.wait("the restart catches up", lambda: done(index, e) and row(index, d) is None
                and row(index, c2) is None and done(index, c3))
        assert w2.status_of(c3) == ["moved"] and tagged_at(index, c_hash) == first_tagging
        assert w2.status_of(e) == ["tagged"] and "pruned" in w2.status_of(d)
    finally:
        if w2.proc.poll() is None:
            w2.stop()


def test_a_lock_per_write_is_held_only_while_writing(tmp_path: Path) -> None:
    """The index `watch` opens takes the writer lock only inside ``hold()``: another writer gets in between
    (and is refused during it), and a step that finds the lock taken waits for it instead of failing."""
    import threading

    from ramcli.errors import IndexBusy
    from ramcli.index import open_index

    path = tmp_path / "index.db"
    watcher = open_index(path, writer=True, lock_per_write=True)
    other = open_index(path, writer=True)  # not locked out by an idle watcher
    other.close()
    with watcher.hold():
        with pytest.raises(IndexBusy):
            open_index(path, writer=True)
        with watcher.hold():  # nested steps share the outer lock
            pass
        with pytest.raises(IndexBusy):
            open_index(path, writer=True)
    blocker = open_index(path, writer=True)
    entered = threading.Event()

    def step() -> None:
        with watcher.hold():
            entered.set()

    waiter = threading.Thread(target=step)
    waiter.start()
    assert not entered.wait(1.0)  # it must not get in while the other writer holds the lock
    blocker.close()
    assert entered.wait(DEADLINE)  # and gets in once it is released
    waiter.join()
    watcher.close()
    open_index(path, writer=True).close()  # released after the step
