"""Tag speed of this checkout against another checkout of ramcli, side by side in one run.

Speed on a shared, changing CPU is only worth a ratio measured in the same run: this script builds one
library (the `library.py` benchmark's photos) and one tiny random RAM++, then times `ramcli tag` of a
fresh copy of the library with each checkout's code, alternating A B A B ... so that load on the machine
falls on both alike. The CPU's model name and SIMD flags are printed with the numbers.

Usage: python tests/benchmarks/against.py --other /path/to/other/checkout [--photos 150] [--rounds 3]
(e.g. `git worktree add /tmp/base <commit>` first). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "benchmarks"))

from library import make_library, tiny_workspace  # noqa: E402


def cpu() -> dict[str, object]:
    """The CPU's name and the SIMD flags that matter to onnxruntime's kernels."""
    name, flags = "unknown", set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name") and name == "unknown":
            name = line.split(":", 1)[1].strip()
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
    simd = sorted(f for f in flags if f.startswith(("avx", "fma", "sse4", "amx", "vnni")))
    return {"model": name, "simd": simd}


def one(tree: Path, lib: Path, work: Path, env: dict[str, str], tag: str) -> float:
    """One first-run `ramcli tag` of a fresh copy of ``lib`` with ``tree``'s code; seconds."""
    copy = work / f"run-{tag}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(lib, copy / "Photos", copy_function=shutil.copy2)
    cmd = [sys.executable, "-m", "ramcli", "tag", "-m", "tiny_ram_plus", "--threshold", "0", "--top-k", "5",
           "--json", "--index", str(copy / "index.db"), str(copy / "Photos")]
    t = time.perf_counter()
    res = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, env=env, check=False)
    dt = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(f"{tree}: {res.stderr[-2000:]}")
    shutil.rmtree(copy)
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--other", type=Path, required=True, help="another checkout of ramcli (its repo root)")
    ap.add_argument("--photos", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ramcli-against-"))
    env = tiny_workspace(work)
    lib = work / "Library"
    make_library(lib, args.photos)
    trees = {"this": REPO, "other": args.other.resolve()}
    times: dict[str, list[float]] = {k: [] for k in trees}
    for r in range(args.rounds):
        order = list(trees) if r % 2 == 0 else list(reversed(trees))
        for name in order:
            times[name].append(one(trees[name], lib, work, env, name))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({
        "cpu": cpu(), "photos": args.photos, "trees": {k: str(v) for k, v in trees.items()},
        "seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "median_photos_per_s": {k: round(args.photos / v, 1) for k, v in med.items()},
        "this_over_other_time": round(med["this"] / med["other"], 3),
    }, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
