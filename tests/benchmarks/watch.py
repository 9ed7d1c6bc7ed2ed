"""`ramcli watch` latency and idle cost, on the tiny random RAM++ (the real converter's output; inference
is a few ms, so the numbers are the watcher's own overhead: settling, the batch's run, the metadata write).

* latency: a photo is written into the watched folder and closed; the time until its keywords can be read
  from the file (pyexiv2, polled every 10 ms), for ``--photos`` photos one after another, with the default
  ``--settle 2`` and with ``--settle 0.5``;
* idle CPU: the watcher's user+system CPU seconds (from /proc) over ``--idle`` seconds with nothing
  happening, as a share of one core.

Usage: python tests/benchmarks/watch.py [--photos 10] [--idle 30]   (Linux: reads /proc)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def keywords(path: Path) -> list[str]:
    import pyexiv2

    try:
        with pyexiv2.Image(str(path)) as img:
            return list(img.read_xmp().get("Xmp.dc.subject") or [])
    except (OSError, RuntimeError):
        return []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=10)
    ap.add_argument("--idle", type=float, default=30.0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="watch-bench-"))
    os.environ.update({"RAMCLI_CACHE_DIR": str(work / "cache"), "RAMCLI_DATA_DIR": str(work / "data"),
                       "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"})
    from conftest import make_photo, write_tag_files
    from ramcli.models.convert.export import import_checkpoint
    from ramcli.models.convert.random_init import config, random_model, save_checkpoint

    files = write_tag_files(work / "ckpt")
    ckpt = save_checkpoint(random_model(config("ram_plus")), work / "ckpt" / "tiny.pth")
    import_checkpoint(ckpt, "tiny_ram_plus", tag_list=files["tag_list"], tag_list_zh=files["tag_list_zh"],
                      thresholds=files["thresholds"])
    sources = [make_photo(work / "src" / f"{k}.jpg", (1024, 768), seed=k, quality=90) for k in range(args.photos)]
    for settle in (2.0, 0.5):
        root = work / f"lib-{settle}"
        root.mkdir()
        make_photo(root / "first.jpg", seed=99)
        err = (work / f"watch-{settle}.err").open("wb")
        index = work / f"{settle}.db"
        proc = subprocess.Popen([sys.executable, "-m", "ramcli", "watch", str(root), "--index", str(index),
                                 "-m", "tiny_ram_plus", "--threshold", "0", "--top-k", "3", "--settle", str(settle)],
                                stdout=subprocess.DEVNULL, stderr=err, cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        while not keywords(root / "first.jpg"):  # the catch-up pass (model loaded)
            if proc.poll() is not None:
                raise SystemExit((work / f"watch-{settle}.err").read_text())
            time.sleep(0.1)
        time.sleep(3)  # let its own write's events pass before measuring idle
        before, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(args.idle)
        idle = (cpu_seconds(proc.pid) - before) / (time.monotonic() - t0)
        latencies = []
        for src in sources:
            dest = root / src.name
            dest.write_bytes(src.read_bytes())  # written and closed
            closed = time.monotonic()
            while not keywords(dest):
                time.sleep(0.01)
            latencies.append(time.monotonic() - closed)
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        print(json.dumps({"settle_s": settle, "photos": len(latencies), "latency_median_s":
                          round(statistics.median(latencies), 2), "latency_max_s": round(max(latencies), 2),
                          "idle_cpu_share_of_one_core": round(idle, 4), "idle_window_s": args.idle,
                          "cpus": os.cpu_count()}), flush=True)


if __name__ == "__main__":
    main()
