"""Official RAM / RAM++ checkpoints: safe loading, key remapping, architecture from shapes.

The architecture is read off the tensors (Swin widths, depths, heads, window, image size from
the shift-mask buffers when present; decoder width; tag count via the tag list), so the tiny
golden checkpoints and full Swin-L/B files go through the same code. Only the decoder's head
count is invisible in the shapes and comes from a default (4, the official q2l config).

Unlike the reference loader (``strict=False``, silently leaving missing tensors at their
initial values) every tensor the model needs must be present with the right shape.
"""

from __future__ import annotations

import math
import re
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from ramcli.errors import CheckpointError, first_line
from ramcli.models.convert.ram import RamConfig, RamModel
from ramcli.models.convert.swin import SwinConfig
from ramcli.models.convert.tag_head import TagHeadConfig
from ramcli.models.families import RAM, RAM_PLUS, Family

DEFAULT_IMAGE_SIZE = 384
DEFAULT_DECODER_HEADS = 4

# Buffers the official files carry that we recompute; keys we never use for tagging.
_RECOMPUTED = re.compile(r"\.(relative_position_index|attn_mask)$")
_UNUSED_PREFIXES = ("tag_encoder.", "text_decoder.")
_RENAMES = (("vision_multi.", "tagging_head."),)


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint safely (no pickle code runs) and return its raw state_dict."""
    if not path.is_file():
        raise CheckpointError("no such file", path=path, hint="check the path")
    if path.stat().st_size == 0:
        raise CheckpointError("the file is empty", path=path, hint="download it again")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # protocol notices from the weights_only unpickler
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(
            f"not a readable PyTorch checkpoint ({first_line(exc)})", path=path,
            hint="the file may be truncated or not a model; download it again",
        ) from None
    except Exception as exc:  # weights_only refusal of foreign pickles, etc.
        raise CheckpointError(
            f"refused to load ({type(exc).__name__}: {first_line(exc)})",
            path=path, hint="only plain tensor checkpoints are loaded; use the official file",
        ) from None
    if isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError("does not hold a state_dict of tensors", path=path,
                              hint="expected {'model': state_dict} as the official files are")
    return dict(obj)


def remap_keys(state: Mapping[str, torch.Tensor],
               drop: Callable[[str], bool] = lambda key: key.startswith(_UNUSED_PREFIXES)) -> dict[str, torch.Tensor]:
    """Official names -> ours: renames, then drop recomputed buffers and what ``drop`` says
    (by default the captioning parts, which RAM tagging never uses)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for old, new in _RENAMES:
            if key.startswith(old):
                key = new + key[len(old):]
        if _RECOMPUTED.search(key) or drop(key):
            continue
        out[key] = value
    return out


def detect_ram_family(state: Mapping[str, torch.Tensor]) -> Family | None:
    """RAM++ (label descriptions and the scale that weights them), RAM (label embeddings), or None."""
    if "label_embed" not in state:
        return None
    return RAM_PLUS if "reweight_scale" in state else RAM


def infer_swin(state: Mapping[str, torch.Tensor], image_size: int | None = None) -> SwinConfig:
    prefix = "visual_encoder."
    try:
        proj = state[prefix + "patch_embed.proj.weight"]
    except KeyError:
        raise CheckpointError("has no Swin image encoder (visual_encoder.patch_embed missing)") from None
    depths: list[int] = []
    heads: list[int] = []
    window = 0
    stage = 0
    while any(k.startswith(f"{prefix}layers.{stage}.") for k in state):
        blocks = {int(m.group(1)) for k in state
                  if (m := re.match(rf"{re.escape(prefix)}layers\.{stage}\.blocks\.(\d+)\.", k))}
        depths.append(len(blocks))
        table = state[f"{prefix}layers.{stage}.blocks.0.attn.relative_position_bias_table"]
        heads.append(int(table.shape[1]))
        if stage == 0:
            window = (math.isqrt(int(table.shape[0])) + 1) // 2
        stage += 1
    if not depths:
        raise CheckpointError("has no Swin stages (visual_encoder.layers.* missing)")
    patch = int(proj.shape[2])
    size = image_size
    mask = state.get(f"{prefix}layers.0.blocks.1.attn_mask")
    if mask is not None:  # (windows in stage 0, N, N): stage-0 side = sqrt(nW) * window
        size = math.isqrt(int(mask.shape[0])) * window * patch
    return SwinConfig(image_size=size or DEFAULT_IMAGE_SIZE, patch_size=patch, in_chans=int(proj.shape[1]),
                      embed_dim=int(proj.shape[0]), depths=tuple(depths), num_heads=tuple(heads),
                      window_size=window)


def infer_head(state: Mapping[str, torch.Tensor], heads: int = DEFAULT_DECODER_HEADS) -> TagHeadConfig:
    layers = {int(m.group(1)) for k in state if (m := re.match(r"tagging_head\.encoder\.layer\.(\d+)\.", k))}
    if not layers:
        raise CheckpointError("has no tag decoder (tagging_head.encoder.layer.* missing)")
    key = state["tagging_head.encoder.layer.0.crossattention.self.key.weight"]
    inter = state["tagging_head.encoder.layer.0.intermediate.dense.weight"]
    return TagHeadConfig(hidden=int(key.shape[0]), layers=len(layers), heads=heads,
                         intermediate=int(inter.shape[0]), kv_width=int(key.shape[1]))


def infer_config(state: Mapping[str, torch.Tensor], num_tags: int, image_size: int | None = None) -> RamConfig:
    """Everything about the architecture, from the (remapped) tensors and the tag count."""
    family = detect_ram_family(state)
    if family is None:
        raise CheckpointError("not a RAM or RAM++ checkpoint (no label_embed tensor)",
                              hint="`ramcli models import` recognises Tag2Text and CLIP text checkpoints too")
    rows, width = (int(n) for n in state["label_embed"].shape)
    if num_tags <= 0 or rows % num_tags:
        raise CheckpointError(
            f"label_embed has {rows} rows, which is not a multiple of the {num_tags} tags in the tag list",
            hint="pass the tag list that belongs to this checkpoint with --tag-list")
    per_tag = rows // num_tags
    if not family.weights_descriptions and per_tag != 1:
        raise CheckpointError(f"{family.title} checkpoint has {rows} label rows for {num_tags} tags",
                              hint="pass the tag list that belongs to this checkpoint with --tag-list")
    return RamConfig(family=family.name, swin=infer_swin(state, image_size), head=infer_head(state),
                     num_tags=num_tags, descriptions_per_tag=per_tag, embed_dim=width)


def build_model(state: Mapping[str, torch.Tensor], cfg: RamConfig, *, source: Path | None = None) -> RamModel:
    """Instantiate from ``cfg`` and load strictly; shape or key trouble becomes one clear line."""
    model = RamModel(cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if keys:
            shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
            problems.append(f"{len(keys)} {label}: {shown}")
    if problems:
        raise CheckpointError("does not match the inferred architecture: " + "; ".join(problems),
                              path=source, hint="the file is incomplete or from another model")
    model.load_state_dict({k: state[k].float() for k in expected}, strict=True)
    return model.eval()
