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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ramcli.errors import RamcliError, UsageError
from ramcli.index import Index, PhotoFilter, PhotoRef

if TYPE_CHECKING:  # numpy is imported where it is used: a tag-only search runs without it
    import numpy as np

    from ramcli.runtime.engine import Engine
    from ramcli.search.clsmatrix import ClsMatrix

_WORDS = re.compile(r"[\w'&+-]+")
MAX_NGRAM = 5


def check_query(query: str | None, like: object = None) -> None:
    """A search needs something to look for: a query with text in it, or a photo to be ``like``.

    Why blank counts as empty: ``ramcli search "$TERM"`` with an unset variable passes "" or "  ";
    ranked, a blank query matched no tag and every photo by CLIP, and the first 20 photos came back
    as if they matched. Both are the same usage error (exit 2)."""
    if like is None and (query is None or not query.strip()):
        raise UsageError("give a QUERY or --like PHOTO" + (" (the query is blank)" if query else ""),
                         hint='e.g. ramcli search "dog on a beach"')


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
    at: float | None = None  # a video: the moment that matches best, in seconds from its start
    image: str | None = field(default=None, repr=False)  # the image hash (finds a video's stills)

    def as_dict(self, rank: int) -> dict[str, object]:
        return {"rank": rank, "path": self.path, "score": round(self.score, 6), "via": self.via,
                "tag_hits": self.hits, "clip": None if self.clip is None else round(self.clip, 6),
                "taken_at": self.taken_at, "tags": self.tags, "at": None if self.at is None else round(self.at, 3)}

    @property
    def moment(self) -> str:
        """``at 00:01:23`` for a video hit, "" for a photo."""
        if self.at is None:
            return ""
        whole = int(self.at)
        return f"at {whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


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
    """The images a search may return, as rows of the model's CLS matrix. Paths are fetched only
    for the images that make it into the answer: at 100k photos, reading every path costs more
    than the whole ranking."""

    matrix: ClsMatrix  # every image of the model
    allowed: np.ndarray | None  # (N,) bool: rows with a photo that passes the filters; None: all rows
    # videos' stills: (row of ``matrix`` of each still's video (S,), the stills' unit CLS (S, 512)); None: none
    stills: tuple[np.ndarray, np.ndarray] | None = None

    def cosine(self, q: np.ndarray) -> np.ndarray:
        """Cosine of every row's CLS with the unit vector ``q`` (one gemv); a video's is its best still's
        for this query (its own row holds only the still that was best for its tags)."""
        import numpy as np

        q = np.asarray(q, dtype=np.float32)
        out = self.matrix.vectors @ q
        if self.stills is not None:
            rows, vectors = self.stills
            np.maximum.at(out, rows, vectors @ q)
        return out

    def order(self, *keys: np.ndarray) -> np.ndarray:
        """Allowed rows sorted by ``keys`` (np.lexsort order: last key first)."""
        import numpy as np

        ranked = np.lexsort(keys)
        return ranked if self.allowed is None else ranked[self.allowed[ranked]]


class Searcher:
    """Everything one search needs; the text encoder and the tag head are loaded only if used."""

    def __init__(self, index: Index, model: str, vocab: Vocabulary, *, encoder_name: str | None = None,
                 text_embed: Callable[[], Callable[[list[str]], np.ndarray]] | None = None,
                 tag_head: Callable[[], Callable[[np.ndarray, np.ndarray], np.ndarray]] | None = None,
                 start_tag_head: Callable[[], object] | None = None, clip_space: bool = True) -> None:
        """``text_embed`` and ``tag_head`` are factories, called only when a query needs them;
        ``start_tag_head`` starts loading the tag head in the background and returns at once."""
        self.index = index
        self.model = model
        self.vocab = vocab
        self.encoder_name = encoder_name
        self._text_embed = text_embed
        self._tag_head = tag_head
        self._start_tag_head = start_tag_head
        self.clip_space = clip_space

    # ---- data
    @staticmethod
    def _filter(opts: SearchOptions) -> PhotoFilter:
        """The user's filters as the index applies them (--until is inclusive: a day's end)."""
        return PhotoFilter(under=tuple(str(root.absolute()) for root in opts.under), since=opts.since or None,
                           before=_day_after(opts.until) if opts.until else None, tags=tuple(opts.tags),
                           not_tags=tuple(opts.not_tags))

    def candidates(self, opts: SearchOptions) -> Candidates:
        """The model's CLS matrix and, when filters are given, which rows pass them."""
        import numpy as np

        from ramcli.search import clsmatrix

        matrix = clsmatrix.load(self.index, self.model)
        stills = None
        rowids, vectors = self.index.still_cls_rows(self.model)
        if len(rowids):
            present = np.isin(rowids, matrix.rowids)
            norms = np.linalg.norm(vectors[present], axis=1, keepdims=True)
            stills = (matrix.positions(list(rowids[present])), vectors[present] / np.where(norms == 0, 1, norms))
        flt = self._filter(opts)
        if not flt:  # every image; one that no photo points at any more is dropped by _photos
            return Candidates(matrix, None, stills)
        rowids = self.index.filtered_rowids(self.model, flt)
        allowed = np.zeros(len(matrix.rowids), bool)
        allowed[matrix.positions(rowids)] = True
        return Candidates(matrix, allowed, stills)

    def _photos(self, rowids: list[int], opts: SearchOptions) -> dict[int, list[PhotoRef]]:
        """(path, hash, taken_at) of the photos of these images that pass the filters, by path."""
        return self.index.photos_of_images(self.model, rowids, self._filter(opts))

    def tag_search(self, tags: list[str], opts: SearchOptions) -> list[Hit]:
        """Photos carrying any of ``tags``: more hits first, then the mean stored score. One query
        (``Index.tag_matches``) on covering indexes only, so the blobs in ``images`` are never read."""
        rows = self.index.tag_matches(self.model, tags, self._filter(opts), min_score=opts.min_score,
                                      limit=opts.limit)
        return self.moments([Hit(path, score, "tag", hits, None, taken, self.top_tags(hash_), image=hash_)
                             for path, hash_, taken, hits, score in rows], tags=tags)

    def tag_hits(self, matrix: ClsMatrix, tags: list[str]) -> np.ndarray:
        """Per row of ``matrix``: how many of ``tags`` the image carries."""
        import numpy as np

        hits = np.zeros(len(matrix.rowids), np.int32)
        if not tags or not len(hits):
            return hits
        rowids = self.index.rowids_with_tags(self.model, tags)
        np.add.at(hits, matrix.positions(rowids), 1)
        return hits

    def top_tags(self, hash_: str, k: int = 5) -> list[str]:
        return [name for _, name, _ in self.index.tags_of(hash_, self.model)[:k]]

    # ---- query
    def query_embedding(self, text: str) -> np.ndarray:
        from ramcli.vocab.openset import query_embedding

        if self.encoder_name is None or self._text_embed is None:
            raise RamcliError("this query needs the CLIP text encoder, which is not installed",
                              hint="run `ramcli models pull clip_vit_b16_text`, or search for tag names only")
        cached = self.index.cached_query(self.encoder_name, text)
        if cached is not None:
            return cached
        emb = query_embedding(text, self._text_embed())
        self.index.cache_query(self.encoder_name, text, emb)
        return emb

    def caption_hits(self, query: str) -> set[str]:
        """Images whose caption (Tag2Text) holds every word of the query."""
        return self.index.captioned(self.model, _WORDS.findall(_fold(query)))

    def text_search(self, tags: list[str], captioned: set[str], opts: SearchOptions) -> list[Hit]:
        """For a model without CLIP embeddings (Tag2Text): tag hits plus one hit for a caption that
        holds the whole query, then the mean stored tag score."""
        found = {h.path: h for h in (self.tag_search(tags, replace(opts, limit=1 << 30)) if tags else [])}
        if captioned:
            for path, hash_, taken in self.index.photos_of_hashes(self.model, sorted(captioned), self._filter(opts)):
                hit = found.setdefault(path, Hit(path, 0.0, "caption", 0, None, taken, self.top_tags(hash_),
                                                 image=hash_))
                hit.hits += 1
        ranked = sorted(found.values(), key=lambda h: (-h.hits, -h.score, h.path))
        return self.moments(ranked[: opts.limit], tags=tags)

    def search(self, query: str, opts: SearchOptions) -> list[Hit]:
        check_query(query)
        tags, open_words = self.vocab.match(query)
        if not self.clip_space:  # Tag2Text: words in tags and captions, nothing open-set
            return self.text_search(tags, self.caption_hits(query), opts)
        if tags and not open_words:  # a query of tag names only: no text encoder, no embeddings
            return self.tag_search(tags, opts)
        import numpy as np

        cand = self.candidates(opts)
        if not len(cand.matrix.rowids):
            return []
        hits = self.tag_hits(cand.matrix, tags)
        q = self.query_embedding(query)  # a first-time query starts loading the head meanwhile
        if self._start_tag_head is not None and opts.rerank > 0:
            self._start_tag_head()  # (started once) it loads while the tokens are read
        clip = cand.cosine(q)
        first = cand.order(-clip, -hits)
        rescored = self._rerank(cand.matrix, [int(i) for i in first[: opts.rerank]], q)
        score = clip.astype(np.float64)
        reranked = np.zeros(len(clip), bool)
        for i, r in rescored.items():
            score[i], reranked[i] = r, True
        ranked = cand.order(-score, ~reranked, -hits)  # hits, then re-ranked first, then score
        return self.moments(self._finish(cand.matrix, ranked, score, np.where(reranked, "rerank", "clip"), hits, clip,
                                         opts), tags=tags, vector=q)

    def _rerank(self, matrix: ClsMatrix, rows: list[int], q: np.ndarray) -> dict[int, float]:
        """``rerank`` scores of ``rows`` (positions in ``matrix``) that have stored tokens."""
        import numpy as np

        if self._tag_head is None or not rows:
            return {}
        found = self.index.tokens_by_rowid([int(matrix.rowids[i]) for i in rows])
        usable = [(i, found[int(matrix.rowids[i])]) for i in rows if int(matrix.rowids[i]) in found]
        if not usable:
            return {}
        tokens = np.stack([t for _, t in usable])  # float16, as stored
        labels = np.broadcast_to(q[None, None, :], (len(usable), 1, q.shape[0])).astype(np.float32)
        logits = self._tag_head()(tokens, labels)[:, 0].astype(np.float64)
        scores = 1.0 / (1.0 + np.exp(-logits))
        return {i: float(s) for (i, _), s in zip(usable, scores, strict=True)}

    def like(self, cls: np.ndarray, opts: SearchOptions) -> list[Hit]:
        import numpy as np

        cand = self.candidates(opts)
        if not len(cand.matrix.rowids):
            return []
        sims = cand.cosine(cls / np.linalg.norm(cls))
        return self.moments(self._finish(cand.matrix, cand.order(-sims), sims.astype(np.float64),
                                         np.full(len(sims), "like"), np.zeros(len(sims), np.int32), sims, opts),
                            vector=cls)

    def moments(self, hits: list[Hit], *, tags: Sequence[str] = (), vector: np.ndarray | None = None) -> list[Hit]:
        """Say at which moment each video hit matches best: the still whose own scores for the query's tags
        sum highest, else the still whose CLS embedding is nearest ``vector`` (the query's text embedding, or
        the photo of ``--like``), else the video's best still. Photos have no stills and keep ``at`` None.
        numpy is imported only for an embedding: a tag-name search starts without it."""
        wanted = sorted({h.image for h in hits if h.image})
        stills = self.index.stills_of(self.model, wanted, cls=vector is not None) if wanted else {}
        for hit in hits:
            found = stills.get(hit.image or "")
            if not found:
                continue
            by_tag = [sum(s.tags.get(t, 0.0) for t in tags) for s in found]
            if tags and max(by_tag) > 0:
                hit.at = found[by_tag.index(max(by_tag))].t
                continue
            usable = [s for s in found if s.cls is not None]
            if vector is not None and usable:
                import numpy as np

                m = np.stack([s.cls for s in usable])  # type: ignore[misc]
                sims = (m @ vector) / np.maximum(np.linalg.norm(m, axis=1) * np.linalg.norm(vector), 1e-12)
                hit.at = usable[int(np.argmax(sims))].t
                continue
            hit.at = max(found, key=lambda s: sum(s.tags.values())).t
        return hits

    def _finish(self, matrix: ClsMatrix, ranked: np.ndarray, score: np.ndarray, via: np.ndarray, hits: np.ndarray,
                clip: np.ndarray, opts: SearchOptions) -> list[Hit]:
        """Walk the ranked images, a page at a time, turning each into its photos until ``limit``."""
        out: list[Hit] = []
        page = max(opts.limit, 50)
        for start in range(0, len(ranked), page):
            rows = [int(i) for i in ranked[start:start + page]]
            photos = self._photos([int(matrix.rowids[i]) for i in rows], opts)
            for i in rows:
                if opts.min_score is not None and score[i] < opts.min_score and not hits[i]:
                    continue
                for path, hash_, taken in photos.get(int(matrix.rowids[i]), []):
                    out.append(Hit(path, float(score[i]), str(via[i]), int(hits[i]), float(clip[i]), taken,
                                   self.top_tags(hash_), image=hash_))
                    if len(out) >= opts.limit:
                        return out
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

    from ramcli.models import store
    from ramcli.models.families import family_of

    models = index.models()
    if not models:
        raise RamcliError("the index has no photos yet", path=index.path, hint="run `ramcli tag ~/Photos` first")
    name = model or models[0][0]
    if name not in dict(models):
        raise RamcliError(f"no photo in the index was tagged by {name!r}",
                          hint="indexed models: " + ", ".join(m for m, _ in models))
    ram = store.get(name) if store.is_installed(name) else None
    own = index.custom_tag_names()  # add-tag
    if ram is not None:
        zh = ram.tag_names_zh
        vocab = Vocabulary.build([*ram.tag_names, *(n for n, _ in own)],
                                 None if zh is None else [*zh, *(z for _, z in own)])
    else:  # the model was removed: its tags are still in the index (English names only)
        vocab = Vocabulary.build(index.tag_names(), None)
    encoder = store.find_family("clip_text", preferred="clip_vit_b16_text")

    @cache
    def rerank_engine() -> Engine:
        from ramcli.runtime.engine import Engine, EngineOptions

        assert ram is not None
        # On the CPU: 100 photos x 1 tag is too little work to pay for starting CUDA.
        return Engine(ram, EngineOptions(device="cpu", one_shot=True))

    @cache
    def head_session() -> Callable[[], Any]:
        """Starts loading the tag head in the background: the query's embedding comes first.
        The few-tags head where the model has it (100 photos in 0.05 instead of 0.56 s for the
        full-size head), which is the one Engine.logits runs for stored tokens and one tag."""
        from ramcli.runtime.engine import in_background

        engine = rerank_engine()
        return in_background(lambda: engine.head if engine.few_head is None else engine.few_head)

    @cache  # onnxruntime is imported only when a query needs a model
    def text_embed() -> Callable[[list[str]], np.ndarray]:
        from ramcli.runtime.engine import EngineOptions
        from ramcli.runtime.textenc import TextEncoder

        assert encoder is not None
        rerank = head_session if ram is not None and family_of(ram).open_set else None
        return TextEncoder(encoder, EngineOptions(device="cpu", one_shot=True), meanwhile=rerank)  # one text: CPU

    @cache
    def tag_head() -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        head_session()()  # loaded
        return rerank_engine().logits

    return Searcher(index, name, vocab, encoder_name=encoder.name if encoder else None,
                    text_embed=text_embed if encoder else None,
                    tag_head=tag_head if ram is not None and family_of(ram).open_set else None,
                    start_tag_head=head_session if ram is not None and family_of(ram).open_set else None,
                    clip_space=ram is None or family_of(ram).clip_space)


_MOMENT = re.compile(r"^(?P<path>.+)@(?P<t>\d+(?:\.\d+)?)$")


def like_target(like: Path) -> tuple[Path, float | None]:
    """``clip.mp4@83.5`` -> (clip.mp4, 83.5): a moment of a video; a path that exists is taken as it is."""
    text = str(like)
    m = _MOMENT.match(text)
    if like.exists() or m is None:
        return like, None
    return Path(m["path"]), float(m["t"])


def like_embedding(searcher: Searcher, photo: Path) -> np.ndarray:
    """The CLS embedding of ``photo`` (or of a video's moment, ``clip.mp4@83``): from the index when it is
    there, else by running the encoder. A video without a moment stands for its best still."""
    from ramcli.media import is_video
    from ramcli.metadata.identity import image_hash
    from ramcli.models import store
    from ramcli.runtime.images import load_input, to_input

    photo, at = like_target(Path(photo))
    row = searcher.index.photo(str(photo.absolute()))
    digest = row.hash if row is not None else (image_hash(photo) if photo.is_file() else None)
    if digest is not None:
        if at is not None:
            stills = [s for s in searcher.index.stills_of(searcher.model, [digest]).get(digest, [])
                      if s.cls is not None]
            if stills:
                return min(stills, key=lambda s: abs(s.t - at)).cls  # type: ignore[return-value]
        else:
            cls = searcher.index.cls_embedding(digest, searcher.model)
            if cls is not None:
                return cls
    if not photo.is_file():
        raise RamcliError("no such photo", path=photo, hint="check the path")
    from ramcli.runtime.engine import Engine

    model = store.get(searcher.model)
    if is_video(photo):
        from ramcli.runtime.video import sample_video

        clip = sample_video(photo, min_side=model.preprocess.image_size)
        frame = min(clip.frames, key=lambda f: abs(f.t - (at or 0.0)))
        x = to_input(frame.rgb, model.preprocess)
    else:
        x, _ = load_input(photo, model.preprocess)
    return Engine(model).encode(x[None])[0, 0]
