"""Tag2Text checkpoint -> five ONNX graphs + tokenizer vocabulary, checked against PyTorch.

Graphs (names in ``ramcli.caption``), all dynamic in the batch/row axis:

* ``image_encoder``: image (B,3,S,S) -> image_embeds (B,145,W)
* ``tag_head``: image_embeds -> logits (B,C)
* ``tag_encoder``: input_ids (B,T), attention_mask (B,T), image_embeds -> tag_embeds (B,T,H)
* ``text_decoder_cross``: tag_embeds -> cross_kv (L,2,B,heads,T,head_dim), once per caption
* ``text_decoder_step``: input_ids (N,t), past (L,2,N,heads,p,head_dim), cross_kv
  -> logits (N,vocab) of the last new position, present (L,2,N,heads,p+t,head_dim)

Each graph keeps its weights next to it in ``<graph>.onnx.data`` (ONNX external data), which
onnxruntime memory-maps: faster loading and less resident memory (numbers in ``export_onnx``).

The step graph takes the prompt with an empty cache (p = 0) and then one token per call; its
cache is a plain array so numpy beam search reorders it by beam index.

As for RAM (``export.import_checkpoint``), the runtime path (onnxruntime + numpy, the same
:class:`ramcli.caption.Tag2Text` users run) is compared with PyTorch before the model folder is
committed: embeddings, tag logits, tag-encoder output, decoder logits along a generated
sequence (cache vs full recompute) and the generated ids of a short beam search.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ramcli.errors import CheckpointError, RamcliError
from ramcli.models import store
from ramcli.models.convert.checkpoint import load_state_dict
from ramcli.models.convert.common import (
    PARITY_TOLERANCE,
    Report,
    copy_text,
    export_graph,
    provenance,
    read_inputs,
    source_checkpoint,
)
from ramcli.models.convert.tag2text import Tag2TextModel, build_model, infer_config, is_tag2text_state, remap_keys
from ramcli.models.families import TAG2TEXT, ConvertInputs, Family
from ramcli.runtime.beam_search import beam_search
from ramcli.runtime.caption import (
    DECODER_CROSS,
    DECODER_STEP,
    DELETE_TAG_INDEX,
    SPECIAL_THRESHOLDS,
    TAG_ENCODER,
    VOCAB,
    CaptionSettings,
    Tag2Text,
)
from ramcli.runtime.engine import EngineOptions
from ramcli.runtime.images import parity_images
from ramcli.runtime.tagging import sigmoid
from ramcli.runtime.wordpiece import ADDED_TOKENS, WordPiece

PARITY_CAPTION_STEPS = 8  # generated tokens compared in the import check (full length is slow on CPU)


class _TagHead(nn.Module):
    def __init__(self, model: Tag2TextModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        return self.model.tag_logits(image_embeds)


class _TagEncoder(nn.Module):
    def __init__(self, model: Tag2TextModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        return self.model.encode_tags(ids, mask, image_embeds)


class _DecoderCross(nn.Module):
    def __init__(self, model: Tag2TextModel) -> None:
        super().__init__()
        self.decoder = model.text_decoder

    def forward(self, tag_embeds: torch.Tensor) -> torch.Tensor:
        return self.decoder.cross_kv(tag_embeds)


class _DecoderStep(nn.Module):
    def __init__(self, model: Tag2TextModel) -> None:
        super().__init__()
        self.decoder = model.text_decoder

    def forward(self, ids: torch.Tensor, past: torch.Tensor, cross: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decoder.step(ids, past, cross)


def export_onnx(model: Tag2TextModel, out: Path, tag_length: int = 40) -> None:
    """The five graphs, each with its weights in ``<graph>.onnx.data``, memory-mapped at load.

    Measured on the full-size model (random weights), 2 cores: the five sessions load in 6.2-7.1 s
    instead of 7.8-9.4 s and hold 0.64 instead of 1.59 GB resident after loading (2.1 vs 2.5 GB after
    tagging and captioning two photos); same outputs, same speed.
    """
    cfg = model.cfg
    size, width = cfg.swin.image_size, cfg.vision_width
    enc, dec = cfg.encoder, cfg.decoder
    export_graph(model.visual_encoder, (torch.zeros(1, cfg.swin.in_chans, size, size),), out / store.ENCODER,
                 ["image"], "image_embeds", {"image": {0: "batch"}, "image_embeds": {0: "batch"}},
                 external_data=True)
    embeds = torch.zeros(2, cfg.swin.num_tokens, width)
    export_graph(_TagHead(model), (embeds,), out / store.HEAD, ["image_embeds"], "logits",
                 {"image_embeds": {0: "batch"}, "logits": {0: "batch"}}, external_data=True)
    ids = torch.ones(2, tag_length, dtype=torch.long)
    mask = torch.ones(2, tag_length, dtype=torch.long)
    export_graph(_TagEncoder(model), (ids, mask, embeds), out / TAG_ENCODER,
                 ["input_ids", "attention_mask", "image_embeds"], "tag_embeds",
                 {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                  "image_embeds": {0: "batch"}, "tag_embeds": {0: "batch", 1: "tokens"}}, external_data=True)
    tag_embeds = torch.zeros(2, tag_length, enc.hidden)
    export_graph(_DecoderCross(model), (tag_embeds,), out / DECODER_CROSS, ["tag_embeds"], "cross_kv",
                 {"tag_embeds": {0: "batch", 1: "tokens"}, "cross_kv": {2: "batch", 4: "tokens"}},
                 external_data=True)
    # Traced with p = 3, t = 2 so that neither length can be mistaken for a constant.
    past = torch.zeros(dec.layers, 2, 3, dec.heads, 3, dec.head_dim)
    cross = torch.zeros(dec.layers, 2, 3, dec.heads, tag_length, dec.head_dim)
    export_graph(_DecoderStep(model), (torch.ones(3, 2, dtype=torch.long), past, cross), out / DECODER_STEP,
                 ["input_ids", "past", "cross_kv"], ["logits", "present"],
                 {"input_ids": {0: "rows", 1: "new"}, "past": {2: "rows", 4: "past"},
                  "cross_kv": {2: "rows", 4: "tokens"}, "logits": {0: "rows"}, "present": {2: "rows", 4: "total"}},
                 external_data=True)


class TorchDecoder:
    """:class:`ramcli.beam_search.Decoder` on the PyTorch model, recomputing whole sequences
    (no cache): the independent reference for the exported cached step graph."""

    def __init__(self, model: Tag2TextModel, tag_embeds: torch.Tensor, beams: int) -> None:
        self.decoder = model.text_decoder
        self.context = tag_embeds.repeat_interleave(beams, dim=0)
        self.ids: np.ndarray | None = None

    def __call__(self, new_ids: np.ndarray) -> np.ndarray:
        self.ids = new_ids if self.ids is None else np.concatenate([self.ids, new_ids], axis=1)
        with torch.no_grad():
            return self.decoder(torch.from_numpy(self.ids), self.context)[:, -1].numpy()

    def reorder(self, rows: np.ndarray) -> None:
        assert self.ids is not None
        self.ids = self.ids[rows]
        self.context = self.context[torch.from_numpy(np.asarray(rows))]


def _step_logits(runtime: Tag2Text, tag_embeds: np.ndarray, sequences: Sequence[Sequence[int]],
                 prompt_len: int) -> np.ndarray:
    """Logits the cached ONNX decoder gives at every position from the prompt's last on."""
    dec = runtime.decoder(tag_embeds)
    dec.reorder(np.arange(len(sequences)) * runtime.settings.num_beams)  # one row per image
    seq = np.asarray(sequences, dtype=np.int64)
    out = [dec(seq[:, :prompt_len])]
    out += [dec(seq[:, i:i + 1]) for i in range(prompt_len, seq.shape[1] - 1)]
    return np.stack(out, axis=1)


def parity_check(model: Tag2TextModel, installed: store.InstalledModel, images: np.ndarray,
                 steps: int = PARITY_CAPTION_STEPS) -> dict[str, Any]:
    """Max |PyTorch - runtime| along the whole captioning path, on ``images``."""
    rt = Tag2Text(installed, EngineOptions(device="cpu"))
    embeds = rt.encode(images)
    logits = rt.logits(embeds)
    guides = [rt.caption_tags(rt.predicted(row)) or _fallback_tags(rt) for row in logits]
    ids, mask = rt.tag_inputs(guides)
    tag_embeds = rt.encode_tags(ids, mask, embeds)
    prompt = rt.prompt_ids()
    max_length = min(rt.settings.max_length, len(prompt) + steps)
    generated = rt.generate(tag_embeds, max_length=max_length)
    length = min(len(g) for g in generated)  # an early [SEP] makes one shorter
    with torch.no_grad():
        x = torch.from_numpy(images)
        ref_embeds = model.encode_image(x)
        ref_logits = model.tag_logits(ref_embeds).numpy()
        ref_tags = model.encode_tags(torch.from_numpy(ids), torch.from_numpy(mask), ref_embeds)
        seq = torch.tensor([g[:length] for g in generated])
        ref_steps = model.text_decoder(seq, ref_tags)[:, len(prompt) - 1:-1].numpy()
    ref_generated = beam_search(TorchDecoder(model, ref_tags, rt.settings.num_beams),
                                np.asarray([prompt] * len(images)), rt.beam_settings(max_length))
    steps_logits = _step_logits(rt, tag_embeds, [g[:length] for g in generated], len(prompt))
    return {
        "image_embeds_max_abs": float(np.abs(embeds - ref_embeds.numpy()).max()),
        "logits_max_abs": float(np.abs(logits - ref_logits).max()),
        "scores_max_abs": float(np.abs(sigmoid(logits) - sigmoid(ref_logits)).max()),  # as RAM's, for the CLI
        "tag_embeds_max_abs": float(np.abs(tag_embeds - ref_tags.numpy()).max()),
        "decoder_logits_max_abs": float(np.abs(steps_logits - ref_steps).max()),
        "caption_ids_equal": generated == ref_generated,
        "caption_steps": max_length - len(prompt),
        "images": int(images.shape[0]),
    }


def _worst(parity: dict[str, Any]) -> float:
    """The parity numbers held to PARITY_TOLERANCE (embeddings are large-valued; logits decide)."""
    return max(parity[k] for k in ("logits_max_abs", "tag_embeds_max_abs", "decoder_logits_max_abs"))


def _fallback_tags(rt: Tag2Text) -> str:
    """Random-weight parity images may fire no tag; caption the first few tags then."""
    return " | ".join(rt.names[:3])


def special_thresholds(num_tags: int, default: float) -> list[float]:
    """0.68 everywhere, 0.7 at the released model's three indices where the list has them."""
    values = [default] * num_tags
    for index, value in SPECIAL_THRESHOLDS.items():
        if index < num_tags:
            values[index] = value
    return values


def _check_vocab(vocab: Path, size: int) -> WordPiece:
    if not vocab.is_file():
        raise RamcliError("no such tokenizer vocabulary", path=vocab, hint="pass bert-base-uncased's vocab.txt")
    try:
        wp = WordPiece.from_file(vocab)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RamcliError(f"not a BERT vocabulary ({exc})", path=vocab) from None
    if wp.vocab_size != size:
        raise CheckpointError(f"has a {size}-token vocabulary, but {vocab} gives {wp.vocab_size} "
                              f"(with {', '.join(ADDED_TOKENS)})", hint="use bert-base-uncased's vocab.txt")
    return wp


def import_tag2text(
    checkpoint: Path,
    name: str,
    state: Mapping[str, torch.Tensor] | None = None,
    *,
    tag_list: Path,
    vocab: Path,
    thresholds: Path | None = None,
    extra_files: dict[str, Path] | None = None,
    image_size: int | None = None,
    text_heads: int | None = None,
    default_threshold: float = 0.68,
    delete_tag_index: Sequence[int] | None = None,
    source: dict[str, Any] | None = None,
    report: Report = lambda _msg: None,
) -> store.InstalledModel:
    """Convert a Tag2Text ``checkpoint`` (``state``: its already-loaded tensors) and install it.

    ``thresholds``: a per-tag file; without one the released rule is written (0.68, and 0.7 at
    indices 2701, 2828, 1167 where they exist). ``delete_tag_index``: tags never passed to the
    captioner; default the released list, limited to indices the tag list has.
    """
    names, state = read_inputs(checkpoint, tag_list, state, report)
    state = remap_keys(state)
    cfg = infer_config(state, image_size=image_size, text_heads=text_heads)
    if cfg.num_tags != len(names):
        raise CheckpointError(f"has {cfg.num_tags} tags, but the tag list has {len(names)}", path=checkpoint,
                              hint="pass the tag list that belongs to this checkpoint")
    wp = _check_vocab(vocab, cfg.decoder.vocab_size)
    model = build_model(state, cfg, source=checkpoint)
    if thresholds is not None:
        store.read_thresholds(thresholds, len(names))
    deleted = sorted(i for i in (DELETE_TAG_INDEX if delete_tag_index is None else delete_tag_index)
                     if 0 <= i < len(names))
    settings = CaptionSettings()

    with store.staging(name) as staging:
        report("exporting to ONNX")
        t0 = time.perf_counter()
        export_onnx(model, staging, settings.tag_max_length)
        copy_text(tag_list, staging / store.TAG_LIST)
        copy_text(vocab, staging / VOCAB)
        if thresholds is not None:
            copy_text(thresholds, staging / store.THRESHOLDS)
        else:
            values = special_thresholds(len(names), default_threshold)
            (staging / store.THRESHOLDS).write_text("\n".join(map(str, values)) + "\n", encoding="utf-8")
        for filename, path in (extra_files or {}).items():
            copy_text(path, staging / filename)
        meta = {
            "name": name,
            "family": TAG2TEXT.name,
            "capabilities": list(TAG2TEXT.capabilities),
            "num_tags": cfg.num_tags,
            "default_threshold": default_threshold,
            "architecture": {"swin": {k: v for k, v in asdict(cfg.swin).items() if k != "extra"},
                             "tag_head": asdict(cfg.head), "tag_encoder": asdict(cfg.encoder),
                             "text_decoder": asdict(cfg.decoder), "vision_width": cfg.vision_width,
                             "num_tokens": cfg.swin.num_tokens},
            "caption": {**asdict(settings), "delete_tag_index": deleted,
                        "special_tokens": {t: wp.id_of(t) for t in ("[DEC]", "[ENC]", "[SEP]", "[PAD]")}},
            **provenance(checkpoint, cfg.swin.image_size, t0, source),
        }
        (staging / store.META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        report("checking ONNX against PyTorch")
        partial = store.InstalledModel(name, staging)
        parity = parity_check(model, partial, parity_images(partial.preprocess))
        worst = _worst(parity)
        if worst > PARITY_TOLERANCE:
            raise RamcliError(f"ONNX export does not reproduce PyTorch (max difference {worst:.2e})",
                              path=checkpoint, hint="please report this with `ramcli doctor --json`")
        meta["parity"] = parity
        meta["file_bytes"] = store.file_bytes(staging)  # checked whenever the model is opened
        (staging / store.META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return store.InstalledModel(name, store.commit(staging, name))


def verify(name: str, images: np.ndarray | None = None) -> dict[str, Any]:
    """Re-run the parity check of an installed Tag2Text model against its source checkpoint."""
    installed = store.get(name)
    src = source_checkpoint(installed)
    arch = installed.meta["architecture"]
    state = remap_keys(load_state_dict(src))
    cfg = infer_config(state, image_size=installed.preprocess.image_size, text_heads=arch["tag_encoder"]["heads"])
    model = build_model(state, cfg, source=src)
    result = parity_check(model, installed, images if images is not None else parity_images(installed.preprocess))
    return {"model": name, "checkpoint": str(src), **result, "ok": _worst(result) <= PARITY_TOLERANCE}


class Tag2TextConverter:
    """The converter protocol (``families.Converter``) for Tag2Text."""

    families: tuple[Family, ...] = (TAG2TEXT,)

    def detect(self, state: Mapping[str, Any]) -> Family | None:
        return TAG2TEXT if is_tag2text_state(state) else None

    def build_model(self, state: Mapping[str, torch.Tensor], *, num_tags: int | None = None,
                    image_size: int | None = None, source: Path | None = None) -> Tag2TextModel:
        """The tag count is read off the head's shapes (``num_tags`` is only checked)."""
        state = remap_keys(state)
        cfg = infer_config(state, image_size=image_size)
        if num_tags is not None and cfg.num_tags != num_tags:
            raise CheckpointError(f"has {cfg.num_tags} tags, not {num_tags}", path=source)
        return build_model(state, cfg, source=source)

    def export_onnx(self, model: Tag2TextModel, out: Path) -> None:
        export_onnx(model, out, CaptionSettings().tag_max_length)

    def import_checkpoint(self, checkpoint: Path, name: str, inputs: ConvertInputs, *,
                          state: Mapping[str, torch.Tensor] | None = None,
                          report: Report = lambda _msg: None) -> store.InstalledModel:
        if inputs.tag_list is None or inputs.vocab is None:
            raise RamcliError("a Tag2Text checkpoint needs its tag list and a BERT vocabulary", path=checkpoint,
                              hint="pass --tag-list FILE and --vocab VOCAB.txt (bert-base-uncased's)")
        return import_tag2text(checkpoint, name, state, tag_list=inputs.tag_list, vocab=inputs.vocab,
                               thresholds=inputs.thresholds, extra_files=dict(inputs.extra_files),
                               image_size=inputs.image_size, default_threshold=inputs.default_threshold,
                               delete_tag_index=inputs.delete_tag_index,
                               source=dict(inputs.source) if inputs.source is not None else None, report=report)

    def verify(self, name: str, images: np.ndarray | None = None) -> dict[str, Any]:
        return verify(name, images)

    def random_checkpoint(self, family: Family, path: Path, *, num_tags: int = 40, seed: int = 0) -> Path:
        from ramcli.models.convert.tag2text import random_model, save_checkpoint, tiny_config

        return save_checkpoint(random_model(tiny_config(num_tags), seed=seed), path)


CONVERTER = Tag2TextConverter()
