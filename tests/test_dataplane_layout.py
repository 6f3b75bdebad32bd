"""The data plane is one package: nothing outside it imports a twin, both twins share one set
of constants, and the selector's names all come from `twamp.dataplane`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import twamp
from twamp import dataplane, timestamps
from twamp.dataplane import types

ROOT = Path(twamp.__file__).resolve().parents[2]
SRC = Path(twamp.__file__).resolve().parent
DATAPLANE = SRC / "dataplane"
TWINS = (
    "twamp.dataplane.reflector",
    "twamp.dataplane.sender",
)


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ""
    if path.is_relative_to(SRC):
        parts = ("twamp", *path.relative_to(SRC).with_suffix("").parts)
        package = ".".join(parts[:-1])  # a module's package; __init__ is its own package
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _python_files() -> list[Path]:
    files = [p for p in SRC.rglob("*.py") if not p.is_relative_to(DATAPLANE)]
    for folder in ("tests", "benchmarks", "tools"):
        if (ROOT / folder).is_dir():
            files += sorted((ROOT / folder).rglob("*.py"))
    return files


def test_nothing_outside_the_package_imports_a_twin() -> None:
    files = _python_files()
    assert len(files) > 20, "the source tree was not found"
    offenders = {
        str(p.relative_to(ROOT)): sorted(m for m in _imported_modules(p) if m.startswith(TWINS))
        for p in files
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"import the twins through twamp.dataplane only: {offenders}"


def test_the_import_check_sees_a_twin_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from twamp.dataplane.reflector import pure\n"
        "import twamp.dataplane.sender.compiled\n"
        "from twamp.dataplane import Reflector\n"
    )
    hits = sorted(m for m in _imported_modules(sample) if m.startswith(TWINS))
    assert hits == [
        "twamp.dataplane.reflector",
        "twamp.dataplane.reflector.pure",
        "twamp.dataplane.sender.compiled",
    ]


def test_no_old_fast_path_modules_remain() -> None:
    for name in ("fastpath.py", "_fastpath_py.py", "_fastpath.pyx", "_fastpath.pxd"):
        assert not (SRC / name).exists(), name
    assert (DATAPLANE / "reflector" / "pure.py").exists()
    assert (DATAPLANE / "sender" / "pure.py").exists()


def test_selector_exports() -> None:
    twin = dataplane.implementations()[dataplane.IMPLEMENTATION]
    assert dataplane.Reflector is twin.Reflector
    assert dataplane.Sender is twin.Sender
    assert dataplane.SessionSpec is types.SessionSpec
    assert dataplane.LightPolicy is types.LightPolicy
    assert dataplane.SenderResult is types.SenderResult


def test_compiled_constants_match_the_shared_module() -> None:
    twins = dataplane.implementations()
    if "cython" not in twins:
        if dataplane.REQUIRE_EXTENSION:
            pytest.fail("TWAMP_REQUIRE_EXTENSION=1 but the compiled data plane is missing")
        pytest.skip("the compiled twins are not built")
    c = twins["cython"].reflector_module.C_CONSTANTS
    for name in (
        "MAX_DATAGRAM",
        "SEND_BATCH",
        "REFLECTOR_SEND_BATCH",
        "BUF_STRIDE",
        "SPIN_NS",
        "MAX_SLEEP_NS",
        "BEHIND_NS",
        "LIGHT_IDLE_NS",
        "NEVER",
        "S_BIT",
        "Z_BIT",
    ):
        assert c[name] == getattr(types, name), name
    assert c["NS"] == timestamps.NS
    assert c["NTP_UNIX_DELTA"] == timestamps.NTP_UNIX_DELTA_S
    assert c["TAI_OFFSET_S"] == timestamps.DEFAULT_TAI_OFFSET_S
