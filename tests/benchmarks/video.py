"""A long video: what `ramcli tag` decodes of it, against decoding every frame.

Writes a 1080p H.264 video (``--minutes`` long, 25 fps, a keyframe every 2 s as phones write them, moving
shapes over noise so the encoder has real work) with PyAV's bundled libx264, then measures, each in a fresh
process-free call on the same machine:

* ``full``: PyAV decoding every frame (what a naive sampler pays before picking a few);
* ``sample``: ``ramcli.runtime.video.sample_video`` with the defaults `ramcli tag` uses (keyframes only,
  seek to each moment): frames decoded, seeks, seconds;
* ``hash``: the video's identity (``video_hash``: demux only, no decoding).

Prints one JSON line. Usage: python tests/benchmarks/video.py [--minutes 10] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np


def write(path: Path, minutes: float, fps: int = 25) -> int:
    import av

    w, h = 1920, 1080
    n = int(minutes * 60 * fps)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "g": str(2 * fps),
                                                              "keyint_min": str(2 * fps), "sc_threshold": "0"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.time_base = Fraction(1, fps)
        for i in range(n):
            img = noise.copy()
            x = (i * 7) % (w - 300)
            y = (i * 3) % (h - 300)
            img[y:y + 300, x:x + 300] = ((i // (fps * 30)) * 40 % 255, 200, 80)  # a new colour every 30 s
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return n


def full_decode(path: Path) -> tuple[int, float]:
    import av

    t = time.perf_counter()
    count = 0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for _ in c.decode(s):
            count += 1
    return count, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    from ramcli.runtime.video import sample_video, video_hash

    work = args.work or Path(tempfile.mkdtemp(prefix="ramcli-video-"))
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"long_{args.minutes:g}min_1080p.mp4"
    t = time.perf_counter()
    frames = write(path, args.minutes) if not path.exists() else None
    made = time.perf_counter() - t
    t = time.perf_counter()
    clip = sample_video(path)
    sample_s = time.perf_counter() - t
    t = time.perf_counter()
    video_hash(path)
    hash_s = time.perf_counter() - t
    decoded, full_s = full_decode(path)
    print(json.dumps({
        "cpu": platform.processor() or platform.machine(), "video": str(path), "bytes": path.stat().st_size,
        "minutes": args.minutes, "frames": decoded, "written_s": round(made, 1) if frames else None,
        "full": {"decoded": decoded, "s": round(full_s, 2)},
        "sample": {"stills": len(clip.frames), "decoded": clip.decoded, "seeks": clip.seeks, "s": round(sample_s, 2),
                   "at": [round(f.t, 1) for f in clip.frames]},
        "hash": {"s": round(hash_s, 2)},
        "speedup": round(full_s / max(sample_s, 1e-9), 1),
    }))


if __name__ == "__main__":
    main()
