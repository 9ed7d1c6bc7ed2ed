"""Hostile libraries (issue 15, "Nothing lost, ever"): FIFOs, sockets and symlinks under photo names,
symlinks leading out of the folders named, loops, dangling links, broken files on every re-run, a held
index and missing paths. All real: `os.mkfifo`, real symlinks and broken JPEGs, the real CLI in a
subprocess with the tiny model, the index read back with sqlite3.

A FIFO used to hang the whole run (workers blocked in ``open``): the subprocess timeout below is only
a guard so a regression fails CI instead of hanging it; the assertions are on the output.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import make_photo, run_cli

TAG = ("tag", "-m", "tiny_ram_plus", "--threshold", "0", "--top-k", "3", "--json")
GUARD_S = 600  # against a hang only
LOADED = "model tiny_ram_plus on"  # said when (and only when) the model is loaded
REMEMBERED = "(unchanged since it failed; --retry-errors to try again)"


def tag(index: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*TAG, "--index", str(index), *args, timeout=GUARD_S)


def records(result: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    return {r["path"]: r for r in map(json.loads, result.stdout.splitlines())}


def statuses(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records(result).values():
        out[r["status"]] = out.get(r["status"], 0) + 1
    return out


def lines(result: subprocess.CompletedProcess[str], kind: str, name: str) -> list[str]:
    """stderr lines of ``kind`` ("skipped:" or "error:") that name ``name``."""
    return [ln for ln in result.stderr.splitlines() if ln.startswith(kind) and name in ln]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- FIFOs, sockets: never opened -----------------------------------------------------------------------


def test_a_fifo_or_socket_in_a_folder_is_skipped_with_one_line(tmp_path: Path, tiny_model,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "lib"
    good = [make_photo(root / "a.jpg", seed=1), make_photo(root / "b.png", seed=2)]
    os.mkfifo(root / "x.jpg")
    sock = socket.socket(socket.AF_UNIX)
    with monkeypatch.context() as m:  # AF_UNIX names are short: bind relative to the folder, then go back
        m.chdir(root)  # (the CLI runs from the inherited cwd: the worktree's code)
        sock.bind("s.png")
    os.mkfifo(root / "notes")  # no photo name: not ramcli's business, no line
    try:
        result = tag(tmp_path / "i.db", str(root))
    finally:
        sock.close()
    assert result.returncode == 0, result.stderr  # skipped is not a failure, as for camera RAW
    recs = records(result)
    assert all(recs[str(p)]["status"] == "tagged" for p in good)
    fifo = lines(result, "skipped:", "x.jpg")
    assert len(fifo) == 1 and "not a regular file (a FIFO)" in fifo[0] and str(root / "x.jpg") in fifo[0]
    sock_lines = lines(result, "skipped:", "s.png")
    assert len(sock_lines) == 1 and "not a regular file (a socket)" in sock_lines[0]
    assert "notes" not in result.stderr and "Traceback" not in result.stderr


def test_a_fifo_named_explicitly_gets_the_same_line(tmp_path: Path, tiny_model) -> None:
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    result = tag(tmp_path / "i.db", str(fifo))
    assert result.returncode == 0, result.stderr
    got = lines(result, "skipped:", "x.jpg")
    assert len(got) == 1 and "not a regular file (a FIFO)" in got[0]
    assert "cannot read folder" not in result.stderr
    assert LOADED not in result.stderr  # nothing to infer: the model was never loaded


def test_every_reader_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    """A FIFO swapped in after the scan: the image hash, the decoder, the metadata reader and writer and the
    prepare stage each say "not a regular file" at once. In a subprocess: a hang here must not hang CI."""
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    code = textwrap.dedent(f"""
        import json
        from pathlib import Path
        from ramcli import metadata
        from ramcli.errors import ImageError
        from ramcli.metadata.identity import image_hash
        from ramcli.models.store import Preprocess
        from ramcli.pipeline.prepare import prepare_one
        from ramcli.runtime.images import read_photo

        p = Path({str(fifo)!r})
        calls = {{
            "image_hash": lambda: image_hash(p),
            "read_photo": lambda: read_photo(p),
            "read_keywords": lambda: metadata.read_keywords(p),
            "write_keywords": lambda: metadata.write_keywords(p, ["dog"], []),
            "prepare_one": lambda: prepare_one(p, Preprocess(), frozenset()),
        }}
        out = {{}}
        for name, call in calls.items():
            try:
                got = call()
                out[name] = [str(got), getattr(got, "lasting", None)]
            except ImageError as err:
                out[name] = [str(err), err.lasting]
        print(json.dumps(out))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=GUARD_S,
                            check=False)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert set(out) == {"image_hash", "read_photo", "read_keywords", "write_keywords", "prepare_one"}
    for name, (message, lasting) in out.items():
        assert "not a regular file (a FIFO)" in message and str(fifo) in message, name
        assert lasting is False, name  # never remembered as the file's own failure


def test_open_regular_refuses_a_folder(tmp_path: Path) -> None:
    from ramcli.errors import ImageError
    from ramcli.files import open_regular, read_regular

    make_photo(tmp_path / "a.jpg")
    assert read_regular(tmp_path / "a.jpg") == (tmp_path / "a.jpg").read_bytes()
    with pytest.raises(ImageError, match=r"not a regular file \(a folder\)"):
        open_regular(tmp_path)
    with pytest.raises(FileNotFoundError):
        open_regular(tmp_path / "gone.jpg")


# --- symlinks -------------------------------------------------------------------------------------------


@pytest.fixture
def linked(tmp_path: Path) -> dict[str, Path]:
    """A library with symlinks of every kind, and photos outside it that links lead to."""
    outside = tmp_path / "outside"
    lib = tmp_path / "lib"
    o = make_photo(outside / "o.jpg", seed=10)
    p = make_photo(outside / "album" / "p.jpg", seed=11)
    a = make_photo(lib / "a.jpg", seed=12)
    b = make_photo(lib / "sub" / "b.jpg", seed=13)
    (lib / "link.jpg").symlink_to(o)
    (lib / "album").symlink_to(outside / "album")
    (lib / "inside.jpg").symlink_to(a)
    (lib / "gone.jpg").symlink_to(lib / "nothing.jpg")
    (lib / "loop.jpg").symlink_to(lib / "loop.jpg")
    (lib / "sub" / "up").symlink_to(lib)
    return {"lib": lib, "outside": outside, "o": o, "p": p, "a": a, "b": b}


def test_symlinks_out_of_the_folders_named_are_never_written(tmp_path: Path, tiny_model,
                                                             linked: dict[str, Path]) -> None:
    lib, outside = linked["lib"], linked["outside"]
    before = {p: sha(p) for p in (linked["o"], linked["p"])}
    result = tag(tmp_path / "i.db", str(lib))
    assert result.returncode == 0, result.stderr  # skips only
    for p in before:
        assert sha(p) == before[p], f"{p} outside the folder named was rewritten"
    recs = records(result)
    assert recs[str(linked["a"])]["status"] == "tagged" and recs[str(linked["b"])]["status"] == "tagged"
    assert recs[str(lib / "inside.jpg")]["status"] in {"tagged", "copied"}  # a link inside: followed
    link = lines(result, "skipped:", "link.jpg")
    assert len(link) == 1 and f"symlink to {linked['o']}, outside the folders named" in link[0]
    assert f"name {outside} on the command line too" in link[0]
    album = lines(result, "skipped:", str(lib / "album"))
    assert len(album) == 1 and f"name {outside / 'album'} on the command line too" in album[0]
    gone = lines(result, "skipped:", "gone.jpg")
    assert len(gone) == 1 and "broken symlink" in gone[0]
    loop = lines(result, "skipped:", "loop.jpg")
    assert len(loop) == 1 and "symlink loop" in loop[0]
    up = lines(result, "skipped:", str(lib / "sub" / "up"))
    assert len(up) == 1 and "symlink loop" in up[0]
    db = sqlite3.connect(tmp_path / "i.db")
    indexed = {r[0] for r in db.execute("select path from photos")}
    assert indexed == {str(linked["a"]), str(linked["b"]), str(lib / "inside.jpg")}


def test_naming_the_target_includes_it(tmp_path: Path, tiny_model, linked: dict[str, Path]) -> None:
    """The skip line's advice works: with the outside folder named too, its photos are tagged (once,
    under their own names) and the file link into it is followed."""
    lib, outside = linked["lib"], linked["outside"]
    result = tag(tmp_path / "i.db", str(lib), str(outside))
    assert result.returncode == 0, result.stderr
    recs = records(result)
    assert recs[str(linked["o"])]["status"] == "tagged" and recs[str(linked["p"])]["status"] == "tagged"
    assert recs[str(lib / "link.jpg")]["status"] in {"tagged", "copied"}
    assert not lines(result, "skipped:", "link.jpg") and not lines(result, "skipped:", str(lib / "album"))
    assert not any(str(lib / "album") in path for path in recs)  # the folder link is not walked twice


def test_a_symlink_named_explicitly_is_followed(tmp_path: Path, tiny_model, linked: dict[str, Path]) -> None:
    before = sha(linked["o"])
    result = tag(tmp_path / "i.db", str(linked["lib"] / "link.jpg"))
    assert result.returncode == 0, result.stderr
    assert records(result)[str(linked["lib"] / "link.jpg")]["status"] == "tagged"
    assert sha(linked["o"]) != before  # the user asked for it: the keywords went into the file it leads to


# --- refusals before the model --------------------------------------------------------------------------


def test_a_held_index_is_refused_before_the_model(tmp_path: Path) -> None:
    """The model named is not installed and may not be downloaded: a run that loaded it first would
    say so; the lock must be refused first."""
    from ramcli.index import open_index

    make_photo(tmp_path / "lib" / "a.jpg")
    holder = open_index(tmp_path / "i.db", writer=True)
    try:
        result = run_cli("tag", "-m", "no_such_model_here", "--no-download", "--index", str(tmp_path / "i.db"),
                         str(tmp_path / "lib"), timeout=GUARD_S)
    finally:
        holder.close()
    assert result.returncode == 1
    assert "another ramcli run" in result.stderr and "not installed" not in result.stderr


def test_a_missing_path_is_refused_before_the_model(tmp_path: Path) -> None:
    result = run_cli("tag", "-m", "no_such_model_here", "--no-download", "--index", str(tmp_path / "i.db"),
                     str(tmp_path / "nonexistent"), timeout=GUARD_S)
    assert result.returncode == 1
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"{tmp_path / 'nonexistent'}: no such file or folder" in errors[0]
    assert "not installed" not in result.stderr and not (tmp_path / "i.db").exists()


def test_a_dangling_symlink_named_is_one_error(tmp_path: Path, tiny_model) -> None:
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "nothing.jpg")
    result = tag(tmp_path / "i.db", str(tmp_path / "gone.jpg"))
    assert result.returncode == 1
    errors = lines(result, "error:", "gone.jpg")
    assert len(errors) == 1 and f"broken symlink: its target {tmp_path / 'nothing.jpg'} does not exist" in errors[0]
    assert LOADED not in result.stderr


def test_a_missing_folder_prunes_nothing(tmp_path: Path, tiny_model) -> None:
    """An unmounted drive named next to another folder: an error line, and its photos stay indexed."""
    one, two = tmp_path / "one", tmp_path / "two"
    make_photo(one / "a.jpg", seed=1)
    make_photo(two / "b.jpg", seed=2)
    index = tmp_path / "i.db"
    assert tag(index, str(one), str(two)).returncode == 0
    one.rename(tmp_path / "away")
    result = tag(index, str(one), str(two))
    assert result.returncode == 1 and len(lines(result, "error:", "no such file or folder")) == 1
    (tmp_path / "away").rename(one)
    assert statuses(tag(index, str(one), str(two))) == {"unchanged": 2}


# --- remembered failures --------------------------------------------------------------------------------


def broken_library(root: Path) -> tuple[list[Path], list[Path]]:
    good = [make_photo(root / "a.jpg", seed=1), make_photo(root / "b.png", seed=2)]
    bad = [root / "bad" / "empty.jpg", root / "bad" / "text.png", root / "bad" / "cut.jpg"]
    bad[0].parent.mkdir(parents=True)
    bad[0].write_bytes(b"")
    bad[1].write_text("not a png")
    bad[2].write_bytes(make_photo(root / "whole.jpg", (640, 480), seed=3).read_bytes()[:2500])
    (root / "whole.jpg").unlink()
    return good, bad


def failures(index: Path) -> dict[str, tuple[int, int, str, str]]:
    db = sqlite3.connect(index)
    try:
        return {r[0]: r[1:] for r in db.execute("select path, size, mtime_ns, model, error from failures")}
    finally:
        db.close()


def test_unreadable_files_are_remembered_until_they_change(tmp_path: Path, tiny_model) -> None:
    root, index = tmp_path / "lib", tmp_path / "i.db"
    good, bad = broken_library(root)
    assert len(good) == 2
    first = tag(index, str(root))
    assert first.returncode == 1 and statuses(first) == {"tagged": 2, "error": 3}
    remembered = failures(index)
    assert set(remembered) == {str(p) for p in bad}
    for p in bad:
        st = p.stat()
        size, mtime_ns, model, error = remembered[str(p)]
        assert (size, mtime_ns, model) == (st.st_size, st.st_mtime_ns, "tiny_ram_plus")
        assert error == records(first)[str(p)]["error"]

    # A no-change re-run: each broken file is one error line with the message it failed with, read from the
    # index; nothing is read or decoded, so the model is never loaded; the exit code still says it failed.
    again = tag(index, str(root))
    assert again.returncode == 1, again.stderr
    assert statuses(again) == {"unchanged": 2, "error": 3}
    for p in bad:
        assert records(again)[str(p)]["error"] == f"{remembered[str(p)][3]} {REMEMBERED}"
        assert len(lines(again, "error:", str(p))) == 1
    assert LOADED not in again.stderr

    retried = tag(index, "--retry-errors", str(root))
    assert retried.returncode == 1 and statuses(retried) == {"unchanged": 2, "error": 3}
    assert REMEMBERED not in retried.stderr and LOADED in retried.stderr

    # Mended: tried again because it changed, tagged, and its failure forgotten. Deleted: forgotten too.
    make_photo(bad[2], seed=4)
    bad[1].unlink()
    mended = tag(index, str(root))
    assert records(mended)[str(bad[2])]["status"] == "tagged"
    assert records(mended)[str(bad[0])]["error"].endswith(REMEMBERED)
    assert set(failures(index)) == {str(bad[0])}


def test_a_failure_is_remembered_per_model(tmp_path: Path, tiny_model) -> None:
    """Another model has not failed on the file yet: it reads it (and a dry run never consults the index)."""
    root, index = tmp_path / "lib", tmp_path / "i.db"
    _good, bad = broken_library(root)
    tag(index, str(root))
    assert set(failures(index)) == {str(p) for p in bad}
    dry = run_cli("tag", "--dry-run", "--json", "-m", "tiny_ram_plus", str(root), timeout=GUARD_S)
    assert dry.returncode == 1 and REMEMBERED not in dry.stderr
    db = sqlite3.connect(index)
    db.execute("update failures set model = 'another_model'")
    db.commit()
    db.close()
    other = tag(index, str(root))
    assert all(REMEMBERED not in records(other)[str(p)]["error"] for p in bad)
