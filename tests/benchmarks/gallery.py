"""Gallery latency at library scale: `ramcli serve` over a synthetic index, timed over real HTTP.

Builds (with ``tests/benchmarks/search.py``'s builders: full-size CLIP text tower and RAM++ tag head, random
weights, the official 4,585 tags) an index of N photos, starts `ramcli serve` on it, and times the search
page: the first open-set query (the server loads the text encoder and the tag head), then other open-set
queries (nothing to load: what "interactive" means), a tag query, and an image page. Medians of ``--runs``.
The photos are not on disk, so thumbnails are not part of the page time (the browser fetches them after).

Usage: python tests/benchmarks/gallery.py [--photos 100000] [--tokens 2000] [--runs 5] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "benchmarks"))
sys.path.insert(0, str(REPO / "tests"))

QUERIES = ["golden retriever wearing a red scarf", "a red bicycle leaning on a wall", "children on a beach at sunset",
           "snow on a mountain hut", "a bowl of ramen", "an old map on a table"]


def get(url: str) -> tuple[float, bytes]:
    t = time.perf_counter()
    with urllib.request.urlopen(url) as resp:
        body = resp.read()
    return time.perf_counter() - t, body


def main() -> None:
    from search import build_index, install_models

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=100_000)
    ap.add_argument("--tokens", type=int, default=2000, help="photos with stored tokens (the re-rank reads 100)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="ramcli-gallery-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RAMCLI_CACHE_DIR": str(work / "cache"), "HF_HUB_OFFLINE": "1"}
    os.environ.update(env)
    names = install_models(work)
    index = work / f"gallery_{args.photos}.db"
    if not index.exists():
        build_index(index, args.photos, min(args.tokens, args.photos), names, np.random.default_rng(0))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "ramcli", "serve", "--index", str(index), "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            if server.poll() is not None:
                raise SystemExit(server.stderr.read() if server.stderr else "serve exited")
            try:
                get(base + "/")
                break
            except OSError:
                time.sleep(0.2)
        first, _ = get(base + "/search?" + urllib.parse.urlencode({"q": QUERIES[0]}))
        later = [get(base + "/search?" + urllib.parse.urlencode({"q": q}))[0] for q in QUERIES[1:1 + args.runs]]
        tag = [get(base + "/search?" + urllib.parse.urlencode({"q": names[3 + i]}))[0] for i in range(args.runs)]
        _, html = get(base + "/search?" + urllib.parse.urlencode({"q": names[3]}))
        image = re.findall(rb'href="/photo/([0-9a-f]{32})', html)[0].decode()
        page = [get(f"{base}/search?like={image}")[0] for _ in range(args.runs)]
        print(json.dumps({"photos": args.photos, "tokens_stored_for": min(args.tokens, args.photos),
                          "first_open_set_s": round(first, 3),
                          "open_set_s": round(statistics.median(later), 3),
                          "tag_query_s": round(statistics.median(tag), 3),
                          "like_s": round(statistics.median(page), 3)}))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
