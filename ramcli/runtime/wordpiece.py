"""bert-base-uncased tokenisation for Tag2Text, without torch or transformers.

Reproduces transformers 4.25's ``BertTokenizer`` as the reference configures it (lower-casing,
accent stripping, CJK characters split, punctuation split, greedy longest-match WordPiece,
``[DEC]`` and ``[ENC]`` added as special tokens after the 30,522-line vocabulary), and its
``decode(ids, skip_special_tokens=True)``. Written here rather than taken from the HF
``tokenizers`` library: that would be a new dependency for ~150 lines, and its Rust
normaliser is not guaranteed to match the Python tokenizer's Unicode rules character for
character, which the caption ids depend on.

Special tokens written literally in the text (``[SEP]``, ``[ENC]``, ...) are kept whole, as
transformers does; everything else is lower-cased before matching, so ``[sep]`` is just text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

ADDED_TOKENS = ("[DEC]", "[ENC]")  # bos for the decoder, first token of the tag encoder's input
BASE_SPECIALS = ("[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]")
MAX_CHARS_PER_WORD = 100
_CLEANUPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
             (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))
_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
        (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
    """ASCII symbols count as punctuation too (``$``, ``^``, ``|`` ...), as in BERT."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK)


def _clean(text: str) -> str:
    return "".join(" " if _is_whitespace(ch) else ch for ch in text
                   if ord(ch) not in (0, 0xFFFD) and not _is_control(ch))


def _strip_accents(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFD", text) if unicodedata.category(ch) != "Mn")


def _split_punctuation(word: str) -> list[str]:
    out: list[str] = []
    start_new = True
    for ch in word:
        if _is_punctuation(ch):
            out.append(ch)
            start_new = True
        else:
            if start_new:
                out.append("")
            start_new = False
            out[-1] += ch
    return out


def basic_tokenize(text: str) -> list[str]:
    """BERT's BasicTokenizer (lower-case, strip accents, split CJK and punctuation)."""
    text = _clean(text)
    text = "".join(f" {ch} " if _is_cjk(ch) else ch for ch in text)
    words: list[str] = []
    for word in text.split():
        words.extend(_split_punctuation(_strip_accents(word.lower())))
    return " ".join(words).split()


class WordPiece:
    """The vocabulary file plus the added tokens; ids are line numbers, added tokens follow."""

    def __init__(self, vocab: Sequence[str], added: Sequence[str] = ADDED_TOKENS) -> None:
        base = list(vocab)
        self.tokens = base + [t for t in added if t not in base]
        self.ids = {t: i for i, t in enumerate(self.tokens)}  # a repeated line: the last wins, as in BERT
        self.added_ids = set(range(len(base), len(self.tokens)))
        missing = [t for t in BASE_SPECIALS if t not in self.ids]
        if missing:
            raise ValueError(f"vocabulary lacks {', '.join(missing)}")
        self.specials = [*BASE_SPECIALS, *added]
        self.special_ids = {self.ids[t] for t in self.specials}
        self._special_split = re.compile("(" + "|".join(map(re.escape, self.specials)) + ")")

    @classmethod
    def from_file(cls, path: Path, added: Sequence[str] = ADDED_TOKENS) -> WordPiece:
        # Lines are tokens exactly: BERT's loader strips only the newline.
        lines = path.read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return cls(lines, added)

    def id_of(self, token: str) -> int:
        return self.ids[token]

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def _wordpiece(self, word: str) -> list[str]:
        if len(word) > MAX_CHARS_PER_WORD:
            return ["[UNK]"]
        pieces: list[str] = []
        start = 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.ids:
                    break
                end -= 1
            else:
                return ["[UNK]"]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """Text -> word pieces; literal special tokens stay whole and eat the spaces beside them."""
        parts = self._special_split.split(text)
        for i in range(1, len(parts), 2):  # special tokens: transformers strips the spaces beside them
            parts[i - 1] = parts[i - 1].rstrip()
            if i + 1 < len(parts):
                parts[i + 1] = parts[i + 1].lstrip()
        out: list[str] = []
        for i, part in enumerate(parts):
            if i % 2:
                out.append(part)
            elif part:
                # transformers lower-cases character by character before anything else, which
                # differs from str.lower() on whole words for the Greek final sigma.
                for word in basic_tokenize("".join(ch.lower() for ch in part)):
                    out.extend(self._wordpiece(word))
        return out

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """``[CLS] pieces [SEP]``, the pieces cut so the whole fits ``max_length`` (truncation=True)."""
        ids = [self.ids.get(t, self.ids["[UNK]"]) for t in self.tokenize(text)]
        if max_length is not None:
            ids = ids[: max(max_length - 2, 0)]
        return [self.ids["[CLS]"], *ids, self.ids["[SEP]"]]

    def encode_padded(self, text: str, length: int) -> tuple[list[int], list[int]]:
        """padding="max_length", truncation=True: ids and attention mask of exactly ``length``."""
        ids = self.encode(text, length)
        pad = length - len(ids)
        return ids + [self.ids["[PAD]"]] * pad, [1] * len(ids) + [0] * pad

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """transformers' decode: join pieces, glue ``##`` pieces, tidy spaces before punctuation.

        Added tokens are emitted as separate chunks, as transformers does, when not skipped.
        """
        chunks: list[str] = []
        words: list[str] = []
        for i in map(int, ids):
            if skip_special_tokens and i in self.special_ids:
                continue
            token = self.tokens[i] if 0 <= i < len(self.tokens) else "[UNK]"
            if i in self.added_ids:
                if words:
                    chunks.append(" ".join(words).replace(" ##", "").strip())
                    words = []
                chunks.append(token)
            else:
                words.append(token)
        if words:
            chunks.append(" ".join(words).replace(" ##", "").strip())
        text = " ".join(chunks)
        for old, new in _CLEANUPS:
            text = text.replace(old, new)
        return text
