"""Smoke test of the reflector benchmark (benchmarks/): the C programs build, and one sender run
against the C reference reflector and against the pure twin gives a self-consistent summary.

Runs on 127.0.0.1 in the current namespace at a low rate for about a second per run; no root
needed. The search logic is checked separately against a synthetic reflector, without sockets.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from conftest import require

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
RATE = 2000
SECONDS = 1.0
PADDING = 40  # 54-octet requests: the reply keeps 13 of the 40 padding octets (spec §5.5)


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_reflector", BENCH_DIR / "bench_reflector.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return _load()


@pytest.fixture(scope="module")
def programs(bench: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Any:
    require(shutil.which("gcc") is not None, "gcc is not installed: cannot build benchmarks/*.c")
    return bench.build_programs(tmp_path_factory.mktemp("bench") / "bin")


def _ordered(dist: dict[str, float]) -> bool:
    return dist["min"] <= dist["p50"] <= dist["p90"] <= dist["p99"] <= dist["max"]


def _check_run(result: dict[str, Any], ttl: int) -> None:
    sent, received = result["sent"], result["received"]
    assert sent == result["planned"] == RATE * SECONDS
    assert 0 <= received <= sent
    # loopback at 2 kpps with megabyte buffers: anything lost means a broken reflector
    assert received >= 0.99 * sent, result
    assert result["loss"] == pytest.approx((sent - received) / sent, abs=1e-6)
    for counter in ("duplicates", "unexpected", "malformed", "auth_failed", "send_errors"):
        assert result[counter] == 0, counter
    # reply length max(54, 41) = 54 with the sender's first 13 padding octets
    assert result["length"] == 14 + PADDING
    assert result["padding_mismatch"] == 0
    # Sender TTL = the TTL the request arrived with; replies leave with TTL 255 (RFC 5357 §4.2.1)
    assert result["sender_ttl"] == ttl
    assert result["sender_ttl_mismatch"] == 0
    assert result["reply_ttl_not_255"] == 0
    assert result["no_timestamp"] == 0
    assert not result["sender_limited"] or result["late_1ms"] > 0 or result["rx_overflow"] > 0

    lat = result["latency"]
    assert lat["records"] == received
    assert lat["sender_ttl_values"] == [ttl]
    assert lat["reply_ttl_values"] == [255]
    for name in ("rtt_us", "residence_us", "net_rtt_us"):
        assert _ordered(lat[name]), (name, lat[name])
    assert lat["negative_residence"] == 0 == result["negative_residence"]
    assert lat["residence_us"]["min"] >= 0
    assert lat["rtt_us"]["min"] > 0
    # the round trip contains the residence time (same packets, T4 - T1 >= T3 - T2)
    assert lat["rtt_us"]["p50"] >= lat["residence_us"]["p50"]
    assert lat["rtt_us"]["max"] < 1e6  # under a second on loopback


@pytest.mark.parametrize(("impl", "ttl"), [("c", 99), ("python", 77)])
def test_sender_against_reflector(
    bench: ModuleType, programs: Any, tmp_path: Path, impl: str, ttl: int
) -> None:
    ns = bench.NetNamespace(None)
    with bench.started(impl, bench.reflector_command(programs, impl, cpu=-1), ns) as refl:
        assert refl.ready["rcvbuf"] > 0
        result = bench.run_sender(
            programs,
            ns,
            refl.port,
            RATE,
            SECONDS,
            padding=PADDING,
            raw_dir=tmp_path,
            wait_ms=300,
            snmp_pid=refl.pid,
            ttl=ttl,
        )
        counters = refl.stop()
    _check_run(result, ttl)
    assert counters["received"] >= result["received"]
    assert counters["reflected"] >= result["received"]
    assert counters["malformed"] == 0
    assert list(tmp_path.iterdir()) == []  # the raw file is read and removed


def test_encrypted_session_against_pure_twin(
    bench: ModuleType, programs: Any, tmp_path: Path
) -> None:
    """c_sender's OpenSSL protection and our TestPacketCrypto agree both ways (spec §4.6)."""
    require(programs.crypto, "c_sender was built without OpenSSL (apt-get install libssl-dev)")
    ns = bench.NetNamespace(None)
    keys = (bytes(range(16)), bytes(range(100, 132)))
    port = bench._free_port_hint()
    cmd = bench.reflector_command(
        programs, "python", cpu=-1, mode="enc", peer=("127.0.0.1", port), keys=keys
    )
    with bench.started("python enc", cmd, ns) as refl:
        result = bench.run_sender(
            programs,
            ns,
            refl.port,
            RATE,
            SECONDS,
            mode="enc",
            src_port=port,
            keys=keys,
            raw_dir=tmp_path,
            wait_ms=300,
        )
        counters = refl.stop()
    assert counters["auth_failed"] == 0
    assert result["auth_failed"] == 0
    assert result["received"] >= 0.99 * result["sent"] > 0
    assert result["length"] == 112  # 48 + the default 64 octets of padding
    assert result["padding_mismatch"] == 0
    assert result["latency"]["sender_ttl_values"] == [64]
    assert _ordered(result["latency"]["residence_us"])


def _synthetic(limit: float, sender_cap: float | None = None, bursty: bool = False) -> Any:
    """A reflector that loses 1 % above `limit`; a sender that reaches only 90 % of the rate
    above `sender_cap`; with `bursty`, a sender always flagged for falling behind."""

    def trial(rate: float) -> dict[str, Any]:
        achieved = 0.9 * rate if sender_cap is not None and rate > sender_cap else rate
        return {
            "loss": 0.0 if rate <= limit else 0.01,
            "sender_limited": ["behind"] if bursty or achieved < rate else [],
            "sent": 100,
            "planned": 100,
            "rate_target": rate,
            "send_rate": achieved,
        }

    return trial


def test_search_brackets_the_reflector_limit(bench: ModuleType) -> None:
    res = bench.search_max_rate(
        _synthetic(300_000), start=50_000, ceiling=1_600_000, resolution=0.05, trials_per_step=3
    )
    assert res.limit == "reflector"
    assert res.max_rate <= 300_000 < res.limit_rate
    assert res.limit_rate / res.max_rate <= 1.05
    # doubling 50k..400k, then bisection: every step is recorded with its trials
    assert [s["rate"] for s in res.steps[:4]] == [50_000, 100_000, 200_000, 400_000]
    assert all(1 <= len(s["trials"]) <= 3 for s in res.steps)


def test_search_never_blames_the_reflector_for_the_sender(bench: ModuleType) -> None:
    res = bench.search_max_rate(
        _synthetic(10**9, sender_cap=250_000),
        start=50_000,
        ceiling=1_600_000,
        resolution=0.05,
        trials_per_step=1,
    )
    assert res.limit == "sender"
    assert res.max_rate <= 250_000 < res.limit_rate


def test_a_late_sender_passes_but_never_fails_a_reflector(bench: ModuleType) -> None:
    """Bursty load without loss still counts as handled; loss under it is not blamed."""
    res = bench.search_max_rate(
        _synthetic(300_000, bursty=True),
        start=50_000,
        ceiling=1_600_000,
        resolution=0.05,
        trials_per_step=1,
    )
    assert res.limit == "sender"
    assert res.max_rate <= 300_000 < res.limit_rate
    assert all(s["outcome"] in ("pass", "sender") for s in res.steps)


def test_step_outcome_majority(bench: ModuleType) -> None:
    trial = _synthetic(100)
    ok, bad = trial(100), trial(200)
    limited = _synthetic(10**9, sender_cap=1)(50)
    assert bench.step_outcome([ok, ok, bad]) == "pass"
    assert bench.step_outcome([ok, bad, bad]) == "fail"
    assert bench.step_outcome([ok, bad]) == "fail"  # a tie fails
    assert bench.step_outcome([ok, limited, limited]) == "sender"
    assert bench.step_outcome([ok, ok, limited]) == "pass"


def test_search_stops_at_the_ceiling(bench: ModuleType) -> None:
    res = bench.search_max_rate(
        _synthetic(10**9), start=50_000, ceiling=300_000, resolution=0.05, trials_per_step=1
    )
    assert (res.limit, res.max_rate, res.limit_rate) == ("ceiling", 300_000, None)


def test_sender_limits(bench: ModuleType) -> None:
    clean = {
        "sent": 1000,
        "planned": 1000,
        "interrupted": False,
        "send_errors": 0,
        "rx_overflow": 0,
        "send_rate": 1000.0,
        "rate_target": 1000.0,
        "late_1ms": 0,
        "max_backlog": 3,
    }
    assert bench.sender_limits(clean) == []
    assert bench.sender_limits({**clean, "rx_overflow": 5})
    assert bench.sender_limits({**clean, "send_rate": 900.0})
    assert bench.sender_limits({**clean, "late_1ms": 101})
    assert not bench.sender_limits({**clean, "late_1ms": 100})
    assert bench.sender_limits({**clean, "sent": 999})
    assert bench.sender_limits({**clean, "max_backlog": 2001})
    assert bench.sender_limits({**clean, "send_errors": 1})
