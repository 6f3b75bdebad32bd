"""Timestamps and Error Estimate (RFC 4656 §4.1.2, RFC 8186)."""

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twamp.timestamps import (
    NS,
    NTP_UNIX_DELTA_S,
    UNKNOWN_ERROR,
    ErrorEstimate,
    ns_from_ntp,
    ns_from_ntp_interval,
    ns_from_ptp,
    ntp_from_ns,
    ntp_interval_from_ns,
    ptp_from_ns,
)

# 2026-11-23 12:00:00.5 UTC
NOW_NS = 1_795_435_200 * NS + NS // 2


def test_ntp_known_answer() -> None:
    raw = ntp_from_ns(NOW_NS)
    assert raw >> 32 == 1_795_435_200 + NTP_UNIX_DELTA_S
    assert raw & 0xFFFFFFFF == 0x80000000  # exactly half a second, 2^31 not 0x7FFFFFFF
    assert ns_from_ntp(raw) == NOW_NS


def test_unix_epoch_is_ntp_delta() -> None:
    assert ntp_from_ns(0) == NTP_UNIX_DELTA_S << 32


def test_ntp_era_1_wraps_and_decodes_back() -> None:
    # 2036-02-07 06:28:16 UTC is NTP second 2^32, i.e. 0 in era 1.
    era1_start = ((1 << 32) - NTP_UNIX_DELTA_S) * NS
    assert ntp_from_ns(era1_start) == 0
    assert ns_from_ntp(0) == era1_start  # RFC 4330 rule: top bit clear means era 1
    assert ns_from_ntp(ntp_from_ns(era1_start + 5 * NS)) == era1_start + 5 * NS
    # With a pivot near 1968 the same raw value belongs to era 0.
    assert ns_from_ntp(0, pivot_ns=-NTP_UNIX_DELTA_S * NS) == -NTP_UNIX_DELTA_S * NS


def test_ntp_pivot_picks_nearest_era() -> None:
    raw = ntp_from_ns(NOW_NS)
    assert ns_from_ntp(raw, pivot_ns=NOW_NS) == NOW_NS
    future = NOW_NS + (1 << 32) * NS
    assert ns_from_ntp(raw, pivot_ns=future) == future


@given(st.integers(min_value=-NTP_UNIX_DELTA_S * NS, max_value=4_000_000_000 * NS))
def test_ns_ntp_ns_is_identity(ns: int) -> None:
    assert ns_from_ntp(ntp_from_ns(ns), pivot_ns=ns) == ns


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_ntp_ns_ntp_is_within_one_unit(raw: int) -> None:
    back = ntp_from_ns(ns_from_ntp(raw))
    # ns is coarser than 2^-32 s: at most one ns (about 4.3 units) up, carrying across a wrap.
    assert (back - raw) % (1 << 64) <= 4


def test_interval() -> None:
    assert ntp_interval_from_ns(2 * NS) == 0x00000002_00000000  # RFC 5357 §3.5 Timeout: an interval
    assert ns_from_ntp_interval(0x00000002_80000000) == 2 * NS + NS // 2
    with pytest.raises(ValueError):
        ntp_interval_from_ns(-1)


def test_ptp() -> None:
    raw = ptp_from_ns(NOW_NS)
    assert raw >> 32 == 1_795_435_200 + 37
    assert raw & 0xFFFFFFFF == 500_000_000
    assert ns_from_ptp(raw) == NOW_NS
    with pytest.raises(ValueError, match="nanoseconds"):
        ns_from_ptp((5 << 32) | NS)


@pytest.mark.parametrize(
    ("error_s", "scale", "mult", "wire"),
    [  # Error Estimate worked examples (RFC 4656 §4.1.2), S = 1
        (Fraction(1, 10**6), 5, 135, 0x8587),
        (Fraction(10, 10**6), 8, 168, 0x88A8),
        (Fraction(1, 1000), 15, 132, 0x8F84),
        (Fraction(1, 2), 24, 128, 0x9880),
        (Fraction(1), 25, 128, 0x9980),
    ],
)
def test_error_estimate_known_answers(error_s: Fraction, scale: int, mult: int, wire: int) -> None:
    ee = ErrorEstimate.from_seconds(error_s, synchronized=True)
    assert (ee.scale, ee.multiplier, ee.to_wire()) == (scale, mult, wire)
    assert ErrorEstimate.from_wire(wire) == ee
    assert ee.seconds >= float(error_s)


def test_error_estimate_bits() -> None:
    assert UNKNOWN_ERROR.to_wire() == 0x3FFF
    ee = ErrorEstimate.from_wire(0xC001)
    assert ee.synchronized and ee.ptp and ee.scale == 0 and ee.multiplier == 1
    assert not ErrorEstimate.from_wire(0x8100).valid  # multiplier 0 is corrupt
    assert ErrorEstimate.from_seconds(0, True).multiplier == 1  # never 0
    assert ErrorEstimate.from_seconds(1e30, False) == UNKNOWN_ERROR
    assert ErrorEstimate.from_ns(1000, True).to_wire() == 0x8587
    with pytest.raises(ValueError):
        ErrorEstimate(True, False, 64, 1)


@given(st.integers(min_value=0, max_value=0xFFFF))
def test_error_estimate_wire_round_trip(value: int) -> None:
    assert ErrorEstimate.from_wire(value).to_wire() == value


@given(st.fractions(min_value=0, max_value=10**9))
def test_error_estimate_is_smallest_upper_bound(err: Fraction) -> None:
    ee = ErrorEstimate.from_seconds(err, False)
    bound = Fraction(ee.multiplier) * Fraction(2) ** (ee.scale - 32)
    assert bound >= err
    if ee.multiplier > 1:
        # One multiplier step lower at the same scale would no longer cover the error.
        assert Fraction(ee.multiplier - 1) * Fraction(2) ** (ee.scale - 32) < err
