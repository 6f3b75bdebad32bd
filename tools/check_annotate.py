"""Fail if any line of the compiled fast path's hot loops interacts with Python.

`cython -a` scores every source line by the Python C-API calls its C code makes
(research/wheels.md, model-codebases.md §2 item 18); the HTML marks a line `score-N`. The
per-datagram code of `src/twamp/_fastpath.pyx` sits between `# hot-loop-begin` and
`# hot-loop-end` comments; every line there must score 0. The crypto phase, which takes the GIL
on purpose once per batch, lives outside those regions.

Usage: python tools/check_annotate.py [path/to/_fastpath.pyx]   (exit status 1 on a violation)
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
PYX = ROOT / "src" / "twamp" / "_fastpath.pyx"
BEGIN = "# hot-loop-begin"
END = "# hot-loop-end"
# The directives setup.py compiles with: the scores depend on them.
DIRECTIVES = ("language_level=3", "boundscheck=False", "wraparound=False")

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
    """Run `cython -a` on a copy of `pyx` (and its .pxd) and return the HTML."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copy(pyx, work / pyx.name)
        pxd = pyx.with_suffix(".pxd")
        if pxd.exists():
            shutil.copy(pxd, work / pxd.name)
        cmd = [sys.executable, "-m", "cython", "-a"]
        for directive in DIRECTIVES:
            cmd += ["-X", directive]
        cmd += [pyx.name, "-o", pyx.stem + ".c"]
        subprocess.run(cmd, cwd=work, check=True, capture_output=True, text=True, timeout=300)
        return (work / (pyx.stem + ".html")).read_text()


def violations(source: str, annotated_html: str) -> list[tuple[int, int, str]]:
    """(line, score, text) of every hot line that scores above 0."""
    hot = hot_lines(source)
    if not hot:
        raise ValueError(f"no {BEGIN} / {END} regions in the source")
    by_line = scores(annotated_html)
    text = source.splitlines()
    return [(n, by_line[n], text[n - 1]) for n in sorted(hot) if by_line.get(n, 0) > 0]


def main(argv: list[str]) -> int:
    pyx = Path(argv[1]) if len(argv) > 1 else PYX
    source = pyx.read_text()
    bad = violations(source, annotate(pyx))
    n_hot = len(hot_lines(source))
    if bad:
        print(f"{pyx}: {len(bad)} of {n_hot} hot-loop lines interact with Python:")
        for number, score, text in bad:
            print(f"  {number}: score {score}: {text.strip()}")
        return 1
    print(f"{pyx}: all {n_hot} hot-loop lines score 0")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
