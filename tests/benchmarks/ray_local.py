"""`ramcli tag --ray` in Ray local mode against plain `ramcli tag`, on one library, side by side (issue 21).

1. Wall time of the real CLI on fresh copies of one library (tiny random RAM++, 1024x768 JPEGs as
   ``library.py`` makes them), plain and ``--ray`` alternately, ``--rounds`` times each: the overhead of
   starting Ray, shipping pixels through its object store and the shard round trip.
2. The driver's merge rate, in this process through the front door (``Library.tag(..., ray=...)``): the time
   the driver spends reading shards and in the sink (index rows + keyword writes into the files), per photo;
   once writing keywords and once with ``--no-write`` (index only). That rate caps a cluster whatever its
   size: the throughput model in the README.

Usage: python tests/benchmarks/ray_local.py [--photos 64] [--rounds 2] [--workdir DIR]
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "benchmarks"))
sys.path.insert(0, str(REPO))

from library import make_library, run, tiny_workspace  # noqa: E402


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


class Timed:
    """Adds up the seconds spent inside ``fn`` (a function, or a generator function run to its end)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def wrap(self, fn: Callable[..., Any], *, generator: bool = False) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            out = list(fn(*args, **kwargs)) if generator else fn(*args, **kwargs)
            self.seconds += time.perf_counter() - t
            self.calls += 1
            return iter(out) if generator else out

        return timed


def merge_rate(folder: Path, index: Path, write: bool, batch: int) -> dict[str, float]:
    """One in-process `tag --ray` run: the driver's seconds reading shards and in the sink, per photo."""
    from ramcli import Library
    from ramcli.pipeline import shards
    from ramcli.pipeline.distributed import RayOptions
    from ramcli.pipeline.run import TagOptions
    from ramcli.runtime.tagging import Selection

    reading, sinking = Timed(), Timed()
    original = shards.read
    shards.read = reading.wrap(original)
    try:
        opts = TagOptions(write=write, batch_size=batch, selection=Selection(threshold=0.0, top_k=5))
        t = time.perf_counter()
        run = Library(index, model="tiny_ram_plus").tag([folder], opts, ray=RayOptions(num_cpus=2))
        run.sink.consume = sinking.wrap(run.sink.consume, generator=True)  # type: ignore[method-assign]
        events: Iterator[Any] = iter(run)
        tagged = sum(ev.status == "tagged" for ev in events)
        wall = time.perf_counter() - t
    finally:
        shards.read = original
    return {"photos": tagged, "wall_s": round(wall, 2), "shard_read_s": round(reading.seconds, 3),
            "sink_s": round(sinking.seconds, 3),
            "merge_photos_per_s": round(tagged / (reading.seconds + sinking.seconds), 1),
            "sink_ms_per_photo": round(1000 * sinking.seconds / tagged, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    import ray

    work = args.workdir or Path(tempfile.mkdtemp(prefix="ramcli-ray-"))
    env = {**tiny_workspace(work), "RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION": "0.02",
           "RAY_USAGE_STATS_ENABLED": "0"}
    __import__("os").environ.update(env)
    source = work / "Photos"
    make_library(source, args.photos)
    base = [sys.executable, "-m", "ramcli", "tag", "-m", "tiny_ram_plus", "--threshold", "0", "--top-k", "5",
            "--batch-size", str(args.batch), "--json"]
    times: dict[str, list[float]] = {"plain": [], "ray": []}
    for r in range(args.rounds):
        for how in ("plain", "ray") if r % 2 == 0 else ("ray", "plain"):
            lib = work / f"{how}{r}"
            shutil.copytree(source, lib)
            dt, counts = run([*base, "--index", str(work / f"{how}{r}.db"), *(["--ray"] if how == "ray" else []),
                              str(lib)], env)
            assert counts.get("tagged") == args.photos, counts
            times[how].append(round(dt, 2))
    best = {k: min(v) for k, v in times.items()}
    report: dict[str, object] = {
        "cpu": cpu(), "cores": __import__("os").cpu_count(), "ray": ray.__version__, "photos": args.photos,
        "batch": args.batch, "cli_wall_s": times,
        "overhead_s": round(best["ray"] - best["plain"], 2),
        "photos_per_s": {k: round(args.photos / v, 2) for k, v in best.items()},
    }
    merges = {}
    for write in (True, False):
        lib = work / f"merge-{'write' if write else 'nowrite'}"
        shutil.copytree(source, lib)
        merges["write" if write else "no_write"] = merge_rate(lib, work / f"merge-{write}.db", write, args.batch)
    report["driver_merge"] = merges
    print(__import__("json").dumps(report, indent=2))


if __name__ == "__main__":
    main()
