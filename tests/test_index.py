"""Photo identity and the SQLite index: hashes blind to metadata, migrations, transactions, locking."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import piexif
import pytest
from PIL import Image

from conftest import make_photo
from ramcli.errors import ImageError, RamcliError
from ramcli.index import SCHEMA_VERSION, ImageRecord, PhotoRow, open_index, schema_version
from ramcli.metadata.identity import image_hash


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".tiff", ".webp"])
def test_hash_ignores_metadata_but_not_pixels(tmp_path: Path, suffix: str) -> None:
    save = {"lossless": True} if suffix == ".webp" else {}
    a = make_photo(tmp_path / f"a{suffix}", (120, 90), seed=1, **save)
    before = image_hash(a)
    b = tmp_path / f"b{suffix}"
    if suffix == ".jpg":  # new EXIF segment, scan data untouched
        piexif.insert(piexif.dump({"0th": {piexif.ImageIFD.Make: b"Camera Maker"}}), str(a), str(b))
    else:  # same pixels re-saved with EXIF
        exif = Image.Exif()
        exif[0x010F] = "Camera Maker"
        with Image.open(a) as img:
            img.save(b, exif=exif, **save)
    assert b.read_bytes() != a.read_bytes()
    assert image_hash(b) == before
    c = make_photo(tmp_path / f"c{suffix}", (120, 90), seed=2, **save)
    assert image_hash(c) != before


def test_hash_of_broken_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tiff"
    bad.write_bytes(b"II*\x00garbage")
    with pytest.raises(ImageError) as exc:
        image_hash(bad)
    assert str(bad) in str(exc.value)
    with pytest.raises(ImageError, match="vanished"):
        image_hash(tmp_path / "gone.jpg")


def _record(h: str, tags: list[tuple[int, str, float]]) -> ImageRecord:
    return ImageRecord(h, "m", 10, 20, "2024-01-02T03:04:05", np.arange(512, dtype=np.float32),
                       np.full((145, 512), 0.5, dtype=np.float32), tags)


def test_schema_created_and_versioned(tmp_path: Path) -> None:
    ix = open_index(tmp_path / "i.db", writer=True)
    assert schema_version(ix.db) == SCHEMA_VERSION
    assert {"photos", "images", "image_tags", "runs"} <= set(ix.db.table_names())
    assert ix.db.execute("pragma journal_mode").fetchone()[0] == "wal"
    ix.close()
    again = open_index(tmp_path / "i.db")  # reopening migrates nothing and keeps data
    assert schema_version(again.db) == SCHEMA_VERSION
    again.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "i.db")
    conn.execute(f"pragma user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(RamcliError, match="newer than this ramcli"):
        open_index(tmp_path / "i.db")


def test_roundtrip_and_embeddings(tmp_path: Path) -> None:
    ix = open_index(tmp_path / "i.db", writer=True)
    with ix.transaction():
        ix.put_image(_record("h1", [(3, "dog", 0.9), (7, "beach", 0.7)]))
        ix.put_photo(PhotoRow("/p/a.jpg", "h1", 1, 2, ["dog", "beach"], "embed", "m"))
    assert ix.photo("/p/a.jpg").written == ["dog", "beach"]
    assert ix.tags_of("h1", "m") == [(3, "dog", 0.9), (7, "beach", 0.7)]
    np.testing.assert_array_equal(ix.cls_embedding("h1", "m"), np.arange(512, dtype=np.float32))
    tokens = ix.tokens("h1", "m")
    assert tokens.dtype == np.float16 and tokens.shape == (145, 512)


def test_a_failed_batch_leaves_nothing(tmp_path: Path) -> None:
    ix = open_index(tmp_path / "i.db", writer=True)
    with pytest.raises(KeyError), ix.transaction():
        ix.put_image(_record("h1", [(1, "cat", 0.8)]))
        ix.put_photo(PhotoRow("/p/a.jpg", "h1", 1, 2, [], "embed", "m"))
        raise KeyError("killed mid-batch")
    assert ix.photo("/p/a.jpg") is None and ix.count("images") == 0 and ix.count("image_tags") == 0


def test_photos_under_is_a_path_prefix_not_a_pattern(tmp_path: Path) -> None:
    ix = open_index(tmp_path / "i.db", writer=True)
    with ix.transaction():
        for p in ["/lib/a_b/x.jpg", "/lib/aXb/y.jpg", "/lib/a_b.jpg", "/LIB/a_b/z.jpg", "/lib/a_b"]:
            ix.put_photo(PhotoRow(p, "h", 1, 1, [], "", "m"))
    assert sorted(r.path for r in ix.photos_under([Path("/lib/a_b")])) == ["/lib/a_b", "/lib/a_b/x.jpg"]


def test_second_writer_is_told(tmp_path: Path) -> None:
    first = open_index(tmp_path / "i.db", writer=True)
    with pytest.raises(RamcliError, match="another ramcli run"):
        open_index(tmp_path / "i.db", writer=True)
    first.close()
    open_index(tmp_path / "i.db", writer=True).close()  # free again once the first is done


def test_prune_images_drops_orphans_only(tmp_path: Path) -> None:
    ix = open_index(tmp_path / "i.db", writer=True)
    with ix.transaction():
        ix.put_image(_record("keep", [(1, "a", 0.9)]))
        ix.put_image(_record("orphan", [(1, "a", 0.9)]))
        ix.put_photo(PhotoRow("/p/k.jpg", "keep", 1, 1, [], "", "m"))
        assert ix.prune_images() == 1
    assert ix.has_image("keep", "m") and not ix.has_image("orphan", "m")
    assert ix.count("image_tags") == 1


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def test_cls_matrix_follows_every_change(tmp_path: Path) -> None:
    """The cached matrix is rebuilt after any write to images, including the rowid reuse SQLite
    does after the last row is deleted (the case a (count, max rowid) key would miss)."""
    from ramcli.search import clsmatrix

    ix = open_index(tmp_path / "i.db", writer=True)
    rng = np.random.default_rng(0)

    def put(hash_: str) -> np.ndarray:
        rec = _record(hash_, [(1, "a", 0.9)])
        cls = rng.normal(size=512).astype(np.float32)
        with ix.transaction():
            ix.put_image(ImageRecord(rec.hash, rec.model, 1, 1, None, cls, None, rec.tags))
        return cls

    first, second = put("h1"), put("h2")
    m = clsmatrix.load(ix, "m")
    np.testing.assert_allclose(m.vectors, [_unit(first), _unit(second)], atol=1e-6)
    assert len(list(clsmatrix.cache_dir(ix).glob("*.npy"))) == 2
    again = clsmatrix.load(ix, "m")  # from the cache file, memory-mapped
    assert isinstance(again.vectors, np.memmap)
    np.testing.assert_array_equal(again.vectors, m.vectors)

    with ix.transaction():
        ix.db.execute("delete from images where hash = 'h2'")
    replaced = put("h3")  # SQLite hands out h2's rowid again: same count, same max rowid
    rowids = [r[0] for r in ix.db.execute("select rowid from images order by rowid")]
    assert rowids == list(m.rowids)
    m3 = clsmatrix.load(ix, "m")
    np.testing.assert_allclose(m3.vectors[1], _unit(replaced), atol=1e-6)
    assert len(list(clsmatrix.cache_dir(ix).glob("*.npy"))) == 2  # the stale generation was removed
    np.testing.assert_array_equal(m3.positions([rowids[1]]), [1])
    assert clsmatrix.load(ix, "other").vectors.shape == (0, 512)


def test_cls_matrix_without_a_writable_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ramcli.search import clsmatrix

    ix = open_index(tmp_path / "i.db", writer=True)
    with ix.transaction():
        ix.put_image(_record("h1", [(1, "a", 0.9)]))
    monkeypatch.setattr(clsmatrix, "cache_dir", lambda _ix: tmp_path / "missing" / "deeper")
    m = clsmatrix.load(ix, "m")  # cannot cache (the folder cannot be made): built in memory
    np.testing.assert_allclose(m.vectors[0], _unit(np.arange(512, dtype=np.float32)), atol=1e-6)
    assert not (tmp_path / "missing").exists()


def test_v2_index_migrates_and_keeps_its_data(tmp_path: Path) -> None:
    import sqlite_utils

    from ramcli.index import MIGRATIONS

    path = tmp_path / "old.db"
    utils = sqlite_utils.Database(path)
    for step in MIGRATIONS[:2]:
        step(utils)
    utils.execute("pragma user_version = 2")
    utils.execute("insert into images (hash, model, cls) values ('h0', 'm', ?)",
                  [np.ones(512, np.float32).tobytes()])
    utils.conn.commit()
    utils.close()
    ix = open_index(path, writer=True)
    assert schema_version(ix.db) == SCHEMA_VERSION and ix.has_image("h0", "m")
    before = ix.images_generation()
    with ix.transaction():
        ix.put_image(_record("h1", []))
    assert ix.images_generation() > before


def test_a_writer_in_another_process_is_named(tmp_path: Path) -> None:
    """The lock is held across processes, and the second writer is told which run holds it."""
    import os

    from conftest import run_cli

    first = open_index(tmp_path / "i.db", writer=True)
    try:
        result = run_cli("untag", str(tmp_path / "nothing"), "--index", str(tmp_path / "i.db"))
        assert result.returncode != 0
        assert f"another ramcli run (pid {os.getpid()}) is writing to this index" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        first.close()
    assert run_cli("untag", str(tmp_path / "nothing"), "--index", str(tmp_path / "i.db")).returncode == 0


def test_lock_of_a_killed_writer_is_free(tmp_path: Path) -> None:
    """A run that dies (kill -9, power cut of the process) leaves no stale lock behind."""
    import subprocess
    import sys

    code = ("import sys; from pathlib import Path; from ramcli.index import open_index; "
            "ix = open_index(Path(sys.argv[1]), writer=True); print('held', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "i.db")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(RamcliError, match=r"another ramcli run \(pid \d+\)"):
            open_index(tmp_path / "i.db", writer=True)
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    open_index(tmp_path / "i.db", writer=True).close()
    open_index(tmp_path / "i.db").close()  # readers never take the lock


def test_an_unwritable_lock_is_one_clear_line(tmp_path: Path) -> None:
    """No traceback when the lock file cannot be made (here: a folder in its place, which even
    root cannot open as a file), nor when the index's folder cannot be."""
    from conftest import run_cli

    (tmp_path / "i.db.lock").mkdir()
    with pytest.raises(RamcliError, match="cannot create the index's lock file"):
        open_index(tmp_path / "i.db", writer=True)
    result = run_cli("untag", str(tmp_path / "nothing"), "--index", str(tmp_path / "i.db"))
    assert result.returncode != 0 and "cannot create the index's lock file" in result.stderr
    assert "Traceback" not in result.stderr
    (tmp_path / "file").write_text("x")
    with pytest.raises(RamcliError, match="cannot create the index's folder"):
        open_index(tmp_path / "file" / "i.db", writer=True)


def test_sqlite_utils_writes_roll_back_with_the_batch(tmp_path: Path) -> None:
    """The rare writes go through sqlite-utils; inside a batch they land with it or not at all."""
    ix = open_index(tmp_path / "i.db", writer=True)
    embeds = np.ones((1, 512), np.float32)
    with pytest.raises(KeyError), ix.transaction():
        ix.put_custom_tag("kite", embeds, descriptions=["a red kite"], threshold=0.6, name_zh=None, parent=None,
                          encoder="e")
        ix.set_tag_disabled("dog", True)
        raise KeyError("killed mid-batch")
    assert ix.custom_tags() == [] and ix.disabled_tags() == set()
    with ix.transaction():
        ix.put_custom_tag("kite", embeds, descriptions=["a red kite"], threshold=0.6, name_zh="风筝", parent="bird",
                          encoder="e")
        ix.set_tag_disabled("dog", True)
    first = ix.custom_tag("kite")
    assert first is not None and first.dirty and first.descriptions == ("a red kite",) and first.name_zh == "风筝"
    with ix.transaction():  # redefined: same id, pending again after being applied
        ix.mark_custom_applied([first.id, -3])
        ix.put_custom_tag("kite", 2 * embeds, descriptions=[], threshold=0.7, name_zh=None, parent=None, encoder="e")
    again = ix.custom_tag("kite")
    assert again is not None and again.id == first.id and again.dirty and again.threshold == 0.7
    assert again.embeds.shape == (1, 512) and ix.custom_tag_names() == [("kite", "")]
    run = ix.start_run("m", ["/p"])
    ix.finish_run(run, {"tagged": 1})
    assert ix.count("runs") == 1
    ix.close()
