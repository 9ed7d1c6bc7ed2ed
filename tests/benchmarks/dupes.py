"""`ramcli dupes` time on a synthetic index: a cold `ramcli dupes --json` process, as a user runs it.

Builds a real index file of N photos with random CLS embeddings (random directions in 512-d: cosine
~0 +- 0.05, so nothing groups by chance) plus planted groups: every 50th image has 3 near copies
(cosine ~0.99) and every 100th photo one exact copy (the same hash at another path). Planted photos
get real (empty) files, since dupes leaves out indexed photos that are gone. Then times (median of
``--runs`` cold processes) `ramcli dupes --json` with the CLS matrix cache cold (first run after the
index was written) and warm, checks every planted group was found, and prints one JSON line per N.

Usage: python tests/benchmarks/dupes.py [--photos 10000 100000] [--runs 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
MODEL = "bench_ram_plus"


def build_index(path: Path, files: Path, n: int, rng: np.random.Generator) -> tuple[int, int]:
    """N images (+ near copies) and their photos; returns (planted near groups, planted exact groups)."""
    from ramcli.index import open_index

    ix = open_index(path, writer=True)
    cls = rng.normal(size=(n, 512)).astype(np.float32)
    near = exact = 0
    rows: list[tuple[str, str, bool]] = []  # (path, hash, planted)
    images: list[tuple[str, bytes]] = []
    for i in range(n):
        h = f"{i:032x}"
        images.append((h, cls[i].tobytes()))
        rows.append((f"{i // 1000:03d}/{i:07d}.jpg", h, i % 50 == 0 or i % 100 == 0))
        if i % 50 == 0:  # a burst: 3 more frames close to this one
            near += 1
            for k in range(3):
                hk = f"{i:030x}n{k}"
                v = cls[i] / np.linalg.norm(cls[i]) + rng.normal(size=512).astype(np.float32) * 0.004
                images.append((hk, v.astype(np.float32).tobytes()))
                rows.append((f"{i // 1000:03d}/{i:07d}_{k}.jpg", hk, True))
        if i % 100 == 0:
            exact += 1
            rows.append((f"backup/{i:07d}.jpg", h, True))
    with ix.transaction():
        ix.conn.executemany("insert into images (hash, model, width, height, taken_at, cls, tokens, tagged_at) "
                            "values (?, ?, 4000, 3000, null, ?, null, '')", [(h, MODEL, b) for h, b in images])
        ix.conn.executemany("insert into photos (path, hash, size, mtime_ns, written, storage, model, updated_at) "
                            "values (?, ?, 1, 1, '[]', 'embed', ?, '')",
                            [(str(files / p), h, MODEL) for p, h, _ in rows])
    ix.close()
    for p, _, planted in rows:
        if planted:
            (files / p).parent.mkdir(parents=True, exist_ok=True)
            (files / p).touch()
    return near, exact


def timed(index: Path, env: dict[str, str]) -> tuple[float, float, list[dict]]:
    """(wall seconds, CPU seconds, groups) of one cold process. CPU time too: on a shared machine the wall
    time says as much about the neighbours as about ramcli."""
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "ramcli", "dupes", "--index", str(index), "--json"],
                         capture_output=True, text=True, env=env, cwd=REPO, check=False)
    took = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(res.stderr)
    used = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
    return took, used, [json.loads(line) for line in res.stdout.splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for n in args.photos:
        work = Path(tempfile.mkdtemp(prefix=f"dupes-{n}-", dir=args.work))
        try:
            index = work / "index.db"
            near, exact = build_index(index, work / "photos", n, np.random.default_rng(n))
            cold, cold_cpu, groups = timed(index, env)  # builds the CLS matrix cache beside the index
            warm = [timed(index, env)[:2] for _ in range(args.runs)]
            kinds = [g["kind"] for g in groups]
            found_near = sum(k == "near" and len(g["paths"]) == 4 for k, g in zip(kinds, groups, strict=True))
            found_exact = sum(k == "exact" and len(g["paths"]) == 2 for k, g in zip(kinds, groups, strict=True))
            print(json.dumps({"photos": n + 3 * near + exact, "images": n + 3 * near,
                              "cold_s": round(cold, 2), "cold_cpu_s": round(cold_cpu, 2),
                              "warm_median_s": round(statistics.median(w for w, _ in warm), 2),
                              "warm_median_cpu_s": round(statistics.median(c for _, c in warm), 2),
                              "load_avg_1min": os.getloadavg()[0],
                              "planted_near": near, "found_near": found_near, "planted_exact": exact,
                              "found_exact": found_exact, "groups": len(groups), "cpus": os.cpu_count()}),
                  flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
