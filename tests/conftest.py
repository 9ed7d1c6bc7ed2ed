"""Shared fixtures: an isolated cache, tiny random models built by ramcli's own code, the CLI.

Tests never touch the network (HF_HUB_OFFLINE) or the user's real cache and index.
``../shared`` (golden outputs, official data, real photos) is optional: tests that need it skip.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RAMCLI_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "golden"
TINY_TAGS = 40


@pytest.fixture(scope="session", autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("ramcli-home")
    env = {"RAMCLI_CACHE_DIR": str(root / "cache"), "RAMCLI_DATA_DIR": str(root / "data"),
           "HF_HUB_OFFLINE": "1", "HF_HOME": str(root / "hf"), "NO_COLOR": "1"}
    os.environ.update(env)
    return env


@pytest.fixture
def shared() -> Path:
    if not GOLDEN.is_dir():
        pytest.skip(f"shared fixtures not found at {SHARED} (set RAMCLI_SHARED)")
    return SHARED


def run_cli(*args: str, env: dict[str, str] | None = None,
            timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, as a user runs it (no timeout by default: a loaded machine is slow)."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "ramcli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, check=False)


def add_user_keywords(path: Path, keywords: list[str]) -> None:
    """Another program adds keywords to a photo (dc:subject and IPTC, as Lightroom would): not ramcli's
    writer, which would record them as ramcli's own."""
    import pyexiv2

    with pyexiv2.Image(str(path)) as img:
        xmp = img.read_xmp().get("Xmp.dc.subject") or []
        iptc = img.read_iptc().get("Iptc.Application2.Keywords") or []
        img.modify_xmp({"Xmp.dc.subject": [*xmp, *keywords]})
        if path.suffix.lower() in (".jpg", ".jpeg", ".tif", ".tiff"):
            img.modify_iptc({"Iptc.Envelope.CharacterSet": "\x1b%G", "Iptc.Application2.Keywords": [*iptc, *keywords]})


def write_tag_files(folder: Path, count: int = TINY_TAGS) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {"tag_list": folder / "tags.txt", "tag_list_zh": folder / "tags_zh.txt",
             "thresholds": folder / "thresholds.txt"}
    files["tag_list"].write_text("\n".join(f"tag {i:03d}" for i in range(count)), encoding="utf-8")
    files["tag_list_zh"].write_text("\n".join(f"标签{i:03d} " for i in range(count)), encoding="utf-8")
    files["thresholds"].write_text("\n".join("0.65" if i % 3 else "0.8" for i in range(count)), encoding="utf-8")
    return files


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A random tiny RAM++ checkpoint in the official format, with its tag files."""
    from ramcli.models.convert.random_init import config, random_model, save_checkpoint

    folder = tmp_path_factory.mktemp("tiny-ckpt")
    files = write_tag_files(folder)
    files["checkpoint"] = save_checkpoint(random_model(config("ram_plus")), folder / "tiny_ram_plus.pth")
    return files


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint: dict[str, Path]):
    """The tiny checkpoint imported through the real import/export path."""
    from ramcli.models.convert.export import import_checkpoint

    f = tiny_checkpoint
    return import_checkpoint(f["checkpoint"], "tiny_ram_plus", tag_list=f["tag_list"],
                             tag_list_zh=f["tag_list_zh"], thresholds=f["thresholds"])


def make_photo(path: Path, size: tuple[int, int] = (320, 240), mode: str = "RGB", seed: int = 0, **save) -> Path:
    """A photo-like image (gradient + noise) written in the format its suffix says."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(w, 1), yy * 255 // max(h, 1), (xx + yy) * 255 // max(w + h, 1)], -1)
    px = np.clip(base + rng.integers(-30, 30, base.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(px, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **save)
    return path


@pytest.fixture(scope="session")
def clip_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import open_clip
    import torch

    logging.getLogger().setLevel(logging.ERROR)
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16", pretrained=None, force_quick_gelu=True)
    path = tmp_path_factory.mktemp("clip") / "open_clip_vit_b16.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def clip_model(clip_checkpoint: Path):
    result = run_cli("models", "import", str(clip_checkpoint), "--name", "clip_vit_b16_text", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["family"] == "clip_text" and info["parity"]["text_embeds_max_abs"] < 1e-4
    from ramcli.models import store

    return store.get("clip_vit_b16_text")
