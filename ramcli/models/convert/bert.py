"""The two BERTs of Tag2Text (``tag_encoder``, ``text_decoder``), in the official key layout.

Written from docs/ram-plus.md ("Tag2Text"), not copied from the reference's ``med.py``:
embeddings are word + absolute position (no token types) + LayerNorm(1e-12); every layer is
self-attention -> cross-attention -> feed-forward, post-norm, GELU (erf). The cross-attention
and feed-forward parts are exactly the tag head's layers (``tag_head.DecoderLayer``), so a
:class:`BertLayer` is that plus a self-attention block, under the same names.

Masks are additive -10000 (not -inf) as in the reference: padding in the tag encoder's
self-attention, causality in the decoder's. Cross-attention is never masked.

Besides the plain forward (the parity reference), the decoder has a *step* form with a
key/value cache laid out for ONNX export and numpy beam search: the cache is one tensor
``(layers, 2, rows, heads, length, head_dim)`` so reordering beams is one fancy index on axis 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ramcli.models.convert.tag_head import BERT_LN_EPS, DecoderLayer, DenseNorm, TagHeadConfig

MASK_FILL = -10000.0


@dataclass(frozen=True)
class BertConfig:
    """One BERT: sizes read off the tensors, except ``heads`` (invisible in the shapes)."""

    vocab_size: int = 30524  # bert-base-uncased 30,522 + [DEC] + [ENC]
    hidden: int = 768
    layers: int = 12
    heads: int = 12
    intermediate: int = 3072
    max_positions: int = 512
    cross_width: int = 768  # width of what cross-attention attends to

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def layer_config(self) -> TagHeadConfig:
        return TagHeadConfig(hidden=self.hidden, layers=self.layers, heads=self.heads,
                             intermediate=self.intermediate, kv_width=self.cross_width)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(N, T, C) -> (N, heads, T, C / heads); shape-free so it traces with dynamic axes."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2).flatten(2)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, head_dim: int,
           mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention in the reference's operation order (divide after q.k)."""
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(head_dim)
    if mask is not None:
        scores = scores + mask
    return scores.softmax(dim=-1) @ v


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(N, T) of 1/0 -> additive (N, 1, 1, T)."""
    return (1.0 - attention_mask[:, None, None, :].float()) * MASK_FILL


def positions(ids: torch.Tensor) -> torch.Tensor:
    """0..T-1 for (N, T) ids, written so a traced graph keeps T dynamic."""
    return torch.cumsum(torch.ones_like(ids[0]), 0) - 1


def causal_mask(query_pos: torch.Tensor, key_pos: torch.Tensor) -> torch.Tensor:
    """Additive (Tq, Tk): a query sees keys at its own position and before."""
    return (key_pos[None, :] > query_pos[:, None]).float() * MASK_FILL


class BertEmbeddings(nn.Module):
    """Official files also carry ``position_ids`` = arange(max_positions); positions are
    computed instead (:func:`positions`), so that buffer is dropped on load, written on save."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.position_embeddings = nn.Embedding(cfg.max_positions, cfg.hidden)
        self.LayerNorm = nn.LayerNorm(cfg.hidden, eps=BERT_LN_EPS)

    def forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.word_embeddings(ids) + self.position_embeddings(positions))


class SelfQKV(nn.Module):
    """``attention.self``: the three projections."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.query = nn.Linear(cfg.hidden, cfg.hidden)
        self.key = nn.Linear(cfg.hidden, cfg.hidden)
        self.value = nn.Linear(cfg.hidden, cfg.hidden)


class SelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.heads, self.head_dim = cfg.heads, cfg.head_dim
        self.self = SelfQKV(cfg)
        self.output = DenseNorm(cfg.hidden, cfg.hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, past_k: torch.Tensor | None = None,
                past_v: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns the block output and the full keys/values (past + new) for the cache."""
        s = self.self
        q, k, v = (split_heads(lin(x), self.heads) for lin in (s.query, s.key, s.value))
        if past_k is not None and past_v is not None:
            k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        ctx = merge_heads(attend(q, k, v, self.head_dim, mask))
        return self.output(ctx, x), k, v


class BertLayer(DecoderLayer):
    """``attention`` + the tag head layer's ``crossattention``/``intermediate``/``output``."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__(cfg.layer_config())
        self.heads, self.head_dim = cfg.heads, cfg.head_dim
        self.attention = SelfAttention(cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, context: torch.Tensor) -> torch.Tensor:
        a, _, _ = self.attention(x, mask)
        return super().forward(a, context)

    def cross_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys/values of ``context``: fixed for a whole caption, computed once."""
        s = self.crossattention.self
        return split_heads(s.key(context), self.heads), split_heads(s.value(context), self.heads)

    def step(self, x: torch.Tensor, mask: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor,
             cross_k: torch.Tensor, cross_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, k, v = self.attention(x, mask, past_k, past_v)
        cross = self.crossattention
        q = split_heads(cross.self.query(a), self.heads)
        c = cross.output(merge_heads(attend(q, cross_k, cross_v, self.head_dim)), a)
        return self.output(self.intermediate(c), c), k, v


class BertEncoder(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.layers))


class BertModel(nn.Module):
    """``tag_encoder`` (and ``text_decoder.bert``): no pooler, as the reference builds it."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None, context: torch.Tensor) -> torch.Tensor:
        """(N, T) ids, additive self-attention mask, (N, S, cross_width) context -> (N, T, hidden)."""
        x = self.embeddings(ids, positions(ids))
        for layer in self.encoder.layer:
            x = layer(x, mask, context)
        return x


class PredictionTransform(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden, cfg.hidden)
        self.LayerNorm = nn.LayerNorm(cfg.hidden, eps=BERT_LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


class LMPrediction(nn.Module):
    """``cls.predictions``: the output layer shares the word embeddings and owns ``bias`` (both
    names are in the official files, as in BERT: ``decoder.bias`` *is* ``bias``)."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.transform = PredictionTransform(cfg)
        self.decoder = nn.Linear(cfg.hidden, cfg.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.decoder.bias = self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x))


class LMHead(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.predictions = LMPrediction(cfg)


class BertLMHeadModel(nn.Module):
    """``text_decoder``: causal BERT with cross-attention and a tied LM head."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.bert = BertModel(cfg)
        self.cls = LMHead(cfg)
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def forward(self, ids: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Whole sequences at once, no cache: (N, T) -> logits (N, T, vocab). The reference path."""
        pos = positions(ids)
        return self.cls.predictions(self.bert(ids, causal_mask(pos, pos), context))

    def cross_kv(self, context: torch.Tensor) -> torch.Tensor:
        """(N, S, cross_width) -> (layers, 2, N, heads, S, head_dim)."""
        return torch.stack([torch.stack(layer.cross_kv(context)) for layer in self.bert.encoder.layer])

    def step(self, ids: torch.Tensor, past: torch.Tensor, cross: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """New tokens (N, t) given the cache ``past`` (layers, 2, N, heads, p, head_dim) ->
        logits of the last new position (N, vocab) and the cache extended to p + t.

        Positions come from the cache length (no separate offset input that could disagree with
        it); shapes are derived with ones_like/cumsum so the traced graph stays dynamic in N, t, p.
        """
        past_ones = torch.ones_like(past[0, 0, 0, 0, :, 0], dtype=torch.long)  # (p,)
        new_ones = torch.ones_like(ids[0])  # (t,)
        query_pos = torch.cumsum(new_ones, 0) - 1 + past_ones.sum()
        key_pos = torch.cumsum(torch.cat([past_ones, new_ones]), 0) - 1
        mask = causal_mask(query_pos, key_pos)
        x = self.bert.embeddings(ids, query_pos)
        presents = []
        for i, layer in enumerate(self.bert.encoder.layer):
            x, k, v = layer.step(x, mask, past[i, 0], past[i, 1], cross[i, 0], cross[i, 1])
            presents.append(torch.stack([k, v]))
        return self.cls.predictions(x[:, -1]), torch.stack(presents)
