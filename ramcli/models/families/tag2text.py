"""Tag2Text: Swin-B image encoder, a fixed-class tag head, and a BERT captioner guided by the tags."""

from __future__ import annotations

from ramcli.models.families.files import (
    DECODER_CROSS,
    DECODER_STEP,
    ENCODER,
    HEAD,
    QUANTIZED,
    TAG_ENCODER,
    TAG_LIST,
    THRESHOLDS,
    VOCAB,
)


class Tag2TextFamily:
    """Its tag head has one learned query per class (no CLIP label embeddings): no custom tags,
    and its CLS is not in CLIP space. Its caption graphs stay float32 (store.QUANTIZED)."""

    name = "tag2text"
    title = "Tag2Text"
    capabilities = ("tags", "captions")
    tags = True
    takes_custom_tags = False
    open_set = False
    clip_space = False
    captions = True
    text_encoder = False
    weights_descriptions = False
    needs_vocab = True  # bert-base-uncased's vocab.txt
    caption_stage = "caption"
    quantized_graphs = QUANTIZED
    few_tags_head = False
    files = (ENCODER, HEAD, TAG_ENCODER, DECODER_CROSS, DECODER_STEP, VOCAB, TAG_LIST, THRESHOLDS)
    optional_files: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"<family {self.name}>"


TAG2TEXT = Tag2TextFamily()
