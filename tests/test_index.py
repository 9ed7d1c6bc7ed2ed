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
from ramcli.identity import image_hash
from ramcli.index import SCHEMA_VERSION, ImageRecord, PhotoRow, open_index, schema_version


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
