"""Imports run down the layers only:
cli > supervisor > server > transport > asgi > observability > protocols.

``config`` sits beside them: everyone may read it, and it imports only the
header grammar from the protocols, the access-log format compiler (to reject
a bad format as a configuration error) and the version. Imports inside functions
count too, since a lazy import up the layers is still a cycle in the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "palfrey"
ORDER = ["protocols", "observability", "asgi", "transport", "server", "supervisor", "cli"]
CONFIG_MAY_IMPORT = {
    "palfrey.protocols.fields",
    "palfrey.observability.access_format",
    "palfrey._version",
}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "palfrey" or len(parts) < 2:
        return None
    return parts[1]


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(str(node.args[0].value))
    return {name for name in names if name.startswith("palfrey.")}


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_imports_run_down_the_layers(path: Path) -> None:
    relative = path.relative_to(PACKAGE).with_suffix("")
    own = relative.parts[0]
    problems = []
    for name in imported_modules(path):
        target = layer_of(name)
        if own == "config":
            if target != "config" and name not in CONFIG_MAY_IMPORT:
                problems.append(name)
        elif own in ORDER and target in ORDER and ORDER.index(target) > ORDER.index(own):
            problems.append(name)
    assert not problems, f"{relative} imports up the layers: {sorted(problems)}"


def test_the_walk_sees_the_layers() -> None:
    seen = {path.relative_to(PACKAGE).parts[0] for path in MODULES}
    assert {"protocols", "asgi", "transport", "server", "supervisor", "config"} <= seen
    assert "palfrey.server.runner" in imported_modules(PACKAGE / "cli.py")
