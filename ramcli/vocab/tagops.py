"""What `ramcli add-tag` and `ramcli tags ...` do, between the CLI and the index.

Every change to the vocabulary goes the same way: change the definition in the index (marked
pending), then :class:`rescore.Rescore` applies the pending tags to every indexed photo.
A built-in tag switched back on is re-scored the same way, from its own description embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ramcli.errors import RamcliError, UsageError
from ramcli.index import FeedbackRow, Index
from ramcli.models import store
from ramcli.models.families import family_of
from ramcli.vocab import custom
from ramcli.vocab.custom import CustomTag


@dataclass(frozen=True)
class TagSpec:
    """One tag as the user asked for it."""

    name: str
    descriptions: tuple[str, ...] = ()
    threshold: float = custom.DEFAULT_THRESHOLD
    name_zh: str | None = None
    parent: str | None = None


def specs(name: str | None, descriptions: Sequence[str], descriptions_file: Path | None, threshold: float | None,
          name_zh: str | None, parent: str | None) -> list[TagSpec]:
    """The tags an `add-tag` command line means: one NAME, or every tag of a JSON descriptions file."""
    t = custom.DEFAULT_THRESHOLD if threshold is None else threshold
    from_file = custom.read_descriptions_file(descriptions_file) if descriptions_file else {}
    if name is None:
        named = {k: v for k, v in from_file.items() if k}
        if not named:
            raise UsageError("give a tag NAME, or --descriptions-file with a JSON {tag: [descriptions]} list",
                             hint='e.g. ramcli add-tag "black-capped chickadee"')
        if name_zh or parent or descriptions:
            raise UsageError("--zh, --parent and --description need a tag NAME", hint="add the NAME")
        return [TagSpec(custom.clean_name(k), tuple(v), t) for k, v in named.items()]
    clean = custom.clean_name(name)
    extra = from_file.get(name, from_file.get("", [])) if from_file else []
    if from_file and not extra and set(from_file) - {""}:
        raise UsageError(f"{descriptions_file} has no descriptions for {name!r}",
                         hint="leave out NAME to add every tag of the file")
    return [TagSpec(clean, (*descriptions, *extra), t, name_zh, parent)]


def define(index: Index, wanted: list[TagSpec], report: Callable[[str], None] = lambda _m: None) -> list[CustomTag]:
    """Embed and store the tags (all prompts or descriptions in one encoder session)."""
    from ramcli.runtime.textenc import TextEncoder

    enc = require_encoder()
    embed = TextEncoder(enc)
    report(f"embedding {len(wanted)} tag{'s' if len(wanted) != 1 else ''} with {enc.name}")
    return [custom.upsert(index, s.name, custom.label_embeds(s.name, s.descriptions, embed),
                          descriptions=s.descriptions, threshold=s.threshold, name_zh=s.name_zh, parent=s.parent,
                          encoder=enc.name) for s in wanted]


@dataclass
class Imported:
    """What `ramcli tags import` brought: tags to apply, and verdicts (with the images they touch)."""

    tags: list[CustomTag]
    verdicts: list[FeedbackRow]


def import_vocabulary(index: Index, path: Path, report: Callable[[str], None] = lambda _m: None) -> Imported:
    """Tags from `ramcli tags export`: their embeddings are used as they are when they were made by the
    installed encoder, else computed again here. Verdicts come in as source "import" and never replace
    one this index has; calibrated thresholds replace this index's for the same model and tag."""
    doc = custom.read_vocabulary(path)
    tags = custom.vocabulary_tags(doc, path)
    verdicts, thresholds = custom.vocabulary_feedback(doc, path)
    enc = store.find_family("clip_text", preferred="clip_vit_b16_text")
    out, todo = [], []
    for t in tags:
        if t.embeds is not None and (enc is None or t.encoder in ("", enc.name)):
            out.append(custom.upsert(index, t.name, t.embeds, descriptions=t.descriptions, threshold=t.threshold,
                                     name_zh=t.name_zh, parent=t.parent, encoder=t.encoder))
        else:
            todo.append(TagSpec(t.name, t.descriptions, t.threshold, t.name_zh, t.parent))
    if todo:
        out += define(index, todo, report)
    for name in doc.get("disabled", []):
        custom.set_disabled(index, str(name), True)
    with index.transaction():
        given = index.put_feedback(verdicts)
        for r in given:
            if r.verdict == "reject":
                index.drop_tag_named(r.hash, r.tag)
        index.put_thresholds(thresholds)
    return Imported(out, given)


def main_model(index: Index, name: str | None = None) -> store.InstalledModel:
    """The model whose built-in tags are listed: ``name``, else the one that tagged most photos."""
    names = [name] if name else [m for m, _ in index.models()]
    for n in names:
        if store.is_installed(n) and family_of(store.get(n)).takes_custom_tags:
            return store.get(n)
    raise RamcliError("no indexed photo was tagged by an installed RAM++ or RAM model",
                      hint="run `ramcli tag ~/Photos` first")


def photo_counts(index: Index) -> dict[str, int]:
    return index.tag_photo_counts()


def listing(index: Index, model: store.InstalledModel | None, *, custom_only: bool) -> list[dict[str, Any]]:
    counts = photo_counts(index)
    tags = custom.load(index)
    rows = [{"source": "custom", **t.as_dict(photos=counts.get(t.name, 0))} for t in tags]
    if custom_only or model is None:
        return rows
    off = custom.disabled(index)
    shadowed = {t.name.casefold() for t in tags}
    zh = model.tag_names_zh or []
    thresholds = model.thresholds
    for i, name in enumerate(model.tag_names):
        state = "disabled" if name in off else "shadowed" if name.casefold() in shadowed else "on"
        rows.append({"source": "builtin", "index": i, "name": name, "name_zh": zh[i].strip() if i < len(zh) else None,
                     "threshold": round(float(thresholds[i]), 4), "state": state, "photos": counts.get(name, 0)})
    return rows


def verdicts(index: Index, tags: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The user's verdicts (all, or on ``tags``), by tag: where each photo is now (its first indexed path;
    where it was when judged if the index has none now), confirm | reject, who said it (cli, file, import)."""
    out = []
    for r in index.feedback_rows(list(tags) or None):
        now = index.paths_with_hash(r.hash)
        out.append({"tag": r.tag, "verdict": r.verdict, "source": r.source, "path": now[0] if now else r.path,
                    "indexed": bool(now), "hash": r.hash, "at": r.at})
    return out


def show(index: Index, name: str, model: store.InstalledModel | None) -> dict[str, Any]:
    for row in listing(index, model, custom_only=model is None):
        if row["name"] == name:
            return row
    raise RamcliError(f"there is no tag {name!r}", hint="`ramcli tags list` shows them")


def builtin_as_custom(model: store.InstalledModel, name: str, index: Index | None = None) -> CustomTag:
    """A built-in tag in the shape re-scoring takes (its own index, embeddings and threshold: the one
    `ramcli tags calibrate` fitted, when ``index`` has one, else the model's)."""
    try:
        i = model.tag_names.index(name)
    except ValueError:
        raise RamcliError(f"{model.name} has no built-in tag {name!r}", hint="`ramcli tags list` shows them") from None
    per = int(model.meta["descriptions_per_tag"])
    embeds = np.asarray(model.label_embed().reshape(model.num_tags, per, -1)[i], dtype=np.float32)
    zh = model.tag_names_zh
    threshold = (index.calibrated(model.name) if index is not None else {}).get(name, float(model.thresholds[i]))
    return CustomTag(-i, name, zh[i] if zh else None, None, threshold, (), embeds, "", False)


def tag_for(index: Index, name: str, model: store.InstalledModel) -> CustomTag | None:
    """A custom tag or one of the model's, in the shape re-scoring takes; None for a name neither has."""
    tag = custom.get(index, name)
    if tag is not None:
        return tag
    return builtin_as_custom(model, name, index) if name in model.tag_names else None


def orphans(index: Index) -> list[int]:
    """Custom tag indices still in ``image_tags`` whose definition is gone (an interrupted remove)."""
    return index.orphan_custom_indices()


def pending(index: Index) -> list[CustomTag]:
    return [t for t in custom.load(index) if t.dirty]


def require_encoder() -> store.InstalledModel:
    enc = store.find_family("clip_text", preferred="clip_vit_b16_text")
    if enc is None:
        raise RamcliError("custom tags need the CLIP text encoder, which is not installed",
                          hint="run `ramcli models pull clip_vit_b16_text` (or `ramcli models import FILE`)")
    return enc
