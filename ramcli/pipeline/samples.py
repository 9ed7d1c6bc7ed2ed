"""Sample inputs for agreement measurements: the source and prepare stages of the one pipeline, with a
sink that keeps the preprocessed pixels (`models quantize`, `models verify --photos`).

``models.quantize`` compares two taggers on whatever inputs it is given; which photos those are
and how they are decoded is the pipeline's business, so it is decided here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from ramcli.errors import ImageError, RamcliError
from ramcli.models import store
from ramcli.models.quantize import compare
from ramcli.pipeline import sources
from ramcli.pipeline.prepare import Prepare
from ramcli.runtime.engine import EngineOptions


def sample_inputs(model: store.InstalledModel, folder: Path | None, limit: int,
                  report: Callable[[str], None] = lambda _m: None, *, draft: bool = False) -> np.ndarray | None:
    """Up to ``limit`` photos of ``folder``, preprocessed (None without a folder: fixed sample
    images are used). Unreadable photos are reported and skipped."""
    if folder is None:
        return None
    prepare = Prepare(replace(model.preprocess, draft=draft), pool="inline")
    out = []
    for got in prepare(islice(sources.photos([folder]), limit * 2 + 8)):
        if len(out) >= limit:
            break
        if isinstance(got, ImageError):
            report(str(got))
        elif got.video:  # each still of a video is a sample of what the model sees
            out.extend(got.pixels)  # type: ignore[arg-type]
        else:
            out.append(got.pixels)
    if not out:
        raise RamcliError("no readable photos to measure on", path=folder, hint="give a folder with photos")
    return np.stack(out[:limit])


def decode_agreement(model: store.InstalledModel, folder: Path, limit: int,
                     report: Callable[[str], None] = lambda _m: None, *,
                     exact: np.ndarray | None = None) -> dict[str, Any]:
    """Tags from draft-decoded photos against exactly decoded ones (fp32 both times); ``exact``:
    the same photos already decoded exactly (``sample_inputs``), when the caller has them."""
    from ramcli.pipeline.tagger import open_tagger

    if exact is None:
        exact = sample_inputs(model, folder, limit, report)
    drafted = sample_inputs(model, folder, limit, draft=True)
    tagger = open_tagger(model, EngineOptions(device="cpu"))
    return {"decode": "draft", **compare(model, tagger, exact, tagger, drafted)}


