"""`ramcli tags calibrate`: per-tag thresholds from the user's verdicts.

The rule itself (:func:`ramcli.pipeline.calibrate.fit`) is tested on a synthetic library with controlled
scores and known, noisy labels — numbers drawn with a fixed seed, not images: the calibration reads its
scores from the tag head over stored tokens, which a tiny random model cannot be made to produce on
purpose. The command is tested over the real CLI on real photos tagged by the tiny RAM++ model, with
exiftool reading the files.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from test_feedback import EXIFTOOL, dry_scores, subject, tags_of

from conftest import make_photo, run_cli
from ramcli.pipeline.calibrate import fit


def synthetic(seed: int = 7, n: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """(scores, truth) of one tag over ``n`` photos: 30 % carry it; their scores ~ N(0.72, 0.10), the
    others' ~ N(0.45, 0.12), clipped to [0, 1]."""
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < 0.3
    scores = np.clip(np.where(truth, rng.normal(0.72, 0.10, n), rng.normal(0.45, 0.12, n)), 0, 1)
    return scores, truth


def precision_recall(scores: np.ndarray, truth: np.ndarray, t: float) -> tuple[float, float]:
    fired = scores > t
    return float(truth[fired].mean()), float((truth & fired).sum() / truth.sum())


def test_calibration_moves_precision_toward_the_target() -> None:
    """Official threshold 0.5: true precision 0.568 (recall 0.988). The user judges 300 random photos,
    5 % of the verdicts wrong; target 0.8. The calibrated threshold is 0.590: true precision 0.766,
    recall 0.896 — from 0.232 under the target to 0.034 under it."""
    scores, truth = synthetic()
    before, _ = precision_recall(scores, truth, 0.5)
    assert before == pytest.approx(0.568, abs=1e-3)
    rng = np.random.default_rng(1)
    judged = rng.choice(len(scores), 300, replace=False)
    said = truth[judged] ^ (rng.random(300) < 0.05)  # the user is wrong 5 % of the time
    got = fit(scores[judged][said], scores[judged][~said], 0.5, target=0.8, min_evidence=10)
    assert got is not None
    after, recall = precision_recall(scores, truth, got.threshold)
    assert abs(after - 0.8) < abs(before - 0.8) and abs(after - 0.8) < 0.1, (got, after)
    assert recall > 0.6
    print(f"threshold {got.threshold:.3f}: precision {before:.3f} -> {after:.3f}, recall {recall:.3f}")


def test_thin_evidence_stays_near_the_official_threshold() -> None:
    """Under --min-evidence nothing moves; at exactly min_evidence verdicts the threshold moves half-way to
    what the verdicts alone say; rejections under the official threshold never lower it."""
    confirmed, rejected = np.array([0.9, 0.85, 0.8, 0.75, 0.7]), np.array([0.6, 0.55, 0.5, 0.45])
    assert fit(confirmed, rejected, 0.5, target=0.9, min_evidence=10) is None
    got = fit(confirmed, np.append(rejected, 0.65), 0.5, target=0.9, min_evidence=10)
    assert got is not None and got.weight == 0.5
    # just under 0.7: the five confirmed pass, the rejected 0.65 does not (at 0.65 it would be 5 of 6, < 0.9)
    assert got.fitted == pytest.approx(0.7) and got.fitted < 0.7 and got.threshold == pytest.approx(0.6)
    low = fit(np.array([]), np.array([0.1, 0.2, 0.3]), 0.5, min_evidence=3)
    assert low is not None and low.threshold == 0.5
    high = fit(np.array([]), np.array([0.7, 0.8]), 0.5, min_evidence=2)  # rejected above: raised over them
    assert high is not None and high.fitted == pytest.approx(0.8) and high.threshold == pytest.approx(0.65)
    down = fit(np.array([0.3, 0.35, 0.4, 0.45]), np.array([0.1]), 0.5, target=0.9, min_evidence=5)
    assert down is not None and down.fitted == pytest.approx(0.3) and down.threshold == pytest.approx(0.4)


@pytest.mark.skipif(EXIFTOOL is None, reason="exiftool not installed")
def test_calibrate_applies_library_wide_from_stored_scores(tmp_path: Path, tiny_model) -> None:
    """Every tag's score is stored (`--threshold 0 --top-k 40`: the tiny model has 40 tags). The user
    confirms tag T on the photos where it scores best and rejects it on the others; calibration then
    moves T's threshold, says what changes, and applies it to every photo's file without decoding any."""
    root = tmp_path / "lib"
    photos = [make_photo(root / f"p{i}.jpg", (160, 120), seed=10 + i, quality=90) for i in range(8)]
    idx = ("--index", str(tmp_path / "index.db"))
    assert run_cli("tag", "-m", "tiny_ram_plus", "--threshold", "0", "--top-k", "40", *idx, str(root)).returncode == 0
    scores = {p: dry_scores(p) for p in photos}
    spread = {t: np.ptp([scores[p][t] for p in photos]) for t in scores[photos[0]]}
    tag = max(spread, key=lambda t: spread[t])  # the tag the photos disagree on most
    ranked = sorted(photos, key=lambda p: -scores[p][tag])
    for p in ranked[:3]:
        assert run_cli("tags", "confirm", tag, str(p), *idx).returncode == 0
    for p in ranked[3:6]:
        assert run_cli("tags", "reject", tag, str(p), *idx).returncode == 0

    dry = run_cli("tags", "calibrate", "--min-evidence", "2", "--target-precision", "0.9", "--dry-run", "--json", *idx)
    assert dry.returncode == 0, dry.stderr
    plan = next(json.loads(x)["plan"] for x in dry.stdout.splitlines() if json.loads(x).get("plan", {}).get("tag")
                == tag)
    assert (plan["confirmed"], plan["rejected"]) == (3, 3)
    # the lowest threshold that lets through only confirmed photos: just under the 3rd best score, shrunk
    # toward the official one by 6 / (6 + 2)
    third = scores[ranked[2]][tag]
    assert plan["fitted"] == pytest.approx(third, abs=2e-3)
    assert plan["after"] == pytest.approx(plan["official"] + 0.75 * (plan["fitted"] - plan["official"]), abs=1e-5)
    with sqlite3.connect(tmp_path / "index.db") as db:
        assert db.execute("select count(*) from thresholds").fetchone()[0] == 0  # --dry-run changed nothing
    # the two unjudged photos carry the tag now (--threshold 0): they keep it iff they score above the new one
    expect_lost = sum(scores[p][tag] <= plan["after"] for p in ranked[6:])
    assert plan["lost"] == expect_lost and plan["gained"] == 0 and plan["photos"] == expect_lost

    print(f"{tag}: {plan}")
    res = run_cli("tags", "calibrate", "--min-evidence", "2", "--json", *idx)
    assert res.returncode == 0, res.stderr
    with sqlite3.connect(tmp_path / "index.db") as db:
        rows = db.execute("select tag, threshold, pending from thresholds").fetchall()
    assert rows == [(tag, pytest.approx(plan["after"]), 0)]
    for p in ranked[:3]:
        assert tag in subject(p)  # confirmed
    for p in ranked[3:6]:
        assert tag not in subject(p)  # rejected
    for p in ranked[6:]:
        assert (tag in subject(p)) == (scores[p][tag] > plan["after"])

    # later runs use the calibrated threshold in place of the model's (and --threshold still overrides)
    fresh = make_photo(root / "new.jpg", (160, 120), seed=99, quality=90)
    new = tags_of(run_cli("tag", "-m", "tiny_ram_plus", "--json", *idx, str(fresh)))[str(fresh)]
    assert (tag in new) == (dry_scores(fresh)[tag] > plan["after"])
