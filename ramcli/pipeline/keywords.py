"""The keyword-sync stage: which names a photo's tags become, and making its file carry them.

`ramcli tag` (the write sink), re-scoring (`add-tag`, `tags apply`, threshold changes) and `untag`
all change what ramcli wrote into a photo through :class:`KeywordSync`, so the rules live once:

* ``--lang``: a tag's keyword is its English name, its Chinese name (where the model has one) or
  both — :func:`keywords`, the only place that decides it;
* only keywords ramcli itself added are ours: a keyword the user already had (in any letter case)
  is never claimed, so `untag` leaves it;
* where they go: the run's storage (embedded or which sidecar) for a new write, the storage
  recorded in the index for a later change to the same photo.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ramcli import metadata
from ramcli.errors import ImageError, RamcliError, first_line

if TYPE_CHECKING:
    from ramcli.index import PhotoRow
    from ramcli.pipeline.journal import Journal
    from ramcli.runtime.vocabulary import Vocabulary

LANGS = ("en", "zh", "both")


def keywords(tags: Sequence[tuple[int, str]], zh: Mapping[int, str], lang: str) -> list[str]:
    """Keywords for (tag index, English name) pairs in ``lang``: en, zh (the Chinese name where the
    tag has one) or both (English, then Chinese)."""
    if lang == "en":
        return [n for _, n in tags]
    out: list[str] = []
    for i, name in tags:
        local = zh.get(i)
        out += [local or name] if lang == "zh" else [name, *([local] if local else [])]
    return list(dict.fromkeys(out))


def zh_names(pairs: Iterable[tuple[int, str | None]]) -> dict[int, str]:
    """Tag index -> Chinese name, from (tag index, Chinese name or None) pairs; blank names are none."""
    return {i: z.strip() for i, z in pairs if z and z.strip()}


def vocab_zh(vocab: Vocabulary) -> dict[int, str]:
    """:func:`zh_names` of a tagger's vocabulary (built-in and custom tags; Tag2Text has none)."""
    names = getattr(vocab, "names_zh", None) or []
    return zh_names((vocab.tag_id(p), z) for p, z in enumerate(names))


def storage_options(storage: str, base: metadata.WriteOptions) -> metadata.WriteOptions:
    """The write options that reach where a photo's keywords were put (its own file or which sidecar)."""
    if storage.startswith("sidecar-"):
        return replace(base, sidecar=True, sidecar_name=storage.removeprefix("sidecar-"))
    return replace(base, sidecar=False)


def one_line(err: Exception, path: Path) -> str:
    """The one line a failed write of ``path`` reports."""
    if isinstance(err, RamcliError):
        return str(err)
    msg = getattr(err, "strerror", None) or first_line(err)
    return str(RamcliError(msg, path=path))


@dataclass(frozen=True)
class Synced:
    """What a photo's file carries from ramcli after a sync (what the index records)."""

    written: list[str]  # our keywords in the file
    storage: str  # "embed", "sidecar-ext", "sidecar-stem"; "" for a photo indexed with --no-write
    caption: str | None  # the caption of ours in the file
    changed: bool = False  # whether the file was rewritten
    rejected: tuple[str, ...] = ()  # keywords the file refuses (the user's rejections, see metadata)
    theirs: tuple[str, ...] = ()  # the user's own keywords in the file (a tag name among them: a confirmation)


class KeywordSync:
    """Brings one photo's file to a set of keywords (and a caption), recording only what is ours.

    ``write=False`` (`--no-write`): files keep whatever ramcli wrote earlier, where it wrote it.
    """

    def __init__(self, options: metadata.WriteOptions, *, write: bool = True,
                 overwrite_description: bool = False, journal: Journal | None = None, model: str | None = None) -> None:
        self.options = options
        self.write = write
        self.overwrite_description = overwrite_description
        self.journal = journal  # the index's write-ahead journal (None: a dry run or a test without an index)
        self.model = model  # named in ramcli's record in each file

    def settle(self) -> None:
        """Inside the transaction committing the synced photos' rows (see ``journal``)."""
        if self.journal is not None:
            self.journal.settle()

    def sync(self, path: Path, names: list[str], row: PhotoRow | None, caption: str | None = None, *,
             where_recorded: bool = False, reject: Sequence[str] = (), accept: Sequence[str] = ()) -> Synced:
        """Make ``path`` carry ``names`` instead of what ``row`` says ramcli wrote before.

        ``row``: what the index knew of this path (or of the path it moved from). ``where_recorded``:
        write where the row says the keywords are (re-scoring), not where this run's options would
        put new ones; a photo indexed with `--no-write` then stays untouched (its keywords are not ours).
        ``caption`` None leaves descriptions alone. ``reject`` / ``accept``: keywords the index's verdicts
        refuse / allow again, carried into the file's record (``metadata.write_keywords``).
        """
        previous = row.written if row is not None else []
        before = row.written_caption if row is not None else None
        storage = row.storage if row is not None else ""
        if not self.write or (where_recorded and not storage):
            return Synced(previous, storage, before)
        opts = storage_options(storage, self.options) if where_recorded else self.options
        result = metadata.write_keywords(path, names, previous, opts, caption=caption, previous_caption=before,
                                         overwrite_description=self.overwrite_description, model=self.model,
                                         journal=self.journal, rejected=reject, accepted=accept)
        verdicts = (tuple(result.rejected), tuple(result.theirs))
        if where_recorded:
            return Synced(result.ours, storage, before, result.changed, *verdicts)
        written_caption = result.caption_ours if caption is not None else before
        return Synced(result.ours, result.storage, written_caption, result.changed, *verdicts)

    def forget(self, gone: Path) -> list[Path]:
        """A photo that moved away or was deleted: its sidecars keep none of ramcli's keywords (``untag`` could
        not find them any more: it walks photos). Nothing is done with ``--no-write``; a sidecar that cannot
        be changed is left as it is (the run is not the place to fail for it)."""
        if not self.write:
            return []
        try:
            return metadata.forget_sidecars(gone, journal=self.journal)
        except (RamcliError, OSError):
            return []

    def remove(self, path: Path, row: PhotoRow | None = None) -> str | None:
        """`untag`: remove what ramcli wrote into ``path``; returns how: "restored" (byte for byte, from the
        journal's recipe), "untagged" (ramcli's fields removed), or None (nothing of ramcli's was there).

        Every place ramcli may have written is looked at (the photo, both sidecar namings), and the file's
        own record says what is ramcli's, so this works with a lost or different index too; ``row`` (the
        index's memory) is the fallback for files written before records existed.
        """
        if not self.write or not path.exists():
            return "untagged" if row is not None else None
        if self.journal is not None and self.journal.restore(path):
            return "restored"
        changed = False
        for storage in places(path):
            recorded = row is not None and storage == (row.storage or "embed")
            try:
                result = metadata.remove_keywords(path, row.written if recorded and row else [],
                                                  storage_options(storage, self.options),
                                                  previous_caption=row.written_caption if recorded and row else None,
                                                  journal=self.journal)
            except ImageError:
                if recorded or storage == "embed":
                    raise
                # Another app's sidecar that exiv2 cannot parse: ramcli writes only sidecars that read back,
                # so none of ours is in it, and the photo's other places are still untagged.
                continue
            changed = changed or result.changed
        return "untagged" if changed or row is not None else None


def places(path: Path) -> list[str]:
    """Where ramcli may have written ``path``'s keywords: the photo itself (when it can be), and each
    sidecar naming that exists."""
    found = []
    if metadata.storage_for(path, metadata.WriteOptions()) == "embed":
        found.append("embed")
    for naming in ("ext", "stem"):
        if metadata.sidecar_path(path, metadata.WriteOptions(sidecar_name=naming)).is_file():
            found.append(f"sidecar-{naming}")
    return found
