"""The RAM/RAM++ tag decoder: a BERT encoder stripped to cross-attention + feed-forward.

Key names follow the official ``tagging_head.encoder.layer.{i}.*`` layout. Queries are the
per-tag label embeddings, keys/values the image tokens; there is no self-attention and no
embedding layer, and the attention mask is all ones, so it is left out entirely.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

BERT_LN_EPS = 1e-12


@dataclass(frozen=True)
class TagHeadConfig:
    hidden: int = 768
    layers: int = 2
    heads: int = 4  # not visible in tensor shapes: the one architectural fact from defaults
    intermediate: int = 3072
    kv_width: int = 512


class CrossSelf(nn.Module):
    def __init__(self, cfg: TagHeadConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.query = nn.Linear(cfg.hidden, cfg.hidden)
        self.key = nn.Linear(cfg.kv_width, cfg.hidden)
        self.value = nn.Linear(cfg.kv_width, cfg.hidden)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        b, t, c = q.shape
        qh, kh, vh = self._split(self.query(q)), self._split(self.key(kv)), self._split(self.value(kv))
        scores = (qh @ kh.transpose(-1, -2)) / math.sqrt(c // self.heads)
        out = scores.softmax(dim=-1) @ vh
        return out.transpose(1, 2).reshape(b, t, c)


class DenseNorm(nn.Module):
    """BERT's ``*Output``: dense, then LayerNorm over the residual sum."""

    def __init__(self, width_in: int, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width_in, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=BERT_LN_EPS)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class CrossAttention(nn.Module):
    def __init__(self, cfg: TagHeadConfig) -> None:
        super().__init__()
        self.self = CrossSelf(cfg)
        self.output = DenseNorm(cfg.hidden, cfg.hidden)

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(q, kv), q)


class Intermediate(nn.Module):
    def __init__(self, cfg: TagHeadConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden, cfg.intermediate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TagHeadConfig) -> None:
        super().__init__()
        self.crossattention = CrossAttention(cfg)
        self.intermediate = Intermediate(cfg)
        self.output = DenseNorm(cfg.intermediate, cfg.hidden)

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        a = self.crossattention(q, kv)
        return self.output(self.intermediate(a), a)


class Encoder(nn.Module):
    def __init__(self, cfg: TagHeadConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.layers))


class TagDecoder(nn.Module):
    """Tag queries (B, T, hidden) x image tokens (B, N, kv_width) -> (B, T, hidden)."""

    def __init__(self, cfg: TagHeadConfig) -> None:
        super().__init__()
        self.encoder = Encoder(cfg)

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        for layer in self.encoder.layer:
            q = layer(q, kv)
        return q
