"""The CLIP ViT-B/16 text encoder: embeds search queries and custom tags into RAM++'s label space."""

from __future__ import annotations

from ramcli.models.families.files import BPE, TEXT_ENCODER


class ClipTextFamily:
    """A text model: no image encoder, no tag files, nothing to tag with or quantise."""

    name = "clip_text"
    title = "CLIP text encoder"
    capabilities = ("text_embeddings", "search", "custom_tags")
    tags = False
    takes_custom_tags = False
    open_set = False
    clip_space = True
    captions = False
    text_encoder = True
    weights_descriptions = False
    needs_vocab = False
    caption_stage = "head"
    quantized_graphs: tuple[str, ...] = ()
    few_tags_head = False
    files = (TEXT_ENCODER, BPE)
    optional_files: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"<family {self.name}>"


CLIP_TEXT = ClipTextFamily()
