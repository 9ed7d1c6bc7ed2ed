"""ramcli's torch-free CLIP tokenizer gives exactly open_clip's ViT-B-16 ids.

The ONNX text encoder only means anything if it is fed the ids it was trained with, so every case is
compared id for id against ``open_clip.get_tokenizer("ViT-B-16")`` (tests may import open_clip and
torch; the runtime may not, which is checked in a fresh interpreter).
"""

from __future__ import annotations

import gzip
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import REPO, SHARED
from ramcli.errors import RamcliError
from ramcli.runtime import clip_tokenizer
from ramcli.runtime.clip_tokenizer import ClipTokenizer, default_bpe_path

TAG_LIST = SHARED / "data" / "recognize-anything" / "ram_tag_list.txt"
SOME_TAGS = ["dog", "café", "ice cream", "t-shirt", "修道院", "mother's day", "apple", "Xbox", "4x4", "umbrella"]


@pytest.fixture(scope="module")
def reference() -> Any:
    open_clip = pytest.importorskip("open_clip")
    return open_clip.get_tokenizer("ViT-B-16")


@pytest.fixture(scope="module")
def tokenizer() -> ClipTokenizer:
    return ClipTokenizer()


def assert_same(tokenizer: ClipTokenizer, reference: Any, texts: list[str]) -> None:
    """Whole batch at once (as search does), naming the first text whose ids differ."""
    ours = tokenizer(texts)
    theirs = reference(texts).numpy()
    assert ours.dtype == np.int64
    assert ours.shape == theirs.shape == (len(texts), tokenizer.context_length)
    bad = np.flatnonzero((ours != theirs).any(axis=1))
    if bad.size:
        i = int(bad[0])
        pytest.fail(f"{bad.size}/{len(texts)} texts differ, first {texts[i]!r}:\n ours   {ours[i].tolist()}\n"
                    f" theirs {theirs[i].tolist()}")


def random_texts(seed: int, count: int) -> list[str]:
    """Seeded random strings from ASCII and the Unicode that stresses each step of the pipeline."""
    rng = random.Random(seed)
    alphabets = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",  # words for BPE
        "0123456789٣४",  # digits, one id each, also non-ASCII ones
        "'\"!?.,;:-_()[]{}<>/\\|@#$%^*+=~`&",  # punctuation runs, contractions, entities, '<'
        " \t\n\r\x0b\x0c\u00a0\u2003\u3000\u2028\u200b",  # whitespace cleaning, zero-width space
        "\x00\x01\x1b\x7f\x85\x9d\ufeff\u206a\ufffd",  # control characters ftfy removes or keeps
        "éèêëàâäçñöüßÉÀÇÑÖÜİıſKΣσςæœøåÅ",  # accents, case-mapping oddities (İ, ſ, Kelvin, final sigma)
        "e\u0301a\u0308n\u0303",  # combining marks (NFC)
        "狗猫修道院東京日本語한국어ひらがなカタカナ",  # CJK, Hangul, kana
        "ＡＢＣａｂｃ１２３！？",  # fullwidth (ftfy narrows)
        "ﬁﬂ“”‘’«»–—…",  # ligatures, curly quotes, dashes
        "Ã©Ã¨Ã¢â€™â€œ",  # mojibake pieces (ftfy repairs)
        "😀🐶🏳️‍🌈👍🏽❤️",  # emoji, ZWJ sequences, variation selectors, skin tones
        "مرحباשלוםПриветनमस्ते",  # RTL scripts, Cyrillic, Devanagari
        "\ud83d\ude00\udc00",  # surrogates: a valid pair and a lone one (ftfy mends or replaces)
    ]
    words = ["&amp;", "&lt;", "&#39;", "&amp;amp;", "'s", "'ll", "'ſ", "<start_of_text>", "<end_of_text>",
             "photo", "it's", "dog's", "naïve", "café"]
    texts = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(0, 12)):
            if rng.random() < 0.15:
                parts.append(rng.choice(words))
            else:
                alphabet = rng.choice(alphabets)
                parts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 10))))
        texts.append(rng.choice(["", " ", "\n"]).join(parts))
    return texts


def test_ram_tag_list(tokenizer: ClipTokenizer, reference: Any) -> None:
    if not TAG_LIST.is_file():
        pytest.skip(f"{TAG_LIST} not found (set RAMCLI_SHARED)")
    tags = TAG_LIST.read_text(encoding="utf-8").splitlines()
    assert len(tags) > 4000
    assert_same(tokenizer, reference, tags)


def test_prompt_templates(tokenizer: ClipTokenizer, reference: Any) -> None:
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    assert_same(tokenizer, reference, [template(tag) for template in OPENAI_IMAGENET_TEMPLATES for tag in SOME_TAGS])


def test_openset_prompts(tokenizer: ClipTokenizer, reference: Any) -> None:
    """The exact strings open-set tags are built from (RAM++'s prompt templates, "This is " prefixes)."""
    openset = pytest.importorskip("ramcli.vocab.openset")
    texts = [p for tag in SOME_TAGS for p in openset.prompts(tag)]
    assert len(texts) == len(openset.TEMPLATES) * len(SOME_TAGS) > 0
    assert_same(tokenizer, reference, texts)


@pytest.mark.parametrize("texts", [
    pytest.param(["a photo of a dog.", "A PHOTO OF A DOG.", "A Photo Of A Dog"], id="case"),
    pytest.param(["it's", "dog's", "they're", "we've", "i'm", "you'll", "he'd", "IT'S", "dogs'", "'s"],
                 id="apostrophes"),
    pytest.param(["hello, world!", "what?!...", "(a) [b] {c}", "--->", "e-mail", "#hashtag @user", "a/b\\c",
                  "100%", "$5.99", "c++", "x_y_z", "..."], id="punctuation"),
    pytest.param(["0", "42", "3.14159", "1,000,000", "2024-01-01", "4x4", "b2b", "12th", "٣", "1st place"],
                 id="numbers"),
    pytest.param(["café", "naïve", "Café", "CAFÉ", "cafe\u0301", "résumé", "Ångström", "straße", "İstanbul",
                  "ΣΊΣΥΦΟΣ"], id="accents"),
    pytest.param(["狗", "修道院", "日本語のテキスト", "한국어", "狗 dog 猫", "东京tower"], id="cjk"),
    pytest.param(["🐶", "dog 🐶🐱", "👍🏽", "🏳️‍🌈 flag", "❤️", "a😀b"], id="emoji"),
    pytest.param(["fish &amp; chips", "&lt;b&gt;", "&amp;amp;lt;", "&#39;quoted&#39;", "&nbsp;x", "a & b",
                  "&unknown;", "<b>bold</b> &amp;", "&#xD800;&#0;"], id="html"),
    pytest.param(["  dog  ", "dog\ncat", "dog\t\tcat", "\r\ndog\r\n", "a\u00a0b", "a\u3000b", "\n\n", " ",
                  "a\u2028b", "x\x0by\x0cz"], id="whitespace"),
    pytest.param(["", "a", ".", "'"], id="tiny"),
    pytest.param(["Ã©tÃ©", "â€œquotedâ€\x9d", "ﬁnance", "“curly” ‘quotes’", "ＬＯＵＤ　ＮＯＩＳＥＳ",
                  "\x1b[31mred\x1b[0m", "a\x00b\x7fc", "\ufeffbom"], id="ftfy-fixes"),
    pytest.param(["<start_of_text>", "x <end_of_text> y", "<START_OF_TEXT>", "<start_of_text><end_of_text>"],
                 id="special-token-strings"),
])
def test_cases(tokenizer: ClipTokenizer, reference: Any, texts: list[str]) -> None:
    assert_same(tokenizer, reference, texts)


def test_truncation(tokenizer: ClipTokenizer, reference: Any) -> None:
    texts = ["dog " * 75, "dog " * 76, "dog " * 200, "supercalifragilisticexpialidocious " * 30, "猫" * 100,
             " ".join(str(i) for i in range(100))]
    assert_same(tokenizer, reference, texts)
    ids = tokenizer(texts)
    assert (ids[:, -1] == tokenizer.eot_token_id).all()  # cut rows still end with end-of-text
    assert ids[0, 76] == tokenizer.eot_token_id and ids[0, 75] != tokenizer.eot_token_id
    assert (ids[:, 0] == 49406).all() and tokenizer.eot_token_id == 49407


def test_random_strings(tokenizer: ClipTokenizer, reference: Any) -> None:
    assert_same(tokenizer, reference, random_texts(seed=1234, count=400))


def test_random_ascii(tokenizer: ClipTokenizer, reference: Any) -> None:
    """All 128 ASCII characters, where the no-ftfy shortcut is taken or, for "&" and controls, not."""
    rng = random.Random(99)
    ascii_chars = [chr(c) for c in range(128)] + list("abcdefghijklmnopqrstuvwxyz ") * 3
    texts = ["".join(rng.choice(ascii_chars) for _ in range(rng.randint(0, 60))) for _ in range(300)]
    assert_same(tokenizer, reference, texts)


def test_encode_and_call_shapes(tokenizer: ClipTokenizer, reference: Any) -> None:
    text = "There is a red bicycle in the scene."
    assert tokenizer.encode(text) == reference.encode(text)
    assert tokenizer.encode("") == []
    assert tokenizer(text).shape == (1, 77)
    assert tokenizer([]).shape == (0, 77)
    assert np.array_equal(tokenizer(""), reference("").numpy())
    assert tokenizer.vocab_size == 49408


def test_other_context_length(reference: Any) -> None:
    short = ClipTokenizer(context_length=8)
    texts = ["a photo of a dog.", "a photo of a very very large dog.", ""]
    assert np.array_equal(short(texts), reference(texts, context_length=8).numpy())
    with pytest.raises(ValueError, match="context_length"):
        ClipTokenizer(context_length=0)


def test_plain_ascii_needs_no_ftfy(tokenizer: ClipTokenizer) -> None:
    """The shortcut that skips ftfy for plain ASCII is only right if ftfy leaves such text alone."""
    ftfy = pytest.importorskip("ftfy")
    rng = random.Random(7)
    plain = clip_tokenizer._PLAIN_CHARS
    texts = [*plain, *("".join(rng.choice(plain) for _ in range(rng.randint(1, 40))) for _ in range(2000))]
    changed = [t for t in texts if " ".join(ftfy.fix_text(t).split()) != " ".join(t.split())]
    assert changed == []  # ftfy only turns \r into \n here, which whitespace cleaning makes the same
    # and every other ASCII character is one ftfy may change, so the shortcut does not apply to it
    assert {chr(c) for c in range(128)} - set(plain) == {"&", *(chr(c) for c in range(32) if chr(c) not in "\t\n\r"),
                                                          "\x7f"}


def test_without_ftfy(monkeypatch: pytest.MonkeyPatch, reference: Any) -> None:
    """ramcli's fallback: no ftfy, no fixing. Ordinary text is unaffected; text ftfy would mend differs."""
    monkeypatch.setitem(sys.modules, "ftfy", None)  # makes `import ftfy` raise ImportError
    bare = ClipTokenizer()
    assert not bare.fixes_text
    ordinary = ["a photo of a dog.", "café", "狗", "fish &amp; chips", "naïve 🐶", "  dog\ncat  ",
                "\ud83d\ude00 a\udcff"]  # surrogates are still mended: argv holds undecodable bytes so
    assert np.array_equal(bare(ordinary), reference(ordinary).numpy())
    assert not np.array_equal(bare("Ã©tÃ©"), reference("Ã©tÃ©").numpy())


def test_explicit_bpe_path(tmp_path: Path, tokenizer: ClipTokenizer) -> None:
    texts = ["a photo of a café.", "修道院", "dog's"]
    gz_copy = shutil.copy(default_bpe_path(), tmp_path / "bpe.txt.gz")
    assert np.array_equal(ClipTokenizer(Path(gz_copy))(texts), tokenizer(texts))
    plain = tmp_path / "bpe.txt"  # an uncompressed copy works too
    plain.write_bytes(gzip.decompress(default_bpe_path().read_bytes()))
    assert np.array_equal(ClipTokenizer(plain)(texts), tokenizer(texts))


def test_bad_bpe_files(tmp_path: Path) -> None:
    with pytest.raises(RamcliError, match="not found") as err:
        ClipTokenizer(tmp_path / "missing.txt.gz")
    assert "missing.txt.gz" in str(err.value)
    short = tmp_path / "short.txt.gz"
    short.write_bytes(gzip.compress(b"#version: 0.2\nh e\nt h</w>\n"))
    with pytest.raises(RamcliError, match="not a CLIP BPE vocabulary"):
        ClipTokenizer(short)
    truncated = tmp_path / "truncated.txt.gz"
    truncated.write_bytes(default_bpe_path().read_bytes()[:100_000])
    with pytest.raises(RamcliError, match="not a CLIP BPE vocabulary"):
        ClipTokenizer(truncated)
    binary = tmp_path / "binary.bin"
    binary.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(RamcliError, match="cannot read"):
        ClipTokenizer(binary)


def test_default_bpe_path(monkeypatch: pytest.MonkeyPatch) -> None:
    path = default_bpe_path()
    assert path.name == "bpe_simple_vocab_16e6.txt.gz" and path.parent.name == "open_clip" and path.is_file()
    monkeypatch.setattr(clip_tokenizer.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RamcliError, match="open_clip is not installed"):
        default_bpe_path()


def test_no_torch_or_open_clip_at_run_time() -> None:
    """Importing, locating the vocabulary (find_spec) and tokenizing must not import torch or open_clip."""
    code = ("import sys\nfrom ramcli.runtime.clip_tokenizer import ClipTokenizer\n"
            "ids = ClipTokenizer()(['a photo of a café.', 'fish &amp; chips'])\n"
            "assert ids.shape == (2, 77), ids.shape\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'open_clip')))\n")
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                          cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert "ramcli.runtime.clip_tokenizer" in imported
    assert not [m for m in imported if m.split(".")[0] in ("torch", "open_clip")]
