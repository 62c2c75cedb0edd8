"""The house rules of `tttkd_ros.core`, read from the source: imports point down the rooms
(loading -> adapt -> model -> device -> the shared types), core imports nothing of the ROS,
data or tools layers, and no module reaches into another's private names."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "tttkd_ros"
# a module may import from its own room or from a room below it
RANK = {"device": 1, "model": 2, "adapt": 3, "loading": 4}  # everything else in core: 0
OUTSIDE_CORE = ("tttkd_ros.ros", "tttkd_ros.data", "tttkd_ros.tools")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[str]:
    """Every module `path` imports from the package, relative imports resolved (also those
    inside functions and TYPE_CHECKING blocks: a cycle is a cycle for the reader too)."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            found += [target] if node.module else [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names]
    return [m for m in found if m.startswith("tttkd_ros")]


def rank(module: str) -> int:
    parts = module.split(".")
    return RANK.get(parts[2], 0) if len(parts) > 2 and parts[1] == "core" else 0


CORE_FILES = sorted((PACKAGE / "core").rglob("*.py"))


def test_resolver_sees_the_rooms() -> None:
    """The check below is only as good as its reading of imports: the engine's are known."""
    engine = PACKAGE / "core" / "adapt" / "engine.py"
    found = set(imported_modules(engine))
    assert {"tttkd_ros.core.adapt.schedule", "tttkd_ros.core.model.segmentation",
            "tttkd_ros.core.device.streams", "tttkd_ros.core.frame"} <= found
    assert rank("tttkd_ros.core.adapt.schedule") == 3 and rank("tttkd_ros.core.frame") == 0


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_imports_point_down(path: Path) -> None:
    own = rank(module_name(path))
    for target in imported_modules(path):
        assert not target.startswith(OUTSIDE_CORE), f"core must not import {target}"
        assert rank(target) <= own, f"{module_name(path)} (room {own}) imports {target} " \
                                    f"(room {rank(target)}): arrows point down only"


def test_no_import_cycle_inside_a_room() -> None:
    graph = {module_name(p): {t for t in imported_modules(p) if t.startswith("tttkd_ros.core")}
             for p in CORE_FILES}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(m for m in graph if reaches(m, m, {m}))
    assert not cycles, f"modules on an import cycle: {cycles}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_names_of_other_modules(path: Path) -> None:
    """`obj._name` only on self / cls, and no `from x import _name`."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                and not node.attr.startswith("__"):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            assert owner in ("self", "cls"), f"line {node.lineno}: {ast.unparse(node)}"
        if isinstance(node, ast.ImportFrom):
            private = [a.name for a in node.names if a.name.startswith("_")]
            assert not private, f"line {node.lineno}: imports private {private}"
