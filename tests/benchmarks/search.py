"""Search latency on a synthetic index: a cold `ramcli search` process per query, as a user runs it.

Builds an index of N photos with random CLS embeddings, tags and token matrices, then times
(medians of 5 cold processes): an open-set query the first time (text encoder loaded; the query
cache emptied before each run), the same query again (embedding from the query cache), and a
tag-only query. Also the in-process time of Searcher.search alone.

What is full size, since it sets the time: the CLIP ViT-B/16 text encoder (random weights), the
RAM++ tag head that re-ranks (random weights; the image encoder is a tiny Swin, which search
never runs), the vocabulary (the official 4,585 tags from ../shared when present, else as many
made-up names), and the 145x512 tokens stored for every photo, as `ramcli tag` does by default
(--tokens to store fewer).

Usage: python tests/benchmarks/search.py [--photos 10000 100000] [--tokens N] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
MODEL = "bench_ram_plus"
TAGS = 4585


def build_index(path: Path, n: int, with_tokens: int, names: list[str], rng: np.random.Generator) -> None:
    from ramcli.index import open_index

    ix = open_index(path, writer=True)
    cls = rng.normal(size=(n, 512)).astype(np.float32)
    # The head's cost does not depend on the values: a few distinct matrices, cycled, behind each
    # photo's own token 0, which is its CLS embedding (as `ramcli tag` stores them).
    blobs = [rng.normal(size=(144, 512)).astype(np.float16).tobytes() for _ in range(16)]
    for start in range(0, n, 5000):  # one transaction per 5,000 photos: bounded journal
        with ix.transaction():
            for i in range(start, min(n, start + 5000)):
                h = f"{i:032x}"
                ix.conn.execute("insert into images (hash, model, width, height, taken_at, cls, tokens, tagged_at) "
                                "values (?, ?, 1, 1, ?, ?, ?, '')",
                                [h, MODEL, f"20{10 + i % 15}-01-01T00:00:00", cls[i].tobytes(),
                                 cls[i].astype(np.float16).tobytes() + blobs[i % len(blobs)] if i < with_tokens
                                 else None])
                ix.conn.executemany("insert into image_tags values (?, ?, ?, ?, ?)",
                                    [(h, MODEL, int(t), names[t], float(rng.uniform(0.6, 1)))
                                     for t in rng.choice(len(names), 5, replace=False)])
                ix.conn.execute("insert into photos (path, hash, size, mtime_ns, written, storage, model, updated_at) "
                                "values (?, ?, 1, 1, '[]', 'embed', ?, '')",
                                [f"/photos/{i // 1000:03d}/{i:07d}.jpg", h, MODEL])
    ix.close()


def timed(args: list[str], env: dict[str, str], runs: int = 5, before: Callable[[], None] = lambda: None) -> float:
    """Median seconds of ``runs`` cold `ramcli search` processes (``before`` runs ahead of each)."""
    times = []
    for _ in range(runs):
        before()
        t = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "ramcli", "search", *args], capture_output=True, text=True,
                             env=env)
        if res.returncode not in (0, 1):
            raise SystemExit(res.stderr)
        times.append(time.perf_counter() - t)
    return round(statistics.median(times), 3)


def forget_queries(index: Path) -> None:
    """A first query must really be the first: empty the query cache."""
    db = sqlite3.connect(index)
    with db:
        db.execute("delete from query_cache")
    db.close()


def tag_files(work: Path) -> dict[str, Path]:
    """The official tag list, Chinese names and thresholds when ../shared has them, else made-up ones."""
    official = REPO.parent / "shared" / "data" / "recognize-anything"
    if (official / "ram_tag_list.txt").is_file():
        return {"tag_list": official / "ram_tag_list.txt", "tag_list_zh": official / "ram_tag_list_chinese.txt",
                "thresholds": official / "ram_tag_list_threshold.txt"}
    from conftest import write_tag_files

    return write_tag_files(work / "tags", TAGS)


def install_models(work: Path) -> list[str]:
    """RAM++ with the full-size tag head (it re-ranks; tiny Swin) and the full-size CLIP text tower."""
    files = tag_files(work)
    names = files["tag_list"].read_text(encoding="utf-8").splitlines()
    if (work / "cache" / "models" / "clip_vit_b16_text").exists():
        return names
    import open_clip
    import torch

    from ramcli.models.catalog import import_local
    from ramcli.models.convert.random_init import FULL_HEAD, config, random_model, save_checkpoint

    ckpt = save_checkpoint(random_model(config("ram_plus", head=FULL_HEAD, num_tags=len(names))), work / "ram.pth")
    import_local(ckpt, MODEL, tag_list=files["tag_list"], tag_list_zh=files["tag_list_zh"],
                 thresholds=files["thresholds"])
    logging.getLogger().setLevel(logging.ERROR)
    torch.save(open_clip.create_model("ViT-B-16", pretrained=None, force_quick_gelu=True).state_dict(),
               work / "clip.pt")
    import_local(work / "clip.pt", "clip_vit_b16_text", tag_list=None)
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--tokens", type=int, help="photos that get a stored token matrix (default: all)")
    ap.add_argument("--work", type=Path, help="keep the models and indexes here (reused when present)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="ramcli-search-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RAMCLI_CACHE_DIR": str(work / "cache"), "HF_HUB_OFFLINE": "1"}
    os.environ.update(env)

    names = install_models(work)
    report: dict[str, object] = {"tokens_stored_for": args.tokens or "all", "tags": len(names), "runs": []}
    rng = np.random.default_rng(0)
    for n in args.photos:
        index = work / f"index_{n}.db"
        if not index.exists():
            build_index(index, n, n if args.tokens is None else min(args.tokens, n), names, rng)
        base = ["--index", str(index), "--json", "--limit", "20"]
        query = ["golden retriever wearing a red scarf", *base]
        row = {"photos": n, "index_mb": round(index.stat().st_size / 1e6, 1),
               "open_set_first_s": timed(query, env, before=lambda index=index: forget_queries(index)),
               "open_set_cached_s": timed(query, env),
               "tag_only_s": timed([names[3], *base], env),
               "cli_floor_s (ramcli --version)": round(min(
                   _t([sys.executable, "-m", "ramcli", "--version"], env) for _ in range(3)), 3)}
        from ramcli.index import open_index
        from ramcli.search.ranking import SearchOptions, open_searcher

        ix = open_index(index)
        searcher = open_searcher(ix)
        for label, q in (("in_process_open_set_cached_s", "golden retriever wearing a red scarf"),
                         ("in_process_tag_only_s", names[3])):
            t = time.perf_counter()
            searcher.search(q, SearchOptions())
            row[label] = round(time.perf_counter() - t, 3)
        ix.close()
        report["runs"].append(row)  # type: ignore[union-attr]
        print(json.dumps(row), file=sys.stderr)
    print(json.dumps(report, indent=2))


def _t(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, capture_output=True, env=env, check=True)
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
