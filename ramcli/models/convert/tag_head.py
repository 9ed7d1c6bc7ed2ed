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

    def forward(self, q: torch.Tensor, kv: torch.Tensor, absorbed: bool = False) -> torch.Tensor:
        if absorbed:
            return self.absorbed(q, kv)
        b, t, c = q.shape
        qh, kh, vh = self._split(self.query(q)), self._split(self.key(kv)), self._split(self.value(kv))
        scores = (qh @ kh.transpose(-1, -2)) / math.sqrt(c // self.heads)
        out = scores.softmax(dim=-1) @ vh
        return out.transpose(1, 2).reshape(b, t, c)

    def absorbed(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """The same attention with the key and value projections moved onto the query side.

        ``forward`` projects every image token to keys and values: 2 x 145 x 512 x 768 multiply-adds
        per image and layer (0.46 GFLOP per image for the full head), paid even for a single tag.
        Here each tag's query is pulled back through the key weights instead, ``(q Wk) . x``
        rather than ``q . (x Wk^T)``, and the softmax-weighted tokens go through the value weights
        once, ``(p x) Wv^T + bv`` (the weights sum to 1). The key bias adds the same ``q . bk``
        to every token's score, which the softmax ignores. Same result up to rounding; the cost
        grows with the tags instead, so this pays when few tags are asked per image (re-ranking
        one search query, applying a new custom tag).
        """
        b, t, c = q.shape
        h = self.heads
        d = c // h
        width = kv.shape[-1]
        wk = self.key.weight.view(h, d, width)
        wv = self.value.weight.view(h, d, width)
        # Per head, one product over all images' queries, (h, b*t, d) @ (h, d, width): as many
        # small per-image products instead are 5x slower in onnxruntime.
        qh = (self.query(q) / math.sqrt(d)).view(b * t, h, d).transpose(0, 1)
        pulled = (qh @ wk).view(h, b, t, width).permute(1, 0, 2, 3).reshape(b, h * t, width)
        scores = pulled @ kv.transpose(-1, -2)  # (b, h*t, n): the only per-image products
        mixed = scores.softmax(dim=-1) @ kv  # (b, h*t, width)
        mixed = mixed.view(b, h, t, width).permute(1, 0, 2, 3).reshape(h, b * t, width)
        out = mixed @ wv.transpose(-1, -2) + self.value.bias.view(h, 1, d)  # (h, b*t, d)
        return out.transpose(0, 1).reshape(b, t, c)


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

    def forward(self, q: torch.Tensor, kv: torch.Tensor, absorbed: bool = False) -> torch.Tensor:
        return self.output(self.self(q, kv, absorbed), q)


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

    def forward(self, q: torch.Tensor, kv: torch.Tensor, absorbed: bool = False) -> torch.Tensor:
        a = self.crossattention(q, kv, absorbed)
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

    def forward(self, q: torch.Tensor, kv: torch.Tensor, absorbed: bool = False) -> torch.Tensor:
        for layer in self.encoder.layer:
            q = layer(q, kv, absorbed)
        return q
