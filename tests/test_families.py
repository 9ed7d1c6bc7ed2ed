"""Model families as objects: the source asks them instead of comparing names, every family has
one converter, the runtime side stays light, and no module of ramcli takes part in an import cycle."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ramcli.config import manifests
from ramcli.errors import RamcliError
from ramcli.models.families import CLIP_TEXT, FAMILIES, RAM, RAM_PLUS, TAG2TEXT, family_of

PACKAGE = Path(__file__).resolve().parents[1] / "ramcli"
FAMILIES_DIR = PACKAGE / "models" / "families"

# `family == ...`, `family != ...`, `family in ...`, `family not in ...`, and a family name compared
# as a string literal: outside models/families/ code asks the family object instead.
_NAME_BRANCH = re.compile(r"family\s*(==|!=)|family\s+(not\s+)?in\s"
                          r"|[=!]=\s*[\"'](ram|ram_plus|tag2text|clip_text)[\"']"
                          r"|[\"'](ram|ram_plus|tag2text|clip_text)[\"']\s*[=!]=")


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_family_name_branches_outside_the_family_objects() -> None:
    found = [f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
             for path in _sources() if FAMILIES_DIR not in path.parents
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
             if _NAME_BRANCH.search(line)]
    assert not found, "ask the family object (ramcli.models.families.family_of) instead:\n" + "\n".join(found)


def test_the_scan_would_see_a_branch() -> None:
    """The pattern above is not vacuous: it matches the forms it forbids."""
    for line in ('if model.family == "tag2text":', "m.family in CUSTOM", "x.family not in {1}",
                 'if family != "ram":', 'kind = "ram_plus" == name'):
        assert _NAME_BRANCH.search(line), line
    assert not _NAME_BRANCH.search("if family_of(model).captions:")


# ---------------------------------------------------------------- import cycles

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool, modules: set[str]) -> list[str]:
    """Every module named by an import anywhere in ``tree`` (functions included), except under
    ``if TYPE_CHECKING:``, which never runs. ``from package import submodule`` names the submodule:
    the package's ``__init__`` runs first, but counting it as the importer's dependency would
    report every package whose ``__init__`` imports its submodules as a cycle."""
    out: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[:len(package) - node.level + 1]
                base = ".".join([*package, *([node.module] if node.module else [])])
            submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
            out.extend(submodules)
            if len(submodules) < len(node.names):  # names defined in ``base`` itself
                out.append(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def import_graph() -> dict[str, set[str]]:
    """ramcli's modules -> the ramcli modules each imports (module level and inside functions)."""
    paths = {_module_name(p): p for p in _sources()}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        named = _imports(tree, name, path.name == "__init__.py", set(paths))
        graph[name] = {m for m in named if m in paths and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_module_takes_part_in_an_import_cycle() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_cycle_check_sees_function_level_imports_and_cycles() -> None:
    graph = import_graph()
    # pull() imports the converters inside the function, to keep torch off `ramcli tag`
    assert "ramcli.models.convert.converters" in graph["ramcli.models.download"]
    assert "ramcli.models.store" in graph["ramcli.vocab.tagops"]  # `from ramcli.models import store`
    assert "ramcli.models.families" in graph["ramcli.models.store"]  # the store asks the families what to check
    assert "ramcli.models.families" in graph["ramcli.runtime.vocabulary"]  # `from ramcli.models.families import ...`
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# ---------------------------------------------------------------- the family objects

def test_family_of_reads_models_manifests_and_names() -> None:
    assert family_of("tag2text") is TAG2TEXT
    assert family_of(manifests()["ram_plus_swin_large_14m"]) is RAM_PLUS
    assert {f.name for f in FAMILIES.values()} == {"ram", "ram_plus", "tag2text", "clip_text"}
    with pytest.raises(RamcliError, match="unknown model family 'blip'"):
        family_of("blip")


def test_manifests_and_families_agree_on_capabilities() -> None:
    """The manifests declare capabilities; a family's default list (for imports under unknown
    names) and its flags say the same."""
    for m in manifests().values():
        family = family_of(m)
        declared = set(m.data["capabilities"])
        assert declared == set(family.capabilities), m.name
        assert family.captions == ("captions" in declared), m.name
        assert family.open_set == ("open_set" in declared), m.name
        assert family.tags == ("tags" in declared), m.name


def test_what_the_runtime_asks() -> None:
    assert [f.name for f in FAMILIES.values() if f.takes_custom_tags] == ["ram_plus", "ram"]
    assert [f.name for f in FAMILIES.values() if f.weights_descriptions] == ["ram_plus"]
    assert not TAG2TEXT.clip_space and RAM.clip_space and RAM_PLUS.clip_space
    assert TAG2TEXT.caption_stage == "caption" and RAM.caption_stage == "head"
    assert CLIP_TEXT.text_encoder and not CLIP_TEXT.quantized_graphs and TAG2TEXT.needs_vocab


def test_the_runtime_side_imports_nothing_heavy() -> None:
    """Search by tag names asks the families: they must not bring numpy, onnxruntime or torch."""
    code = ("import sys, ramcli.models.families; "
            "print(sorted(m for m in ('numpy', 'torch', 'onnx', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_family_has_one_converter_that_recognises_its_checkpoints(tmp_path: Path) -> None:
    import torch

    from ramcli.models.convert.checkpoint import load_state_dict
    from ramcli.models.convert.converters import CONVERTERS, converter_for, detect
    from ramcli.models.families import Converter

    owners = [f.name for c in CONVERTERS for f in c.families]
    assert sorted(owners) == sorted(FAMILIES)  # each family exactly once
    for family in (RAM_PLUS, RAM, TAG2TEXT):  # tiny random checkpoints in the official format
        converter: Converter = converter_for(family)
        path = converter.random_checkpoint(family, tmp_path / f"{family.name}.pth", num_tags=8)
        assert detect(load_state_dict(path)) is family
    one = torch.zeros(1)
    clip_keys = {"token_embedding.weight": one, "text_projection": one, "positional_embedding": one}
    assert detect(clip_keys) is CLIP_TEXT  # the real one is 600 MB: its keys say enough
    with pytest.raises(RamcliError, match="not a RAM"):
        detect({"something.else": one})
