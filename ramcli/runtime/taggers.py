"""A model's runtime tagger, chosen by its family: Tag2Text's captioner or the RAM/RAM++ tag head.

Below the pipeline (which adds a library's custom tags) so that agreement measurements
(``models.quantize``) can open the model's own tagger without reaching up into the pipeline.
"""

from __future__ import annotations

from dataclasses import replace

from ramcli.models import store
from ramcli.models.families import family_of
from ramcli.runtime.backends import choose
from ramcli.runtime.engine import Engine, EngineOptions, for_batches, resolve_precision
from ramcli.runtime.tagging import Tagger
from ramcli.runtime.vocabulary import Vocabulary


def open_tagger(model: store.InstalledModel, opts: EngineOptions | None = None, *, vocab: Vocabulary | None = None,
                caption_tags: list[str] | None = None, batch_size: int = 1) -> Tagger:
    """The family's tagger over ``vocab`` (default: the model's built-in tags). A captioning family
    gets its captioning runtime behind the same interface (``caption_tags``: the user's guide).
    ``batch_size``: the images per `Tagger.infer` call to come, which on the CPU run side by side
    (engine.for_batches)."""
    opts = resolve_precision(model, opts or EngineOptions())
    if family_of(model).captions:
        from ramcli.runtime.caption import CaptionTagger, Tag2Text

        if opts.backend == "openvino" or opts.screen:
            from ramcli.errors import RamcliError

            raise RamcliError(f"{'--backend openvino' if opts.backend == 'openvino' else '--screen'} is for RAM and "
                              f"RAM++; {model.name} ({model.family}) runs on onnxruntime with every tag",
                              hint="leave the option out for this model")
        opts = replace(opts, backend="onnxruntime")

        return CaptionTagger(Tag2Text(model, opts), caption_tags)  # type: ignore[return-value]
    opts = for_batches(opts, batch_size)
    if opts.backend == "auto":  # measured once per machine, model and threads
        opts = replace(opts, backend=choose(model, opts))
    return Tagger(Engine(model, opts), vocab or Vocabulary.builtin(model))
