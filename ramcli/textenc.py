"""The CLIP ViT-B/16 text encoder at run time: torch-free tokenizer + onnxruntime session."""

from __future__ import annotations

import os

import numpy as np

from . import store
from .clip_tokenizer import ClipTokenizer
from .engine import EngineOptions, _session
from .errors import ModelNotFound

CLIP_MODEL = "clip_vit_b16_text"
ENCODER = "text_encoder.onnx"
BPE = "bpe_simple_vocab_16e6.txt.gz"
BATCH = 64


class TextEncoder:
    """Texts -> (N, 512) L2-normalised CLIP text embeddings."""

    def __init__(self, model: store.InstalledModel, opts: EngineOptions | None = None) -> None:
        if model.family != "clip_text":
            raise ModelNotFound(f"model {model.name!r} is not a CLIP text encoder",
                                hint=f"run `ramcli models pull {CLIP_MODEL}`")
        self.model = model
        self.session = _session(os.fspath(model.path / ENCODER), opts or EngineOptions())
        self.tokenizer = ClipTokenizer(model.path / BPE, int(model.meta.get("context_length", 77)))

    def __call__(self, texts: list[str]) -> np.ndarray:
        ids = self.tokenizer(texts)
        if self.model.meta.get("variable_length"):  # exact: causal attention, read at end-of-text
            ids = ids[:, : max(1, int((ids != 0).sum(axis=1).max(initial=1)))]
        parts = [self.session.run(None, {"ids": ids[i:i + BATCH]})[0] for i in range(0, len(ids), BATCH)]
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 512), np.float32)
