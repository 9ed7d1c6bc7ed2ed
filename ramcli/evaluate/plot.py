"""One PNG per evaluated variant: precision-recall curves of the best and worst tags, and the AP
histogram. People would rather look than read 214 lines of ap.txt.

matplotlib with its Agg backend (no display needed), imported here only: `ramcli eval` pays for it,
no other command does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ramcli.evaluate import metrics

SHOWN = 5  # curves of this many best and worst tags


def write_plot(path: Path, scores: np.ndarray, targets: np.ndarray, taglist: list[str], result: dict[str, Any],
               title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    aps = np.array([t["AP"] for t in result["per_tag"]])
    with_pos = np.flatnonzero(targets.sum(axis=0) > 0)  # a tag without positives has no curve
    ranked = with_pos[np.argsort(-aps[with_pos], kind="stable")]
    best, worst = ranked[:SHOWN], ranked[::-1][:SHOWN]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), dpi=100)
    for ax, picked, label in ((axes[0], best, "best"), (axes[1], worst, "worst")):
        for k in picked:
            p, r = metrics.pr_curve(scores[:, k], targets[:, k])
            ax.plot(r, p, drawstyle="steps-post", label=f"{taglist[k]} (AP {aps[k]:.1f})")
        ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
               title=f"{len(picked)} {label} tags by AP")
        ax.grid(alpha=0.3)
        if len(picked):
            ax.legend(fontsize=8, loc="lower left")
    axes[2].hist(aps[with_pos], bins=20, range=(0, 100), color="#4477aa", edgecolor="white")
    axes[2].axvline(result["mAP"], color="#cc3311", linestyle="--", label=f"mAP {result['mAP']:.2f}")
    axes[2].set(xlabel="AP (%)", ylabel="tags", title=f"AP of {len(with_pos)} tags with positives")
    axes[2].legend(fontsize=8)
    fig.suptitle(f"{title}: mAP {result['mAP']:.2f}, CP {result['CP']:.2f}, CR {result['CR']:.2f}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
