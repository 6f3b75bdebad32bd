"""Fail if any line of the compiled fast path's hot loops interacts with Python.

`cython -a` scores every source line by the Python C-API calls its C code makes; the HTML
marks a line `score-N`. The
per-datagram code of the compiled twins (`src/twamp/dataplane/{reflector,sender}/compiled.pyx`)
sits between `# hot-loop-begin` and `# hot-loop-end` comments; every line there must score 0.

`cython -a` cannot see a call into a `with gil` function (the call itself is plain C), so the
reflector is also checked for those: no hot line may call a function declared `with gil`, or
open a `with gil:` block, except the one named in GIL_ALLOWED, with its reason. The sender's
loop takes the GIL on purpose every 10 ms (signals, the stop flag), so it is not checked.

Usage: python tools/check_annotate.py [path/to/compiled.pyx ...]   (exit status 1 on a violation)
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PYXS = tuple(
    SRC / "twamp" / "dataplane" / twin / "compiled.pyx" for twin in ("reflector", "sender")
)
BEGIN = "# hot-loop-begin"
END = "# hot-loop-end"
# The directives setup.py compiles with: the scores depend on them.
DIRECTIVES = ("language_level=3", "boundscheck=False", "wraparound=False")

# Functions declared `with gil` that a hot line of the reflector may call, and why.
GIL_ALLOWED = {
    "_crypto_phase": (
        "mode 2/4 sessions on the 'python' crypto backend only (libcrypto could not be loaded "
        "or TWAMP_NO_LIBCRYPTO=1): the loop calls it when a session has no libcrypto context"
    ),
}
GIL_CHECKED = ("reflector",)
_WITH_GIL_DEF = re.compile(r"^\s*cdef\b[^#]*?\b(\w+)\s*\(self[^#]*\bwith gil\s*:")

_LINE = re.compile(r'<pre class="cython line score-(\d+)"[^>]*>.<span class="">(\d+)</span>')


def hot_lines(source: str) -> set[int]:
    """1-based numbers of the lines inside the marked regions (markers excluded)."""
    lines: set[int] = set()
    inside = False
    for number, text in enumerate(source.splitlines(), start=1):
        stripped = text.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError(f"line {number}: {BEGIN} inside a hot-loop region")
            inside = True
        elif stripped == END:
            if not inside:
                raise ValueError(f"line {number}: {END} without {BEGIN}")
            inside = False
        elif inside:
            lines.add(number)
    if inside:
        raise ValueError(f"{BEGIN} without {END}")
    return lines


def scores(annotated_html: str) -> dict[int, int]:
    """Line number -> Cython's Python-interaction score, from a `cython -a` HTML page."""
    found = {
        int(m.group(2)): int(m.group(1)) for m in _LINE.finditer(html.unescape(annotated_html))
    }
    if not found:
        raise ValueError("no scored lines in the annotation (has Cython's HTML format changed?)")
    return found


def annotate(pyx: Path) -> str:
    """Run `cython -a` on a copy of `pyx` and return the HTML.

    A module of the twamp package is annotated inside a copy of the package's Cython sources
    (.pyx, .pxd, .h and the __init__.py files that make the packages), so that its cimports of
    `twamp.dataplane.*` resolve; any other file is annotated alone, with its .pxd.
    """
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pyx = pyx.resolve()
        if pyx.is_relative_to(SRC):
            for path in (SRC / "twamp").rglob("*"):
                if path.suffix in (".pyx", ".pxd", ".h") or path.name == "__init__.py":
                    target = work / path.relative_to(SRC)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, target)
            target = work / pyx.relative_to(SRC)
        else:
            target = work / pyx.name
            shutil.copy(pyx, target)
            pxd = pyx.with_suffix(".pxd")
            if pxd.exists():
                shutil.copy(pxd, work / pxd.name)
        cmd = [sys.executable, "-m", "cython", "-a", "-I", str(work)]
        for directive in DIRECTIVES:
            cmd += ["-X", directive]
        cmd += [str(target), "-o", str(target.with_suffix(".c"))]
        subprocess.run(cmd, cwd=work, check=True, capture_output=True, text=True, timeout=300)
        return target.with_suffix(".html").read_text()


def violations(source: str, annotated_html: str) -> list[tuple[int, int, str]]:
    """(line, score, text) of every hot line that scores above 0."""
    hot = hot_lines(source)
    if not hot:
        raise ValueError(f"no {BEGIN} / {END} regions in the source")
    by_line = scores(annotated_html)
    text = source.splitlines()
    return [(n, by_line[n], text[n - 1]) for n in sorted(hot) if by_line.get(n, 0) > 0]


def gil_violations(source: str, allowed: dict[str, str] | None = None) -> list[tuple[int, str]]:
    """(line, text) of every hot line that calls a `with gil` function or opens `with gil:`."""
    allowed = GIL_ALLOWED if allowed is None else allowed
    text = source.splitlines()
    names = {m.group(1) for line in text if (m := _WITH_GIL_DEF.match(line))}
    calls = re.compile(r"\b(" + "|".join(sorted(names)) + r")\s*\(") if names else None
    bad = []
    for n in sorted(hot_lines(source)):
        line = text[n - 1].split("#", 1)[0]
        opens_gil = re.search(r"\bwith\s+gil\s*:", line) is not None
        call = calls.search(line) if calls is not None else None
        if opens_gil or (call is not None and call.group(1) not in allowed):
            bad.append((n, text[n - 1]))
    return bad


def main(argv: list[str]) -> int:
    status = 0
    for pyx in [Path(a) for a in argv[1:]] or list(PYXS):
        source = pyx.read_text()
        bad = violations(source, annotate(pyx))
        n_hot = len(hot_lines(source))
        gil = gil_violations(source) if pyx.parent.name in GIL_CHECKED else []
        if bad:
            print(f"{pyx}: {len(bad)} of {n_hot} hot-loop lines interact with Python:")
            for number, score, text in bad:
                print(f"  {number}: score {score}: {text.strip()}")
            status = 1
        if gil:
            print(f"{pyx}: {len(gil)} hot-loop lines can wait for the GIL:")
            for number, text in gil:
                print(f"  {number}: {text.strip()}")
            status = 1
        if not bad and not gil:
            print(f"{pyx}: all {n_hot} hot-loop lines score 0")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
