"""CLIP ViT-B/16 text encoder (open_clip, OpenAI weights) -> ONNX, for open-set tags and search.

RAM++ was trained so that its image CLS embedding and its tag label embeddings live in CLIP
ViT-B/16 text space; the same encoder embeds search queries and custom tags. Only the text tower
is exported: token ids (B, <=77) int64 -> L2-normalised embeddings (B, 512). The BPE vocabulary is
copied from the open_clip wheel into the model folder so the runtime needs neither torch nor
open_clip (``ramcli.clip_tokenizer``).

A checkpoint is recognised as this encoder by its keys (an open_clip state_dict saved with
``torch.save(model.state_dict(), FILE)``, as on the hub); the visual tower, if present, is ignored.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ramcli import __version__
from ramcli.errors import CheckpointError, RamcliError
from ramcli.hashing import sha256_file
from ramcli.models import store
from ramcli.models.convert.common import export_graph
from ramcli.models.families import CLIP_TEXT, ConvertInputs, Family
from ramcli.models.families.files import BPE
from ramcli.models.families.files import TEXT_ENCODER as ENCODER

OPEN_CLIP_MODEL = "ViT-B-16"
PARITY_TEXTS = ["a photo of a dog.", "There is the red bicycle in the scene.", "修道院", "itap of my café."]
_IGNORED = ("visual.", "logit_scale", "logit_bias")


def is_clip_state(state: Mapping[str, torch.Tensor]) -> bool:
    return "token_embedding.weight" in state and "text_projection" in state and "positional_embedding" in state


def build_text_model(state: Mapping[str, torch.Tensor], *, source: Path | None = None) -> nn.Module:
    """open_clip's ViT-B-16 (QuickGELU, as the OpenAI weights need) with the text tower loaded strictly."""
    import open_clip

    logging.getLogger().setLevel(logging.ERROR)  # "no pretrained weights loaded" is expected here
    model = open_clip.create_model(OPEN_CLIP_MODEL, pretrained=None, force_quick_gelu=True)
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(_IGNORED)}
    missing = sorted(set(expected) - set(state))
    wrong = sorted(k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or wrong:
        parts = [f"{len(ks)} {label}: {', '.join(ks[:4])}" for label, ks in (("missing", missing),
                                                                            ("wrong shape", wrong)) if ks]
        raise CheckpointError("is not an open_clip ViT-B-16 text encoder: " + "; ".join(parts), path=source,
                              hint="save it with torch.save(model.state_dict(), FILE) from open_clip ViT-B-16")
    model.load_state_dict({k: state[k].float() for k in expected}, strict=False)
    model.visual = None  # not exported, not needed
    return model.eval()


def _attention(attn: nn.MultiheadAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``nn.MultiheadAttention`` (batch first, self-attention) with no fixed sizes in its reshapes:
    the exporter bakes the traced sequence length into the module's own."""
    b, n, d = x.shape
    heads = attn.num_heads
    q, k, v = torch.nn.functional.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(b, n, heads, d // heads).transpose(1, 2) for t in (q, k, v))
    weights = (q * (d // heads) ** -0.5) @ k.transpose(-1, -2) + mask
    out = (weights.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, d)
    return attn.out_proj(out)


class TextEncoder(nn.Module):
    """open_clip's ``encode_text(normalize=True)``, but for any sequence length up to 77.

    The attention is causal and the embedding is read at end-of-text, so the zero padding after
    it changes nothing: the runtime cuts the ids after the last end-of-text of the batch (a query
    is ~10 tokens, not 77; 6x less work). open_clip adds all 77 position embeddings, which would
    fix the length when traced; here they are sliced to the input's length.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        m = self.model
        n = ids.shape[1]
        x = m.token_embedding(ids) + m.positional_embedding[:n]
        mask = m.attn_mask[:n, :n]
        for block in m.transformer.resblocks:  # open_clip's blocks, with the attention written out
            x = x + block.ls_1(_attention(block.attn, block.ln_1(x), mask))
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
        x = m.ln_final(x)
        x = x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ m.text_projection  # end-of-text: the largest id
        return torch.nn.functional.normalize(x, dim=-1)


def bpe_source() -> Path:
    import open_clip

    path = Path(open_clip.__file__).parent / BPE
    if not path.is_file():
        raise RamcliError("open_clip's BPE vocabulary is missing", path=path, hint="reinstall open_clip_torch")
    return path


def export_onnx(model: nn.Module, out: Path) -> torch.Tensor:
    """The text tower as ``text_encoder.onnx`` (weights in ``.data``, simplified); returns the ids
    it was traced with (the parity texts, 77 tokens)."""
    import open_clip

    ids = open_clip.get_tokenizer(OPEN_CLIP_MODEL)(PARITY_TEXTS)
    export_graph(TextEncoder(model), (ids,), out / ENCODER, ["ids"], "text_embeds",
                 {"ids": {0: "batch", 1: "tokens"}, "text_embeds": {0: "batch"}}, external_data=True,
                 simplify=True)
    return ids


def import_clip_text(checkpoint: Path, name: str, state: Mapping[str, torch.Tensor], *,
                     source: dict[str, Any] | None = None,
                     report: Callable[[str], None] = lambda _m: None) -> store.InstalledModel:
    """Export the text tower, check ONNX against PyTorch, install as ``name``."""
    import onnxruntime as ort
    import open_clip

    from ramcli.runtime.engine import session_options

    model = build_text_model(state, source=checkpoint)
    with store.staging(name) as staging:
        report("exporting the CLIP text encoder to ONNX")
        t0 = time.perf_counter()
        ids = export_onnx(model, staging)
        with torch.no_grad():
            ref = model.encode_text(ids, normalize=True).numpy()  # open_clip's own, all 77 positions
        shutil.copyfile(bpe_source(), staging / BPE)
        session = ort.InferenceSession(str(staging / ENCODER), session_options(), providers=["CPUExecutionProvider"])
        got = session.run(None, {"ids": ids.numpy()})[0]
        cut = int((ids.numpy() != 0).sum(axis=1).max())  # what the runtime feeds: ids up to end-of-text
        diff = max(float(np.abs(got - ref).max()),
                   float(np.abs(session.run(None, {"ids": ids.numpy()[:, :cut]})[0] - ref).max()))
        if diff > 1e-3:
            raise RamcliError(f"ONNX export does not reproduce PyTorch (max difference {diff:.2e})", path=checkpoint)
        meta = {
            "name": name, "family": CLIP_TEXT.name, "open_clip_model": OPEN_CLIP_MODEL, "quick_gelu": True,
            "context_length": int(ids.shape[1]), "variable_length": True, "embed_dim": int(ref.shape[1]),
            "source": {"checkpoint": str(checkpoint.resolve()), "sha256": sha256_file(checkpoint),
                       "bytes": checkpoint.stat().st_size, **(source or {})},
            "converted_by": f"ramcli {__version__}, torch {torch.__version__}, open_clip {open_clip.__version__}",
            "export_seconds": round(time.perf_counter() - t0, 2),
            "parity": {"text_embeds_max_abs": diff, "texts": len(PARITY_TEXTS)},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "file_bytes": store.file_bytes(staging),  # checked whenever the model is opened
        }
        (staging / store.META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return store.InstalledModel(name, store.commit(staging, name))


class ClipTextConverter:
    """The converter protocol (``families.Converter``) for the CLIP text encoder: no tag files."""

    families: tuple[Family, ...] = (CLIP_TEXT,)

    def detect(self, state: Mapping[str, Any]) -> Family | None:
        return CLIP_TEXT if is_clip_state(state) else None

    def build_model(self, state: Mapping[str, torch.Tensor], *, num_tags: int | None = None,
                    image_size: int | None = None, source: Path | None = None) -> nn.Module:
        return build_text_model(state, source=source)

    def export_onnx(self, model: nn.Module, out: Path) -> None:
        export_onnx(model, out)

    def import_checkpoint(self, checkpoint: Path, name: str, inputs: ConvertInputs, *,
                          state: Mapping[str, torch.Tensor] | None = None,
                          report: Callable[[str], None] = lambda _m: None) -> store.InstalledModel:
        if state is None:
            from ramcli.models.convert.checkpoint import load_state_dict

            state = load_state_dict(checkpoint)
        return import_clip_text(checkpoint, name, state, report=report,
                                source=dict(inputs.source) if inputs.source is not None else None)

    def verify(self, name: str, images: np.ndarray | None = None) -> dict[str, Any]:
        """Its parity (texts, not images) is checked once, at conversion."""
        raise RamcliError(f"model {name!r} ({CLIP_TEXT.name}) has no parity check to re-run",
                          hint="its parity was checked when it was converted; see meta.json")

    def random_checkpoint(self, family: Family, path: Path, *, num_tags: int = 40, seed: int = 0) -> Path:
        """Full size (the text tower's shapes are fixed: open_clip's ViT-B-16), random weights."""
        import open_clip

        torch.manual_seed(seed)
        logging.getLogger().setLevel(logging.ERROR)
        torch.save(open_clip.create_model(OPEN_CLIP_MODEL, pretrained=None, force_quick_gelu=True).state_dict(), path)
        return path


CONVERTER = ClipTextConverter()
