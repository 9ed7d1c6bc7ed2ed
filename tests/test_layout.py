"""The package layout shows the data path, and imports only go down it (design.md: no upward imports).

Layers, low to high; a module may import its own layer and those below, never one above:

    base       errors, config, hashing, files (opening only regular files), ramcli (the version; the front
               door is imported lazily)
    model data models.store (installed models, their input contract), models.families
    runtime    engine, preprocessing, tokenizers, beam search, taggers
    models     catalog, download, quantize and convert/ (torch): they run the runtime for parity
    storage    metadata (fields in files, image identity), index (all SQL)
    vocab      custom tags, open-set embeddings
    search     ranking, the CLS matrix
    pipeline   sources -> prepare -> infer -> sinks, re-scoring, bench; evaluate (`ramcli eval`, which runs them)
    front door ramcli.library (``from ramcli import Library``)
    cli        parsing and one renderer

Imports under ``if TYPE_CHECKING:`` are left out: they exist for annotations only.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "ramcli"
LAYERS = [
    {"errors", "config", "hashing", "settings", "faults", "files", "media", ""},
    {"models.store", "models.families"},
    {"runtime"},
    {"models", "models.convert"},
    {"metadata", "index"},
    {"vocab"},
    {"search"},
    {"pipeline", "evaluate"},
    {"library"},
    {"cli", "web", "__main__"},
]


def _module(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _exists(module: str) -> bool:
    base = PKG.parent.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _area(module: str) -> str:
    parts = module.split(".")[1:]
    if parts[:1] == ["models"] and len(parts) > 1 and parts[1] in {"store", "families", "convert"}:
        return f"models.{parts[1]}"
    return parts[0] if parts else ""


def _layer(module: str) -> int:
    area = _area(module)
    return next(i for i, names in enumerate(LAYERS) if area in names)


def _imports(path: Path) -> list[str]:
    """ramcli modules imported by ``path`` at run time (function-level imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only |= {id(n) for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.split(".")[0] == "ramcli"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "ramcli":
            mod = node.module or ""
            subs = [f"{mod}.{a.name}" for a in node.names if _exists(f"{mod}.{a.name}")]
            out += subs or [mod]
    return out


def test_every_module_has_a_layer() -> None:
    unplaced = [_module(p) for p in PKG.rglob("*.py") if not any(_area(_module(p)) in s for s in LAYERS)]
    assert not unplaced, f"add these to a layer in tests/test_layout.py and the README: {unplaced}"


def test_imports_only_go_down_the_layers() -> None:
    upward = []
    for path in PKG.rglob("*.py"):
        src = _module(path)
        for dst in _imports(path):
            if dst == "ramcli":  # __version__; the front door itself is imported lazily
                continue
            if _layer(dst) > _layer(src):
                upward.append(f"{src} -> {dst}")
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def test_no_relative_imports() -> None:
    """Absolute imports keep every module's place in the layout visible where it is used."""
    relative = [f"{_module(p)}:{n.lineno}" for p in PKG.rglob("*.py")
                for n in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
                if isinstance(n, ast.ImportFrom) and n.level > 0]
    assert not relative
