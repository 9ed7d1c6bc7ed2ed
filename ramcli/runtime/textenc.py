"""The CLIP ViT-B/16 text encoder at run time: torch-free tokenizer + onnxruntime session."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from ramcli.errors import ModelNotFound, RamcliError
from ramcli.models import store
from ramcli.models.families import FAMILIES
from ramcli.models.families.files import BPE
from ramcli.models.families.files import TEXT_ENCODER as ENCODER
from ramcli.runtime.clip_tokenizer import ClipTokenizer
from ramcli.runtime.engine import EngineOptions, _session, in_background

CLIP_MODEL = "clip_vit_b16_text"
BATCH = 64


class TextEncoder:
    """Texts -> (N, 512) L2-normalised CLIP text embeddings."""

    def __init__(self, model: store.InstalledModel, opts: EngineOptions | None = None, *,
                 meanwhile: Callable[[], object] | None = None) -> None:
        """The session loads in the background while the tokenizer is built, then ``meanwhile``
        runs (search starts loading its re-rank head there: once the tokenizer is done, so that
        three loads do not share two cores)."""
        family = FAMILIES.get(model.family)
        if family is None or not family.text_encoder:
            raise ModelNotFound(f"model {model.name!r} is not a CLIP text encoder",
                                hint=f"run `ramcli models pull {CLIP_MODEL}`")
        self.model = model
        session = in_background(lambda: _session(os.fspath(model.path / ENCODER), opts or EngineOptions()))
        try:
            self.tokenizer = ClipTokenizer(model.path / BPE, int(model.meta.get("context_length", 77)))
        except RamcliError as err:
            if err.path is None:  # not the file's fault (the regex package is missing)
                raise
            raise model.broken(BPE, err.message) from None  # the model's own copy: convert it again
        if meanwhile is not None:
            meanwhile()
        self.session = session()

    def __call__(self, texts: list[str]) -> np.ndarray:
        ids = self.tokenizer(texts)
        out = np.zeros((len(ids), 512), np.float32)
        if not self.model.meta.get("variable_length"):  # an older export: always 77 tokens
            for i in range(0, len(ids), BATCH):
                out[i:i + BATCH] = self.session.run(None, {"ids": ids[i:i + BATCH]})[0]
            return out
        # Each batch is cut after its longest text's end-of-text (exact: causal attention, read at
        # end-of-text), and texts are batched by length so short ones do not pay for long ones.
        lengths = (ids != 0).sum(axis=1)
        order = np.argsort(lengths, kind="stable")
        for i in range(0, len(ids), BATCH):
            rows = order[i:i + BATCH]
            n = max(1, int(lengths[rows].max()))
            out[rows] = self.session.run(None, {"ids": np.ascontiguousarray(ids[rows, :n])})[0]
        return out
