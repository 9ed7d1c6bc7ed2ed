"""Which model a run uses, and its tagger: the model's tags plus the library's custom ones, opened
only when a photo first needs it (:class:`OnDemand`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class LibraryVocab:
    """What a library's index adds to its model's built-in tags: custom tags, disabled tags, calibrated
    thresholds. Kept apart from the built-in vocabulary (full RAM++: ~480 MB of label embeddings) because it
    is small: a Ray worker gets this and rebuilds the same vocabulary from its own copy of the model."""

    custom: tuple[Any, ...] = ()  # vocab.custom.CustomTag
    disabled: frozenset[str] = frozenset()
    calibrated: tuple[tuple[str, float], ...] = ()

    @classmethod
    def read(cls, model: store.InstalledModel, index_file: Path | None) -> LibraryVocab | None:
        """The index's additions, or None where there is no index or the family takes no custom tags."""
        if index_file is None or not index_file.exists() or not family_of(model).takes_custom_tags:
            return None
        from ramcli.index import open_index
        from ramcli.vocab import custom

        ix = open_index(index_file)
        try:
            return cls(tuple(custom.load(ix)), frozenset(custom.disabled(ix)),
                       tuple(sorted(ix.calibrated(model.name).items())))
        finally:
            ix.close()

    def vocabulary(self, model: store.InstalledModel) -> Vocabulary:
        return Vocabulary.builtin(model).with_custom(self.custom, self.disabled) \
            .with_thresholds(dict(self.calibrated))


def open_tagger(model: store.InstalledModel, opts: EngineOptions | None = None,
                index_file: Path | None = None, caption_tags: list[str] | None = None,
                batch_size: int = 1, *, library: LibraryVocab | None = None) -> Tagger:
    """The model's tags plus the custom ones (and minus the disabled ones) of the index at ``index_file``,
    with the thresholds `ramcli tags calibrate` fitted there in place of the shipped ones
    (``runtime.taggers.open_tagger`` for the rest: captioning families, side-by-side batches).
    ``library``: those additions already read (a Ray worker has no index file)."""
    extra = library if library is not None else LibraryVocab.read(model, index_file)
    vocab = extra.vocabulary(model) if extra is not None else None
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
