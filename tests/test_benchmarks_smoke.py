"""Smoke test of the micro-benchmarks (benchmarks/micro.py): every case runs and gives a cost.

The figures themselves are measurements, not asserted (a busy machine moves them): only that
each case ran, took a positive, finite time per item, and that the output is what the README
documents. The reflector benchmark proper is `twamp-bench` (tests/test_bench*.py).
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

MICRO = Path(__file__).resolve().parents[1] / "benchmarks" / "micro.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("twamp_micro", MICRO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_case_runs_and_costs_time(capsys: pytest.CaptureFixture[str]) -> None:
    micro = _load()
    assert micro.main(["--quick", "--json", "-"]) == 0
    results = json.loads(capsys.readouterr().out)
    names = [r["case"] for r in results]
    for expected in ("ntp_from_ns", "reflect (open, stateless)", "unprotect_sender (enc)"):
        assert expected in names
    assert any(n.startswith("metrics.summarize") for n in names)
    for r in results:
        assert math.isfinite(r["ns_per_item"]) and r["ns_per_item"] > 0, r
        assert r["calls"] >= 1


def test_table_output(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    micro = _load()
    out = tmp_path / "micro.json"
    assert micro.main(["--quick", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(line.rstrip().endswith(" ns") for line in lines)
    assert len(json.loads(out.read_text())) == len(lines)


def test_kernel_stamps_harness_runs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """benchmarks/kernel_stamps.py: both twins' send-time and T3 errors, one short run."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "kernel_stamps.py"
    spec = importlib.util.spec_from_file_location("twamp_kernel_stamps", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    out = tmp_path / "ks.json"
    assert module.main(["--runs", "1", "--count", "100", "--rate", "2000", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    data = json.loads(out.read_text())
    for name in ("python", "cython"):
        if name not in data:
            continue
        assert f"{name} Sender:    send error p50 " in text
        (send,) = data[name]["send"]
        assert send["stamped"] + send["missing"] == 100 and send["send_error"]["min"] >= 0
        (t3,) = data[name]["t3"]
        assert 0 < t3["samples"] <= 100 and t3["min_ns"] >= 0
