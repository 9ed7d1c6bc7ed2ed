"""The two protocols a model family implements: what the runtime asks, and what conversion does.

Family differences live here and in the converters, never in ``if family == ...`` branches
elsewhere (design.md). The split follows the layers: the runtime protocol (:class:`Family`) is
plain data that tagging, search and the vocabulary ask, so this module imports neither torch nor
numpy nor anything above ``models.store``. The converter protocol (:class:`Converter`) is
implemented on the torch side under ``models/convert/`` and reached through
``models.convert.converters.converter_for(family)``: the family objects do not import their
converters, because the converters import the runtime (parity checks) and the runtime asks the
family objects, so that link would close an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ramcli.models.store import InstalledModel

Report = Callable[[str], None]


class Family(Protocol):
    """What the runtime needs to know about a model family (one object per family)."""

    @property
    def name(self) -> str:
        """As meta.json and the manifests spell it (``InstalledModel.family``)."""
        ...

    @property
    def title(self) -> str:
        """For messages: "RAM++", "Tag2Text"."""
        ...

    @property
    def capabilities(self) -> tuple[str, ...]:
        """What a model of the family can do, for models whose manifest or meta.json does not say
        (imported under a name the manifests do not know)."""
        ...

    @property
    def tags(self) -> bool:
        """It has an image encoder and a tag head: `ramcli tag` runs it, it has tag files."""
        ...

    @property
    def takes_custom_tags(self) -> bool:
        """Its tag head is queried with CLIP text (label) embeddings, so custom tags and re-scoring
        over stored tokens work with it."""
        ...

    @property
    def open_set(self) -> bool:
        """Its head scores any CLIP text well (per-image weighted descriptions): search re-ranks
        the CLIP candidates of a free-text query with it."""
        ...

    @property
    def clip_space(self) -> bool:
        """Its image CLS embedding lives in CLIP ViT-B/16 text space: search by text and `--like`,
        and add-tag's candidates, can use the stored CLS."""
        ...

    @property
    def captions(self) -> bool:
        """It writes captions: its tagger is ``runtime.caption.CaptionTagger`` (not ``runtime.tagging.Tagger``)."""
        ...

    @property
    def text_encoder(self) -> bool:
        """It is a CLIP text encoder (``runtime.textenc.TextEncoder``), not an image model."""
        ...

    @property
    def weights_descriptions(self) -> bool:
        """Each tag has several description embeddings, weighted per image by ``exp(reweight_scale)``
        (RAM++); otherwise one label embedding per tag."""
        ...

    @property
    def needs_vocab(self) -> bool:
        """Its captioner needs a tokenizer vocabulary the checkpoint does not hold (BERT's vocab.txt):
        pulling fetches it (``download.fetch_tokenizer``), importing asks for ``--vocab``."""
        ...

    @property
    def caption_stage(self) -> str:
        """The bench stage that ``Tagger.captions`` is timed under ("caption", or "head" where it
        does nothing)."""
        ...

    @property
    def quantized_graphs(self) -> tuple[str, ...]:
        """The graphs `ramcli models quantize` makes int8/fp16 variants of; empty: nothing to quantise."""
        ...

    @property
    def files(self) -> tuple[str, ...]:
        """The files (``families.files``) a converted model of the family cannot work without,
        besides meta.json: opening a model checks them (``store.check``), so a damaged folder is one
        line naming the file and how to repair it, not a traceback half-way through a run."""
        ...

    @property
    def optional_files(self) -> tuple[str, ...]:
        """Files a model of the family may lack, because the runtime does without them (the few-tags
        head of an earlier conversion); checked like the others where they are there."""
        ...

    @property
    def few_tags_head(self) -> bool:
        """Its conversion writes ``tag_head_few.onnx``; a model without it was converted by an
        earlier ramcli (`ramcli doctor` says to convert it again)."""
        ...


@dataclass(frozen=True)
class ConvertInputs:
    """What a conversion may take besides the checkpoint; each converter uses its part (the CLIP
    text encoder none of the tag files, RAM no vocabulary, Tag2Text no Chinese names)."""

    tag_list: Path | None = None
    tag_list_zh: Path | None = None
    thresholds: Path | None = None
    vocab: Path | None = None  # the tokenizer vocabulary (Family.needs_vocab)
    extra_files: Mapping[str, Path] = field(default_factory=dict)  # copied in as they are (NOTICE, LICENSE)
    image_size: int | None = None
    default_threshold: float = 0.68
    delete_tag_index: Sequence[int] | None = None  # captioning: tags never passed to the captioner
    source: Mapping[str, Any] | None = None  # where the checkpoint came from, for meta.json


class Converter(Protocol):
    """The torch side of one or more families (``models/convert/``; imported only to convert).

    ``state``: a checkpoint's tensors (``Mapping[str, torch.Tensor]``); ``images``: a float32
    (B, 3, S, S) array; ``model``: the family's ``torch.nn.Module``.
    """

    @property
    def families(self) -> tuple[Family, ...]:
        """The families it converts (RAM's converter does RAM and RAM++)."""
        ...

    def detect(self, state: Mapping[str, Any]) -> Family | None:
        """The family of a checkpoint with these (raw or remapped) keys, if it is one of ``families``."""
        ...

    def build_model(self, state: Mapping[str, Any], *, num_tags: int | None = None, image_size: int | None = None,
                    source: Path | None = None) -> Any:
        """Remap the official keys, infer the architecture from the shapes, load strictly."""
        ...

    def export_onnx(self, model: Any, out: Path) -> None:
        """Write the family's graphs into the folder ``out``."""
        ...

    def import_checkpoint(self, checkpoint: Path, name: str, inputs: ConvertInputs, *,
                          state: Mapping[str, Any] | None = None, report: Report = ...) -> InstalledModel:
        """Convert, check the runtime against PyTorch, install as ``name`` (nothing installed on failure)."""
        ...

    def verify(self, name: str, images: Any | None = None) -> dict[str, Any]:
        """Re-run the parity check of an installed model against its source checkpoint."""
        ...

    def random_checkpoint(self, family: Family, path: Path, *, num_tags: int = 40, seed: int = 0) -> Path:
        """A tiny random-weight checkpoint in the official file format (tests, benchmarks)."""
        ...
