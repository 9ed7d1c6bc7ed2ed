"""`ramcli add-tag` against re-tagging from scratch, on the same photos (tiny random RAM++ model,
random full-size CLIP ViT-B/16 text encoder).

1. `ramcli tag` indexes N photos (tokens stored, keywords written).
2. `ramcli add-tag "red kite"` scores the new tag over the whole library from the stored tokens
   and writes it into the photos where it fires (timed; its threshold is set at the median score,
   found by an untimed --no-write run, so that it fires on half the photos).
3. The tag is exported and imported into a fresh index, and `ramcli tag` runs again from scratch
   with it in the vocabulary (timed): its scores for the tag must equal step 2's (<= 1e-4).
Also: the authors' 200 OpenImages-rare tags in one `add-tag --descriptions-file` (when ../shared
is there), timed.

Usage: python tests/benchmarks/add_tag.py [--photos 1000] [--workdir DIR]
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "benchmarks"))


def cli(*args: str, env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "ramcli", *args], capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise SystemExit(f"ramcli {' '.join(args)} failed:\n{res.stderr}")
    return round(time.perf_counter() - t, 2), res


def scores(index: Path, tag: str) -> dict[str, float]:
    return dict(sqlite3.connect(index).execute(
        "select p.path, t.score from image_tags t join photos p on p.hash = t.hash where t.tag = ?", [tag]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--skip-rare", action="store_true", help="leave out the 200 OpenImages-rare tags (~8 min)")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ramcli-addtag-"))

    import open_clip
    import torch
    from library import make_library, tiny_workspace

    from conftest import SHARED
    from ramcli.models.catalog import import_local

    env = tiny_workspace(work)
    logging.getLogger().setLevel(logging.ERROR)
    torch.save(open_clip.create_model("ViT-B-16", pretrained=None, force_quick_gelu=True).state_dict(),
               work / "clip.pt")
    import_local(work / "clip.pt", "clip_vit_b16_text", tag_list=None)
    lib = work / "Photos"
    make_library(lib, args.photos)
    a, b = work / "a.db", work / "b.db"
    tag = "red kite"
    report: dict[str, object] = {"photos": args.photos, "workdir": str(work)}

    report["first_tag_run_s"], _ = cli("tag", "-m", "tiny_ram_plus", "--index", str(a), str(lib), env=env)
    # Calibration (not timed): a threshold at the median score, so the tag fires on half the photos
    # and add-tag really rewrites 500 files (random weights give no meaningful 0.5).
    cli("add-tag", tag, "--threshold", "0.000001", "--no-write", "--index", str(a), env=env)
    median = sorted(scores(a, tag).values())[len(scores(a, tag)) // 2]
    cli("tags", "remove", tag, "--no-write", "--index", str(a), env=env)
    report["threshold"] = round(median, 6)
    report["add_tag_s"], res = cli("add-tag", tag, "--threshold", f"{median:.6f}", "--index", str(a), env=env)
    report["add_tag_summary"] = res.stderr.strip().splitlines()[-1]
    # The scoring alone (no file to rewrite: the same threshold again, index only)
    report["rescore_only_s"], _ = cli("tags", "set", tag, "--threshold", f"{median:.6f}", "--no-write",
                                      "--index", str(a), env=env)
    cli("tags", "export", str(work / "vocab.json"), "--index", str(a), env=env)
    cli("tags", "import", str(work / "vocab.json"), "--index", str(b), env=env)  # fresh index, no photos yet
    report["retag_from_scratch_with_tag_s"], _ = cli("tag", "-m", "tiny_ram_plus", "--index", str(b), str(lib),
                                                     env=env)
    sa, sb = scores(a, tag), scores(b, tag)
    report["photos_with_tag"] = len(sa)
    report["same_photos_fire"] = set(sa) == set(sb)
    report["max_abs_score_diff"] = max((abs(sa[p] - sb[p]) for p in sa.keys() & sb.keys()), default=None)
    full = float(report["retag_from_scratch_with_tag_s"])
    report["speedup"] = round(full / float(report["add_tag_s"]), 1)
    report["speedup_rescore_only"] = round(full / float(report["rescore_only_s"]), 1)

    rare = SHARED / "data" / "recognize-anything" / "openimages_rare_200_llm_tag_descriptions.json"
    if rare.is_file() and not args.skip_rare:
        report["openimages_rare_200_s"], res = cli("add-tag", "--descriptions-file", str(rare), "--index", str(a),
                                                   env=env)
        report["openimages_rare_200_summary"] = res.stderr.strip().splitlines()[-1]
        report["custom_tags_now"] = len(cli("tags", "list", "--custom", "--json", "--index", str(a),
                                            env=env)[1].stdout.splitlines())
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
