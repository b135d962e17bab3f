"""The shipped test kit runs without pytest and without the tests/ folder."""

from __future__ import annotations

import ast
from pathlib import Path

import bots.testing

KIT = Path(bots.testing.__file__).parent


def test_the_test_kit_imports_neither_pytest_nor_tests() -> None:
    modules = sorted(KIT.rglob("*.py"))
    assert len(modules) >= 8  # the kit itself, not an empty folder
    offenders: dict[str, list[str]] = {}
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            bad = [n for n in names if n.split(".")[0] in ("pytest", "tests", "_pytest")]
            if bad:
                offenders[path.name] = bad
    assert offenders == {}
