"""RAM and RAM++ in the official key layout, split the way ramcli runs them.

The reference runs one monolithic ``generate_tag``. ramcli cuts it in two ONNX graphs so that
the expensive image encoder runs once per photo and everything else works from stored tokens:

* :class:`ImageEncoder`: image (B, 3, S, S) -> image embeddings (B, 145, 512)
* :class:`TagHead`: image embeddings + per-image tag embeddings (B, T, 512) -> logits (B, T)

The per-image RAM++ reweighting of label descriptions (a softmax over each tag's
descriptions) happens between the two, in numpy at run time, so tags with any number of
descriptions (custom ones included) share one forward pass. :meth:`RamModel.forward` keeps the
reference's all-in-one order for parity checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ramcli.models.convert.swin import SwinConfig, SwinTransformer
from ramcli.models.convert.tag_head import TagDecoder, TagHeadConfig
from ramcli.models.families import family_of


@dataclass(frozen=True)
class RamConfig:
    family: str  # its name: "ram_plus" or "ram"
    swin: SwinConfig
    head: TagHeadConfig
    num_tags: int
    descriptions_per_tag: int  # 51 for RAM++, 1 for RAM
    embed_dim: int = 512  # CLIP ViT-B/16 space

    @property
    def weights_descriptions(self) -> bool:
        """RAM++: per-image weights over each tag's descriptions (``reweight_scale``)."""
        return family_of(self.family).weights_descriptions


class RamModel(nn.Module):
    """Parameter names are the official ones, so ``load_state_dict`` works on the real files."""

    def __init__(self, cfg: RamConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.visual_encoder = SwinTransformer(cfg.swin)
        self.image_proj = nn.Linear(cfg.swin.num_features, cfg.embed_dim)
        rows = cfg.num_tags * cfg.descriptions_per_tag
        self.label_embed = nn.Parameter(torch.zeros(rows, cfg.embed_dim))
        if cfg.weights_descriptions:
            self.reweight_scale = nn.Parameter(torch.zeros(()))
        self.wordvec_proj = nn.Linear(cfg.embed_dim, cfg.head.hidden)
        self.tagging_head = TagDecoder(cfg.head)
        self.fc = nn.Linear(cfg.head.hidden, 1)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_proj(self.visual_encoder(image))

    def tag_logits(self, image_embeds: torch.Tensor, tag_embeds: torch.Tensor, absorbed: bool = False) -> torch.Tensor:
        queries = F.relu(self.wordvec_proj(tag_embeds))
        return self.fc(self.tagging_head(queries, image_embeds, absorbed)).squeeze(-1)

    def tag_embeds(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """(B, T, 512): RAM++ reweights each tag's descriptions by the image; RAM does not."""
        b = image_embeds.shape[0]
        d = self.cfg.descriptions_per_tag
        labels = self.label_embed.view(self.cfg.num_tags, d, -1)
        if not self.cfg.weights_descriptions:
            return labels[:, 0].expand(b, -1, -1)
        cls = image_embeds[:, 0]
        cls = cls / cls.norm(dim=-1, keepdim=True)
        sims = self.reweight_scale.exp() * cls @ self.label_embed.t()
        weights = sims.view(b, self.cfg.num_tags, d).softmax(dim=2)
        return torch.einsum("btd,tdc->btc", weights, labels)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        embeds = self.encode_image(image)
        return self.tag_logits(embeds, self.tag_embeds(embeds))


class ImageEncoder(nn.Module):
    """Export wrapper: image -> image embeddings."""

    def __init__(self, model: RamModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(image)


class TagHead(nn.Module):
    """Export wrapper: (image embeddings, tag embeddings) -> logits; T is a free axis."""

    def __init__(self, model: RamModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, image_embeds: torch.Tensor, tag_embeds: torch.Tensor) -> torch.Tensor:
        return self.model.tag_logits(image_embeds, tag_embeds)


class FewTagHead(nn.Module):
    """Export wrapper for scoring a few tags on stored image tokens: the decoder's attention in
    its few-tags form (``CrossSelf.absorbed``), and float16 image embeddings in, as the index
    stores them. The graph widens them itself: onnxruntime's cast is 5-10x faster than numpy's
    float16 conversion, which otherwise took longer than the head (100 photos: 72 vs 52 ms)."""

    def __init__(self, model: RamModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, image_embeds: torch.Tensor, tag_embeds: torch.Tensor) -> torch.Tensor:
        return self.model.tag_logits(image_embeds.float(), tag_embeds, absorbed=True)
