"""`ramcli search`: free-text, open-set search over the index. The one place ranking is decided.

The formula (README, "How search ranks"):

1. **Tag matches.** Word n-grams of the query (and substrings, for Chinese names) that are tag
   names of the model's vocabulary. A photo's *hits* = how many matched tags it carries.
2. **CLIP.** The query embedded by the CLIP ViT-B/16 text encoder (cached in the index) against
   every photo's stored CLS embedding, which RAM++ distilled into CLIP space: cosine ``clip``.
3. **Re-rank.** The ``rerank`` best photos by (hits, clip) are scored by the RAM++ tag head on
   their stored tokens, with the query as an open-set tag: ``rerank = sigmoid(logit)``.

Order: hits (more first); then re-ranked photos by ``rerank``; then the rest by ``clip``. A query
made only of tag names never needs the text encoder: its photos are ordered by hits, then by
the mean stored score of the matched tags. So exact tag hits never lose to CLIP guesses.
The score shown is the one that ordered the photo (``via``: tag, rerank or clip).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import RamcliError
from .index import EMBED_DIM, Index

_WORDS = re.compile(r"[\w'&+-]+")
MAX_NGRAM = 5


@dataclass(frozen=True)
class SearchOptions:
    limit: int = 20
    min_score: float | None = None
    under: tuple[Path, ...] = ()
    since: str | None = None  # ISO date/time prefix compared with the EXIF capture time
    until: str | None = None
    tags: tuple[str, ...] = ()  # photos must carry all of these
    not_tags: tuple[str, ...] = ()  # and none of these
    rerank: int = 100  # candidates re-scored by the tag head


@dataclass
class Hit:
    path: str
    score: float
    via: str  # tag | rerank | clip | like
    hits: int = 0
    clip: float | None = None
    taken_at: str | None = None
    tags: list[str] = field(default_factory=list)

    def as_dict(self, rank: int) -> dict[str, object]:
        return {"rank": rank, "path": self.path, "score": round(self.score, 6), "via": self.via,
                "tag_hits": self.hits, "clip": None if self.clip is None else round(self.clip, 6),
                "taken_at": self.taken_at, "tags": self.tags}


# ------------------------------------------------------------------------------ tag matching


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold().strip()


@dataclass
class Vocabulary:
    """Tag names for matching: English (and Chinese, mapped to English) -> canonical name."""

    by_name: dict[str, str]
    by_zh: dict[str, str]

    @classmethod
    def build(cls, names: list[str], names_zh: list[str] | None) -> Vocabulary:
        by_name = {_fold(n): n for n in names if n.strip()}
        by_zh = {z.strip(): n for n, z in zip(names, names_zh or [], strict=False) if z and z.strip()}
        return cls(by_name, by_zh)

    def match(self, query: str) -> tuple[list[str], bool]:
        """Tags named in the query (longest phrases first, no overlaps) and whether words are left over."""
        words = _WORDS.findall(_fold(query))
        found: list[str] = []
        covered = [False] * len(words)
        for n in range(min(MAX_NGRAM, len(words)), 0, -1):
            for i in range(len(words) - n + 1):
                if any(covered[i:i + n]):
                    continue
                tag = self.by_name.get(" ".join(words[i:i + n]))
                if tag is not None:
                    found.append(tag)
                    covered[i:i + n] = [True] * n
        rest = query
        for zh in sorted(self.by_zh, key=len, reverse=True):  # Chinese has no spaces: substrings
            if zh in rest:
                found.append(self.by_zh[zh])
                rest = rest.replace(zh, " ")
        leftover = [w for w, c in zip(words, covered, strict=True) if not c and not _has_cjk(w)]
        leftover += [w for w in _WORDS.findall(rest) if _has_cjk(w)]
        return list(dict.fromkeys(found)), bool(leftover)


def _has_cjk(text: str) -> bool:
    return any("\u3400" <= ch <= "\u9fff" for ch in text)


# ---------------------------------------------------------------------------------- search


@dataclass
class Candidates:
    """The filtered photos, as parallel arrays."""

    paths: list[str]
    hashes: list[str]
    taken: list[str | None]
    cls: np.ndarray  # (N, 512) float32, L2-normalised


class Searcher:
    """Everything one search needs; the text encoder and the tag head are loaded only if used."""

    def __init__(self, index: Index, model: str, vocab: Vocabulary, *, encoder_name: str | None = None,
                 text_embed: Callable[[], Callable[[list[str]], np.ndarray]] | None = None,
                 tag_head: Callable[[], Callable[[np.ndarray, np.ndarray], np.ndarray]] | None = None) -> None:
        """``text_embed`` and ``tag_head`` are factories, called only when a query needs them."""
        self.index = index
        self.model = model
        self.vocab = vocab
        self.encoder_name = encoder_name
        self._text_embed = text_embed
        self._tag_head = tag_head

    # ---- data
    def _filters(self, opts: SearchOptions) -> tuple[str, list[object]]:
        """SQL conditions on photos ``p`` and images ``i`` for the user's filters."""
        sql: list[str] = []
        args: list[object] = []
        if opts.under:
            parts = []
            for root in opts.under:
                r = str(root.absolute()).rstrip("/") or "/"
                prefix = r.rstrip("/") + "/"
                parts.append("(p.path = ? or substr(p.path, 1, ?) = ?)")
                args += [r, len(prefix), prefix]
            sql.append("and (" + " or ".join(parts) + ")")
        if opts.since:
            sql.append("and i.taken_at >= ?")
            args.append(opts.since)
        if opts.until:
            sql.append("and i.taken_at < ?")
            args.append(_day_after(opts.until))
        for t in opts.tags:
            sql.append("and exists (select 1 from image_tags t where t.hash = p.hash and t.model = p.model "
                       "and t.tag = ?)")
            args.append(t)
        for t in opts.not_tags:
            sql.append("and not exists (select 1 from image_tags t where t.hash = p.hash and t.model = p.model "
                       "and t.tag = ?)")
            args.append(t)
        return " ".join(sql), args

    def candidates(self, opts: SearchOptions) -> Candidates:
        """The photos passing the filters, with their CLS embeddings."""
        where, args = self._filters(opts)
        rows = self.index.db.execute(
            "select p.path, p.hash, i.taken_at, i.cls from photos p join images i "
            f"on i.hash = p.hash and i.model = p.model where p.model = ? {where} order by p.path",
            [self.model, *args]).fetchall()
        cls = np.frombuffer(b"".join(r[3] for r in rows), dtype=np.float32).reshape(len(rows), EMBED_DIM) \
            if rows else np.zeros((0, EMBED_DIM), np.float32)
        norms = np.linalg.norm(cls, axis=1, keepdims=True)
        return Candidates([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                          cls / np.where(norms == 0, 1, norms))

    def tag_search(self, tags: list[str], opts: SearchOptions) -> list[Hit]:
        """Photos carrying any of ``tags``: more hits first, then the mean stored score. Pure SQL."""
        where, args = self._filters(opts)
        marks = ",".join("?" * len(tags))
        rows = self.index.db.execute(
            "select p.path, p.hash, i.taken_at, count(*) as hits, avg(t.score) as score from photos p "
            "join images i on i.hash = p.hash and i.model = p.model "
            f"join image_tags t on t.hash = p.hash and t.model = p.model and t.tag in ({marks}) "
            f"where p.model = ? {where} group by p.path order by hits desc, score desc, p.path",
            [*tags, self.model, *args]).fetchall()
        out = []
        for path, hash_, taken, hits, score in rows:
            if opts.min_score is not None and score < opts.min_score:
                continue
            out.append(Hit(path, float(score), "tag", int(hits), None, taken, self.top_tags(hash_)))
            if len(out) >= opts.limit:
                break
        return out

    def tag_hits(self, hashes: list[str], tags: list[str]) -> np.ndarray:
        """Per candidate: how many of ``tags`` it carries."""
        hits = np.zeros(len(hashes), np.int32)
        if not tags or not hashes:
            return hits
        pos = {h: i for i, h in enumerate(hashes)}
        marks = ",".join("?" * len(tags))
        for (h,) in self.index.db.execute(
                f"select hash from image_tags where model = ? and tag in ({marks})", [self.model, *tags]):
            i = pos.get(h)
            if i is not None:
                hits[i] += 1
        return hits

    def top_tags(self, hash_: str, k: int = 5) -> list[str]:
        return [name for _, name, _ in self.index.tags_of(hash_, self.model)[:k]]

    # ---- query
    def query_embedding(self, text: str) -> np.ndarray:
        from .openset import query_embedding

        if self.encoder_name is None or self._text_embed is None:
            raise RamcliError("this query needs the CLIP text encoder, which is not installed",
                              hint="run `ramcli models pull clip_vit_b16_text`, or search for tag names only")
        cached = self.index.cached_query(self.encoder_name, text)
        if cached is not None:
            return cached
        emb = query_embedding(text, self._text_embed())
        self.index.cache_query(self.encoder_name, text, emb)
        return emb

    def search(self, query: str, opts: SearchOptions) -> list[Hit]:
        tags, open_words = self.vocab.match(query)
        if tags and not open_words:  # a query of tag names only: no text encoder, no embeddings
            return self.tag_search(tags, opts)
        cand = self.candidates(opts)
        if not cand.paths:
            return []
        hits = self.tag_hits(cand.hashes, tags)
        q = self.query_embedding(query)
        clip = cand.cls @ q
        first = np.lexsort((-clip, -hits))
        rescored = self._rerank(cand, [int(i) for i in first[: opts.rerank]], q)
        score = clip.astype(np.float64)
        reranked = np.zeros(len(clip), bool)
        for i, r in rescored.items():
            score[i], reranked[i] = r, True
        ranked = np.lexsort((-score, ~reranked, -hits))  # hits, then re-ranked first, then score
        via = ["rerank" if reranked[i] else "clip" for i in ranked]
        return self._finish(cand, [int(i) for i in ranked], [float(score[i]) for i in ranked], via, hits, clip,
                            opts)

    def _rerank(self, cand: Candidates, idx: list[int], q: np.ndarray) -> dict[int, float]:
        if self._tag_head is None:
            return {}
        usable = [(i, t) for i in idx if (t := self.index.tokens(cand.hashes[i], self.model)) is not None]
        if not usable:
            return {}
        tokens = np.stack([t for _, t in usable]).astype(np.float32)
        labels = np.broadcast_to(q[None, None, :], (len(usable), 1, q.shape[0])).astype(np.float32)
        logits = self._tag_head()(tokens, labels)[:, 0].astype(np.float64)
        scores = 1.0 / (1.0 + np.exp(-logits))
        return {i: float(s) for (i, _), s in zip(usable, scores, strict=True)}

    def like(self, cls: np.ndarray, opts: SearchOptions) -> list[Hit]:
        cand = self.candidates(opts)
        if not cand.paths:
            return []
        q = cls / np.linalg.norm(cls)
        sims = cand.cls @ q
        order = list(np.argsort(-sims, kind="stable"))
        return self._finish(cand, order, [float(sims[i]) for i in order], ["like"] * len(order),
                            np.zeros(len(cand.paths), np.int32), sims, opts)

    def _finish(self, cand: Candidates, order: list[int], scores: list[float], via: list[str], hits: np.ndarray,
                clip: np.ndarray | None, opts: SearchOptions) -> list[Hit]:
        out: list[Hit] = []
        for i, score, how in zip(order, scores, via, strict=True):
            if opts.min_score is not None and score < opts.min_score and not hits[i]:
                continue
            out.append(Hit(cand.paths[i], score, how, int(hits[i]), None if clip is None else float(clip[i]),
                           cand.taken[i], self.top_tags(cand.hashes[i])))
            if len(out) >= opts.limit:
                break
        return out


def _day_after(date: str) -> str:
    """--until is inclusive: '2024-05-01' keeps photos taken that day."""
    from datetime import date as _date
    from datetime import timedelta

    if len(date) == 10:
        return (_date.fromisoformat(date) + timedelta(days=1)).isoformat()
    return date


# ------------------------------------------------------------------------------- assembling


def open_searcher(index: Index, model: str | None = None) -> Searcher:
    """A searcher over ``index`` for ``model`` (default: the model that tagged most photos)."""
    from functools import cache

    from . import store

    models = index.models()
    if not models:
        raise RamcliError("the index has no photos yet", path=index.path, hint="run `ramcli tag ~/Photos` first")
    name = model or models[0][0]
    if name not in dict(models):
        raise RamcliError(f"no photo in the index was tagged by {name!r}",
                          hint="indexed models: " + ", ".join(m for m, _ in models))
    ram = store.get(name) if store.is_installed(name) else None
    if ram is not None:
        vocab = Vocabulary.build(ram.tag_names, ram.tag_names_zh)
    else:  # the model was removed: its tags are still in the index (English names only)
        vocab = Vocabulary.build([r[0] for r in index.db.execute("select distinct tag from image_tags")], None)
    encoder = store.find_family("clip_text", preferred="clip_vit_b16_text")

    @cache  # onnxruntime is imported only when a query needs a model
    def text_embed() -> Callable[[list[str]], np.ndarray]:
        from .textenc import TextEncoder

        assert encoder is not None
        return TextEncoder(encoder)

    @cache
    def tag_head() -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        from .engine import EngineOptions, _session

        assert ram is not None
        session = _session(str(ram.path / store.HEAD), EngineOptions())  # the head only, no image encoder
        return lambda tokens, labels: session.run(None, {"image_embeds": tokens, "tag_embeds": labels})[0]

    return Searcher(index, name, vocab, encoder_name=encoder.name if encoder else None,
                    text_embed=text_embed if encoder else None,
                    tag_head=tag_head if ram is not None and ram.family == "ram_plus" else None)


def like_embedding(searcher: Searcher, photo: Path) -> np.ndarray:
    """The CLS embedding of ``photo``: from the index when it is there, else by running the encoder."""
    from . import store
    from .identity import image_hash
    from .images import load_input

    row = searcher.index.photo(str(photo.absolute()))
    digest = row.hash if row is not None else (image_hash(photo) if photo.is_file() else None)
    if digest is not None:
        cls = searcher.index.cls_embedding(digest, searcher.model)
        if cls is not None:
            return cls
    if not photo.is_file():
        raise RamcliError("no such photo", path=photo, hint="check the path")
    from .engine import Engine

    model = store.get(searcher.model)
    x, _ = load_input(photo, model.preprocess)
    return Engine(model).encode(x[None])[0, 0]
