"""Tag2Text at run time, without torch: tags and a caption per photo from five ONNX graphs.

    image (B,3,S,S) --image_encoder--> tokens (B,145,W) --tag_head--> tag logits (B,C)
    tags " | " --wordpiece--> ids (B,40) --tag_encoder(ids, mask, tokens)--> (B,40,H)
        --text_decoder_cross--> cross-attention K/V (L,2,B,h,40,d), repeated per beam
        --text_decoder_step (beam search, self-attention cache)--> caption ids

The reference's choices are kept for parity (docs/ram-plus.md, golden/README.md): tags fire on
sigmoid > threshold (strict); a fixed list of tag indices is removed before captioning; the
chosen names are joined with " | ", tokenised to 40 ids whose first becomes [ENC]; the decoder
starts from "[DEC] a picture of" and the prompt is cut from the decoded text by character count.
A caller may pass its own tags instead of the predicted ones.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ramcli.models.families.files import DECODER_CROSS, DECODER_STEP, ENCODER, HEAD, TAG_ENCODER, VOCAB
from ramcli.models.store import InstalledModel
from ramcli.runtime.beam_search import BeamSettings, beam_search
from ramcli.runtime.engine import EngineOptions, _session, input_contract
from ramcli.runtime.images import Preprocess
from ramcli.runtime.tagging import Selection, Tag, apply_verdicts, sigmoid
from ramcli.runtime.wordpiece import WordPiece

GRAPHS = (ENCODER, HEAD, TAG_ENCODER, DECODER_CROSS, DECODER_STEP)
TAG_SEPARATOR = " | "
# The released model's rules; meta.json carries the ones that apply to an installed model.
SPECIAL_THRESHOLDS = {2701: 0.7, 2828: 0.7, 1167: 0.7}
DELETE_TAG_INDEX = (127, 2961, 3351, 3265, 3338, 3355, 3359)

SessionFactory = Callable[[Path], object]  # path -> an onnxruntime.InferenceSession-like object


@dataclass(frozen=True)
class CaptionSettings:
    """Generation settings; defaults are the reference's inference call."""

    prompt: str = "a picture of "
    num_beams: int = 3
    max_length: int = 50
    min_length: int = 10
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0
    tag_max_length: int = 40

    @classmethod
    def from_meta(cls, meta: dict) -> CaptionSettings:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in meta.get("caption", {}).items() if k in known})


@dataclass(frozen=True)
class Captioned:
    """One photo: predicted tags (index order), the tag string the captioner read, the caption."""

    tags: list[Tag]
    caption_tags: str
    caption: str
    ids: list[int]  # generated ids, prompt included, as the reference returns them

    def as_dict(self) -> dict[str, object]:
        return {"tags": [t.as_dict() for t in self.tags], "caption": self.caption,
                "caption_tags": self.caption_tags}


class StepDecoder:
    """:class:`beam_search.Decoder` over the step graph. The self-attention cache lives here, in
    numpy, as one (layers, 2, rows, heads, length, head_dim) array, so reordering beams is one
    index on axis 2. Cross-attention K/V are per row too; the beams of an image share them, so
    they are re-indexed only when the set of images changes (a finished image dropped)."""

    def __init__(self, session: object, cross: np.ndarray, beams: int) -> None:
        """``cross``: (layers, 2, images, heads, 40, head_dim) from the cross graph."""
        self.session = session
        self.cross = np.ascontiguousarray(np.repeat(cross, beams, axis=2), dtype=np.float32)
        layers, _, rows, heads, _, head_dim = self.cross.shape
        self.past = np.zeros((layers, 2, rows, heads, 0, head_dim), dtype=np.float32)
        self.image = np.arange(rows) // beams  # the image each row belongs to

    def __call__(self, new_ids: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": np.ascontiguousarray(new_ids, dtype=np.int64), "past": self.past,
                 "cross_kv": self.cross}
        logits, self.past = self.session.run(None, feeds)
        return logits

    def reorder(self, rows: np.ndarray) -> None:
        self.past = np.ascontiguousarray(self.past[:, :, rows])
        image = self.image[rows]
        if not np.array_equal(image, self.image):
            self.cross = np.ascontiguousarray(self.cross[:, :, rows])
        self.image = image


class Tag2Text:
    """An installed Tag2Text model: preprocessed images in, tags and captions out."""

    side_by_side = 1  # a batch runs as one (open_tagger does not apply engine.for_batches here)

    def __init__(self, model: InstalledModel, opts: EngineOptions | None = None, *,
                 session_factory: SessionFactory | None = None) -> None:
        self.model = model
        self.opts = opts or EngineOptions()
        # The image encoder without the CPU arena, as Engine does (its activations dwarf the rest).
        make = session_factory or (lambda p: _session(os.fspath(p), self.opts, cpu_arena=p.name != ENCODER))
        self.encoder, self.head, self.tag_encoder, self.cross, self.step = (make(model.path / g) for g in GRAPHS)
        self.tokenizer = WordPiece.from_file(model.path / VOCAB)
        self.settings = CaptionSettings.from_meta(model.meta)
        self.names = model.tag_names
        self.thresholds = model.thresholds
        self.delete_tag_index = set(model.meta.get("caption", {}).get("delete_tag_index", []))

    @property
    def provider(self) -> str:
        """What runs the image encoder: "CUDA" or "CPU" (as Engine.provider)."""
        providers = getattr(self.encoder, "get_providers", lambda: ["CPUExecutionProvider"])()
        return "CUDA" if providers[0] == "CUDAExecutionProvider" else "CPU"

    @property
    def preprocess(self) -> Preprocess:
        return input_contract(self.model, self.opts, self.provider)

    # ------------------------------------------------------------------ tags
    def encode(self, images: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) -> image tokens (B, 145, W), a few images per call on the CPU."""
        x = np.ascontiguousarray(images, dtype=np.float32)
        step = self.opts.cpu_chunk if self.provider == "CPU" else len(x)
        parts = [self.encoder.run(None, {"image": x[i:i + step]})[0] for i in range(0, len(x), max(step, 1))]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def logits(self, image_embeds: np.ndarray) -> np.ndarray:
        return self.head.run(None, {"image_embeds": np.ascontiguousarray(image_embeds, dtype=np.float32)})[0]

    def predicted(self, logits: np.ndarray) -> list[Tag]:
        """Tags of one image, (C,) logits -> the reference's rule, in tag-index order."""
        scores = sigmoid(logits)
        return [Tag(int(i), self.names[i], None, float(scores[i])) for i in np.flatnonzero(scores > self.thresholds)]

    def caption_tags(self, tags: Sequence[Tag]) -> str:
        """The string the captioner reads: predicted tags minus the ones that disturb captions."""
        return TAG_SEPARATOR.join(t.name for t in tags if t.index not in self.delete_tag_index)

    # ------------------------------------------------------------------ captions
    def tag_inputs(self, tag_strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Tag strings -> (B, 40) ids (first one [ENC]) and attention masks."""
        rows = [self.tokenizer.encode_padded(s, self.settings.tag_max_length) for s in tag_strings]
        ids = np.asarray([r[0] for r in rows], dtype=np.int64).reshape(len(rows), -1)
        ids[:, 0] = self.tokenizer.id_of("[ENC]")
        return ids, np.asarray([r[1] for r in rows], dtype=np.int64).reshape(len(rows), -1)

    def encode_tags(self, ids: np.ndarray, mask: np.ndarray, image_embeds: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": ids, "attention_mask": mask,
                 "image_embeds": np.ascontiguousarray(image_embeds, dtype=np.float32)}
        return self.tag_encoder.run(None, feeds)[0]

    def prompt_ids(self) -> list[int]:
        """"[DEC] a picture of": the prompt's ids with [CLS] replaced by [DEC] and [SEP] cut."""
        ids = self.tokenizer.encode(self.settings.prompt)
        return [self.tokenizer.id_of("[DEC]"), *ids[1:-1]]

    def beam_settings(self, max_length: int | None = None) -> BeamSettings:
        s = self.settings
        return BeamSettings(num_beams=s.num_beams, max_length=max_length or s.max_length, min_length=s.min_length,
                            eos_id=self.tokenizer.id_of("[SEP]"), length_penalty=s.length_penalty,
                            repetition_penalty=s.repetition_penalty)

    def decoder(self, tag_embeds: np.ndarray) -> StepDecoder:
        """A fresh cached decoder over ``num_beams`` rows per image."""
        cross = self.cross.run(None, {"tag_embeds": np.ascontiguousarray(tag_embeds, dtype=np.float32)})[0]
        return StepDecoder(self.step, cross, self.settings.num_beams)

    def generate(self, tag_embeds: np.ndarray, max_length: int | None = None) -> list[list[int]]:
        """(B, 40, H) encoded tags -> generated ids per image, prompt included."""
        prompts = np.asarray([self.prompt_ids()] * len(tag_embeds), dtype=np.int64)
        return beam_search(self.decoder(tag_embeds), prompts, self.beam_settings(max_length))

    def text(self, ids: Sequence[int]) -> str:
        """Decoded caption with the prompt cut by character count, exactly as the reference does
        (a first word piece glued to "of" loses its first characters, as there)."""
        return self.tokenizer.decode(ids)[len(self.settings.prompt):]

    def caption(self, image_embeds: np.ndarray, tag_strings: Sequence[str]) -> list[tuple[str, list[int]]]:
        ids, mask = self.tag_inputs(tag_strings)
        generated = self.generate(self.encode_tags(ids, mask, image_embeds))
        return [(self.text(g), g) for g in generated]

    def run(self, images: np.ndarray, user_tags: Sequence[str | Sequence[str] | None] | None = None) -> list[Captioned]:
        """Preprocessed images -> tags and captions. ``user_tags[i]`` (a " | " string or a list
        of names), when given, replaces image i's predicted tags as the caption's guide."""
        embeds = self.encode(images)
        logits = self.logits(embeds)
        tags = [self.predicted(row) for row in logits]
        guides = [self.caption_tags(t) for t in tags]
        for i, given in enumerate(user_tags or []):
            if given is not None:
                guides[i] = given if isinstance(given, str) else TAG_SEPARATOR.join(given)
        return [Captioned(t, g, text, ids) for t, g, (text, ids) in zip(tags, guides, self.caption(embeds, guides),
                                                                        strict=True)]


class CaptionTagger:
    """Tag2Text behind the :class:`tagging.Tagger` interface, so the dry run and the library
    pipeline run it like RAM++: ``infer`` and ``tags`` as there, plus ``captions``.

    Keywords follow the run's selection (``--threshold``, ``--top-k``); the caption is always
    guided by the reference's own choice (its thresholds, minus the deleted indices), or by the
    user's ``guide`` tags (``--caption-tags``) for every photo.
    """

    clip_space = False  # Swin-B tokens, not CLIP space: no search by CLIP, no custom tags

    def __init__(self, model: Tag2Text, guide: Sequence[str] | None = None) -> None:
        self.engine = model  # .model, .provider: what the callers read from a Tagger's engine
        self.model = model
        self.guide = TAG_SEPARATOR.join(guide) if guide else None
        self.vocab = model  # .names for the callers that map tag indices to names

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        embeds = self.model.encode(images)
        return embeds, self.model.logits(embeds)

    def logits(self, image_embeds: np.ndarray) -> np.ndarray:
        return self.model.logits(image_embeds)

    def tags(self, logits: np.ndarray, selection: Selection, verdicts: Mapping[str, str] | None = None) -> list[Tag]:
        scores = sigmoid(logits)
        picked = apply_verdicts(selection.pick(scores, self.model.thresholds), scores, self.model.names, None,
                                verdicts)
        return [Tag(int(i), self.model.names[i], None, float(scores[i])) for i in picked]

    def captions(self, image_embeds: np.ndarray, logits: np.ndarray) -> list[str | None]:
        guides = [self.guide or self.model.caption_tags(self.model.predicted(row)) for row in logits]
        return [text for text, _ in self.model.caption(image_embeds, guides)]
