"""The compiled fast path's per-datagram loops stay free of Python (`cython -a` scores 0).

`tools/check_annotate.py` does the work; these tests run it on the compiled twins
(`src/twamp/dataplane/{reflector,sender}/compiled.pyx`) and
prove on a small sample that it does catch Python interaction inside a marked region.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "check_annotate.py"
DATAPLANE = ROOT / "src" / "twamp" / "dataplane"
REFLECTOR = DATAPLANE / "reflector" / "compiled.pyx"
SENDER = DATAPLANE / "sender" / "compiled.pyx"

pytest.importorskip("Cython", reason="cython -a needs Cython")


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_annotate", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    if not REFLECTOR.exists():
        pytest.skip("no source tree here (an installed wheel)")
    return _tool()


def _lines_of(source: str, names: tuple[str, ...]) -> dict[str, int]:
    found = {}
    for name in names:
        (line,) = [n for n, text in enumerate(source.splitlines(), 1) if f" {name}(self" in text]
        found[name] = line
    return found


@pytest.mark.parametrize(
    ("pyx", "names", "minimum"),
    [
        (
            REFLECTOR,
            (
                "_batch_once",
                "_classify",
                "_rewrite",
                "_send_ready",
                "_flush",
                "_run_loop",
                "_spin_once",
                "_dispatch",
                "_run_member",
            ),
            150,
        ),
        (
            SENDER,
            ("_send_due", "_record", "_drain", "_wait_until", "_wait_replies", "_run_loop"),
            150,
        ),
    ],
    ids=["reflector", "sender"],
)
def test_hot_loops_score_zero(
    tool: ModuleType, pyx: Path, names: tuple[str, ...], minimum: int
) -> None:
    source = pyx.read_text()
    hot = tool.hot_lines(source)
    # The regions cover the receive path, admission, rewrite and send, not a token line.
    assert len(hot) > minimum
    for name, line in _lines_of(source, names).items():
        assert line in hot, f"{name} is outside the hot-loop regions"
    assert tool.violations(source, tool.annotate(pyx)) == []


def test_no_gil_on_the_reflector_loop(tool: ModuleType) -> None:
    source = REFLECTOR.read_text()
    assert tool.gil_violations(source) == []
    # Only the "python" crypto backend's batch phase may take the GIL from the loop.
    assert set(tool.GIL_ALLOWED) == {"_crypto_phase"}
    # Without the allowance the check does see that call (so it is not vacuous).
    strict = tool.gil_violations(source, allowed={})
    assert strict and all("_crypto_phase" in text for _, text in strict)


def test_the_gil_check_catches_with_gil_calls(tool: ModuleType) -> None:
    sample = (
        "cdef class R:\n"
        "    cdef void _helper(self) noexcept with gil:\n"
        "        pass\n"
        "    # hot-loop-begin\n"
        "    cdef void _loop(self) noexcept nogil:\n"
        "        self._helper()\n"
        "        with gil:\n"
        "            pass\n"
        "        # self._helper() in a comment is fine\n"
        "    # hot-loop-end\n"
    )
    assert [n for n, _ in tool.gil_violations(sample, allowed={})] == [6, 7]


def test_the_check_catches_python_in_a_hot_region(tool: ModuleType, tmp_path: Path) -> None:
    sample = tmp_path / "sample.pyx"
    sample.write_text(
        "cdef int quiet(int x) noexcept nogil:\n"
        "    # hot-loop-begin\n"
        "    x += 1\n"
        "    # hot-loop-end\n"
        "    return x\n"
        "\n"
        "def loud(x):\n"
        "    # hot-loop-begin\n"
        "    y = [x]\n"
        "    z = len(y)\n"
        "    # hot-loop-end\n"
        "    return z\n"
    )
    bad = tool.violations(sample.read_text(), tool.annotate(sample))
    assert [line for line, _, _ in bad] == [9, 10]
    assert all(score > 0 for _, score, _ in bad)


def test_unbalanced_markers_are_refused(tool: ModuleType) -> None:
    with pytest.raises(ValueError):
        tool.hot_lines("# hot-loop-begin\nx = 1\n")
    with pytest.raises(ValueError):
        tool.hot_lines("# hot-loop-end\n")
    with pytest.raises(ValueError):
        tool.hot_lines("# hot-loop-begin\n# hot-loop-begin\n# hot-loop-end\n")


def test_command_line_exit_status(tool: ModuleType) -> None:
    done = subprocess.run([sys.executable, str(TOOL)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "score 0" in done.stdout
