"""Where things live (platformdirs, with environment overrides) and the model manifest registry.

Manifests are data (``models/*.json`` in the source tree, ``ramcli/manifests/`` inside the
wheel): where weights come from, their checksum, architecture, preprocessing and tag-list
sources. Code reads them; it never hard-codes a URL or a shape.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import platformdirs

from ramcli.errors import ModelNotFound

APP = "ramcli"
_PKG = Path(__file__).resolve().parent


def cache_dir() -> Path:
    """Converted models live here: ``RAMCLI_CACHE_DIR`` or the platform's user cache."""
    env = os.environ.get("RAMCLI_CACHE_DIR")
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir(APP))


def models_dir() -> Path:
    return cache_dir() / "models"


def data_dir() -> Path:
    """The index lives here by default: ``RAMCLI_DATA_DIR`` or the platform's user data dir."""
    env = os.environ.get("RAMCLI_DATA_DIR")
    return Path(env).expanduser() if env else Path(platformdirs.user_data_dir(APP))


def index_path() -> Path:
    env = os.environ.get("RAMCLI_INDEX")
    return Path(env).expanduser() if env else data_dir() / "index.db"


def manifests_dir() -> Path:
    """Inside an installed wheel the manifests are package data; in a checkout, ``models/``."""
    packaged = _PKG / "manifests"
    return packaged if packaged.is_dir() else _PKG.parent / "models"


@dataclass(frozen=True)
class Manifest:
    """One known model, as described by its JSON file."""

    name: str
    data: dict[str, Any]

    @property
    def family(self) -> str:
        return str(self.data["family"])

    @property
    def title(self) -> str:
        return str(self.data.get("title", self.name))

    @property
    def is_default(self) -> bool:
        return bool(self.data.get("default"))

    @property
    def supported(self) -> bool:
        """False for models described here but not yet runnable by this version."""
        return bool(self.data.get("supported", True))

    @property
    def weights(self) -> dict[str, Any]:
        return dict(self.data.get("weights", {}))

    @property
    def preprocess(self) -> dict[str, Any]:
        return dict(self.data.get("preprocess", {}))

    @property
    def tag_files(self) -> dict[str, dict[str, str]]:
        return dict(self.data.get("tags", {}).get("files", {}))

    @property
    def default_threshold(self) -> float:
        return float(self.data.get("tags", {}).get("default_threshold", 0.68))


@cache
def manifests() -> dict[str, Manifest]:
    out: dict[str, Manifest] = {}
    for path in sorted(manifests_dir().glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        out[data["name"]] = Manifest(data["name"], data)
    return out


def manifest(name: str) -> Manifest:
    try:
        return manifests()[name]
    except KeyError:
        known = ", ".join(sorted(manifests()))
        raise ModelNotFound(f"unknown model {name!r}", hint=f"known models: {known}") from None


def default_model_name() -> str:
    env = os.environ.get("RAMCLI_MODEL")
    if env:
        return env
    for m in manifests().values():
        if m.is_default:
            return m.name
    raise ModelNotFound("no default model in the manifests")  # pragma: no cover - packaging bug
