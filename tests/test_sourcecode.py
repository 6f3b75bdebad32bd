"""Architecture rules checked on the source itself (uvloop's test_sourcecode.py in spirit)."""

from __future__ import annotations

import ast
from pathlib import Path

import twamp

SRC = Path(twamp.__file__).resolve().parent

# Only these may do I/O (docs/ARCHITECTURE.md "Rules").
IO_ALLOWED = ("net/", "dataplane/", "cli/", "bench/", "clock.py")
IO_MODULES = {"socket", "asyncio", "time", "select", "selectors", "threading"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_sans_io_core_does_no_io() -> None:
    core = [
        p
        for p in SRC.rglob("*.py")
        if not any(p.relative_to(SRC).as_posix().startswith(a) for a in IO_ALLOWED)
    ]
    assert len(core) >= 5, "the core modules were not found"
    offenders = {
        p.relative_to(SRC).as_posix(): sorted(_imports(p) & IO_MODULES)
        for p in core
        if _imports(p) & IO_MODULES
    }
    assert not offenders, f"sans-I/O modules import I/O modules: {offenders}"
