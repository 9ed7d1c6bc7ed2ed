"""Model families as objects: ``family_of(model).captions`` instead of ``model.family == "tag2text"``.

``FAMILIES[name]`` and :func:`family_of` give the family's runtime protocol
(:class:`~ramcli.models.families.protocol.Family`); its converter (torch) is
``ramcli.models.convert.converters.converter_for(family)``. Imports nothing heavy: search by tag
names asks these objects and must stay free of numpy, onnxruntime and torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Protocol

from ramcli.errors import RamcliError
from ramcli.models.families.clip_text import CLIP_TEXT
from ramcli.models.families.protocol import Converter, ConvertInputs, Family
from ramcli.models.families.ram import RAM, RAM_PLUS
from ramcli.models.families.tag2text import TAG2TEXT

__all__ = ["CLIP_TEXT", "FAMILIES", "RAM", "RAM_PLUS", "TAG2TEXT", "ConvertInputs", "Converter", "Family",
           "family_of"]

FAMILIES: Mapping[str, Family] = MappingProxyType({f.name: f for f in (RAM_PLUS, RAM, TAG2TEXT, CLIP_TEXT)})


class _HasFamily(Protocol):
    @property
    def family(self) -> str: ...


def family_of(model: _HasFamily | str) -> Family:
    """The family of an installed model, a manifest, or a family name."""
    name = model if isinstance(model, str) else model.family
    try:
        return FAMILIES[name]
    except KeyError:
        raise RamcliError(f"unknown model family {name!r}",
                          hint="this version of ramcli knows " + ", ".join(FAMILIES)
                               + "; convert the model again with it") from None
