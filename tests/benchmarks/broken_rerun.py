"""No-change re-runs of a library with broken files, with the tiny random RAM++ model.

Why: a library with a few unreadable files (empty, truncated, text under a photo's name) used to have
every re-run read and decode each of them again through a fresh process pool, and load the model to do
so: a no-change re-run took ~5x as long as the same library without them. ramcli now remembers such
failures in the index (by size, mtime and model) and reports them without reading them.

Two libraries are built: N good photos (``library.py``'s JPEG/PNG/WebP/TIFF/GIF mix), and a copy of them
plus 9 files that cannot be read. Each is tagged once, then no-change re-runs are timed side by side,
the variants taking turns each round:

* ``clean``: the library without the broken files;
* ``broken``: the library with them (their failures remembered: nothing read);
* ``broken_retry_errors``: the same with ``--retry-errors`` (each broken file read again).

Each timing is a whole `ramcli tag` process as a user runs it (start-up included); ``model_loaded``
says whether the run loaded the model. ``--source DIR`` runs ramcli from another checkout (e.g.
``git archive <commit>`` unpacked) to measure the same thing on older code (there ``--retry-errors``
may not exist: that variant is then null).

Usage: python tests/benchmarks/broken_rerun.py [--photos 100] [--rounds 5] [--source DIR] [--workdir DIR]
Prints one JSON document.
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
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "benchmarks")]  # this checkout's ramcli

from library import make_library, tiny_workspace  # noqa: E402

LOADED = "model tiny_ram_plus on"  # said when (and only when) a run loads the model


def make_broken(folder: Path, good: Path) -> list[Path]:
    """Nine files that cannot be read, of kinds real libraries hold (failed downloads, cut copies)."""
    data = good.read_bytes()
    folder.mkdir(parents=True, exist_ok=True)
    contents = {
        "empty.jpg": b"",
        "zeros.jpg": b"\0" * 4096,
        "page.jpg": b"<html><body>404 Not Found</body></html>\n",
        "text.png": b"not a png\n",
        "cut_header.jpg": data[:300],
        "cut_third.jpg": data[:len(data) // 3],
        "cut_half.jpg": data[:len(data) // 2],
        "bad_tiff.tiff": b"II*\x00" + bytes(range(256)) * 8,
        "bad_webp.webp": b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x01" * 64,
    }
    out = []
    for name, body in contents.items():
        (folder / name).write_bytes(body)
        out.append(folder / name)
    return out


def tag(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, dict[str, int], bool, int]:
    """One `ramcli tag` process: seconds, statuses, whether it loaded the model, exit code."""
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    dt = time.perf_counter() - t
    if res.returncode not in (0, 1):
        return dt, {}, False, res.returncode
    counts: dict[str, int] = {}
    for line in res.stdout.splitlines():
        status = json.loads(line)["status"]
        counts[status] = counts.get(status, 0) + 1
    return dt, counts, LOADED in res.stderr, res.returncode


def summary(times: list[float]) -> dict[str, object]:
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "runs_s": [round(t, 3) for t in times]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--source", type=Path, default=REPO, help="checkout whose `python -m ramcli` runs")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="ramcli-broken-"))
    env = tiny_workspace(work)
    clean, broken = work / "clean", work / "broken"
    photos = make_library(clean, args.photos)
    shutil.copytree(clean, broken)
    bad = make_broken(broken / "broken", photos[1])
    base = [sys.executable, "-m", "ramcli", "tag", "-m", "tiny_ram_plus", "--threshold", "0", "--top-k", "5",
            "--json"]
    variants = {
        "clean": [*base, "--index", str(work / "clean.db"), str(clean)],
        "broken": [*base, "--index", str(work / "broken.db"), str(broken)],
        "broken_retry_errors": [*base, "--index", str(work / "broken.db"), "--retry-errors", str(broken)],
    }
    report: dict[str, object] = {"photos": args.photos, "broken_files": len(bad), "rounds": args.rounds,
                                 "source": str(args.source.resolve()), "workdir": str(work)}
    first = {}
    for name in ("clean", "broken"):
        dt, counts, _loaded, _rc = tag(variants[name], env, args.source)
        first[name] = {"s": round(dt, 2), "counts": counts}
    if first["broken"]["counts"].get("error") != len(bad):
        raise SystemExit(f"expected {len(bad)} errors on the first run, got {first['broken']['counts']}")
    report["first_run"] = first

    times: dict[str, list[float]] = {name: [] for name in variants}
    last: dict[str, object] = {}
    for r in range(args.rounds):
        order = list(variants)[r % 3:] + list(variants)[:r % 3]  # each variant takes every place in turn
        for name in order:
            dt, counts, loaded, rc = tag(variants[name], env, args.source)
            if rc == 2:  # an older ramcli without this option
                times[name] = []
                last[name] = None
                continue
            times[name].append(dt)
            last[name] = {"counts": counts, "model_loaded": loaded, "exit_code": rc}
    rerun: dict[str, object] = {}
    for name, t in times.items():
        got = last.get(name)
        rerun[name] = {**summary(t), **got} if t and isinstance(got, dict) else None
    report["rerun"] = rerun
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
