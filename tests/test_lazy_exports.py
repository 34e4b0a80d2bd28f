"""Lazy package exports stay visible to type checkers: each package's literal `__all__` and its
`if TYPE_CHECKING:` imports name exactly the lazy table (`_WHERE`) that loads them at run time,
so the three cannot drift apart. Read from the source (AST): nothing heavy is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

_SRC = Path(__file__).resolve().parent.parent / "src" / "computewatch"
_LAZY = sorted(p.parent.name for p in _SRC.glob("*/__init__.py") if "lazy_exports(__name__, _WHERE)" in p.read_text(encoding="utf-8"))
# Packages whose names a type checker must see through TYPE_CHECKING imports (issue 23).
_TYPED = {"adversary", "demo", "formats", "registry", "service", "verifier"}


def _parts(package: str) -> tuple[dict[str, str], list[str], dict[str, str] | None]:
    """(_WHERE resolved to full module names, the literal __all__, TYPE_CHECKING imports or None)."""
    tree = ast.parse((_SRC / package / "__init__.py").read_text(encoding="utf-8"))
    where: dict[str, str] = {}
    exported: list[str] = []
    checked: dict[str, str] | None = None
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            name = getattr(target, "id", None)
            if name == "_WHERE":
                where = {k: v if v.startswith("computewatch.") else f"computewatch.{package}.{v}"
                         for k, v in ast.literal_eval(node.value).items()}
            elif name == "__all__":
                assert isinstance(node.value, ast.List), f"{package}: __all__ must be a literal list"
                exported = [ast.literal_eval(e) for e in node.value.elts]
        elif isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            checked = {}
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.module, f"{package}: only `from X import N` under TYPE_CHECKING"
                for alias in imp.names:
                    assert alias.asname is None, f"{package}: {alias.name} is imported under another name"
                    checked[alias.name] = imp.module
    return where, exported, checked


def test_the_lazy_packages_are_found() -> None:
    assert set(_LAZY) >= _TYPED


@pytest.mark.parametrize("package", _LAZY)
def test_all_is_the_lazy_table(package: str) -> None:
    where, exported, _ = _parts(package)
    assert where, f"{package}: no _WHERE table"
    assert len(exported) == len(set(exported)), f"{package}: a name is listed twice in __all__"
    assert set(exported) == set(where), f"{package}: __all__ and _WHERE differ by {sorted(set(exported) ^ set(where))}"


@pytest.mark.parametrize("package", sorted(_TYPED))
def test_type_checking_imports_are_the_lazy_table(package: str) -> None:
    where, _, checked = _parts(package)
    assert checked is not None, f"{package}: no `if TYPE_CHECKING:` imports"
    assert checked == where, f"{package}: TYPE_CHECKING imports and _WHERE differ"
