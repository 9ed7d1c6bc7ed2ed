"""Open-set label embeddings: how RAM++ turns a name it was never trained on into a tag query.

The recipe is the reference's (github.com/xinyu1205/recognize-anything, ``ram/utils/openset_utils.py``,
Apache-2.0; the prompt templates descend from CLIP's ImageNet prompt engineering, MIT): the name
is put into the reference's 63 prompt templates (docs/ram-plus.md says 64; the list has 63), each
prompt is embedded with the CLIP ViT-B/16 text encoder and
L2-normalised, and the normalised mean is the tag's one label embedding. The name is lower-cased,
``_`` becomes a space, ``/`` becomes " or ", a final "." is dropped; the article follows the
*original* name's first letter; prompts starting with "a" or "the" get "This is " in front.
These details are kept exactly, since they move the embedding. No torch here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

TEMPLATES: tuple[str, ...] = (
    "There is {article} {} in the scene.",
    "There is the {} in the scene.",
    "a photo of {article} {} in the scene.",
    "a photo of the {} in the scene.",
    "a photo of one {} in the scene.",
    "itap of {article} {}.",
    "itap of my {}.",
    "itap of the {}.",
    "a photo of {article} {}.",
    "a photo of my {}.",
    "a photo of the {}.",
    "a photo of one {}.",
    "a photo of many {}.",
    "a good photo of {article} {}.",
    "a good photo of the {}.",
    "a bad photo of {article} {}.",
    "a bad photo of the {}.",
    "a photo of a nice {}.",
    "a photo of the nice {}.",
    "a photo of a cool {}.",
    "a photo of the cool {}.",
    "a photo of a weird {}.",
    "a photo of the weird {}.",
    "a photo of a small {}.",
    "a photo of the small {}.",
    "a photo of a large {}.",
    "a photo of the large {}.",
    "a photo of a clean {}.",
    "a photo of the clean {}.",
    "a photo of a dirty {}.",
    "a photo of the dirty {}.",
    "a bright photo of {article} {}.",
    "a bright photo of the {}.",
    "a dark photo of {article} {}.",
    "a dark photo of the {}.",
    "a photo of a hard to see {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of {article} {}.",
    "a low resolution photo of the {}.",
    "a cropped photo of {article} {}.",
    "a cropped photo of the {}.",
    "a close-up photo of {article} {}.",
    "a close-up photo of the {}.",
    "a jpeg corrupted photo of {article} {}.",
    "a jpeg corrupted photo of the {}.",
    "a blurry photo of {article} {}.",
    "a blurry photo of the {}.",
    "a pixelated photo of {article} {}.",
    "a pixelated photo of the {}.",
    "a black and white photo of the {}.",
    "a black and white photo of {article} {}.",
    "a plastic {}.",
    "the plastic {}.",
    "a toy {}.",
    "the toy {}.",
    "a plushie {}.",
    "the plushie {}.",
    "a cartoon {}.",
    "the cartoon {}.",
    "an embroidered {}.",
    "the embroidered {}.",
    "a painting of the {}.",
    "a painting of a {}.",
)

# Search queries are embedded with these two prompts only: all 63 cost ~4 s per query on a
# 2-core CPU, the two ~0.15 s. Custom tags (computed once) use all 63.
QUERY_TEMPLATES: tuple[str, ...] = ("{}", "a photo of {article} {}.")

Embed = Callable[[list[str]], np.ndarray]  # texts -> (N, 512) L2-normalised rows


def article(name: str) -> str:
    return "an" if name[:1] in tuple("aeiou") else "a"


def processed_name(name: str) -> str:
    return name.replace("_", " ").replace("/", " or ").lower().rstrip(".")


def prompts(name: str, templates: tuple[str, ...] = TEMPLATES) -> list[str]:
    texts = [t.format(processed_name(name), article=article(name)) for t in templates]
    return ["This is " + t if t.startswith(("a", "the")) else t for t in texts]


def mean_embedding(rows: np.ndarray) -> np.ndarray:
    """Normalised mean of L2-normalised rows: one label embedding from many texts."""
    rows = rows / np.linalg.norm(rows, axis=-1, keepdims=True)
    mean = rows.mean(axis=0)
    return (mean / np.linalg.norm(mean)).astype(np.float32)



def query_embedding(text: str, embed: Embed) -> np.ndarray:
    """(512,) embedding of a free-text search query (see QUERY_TEMPLATES)."""
    texts = [t.format(text.strip(), article=article(text.strip().lower())) for t in QUERY_TEMPLATES]
    return mean_embedding(embed(texts))
