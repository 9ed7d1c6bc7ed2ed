"""Every family's converter, and the entry points that pick one by asking the families.

``ramcli models import``/``pull``/``verify`` come here: :func:`detect` reads the family off a
checkpoint's keys, :func:`converter_for` gives the family's converter (the torch side of
``families.Converter``). The family modules (``models/families/``) do not import this: the
converters import the runtime for their parity checks, and the runtime asks the families.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ramcli.errors import CheckpointError, RamcliError
from ramcli.models import store
from ramcli.models.convert import clip_text, export, tag2text_export
from ramcli.models.convert.checkpoint import load_state_dict
from ramcli.models.convert.common import Report
from ramcli.models.families import FAMILIES, Converter, ConvertInputs, Family, family_of

# In the order checkpoints are recognised: the CLIP text encoder and Tag2Text by their own keys first.
CONVERTERS: tuple[Converter, ...] = (clip_text.CONVERTER, tag2text_export.CONVERTER, export.CONVERTER)


_BY_FAMILY: dict[str, Converter] = {f.name: c for c in CONVERTERS for f in c.families}


def converter_for(family: Family) -> Converter:
    """The converter of ``family`` (each family has exactly one; tests/test_families.py checks it)."""
    try:
        return _BY_FAMILY[family.name]
    except KeyError:
        raise RamcliError(f"model family {family.name!r} cannot be converted by this version of ramcli") from None


def detect(state: Mapping[str, torch.Tensor]) -> Family:
    """The family of a checkpoint, read off its keys."""
    for converter in CONVERTERS:
        family = converter.detect(state)
        if family is not None:
            return family
    names = [f.title for f in FAMILIES.values()]
    raise CheckpointError(f"not a {', '.join(names[:-1])} or {names[-1]} checkpoint (no label_embed tensor, "
                          "no CLIP text tower)")


def import_checkpoint(checkpoint: Path, name: str, inputs: ConvertInputs, *,
                      state: Mapping[str, torch.Tensor] | None = None, family: Family | None = None,
                      report: Report = lambda _msg: None) -> store.InstalledModel:
    """Convert and install any family's checkpoint. ``family``: when the caller knows it (a
    manifest's); else it is read off the tensors (``state``, loaded here when not given)."""
    if family is None:
        if state is None:
            report(f"reading {checkpoint}")
            state = load_state_dict(checkpoint)
        family = detect(state)
    return converter_for(family).import_checkpoint(checkpoint, name, inputs, state=state, report=report)


def verify(name: str, images: np.ndarray | None = None) -> dict[str, Any]:
    """Re-run the parity check of an installed model against its source checkpoint, for every
    convertible family (``ramcli models verify`` calls only this). The result always has
    ``image_embeds_max_abs``, ``logits_max_abs``, ``scores_max_abs``, ``images`` and ``ok``."""
    return converter_for(family_of(store.get(name))).verify(name, images)
