"""Tag2Text: key layout, golden parity (tags and captions), tokenizer, beam search, end to end.

The golden fixtures (../shared/golden/tag2text_tiny) hold what the authors' code computed on a
tiny Tag2Text; tests that need them skip when ../shared is absent. Everything else runs on
models and vocabularies built here.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_convert import official_keys

from conftest import write_tag_files
from ramcli.errors import CheckpointError
from ramcli.models.convert.tag2text import (
    Tag2TextModel,
    build_model,
    full_config,
    infer_config,
    is_tag2text_state,
    official_state_dict,
    random_model,
    remap_keys,
    save_checkpoint,
    tiny_config,
)
from ramcli.runtime.beam_search import BeamSettings, beam_search, log_softmax
from ramcli.runtime.wordpiece import WordPiece

TOL = 1e-4
GOLDEN_NAME = "tag2text_tiny"


# ---------------------------------------------------------------- key layout

def test_full_size_key_layout_matches_official(shared: Path) -> None:
    raw = official_keys(shared, "tag2text_swin_b")
    assert is_tag2text_state(raw)
    state = remap_keys(raw)
    cfg = infer_config(state)
    assert cfg == full_config()
    assert (cfg.encoder.layers, cfg.encoder.heads, cfg.encoder.cross_width) == (12, 12, 1024)
    assert (cfg.decoder.vocab_size, cfg.decoder.cross_width) == (30524, 768)
    with torch.device("meta"):
        model = Tag2TextModel(cfg)
    ours = model.state_dict()
    assert set(ours) == set(state)
    assert all(tuple(ours[k].shape) == tuple(state[k].shape) for k in ours)
    # What we drop is only what we recompute, and a file we write has exactly the official keys.
    dropped = set(raw) - set(state)
    assert all(k.endswith(("relative_position_index", "attn_mask", "embeddings.position_ids")) for k in dropped)
    written = official_state_dict(model)
    assert set(written) == set(raw)
    assert all(tuple(written[k].shape) == tuple(raw[k].shape) for k in raw)


def test_ram_checkpoints_are_not_tag2text(shared: Path) -> None:
    for name in ("ram_swin_l", "ram_plus_swin_l"):
        assert not is_tag2text_state(official_keys(shared, name))


# ---------------------------------------------------------------- golden parity

@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory):
    from conftest import GOLDEN, SHARED
    from ramcli.models.convert.tag2text_export import import_tag2text
    from ramcli.runtime.caption import Tag2Text
    from ramcli.runtime.engine import EngineOptions

    if not GOLDEN.is_dir():
        pytest.skip("shared golden fixtures not present")
    g = GOLDEN / GOLDEN_NAME
    config = json.loads((g / "config.json").read_text(encoding="utf-8"))
    heads = config["official_config_files_used"]["med_config.json"]["num_attention_heads"]
    installed = import_tag2text(g / "checkpoint.pth", "golden_tag2text", tag_list=g / "tag_list.txt",
                                vocab=SHARED / "data" / "bert-base-uncased" / "vocab.txt", text_heads=heads)
    expected = json.loads((g / "expected.json").read_text(encoding="utf-8"))
    return installed, Tag2Text(installed, EngineOptions(device="cpu")), g, expected, config


@pytest.fixture(scope="module")
def golden_run(golden):
    """All four golden images, decoded and preprocessed by ramcli, tagged and captioned as a batch."""
    from conftest import GOLDEN
    from ramcli.runtime.images import load_input

    installed, rt, _, expected, _ = golden
    images = np.stack([load_input(GOLDEN / "images" / name, installed.preprocess)[0] for name in expected["images"]])
    embeds = rt.encode(images)
    return images, embeds, rt.logits(embeds), rt.run(images)


def test_golden_import_parity_and_meta(golden) -> None:
    installed, _, _, _, config = golden
    meta = installed.meta
    assert meta["family"] == "tag2text" and meta["num_tags"] == 40
    assert meta["caption"]["delete_tag_index"] == []  # the released indices are all >= 40
    assert meta["caption"]["special_tokens"] == {"[DEC]": config["captioning"]["bos_token_id"],
                                                 "[ENC]": config["captioning"]["enc_token_id"],
                                                 "[SEP]": 102, "[PAD]": 0}
    parity = meta["parity"]
    assert parity["logits_max_abs"] < 1e-5 and parity["tag_embeds_max_abs"] < 1e-4
    assert parity["decoder_logits_max_abs"] < 1e-3 and parity["caption_ids_equal"]
    np.testing.assert_array_equal(installed.thresholds, np.asarray(config["class_threshold"], dtype=np.float32))


def test_golden_image_embeddings(golden) -> None:
    _, rt, g, _, _ = golden
    embeds = rt.encode(np.load(g / "inputs.npy"))
    ref = np.load(g / "image_embeds.npy")
    assert embeds.shape == ref.shape == (1, 145, 256)
    assert np.abs(embeds - ref).max() < TOL


def test_golden_logits_and_tags_on_all_images(golden, golden_run) -> None:
    _, _, _, expected, _ = golden
    _, _, logits, results = golden_run
    for i, name in enumerate(expected["images"]):
        exp = expected["results"][name]
        assert np.abs(logits[i] - np.asarray(exp["logits"], dtype=np.float32)).max() < TOL, name
        assert [t.index for t in results[i].tags] == exp["tag_indices"]
        assert results[i].caption_tags == exp["tags"] == exp["caption_input_tags"]


def test_golden_tokenization(golden) -> None:
    _, rt, _, expected, config = golden
    for name in expected["images"]:
        exp = expected["results"][name]
        ids, mask = rt.tag_inputs([exp["caption_input_tags"]])
        n = len(exp["tag_encoder_input_ids"])
        assert ids.shape == (1, exp["tag_encoder_input_len_padded"])
        assert ids[0, :n].tolist() == exp["tag_encoder_input_ids"] and not ids[0, n:].any()
        assert mask[0].tolist() == [1] * n + [0] * (40 - n)
        assert rt.prompt_ids() == exp["generate_input_ids"]
    assert rt.settings.prompt == config["captioning"]["prompt"]


def test_golden_captions_on_all_images(golden, golden_run) -> None:
    _, rt, _, expected, _ = golden
    _, _, _, results = golden_run
    for i, name in enumerate(expected["images"]):
        exp = expected["results"][name]
        assert results[i].ids == exp["generated_ids"], name
        assert results[i].caption == exp["caption"], name
        assert rt.text(exp["generated_ids"]) == exp["caption"]


def test_golden_caption_one_image_at_a_time_matches_batch(golden, golden_run) -> None:
    _, rt, _, _, _ = golden
    images, _, _, results = golden_run
    for i in (0, 3):
        alone = rt.run(images[i:i + 1])[0]
        assert alone.ids == results[i].ids and alone.caption_tags == results[i].caption_tags


def test_user_tags_replace_predicted_ones(golden, golden_run) -> None:
    _, rt, _, expected, _ = golden
    images, _, _, results = golden_run
    given = rt.run(images[:2], user_tags=[["watercolor illustration", "ranch"], None])
    assert given[0].caption_tags == "watercolor illustration | ranch"
    assert [t.index for t in given[0].tags] == [t.index for t in results[0].tags]  # tagging unchanged
    assert given[0].ids != results[0].ids
    assert given[1].ids == expected["results"][expected["images"][1]]["generated_ids"]
    same = rt.run(images[:1], user_tags=[results[0].caption_tags])[0]
    assert same.ids == results[0].ids


# ---------------------------------------------------------------- tokenizer (no shared files)

SYNTH_VOCAB = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "picture", "of", "tag", "photo",
               "the", "cafe", "dog", "##s", "un", "##believ", "##able", "|", ".", ",", "'", "!", "?", "s", "t",
               "don", "中", "文", "x", "##x", "-", *"0123456789", *(f"##{d}" for d in "0123456789")]


def synth_tokenizer() -> WordPiece:
    return WordPiece(SYNTH_VOCAB)


def test_tokenize_like_bert_basic_and_wordpiece() -> None:
    wp = synth_tokenizer()
    assert wp.tokenize("Unbelievable DOGS") == ["un", "##believ", "##able", "dog", "##s"]
    assert wp.tokenize("Café | dog!") == ["cafe", "|", "dog", "!"]  # accents stripped, punctuation split
    assert wp.tokenize("中文x") == ["中", "文", "x"]  # CJK characters stand alone
    assert wp.tokenize("dogx zebra") == ["dog", "##x", "[UNK]"]  # no piece covers "zebra"
    assert wp.tokenize("x" * 101) == ["[UNK]"] and wp.tokenize("x" * 100) == ["x"] + ["##x"] * 99
    assert wp.tokenize("tag 042") == ["tag", "0", "##4", "##2"]
    assert wp.tokenize("a\u00a0dog\x00\ufffd\u200b") == ["a", "dog"]  # no-break space splits; controls vanish
    assert wp.tokenize("dog [SEP] x[ENC]a [sep]") == ["dog", "[SEP]", "x", "[ENC]", "a", "[UNK]", "[UNK]", "[UNK]"]


def test_encode_pads_truncates_and_adds_specials() -> None:
    wp = synth_tokenizer()
    assert wp.vocab_size == len(SYNTH_VOCAB) + 2
    assert (wp.id_of("[DEC]"), wp.id_of("[ENC]")) == (len(SYNTH_VOCAB), len(SYNTH_VOCAB) + 1)
    ids, mask = wp.encode_padded("a dog", 6)
    assert ids == [3, 6, 13, 4, 0, 0] and mask == [1, 1, 1, 1, 0, 0]
    ids, mask = wp.encode_padded(" | ".join(["dog"] * 30), 40)
    assert len(ids) == 40 and ids[-1] == 4 and all(mask)
    assert wp.encode("") == [3, 4]


def test_decode_like_transformers() -> None:
    wp = synth_tokenizer()
    ids = [wp.id_of(t) for t in ["[DEC]", "a", "picture", "of", "##s", "dog", ",", "don", "'", "t", "!", "[SEP]",
                                 "[PAD]", "[UNK]", "[unused0]"]]
    assert wp.decode(ids) == "a picture ofs dog, don't! [unused0]"  # [UNK] is special, [unusedN] is not
    assert wp.decode(ids, skip_special_tokens=False) == \
        "[DEC] a picture ofs dog, don't! [SEP] [PAD] [UNK] [unused0]"
    assert wp.decode([]) == ""


# ---------------------------------------------------------------- beam search

def _table(rows: int, cols: int, salt: int) -> np.ndarray:
    """Exact, platform-independent pseudo-random values (no RNG stream to drift between versions)."""
    i = np.arange(rows, dtype=np.int64)[:, None]
    j = np.arange(cols, dtype=np.int64)[None, :]
    return (((i * 2654435761 + j * 40503 + salt * 97) % 100003) / 10000.3 - 5.0).astype(np.float32)


class ToyDecoder:
    """A small LM with state beyond the last token, as a beam_search.Decoder (keeps its rows'
    sequences as its cache): logits = A[last] + B[second last] + P[length] + C[image]."""

    def __init__(self, vocab: int, images: int, beams: int, eos: int, eos_bias: float, salt: int) -> None:
        self.A = _table(vocab + 1, vocab, salt + 1)
        self.B = _table(vocab + 1, vocab, salt + 2) * np.float32(0.5)
        self.P, self.C = _table(64, vocab, salt + 3) * np.float32(0.3), _table(images, vocab, salt + 4)
        self.A[:, eos] += np.float32(eos_bias)
        self.image = np.repeat(np.arange(images), beams)
        self.ids: np.ndarray | None = None
        self.rows_per_call: list[int] = []

    def __call__(self, new_ids: np.ndarray) -> np.ndarray:
        self.rows_per_call.append(len(new_ids))
        self.ids = new_ids if self.ids is None else np.concatenate([self.ids, new_ids], axis=1)
        return self.A[self.ids[:, -1]] + self.B[self.ids[:, -2]] + self.P[self.ids.shape[1]] + self.C[self.image]

    def reorder(self, rows: np.ndarray) -> None:
        assert self.ids is not None
        self.ids, self.image = self.ids[rows], self.image[rows]


# (salt, vocab, eos, eos_bias, prompts, (beams, max_length, min_length, length_penalty, repetition_penalty,
# early_stopping), ids) — ids computed by transformers 4.25.1 ``generate`` on the same toy LM (a
# PreTrainedModel wrapper, pad_token_id outside the outputs shown), covering eos at different
# steps per image, early stopping, length and repetition penalties, min_length == max_length.
TRANSFORMERS_425_CASES = [
    (1, 5, 1, 6.0, [[0, 2, 3]], (3, 14, 0, 2.0, 1.0, False),
     [[0, 2, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]]),
    (5, 13, 7, 9.0, [[1, 2, 3, 4, 5], [2, 3, 4, 5, 6], [3, 4, 5, 6, 0]], (4, 10, 8, 0.5, 1.3, False),
     [[1, 2, 3, 4, 5, 9, 12, 12, 7], [2, 3, 4, 5, 6, 1, 1, 1, 1, 1], [3, 4, 5, 6, 0, 4, 4, 9, 7]]),
    (11, 8, 2, 9.0, [[1, 0, 3], [0, 3, 4], [3, 4, 5]], (4, 12, 6, 2.0, 1.0, True),
     [[1, 0, 3, 4, 4, 4, 4, 4, 2], [0, 3, 4, 3, 3, 3, 3, 2], [3, 4, 5, 4, 4, 4, 4, 4, 2]]),
    (15, 13, 12, 4.0, [[1, 2, 3], [2, 3, 4]], (4, 16, 6, 2.0, 1.0, True),
     [[1, 2, 3, 7, 7, 7, 12], [2, 3, 4, 8, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]]),
    (18, 8, 6, 9.0, [[1, 2, 3], [2, 3, 4], [3, 4, 5]], (2, 8, 0, 2.0, 1.3, False),
     [[1, 2, 3, 7, 6], [2, 3, 4, 3, 3, 3, 3, 3], [3, 4, 5, 6]]),
    (20, 5, 2, 6.0, [[1, 0, 3, 4, 1], [0, 3, 4, 1, 0]], (3, 11, 5, 1.0, 1.3, False),
     [[1, 0, 3, 4, 1, 2], [0, 3, 4, 1, 0, 2]]),
    (22, 5, 4, 9.0, [[1, 2], [2, 3], [3, 0]], (4, 11, 0, 2.0, 1.0, False),
     [[1, 2, 4], [2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3], [3, 0, 4]]),
    (30, 5, 1, 0.0, [[0, 2]], (3, 7, 7, 1.0, 1.0, False),
     [[0, 2, 2, 2, 2, 2, 2]]),
    (41, 13, 10, 9.0, [[1, 2, 3, 4, 5]], (3, 18, 5, 1.0, 1.0, False),
     [[1, 2, 3, 4, 5, 10]]),
    (75, 13, 10, 6.0, [[1, 2, 3], [2, 3, 4], [3, 4, 5]], (4, 15, 6, 1.0, 1.3, False),
     [[1, 2, 3, 8, 6, 6, 11, 9, 12, 12, 10], [2, 3, 4, 8, 8, 8, 10],
      [3, 4, 5, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 4, 9]]),
]


@pytest.mark.parametrize("case", TRANSFORMERS_425_CASES, ids=[str(c[0]) for c in TRANSFORMERS_425_CASES])
def test_beam_search_matches_transformers_425(case) -> None:
    salt, vocab, eos, bias, prompts, (beams, max_len, min_len, lp, rp, early), expected = case
    settings = BeamSettings(num_beams=beams, max_length=max_len, min_length=min_len, eos_id=eos,
                            length_penalty=lp, repetition_penalty=rp, early_stopping=early)
    dec = ToyDecoder(vocab, len(prompts), beams, eos, bias, salt)
    assert beam_search(dec, np.asarray(prompts), settings) == expected
    if salt == 22:  # images 0 and 2 finish early: then only image 1's beams stay in the decoder
        assert dec.rows_per_call[0] == 12 and dec.rows_per_call[-1] == 4


def test_eos_forbidden_below_min_length_then_taken() -> None:
    dec = ToyDecoder(9, 2, 3, eos=4, eos_bias=50.0, salt=7)  # the LM wants eos at every step
    out = beam_search(dec, np.asarray([[1, 2, 3], [2, 3, 5]]), BeamSettings(max_length=20, min_length=10, eos_id=4))
    for ids in out:
        assert len(ids) == 11 and ids[-1] == 4 and 4 not in ids[3:-1]
    # Stopped one step after eos became allowed: the step that shows no longer hypothesis can win.
    assert len(dec.rows_per_call) == 10 - 3 + 2


def test_no_eos_runs_to_max_length_without_eos_appended() -> None:
    dec = ToyDecoder(9, 1, 3, eos=4, eos_bias=-50.0, salt=3)
    (ids,) = beam_search(dec, np.asarray([[1, 2]]), BeamSettings(max_length=12, min_length=5, eos_id=4))
    assert len(ids) == 12 and 4 not in ids


def test_enough_beams_make_beam_search_exhaustive() -> None:
    """With beams >= every prefix and eos forbidden, beam search must return the best of all
    vocab^steps continuations by total log-probability: checked by brute force."""
    vocab, steps, prompt = 4, 3, [1, 2]
    dec = ToyDecoder(vocab, 1, vocab**steps, eos=0, eos_bias=0.0, salt=11)
    settings = BeamSettings(num_beams=vocab**steps, max_length=len(prompt) + steps,
                            min_length=len(prompt) + steps, eos_id=0)
    (got,) = beam_search(dec, np.asarray([prompt]), settings)
    best, best_score = None, -np.inf
    for tail in itertools.product(range(1, vocab), repeat=steps):  # eos (0) is forbidden throughout
        seq, score = list(prompt), 0.0
        for token in tail:
            ref = ToyDecoder(vocab, 1, 1, eos=0, eos_bias=0.0, salt=11)
            score += float(log_softmax(ref(np.asarray([seq])))[0, token])
            seq.append(token)
        if score > best_score:
            best, best_score = seq, score
    assert got == best


def test_batch_equals_images_one_by_one() -> None:
    prompts = np.asarray([[1, 2, 3], [2, 3, 4], [3, 4, 5]])
    settings = BeamSettings(num_beams=3, max_length=15, min_length=6, eos_id=10)
    together = beam_search(ToyDecoder(13, 3, 3, 10, 6.0, 75), prompts, settings)
    for i in range(3):
        dec = ToyDecoder(13, 3, 3, 10, 6.0, 75)
        dec.image = np.full(3, i)
        assert beam_search(dec, prompts[i:i + 1], settings) == [together[i]]


# ---------------------------------------------------------------- random tiny model, end to end

@pytest.fixture(scope="module")
def tiny_t2t(tmp_path_factory: pytest.TempPathFactory):
    from ramcli.models.convert.checkpoint import load_state_dict
    from ramcli.models.convert.tag2text_export import import_tag2text

    folder = tmp_path_factory.mktemp("tiny-t2t")
    files = write_tag_files(folder)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(SYNTH_VOCAB) + "\n", encoding="utf-8")
    model = random_model(tiny_config(vocab_size=len(SYNTH_VOCAB) + 2))
    ckpt = save_checkpoint(model, folder / "tiny_tag2text.pth")
    installed = import_tag2text(ckpt, "tiny_tag2text", load_state_dict(ckpt), tag_list=files["tag_list"], vocab=vocab)
    return model, installed, files, vocab, ckpt


def test_tiny_import_writes_a_complete_model_folder(tiny_t2t) -> None:
    from ramcli.models import store
    from ramcli.runtime.caption import GRAPHS, VOCAB

    _, installed, _, vocab, _ = tiny_t2t
    assert store.get("tiny_tag2text").family == "tag2text"
    for name in (*GRAPHS, VOCAB, store.TAG_LIST, store.THRESHOLDS, store.META):
        assert (installed.path / name).is_file(), name
    assert (installed.path / VOCAB).read_bytes() == vocab.read_bytes()
    assert np.all(installed.thresholds == np.float32(0.68))  # no special index below 40
    parity = installed.meta["parity"]
    assert parity["logits_max_abs"] < 1e-5 and parity["decoder_logits_max_abs"] < 1e-3
    assert parity["caption_ids_equal"]


def test_tiny_full_caption_matches_pytorch(tiny_t2t, tmp_path: Path) -> None:
    """Full-length beam search: the cached ONNX step graph against PyTorch recomputing whole sequences."""
    from conftest import make_photo
    from ramcli.models.convert.tag2text_export import TorchDecoder
    from ramcli.runtime.caption import Tag2Text
    from ramcli.runtime.engine import EngineOptions
    from ramcli.runtime.images import load_input

    model, installed, _, _, _ = tiny_t2t
    rt = Tag2Text(installed, EngineOptions(device="cpu"))
    images = np.stack([load_input(make_photo(tmp_path / f"{i}.jpg", seed=i), installed.preprocess)[0]
                       for i in range(2)])
    results = rt.run(images, user_tags=[None, "tag 001 | tag 017"])
    with torch.no_grad():
        embeds = model.encode_image(torch.from_numpy(images))
        logits = model.tag_logits(embeds).numpy()
        ids, mask = rt.tag_inputs([r.caption_tags for r in results])
        tag_embeds = model.encode_tags(torch.from_numpy(ids), torch.from_numpy(mask), embeds)
    assert np.abs(rt.logits(rt.encode(images)) - logits).max() < TOL
    ref = beam_search(TorchDecoder(model, tag_embeds, 3), np.asarray([rt.prompt_ids()] * 2), rt.beam_settings())
    assert [r.ids for r in results] == ref
    assert results[1].caption_tags == "tag 001 | tag 017"
    for r in results:
        scores = [t.score for t in r.tags]
        assert [t.index for t in r.tags] == sorted(t.index for t in r.tags) and min(scores, default=1) > 0.68
        assert r.ids[:4] == rt.prompt_ids() and r.caption == rt.text(r.ids)


def test_verify_reruns_parity_from_the_source_checkpoint(tiny_t2t) -> None:
    from ramcli.models.convert.tag2text_export import verify

    result = verify("tiny_tag2text")
    assert result["ok"] and result["caption_ids_equal"]


def test_strict_loading_names_what_is_wrong(tiny_t2t) -> None:
    from ramcli.models.convert.checkpoint import load_state_dict

    *_, ckpt = tiny_t2t
    state = remap_keys(load_state_dict(ckpt))
    cfg = infer_config(state)
    broken = dict(state)
    del broken["text_decoder.bert.encoder.layer.1.crossattention.output.dense.bias"]
    with pytest.raises(CheckpointError, match=r"1 missing: text_decoder\.bert\.encoder\.layer\.1\.crossattention"):
        build_model(broken, cfg)
    untied = dict(state)
    untied["text_decoder.cls.predictions.decoder.weight"] = state["text_decoder.cls.predictions.decoder.weight"] + 1
    with pytest.raises(CheckpointError, match="tied"):
        build_model(untied, cfg)


def test_import_refuses_mismatched_tag_list_and_vocab(tiny_t2t, tmp_path: Path) -> None:
    from ramcli.models.convert.tag2text_export import import_tag2text

    _, _, files, vocab, ckpt = tiny_t2t
    short = tmp_path / "tags.txt"
    short.write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match="40 tags, but the tag list has 2"):
        import_tag2text(ckpt, "bad", tag_list=short, vocab=vocab)
    small = tmp_path / "vocab.txt"
    small.write_text("\n".join(SYNTH_VOCAB[:-1]), encoding="utf-8")
    with pytest.raises(CheckpointError, match="vocabulary"):
        import_tag2text(ckpt, "bad", tag_list=files["tag_list"], vocab=small)


def test_released_thresholds_rule() -> None:
    from ramcli.models.convert.tag2text_export import special_thresholds

    full = special_thresholds(3429, 0.68)
    assert [i for i, v in enumerate(full) if v != 0.68] == [1167, 2701, 2828]
    assert set(special_thresholds(40, 0.68)) == {0.68}


def test_runtime_modules_do_not_import_torch() -> None:
    code = ("import sys, ramcli.runtime.caption, ramcli.runtime.wordpiece, ramcli.runtime.beam_search; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_graphs_keep_their_weights_in_external_data_files(tiny_t2t) -> None:
    """Weights next to each graph (memory-mapped by onnxruntime), the .onnx itself small."""
    from ramcli.runtime.caption import GRAPHS

    _, installed, _, _, _ = tiny_t2t
    for name in GRAPHS:
        graph, data = installed.path / name, installed.path / f"{name}.data"
        assert data.is_file() and data.stat().st_size > graph.stat().st_size, name
        assert data.stat().st_mode == graph.stat().st_mode, name  # onnx alone makes it 0600


# ---------------------------------------------------------------- import, pull and verify entry points

def test_verify_dispatches_by_family(tiny_t2t) -> None:
    """`ramcli models verify` calls converters.verify for every family; for Tag2Text it re-runs the
    captioning parity and reports the keys the CLI prints."""
    from conftest import run_cli
    from ramcli.models.convert.converters import verify

    result = verify("tiny_tag2text")
    assert result["ok"] and result["caption_ids_equal"] and result["scores_max_abs"] < 1e-5
    human = run_cli("models", "verify", "tiny_tag2text")
    assert human.returncode == 0, human.stderr
    assert "max |Δ logits|" in human.stdout and "ok" in human.stdout


def test_import_local_recognises_tag2text_and_needs_a_vocab(tiny_t2t) -> None:
    from ramcli.errors import UsageError
    from ramcli.models.catalog import import_local

    _, _, files, vocab, ckpt = tiny_t2t
    with pytest.raises(UsageError, match=r"--vocab VOCAB\.txt") as err:
        import_local(ckpt, "t2t_local", tag_list=files["tag_list"])
    assert "bert-base-uncased" in str(err.value)
    with pytest.raises(UsageError, match=r"--tag-list FILE.* and --vocab VOCAB\.txt"):
        import_local(ckpt, "t2t_local", tag_list=None)
    installed = import_local(ckpt, "t2t_local", tag_list=files["tag_list"], vocab=vocab)
    assert installed.family == "tag2text" and installed.meta["source"]["kind"] == "import"
    assert installed.meta["parity"]["caption_ids_equal"]


@pytest.fixture
def fake_hub(tiny_t2t, monkeypatch: pytest.MonkeyPatch):
    """tag2text_swin_14m's manifest served from local files: the hub download and the tag-file
    fetch are replaced, the checksums pointed at the tiny files; everything else is the real pull."""
    import copy
    import hashlib

    import huggingface_hub

    from ramcli.config import Manifest, manifest
    from ramcli.models import download

    _, _, files, vocab, ckpt = tiny_t2t
    data = copy.deepcopy(manifest("tag2text_swin_14m").data)
    data["weights"]["sha256"] = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    data["architecture"]["tokenizer"]["sha256"] = hashlib.sha256(vocab.read_bytes()).hexdigest()
    data["tags"]["files"] = {"tag_list": {"url": "https://example.invalid/tags.txt"}}
    hub = {data["weights"]["filename"]: ckpt, data["architecture"]["tokenizer"]["filename"]: vocab}
    asked: list[tuple[str, str]] = []

    def hf_hub_download(*, repo_id: str, filename: str, **_kw: object) -> str:
        asked.append((repo_id, filename))
        return str(hub[filename])

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(download, "manifest", lambda name: Manifest(name, data))
    monkeypatch.setattr(download, "fetch_file", lambda url, sha, report: files["tag_list"])
    return data, hub, asked


def test_pull_fetches_weights_and_tokenizer_then_converts(fake_hub) -> None:
    from ramcli.models import download, store

    data, hub, asked = fake_hub
    installed = download.pull("tag2text_swin_14m")
    assert asked == [(data["weights"]["repo_id"], data["weights"]["filename"]),
                     ("google-bert/bert-base-uncased", "vocab.txt")]
    assert installed.family == "tag2text" and store.is_installed("tag2text_swin_14m")
    assert (installed.path / "vocab.txt").read_bytes() == hub["vocab.txt"].read_bytes()
    assert installed.meta["source"]["kind"] == "pull" and installed.meta["parity"]["caption_ids_equal"]
    assert installed.meta["caption"]["delete_tag_index"] == []  # the released indices are all >= 40
    store.remove("tag2text_swin_14m")


def test_pull_refuses_a_tokenizer_with_the_wrong_checksum(fake_hub) -> None:
    from ramcli.errors import DownloadError
    from ramcli.models import download, store

    data, _, _ = fake_hub
    data["architecture"]["tokenizer"]["sha256"] = "0" * 64
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download.pull("tag2text_swin_14m")
    assert not store.is_installed("tag2text_swin_14m")


def test_offline_pull_names_the_way_out(monkeypatch: pytest.MonkeyPatch) -> None:
    from ramcli.errors import DownloadError
    from ramcli.models import download

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match=r"offline.*ramcli models import tag2text_swin_14m\.pth"):
        download.pull("tag2text_swin_14m")
