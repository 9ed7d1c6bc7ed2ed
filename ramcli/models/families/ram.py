"""RAM and RAM++: Swin image encoder + a tag head queried with CLIP label embeddings."""

from __future__ import annotations

from ramcli.models.families.files import ENCODER, HEAD, HEAD_FEW, LABELS, QUANTIZED, TAG_LIST, TAG_LIST_ZH, THRESHOLDS


class RamFamily:
    """RAM (one label embedding per tag) and RAM++ (51 descriptions per tag, weighted per image).

    Both heads take CLIP text embeddings as tag queries, so both take custom tags and keep their
    CLS in CLIP space; only RAM++'s, trained on descriptions, is open-set enough to re-rank search.
    """

    tags = True
    takes_custom_tags = True
    clip_space = True
    captions = False
    text_encoder = False
    needs_vocab = False
    caption_stage = "head"  # Tagger.captions does nothing: its time is the head's
    quantized_graphs = QUANTIZED
    few_tags_head = True
    files = (ENCODER, HEAD, LABELS, TAG_LIST)
    # earlier conversions have no few-tags head; imports may come without Chinese names or thresholds
    optional_files = (HEAD_FEW, TAG_LIST_ZH, THRESHOLDS)

    def __init__(self, name: str, title: str, *, weights_descriptions: bool, capabilities: tuple[str, ...]) -> None:
        self.name = name
        self.title = title
        self.weights_descriptions = weights_descriptions
        self.open_set = weights_descriptions
        self.capabilities = capabilities

    def __repr__(self) -> str:
        return f"<family {self.name}>"


RAM_PLUS = RamFamily("ram_plus", "RAM++", weights_descriptions=True,
                     capabilities=("tags", "tags_zh", "open_set", "custom_tags", "search"))
RAM = RamFamily("ram", "RAM", weights_descriptions=False, capabilities=("tags", "tags_zh", "custom_tags", "search"))
