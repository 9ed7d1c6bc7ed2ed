"""Checkpoint -> installed ONNX model, with the parity check in the same place (as rclip does).

``import_checkpoint`` loads the official file strictly, infers the architecture, exports the
image encoder and the tag head to ONNX, saves the label embeddings, then runs the *runtime*
path (onnxruntime + numpy) against the PyTorch model on fixed inputs before the model folder
is committed. A conversion that does not reproduce PyTorch is never installed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ramcli.errors import CheckpointError, RamcliError
from ramcli.models import store
from ramcli.models.convert.checkpoint import build_model, detect_ram_family, infer_config, load_state_dict, remap_keys
from ramcli.models.convert.common import (
    PARITY_TOLERANCE,
    Report,
    copy_text,
    export_graph,
    provenance,
    read_inputs,
    source_checkpoint,
)
from ramcli.models.convert.ram import FewTagHead, ImageEncoder, RamModel, TagHead
from ramcli.models.families import RAM, RAM_PLUS, ConvertInputs, Family
from ramcli.runtime.engine import Engine, EngineOptions
from ramcli.runtime.images import parity_images
from ramcli.runtime.tagging import Tagger
from ramcli.runtime.vocabulary import Vocabulary


def export_onnx(model: RamModel, out: Path) -> None:
    cfg = model.cfg
    size = cfg.swin.image_size
    image = torch.zeros(1, cfg.swin.in_chans, size, size)
    export_graph(ImageEncoder(model), (image,), out / store.ENCODER, ["image"], "image_embeds",
            {"image": {0: "batch"}, "image_embeds": {0: "batch"}})
    embeds = torch.zeros(2, cfg.swin.num_tokens, cfg.embed_dim)
    tags = torch.zeros(2, 3, cfg.embed_dim)
    axes = {"image_embeds": {0: "batch"}, "tag_embeds": {0: "batch", 1: "tags"}, "logits": {0: "batch", 1: "tags"}}
    export_graph(TagHead(model), (embeds, tags), out / store.HEAD, ["image_embeds", "tag_embeds"], "logits", axes,
                 simplify=True)
    export_graph(FewTagHead(model), (embeds.half(), tags), out / store.HEAD_FEW, ["image_embeds", "tag_embeds"],
                 "logits", axes, simplify=True)


def parity_check(model: RamModel, installed: store.InstalledModel, images: np.ndarray) -> dict[str, float]:
    """Max |PyTorch - runtime| over image embeddings, logits and scores, on ``images``."""
    with torch.no_grad():
        x = torch.from_numpy(images)
        ref_embeds = model.encode_image(x).numpy()
        ref_logits = model(x).numpy()
    engine = Engine(installed, EngineOptions(device="cpu"))
    tagger = Tagger(engine, Vocabulary.builtin(installed))
    embeds, logits = tagger.infer(images)
    sig = lambda v: 1 / (1 + np.exp(-v.astype(np.float64)))  # noqa: E731
    report = {
        "image_embeds_max_abs": float(np.abs(embeds - ref_embeds).max()),
        "logits_max_abs": float(np.abs(logits - ref_logits).max()),
        "scores_max_abs": float(np.abs(sig(logits) - sig(ref_logits)).max()),
        "images": int(images.shape[0]),
    }
    if engine.few_head is not None:  # the few-tags head (float16 tokens in) against PyTorch on the same inputs
        tokens = embeds.astype(np.float16)
        labels = tagger.vocab.tag_embeds(embeds)[:, : min(5, logits.shape[1])]
        got = engine.few_head.run(None, {"image_embeds": tokens, "tag_embeds": labels})[0]
        with torch.no_grad():
            want = model.tag_logits(torch.from_numpy(tokens).float(), torch.from_numpy(labels)).numpy()
        report["few_tags_logits_max_abs"] = float(np.abs(got - want).max())
    return report


def _worst_logits(parity: dict[str, float]) -> float:
    """The largest logit difference of a parity report: the tag head's, or the few-tags head's."""
    return max(parity["logits_max_abs"], parity.get("few_tags_logits_max_abs", 0.0))


def import_checkpoint(
    checkpoint: Path,
    name: str,
    *,
    tag_list: Path,
    tag_list_zh: Path | None = None,
    thresholds: Path | None = None,
    extra_files: dict[str, Path] | None = None,
    image_size: int | None = None,
    default_threshold: float = 0.68,
    source: dict[str, Any] | None = None,
    report: Report = lambda _msg: None,
    state: Mapping[str, torch.Tensor] | None = None,
) -> store.InstalledModel:
    """Convert ``checkpoint`` (``state``: its already-loaded tensors) and install it as ``name``."""
    names, state = read_inputs(checkpoint, tag_list, state, report)
    state = remap_keys(state)
    cfg = infer_config(state, len(names), image_size)
    model = build_model(state, cfg, source=checkpoint)
    if tag_list_zh is not None and len(store.read_lines(tag_list_zh)) != len(names):
        raise CheckpointError(f"does not have {len(names)} lines like the tag list", path=tag_list_zh)
    if thresholds is not None:
        store.read_thresholds(thresholds, len(names))

    with store.staging(name) as staging:
        report("exporting to ONNX")
        t0 = time.perf_counter()
        export_onnx(model, staging)
        np.save(staging / store.LABELS, state["label_embed"].float().numpy())
        copy_text(tag_list, staging / store.TAG_LIST)
        copy_text(tag_list_zh, staging / store.TAG_LIST_ZH)
        copy_text(thresholds, staging / store.THRESHOLDS)
        for filename, path in (extra_files or {}).items():
            copy_text(path, staging / filename)
        meta = {
            "name": name,
            "family": cfg.family,
            "num_tags": cfg.num_tags,
            "descriptions_per_tag": cfg.descriptions_per_tag,
            "reweight_scale": float(state["reweight_scale"]) if "reweight_scale" in state else None,
            "default_threshold": default_threshold,
            "architecture": {"swin": {k: v for k, v in asdict(cfg.swin).items() if k != "extra"},
                             "tag_head": asdict(cfg.head), "embed_dim": cfg.embed_dim,
                             "num_tokens": cfg.swin.num_tokens},
            **provenance(checkpoint, cfg.swin.image_size, t0, source),
        }
        (staging / store.META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        report("checking ONNX against PyTorch")
        partial = store.InstalledModel(name, staging)
        parity = parity_check(model, partial, parity_images(partial.preprocess))
        worst = _worst_logits(parity)
        if worst > PARITY_TOLERANCE:
            raise RamcliError(f"ONNX export does not reproduce PyTorch (max logit difference {worst:.2e})",
                              path=checkpoint, hint="please report this with `ramcli doctor --json`")
        meta["parity"] = parity
        meta["file_bytes"] = store.file_bytes(staging)  # checked whenever the model is opened
        (staging / store.META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return store.InstalledModel(name, store.commit(staging, name))


def verify(name: str, images: np.ndarray | None = None) -> dict[str, Any]:
    """Re-run the parity check of an installed RAM or RAM++ model against its source checkpoint.

    ``ramcli models verify`` calls ``converters.verify``, which picks the family's converter. The
    result always has ``image_embeds_max_abs``, ``logits_max_abs``, ``scores_max_abs``, ``images``
    and ``ok``.
    """
    installed = store.get(name)
    src = source_checkpoint(installed)
    model = CONVERTER.build_model(load_state_dict(src), num_tags=installed.num_tags,
                                  image_size=installed.preprocess.image_size, source=src)
    imgs = images if images is not None else parity_images(installed.preprocess)
    result = parity_check(model, installed, imgs)
    return {"model": name, "checkpoint": str(src), **result, "ok": _worst_logits(result) <= PARITY_TOLERANCE}


class RamConverter:
    """The converter protocol (``families.Converter``) for RAM and RAM++."""

    families: tuple[Family, ...] = (RAM_PLUS, RAM)

    def detect(self, state: Mapping[str, Any]) -> Family | None:
        return detect_ram_family(state)

    def build_model(self, state: Mapping[str, torch.Tensor], *, num_tags: int | None = None,
                    image_size: int | None = None, source: Path | None = None) -> RamModel:
        """``num_tags`` is needed: RAM++'s label rows are tags x descriptions, and only the tag list says which."""
        if num_tags is None:
            raise RamcliError("a RAM or RAM++ model needs its tag count", hint="pass the tag list")
        state = remap_keys(state)
        return build_model(state, infer_config(state, num_tags, image_size), source=source)

    def export_onnx(self, model: RamModel, out: Path) -> None:
        export_onnx(model, out)

    def import_checkpoint(self, checkpoint: Path, name: str, inputs: ConvertInputs, *,
                          state: Mapping[str, torch.Tensor] | None = None,
                          report: Report = lambda _msg: None) -> store.InstalledModel:
        if inputs.tag_list is None:
            raise RamcliError("a RAM or RAM++ checkpoint needs its tag list", path=checkpoint,
                              hint="pass --tag-list with the model's tag file")
        return import_checkpoint(checkpoint, name, tag_list=inputs.tag_list, tag_list_zh=inputs.tag_list_zh,
                                 thresholds=inputs.thresholds, extra_files=dict(inputs.extra_files),
                                 image_size=inputs.image_size, default_threshold=inputs.default_threshold,
                                 source=dict(inputs.source) if inputs.source is not None else None,
                                 report=report, state=state)

    def verify(self, name: str, images: np.ndarray | None = None) -> dict[str, Any]:
        return verify(name, images)

    def random_checkpoint(self, family: Family, path: Path, *, num_tags: int = 40, seed: int = 0) -> Path:
        from ramcli.models.convert.random_init import config, random_model, save_checkpoint

        return save_checkpoint(random_model(config(family.name, num_tags=num_tags), seed=seed), path)


CONVERTER = RamConverter()
