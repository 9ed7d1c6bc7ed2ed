"""All SQL lives in ``ramcli/index/``: the rest of ramcli calls typed ``Index`` methods. This scans
the source tree, so a query slipped into search, vocab or pipeline code fails here."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

RAMCLI = Path(__file__).resolve().parents[1] / "ramcli"
INDEX = RAMCLI / "index"

# Statements as ramcli writes them: a keyword followed by the word that makes it SQL.
_SQL = re.compile(r"\b(select\b.+\bfrom|insert\s+(or\s+\w+\s+)?into|update\s+\[?\w+\]?\s+set|delete\s+from|"
                  r"create\s+(unique\s+)?(table|index|trigger)|drop\s+(table|index|trigger)|alter\s+table|pragma\s+\w+)\b",
                  re.IGNORECASE | re.DOTALL)
# Calls that run SQL on a connection, a cursor or sqlite-utils.
_CALLS = {"execute", "executemany", "executescript"}


def _outside_index() -> list[Path]:
    files = [p for p in RAMCLI.rglob("*.py") if INDEX not in p.parents]
    assert len(files) > 20  # the scan looks at the real tree
    return files


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """String literals, with the constant parts of f-strings joined (``f"select {cols} from t"``)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.append((node.lineno, node.value))
        elif isinstance(node, ast.JoinedStr):
            out.append((node.lineno, " x ".join(v.value for v in node.values
                                                if isinstance(v, ast.Constant) and isinstance(v.value, str))))
    return out


def test_no_sql_outside_the_index_package() -> None:
    found = []
    for path in _outside_index():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(RAMCLI.parent)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in _CALLS:
                    found.append(f"{rel}:{node.lineno}: .{node.func.attr}(...)")
                elif node.func.attr == "query" and isinstance(node.func.value, ast.Attribute) and \
                        node.func.value.attr in {"db", "conn"}:
                    found.append(f"{rel}:{node.lineno}: .{node.func.value.attr}.query(...)")
            if isinstance(node, ast.Attribute) and node.attr in {"db", "conn"} and \
                    isinstance(node.value, (ast.Name, ast.Attribute)) and \
                    (getattr(node.value, "id", None) or getattr(node.value, "attr", None)) in {"index", "ix"}:
                found.append(f"{rel}:{node.lineno}: index.{node.attr}")
        for line, text in _strings(tree):
            if _SQL.search(text):
                found.append(f"{rel}:{line}: SQL text {text[:60]!r}")
    assert not found, "SQL outside ramcli/index (add a typed Index method instead):\n" + "\n".join(found)


def test_the_scan_sees_sql() -> None:
    """The patterns above do catch the kinds of SQL the index itself holds."""
    texts = [t for p in INDEX.rglob("*.py") for _, t in _strings(ast.parse(p.read_text(encoding="utf-8")))]
    for kind in ("select", "insert", "update", "delete from", "create index", "pragma", "alter table"):
        assert any(_SQL.search(t) and kind in t.lower() for t in texts), kind


def test_importing_the_index_stays_light() -> None:
    """A tag-only search imports ``ramcli.index``: no numpy, no sqlite-utils, no filelock until needed."""
    code = ("import sys, ramcli.index; "
            "print(sorted(m for m in ('numpy', 'sqlite_utils', 'filelock') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
