"""The user's own tags (`ramcli add-tag`): definitions kept in the index, label embeddings from CLIP.

RAM++ queries its tag head with CLIP text embeddings, so a tag it was never trained on is one
more query (open-set recognition). How a custom tag's label embedding is made:

* **A name only:** the normalised mean of the name's CLIP embeddings over the reference's
  prompt templates (``openset.prompts``): one embedding, D = 1.
* **Descriptions** (``--description``, or the authors' LLM description files): one embedding per
  description, D = len(descriptions), weighted per image by RAM++'s softmax over their
  similarity to the image, exactly as the built-in tags' 51 descriptions are.

A custom tag's rows in ``image_tags`` carry ``tag_index = -id``, so they never collide with a
built-in tag's index, and removing one custom tag never renumbers another. A custom tag named
like a built-in one *shadows* it (the built-in one is no longer reported); ``ramcli tags
disable`` switches a built-in tag off without a replacement.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ramcli.errors import RamcliError, first_line
from ramcli.index import EMBED_DIM, CustomTagRow, FeedbackRow, Index, ThresholdRow
from ramcli.vocab.openset import Embed, mean_embedding, prompts

DEFAULT_THRESHOLD = 0.5  # the reference's choice for tags the model was not trained on
EXPORT_FORMAT = "ramcli-vocabulary"
EXPORT_VERSION = 1


@dataclass(frozen=True)
class CustomTag(CustomTagRow):
    """A custom tag as the vocabulary uses it: the index's row, plus its place among tag indices."""

    @property
    def tag_index(self) -> int:
        return -self.id

    def as_dict(self, *, photos: int | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "name_zh": self.name_zh, "parent": self.parent,
                             "threshold": self.threshold, "descriptions": list(self.descriptions),
                             "embeddings": int(self.embeds.shape[0]), "encoder": self.encoder,
                             "pending": self.dirty}
        if photos is not None:
            d["photos"] = photos
        return d


def clean_name(name: str) -> str:
    text = " ".join(name.split())
    if not text:
        raise RamcliError("a tag name cannot be empty", hint='e.g. ramcli add-tag "black-capped chickadee"')
    if any(c in text for c in "|;\x00"):
        raise RamcliError(f"tag name {text!r} contains | or ;, which photo apps use as separators",
                          hint="choose a name without them")
    return text


def label_embeds(name: str, descriptions: Iterable[str], embed: Embed) -> np.ndarray:
    """(D, 512) label embeddings: one per description, or the prompt-template mean (D = 1)."""
    texts = [d.strip() for d in descriptions if d.strip()]
    if texts:
        rows = embed(texts).astype(np.float32)
        return rows / np.linalg.norm(rows, axis=-1, keepdims=True)
    return mean_embedding(embed(prompts(name)))[None]


# --------------------------------------------------------------------------------- storage


def _tag(r: CustomTagRow) -> CustomTag:
    return CustomTag(**{f.name: getattr(r, f.name) for f in fields(r)})


def load(index: Index) -> list[CustomTag]:
    return [_tag(r) for r in index.custom_tags()]


def ancestry(index: Index) -> dict[str, tuple[str, ...]]:
    """Each custom tag's broader tags, outermost first, for the hierarchical keyword storages
    (``metadata.WriteOptions.ancestry``): a parent that is itself a custom tag brings its own
    parent, and so on (a cycle ends where a name repeats). Keyed by the English and the Chinese
    name, whichever the keywords use."""
    tags = load(index)
    parents = {t.name: t.parent for t in tags if t.parent}
    out: dict[str, tuple[str, ...]] = {}
    for t in tags:
        chain: list[str] = []
        seen, up = {t.name}, t.parent
        while up and up not in seen:
            chain.append(up)
            seen.add(up)
            up = parents.get(up)
        if chain:
            for key in (t.name, t.name_zh):
                if key:
                    out[key] = tuple(reversed(chain))
    return out


def get(index: Index, name: str) -> CustomTag | None:
    row = index.custom_tag(name)
    return None if row is None else _tag(row)


def require(index: Index, name: str) -> CustomTag:
    tag = get(index, name)
    if tag is None:
        raise RamcliError(f"there is no custom tag {name!r}", hint="`ramcli tags list --custom` shows them")
    return tag


def disabled(index: Index) -> set[str]:
    return index.disabled_tags()


def upsert(index: Index, name: str, embeds: np.ndarray, *, descriptions: Iterable[str] = (),
           threshold: float = DEFAULT_THRESHOLD, name_zh: str | None = None, parent: str | None = None,
           encoder: str = "") -> CustomTag:
    """Create or redefine ``name`` (same id when it exists); marked pending until applied."""
    if not 0.0 < threshold < 1.0:
        raise RamcliError(f"threshold {threshold} is not between 0 and 1", hint="e.g. --threshold 0.5")
    vectors = np.ascontiguousarray(embeds, dtype=np.float32).reshape(-1, EMBED_DIM)
    with index.transaction():
        index.put_custom_tag(name, vectors, descriptions=[d.strip() for d in descriptions if d.strip()],
                             threshold=threshold, name_zh=name_zh, parent=parent, encoder=encoder)
        index.forget_thresholds(name)  # a threshold given by hand replaces a calibrated one
    return require(index, name)


def set_threshold(index: Index, name: str, threshold: float) -> CustomTag:
    tag = require(index, name)
    return upsert(index, name, tag.embeds, descriptions=tag.descriptions, threshold=threshold,
                  name_zh=tag.name_zh, parent=tag.parent, encoder=tag.encoder)


def mark_applied(index: Index, ids: Iterable[int]) -> None:
    with index.transaction():
        index.mark_custom_applied(ids)


def remove(index: Index, name: str) -> CustomTag:
    """Forget the definition; the caller then removes its rows and keywords (``rescore.apply``)."""
    tag = require(index, name)
    with index.transaction():
        index.delete_custom_tag(tag.id)
    return tag


def set_disabled(index: Index, name: str, off: bool) -> None:
    with index.transaction():
        index.set_tag_disabled(name, off)


# ----------------------------------------------------------------------------- files


def read_descriptions_file(path: Path) -> dict[str, list[str]]:
    """Tag -> descriptions from a file: the authors' JSON (a list of ``{tag: [descriptions]}``), a JSON
    object ``{tag: [descriptions]}``, or plain text with one description per line (tag: none, "")."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RamcliError(f"cannot read the descriptions file ({err})", path=path,
                          hint="give a UTF-8 JSON or text file") from None
    if path.suffix.lower() != ".json":
        return {"": [line.strip() for line in text.splitlines() if line.strip()]}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise RamcliError(f"is not valid JSON ({err.msg}, line {err.lineno})", path=path,
                          hint='expected [{"tag": ["description", ...]}, ...]') from None
    items = data if isinstance(data, list) else [data]
    out: dict[str, list[str]] = {}
    for item in items:
        if not isinstance(item, dict):
            raise RamcliError("is not a list of {tag: [descriptions]} objects", path=path,
                              hint="use the authors' *_llm_tag_descriptions.json format")
        for tag, descs in item.items():
            if not isinstance(descs, list) or not all(isinstance(d, str) for d in descs):
                raise RamcliError(f"tag {tag!r} has no list of description strings", path=path,
                                  hint='expected {"tag": ["description", ...]}')
            out.setdefault(str(tag), []).extend(descs)
    return out


def export_vocabulary(index: Index, path: Path) -> int:
    """Write every custom tag (with its embeddings), the disabled built-ins, the user's verdicts and the
    calibrated thresholds to a JSON file. A verdict names its photo by image hash, which a copy of the
    photo on another machine shares (its path is kept for people to read)."""
    tags = load(index)
    doc = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION,
           "tags": [{**{k: v for k, v in t.as_dict().items() if k not in {"embeddings", "pending"}},
                     "embeds": base64.b64encode(t.embeds.astype("<f4").tobytes()).decode("ascii")} for t in tags],
           "disabled": sorted(disabled(index)),
           "feedback": [{"hash": r.hash, "tag": r.tag, "verdict": r.verdict, "source": r.source, "path": r.path,
                         "at": r.at} for r in index.feedback_rows()],
           "thresholds": [{"model": r.model, "tag": r.tag, "threshold": r.threshold, "official": r.official,
                           "confirmed": r.confirmed, "rejected": r.rejected} for r in index.threshold_rows()]}
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    return len(tags)


def read_vocabulary(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise RamcliError(f"cannot read the vocabulary ({first_line(err)})", path=path,
                          hint="give a file written by `ramcli tags export`") from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise RamcliError("is not a ramcli vocabulary", path=path, hint="give a file written by `ramcli tags export`")
    version = doc.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise RamcliError(f"has a version that is not a whole number: {version!r}", path=path,
                          hint="give a file written by `ramcli tags export`")
    if version > EXPORT_VERSION:
        raise RamcliError(f"is vocabulary version {version}, newer than this ramcli", path=path,
                          hint="upgrade ramcli")
    return doc


@dataclass(frozen=True)
class ImportedTag:
    """One tag of an exported vocabulary, checked: ``embeds`` None means embed its text again here."""

    name: str
    descriptions: tuple[str, ...]
    threshold: float
    name_zh: str | None
    parent: str | None
    encoder: str
    embeds: np.ndarray | None


def vocabulary_tags(doc: dict[str, Any], path: Path) -> list[ImportedTag]:
    """Every tag of ``doc`` (from :func:`read_vocabulary`), each field checked before anything is written.

    Why all first: an import that stopped at its tenth tag would leave nine in the library; a file
    someone edited by hand (or cut short) is refused whole, in one line naming the tag and the field.
    """
    tags = doc.get("tags", [])
    if not isinstance(tags, list):
        raise RamcliError('"tags" is not a list', path=path, hint="give a file written by `ramcli tags export`")
    out = []
    for number, entry in enumerate(tags, 1):
        def bad(what: str, number: int = number, entry: object = entry) -> RamcliError:
            name = entry.get("name") if isinstance(entry, dict) else None
            label = f"tag {number}" + (f" ({name!r})" if isinstance(name, str) else "")
            return RamcliError(f"{label}: {what}", path=path,
                               hint="give a file written by `ramcli tags export`, unchanged")

        if not isinstance(entry, dict):
            raise bad("is not an object")
        name = entry.get("name")
        if not isinstance(name, str):
            raise bad('"name" is missing or not text')
        try:
            clean = clean_name(name)
        except RamcliError as err:
            raise bad(err.message) from None
        descriptions = entry.get("descriptions") or []
        if not isinstance(descriptions, list) or not all(isinstance(d, str) for d in descriptions):
            raise bad('"descriptions" is not a list of texts')
        threshold = entry.get("threshold", DEFAULT_THRESHOLD)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            raise bad(f'"threshold" must be a number from 0 to 1, not {threshold!r}')
        for key in ("name_zh", "parent", "encoder"):
            if entry.get(key) is not None and not isinstance(entry[key], str):
                raise bad(f'"{key}" is not text')
        try:
            embeds = decode_embeds(entry.get("embeds"))
        except ValueError as err:
            raise bad(str(err)) from None
        out.append(ImportedTag(clean, tuple(descriptions), float(threshold), entry.get("name_zh"),
                               entry.get("parent"), entry.get("encoder") or "", embeds))
    disabled = doc.get("disabled", [])
    if not isinstance(disabled, list) or not all(isinstance(n, str) for n in disabled):
        raise RamcliError('"disabled" is not a list of tag names', path=path,
                          hint="give a file written by `ramcli tags export`")
    return out


def vocabulary_feedback(doc: dict[str, Any], path: Path) -> tuple[list[FeedbackRow], list[ThresholdRow]]:
    """The verdicts (as source "import", their time kept) and calibrated thresholds of ``doc``, checked
    whole before anything is written (files from before verdicts existed have none)."""
    def bad(what: str) -> RamcliError:
        return RamcliError(what, path=path, hint="give a file written by `ramcli tags export`, unchanged")

    verdicts, thresholds = doc.get("feedback", []), doc.get("thresholds", [])
    if not isinstance(verdicts, list) or not isinstance(thresholds, list):
        raise bad('"feedback" or "thresholds" is not a list')
    rows = []
    for n, e in enumerate(verdicts, 1):
        if not (isinstance(e, dict) and all(isinstance(e.get(k), str) for k in ("hash", "tag", "verdict"))
                and e["verdict"] in ("confirm", "reject")):
            raise bad(f"verdict {n}: needs text hash and tag, and verdict confirm or reject")
        rows.append(FeedbackRow(e["hash"], e["tag"], e["verdict"], "import",
                                e.get("path") if isinstance(e.get("path"), str) else None,
                                e.get("at") if isinstance(e.get("at"), str) else None))
    fitted = []
    for n, e in enumerate(thresholds, 1):
        t = e.get("threshold") if isinstance(e, dict) else None
        if not (isinstance(e, dict) and isinstance(e.get("model"), str) and isinstance(e.get("tag"), str)
                and isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t <= 1):
            raise bad(f"threshold {n}: needs text model and tag, and a threshold from 0 to 1")
        fitted.append(ThresholdRow(e["model"], e["tag"], float(t), float(e.get("official") or 0.0),
                                   int(e.get("confirmed") or 0), int(e.get("rejected") or 0)))
    return rows, fitted


def decode_embeds(raw: object) -> np.ndarray | None:
    """``embeds`` of an exported tag: base64 of little-endian float32 rows of EMBED_DIM; None when
    absent. A ValueError says what is wrong (not base64, a length that is no whole row, NaN)."""
    if not raw:
        return None
    if not isinstance(raw, str):
        raise ValueError('"embeds" is not base64 text')
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError('"embeds" is not valid base64') from None
    row = EMBED_DIM * 4
    if not data or len(data) % row:
        raise ValueError(f'"embeds" holds {len(data)} bytes, not whole embeddings of {EMBED_DIM} float32 numbers '
                         f"({row} bytes each)")
    embeds = np.frombuffer(data, dtype="<f4").astype(np.float32).reshape(-1, EMBED_DIM)
    if not np.isfinite(embeds).all():
        raise ValueError('"embeds" holds numbers that are not finite (NaN or infinity)')
    return embeds
