"""`ramcli tag --ray` (issue 21): Ray local mode on a tiny library gives the index a local run gives, bit for bit;
a Ray worker killed mid-run and a driver killed mid-merge lose nothing and infer nothing twice.

Real Ray, real SQLite, real files, the real CLI in a subprocess. Skipped where Ray is not installed
(``pip install 'ramcli[ray]'``; the ``test`` extra has it).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from conftest import make_photo, run_cli

pytest.importorskip("ray.data", reason="Ray is an optional extra: pip install 'ramcli[ray]'")

# Ray on this machine, small: an object store of ~1% of memory, no dashboard (the CLI turns it off).
RAY_ENV = {"RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION": "0.01", "RAY_USAGE_STATS_ENABLED": "0"}
PHOTOS = 12
BATCH = "2"


def library(root: Path, video: bool = True) -> Path:
    """A tiny library: photos of several sizes and formats, one file that is not an image, one video."""
    from media import write_video

    for i in range(PHOTOS):
        suffix = ".png" if i % 4 == 3 else ".jpg"
        make_photo(root / f"sub{i % 2}" / f"p{i:02d}{suffix}", size=(320 + 16 * i, 240), seed=100 + i)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    if video:
        write_video(root / "clip.mp4", seconds=3.0, audio=False)
    return root


def tag(folder: Path, index: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[int, list[dict], str]:
    res = run_cli("tag", str(folder), "-m", "tiny_ram_plus", "--batch-size", BATCH, "--threshold", "0", "--top-k", "8",
                  "--index", str(index), "--json", *extra, env={**RAY_ENV, **(env or {})})
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    return res.returncode, lines, res.stderr


def dump(index: Path, root: Path) -> dict[str, list[tuple]]:
    """Everything a run stored, keyed so two runs on copies of one library compare: paths relative to the
    library, run times and file times left out."""
    conn = sqlite3.connect(index)
    try:
        out = {}
        tables = [r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")]
        for table in ("images", "image_tags", "photos", "failures", *[t for t in tables if "still" in t]):
            cols = [r[1] for r in conn.execute(f"pragma table_info({table})")
                    if r[1] not in ("tagged_at", "updated_at", "mtime_ns", "failed_at", "rowid")]
            rows = conn.execute(f"select {', '.join(cols)} from {table}").fetchall()
            out[table] = sorted(tuple(str(v).replace(str(root), "<lib>") if isinstance(v, str) else v for v in r)
                                for r in rows)
        return out
    finally:
        conn.close()


@pytest.fixture
def twins(tiny_model, tmp_path: Path) -> tuple[Path, Path]:
    """Two copies of one library: one for a local run, one for a Ray run."""
    a = library(tmp_path / "local")
    b = tmp_path / "ray"
    shutil.copytree(a, b)
    return a, b


def keywords(lines: list[dict], root: Path) -> dict[str, tuple]:
    return {str(Path(d["path"]).relative_to(root)): (d["status"], tuple(d.get("tags", ())), d.get("error", "")
                                                     .replace(str(root), "<lib>")) for d in lines}


def test_ray_run_stores_what_a_local_run_stores(twins: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = twins
    rc_a, local, _ = tag(a, tmp_path / "a.db")
    rc_b, ray, err = tag(b, tmp_path / "b.db", "--ray")
    assert rc_a == rc_b == 1  # the broken file fails both
    assert keywords(local, a) == keywords(ray, b), err
    assert sum(d["status"] == "tagged" for d in ray) == PHOTOS + 1
    assert [d["error"].replace(str(b), "<lib>") for d in ray if d["status"] == "error"] == \
        [d["error"].replace(str(a), "<lib>") for d in local if d["status"] == "error"]
    got, want = dump(tmp_path / "b.db", b), dump(tmp_path / "a.db", a)
    assert got["images"] and got["image_tags"]
    for table in want:  # scores, CLS (float32 bytes) and float16 tokens: identical bytes
        assert got[table] == want[table], table
    assert not any((tmp_path / ".ray-shards").glob("*/*.parquet"))  # the shards have served
    # a re-run finds nothing to do and does not even start Ray
    rc, again, err = tag(b, tmp_path / "b.db", "--ray")
    assert rc == 1  # the broken file is remembered, and still an error
    assert {d["status"] for d in again} <= {"unchanged", "error"}, err


def test_a_killed_ray_worker_loses_nothing(twins: tuple[Path, Path], tmp_path: Path) -> None:
    """An inference actor is SIGKILLed after writing its first shard, before handing it back: Ray restarts
    it and runs the batch again; the index is still the local run's."""
    a, b = twins
    mark = tmp_path / "killed"
    tag(a, tmp_path / "a.db")
    rc, lines, err = tag(b, tmp_path / "b.db", "--ray",
                         env={"RAMCLI_FAULT": "ray-actor-after-shard", "RAMCLI_FAULT_MARK": str(mark)})
    assert mark.exists(), "no worker was killed"
    assert rc == 1 and sum(d["status"] == "tagged" for d in lines) == PHOTOS + 1, err
    assert dump(tmp_path / "b.db", b) == dump(tmp_path / "a.db", a)


def test_a_killed_driver_resumes_from_the_shards(twins: tuple[Path, Path], tmp_path: Path) -> None:
    """The driver dies after merging one shard, with the next on disk: the re-run takes that shard's photos
    from it (not inferred again), infers the rest, and the index is the local run's."""
    a, b = twins
    tag(a, tmp_path / "a.db")
    rc, first, _ = tag(b, tmp_path / "b.db", "--ray", env={"RAMCLI_FAULT": "ray-driver-second-shard"})
    assert rc == 137
    landed = list((tmp_path / ".ray-shards").glob("*/*.parquet"))
    assert len(landed) >= 2  # the merged one and at least the one it died before
    rc, second, err = tag(b, tmp_path / "b.db", "--ray")
    assert rc == 1, err
    resumed = [line for line in err.splitlines() if "from the shards of an interrupted run" in line]
    assert resumed and int(resumed[0].split()[0]) >= 1, err
    merged_first = {d["path"] for d in first if d["status"] == "tagged"}
    tagged_second = {d["path"] for d in second if d["status"] == "tagged"}
    assert merged_first and not merged_first & tagged_second  # what landed in the index is not done again
    assert len(merged_first | tagged_second) == PHOTOS + 1
    assert dump(tmp_path / "b.db", b) == dump(tmp_path / "a.db", a)


def test_shards_round_trip_bit_for_bit(tmp_path: Path) -> None:
    """Logits and CLS as float32, tokens as the index's float16, a video's stills: what comes back is exact."""
    from ramcli.pipeline import shards
    from ramcli.pipeline.infer import Inferred, Still
    from ramcli.pipeline.prepare import Prepared
    from ramcli.runtime.tagging import Tag

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((145, 512)).astype(np.float32) * 3
    logits = rng.standard_normal(40).astype(np.float32)
    tags = [Tag(3, "tag 003", "标签003", float(np.float32(0.91234567)))]
    photo = Inferred(Prepared(tmp_path / "p.jpg", "h1", None, 320, 240, "2024:01:01 10:00:00"), emb, tags, None,
                     {}, None, logits)
    still = Still(1.5, emb * 2, tags)
    video = Inferred(Prepared(tmp_path / "v.mp4", "h2", None, 64, 48, None, [1.5], 3.0), emb, tags, "a cap", {},
                     [still], logits)
    back = shards.read(shards.write(tmp_path, [(photo, (10, 20)), (video, (30, 40))]))
    p, v = back
    assert (p.path, p.size, p.mtime_ns, p.hash) == (str(tmp_path / "p.jpg"), 10, 20, "h1")
    assert p.logits.tobytes() == logits.tobytes() and p.embeds[0].tobytes() == emb[0].tobytes()
    assert p.embeds.astype(np.float16).tobytes() != b"" and \
        np.array_equal(p.embeds[1:].astype(np.float16), emb[1:].astype(np.float16))
    assert p.stills is None and p.prepared.taken_at == "2024:01:01 10:00:00"
    assert v.caption == "a cap" and v.prepared.duration == 3.0 and v.prepared.times == [1.5]
    assert v.stills is not None and v.stills[0].tags == tags and v.stills[0].t == 1.5
    assert v.stills[0].embeds[0].tobytes() == (emb[0] * 2).tobytes()
    assert not list(tmp_path.glob(".*.tmp"))


def test_without_ray_or_with_dry_run_one_clear_line(tiny_model, tmp_path: Path) -> None:
    import subprocess
    import sys

    photo = make_photo(tmp_path / "p.jpg", seed=5)
    no_ray = ("import sys; sys.modules['ray'] = None; from ramcli.cli import main; "
              f"sys.argv = ['ramcli', 'tag', {str(photo)!r}, '--index', {str(tmp_path / 'x.db')!r}, '--ray']; main()")
    res = subprocess.run([sys.executable, "-c", no_ray], capture_output=True, text=True, check=False)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1 and "pip install 'ramcli[ray]'" in lines[0], res.stderr
    assert not (tmp_path / "x.db").exists()  # refused before the index is made
    dry = run_cli("tag", str(photo), "--dry-run", "--ray")
    assert dry.returncode == 2 and "--dry-run" in dry.stderr and "Traceback" not in dry.stderr


def test_a_driver_killed_mid_write_resumes_by_image_hash(tiny_model, tmp_path: Path) -> None:
    """The driver dies right after replacing the first photo with its keywords, before the index rows: that
    photo's stat no longer matches its shard, but its image hash does, so the re-run takes it (and the rest of
    what landed) from the shards, infers nothing twice, and the index is the local run's. (No video here: its
    keywords go to a sidecar, which leaves its stat alone.)"""
    import pyarrow.parquet as pq

    a = library(tmp_path / "local", video=False)
    b = tmp_path / "ray"
    shutil.copytree(a, b)
    tag(a, tmp_path / "a.db")
    rc, first, _ = tag(b, tmp_path / "b.db", "--ray", env={"RAMCLI_FAULT": "after-replace"})
    assert rc == 137 and not [d for d in first if d["status"] == "tagged"]
    changed = []  # photos whose stat is no longer the one their shard recorded
    for shard in (tmp_path / ".ray-shards").glob("*/*.parquet"):
        for r in pq.read_table(shard, columns=["path", "size", "mtime_ns"]).to_pylist():
            st = Path(r["path"]).stat()
            if (st.st_size, st.st_mtime_ns) != (r["size"], r["mtime_ns"]):
                changed.append(r["path"])
    assert len(changed) == 1
    rc, second, err = tag(b, tmp_path / "b.db", "--ray")
    assert rc == 1, err
    resumed = [line for line in err.splitlines() if "from the shards of an interrupted run" in line]
    assert len(resumed) == 1 and resumed[0].endswith("(1 found by image hash)"), err
    assert int(resumed[0].split()[0]) >= 2  # with the rest of its shard, at least
    assert sum(d["status"] == "tagged" for d in second) == PHOTOS
    assert dump(tmp_path / "b.db", b) == dump(tmp_path / "a.db", a)
