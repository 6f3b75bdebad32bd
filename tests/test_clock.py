"""twamp.clock: the host clock's Error Estimate from adjtimex(2), and its cache."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from twamp import clock
from twamp.clock import ClockState, estimate_from_state
from twamp.timestamps import ErrorEstimate

STA_UNSYNC = 0x0040  # <sys/timex.h>
STA_PLL = 0x0001
STA_NANO = 0x2000
TIME_OK, TIME_ERROR = 0, 5


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    clock._cache.expires_ns = 0
    yield
    clock._cache.expires_ns = 0


# Expected values from the Error Estimate encoding (RFC 4656 §4.1.2, S=1) and by hand:
# 16 s = 2^36 units of 2^-32 s = 128 * 2^29 -> scale 29 (0x1D), mult 0x80.
@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (ClockState(TIME_OK, STA_PLL, 1, 16_000_000), 0x8587),  # synced: esterror 1 µs
        (ClockState(TIME_OK, STA_PLL | STA_NANO, 10, 500_000), 0x88A8),  # 10 µs
        (ClockState(TIME_OK, STA_PLL, 1000, 2000), 0x8F84),  # 1 ms
        (ClockState(TIME_OK, STA_PLL, 0, 1000), 0x8F84),  # no estimate: the bound, 1 ms
        (ClockState(TIME_ERROR, STA_PLL, 1, 16_000_000), 0x1D80),  # TIME_ERROR: S=0, maxerror
        (ClockState(TIME_OK, STA_UNSYNC, 1, 16_000_000), 0x1D80),  # STA_UNSYNC: S=0, maxerror
        (ClockState(TIME_OK, STA_UNSYNC, 10, 500_000), 0x1880),  # 0.5 s, S=0
        (ClockState(TIME_OK, STA_UNSYNC, 10, 1_000_000), 0x1980),  # 1 s, S=0
        (None, 0x3FFF),  # unknown
    ],
)
def test_estimate_from_state(state: ClockState | None, expected: int) -> None:
    assert estimate_from_state(state) == expected


def test_estimate_sets_z_only_when_asked() -> None:
    state = ClockState(TIME_OK, STA_PLL, 1, 100)
    assert estimate_from_state(state, ptp=True) == 0xC587


def test_zero_error_still_has_a_valid_multiplier() -> None:
    value = estimate_from_state(ClockState(TIME_OK, STA_PLL, 0, 0))
    assert value & 0xFF != 0
    assert value & 0x8000


def test_error_estimate_agrees_with_adjtimex() -> None:
    state = clock.read_clock_state()
    value = clock.error_estimate()
    ee = ErrorEstimate.from_wire(value)
    assert ee.valid
    assert not ee.ptp
    if state is None:
        assert value == 0x3FFF
        return
    kernel_synced = not state.status & STA_UNSYNC and state.state != TIME_ERROR
    assert ee.synchronized is kernel_synced
    error_us = state.esterror_us if kernel_synced and state.esterror_us else state.maxerror_us
    # The smallest representable bound >= the error: at most one step (< 2x) above it.
    assert error_us / 1e6 <= ee.seconds < max(2 * error_us / 1e6, 2.0**-32 * 2)


def test_unavailable_adjtimex_gives_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock, "_adjtimex", None)
    assert clock.read_clock_state() is None
    assert clock.error_estimate() == 0x3FFF


def test_error_estimate_is_cached_for_the_refresh_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    states = iter(
        [ClockState(TIME_OK, STA_PLL, 1, 100), ClockState(TIME_OK, STA_UNSYNC, 1, 1_000_000)]
    )

    def fake_read() -> ClockState | None:
        calls.append(1)
        return next(states)

    now = [10**12]
    monkeypatch.setattr(clock, "read_clock_state", fake_read)
    monkeypatch.setattr(clock, "monotonic_ns", lambda: now[0])
    assert clock.error_estimate() == 0x8587
    now[0] += clock.REFRESH_NS - 1
    assert clock.error_estimate() == 0x8587
    assert len(calls) == 1
    now[0] += 1
    assert clock.error_estimate() == 0x1980
    assert len(calls) == 2


def test_clocks() -> None:
    before = time.time_ns()
    now = clock.realtime_ns()
    after = time.time_ns()
    assert before <= now <= after
    a = clock.monotonic_ns()
    b = clock.monotonic_ns()
    assert 0 <= b - a < 1_000_000_000
