"""The layout's rules, checked on the source: core never imports bots or a platform SDK,
adapters never import each other, and core's rooms import only downward and only
through each other's `__init__` (so a room's private modules can change freely)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLATFORM_SDKS = ("discord", "slack_bolt", "slack_sdk")
ADAPTERS = ("discord", "slack", "http", "console")
# A room may import rooms of a lower rank only (and config/model, rank 0, from anywhere).
RANK = {"door": 6, "turn": 5, "conversation": 4, "agents": 3, "store": 2, "ops": 1, "config": 0, "model": 0}


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every absolute import in `path`, lazy ones inside functions too."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:  # `from core import turn` imports the module core.turn
                yield node.lineno, node.module if node.module != "core" else f"core.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1].removesuffix(".py") if parts[0] == "core" and len(parts) > 1 else None


def module_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def test_core_never_imports_bots_or_a_platform_sdk() -> None:
    bad = [
        f"{p.relative_to(ROOT)}:{line} imports {m}"
        for p in sources("core")
        for line, m in imports(p)
        if m.split(".")[0] in ("bots", *PLATFORM_SDKS)
    ]
    assert not bad, bad


def test_adapters_never_import_each_other() -> None:
    bad = []
    for adapter in ADAPTERS:
        files = (
            sources(f"bots/{adapter}")
            if (ROOT / "bots" / adapter).is_dir()
            else [ROOT / f"bots/{adapter}.py"]
        )
        for p in files:
            for line, m in imports(p):
                parts = m.split(".")
                if parts[0] == "bots" and len(parts) > 1 and parts[1] in ADAPTERS and parts[1] != adapter:
                    bad.append(f"{p.relative_to(ROOT)}:{line} imports {m}")
    assert not bad, bad


def test_rooms_import_downward_and_through_each_others_init() -> None:
    bad = []
    for p in sources("core"):
        mine = room(module_of(p))
        for line, m in imports(p):
            theirs = room(m)
            if theirs is None or theirs == mine or mine is None or mine == "__init__":
                continue
            where = f"{p.relative_to(ROOT)}:{line} imports {m}"
            if RANK.get(theirs, -1) >= RANK.get(mine, -1) and RANK.get(theirs) != 0:
                bad.append(f"{where} (upward: {mine} -> {theirs})")
            if m != f"core.{theirs}":
                bad.append(f"{where} (reaches past core.{theirs}'s __init__)")
    assert not bad, bad


def test_bots_reach_core_only_through_the_rooms() -> None:
    bad = [
        f"{p.relative_to(ROOT)}:{line} imports {m}"
        for p in sources("bots")
        for line, m in imports(p)
        if m.startswith("core.") and m.count(".") > 1
    ]
    assert not bad, bad


@pytest.mark.parametrize("package", ["core", "bots"])
def test_every_room_says_what_it_is_for(package: str) -> None:
    undocumented = [
        str(init.relative_to(ROOT))
        for init in sorted((ROOT / package).rglob("__init__.py"))
        if ast.get_docstring(ast.parse(init.read_text())) is None
    ]
    assert not undocumented, undocumented
