"""Smoke test of benchmarks/bench_ospf_codec.py: every stage runs and all LSAs are acked.

The harness measures; this test only checks that it works (performance is never asserted).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_ospf_codec.py"


@pytest.mark.slow
def test_bench_runs_every_stage() -> None:
    spec = importlib.util.spec_from_file_location("bench_ospf_codec", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    times = module.run_once(200)
    assert list(times) == ["make", "pack", "decode", "originate", "receive", "ack"]
    assert all(t > 0 for t in times.values())
