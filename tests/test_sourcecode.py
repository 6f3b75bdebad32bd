"""The layer table of docs/ARCHITECTURE.md, checked with `ast` over every module of `twamp`.

Three rules, each checked on the installed source (the `.pyx` and `.pxd` included) and each shown
to fail on a synthetic package that breaks it:

1. **Imports point down or sideways.** Every module belongs to exactly one layer of `LAYERS`
   (first matching pattern of `TABLE`); it may import modules of its own layer or of a lower one.
2. **Only I/O layers do I/O.** `IO_MODULES` may be imported only by layers whose `may_do_io` is
   True. The sans-I/O layers take bytes and `now_ns` and return events and bytes.
3. **No hidden dependencies.** An import inside a function needs a ``# why:`` comment on its line
   or the line above, saying why it cannot sit at the top of the module.

The table lists packages that do not exist yet (`ospf/`, `lab/`, `sessions`, `metrics_export`,
`bench/ospf/procedures`) so that they land already classified; a module that matches no pattern
fails rule 1, so a new module is placed in the table (and in docs/ARCHITECTURE.md) on purpose.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import twamp

SRC = Path(twamp.__file__).resolve().parent
DOCS = Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md"


@dataclass(frozen=True)
class Layer:
    name: str
    may_do_io: bool


# Lowest first. The same table, in words, is docs/ARCHITECTURE.md "Layers".
LAYERS = (
    Layer("core", False),
    Layer("wire", False),
    Layer("protocol", False),
    Layer("analysis", False),
    Layer("data plane", True),
    Layer("I/O glue", True),
    Layer("app", True),
    Layer("CLI", True),
)
RANK = {layer.name: rank for rank, layer in enumerate(LAYERS)}

# (pattern, layer): module paths relative to src/twamp without the suffix; first match wins.
TABLE: tuple[tuple[str, str], ...] = (
    ("__init__", "core"),
    ("constants", "core"),
    ("errors", "core"),
    ("timestamps", "core"),
    ("hostport", "core"),
    ("inet", "core"),
    ("wire/*", "wire"),
    ("ospf/wire*", "wire"),
    ("crypto", "protocol"),
    ("control/*", "protocol"),
    ("sessions*", "protocol"),
    ("ospf/io", "I/O glue"),
    ("ospf/eventlog", "I/O glue"),
    ("ospf/*", "protocol"),
    ("metrics", "analysis"),
    ("bench/search", "analysis"),
    ("bench/stats", "analysis"),
    ("bench/ospf/procedures*", "analysis"),
    ("dataplane/*", "data plane"),
    ("clock", "data plane"),
    ("net/*", "I/O glue"),
    ("lab/*", "I/O glue"),
    ("ping", "app"),
    ("metrics_export*", "app"),
    ("bench/*", "app"),
    ("cli/*", "CLI"),
    ("__main__", "CLI"),
)

# What doing I/O means here: sockets, event loops, threads, processes, signals and the clock.
IO_MODULES = frozenset(
    {
        "asyncio",
        "multiprocessing",
        "select",
        "selectors",
        "signal",
        "socket",
        "subprocess",
        "threading",
        "time",
    }
)

# Function-level imports in files that other helpers were rewriting when this test was written
# (issue 10): each must get a `# why:` comment or move to the top of its module. The list may
# only shrink: an entry that no longer matches an import fails `test_pending_list_is_current`.
PENDING_FUNCTION_IMPORTS: frozenset[tuple[str, str]] = frozenset()

_PYX_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+[.\w]+[ \t]+c?import\b|c?import[ \t]+[.\w]+)", re.M)


def layer_of(rel: str) -> str | None:
    """The layer of a module path like 'wire/control' or 'cli/__init__' (None: not placed)."""
    for pattern, layer in TABLE:
        if fnmatch.fnmatchcase(rel, pattern):
            return layer
    return None


@dataclass(frozen=True)
class Import:
    target: str  # absolute dotted name, e.g. "twamp.wire.control" or "socket"
    line: int
    in_function: bool


def _resolve(package: list[str], module: str | None, level: int) -> str:
    base = package[: len(package) - (level - 1)] if level else []
    return ".".join([*base, *(module.split(".") if module else [])])


def _module_path(root: Path, dotted: str) -> Path | None:
    """The file of `twamp.x.y` under `root` (the package directory), or None."""
    parts = dotted.split(".")[1:]
    candidate = root.joinpath(*parts)
    for path in (candidate / "__init__.py", candidate.with_suffix(".py")):
        if path.is_file():
            return path
    for suffix in (".pyx", ".pxd"):
        if candidate.with_suffix(suffix).is_file():
            return candidate.with_suffix(suffix)
    return None


def _from_tree(
    tree: ast.AST, package: list[str], root: Path, *, line0: int = 0, in_function: bool = False
) -> list[Import]:
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            line = line0 + getattr(child, "lineno", 0)
            if isinstance(child, ast.Import):
                found.extend(Import(a.name, line, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(package, child.module, child.level)
                for alias in child.names:
                    # `from .. import clock` names a module; `from ..x import Name` does not.
                    sub = f"{base}.{alias.name}"
                    is_module = base.startswith("twamp") and _module_path(root, sub) is not None
                    found.append(Import(sub if is_module else base, line, in_function))
            visit(child, inside)

    visit(tree, in_function)
    return found


def _python_imports(path: Path, package: list[str], root: Path) -> list[Import]:
    return _from_tree(ast.parse(path.read_text(), filename=str(path)), package, root)


def _cython_imports(path: Path, package: list[str], root: Path) -> list[Import]:
    """Import and cimport statements of a .pyx/.pxd, each parsed as the Python it resembles.

    An indented statement counts as function-level (a .pyx has no other indented imports).
    """
    text = path.read_text()
    found: list[Import] = []
    for match in _PYX_IMPORT.finditer(text):
        line = text.count("\n", 0, match.start())
        stmt = text[match.start() : text.index("\n", match.end())]
        if stmt.rstrip().endswith("("):
            stmt = text[match.start() : text.index(")", match.end()) + 1]
        indented = stmt[:1].isspace()
        python = re.sub(r"\bcimport\b", "import", stmt.strip())
        tree = ast.parse(python)
        found += _from_tree(tree, package, root, line0=line, in_function=indented)
    return found


@dataclass(frozen=True)
class Module:
    rel: str  # 'wire/control', 'dataplane/reflector/compiled' (.pyx), '__init__'
    path: Path
    imports: tuple[Import, ...]


@functools.cache
def scan(root: Path) -> list[Module]:
    """Every .py, .pyx and .pxd module of the package at `root`, with its imports."""
    modules: list[Module] = []
    for path in sorted(root.rglob("*")):
        if path.suffix not in (".py", ".pyx", ".pxd") or "__pycache__" in path.parts:
            continue
        rel_parts = path.relative_to(root).with_suffix("").parts
        package = [root.name, *rel_parts[:-1]]
        if path.suffix == ".py":
            imports = _python_imports(path, package, root)
        else:
            imports = _cython_imports(path, package, root)
        modules.append(Module("/".join(rel_parts), path, tuple(imports)))
    return modules


def _target_layer(root: Path, target: str) -> str | None:
    """The layer of an imported twamp module (its nearest existing module or package)."""
    parts = target.split(".")
    while len(parts) > 1:
        path = _module_path(root, ".".join(parts))
        if path is not None:
            rel = path.relative_to(root).with_suffix("").as_posix()
            return layer_of(rel)
        parts.pop()
    return layer_of("__init__")


def direction_violations(root: Path) -> list[str]:
    out: list[str] = []
    pkg = root.name
    for module in scan(root):
        layer = layer_of(module.rel)
        if layer is None:
            out.append(f"{module.rel}: in no layer; add it to TABLE and docs/ARCHITECTURE.md")
            continue
        for imp in module.imports:
            if imp.target != pkg and not imp.target.startswith(pkg + "."):
                continue
            target_layer = _target_layer(root, imp.target)
            if target_layer is not None and RANK[target_layer] > RANK[layer]:
                out.append(
                    f"{module.rel}:{imp.line} ({layer}) imports {imp.target} ({target_layer})"
                )
    return out


def io_violations(root: Path) -> list[str]:
    out: list[str] = []
    for module in scan(root):
        layer = layer_of(module.rel)
        if layer is None or LAYERS[RANK[layer]].may_do_io:
            continue
        for imp in module.imports:
            if imp.target.split(".")[0] in IO_MODULES:
                out.append(f"{module.rel}:{imp.line} ({layer}) imports {imp.target}")
    return out


def hidden_import_violations(root: Path) -> set[tuple[str, str, int]]:
    """(file, imported module, line) of function-level imports without a `# why:` comment."""
    out: set[tuple[str, str, int]] = set()
    for module in scan(root):
        lines = module.path.read_text().splitlines()
        for imp in module.imports:
            if not imp.in_function:
                continue
            here = lines[imp.line - 1]
            above = lines[imp.line - 2] if imp.line >= 2 else ""
            if "# why:" in here or above.strip().startswith("# why:"):
                continue
            out.add((module.path.relative_to(root).as_posix(), imp.target, imp.line))
    return out


# -- the rules on twamp itself ---------------------------------------------------------------


def test_every_module_is_in_a_layer() -> None:
    modules = scan(SRC)
    assert len(modules) >= 30, "the twamp modules were not found"
    assert any(m.path.suffix == ".pyx" for m in modules), "the .pyx was not scanned"
    unplaced = [m.rel for m in modules if layer_of(m.rel) is None]
    assert not unplaced, f"modules in no layer (add them to TABLE): {unplaced}"


def test_imports_point_down_or_sideways() -> None:
    violations = direction_violations(SRC)
    assert not violations, "imports pointing up the layer table:\n" + "\n".join(violations)


def test_only_io_layers_import_io_modules() -> None:
    violations = io_violations(SRC)
    assert not violations, "sans-I/O modules importing I/O modules:\n" + "\n".join(violations)


def test_function_level_imports_say_why() -> None:
    found = hidden_import_violations(SRC)
    unexplained = sorted(v for v in found if (v[0], v[1]) not in PENDING_FUNCTION_IMPORTS)
    assert not unexplained, (
        "function-level imports without a '# why:' comment (move them to the top of the "
        f"module, or say why they cannot be there): {unexplained}"
    )


def test_pending_list_is_current() -> None:
    found = {(f, m) for f, m, _ in hidden_import_violations(SRC)}
    stale = sorted(PENDING_FUNCTION_IMPORTS - found)
    assert not stale, f"fixed, so remove from PENDING_FUNCTION_IMPORTS: {stale}"


def test_architecture_doc_states_the_same_table() -> None:
    text = DOCS.read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    for layer in LAYERS:
        assert f"| {layer.name} |" in section, f"layer {layer.name!r} missing from the doc table"
    for pattern, name in TABLE:
        shown = pattern.replace("*", "")
        assert f"`{shown}" in section, f"{pattern} ({name}) is not in the doc's layer table"
    ranks = [section.index(f"| {layer.name} |") for layer in LAYERS]
    assert ranks == sorted(ranks), "the doc lists the layers in another order"


# -- the rules fail on a package that breaks them -------------------------------------------


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def bad_package(tmp_path: Path) -> Path:
    root = tmp_path / "twamp"
    _write(root, "__init__.py", "")
    _write(root, "constants.py", "X = 1\n")
    _write(root, "net/__init__.py", "")
    _write(root, "net/client.py", "import asyncio\nfrom ..wire import control\n")
    _write(root, "wire/__init__.py", "")
    _write(
        root,
        "wire/control.py",
        "import socket\n"
        "from .. import constants\n"
        "from ..net.client import Client\n"
        "def f():\n"
        "    from ..constants import X\n"
        "    # why: only this function needs it\n"
        "    from ..constants import X as Y\n"
        "    return X, Y\n",
    )
    _write(root, "dataplane/__init__.py", "")
    _write(
        root,
        "dataplane/loop.pyx",
        "from libc.string cimport memcpy\nfrom ..cli.main import x\ndef f():\n    import socket\n",
    )
    _write(root, "cli/__init__.py", "")
    _write(root, "cli/main.py", "x = 1\n")
    _write(root, "stray.py", "")
    return root


def test_checker_finds_an_upward_import(bad_package: Path) -> None:
    violations = direction_violations(bad_package)
    assert any(v.startswith("wire/control:3 (wire) imports twamp.net.client") for v in violations)
    assert any(
        v.startswith("dataplane/loop:2 (data plane) imports twamp.cli.main") for v in violations
    )
    assert any(v.startswith("stray: in no layer") for v in violations)
    # Down and sideways are fine: net -> wire, wire -> core.
    assert not any(v.startswith("net/client") for v in violations)
    assert not any("imports twamp.constants" in v for v in violations)


def test_checker_finds_io_in_a_sans_io_layer(bad_package: Path) -> None:
    assert io_violations(bad_package) == ["wire/control:1 (wire) imports socket"]


def test_checker_finds_an_unexplained_function_import(bad_package: Path) -> None:
    assert hidden_import_violations(bad_package) == {
        ("wire/control.py", "twamp.constants", 5),
        ("dataplane/loop.pyx", "socket", 4),
    }
