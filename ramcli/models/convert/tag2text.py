"""Tag2Text in the official key layout: model, architecture from shapes, strict loading, random init.

Tag2Text (docs/ram-plus.md, "Tag2Text") = Swin-B image encoder with NO image_proj, the RAM-style
cross-attention tag head queried by a learned ``label_embed`` (nn.Embedding) with a per-class
output layer (``fc.W``, ``fc.b``), a 12-layer BERT ``tag_encoder`` that reads the chosen tags
against the image tokens, and a 12-layer BERT ``text_decoder`` that writes the caption against
the encoded tags. ONNX export and installation live in ``tag2text_export.py``.

Official files save tied tensors under both names (``tagging_head`` layers = the first
``tag_encoder`` layers' cross-attention/FFN; the LM output layer = the word embeddings); both
are loaded, strictly, and the tying is checked rather than assumed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ramcli.errors import CheckpointError
from ramcli.models.convert import checkpoint
from ramcli.models.convert.bert import BertConfig, BertLMHeadModel, BertModel, padding_mask
from ramcli.models.convert.checkpoint import infer_head, infer_swin
from ramcli.models.convert.random_init import SWIN_B, TINY_SWIN, init_param
from ramcli.models.convert.random_init import official_state_dict as swin_buffers_state
from ramcli.models.convert.swin import SwinConfig, SwinTransformer
from ramcli.models.convert.tag_head import TagDecoder, TagHeadConfig

# Attention heads are invisible in tensor shapes. The official med_config (both BERTs) has 12
# heads at width 768; the golden tiny fixtures and ramcli's tiny test models use 4, like q2l.
DEFAULT_TEXT_HEADS = {768: 12}
FALLBACK_TEXT_HEADS = 4
TAG_HEAD_HEADS = 4
_POSITION_IDS = re.compile(r"(^|\.)embeddings\.position_ids$")


@dataclass(frozen=True)
class Tag2TextConfig:
    swin: SwinConfig
    head: TagHeadConfig  # kv_width = swin.num_features (no image_proj)
    num_tags: int
    encoder: BertConfig  # tag_encoder: cross-attends to the image tokens
    decoder: BertConfig  # text_decoder: cross-attends to the tag encoder's output

    @property
    def vision_width(self) -> int:
        return self.swin.num_features


class GroupWiseLinear(nn.Module):
    """One output unit per class: logit[c] = <q[c], W[c]> + b[c]."""

    def __init__(self, classes: int, hidden: int) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.zeros(1, classes, hidden))
        self.b = nn.Parameter(torch.zeros(1, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.W * x).sum(-1) + self.b


class Tag2TextModel(nn.Module):
    def __init__(self, cfg: Tag2TextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.visual_encoder = SwinTransformer(cfg.swin)
        self.label_embed = nn.Embedding(cfg.num_tags, cfg.head.hidden)
        self.tagging_head = TagDecoder(cfg.head)
        self.fc = GroupWiseLinear(cfg.num_tags, cfg.head.hidden)
        self.tag_encoder = BertModel(cfg.encoder)
        self.text_decoder = BertLMHeadModel(cfg.decoder)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> Swin tokens (B, 145, vision_width); used by both heads directly."""
        return self.visual_encoder(image)

    def tag_logits(self, image_embeds: torch.Tensor) -> torch.Tensor:
        queries = self.label_embed.weight.unsqueeze(0).expand(image_embeds.shape[0], -1, -1)
        return self.fc(self.tagging_head(queries, image_embeds))

    def encode_tags(self, ids: torch.Tensor, attention_mask: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        """Tag token ids (N, 40) with their padding mask, against the image -> (N, 40, hidden)."""
        return self.tag_encoder(ids, padding_mask(attention_mask), image_embeds)


# ---------------------------------------------------------------- checkpoint -> config -> model

def remap_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official names -> ours (RAM's remap, keeping the BERT parts); BERT's position_ids dropped."""
    return checkpoint.remap_keys(state, drop=lambda key: bool(_POSITION_IDS.search(key)))


def default_text_heads(hidden: int) -> int:
    return DEFAULT_TEXT_HEADS.get(hidden, FALLBACK_TEXT_HEADS)


def infer_bert(state: Mapping[str, torch.Tensor], prefix: str, heads: int | None = None) -> BertConfig:
    """A BERT's sizes from its tensors under ``prefix`` (e.g. ``tag_encoder.``)."""
    words = state.get(prefix + "embeddings.word_embeddings.weight")
    if words is None:
        raise CheckpointError(f"has no {prefix.rstrip('.')} (its word embeddings are missing)",
                              hint="a Tag2Text checkpoint has tag_encoder.* and text_decoder.* tensors")
    layers = {int(m.group(1)) for k in state if (m := re.match(rf"{re.escape(prefix)}encoder\.layer\.(\d+)\.", k))}
    first = f"{prefix}encoder.layer.0."
    try:
        inter = state[first + "intermediate.dense.weight"]
        cross = state[first + "crossattention.self.key.weight"]
    except KeyError as exc:
        raise CheckpointError(f"{prefix.rstrip('.')} is incomplete ({exc.args[0]} missing)") from None
    hidden = int(words.shape[1])
    n_heads = heads or default_text_heads(hidden)
    if hidden % n_heads:
        raise CheckpointError(f"{prefix.rstrip('.')} width {hidden} is not divisible by {n_heads} heads")
    return BertConfig(vocab_size=int(words.shape[0]), hidden=hidden, layers=len(layers), heads=n_heads,
                      intermediate=int(inter.shape[0]),
                      max_positions=int(state[prefix + "embeddings.position_embeddings.weight"].shape[0]),
                      cross_width=int(cross.shape[1]))


def is_tag2text_state(state: Mapping[str, torch.Tensor]) -> bool:
    """Tag2Text is the only family with an nn.Embedding label_embed and a group-wise fc."""
    return "label_embed.weight" in state and "fc.W" in state


def infer_config(state: Mapping[str, torch.Tensor], *, image_size: int | None = None,
                 text_heads: int | None = None) -> Tag2TextConfig:
    """Everything about the architecture from the (remapped) tensors; ``text_heads`` overrides
    the BERTs' head count (see DEFAULT_TEXT_HEADS)."""
    if not is_tag2text_state(state):
        raise CheckpointError("not a Tag2Text checkpoint (no label_embed.weight / fc.W tensors)")
    swin = infer_swin(state, image_size)
    head = infer_head(state, heads=TAG_HEAD_HEADS)
    if head.kv_width != swin.num_features:
        raise CheckpointError(f"tag head attends to width {head.kv_width}, but the image encoder gives "
                              f"{swin.num_features}", hint="the file is not a Tag2Text checkpoint")
    return Tag2TextConfig(swin=swin, head=head, num_tags=int(state["label_embed.weight"].shape[0]),
                          encoder=infer_bert(state, "tag_encoder.", text_heads),
                          decoder=infer_bert(state, "text_decoder.bert.", text_heads))


def _shown(keys: list[str]) -> str:
    return ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


def build_model(state: Mapping[str, torch.Tensor], cfg: Tag2TextConfig, *,
                source: Path | None = None) -> Tag2TextModel:
    """Instantiate and load strictly: every missing, unexpected or misshapen tensor is named."""
    model = Tag2TextModel(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    problems = [f"{len(keys)} {label}: {_shown(keys)}"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
    if problems:
        raise CheckpointError("does not match the inferred Tag2Text architecture: " + "; ".join(problems),
                              path=source, hint="the file is incomplete or from another model")
    tied = ("text_decoder.cls.predictions.decoder.weight", "text_decoder.bert.embeddings.word_embeddings.weight")
    if not torch.equal(state[tied[0]], state[tied[1]]):  # one tensor in our model: they must agree
        raise CheckpointError(f"{tied[0]} differs from {tied[1]} (they are one tied tensor in Tag2Text)",
                              path=source)
    model.load_state_dict({k: state[k].float() for k in expected}, strict=True)
    return model.eval()


# ---------------------------------------------------------------- random official-layout models

TINY_HEAD = TagHeadConfig(hidden=64, layers=2, heads=4, intermediate=128, kv_width=TINY_SWIN.num_features)
FULL_HEAD = TagHeadConfig(hidden=768, layers=2, heads=4, intermediate=3072, kv_width=SWIN_B.num_features)


def tiny_config(num_tags: int = 40, vocab_size: int = 30524) -> Tag2TextConfig:
    """The golden fixtures' tiny architecture (tag2text_tiny/config.json)."""
    bert = BertConfig(vocab_size=vocab_size, hidden=64, layers=2, heads=4, intermediate=128)
    return Tag2TextConfig(swin=TINY_SWIN, head=TINY_HEAD, num_tags=num_tags,
                          encoder=BertConfig(**{**bert.__dict__, "cross_width": TINY_SWIN.num_features}),
                          decoder=BertConfig(**{**bert.__dict__, "cross_width": 64}))


def full_config(num_tags: int = 3429) -> Tag2TextConfig:
    """The released tag2text_swin_14m architecture: Swin-B/384 + BERT-base x 2."""
    return Tag2TextConfig(swin=SWIN_B, head=FULL_HEAD, num_tags=num_tags,
                          encoder=BertConfig(cross_width=SWIN_B.num_features), decoder=BertConfig())


def _tie_like_official(model: Tag2TextModel) -> None:
    """Copy the tag encoder's first layers into the tag head, as the official files hold them."""
    ours = model.tagging_head.state_dict()
    theirs = model.tag_encoder.encoder.state_dict()
    for key, value in ours.items():
        if key.startswith("encoder."):
            value.copy_(theirs[key.removeprefix("encoder.")])


@torch.no_grad()
def random_model(cfg: Tag2TextConfig, seed: int = 0, fc_bias: float = -0.48) -> Tag2TextModel:
    """Seeded weights by the golden recipe (golden/README.md) so that a few tags fire."""
    gen = torch.Generator().manual_seed(seed)
    model = Tag2TextModel(cfg)
    for name, p in model.named_parameters():
        if name == "fc.b":
            p.fill_(fc_bias)
        elif name.endswith(("label_embed.weight", "word_embeddings.weight", "position_embeddings.weight")):
            p.normal_(0, 1.0, generator=gen)
        else:
            init_param(name, p, gen)
    _tie_like_official(model)
    return model.eval()


def official_state_dict(model: Tag2TextModel) -> dict[str, torch.Tensor]:
    """Our state_dict plus the deterministic buffers the official files carry, under their names."""
    state = swin_buffers_state(model)  # type: ignore[arg-type]  # uses only .visual_encoder
    for prefix, bert in (("tag_encoder.", model.tag_encoder), ("text_decoder.bert.", model.text_decoder.bert)):
        state[prefix + "embeddings.position_ids"] = torch.arange(bert.cfg.max_positions)[None].clone()
    return state


def save_checkpoint(model: Tag2TextModel, path: Path) -> Path:
    torch.save({"model": official_state_dict(model)}, path)
    return path
