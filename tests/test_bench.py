"""twamp-bench's library: the rate search, sizes, spreads, trial checks, a real loopback run, and
targets that are not (working) reflectors.

Everything on the network stays on loopback and is bounded in packets and seconds.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import twamp
from twamp import clock
from twamp.bench import engine, probe
from twamp.bench import trial as trial_mod
from twamp.bench.conditions import command_line, cpu_plan, socket_stats
from twamp.bench.config import BenchSettings, PacketSize, parse_sizes, resolve_sizes
from twamp.bench.engine import run_benchmark
from twamp.bench.report import validate
from twamp.bench.search import RateSearch, Verdict, verdict
from twamp.bench.stats import quantiles, spread, spread_of_summaries
from twamp.bench.targets import (
    BenchError,
    CommandReflector,
    ControlTarget,
    LightTarget,
    LocalReflector,
    SessionOptions,
    Target,
)
from twamp.bench.trial import TrialData, sender_check, sender_limit
from twamp.constants import TestMode
from twamp.hostport import parse_hostport
from twamp.metrics import RECORD_DTYPE, SENT_DTYPE
from twamp.wire.packets import TestFormat

MASK_AT_IMPORT = os.sched_getaffinity(0)
OPEN = TestFormat(TestMode.OPEN)
AUTH = TestFormat(TestMode.AUTHENTICATED)
STAMP = TestFormat(TestMode.OPEN, stamp=True)


# -- the rate search (sans-I/O) -------------------------------------------------------------------


def _drive(search: RateSearch, loss_at: Any, limit: int = 100) -> list[float]:
    """Run a search against a simulated reflector; returns the rates tried."""
    tried = []
    while (rate := search.next_rate()) is not None:
        tried.append(rate)
        search.record(rate, loss_at(rate))
        assert len(tried) < limit, "the search does not terminate"
    return tried


def _knee(threshold: float, slope: float = 100.0) -> Any:
    """Zero loss up to `threshold`, then loss growing with the excess (in %)."""
    return lambda r: 0.0 if r <= threshold else min(100.0, slope * (r - threshold) / r)


@pytest.mark.parametrize("threshold", [1_500.0, 12_345.0, 77_000.0])
def test_search_brackets_a_knee_within_the_resolution(threshold: float) -> None:
    search = RateSearch(floor_pps=1_000, cap_pps=100_000, tolerance_pct=0.1, resolution=0.05)
    tried = _drive(search, _knee(threshold))
    zero, tol = search.result()
    assert zero.pps is not None and not zero.at_cap
    assert zero.pps <= threshold < zero.pps * 1.05 + 1e-6
    assert zero.fail_pps is not None and zero.pps < zero.fail_pps <= zero.pps * 1.05 + 1e-6
    # A loss of at most 0.1 % is reached a little above the knee (slope 100: 0.1 % at +0.1 %).
    assert tol.pps is not None and zero.pps <= tol.pps <= threshold * 1.001 * 1.05
    assert tried[0] == 100_000  # RFC 2544 starts at the maximum rate
    assert all(1_000 <= r <= 100_000 for r in tried)


def test_search_reports_none_when_even_the_floor_loses() -> None:
    search = RateSearch(floor_pps=1_000, cap_pps=50_000, tolerance_pct=0.1)
    tried = _drive(search, lambda r: 10.0)  # a 10 % dropper
    zero, tol = search.result()
    assert zero.pps is None and tol.pps is None
    assert min(tried) == 1_000  # the floor itself was tried before giving up
    assert zero.fail_pps == 1_000


def test_search_tolerant_rate_above_zero_loss_rate() -> None:
    # 0.05 % loss from 20k up, 5 % from 40k: zero-loss < 20k, 0.1 %-tolerant in [20k, 40k).
    def loss(r: float) -> float:
        return 0.0 if r < 20_000 else (0.05 if r < 40_000 else 5.0)

    search = RateSearch(floor_pps=1_000, cap_pps=100_000, tolerance_pct=0.1, resolution=0.02)
    _drive(search, loss)
    zero, tol = search.result()
    assert zero.pps is not None and tol.pps is not None
    assert 20_000 / 1.02 <= zero.pps < 20_000
    assert 40_000 / 1.02 <= tol.pps < 40_000


def test_search_passing_at_the_cap_is_only_a_lower_bound() -> None:
    search = RateSearch(floor_pps=1_000, cap_pps=30_000, tolerance_pct=0.1)
    tried = _drive(search, _knee(1e9))
    zero, tol = search.result()
    assert tried == [30_000]
    assert zero.pps == 30_000 and zero.at_cap and zero.fail_pps is None
    assert tol.at_cap


def test_verdicts_per_criterion() -> None:
    # A pass needs the rate offered; a failure needs a clean sender; the rest proves nothing.
    assert verdict(0.0, 0.0, offered=True, clean=False) is Verdict.PASS  # late but no loss
    assert verdict(0.0, 0.0, offered=False, clean=False) is Verdict.UNVERIFIED
    assert verdict(5.0, 0.1, offered=True, clean=True) is Verdict.FAIL
    assert verdict(5.0, 0.1, offered=True, clean=False) is Verdict.UNVERIFIED  # a stall's burst
    assert verdict(0.05, 0.1, offered=True, clean=False) is Verdict.PASS


def test_search_repeats_an_unverified_trial_at_the_same_rate() -> None:
    search = RateSearch(floor_pps=1_000, cap_pps=100_000, tolerance_pct=0.1, attempts=4)
    assert search.next_rate() == 100_000
    search.record(100_000, 30.0, offered=True, clean=False)  # a stall: proves nothing
    assert search.next_rate() == 100_000  # the same rate again, not a step down
    search.record(100_000, 0.0)
    zero, _ = search.result()
    assert zero.pps == 100_000 and zero.at_cap and zero.bound == "cap"


def test_search_a_rate_never_held_becomes_a_ceiling_not_a_failure() -> None:
    search = RateSearch(floor_pps=1_000, cap_pps=100_000, tolerance_pct=0.1, attempts=3)
    tried = []
    while (rate := search.next_rate()) is not None:
        tried.append(rate)
        held = rate < 40_000  # our sender cannot offer 40 kpps or more; the reflector is perfect
        search.record(rate, 0.0 if held else 50.0, offered=held, clean=held)
        assert len(tried) < 100
    assert tried[:3] == [100_000] * 3  # three attempts before giving the rate up
    zero, _ = search.result()
    assert zero.pps is not None and zero.pps < 40_000 and zero.fail_pps is None
    assert zero.at_cap and zero.bound == "ceiling" and zero.ceiling_pps is not None
    assert zero.ceiling_pps >= 40_000
    assert zero.ceiling_pps / zero.pps <= 1.05 + 1e-9


def test_search_pass_below_a_failure_and_a_ceiling_is_bracketed() -> None:
    search = RateSearch(floor_pps=1_000, cap_pps=100_000, tolerance_pct=0.1, attempts=1)
    search.record(90_000, 20.0)  # the reflector failed here
    search.record(80_000, 0.0)
    search.record(100_000, 0.0, offered=False, clean=False)  # ceiling above the failure
    zero, _ = search.result()
    assert zero.pps == 80_000 and zero.fail_pps == 90_000 and not zero.at_cap


def test_search_nothing_verifiable_says_so() -> None:
    search = RateSearch(floor_pps=1_000, cap_pps=8_000, tolerance_pct=0.1, attempts=2)
    while (rate := search.next_rate()) is not None:
        search.record(rate, 0.0, offered=False, clean=False)
    zero, _ = search.result()
    assert zero.pps is None and zero.fail_pps is None and zero.unverifiable
    assert zero.ceiling_pps == 1_000


def test_search_with_a_hint_needs_fewer_trials() -> None:
    cold = RateSearch(floor_pps=1_000, cap_pps=500_000, tolerance_pct=0.1)
    n_cold = len(_drive(cold, _knee(33_000)))
    warm = RateSearch(floor_pps=1_000, cap_pps=500_000, tolerance_pct=0.1, hint=33_500)
    n_warm = len(_drive(warm, _knee(33_000)))
    assert warm.result()[0].pps == pytest.approx(cold.result()[0].pps, rel=0.06)
    assert n_warm < n_cold


def test_search_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError):
        RateSearch(floor_pps=10, cap_pps=5, tolerance_pct=0)
    with pytest.raises(ValueError):
        RateSearch(floor_pps=1, cap_pps=5, tolerance_pct=-1)


# -- sizes, settings, spreads -------------------------------------------------------------------


def test_sizes_minimum_and_imix_per_mode() -> None:
    items = parse_sizes("min,128,imix")
    open_sizes = resolve_sizes(items, OPEN)
    assert [s.label for s in open_sizes] == ["41", "128", "imix"]
    assert open_sizes[2].pattern == ((64, 7), (576, 4), (1472, 1))
    assert open_sizes[2].mean_octets == pytest.approx((7 * 64 + 4 * 576 + 1472) / 12)
    auth = resolve_sizes(items, AUTH)
    assert auth[0].label == "112"
    assert auth[2].pattern == ((112, 7), (576, 4), (1472, 1))  # 64 clipped up to the minimum
    assert resolve_sizes(("min",), STAMP)[0].label == "44"


def test_sizes_errors() -> None:
    for bad in ("", "abc", "0", "70000", "12.5"):
        with pytest.raises(ValueError):
            parse_sizes(bad)
    with pytest.raises(ValueError, match="below the 112-octet minimum"):
        resolve_sizes(("64",), AUTH)


def test_settings_validation() -> None:
    with pytest.raises(ValueError):
        BenchSettings(trials=0)
    with pytest.raises(ValueError):
        BenchSettings(latency_fractions_pct=(0.0,))
    with pytest.raises(ValueError):
        BenchSettings(min_rate_pps=5000, max_rate_pps=100)


def test_spread_and_quantiles() -> None:
    assert spread([3, None, 1, 2]) == {"min": 1, "median": 2, "max": 3, "n": 3}
    assert spread([1.0, 2.0]) == {"min": 1.0, "median": 1.5, "max": 2.0, "n": 2}
    assert spread([None]) is None
    q = quantiles(np.arange(1, 1002, dtype=np.int64))
    assert q is not None and len(q) == 101
    assert q[0] == 1 and q[50] == 501 and q[100] == 1001
    assert q == sorted(q)
    assert quantiles(np.zeros(0, dtype=np.int64)) is None
    s = spread_of_summaries(
        [{"rtt": {"median": 10, "p99": 30}}, {"rtt": {"median": 20, "p99": 50}}]
    )
    rtt = s["rtt"]
    assert rtt is not None
    assert rtt["median"] == {"min": 10, "median": 15, "max": 20, "n": 2}
    assert s["forward"] is None


def test_imix_is_sent_in_runs_of_one_size() -> None:
    size = PacketSize("imix", ((64, 7), (576, 4), (1472, 1)))
    chunks = trial_mod._chunks(size, 200)
    assert chunks[:4] == [(64, 0, 56), (576, 56, 88), (1472, 88, 96), (64, 96, 152)]
    assert chunks[-1][2] == 200
    covered = [i for _, a, b in chunks for i in range(a, b)]
    assert covered == list(range(200))


def test_parse_hostport() -> None:
    assert parse_hostport("example.net", 862) == ("example.net", 862)
    assert parse_hostport("192.0.2.1:4000", 862) == ("192.0.2.1", 4000)
    assert parse_hostport("[2001:db8::1]:5000", 862) == ("2001:db8::1", 5000)
    assert parse_hostport("::1", 862) == ("::1", 862)
    for bad in ("", "host:0", "host:99999", "host:x", "[::1", ":80"):
        with pytest.raises(ValueError):
            parse_hostport(bad, 862)


def test_cpu_plan_two_distinct_cores_or_none() -> None:
    assert cpu_plan(False) == (None, None)
    reflector, sender = cpu_plan(True)
    if len(os.sched_getaffinity(0)) >= 2:
        assert reflector is not None and sender is not None and reflector != sender
    else:
        assert (reflector, sender) == (None, None)


def test_command_line_is_shell_quoted() -> None:
    assert command_line(["/usr/bin/twamp-bench", "--sizes", "min,imix", "a b"]) == (
        "twamp-bench --sizes min,imix 'a b'"
    )


# -- trial checks (hand-made arrays) -------------------------------------------------------------


def _trial(
    sent: int = 1000, behind: int = 0, lag: int = 0, span_s: float = 1.0, **kw: Any
) -> TrialData:
    arr = np.zeros(sent, dtype=SENT_DTYPE)
    arr["seq"] = np.arange(sent)
    arr["t1"] = (np.arange(sent) * (span_s * 1e9 / max(sent - 1, 1))).astype(np.int64)
    counters = {"sent": sent, "send_errors": 0, "behind_schedule": behind, "max_lag_ns": lag}
    counters.update(kw.pop("counters", {}))
    return TrialData(
        sent=arr,
        received=np.zeros(0, dtype=RECORD_DTYPE),
        foreign=0,
        counters=counters,
        sender_drops=kw.get("sender_drops", 0),
        reflector_drops=None,
    )


def test_sender_limit_verdicts() -> None:
    assert sender_check(_trial(), 999.0) == (True, None)  # 999 pps offered, 999 achieved
    assert sender_check(_trial(span_s=2.0), 999.0)[0] is False  # not offered
    assert sender_check(_trial(lag=30_000_000), 999.0)[0] is True  # offered, but not clean
    assert sender_limit(_trial(), 999.0) is None
    reason = sender_limit(_trial(span_s=2.0), 999.0)  # half the rate: could not keep up
    assert reason is not None and "reached only" in reason
    # Late packets alone (short lateness, caught up within 20 ms) do not spoil a trial.
    assert sender_limit(_trial(behind=900, lag=15_000_000), 999.0) is None
    reason = sender_limit(_trial(lag=30_000_000), 999.0)
    assert reason is not None and "stalled" in reason
    reason = sender_limit(_trial(sender_drops=3), 999.0)
    assert reason is not None and "receive buffer" in reason
    reason = sender_limit(_trial(counters={"send_errors": 2}), 999.0)
    assert reason is not None and "sends failed" in reason


def test_match_keeps_only_reflections_of_what_was_sent() -> None:
    first = 0xFFFFFFF0  # the trial's sequence numbers wrap
    sent = np.zeros(4, dtype=SENT_DTYPE)
    sent["seq"] = [(first + i) & 0xFFFFFFFF for i in range(4)]
    sent["t1"] = [1000, 2000, 3000, 4000]
    rx = np.zeros(5, dtype=RECORD_DTYPE)
    rx["sender_seq"] = [first, first + 2, (first + 3) & 0xFFFFFFFF, 7, first + 1]
    rx["t1"] = [1000, 3000, 4000, 1234, 9999]  # the last echoes a wrong T1
    valid, foreign = trial_mod.match(sent, rx, first)
    assert foreign == 2
    assert list(valid["sender_seq"]) == [0, 2, 3]


# -- the kernel's per-socket drop counter --------------------------------------------------------


def test_socket_stats_sees_a_full_receive_buffer() -> None:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sink.bind(("127.0.0.1", 0))
        inode = os.fstat(sink.fileno()).st_ino
        before = socket_stats(inode=inode)
        assert before is not None and before.drops == 0
        for _ in range(300):
            tx.sendto(b"x" * 500, sink.getsockname())
        after = socket_stats(inode=inode)
        assert after is not None
        assert after.drops > 0 and after.rx_queue > 0
        by_port = socket_stats(port=sink.getsockname()[1])
        assert by_port is not None and by_port.drops == after.drops
    finally:
        sink.close()
        tx.close()


# -- a real run on loopback ------------------------------------------------------------------------

TINY = BenchSettings(
    sizes=("min",),
    trials=2,
    trial_duration_s=0.05,
    latency_fractions_pct=(50.0,),
    resolution_pct=20.0,
    min_rate_pps=500.0,
    max_rate_pps=20_000.0,
)


@pytest.fixture(scope="module")
def loopback_run() -> dict[str, Any]:
    reflector_cpu, sender_cpu = cpu_plan(True)
    target = LocalReflector("fast", SessionOptions(), impl="fast", cpu=reflector_cpu)
    return run_benchmark([target], TINY, argv=["twamp-bench", "--tiny"], sender_cpu=sender_cpu)


def test_search_runs_go_round_robin_over_the_sizes() -> None:
    """Run 1 of every size, then run 2 of every size: a slow spell of the machine costs one run
    of several sizes, not every run of one (`engine._measure_sizes`); latency comes after all
    the searches."""
    settings = dataclasses.replace(TINY, sizes=("min", "512"))
    target = LocalReflector("fast", SessionOptions(), impl="fast")
    doc = run_benchmark([target], settings)
    validate(doc)
    sizes = doc["targets"][0]["sizes"]
    assert [s["size"] for s in sizes] == ["41", "512"] and all(s["complete"] for s in sizes)
    spans = sorted(
        (
            min(t["start_ns"] for t in run["trials"]),
            max(t["start_ns"] for t in run["trials"]),
            s["size"],
        )
        for s in sizes
        for run in s["throughput"]["runs"]
    )
    assert [label for _, _, label in spans] == ["41", "512", "41", "512"], spans
    # no run of one size inside another's
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans)), spans
    last_search = max(b for _, b, _ in spans)
    first_latency = min(t["start_ns"] for s in sizes for p in s["latency"] for t in p["trials"])
    assert last_search < first_latency


def _distributions(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for t in doc["targets"]:
        for size in t["sizes"]:
            for point in size["latency"]:
                for trial in point["trials"]:
                    for key in ("rtt", "forward", "backward", "residence", "ipdv"):
                        if trial[key] is not None:
                            yield trial[key]


def test_loopback_run_is_internally_consistent(loopback_run: dict[str, Any]) -> None:
    doc = loopback_run
    validate(doc)
    assert doc["complete"] and not doc["interrupted"]
    (target,) = doc["targets"]
    assert target["error"] is None and target["kind"] == "local"
    assert target["reflector"]["pid"] and target["reflector"]["counters"]["received"] > 0
    (size,) = target["sizes"]
    assert size["size"] == "41" and size["complete"]
    runs = size["throughput"]["runs"]
    assert len(runs) == 2 and all(r["complete"] for r in runs)
    n_trials = 0
    for run in runs:
        for trial in run["trials"]:
            n_trials += 1
            assert 0 <= trial["received"] <= trial["sent"] <= trial["packets"]
            assert trial["late"] <= trial["received"]
            assert trial["lost"] == trial["sent"] - (trial["received"] - trial["late"])
            assert trial["loss_pct"] == pytest.approx(100.0 * trial["lost"] / trial["sent"])
            assert trial["sender_limited"] == (trial["limit_reason"] is not None)
        zero, tol = run["zero_loss_pps"], run["tolerant_pps"]
        if zero is not None and tol is not None:
            assert zero <= tol
        if zero is not None:
            assert 500.0 <= zero <= run["cap_pps"] * (1 + 1e-9)
    assert n_trials >= 2
    # Every reported rate passed in some trial in which our sender offered it: the report's
    # figures come from verified trials, not from anywhere else.
    tol_pct = doc["settings"]["loss_tolerance_pct"]
    for run in runs:
        for key, limit in (("zero_loss_pps", 0.0), ("tolerant_pps", tol_pct)):
            passed = {
                t["offered_pps"] for t in run["trials"] if t["offered"] and t["loss_pct"] <= limit
            }
            assert run[key] is None or run[key] in passed
    for dist in _distributions(doc):
        assert dist["min"] <= dist["median"] <= dist["p95"] <= dist["p99"] <= dist["max"]
        assert dist["count"] >= 1
    for point in size["latency"]:
        q = point["rtt_quantiles_ns"]
        if q is not None:
            assert q == sorted(q) and len(q) == 101
        for trial in point["trials"]:
            assert trial["received"] <= trial["sent"]
            if trial["rtt"] is not None:
                assert trial["rtt"]["min"] > 0  # a round trip takes time
    fig = size["throughput"]["zero_loss"]
    assert fig["status"] in (
        "found",
        "partial",
        "none",
        "sender_limited",
        "at_max_rate",
        "unverifiable",
    )
    if fig["pps"] is not None:
        assert fig["pps"]["min"] <= fig["pps"]["median"] <= fig["pps"]["max"]
        assert fig["figure_pps"] == fig["pps"]["max"]  # the highest verified pass


def test_loopback_run_records_its_conditions(loopback_run: dict[str, Any]) -> None:
    c = loopback_run["conditions"]
    assert c["kernel"] == platform.release()
    assert c["command_line"] == "twamp-bench --tiny"
    assert c["packages"]["twamp"] == twamp.__version__
    assert c["packages"]["numpy"] == np.__version__
    assert c["packages"]["python"] == platform.python_version()
    from twamp import dataplane

    assert c["sender"]["implementation"] == dataplane.Sender.IMPLEMENTATION
    assert c["sender"]["rcvbuf"] and c["sender"]["rcvbuf"] > 0
    assert c["cpus_online"] == os.cpu_count()
    target = loopback_run["targets"][0]
    assert target["reflector"]["implementation"] == dataplane.IMPLEMENTATION
    assert target["reflector"]["rcvbuf"] > 0
    reflector_cpu, sender_cpu = cpu_plan(True)
    assert c["sender"]["cpu"] == sender_cpu and target["reflector"]["cpu"] == reflector_cpu
    settings = loopback_run["settings"]
    assert settings["trials"] == 2 and settings["sizes"] == ["min"]


def test_loopback_run_restores_the_cpu_mask(loopback_run: dict[str, Any]) -> None:
    assert os.sched_getaffinity(0) == MASK_AT_IMPORT


def test_local_reflector_process_is_stopped(loopback_run: dict[str, Any]) -> None:
    pid = loopback_run["targets"][0]["reflector"]["pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# -- targets that are not (working) reflectors --------------------------------------------------

QUICK = BenchSettings(sizes=("min",), trials=1, trial_duration_s=0.05, latency_fractions_pct=(50,))


def test_nothing_answers_a_bound_socket() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    try:
        target = LightTarget("silent", "127.0.0.1", port, SessionOptions())
        with pytest.raises(BenchError, match=rf"^no reply from 127\.0\.0\.1:{port}$"):
            run_benchmark([target], QUICK)
    finally:
        silent.close()


def test_nothing_listens_on_a_closed_port() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    target = LightTarget("closed", "127.0.0.1", port, SessionOptions())
    with pytest.raises(BenchError, match=rf"^no reply from 127\.0\.0\.1:{port}$"):
        run_benchmark([target], QUICK)


class GarbageEcho:
    """Answers every datagram with random octets of the same length (bounded in time)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.answered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = clock.monotonic_ns() + 30 * 1_000_000_000
        while not self._stop.is_set() and clock.monotonic_ns() < deadline:
            try:
                data, addr = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.sock.sendto(os.urandom(len(data)), addr)
            self.answered += 1

    def __enter__(self) -> GarbageEcho:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.mark.parametrize("size", ["min", "128"])
def test_a_reflector_answering_garbage(size: str) -> None:
    with GarbageEcho() as echo:
        target = LightTarget("garbage", "127.0.0.1", echo.port, SessionOptions())
        settings = BenchSettings(sizes=(size,), trials=1, trial_duration_s=0.05)
        with pytest.raises(BenchError, match="are not TWAMP/STAMP reflections") as info:
            run_benchmark([target], settings)
    assert str(info.value) == f"replies from 127.0.0.1:{echo.port} are not TWAMP/STAMP reflections"
    assert echo.answered > 0


def test_an_error_in_one_of_several_targets_is_recorded_not_raised() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    targets: list[Target] = [
        LightTarget("closed-a", "127.0.0.1", port, SessionOptions()),
        LightTarget("closed-b", "127.0.0.1", port, SessionOptions()),
    ]
    doc = run_benchmark(targets, QUICK, command="compare")
    validate(doc)
    assert [t["error"] for t in doc["targets"]] == [f"no reply from 127.0.0.1:{port}"] * 2


def test_a_command_reflector_that_exits_at_once() -> None:
    target = CommandReflector(
        "false", f"{sys.executable} -c 'import sys; sys.exit(3)' {{port}}", SessionOptions()
    )
    with pytest.raises(BenchError, match="exited with status 3"):
        run_benchmark([target], QUICK)


def test_a_command_reflector_needs_a_port_placeholder() -> None:
    with pytest.raises(ValueError, match="port"):
        CommandReflector("x", "some-reflector --port 862", SessionOptions())


# -- full TWAMP: wrong key / mode through --control --------------------------------------------

KEY_ID = "bench"
SECRET = b"the bench secret"


class InProcessServer:
    """`twamp.net.server.TwampServer` on an ephemeral loopback port, in a thread of its own."""

    def __init__(self, modes: Any) -> None:
        import asyncio

        from twamp.net.server import ServerConfig, TwampServer

        config = ServerConfig(
            listen=(("127.0.0.1", 0),), modes=modes, keys={KEY_ID.encode(): SECRET}, count=1024
        )
        self.server = TwampServer(config)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        import asyncio

        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self.server.start())
        self.port = self.server.addresses[0][1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.server.stop())
        self._loop.close()

    def __enter__(self) -> InProcessServer:
        self._thread.start()
        assert self._ready.wait(10), "TwampServer did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def test_control_with_a_wrong_key() -> None:
    from twamp.constants import Mode

    with InProcessServer(Mode.AUTHENTICATED) as srv:
        target = ControlTarget(
            "ctl",
            "127.0.0.1",
            srv.port,
            SessionOptions(),
            modes=(Mode.AUTHENTICATED,),
            key_id=KEY_ID,
            passphrase=b"not the secret",
            timeout_s=5,
        )
        with pytest.raises(BenchError, match="key") as info:
            run_benchmark([target], QUICK)
    assert "\n" not in str(info.value)


def test_control_with_a_mode_the_server_does_not_offer() -> None:
    from twamp.constants import Mode

    with InProcessServer(Mode.UNAUTHENTICATED) as srv:
        target = ControlTarget(
            "ctl",
            "127.0.0.1",
            srv.port,
            SessionOptions(),
            modes=(Mode.ENCRYPTED,),
            key_id=KEY_ID,
            passphrase=SECRET,
            timeout_s=5,
        )
        with pytest.raises(BenchError, match="encrypted") as info:
            run_benchmark([target], QUICK)
    assert "open" in str(info.value)  # what the server does offer


@pytest.mark.parametrize(
    ("mode_name", "scope"), [("open", "trial"), ("encrypted", "trial"), ("authenticated", "size")]
)
def test_control_runs_sessions_in_the_negotiated_mode(mode_name: str, scope: str) -> None:
    from twamp.constants import Mode

    mode = {
        "open": Mode.UNAUTHENTICATED,
        "authenticated": Mode.AUTHENTICATED,
        "encrypted": Mode.ENCRYPTED,
    }[mode_name]
    settings = BenchSettings(
        sizes=("min",),
        trials=1,
        trial_duration_s=0.05,
        latency_fractions_pct=(50,),
        resolution_pct=50.0,
        min_rate_pps=500.0,
        max_rate_pps=2_000.0,
    )
    with InProcessServer(mode) as srv:
        target = ControlTarget(
            "ctl",
            "127.0.0.1",
            srv.port,
            SessionOptions(),
            modes=(mode,),
            key_id=KEY_ID if mode_name != "open" else None,
            passphrase=SECRET if mode_name != "open" else None,
            scope=scope,
            timeout_s=5,
        )
        doc = run_benchmark([target], settings)
    validate(doc)
    (t,) = doc["targets"]
    assert t["error"] is None and t["mode"] == mode_name
    minimum = 41 if mode_name == "open" else 112
    assert t["sizes"][0]["size"] == str(minimum)
    assert t["address"] == f"127.0.0.1:{srv.port}"  # the server, not a test port
    trials = [tr for r in t["sizes"][0]["throughput"]["runs"] for tr in r["trials"]]
    if scope == "trial":
        # One session for the probe and one per trial, each negotiated and answered.
        assert t["sessions"] == 1 + len(trials) + len(t["sizes"][0]["latency"][0]["trials"])
    else:
        # the probe's, then one per search run of the only size (the runs go round-robin over
        # the sizes, each run in a session of its size) and one for its latency trials
        runs = len(t["sizes"][0]["throughput"]["runs"])
        assert runs == 1 and t["sessions"] == 1 + runs + 1
    assert all(tr["received"] > 0 for tr in trials)


def test_reflector_proc_reports_ready_and_counters() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "twamp.bench.reflector_proc", "--impl", "pure", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("ready ")
        info = json.loads(line[6:])
        assert info["implementation"] == "python" and info["pid"] == proc.pid
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(bytes(41), ("127.0.0.1", info["port"]))
            reply, _ = s.recvfrom(100)
        assert len(reply) == 41
    finally:
        proc.terminate()  # by PID: the process this test started
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    counters = json.loads(out.strip().splitlines()[-1])
    assert counters["reflected"] == 1


def test_unreachable_target_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every send failing (no route): the kernel's reason, found with connect(2) alone."""

    def failing(session: Any, size: Any, schedule: Any, **kw: Any) -> TrialData:
        data = _trial(sent=0)
        data.counters.update(send_errors=int(schedule.size), sent=0)
        data.counters.update(
            received=0, malformed=0, auth_failed=0, unknown_peer=0, reflector_unsynced=0
        )
        return data

    monkeypatch.setattr(probe, "send_schedule", failing)
    monkeypatch.setattr(probe, "send_error", lambda peer: "Network is unreachable")
    target = LightTarget("far", "127.0.0.1", 9, SessionOptions())
    with pytest.raises(BenchError) as info:
        run_benchmark([target], QUICK)
    assert str(info.value) == "127.0.0.1:9 is unreachable: network is unreachable"


def _reflector_process(*args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "twamp.bench.reflector_proc", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("ready "), proc.stderr.read() if proc.stderr else line
    return proc, int(json.loads(line[6:])["port"])


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_an_ipv6_light_target() -> None:
    proc, port = _reflector_process("--impl", "fast", "--addr", "::1", "--port", "0")
    try:
        target = LightTarget(f"[::1]:{port}", "::1", port, SessionOptions())
        doc = run_benchmark([target], TINY)
    finally:
        proc.terminate()  # by PID: the process this test started
        proc.communicate(timeout=10)
    validate(doc)
    (t,) = doc["targets"]
    assert t["error"] is None and t["address"] == f"[::1]:{port}"
    trials = [tr for r in t["sizes"][0]["throughput"]["runs"] for tr in r["trials"]]
    assert trials and all(tr["received"] > 0 for tr in trials)


def test_our_reflector_in_stamp_format() -> None:
    target = LocalReflector("stamp", SessionOptions(), impl="pure", stamp=True)
    doc = run_benchmark([target], TINY)
    validate(doc)
    (t,) = doc["targets"]
    assert t["stamp"] and t["format"] == {"sender_header": 44, "reflector_header": 44}
    (size,) = t["sizes"]
    assert size["size"] == "44"
    assert t["reflector"]["implementation"] == "python"
    assert t["reflector"]["counters"]["reflected"] > 0


# -- a sender that stalls on purpose must not lower the figure ------------------------------------


class _FakeContext:
    """search_run's view of a target: a reflector with a knee, a sender that stalls on cue."""

    def __init__(self, knee: float, stall_every: int) -> None:
        self.settings = BenchSettings(trials=1, resolution_pct=2.0, min_rate_pps=1000.0)
        self.target = type("T", (), {"name": "fake"})()
        self.knee = knee
        self.stall_every = stall_every
        self.n = 0

    def progress(self, text: str) -> None:
        pass

    def trial(self, size: PacketSize, rate: float, duration_s: float) -> dict[str, Any]:
        self.n += 1
        stalled = self.stall_every and self.n % self.stall_every == 0
        loss = 0.0 if rate <= self.knee else 100.0 * (rate - self.knee) / rate
        if stalled:
            # A 30 ms stall: the catch-up burst overflows the reflector whatever the rate.
            loss = max(loss, 4.0)
        return {
            "offered_pps": rate,
            "loss_pct": loss,
            "offered": True,
            "sender_limited": bool(stalled),
            "limit_reason": "the sender stalled for 30.0 ms" if stalled else None,
        }


@pytest.mark.parametrize("stall_every", [2, 3])
def test_an_injected_sender_stall_does_not_lower_the_figure(stall_every: int) -> None:
    size = PacketSize("41", ((41, 1),))

    def figure(ctx: _FakeContext) -> float:
        result: dict[str, Any] = {"throughput": {"runs": []}}
        ctx_: Any = ctx
        run = engine.search_run(ctx_, result, size, 200_000.0, "sender", None)
        assert not run["zero_loss_at_cap"]
        return float(run["zero_loss_pps"])

    quiet = figure(_FakeContext(60_000.0, 0))
    stalled_ctx = _FakeContext(60_000.0, stall_every)
    stalled = figure(stalled_ctx)
    assert 60_000 / 1.02 <= quiet <= 60_000
    assert stalled == pytest.approx(quiet, rel=0.02)  # not one step lower
    assert stalled_ctx.n > 5  # stalls happened and were repeated


def test_reflector_proc_survives_two_signals_close_together() -> None:
    """Its handler only records the signal (issue 12: a handler calling Event.set() can hang
    when the second signal lands inside Event.wait()); every run must end, with counters."""
    for _ in range(8):
        proc, _port = _reflector_process("--impl", "pure", "--port", "0", "--cpu", "-1")
        proc.send_signal(signal.SIGTERM)  # by PID: the process this test started
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert "reflected" in json.loads(out.strip().splitlines()[-1])
