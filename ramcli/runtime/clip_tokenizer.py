"""CLIP's text tokenizer without torch: the ids open_clip's ``ViT-B-16`` tokenizer gives, as numpy.

Text search embeds queries with the CLIP ViT-B/16 text encoder exported to ONNX. The encoder only
understands the ids open_clip's ``SimpleTokenizer`` produces, but ``open_clip.tokenizer`` imports torch
at module level, and importing torch would cost the search path seconds and gigabytes. So this module
re-implements that tokenizer (``open_clip.get_tokenizer("ViT-B-16")``: ``clean="lower"``, no reduction
mask, context length 77) with only ``regex``, ``ftfy`` and numpy, and the tests check it id for id
against open_clip itself.

The pipeline, in open_clip's order:

1. clean: ``ftfy.fix_text``, ``html.unescape`` twice, collapse every run of whitespace to one space and
   strip, lower-case;
2. split into pieces with CLIP's regex (contractions, runs of letters, single digits, runs of other
   non-space characters; the literal ``<start_of_text>``/``<end_of_text>`` strings are special tokens);
3. map each piece's UTF-8 bytes to printable characters (GPT-2's byte-to-unicode table) and apply the
   byte-level BPE merges from ``bpe_simple_vocab_16e6.txt.gz``, the last symbol carrying ``</w>``;
4. wrap in start-of-text (49406) / end-of-text (49407), cut to the context length keeping end-of-text
   last, pad with 0.

ftfy is imported only when a text has something besides printable ASCII (other than ``&``) and tabs or
line breaks, since ftfy leaves such text as it is (the tests check this against ftfy): tag names and
prompt templates never pay its 0.1-0.2 s import. If ``ftfy`` is not installed the first step only mends
surrogates (open_clip cannot run without ftfy, so this is ramcli's own fallback): ordinary text tokenizes
the same, only mojibake, fullwidth forms, ligatures, curly quotes, control characters and other things
ftfy would repair may give different ids. ``ClipTokenizer.fixes_text`` says which applies.

The vocabulary file ships in open_clip's wheel; ``default_bpe_path`` finds it with
``importlib.util.find_spec``, which for a top-level package reads its location without running its
``__init__`` (so without importing torch). A model folder can pass its own copy as ``bpe_path``.
"""

from __future__ import annotations

import gc
import html
import importlib.util
import zlib
from collections.abc import Callable, Sequence
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from ramcli.errors import RamcliError

BPE_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
DEFAULT_CONTEXT_LENGTH = 77
START_OF_TEXT = "<start_of_text>"
END_OF_TEXT = "<end_of_text>"
# open_clip keeps the merges on lines 1 .. 49152-256-2 of the file (line 0 is a version header): with 256
# byte symbols, 256 byte+</w> symbols and the 2 special tokens that makes the 49408-entry vocabulary.
NUM_MERGES = 49152 - 256 - 2
END_OF_WORD = "</w>"
# Bounded so a long-lived process fed arbitrary text cannot grow without limit; real queries repeat a
# small set of words (prompt templates, tag names), which all stay cached.
BPE_CACHE_SIZE = 1 << 16
# CLIP's pre-tokenizer, after the special tokens, compiled with IGNORECASE as open_clip does. That still
# matters after lower-casing: "'ſ" (long s, already lower case) matches the contraction "'s" under it.
_PIECES = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_INFLATE_STEP = 1 << 16
# Text made only of these characters is left unchanged by ftfy.fix_text (checked by the tests against
# ftfy itself): ASCII needs no mojibake, width, ligature or quote fixes and is already NFC; the only
# ASCII that ftfy touches is "&" (HTML entities), control characters and terminal escapes (which start
# with ESC), and \r (turned into \n, which whitespace cleaning treats the same).
_PLAIN_CHARS = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "&") + "\t\n\r"


def byte_symbols() -> tuple[list[str], list[str]]:
    """CLIP's reversible byte table: (the character standing for each byte 0..255, the 256 in id order).

    BPE works on text, but must cover every byte sequence and never see whitespace or control
    characters. Bytes that are printable, non-space Latin-1 characters stand for themselves; the other 68
    (controls, space, DEL, no-break space, soft hyphen, ...) are moved to U+0100 upwards in byte order.
    The printable ones come first in the id order, then the moved ones: ids 0..255 are these symbols.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    moved = [b for b in range(256) if b not in printable]
    symbols = [chr(b) for b in printable] + [chr(256 + n) for n in range(len(moved))]
    for_byte = [""] * 256
    for byte, symbol in zip(printable + moved, symbols, strict=True):
        for_byte[byte] = symbol
    return for_byte, symbols


def default_bpe_path() -> Path:
    """The BPE vocabulary inside the installed open_clip wheel, found without importing open_clip.

    ``find_spec`` on a top-level package only locates it; open_clip's ``__init__`` (which imports torch)
    does not run. Raises ``RamcliError`` when open_clip or the file is missing.
    """
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        spec = None
    hint = "install open_clip_torch, or give the path to bpe_simple_vocab_16e6.txt.gz"
    if spec is None:
        raise RamcliError("open_clip is not installed, so CLIP's BPE vocabulary cannot be found", hint=hint)
    for folder in spec.submodule_search_locations or []:
        candidate = Path(folder) / BPE_FILENAME
        if candidate.is_file():
            return candidate
    where = ", ".join(spec.submodule_search_locations or []) or str(spec.origin)
    raise RamcliError(f"open_clip is installed but has no {BPE_FILENAME}", path=where, hint=hint)


def _merge_lines(raw: bytes) -> list[str]:
    """The file's first ``NUM_MERGES + 1`` lines; a gzipped file is inflated only as far as they reach.

    The shipped file holds 262,146 lines of which open_clip uses the first 48,895: inflating and
    splitting only those is most of what keeps construction fast.
    """
    if raw[:2] != b"\x1f\x8b":  # not gzip magic: a plain-text copy
        return raw.decode("utf-8").split("\n", NUM_MERGES + 1)[: NUM_MERGES + 1]
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # 16+: expect a gzip header
    chunks: list[bytes] = []
    newlines = pos = 0
    while newlines <= NUM_MERGES and pos < len(raw):
        chunk = inflater.decompress(raw[pos : pos + _INFLATE_STEP])
        chunks.append(chunk)
        newlines += chunk.count(b"\n")
        pos += _INFLATE_STEP
    data = b"".join(chunks)
    if newlines <= NUM_MERGES:  # the whole file was inflated: make sure it really ended there
        data += inflater.flush()
    return data.decode("utf-8").split("\n", NUM_MERGES + 1)[: NUM_MERGES + 1]


def _read_merges(path: Path) -> list[tuple[str, str]]:
    """The BPE merge rules, best first: lines 1..48894 of the file, each two symbols (gzipped or plain).

    Fewer lines than open_clip reads would silently shift every id the encoder sees, so that is an error.
    """
    hint = f"use the {BPE_FILENAME} that ships with open_clip"
    try:
        lines = _merge_lines(path.read_bytes())
    except FileNotFoundError:
        raise RamcliError("CLIP BPE vocabulary not found", path=path, hint=hint) from None
    except (OSError, zlib.error, UnicodeDecodeError) as err:
        raise RamcliError(f"cannot read the CLIP BPE vocabulary ({err})", path=path, hint=hint) from None
    # One split over all lines instead of one per line (same symbols as open_clip's per-line ``split()``
    # when every line has two), then pairs by slicing: half the time of a per-line loop.
    symbols = " ".join(lines[1:]).split()
    if len(lines) != NUM_MERGES + 1 or len(symbols) != 2 * NUM_MERGES:
        raise RamcliError(f"not a CLIP BPE vocabulary (needs {NUM_MERGES} lines of two symbols after the "
                          f"header line)", path=path, hint=hint)
    return list(zip(symbols[0::2], symbols[1::2], strict=True))


def _mend_surrogates(text: str) -> str:
    """Join surrogate pairs and make lone surrogates U+FFFD, as ftfy does: the no-ftfy fallback's only fix.

    Without it text holding surrogates (``sys.argv`` carries undecodable bytes as lone surrogates) could
    not be encoded to UTF-8 for BPE.
    """
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _load_ftfy() -> Callable[[str], str] | None:
    """``ftfy.fix_text`` when ftfy is installed, else None (ramcli's fallback: no fixing but surrogates).

    Imported on first need, not at construction: ftfy takes 0.1-0.2 s to import and plain ASCII text
    (tag names, prompt templates) never needs it.
    """
    try:
        import ftfy
    except ImportError:
        return None
    return ftfy.fix_text


class ClipTokenizer:
    """open_clip's ``SimpleTokenizer`` for ViT-B-16 (``clean="lower"``), giving numpy int64 ids.

    Construction reads the merges and imports ``regex`` (deferred to here so importing this module stays
    cheap for commands that never search); ftfy is imported when the first text that may need fixing
    arrives. Each pre-tokenized piece's ids are cached per instance, so repeated prompt templates and tag
    words cost one dict lookup.
    """

    def __init__(self, bpe_path: Path | None = None, context_length: int = DEFAULT_CONTEXT_LENGTH) -> None:
        if context_length < 1:
            raise ValueError(f"context_length must be at least 1, not {context_length}")
        try:
            import regex
        except ImportError:
            raise RamcliError("the 'regex' package is needed to tokenize text for CLIP",
                              hint="pip install regex") from None
        self.bpe_path = Path(bpe_path) if bpe_path is not None else default_bpe_path()
        self.context_length = context_length
        self._fix_text: Callable[[str], str] | None = None
        self._ftfy_loaded = False

        # ~150,000 small strings and tuples are allocated below and all stay alive: pausing the cyclic GC,
        # which would otherwise walk them again and again for nothing, saves about a third of the time.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            self._load_vocabulary()
        finally:
            if gc_was_enabled:
                gc.enable()
        self._pattern: Any = regex.compile(f"{START_OF_TEXT}|{END_OF_TEXT}|{_PIECES}", regex.IGNORECASE)
        self._piece_ids = lru_cache(maxsize=BPE_CACHE_SIZE)(self._bpe_ids)

    def _load_vocabulary(self) -> None:
        """Symbol -> id (49,408: bytes, bytes + ``</w>``, one per merge, the two specials) and merge ranks."""
        merges = _read_merges(self.bpe_path)
        for_byte, symbols = byte_symbols()
        self._byte_to_symbol = dict(enumerate(for_byte))  # str.translate table for latin-1-decoded bytes
        vocab = [*symbols, *(s + END_OF_WORD for s in symbols), *(a + b for a, b in merges), START_OF_TEXT,
                 END_OF_TEXT]
        # dict(zip()) like open_clip: were a symbol repeated, the later id would win in both
        self._ids: dict[str, int] = dict(zip(vocab, range(len(vocab)), strict=True))
        self._ranks: dict[tuple[str, str], int] = dict(zip(merges, range(len(merges)), strict=True))
        self.vocab_size = len(self._ids)
        self.sot_token_id = self._ids[START_OF_TEXT]
        self.eot_token_id = self._ids[END_OF_TEXT]
        self._special = {START_OF_TEXT: self.sot_token_id, END_OF_TEXT: self.eot_token_id}

    @property
    def fixes_text(self) -> bool:
        """Whether ``ftfy.fix_text`` is applied (ftfy installed), as open_clip always does; imports ftfy."""
        return self._ftfy() is not None

    def _ftfy(self) -> Callable[[str], str] | None:
        """``ftfy.fix_text``, imported on first use (None without ftfy)."""
        if not self._ftfy_loaded:
            self._fix_text = _load_ftfy()
            self._ftfy_loaded = True
        return self._fix_text

    def clean(self, text: str) -> str:
        """open_clip's ``clean="lower"``: fix mojibake, unescape HTML twice, squeeze whitespace, lower-case."""
        if text.strip(_PLAIN_CHARS):  # something ftfy might change (all-plain text strips to "")
            fix_text = self._ftfy()
            text = fix_text(text) if fix_text is not None else _mend_surrogates(text)
        text = html.unescape(html.unescape(text))
        return " ".join(text.split()).lower()  # str.split() drops leading/trailing whitespace: the strips

    def bpe(self, word: str) -> list[str]:
        """Byte-level BPE of one piece already mapped to byte symbols: apply the best-ranked merge until none.

        Each round merges every occurrence of the lowest-ranked adjacent pair, scanning left to right and
        not overlapping (``aaa`` with ``a a`` gives ``aa a``), as open_clip does. The last symbol carries
        ``</w>``, so word-final pieces get their own ids.
        """
        symbols = [*word[:-1], word[-1] + END_OF_WORD]
        ranks = self._ranks
        while len(symbols) > 1:
            best: tuple[str, str] | None = None
            best_rank = len(ranks)
            for pair in pairwise(symbols):
                rank = ranks.get(pair)
                if rank is not None and rank < best_rank:
                    best, best_rank = pair, rank
            if best is None:
                break
            first, second = best
            merged: list[str] = []
            i, n = 0, len(symbols)
            while i < n:
                if i + 1 < n and symbols[i] == first and symbols[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols

    def _bpe_ids(self, piece: str) -> tuple[int, ...]:
        """Ids of one pre-tokenized piece (cached per instance in ``_piece_ids``)."""
        special = self._special.get(piece)
        if special is not None:  # a literal <start_of_text>/<end_of_text> in the text, as in open_clip
            return (special,)
        word = piece.encode("utf-8").decode("latin-1").translate(self._byte_to_symbol)
        return tuple(self._ids[symbol] for symbol in self.bpe(word))

    def encode(self, text: str) -> list[int]:
        """BPE ids of ``text`` after cleaning, without start/end-of-text and without truncation."""
        ids: list[int] = []
        for piece in self._pattern.findall(self.clean(text)):
            ids.extend(self._piece_ids(piece))
        return ids

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        """(N, context_length) int64 ids, as ``open_clip.get_tokenizer("ViT-B-16")(texts).numpy()``.

        Each row is start-of-text, the ids, end-of-text, then zeros. Too long a row is cut to the context
        length with end-of-text written over the last place, so the encoder (which pools at the
        end-of-text position, the row's largest id) still finds it.
        """
        if isinstance(texts, str):
            texts = [texts]
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.eot_token_id
            out[row, : len(ids)] = ids
        return out
