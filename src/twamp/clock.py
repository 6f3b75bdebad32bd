"""The host clock: wall-clock and monotonic nanoseconds, and the Error Estimate it deserves.

The Error Estimate (RFC 4656 §4.1.2) tells the far end how far our timestamps may be
from UTC and whether the clock is synchronised at all. Hard-coding it is a known interop bug (spec
§11 item 7), so it comes from the kernel's own view of its clock discipline, `adjtimex(2)` in
read-only mode:

* S (synchronised) only when the kernel says so: `STA_UNSYNC` is clear in `status` and the call
  does not return `TIME_ERROR`. NTP and PTP daemons maintain both.
* The error is `esterror` (the daemon's estimate, µs) when synchronised, otherwise `maxerror`
  (µs), the bound the kernel itself grows by 500 ppm while nobody disciplines the clock.
* Without `adjtimex` (not Linux, or a sandbox refusing it) the value is "unknown", 0x3FFF.

The reflector writes an Error Estimate into every reply, so the value is cached and refreshed at
most once per `REFRESH_NS`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .timestamps import UNKNOWN_ERROR, ErrorEstimate

__all__ = [
    "REFRESH_NS",
    "ClockState",
    "error_estimate",
    "estimate_from_state",
    "monotonic_ns",
    "pause",
    "read_clock_state",
    "realtime_ns",
]

REFRESH_NS = 1_000_000_000

# <sys/timex.h>
STA_UNSYNC = 0x0040
TIME_ERROR = 5
_US = 1000

realtime_ns = time.time_ns
monotonic_ns = time.monotonic_ns

_PAUSE_TICK_S = 0.1


def pause(seconds: float, stopped: Callable[[], bool] | None = None) -> bool:
    """Sleep `seconds`, waking every 0.1 s to ask `stopped()`; True if it said so.

    For sans-I/O callers (`twamp.ping`'s continuous mode) that must wait without importing
    `time`; a plain sleep loop, so a signal handler that sets a flag is seen within a tick.
    """
    end = time.monotonic() + max(0.0, seconds)
    while True:
        if stopped is not None and stopped():
            return True
        left = end - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(left, _PAUSE_TICK_S))


class _Timeval(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long))


class _Timex(ctypes.Structure):
    """`struct timex` of Linux (<bits/timex.h>), including its 11 reserved ints."""

    _fields_ = (
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    )


@dataclass(frozen=True, slots=True)
class ClockState:
    """What `adjtimex(2)` reports: its return value (clock state) and the fields we use."""

    state: int
    status: int
    esterror_us: int
    maxerror_us: int

    @property
    def synchronized(self) -> bool:
        return not self.status & STA_UNSYNC and self.state != TIME_ERROR


def _load_adjtimex() -> Callable[..., int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name, use_errno=True).adjtimex
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.POINTER(_Timex),)
    fn.restype = ctypes.c_int
    return fn


_adjtimex = _load_adjtimex()


def read_clock_state() -> ClockState | None:
    """Query the kernel clock discipline (modes = 0: read only, needs no privilege)."""
    if _adjtimex is None:
        return None
    tx = _Timex()
    state = _adjtimex(ctypes.byref(tx))
    if state < 0:
        return None
    return ClockState(state, tx.status, tx.esterror, tx.maxerror)


def estimate_from_state(state: ClockState | None, ptp: bool = False) -> int:
    """Raw 16-bit Error Estimate for a clock in `state` (None: unknown, 0x3FFF)."""
    if state is None:
        return UNKNOWN_ERROR.to_wire()
    sync = state.synchronized
    error_us = state.esterror_us if sync and state.esterror_us > 0 else state.maxerror_us
    # from_ns never yields Multiplier 0 (RFC 4656 §4.1.2: a strict peer drops such packets).
    return ErrorEstimate.from_ns(max(error_us, 0) * _US, sync, ptp).to_wire()


class _Cache:
    __slots__ = ("expires_ns", "lock", "value")

    def __init__(self) -> None:
        self.value = 0
        self.expires_ns = 0
        self.lock = threading.Lock()


_cache = _Cache()


def error_estimate() -> int:
    """The host clock's raw Error Estimate (Z = 0: NTP format), re-read at most every second."""
    now = monotonic_ns()
    if now < _cache.expires_ns:
        return _cache.value
    with _cache.lock:
        if now >= _cache.expires_ns:
            _cache.value = estimate_from_state(read_clock_state())
            _cache.expires_ns = now + REFRESH_NS
    return _cache.value
