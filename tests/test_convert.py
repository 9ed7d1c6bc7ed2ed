"""Checkpoint loading: architecture from shapes, exact key layout, strictness, bad files."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from ramcli.errors import CheckpointError
from ramcli.models.convert.checkpoint import build_model, infer_config, load_state_dict, remap_keys
from ramcli.models.convert.random_init import config, random_model, save_checkpoint

DTYPES = {"float32": torch.float32, "int64": torch.int64}


def official_keys(shared: Path, name: str) -> dict[str, torch.Tensor]:
    """A shape-only state_dict (meta tensors) from docs/keys: full size at no memory cost."""
    state = {}
    for line in (shared / "docs" / "keys" / f"{name}.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype, _ = line.split("\t", 3)
        dims = [int(d) for d in shape.strip("[]").split(",") if d.strip()]
        state[key] = torch.empty(dims, dtype=DTYPES[dtype], device="meta")
    return state


@pytest.mark.parametrize(
    ("keys", "family", "embed", "heads", "per_tag", "vision"),
    [
        ("ram_plus_swin_l", "ram_plus", 192, (6, 12, 24, 48), 51, 1536),
        ("ram_plus_swin_b", "ram_plus", 128, (4, 8, 16, 32), 51, 1024),
        ("ram_swin_l", "ram", 192, (6, 12, 24, 48), 1, 1536),
    ],
)
def test_full_size_architecture_and_key_layout(shared: Path, keys: str, family: str, embed: int,
                                               heads: tuple[int, ...], per_tag: int, vision: int) -> None:
    state = remap_keys(official_keys(shared, keys))
    cfg = infer_config(state, num_tags=4585)
    assert cfg.family == family
    assert cfg.swin.embed_dim == embed and cfg.swin.num_heads == heads
    assert cfg.swin.depths == (2, 2, 18, 2) and cfg.swin.window_size == 12
    assert cfg.swin.image_size == 384  # read from the shift-mask buffers
    assert cfg.swin.num_features == vision and cfg.swin.num_tokens == 145
    assert (cfg.head.hidden, cfg.head.layers, cfg.head.intermediate, cfg.head.kv_width) == (768, 2, 3072, 512)
    assert cfg.descriptions_per_tag == per_tag
    with torch.device("meta"):
        from ramcli.models.convert.ram import RamModel

        ours = RamModel(cfg).state_dict()
    # Every tensor the model needs is in the official file under the same name and shape, and
    # nothing in the file is left unused except the recomputed buffers and captioning modules.
    assert set(ours) == set(state)
    assert all(tuple(ours[k].shape) == tuple(state[k].shape) for k in ours)


def test_tag2text_is_recognised_and_refused_clearly(shared: Path) -> None:
    state = remap_keys(official_keys(shared, "tag2text_swin_b"))
    with pytest.raises(CheckpointError, match="Tag2Text"):
        infer_config(state, num_tags=3429)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(random_model(config("ram_plus")), tmp_path_factory.mktemp("c") / "tiny.pth")


def test_roundtrip_with_and_without_buffers(tiny_file: Path, tmp_path: Path) -> None:
    raw = load_state_dict(tiny_file)
    assert any(k.endswith("attn_mask") for k in raw)  # written like the official files
    without = {k: v for k, v in raw.items() if not k.endswith(("attn_mask", "relative_position_index"))}
    bare = tmp_path / "bare.pth"
    torch.save(without, bare)  # plain state_dict, no {"model": ...} wrapper
    for path in (tiny_file, bare):
        state = remap_keys(load_state_dict(path))
        model = build_model(state, infer_config(state, 40))
        assert torch.equal(model.label_embed, raw["label_embed"])


def test_old_tagging_head_name_is_renamed(tiny_file: Path) -> None:
    raw = load_state_dict(tiny_file)
    legacy = {k.replace("tagging_head.", "vision_multi.", 1): v for k, v in raw.items()}
    assert set(remap_keys(legacy)) == set(remap_keys(raw))


def test_missing_tensor_is_named(tiny_file: Path) -> None:
    state = remap_keys(load_state_dict(tiny_file))
    del state["tagging_head.encoder.layer.1.output.dense.weight"]
    with pytest.raises(CheckpointError, match=r"1 missing: tagging_head\.encoder\.layer\.1\.output\.dense\.weight"):
        build_model(state, infer_config(state, 40))


def test_wrong_shape_is_named(tiny_file: Path) -> None:
    state = remap_keys(load_state_dict(tiny_file))
    state["fc.weight"] = torch.zeros(1, 7)
    with pytest.raises(CheckpointError, match=r"wrong shape: fc\.weight"):
        build_model(state, infer_config(state, 40))


def test_tag_count_must_divide_label_rows(tiny_file: Path) -> None:
    state = remap_keys(load_state_dict(tiny_file))
    with pytest.raises(CheckpointError, match="--tag-list"):
        infer_config(state, 41)


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage", "pickle", "not_tensors"])
def test_damaged_files_give_one_line(tiny_file: Path, tmp_path: Path, damage: str) -> None:
    path = tmp_path / f"{damage}.pth"
    data = tiny_file.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 3])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(b"\x00\x01not a checkpoint" * 100)
    elif damage == "pickle":  # code-carrying pickles are refused by weights_only
        path.write_bytes(pickle.dumps(Path("/etc/passwd")))
    else:
        torch.save({"model": {"a": "string"}}, path)
    with pytest.raises(CheckpointError) as exc:
        state = remap_keys(load_state_dict(path))
        infer_config(state, 40)
    text = str(exc.value)
    assert "\n" not in text and (str(path) in text or "label_embed" in text)


def test_absorbed_attention_equals_the_decoders_own() -> None:
    """The few-tags head's rewrite of cross-attention (keys and values moved onto the query side)
    gives the full-size decoder's logits, for one tag and for several."""
    from ramcli.models.convert.random_init import FULL_HEAD

    model = random_model(config("ram_plus", head=FULL_HEAD))
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randn(3, 145, 512, generator=gen)
    with torch.no_grad():
        for tags in (1, 6):
            labels = torch.randn(3, tags, 512, generator=gen)
            full = model.tag_logits(tokens, labels)
            few = model.tag_logits(tokens, labels, absorbed=True)
            assert full.abs().max() > 0.1  # not a trivially zero comparison
            assert (few - full).abs().max() < 1e-4
