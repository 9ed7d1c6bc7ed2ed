"""Which model a run uses, and its tagger: the model's tags plus the library's custom ones, opened
only when a photo first needs it (:class:`OnDemand`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ramcli.config import default_model_name
from ramcli.errors import ModelNotFound
from ramcli.models import store
from ramcli.models.families import family_of
from ramcli.runtime import taggers
from ramcli.runtime.engine import EngineOptions
from ramcli.runtime.tagging import Tagger
from ramcli.runtime.vocabulary import Vocabulary

Report = Callable[[str], None]


def resolve_model(name: str | None, *, download: bool, report: Report) -> store.InstalledModel:
    """The installed model to run; pulls a known one first when allowed (as rclip does)."""
    name = name or default_model_name()
    if store.is_installed(name):
        return store.get(name)
    if not download:
        raise ModelNotFound(f"model {name!r} is not installed",
                            hint=f"run `ramcli models pull {name}`, or `ramcli models import CKPT --name {name}` "
                                 "for a checkpoint you already have")
    from ramcli.models.download import pull

    return pull(name, report, note=f"model {name} is not installed yet: downloading and converting it once")


def open_tagger(model: store.InstalledModel, opts: EngineOptions | None = None,
                index_file: Path | None = None, caption_tags: list[str] | None = None,
                batch_size: int = 1) -> Tagger:
    """The model's tags plus the custom ones (and minus the disabled ones) of the index at ``index_file``,
    with the thresholds `ramcli tags calibrate` fitted there in place of the shipped ones
    (``runtime.taggers.open_tagger`` for the rest: captioning families, side-by-side batches)."""
    vocab = None
    if index_file is not None and index_file.exists() and family_of(model).takes_custom_tags:
        from ramcli.index import open_index
        from ramcli.vocab import custom

        ix = open_index(index_file)
        try:
            vocab = Vocabulary.builtin(model).with_custom(custom.load(ix), custom.disabled(ix)) \
                .with_thresholds(ix.calibrated(model.name))
        finally:
            ix.close()
    return taggers.open_tagger(model, opts, vocab=vocab, caption_tags=caption_tags, batch_size=batch_size)


class OnDemand:
    """A run's tagger, opened the first time a photo needs the model.

    Loading the model (onnxruntime sessions, and on first use a download) is most of a no-change
    re-run's time; a run whose every photo is unchanged or a remembered failure, or which stops early
    (another run holds the index), never needs it. What the stages ask before any photo does — the
    model's name — comes from the installed model's manifest instead.
    """

    def __init__(self, model: store.InstalledModel, open_: Callable[[], Any]) -> None:
        self.model = model
        self._open = open_
        self._tagger: Any = None

    @classmethod
    def ready(cls, tagger: Any) -> OnDemand:
        """A tagger that is open already (bench, scripts): nothing is deferred."""
        handle = cls(tagger.engine.model, lambda: tagger)
        handle._tagger = tagger
        return handle

    @property
    def name(self) -> str:
        return str(self.model.name)

    @property
    def loaded(self) -> bool:
        return self._tagger is not None

    def __call__(self) -> Any:
        """The tagger, opening it (loading the model) on the first call."""
        if self._tagger is None:
            self._tagger = self._open()
        return self._tagger
