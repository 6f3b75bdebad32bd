"""The README's Python examples run as written, against loopback servers they start themselves."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def api_examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("### Python API", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_has_api_examples() -> None:
    assert len(api_examples()) >= 2


@pytest.mark.parametrize("index", range(2))
def test_readme_api_example_runs(index: int) -> None:
    code = api_examples()[index]
    namespace: dict[str, object] = {"__name__": "__readme__"}
    exec(compile(code, f"README.md python block {index}", "exec"), namespace)


def test_python_dash_m_twamp() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "twamp", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    for command in ("ping", "server", "reflect"):
        assert command in out.stdout


def test_import_twamp_exports_the_api() -> None:
    import twamp

    for name in ("run_ping", "run_light_ping", "PingOptions", "ServerThread", "LightReflector"):
        assert name in twamp.__all__ and callable(getattr(twamp, name))
    with pytest.raises(AttributeError):
        _ = twamp.no_such_thing
