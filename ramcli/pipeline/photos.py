"""Photos -> tags: decode (threads; Pillow releases the GIL) overlapped with batched inference.

Every photo yields exactly one :class:`PhotoResult`, in input order, either with tags or with
the one-line error that explains why not; one bad file never stops the run.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ramcli.config import default_model_name
from ramcli.errors import ImageError, ModelNotFound, printable
from ramcli.models import store
from ramcli.models.families import family_of
from ramcli.runtime.engine import Engine, EngineOptions, for_batches
from ramcli.runtime.images import Preprocess, decode_error, load_input
from ramcli.runtime.tagging import Selection, Tag, Tagger
from ramcli.runtime.vocabulary import Vocabulary

Report = Callable[[str], None]


@dataclass
class PhotoResult:
    path: Path
    model: str
    tags: list[Tag] = field(default_factory=list)
    size: tuple[int, int] | None = None
    error: str | None = None
    caption: str | None = None  # Tag2Text

    def as_dict(self) -> dict[str, object]:
        if self.error is not None:
            return {"path": printable(self.path), "model": self.model, "error": self.error}
        d: dict[str, object] = {"path": printable(self.path), "model": self.model,
                                "tags": [t.as_dict() for t in self.tags]}
        if self.caption is not None:
            d["caption"] = self.caption
        return d


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

    report(f"model {name} is not installed yet: downloading and converting it once")
    return pull(name, report)


def open_tagger(model: store.InstalledModel, opts: EngineOptions | None = None,
                index_file: Path | None = None, caption_tags: list[str] | None = None,
                batch_size: int = 1) -> Tagger:
    """The model's tags plus the custom ones (and minus the disabled ones) of the index at ``index_file``.
    Tag2Text gets its captioning runtime behind the same interface (``caption_tags``: the user's guide).
    ``batch_size``: the images per `Tagger.infer` call to come, which on the CPU run side by side
    (engine.for_batches)."""
    opts = opts or EngineOptions()
    if family_of(model).captions:
        from ramcli.runtime.caption import CaptionTagger, Tag2Text

        return CaptionTagger(Tag2Text(model, opts), caption_tags)  # type: ignore[return-value]
    opts = for_batches(opts, batch_size)
    vocab = Vocabulary.builtin(model)
    if index_file is not None and index_file.exists() and family_of(model).takes_custom_tags:
        from ramcli.index import open_index
        from ramcli.vocab import custom

        ix = open_index(index_file)
        try:
            vocab = vocab.with_custom(custom.load(ix), custom.disabled(ix))
        finally:
            ix.close()
    return Tagger(Engine(model, opts), vocab)


def _decode(path: Path, pre: Preprocess) -> tuple[np.ndarray, tuple[int, int]] | ImageError:
    try:
        return load_input(path, pre)
    except ImageError as err:
        return err
    except Exception as err:  # a decoder bug must not end the run
        return decode_error(err, path)


def tag_photos(paths: Iterable[Path], tagger: Tagger, selection: Selection, *,
               batch_size: int = 4, workers: int | None = None) -> Iterator[PhotoResult]:
    """Yield one result per path, in order; decoding runs ahead of inference by two batches."""
    name = tagger.engine.model.name
    pre = tagger.engine.preprocess
    workers = workers or max(1, min(4, os.cpu_count() or 1))  # each holds one full-size decode in memory
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending: deque[tuple[Path, Future]] = deque()
        it = iter(paths)

        def fill() -> None:
            while len(pending) < batch_size * 2:
                try:
                    p = next(it)
                except StopIteration:
                    return
                pending.append((p, pool.submit(_decode, p, pre)))

        fill()
        while pending:
            batch: list[tuple[Path, np.ndarray, tuple[int, int]]] = []
            errors: list[PhotoResult] = []
            order: list[Path] = []
            while pending and len(batch) < batch_size:
                p, fut = pending.popleft()
                order.append(p)
                got = fut.result()
                if isinstance(got, ImageError):
                    errors.append(PhotoResult(p, name, error=str(got)))
                else:
                    batch.append((p, got[0], got[1]))
            fill()
            done: dict[Path, PhotoResult] = {r.path: r for r in errors}
            if batch:
                embeds, logits = tagger.infer(np.stack([x for _, x, _ in batch]))
                captions = tagger.captions(embeds, logits)
                for (p, _, size), row, caption in zip(batch, logits, captions, strict=True):
                    done[p] = PhotoResult(p, name, tagger.tags(row, selection), size=size, caption=caption)
            for p in order:
                yield done[p]
