"""What `ramcli models list`, `models import` and `doctor` report: manifests joined with the cache."""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ramcli import __version__
from ramcli.config import cache_dir, index_path, manifests, manifests_dir
from ramcli.errors import BrokenModel, UsageError
from ramcli.models import store
from ramcli.models.download import (
    bundled_files,
    caption_delete_tag_index,
    fetch_tag_files,
    fetch_tokenizer,
    human_bytes,
)
from ramcli.models.families import FAMILIES, ConvertInputs

Report = Callable[[str], None]


def list_models() -> list[dict[str, Any]]:
    """Every known model (manifests) and every installed one (imports under other names too).

    A damaged installed model is listed with ``broken`` (which file, what is wrong) and ``fix``
    instead of failing the listing: the others are still usable and the user needs to see which
    one to repair."""
    installed = {m.name: m for m in store.installed()}
    rows: list[dict[str, Any]] = []
    for m in manifests().values():
        row: dict[str, Any] = {"name": m.name, "family": m.family, "title": m.title, "default": m.is_default,
                               "capabilities": m.data.get("capabilities", []), "supported": m.supported,
                               "installed": m.name in installed}
        size = m.weights.get("approx_bytes")
        if size:
            row["download_size"] = human_bytes(size)
        rows.append(row)
    for name, inst in installed.items():
        problem = inst.problem
        row = next((r for r in rows if r["name"] == name), None)
        if row is None:
            family = inst.meta.get("family") if problem is None else _readable_family(inst)
            row = {"name": name, "family": family or "?", "title": "imported checkpoint", "default": False,
                   "capabilities": [] if problem else
                   inst.meta.get("capabilities") or _family_capabilities(inst.family),
                   "supported": True, "installed": True}
            rows.append(row)
        row["installed_size"] = human_bytes(inst.size_bytes())
        row["path"] = str(inst.path)
        if problem is not None:
            row["broken"] = broken_line(problem)
            row["fix"] = problem.hint
        else:
            row["num_tags"] = inst.meta.get("num_tags")
    return rows


def broken_line(problem: BrokenModel) -> str:
    """What is wrong with a broken model, short: ``label_embed.npy: is not a NumPy .npy file``."""
    return f"{Path(problem.path or '').name}: {problem.what}"


def _readable_family(model: store.InstalledModel) -> str | None:
    """The family a broken model's meta.json names, if it can still be read."""
    try:
        family = model.meta.get("family")
    except BrokenModel:
        return None
    return family if isinstance(family, str) else None


def _family_capabilities(name: str) -> list[str]:
    """What a model of the family ``name`` can do, for imports under names the manifests do not know."""
    family = FAMILIES.get(name)
    return list(family.capabilities) if family is not None else []


def import_local(checkpoint: Path, name: str, *, tag_list: Path | None, tag_list_zh: Path | None = None,
                 thresholds: Path | None = None, image_size: int | None = None, vocab: Path | None = None,
                 report: Report = lambda _m: None) -> store.InstalledModel:
    """Convert a local checkpoint; a known model name brings its official tag files along.

    What the checkpoint is (RAM/RAM++, Tag2Text or the CLIP text encoder) is read from its keys.
    ``vocab`` is the BERT vocabulary a Tag2Text checkpoint needs (bert-base-uncased's vocab.txt);
    for a known Tag2Text name it is fetched (checksummed) like the tag files when not given.
    """
    from ramcli.models.convert.checkpoint import load_state_dict
    from ramcli.models.convert.converters import converter_for, detect

    report(f"reading {checkpoint}")
    state = load_state_dict(checkpoint)
    family = detect(state)
    converter = converter_for(family)
    if not family.tags:  # a text encoder: no tag files
        return converter.import_checkpoint(checkpoint, name, ConvertInputs(source={"kind": "import"}), state=state,
                                           report=report)
    default_threshold = 0.68
    extra: dict[str, Path] = {}
    known = manifests().get(name)
    if known is not None:
        default_threshold = known.default_threshold
        image_size = image_size or known.preprocess.get("image_size")
        if tag_list is None:
            files = fetch_tag_files(known, report)
            tag_list = files["tag_list"]
            tag_list_zh = tag_list_zh or files.get("tag_list_zh")
            thresholds = thresholds or files.get("thresholds")
            extra = bundled_files(files)
    asks_vocab = family.needs_vocab and vocab is None
    if tag_list is None:
        raise UsageError(f"{name!r} is not a known model, so its tag list is needed",
                         hint="pass --tag-list FILE (one tag per line, in the model's class order)"
                              + (" and --vocab VOCAB.txt (bert-base-uncased's)" if asks_vocab else ""))
    if tag_list_zh is not None and "tags_zh" not in family.capabilities:
        raise UsageError(f"{family.title} has no Chinese tag list", hint="leave out --tag-list-zh")
    if asks_vocab:
        if known is None or FAMILIES.get(known.family) is not family:
            raise UsageError(f"{checkpoint} is a {family.title} checkpoint, whose captioner needs a BERT vocabulary",
                             hint="pass --vocab VOCAB.txt, e.g. bert-base-uncased's vocab.txt "
                                  "(huggingface.co/google-bert/bert-base-uncased)")
        vocab = fetch_tokenizer(known, report)
    inputs = ConvertInputs(tag_list=tag_list, tag_list_zh=tag_list_zh, thresholds=thresholds, vocab=vocab,
                           extra_files=extra, image_size=image_size, default_threshold=default_threshold,
                           delete_tag_index=caption_delete_tag_index(known) if known else None,
                           source={"kind": "import"})
    return converter.import_checkpoint(checkpoint, name, inputs, state=state, report=report)


def probe_provider(device: str = "auto") -> str:
    """Which provider a session really gets here, tested on a one-node graph (no model needed)."""
    from onnx import TensorProto, helper

    from ramcli.runtime.engine import EngineOptions, _session

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = _session(model.SerializeToString(), EngineOptions(device=device))
    return session.get_providers()[0].removesuffix("ExecutionProvider")


def _writes_few_tags_head(model: store.InstalledModel) -> bool:
    family = FAMILIES.get(model.family)
    return family is not None and family.few_tags_head


def doctor_report() -> dict[str, Any]:
    import numpy
    import onnxruntime

    models = store.installed()
    whole = [m for m in models if m.problem is None]
    return {
        "ramcli": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "numpy": numpy.__version__,
        "onnxruntime": onnxruntime.__version__,
        "providers_available": onnxruntime.get_available_providers(),
        "provider_in_use": probe_provider(),
        "cache": str(cache_dir()),
        "manifests": str(manifests_dir()),
        "index": str(index_path()),
        "models_installed": [m.name for m in whole],
        # damaged: listed with what is wrong and the repair, so a bug report shows it
        "models_broken": [{"name": m.name, "problem": broken_line(p), "fix": p.hint}
                          for m in models if (p := m.problem) is not None],
        # converted by an earlier ramcli, without the few-tags head: search re-ranking and add-tag
        # use the full head, ~10x slower for that work, until the model is pulled or imported again
        "models_to_convert_again": [m.name for m in whole if _writes_few_tags_head(m)
                                    and not (m.path / store.HEAD_FEW).is_file()],
    }
