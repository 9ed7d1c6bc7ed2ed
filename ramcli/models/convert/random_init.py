"""Random-weight checkpoints in the official file format, any size, for tests and benchmarks.

Weights cannot be downloaded everywhere (CI, air-gapped machines), so the whole path
(import -> ONNX -> engine) is exercised on checkpoints built here: same classes, same key
layout, the official deterministic buffers included, saved as ``{"model": state_dict}``.
The init follows the golden fixtures' recipe (golden/README.md) so that a few tags fire.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ramcli.models.convert.ram import RamConfig, RamModel
from ramcli.models.convert.swin import SwinConfig, relative_position_index, shift_attention_mask
from ramcli.models.convert.tag_head import TagHeadConfig
from ramcli.models.families import family_of

SWIN_L = SwinConfig(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48))
SWIN_B = SwinConfig(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
TINY_SWIN = SwinConfig(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))
FULL_HEAD = TagHeadConfig()
TINY_HEAD = TagHeadConfig(hidden=64, layers=2, heads=4, intermediate=128)


def config(family: str, swin: SwinConfig = TINY_SWIN, head: TagHeadConfig = TINY_HEAD,
           num_tags: int = 40, descriptions: int = 51) -> RamConfig:
    return RamConfig(family=family, swin=swin, head=head, num_tags=num_tags,
                     descriptions_per_tag=descriptions if family_of(family).weights_descriptions else 1)


@torch.no_grad()
def random_model(cfg: RamConfig, seed: int = 0, fc_bias: float = -1.45) -> RamModel:
    gen = torch.Generator().manual_seed(seed)
    model = RamModel(cfg)
    for name, p in model.named_parameters():
        if name == "label_embed":
            d = cfg.descriptions_per_tag
            mu = torch.randn(cfg.num_tags, 1, p.shape[1], generator=gen)
            rows = mu + 0.6 * torch.randn(cfg.num_tags, d, p.shape[1], generator=gen)
            p.copy_(torch.nn.functional.normalize(rows.reshape(-1, p.shape[1]), dim=-1))
        elif name == "reweight_scale":
            p.fill_(math.log(30.0))
        elif name == "fc.bias":
            p.fill_(fc_bias)
        elif name == "wordvec_proj.weight":
            p.normal_(0, 3.0, generator=gen)
        else:
            init_param(name, p, gen)
    return model.eval()


def init_param(name: str, p: torch.Tensor, gen: torch.Generator) -> None:
    """The golden recipe's rule for every tensor without a special one (RAM, RAM++ and Tag2Text)."""
    if "relative_position_bias_table" in name:
        p.normal_(0, 0.5, generator=gen)
    elif "norm" in name.lower() and name.endswith("weight"):
        p.normal_(1.0, 0.1, generator=gen)
    elif p.ndim == 1:
        p.normal_(0, 0.02, generator=gen)
    else:
        p.normal_(0, 1 / math.sqrt(p[0].numel()), generator=gen)


def official_state_dict(model: RamModel) -> dict[str, torch.Tensor]:
    """Our state_dict plus the Swin buffers the official files carry (under their names)."""
    state = dict(model.state_dict())
    for i, stage in enumerate(model.visual_encoder.layers):
        for j, block in enumerate(stage.blocks):
            prefix = f"visual_encoder.layers.{i}.blocks.{j}."
            state[prefix + "attn.relative_position_index"] = relative_position_index(block.window)
            if block.shift:
                state[prefix + "attn_mask"] = shift_attention_mask(block.resolution, block.window, block.shift)
    return state


def save_checkpoint(model: RamModel, path: Path) -> Path:
    torch.save({"model": official_state_dict(model)}, path)
    return path
