"""Plain types and constants shared by both twins of the data plane (and by their callers).

Both the pure-Python twins (`reflector/pure.py`, `sender/pure.py`) and the compiled ones
(`reflector/compiled.pyx`, `sender/compiled.pyx`) import these; nothing here does I/O. The
compiled twins repeat the numeric constants as C literals (`system.pxd`, so that the C compiler
can fold them); `tests/test_dataplane_layout.py` checks that both agree.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from typing import Protocol

import numpy as np
import numpy.typing as npt

from ..constants import TestMode
from ..crypto import TestPacketCrypto
from ..inet import check_dscp, normalize_ip
from ..wire.packets import TestFormat

__all__ = [
    "BEHIND_NS",
    "BUF_STRIDE",
    "LIGHT_IDLE_NS",
    "MAX_DATAGRAM",
    "MAX_SLEEP_NS",
    "NEVER",
    "REFLECTOR_COUNTERS",
    "REFLECTOR_SEND_BATCH",
    "RESIDENCE_BOUNDS_NS",
    "RESIDENCE_KEYS",
    "SENDER_COUNTERS",
    "SEND_BATCH",
    "SEQ_MASK",
    "SESSION_COUNTERS",
    "SPIN_NS",
    "S_BIT",
    "T3_BOUNDS_NS",
    "Z_BIT",
    "LightPolicy",
    "SenderResult",
    "SessionSpec",
    "StopFlag",
    "add_counts",
    "check_buf_stride",
    "check_send_batch",
    "diag_summary",
    "normalize_ip",
    "residence_bucket",
    "t3_counts",
]

# Every receive buffer holds the largest UDP payload, so no datagram is ever cut short; a
# stopped Sender run also takes in at most this many queued replies (a few MiB of receive
# buffer cannot hold more datagrams than that).
MAX_DATAGRAM = 65536
# At most this many replies (reflector) or requests (sender) go into one sendmmsg: the k-th
# datagram of a call is stamped about k x 1.3 µs before the kernel sends it
# (measured on a 2-vCPU VM), so the batch grows with the backlog, never beyond this.
SEND_BATCH = 8
# The reflector's default cap (Reflector(send_batch=...)): under a backlog 4 per sendmmsg
# halved the T3 error of 8 at no measurable CPU cost; 2 and 1 cost 10-30 % more CPU per
# datagram (benchmarks/t3_backlog.py, docs/performance.md).
REFLECTOR_SEND_BATCH = 4
# The compiled reflector loop's receive buffers are this far apart: one cache line more than a
# datagram, so that the headers of a batch do not all fall into the same cache sets (a 64 KiB
# stride maps every buffer's first line to one L1 and one L2 set). ReflectorLoop(buf_stride=)
# overrides it for measurement; a stride below MAX_DATAGRAM truncates longer datagrams.
BUF_STRIDE = 65536 + 64
MIN_BUF_STRIDE = 128  # room for the largest reflector header (112, RFC 5357 §4.2.1 mode 4)
SEQ_MASK = 0xFFFFFFFF
NEVER = (1 << 63) - 1
# Sender pacing: sleep until SPIN_NS before a send time, then spin on the clock (poll and
# nanosleep overshoot by tens of µs); no single sleep longer than MAX_SLEEP_NS, so a stop
# request is seen in that time; a packet sent more than BEHIND_NS late is `behind_schedule`.
SPIN_NS = 200_000
MAX_SLEEP_NS = 20_000_000
BEHIND_NS = 1_000_000
# Error Estimate bits (RFC 4656 §4.1.2: S, synchronised; RFC 8186 §2.3: Z, PTP format).
S_BIT = 0x8000
Z_BIT = 0x4000
# A stateful TWAMP Light sender silent this long starts afresh (its sequence counter from 0).
LIGHT_IDLE_NS = 60_000_000_000

REFLECTOR_COUNTERS = (
    "received",
    "reflected",
    "unknown_peer",
    "malformed",
    "auth_failed",
    "late",
    "send_errors",
    "light_evicted",
    "rate_limited",
)
# The reflector's residence histogram: residence = the transmit Timestamp written into a reply
# minus the receive time of its request (T3 - T2, integer ns, the values the twins keep, not
# the NTP-rounded wire values). Upper bounds (inclusive, Prometheus `le`), log-spaced 1-2-5 from
# 1 µs (a keeping-up compiled loop on loopback) to 10 ms (a reflector deep in a backlog or
# descheduled); a last bucket, +Inf, holds the rest. A negative residence (the realtime clock
# stepped back between T2 and T3) counts in the first bucket and adds 0 to the sum. Counted
# per Reflector, for every reflected datagram, in both twins; the compiled twin repeats the
# bounds as C literals (`residence_bucket` in `reflector/compiled.pyx`), and
# `tests/test_residence.py` checks both agree at every bound.
RESIDENCE_BOUNDS_NS = (
    1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000,
    1_000_000, 2_000_000, 5_000_000, 10_000_000,
)  # fmt: skip
# `Reflector.residence()`: the count per bucket (not cumulative), last +Inf, then the sum in ns.
RESIDENCE_KEYS = (
    *(f"residence_le_{bound}" for bound in RESIDENCE_BOUNDS_NS),
    "residence_le_inf",
    "residence_sum_ns",
)


def residence_bucket(residence_ns: int) -> int:
    """Index of the residence bucket (into RESIDENCE_KEYS) that `residence_ns` counts in."""
    return bisect.bisect_left(RESIDENCE_BOUNDS_NS, residence_ns)


SESSION_COUNTERS = ("received", "reflected", "dropped", "errors", "last_rx_ns")
SENDER_COUNTERS = (
    "sent",
    "send_errors",
    "received",
    "malformed",
    "auth_failed",
    "unknown_peer",
    "behind_schedule",
    "max_lag_ns",
    "reflector_unsynced",
)


# The T3 diagnostic's cumulative counts in `diag_summary` ("le_<bound>_ns"): every power of
# two from 256 ns to 67 ms, exact bucket bounds of its histogram, so that the counts of several
# reflectors (and --workers processes) add up and make one Prometheus histogram.
T3_BOUNDS_NS = tuple(1 << k for k in range(8, 27))


def t3_counts(t3: Mapping[str, int] | None) -> dict[str, int]:
    """A reflector's `t3_error()` as counts that `add_counts` adds up over reflectors and
    processes ("t3_samples", "t3_sum_ns", "t3_max_ns", "t3_le_<bound>_ns"); {} without it."""
    if t3 is None:
        return {}
    keys = ("samples", "sum_ns", "max_ns", *(f"le_{b}_ns" for b in T3_BOUNDS_NS))
    return {f"t3_{key}": int(t3[key]) for key in keys}


def add_counts(total: dict[str, int], more: Mapping[str, int]) -> None:
    """Add counters up; the one maximum among them (`t3_max_ns`) is taken, not added."""
    for key, value in more.items():
        if key == "t3_max_ns":
            total[key] = max(total.get(key, 0), value)
        else:
            total[key] = total.get(key, 0) + value


def check_send_batch(value: int | None) -> int:
    """Reflector(send_batch=): None is REFLECTOR_SEND_BATCH; else an int of at least 1."""
    if value is None:
        return REFLECTOR_SEND_BATCH
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"send_batch must be an integer of at least 1, not {value!r}")
    return value


def check_buf_stride(value: int | None) -> int:
    """ReflectorLoop(buf_stride=): None is BUF_STRIDE; else MIN_BUF_STRIDE to 1 MiB."""
    if value is None:
        return BUF_STRIDE
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not (MIN_BUF_STRIDE <= value <= 1 << 20)
    ):
        raise ValueError(
            f"buf_stride must be an integer from {MIN_BUF_STRIDE} to 1 MiB, not {value!r}"
        )
    return value


def diag_summary(
    histogram: list[int], samples: int, total_ns: int, min_ns: int, max_ns: int
) -> dict[str, int]:
    """The reflector's T3 diagnostic as both twins report it (`Reflector.t3_error()`).

    `histogram[k]`: replies whose Timestamp was at most 2^k ns (and more than 2^(k-1)) before
    the kernel's software transmit time. p50_ns and p99_ns are the bucket bounds, so upper
    bounds within a factor of two. `sum_ns` and the cumulative `le_<bound>_ns` counts
    (`T3_BOUNDS_NS`) are there to be added up over reflectors.
    """

    def quantile(q: float) -> int:
        need, seen = q * samples, 0
        for k, count in enumerate(histogram):
            seen += count
            if count and seen >= need:
                return 1 << k
        return 0

    cumulative = {}
    for bound in T3_BOUNDS_NS:
        cumulative[f"le_{bound}_ns"] = sum(histogram[: bound.bit_length()])  # bound = 2^k
    if not samples:
        zero = {"samples": 0, "min_ns": 0, "mean_ns": 0, "max_ns": 0, "p50_ns": 0, "p99_ns": 0}
        return {**zero, "sum_ns": 0, **cumulative}
    return {
        "samples": samples,
        "min_ns": min_ns,
        "mean_ns": total_ns // samples,
        "max_ns": max_ns,
        "p50_ns": quantile(0.5),
        "p99_ns": quantile(0.99),
        "sum_ns": total_ns,
        **cumulative,
    }


def _check_dscp(dscp: int | None) -> None:
    if dscp is not None:
        check_dscp(dscp)


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """One negotiated TWAMP-Test session as the reflector sees it.

    `peer` is the Session-Sender's (address, port), normalised (v4-mapped -> IPv4). `dscp` None
    preserves the received TOS octet (DSCP and ECN) in each reply. `stateful` False copies the
    sender's Sequence Number instead of counting (RFC 5357 Appendix I).
    """

    peer: tuple[str, int]
    fmt: TestFormat
    crypto: TestPacketCrypto | None = None
    dscp: int | None = None
    stateful: bool = True

    def __post_init__(self) -> None:
        ip, port = self.peer
        if not 0 < port <= 0xFFFF:
            raise ValueError(f"peer port {port} is outside 1..65535")
        object.__setattr__(self, "peer", (normalize_ip(ip), int(port)))
        _check_dscp(self.dscp)
        if (self.fmt.test_mode is TestMode.OPEN) != (self.crypto is None):
            raise ValueError("crypto is required in authenticated/encrypted mode, and only there")


@dataclass(frozen=True, slots=True)
class LightPolicy:
    """TWAMP Light / STAMP reflection without TWAMP-Control (RFC 5357 Appendix I, RFC 8762).

    Any peer inside `allow` (empty: anyone) is admitted on its first datagram. `stateful` keeps a
    sequence counter per sender, keyed by (address, port, SSID) (RFC 8972 §3; SSID 0 when the
    format has none), for at most `max_peers` senders: a new sender when the table is full
    evicts the least recently used one (the reflector's `light_evicted` counter), so no set of
    senders can lock the others out. A sender's counter starts again from 0 when its own
    sequence number restarts at 0 or after `idle_ns` of silence (a new test session from the
    same port). `symmetric_only`: answer only requests at least as long as the reply would
    be (a shorter one counts `malformed`), so the reflector never amplifies (RFC 6038's
    symmetrical size, as a policy). `rate_pps` (0: off): at most this many datagrams per
    second from one source address, in bursts of up to `burst` (a token bucket per address, as
    GCRA; over it: the reflector's `rate_limited` counter); the buckets of at most
    `max_peers` addresses are kept, and all start full again when that many are in use.
    Unauthenticated only: Light has no way to agree on keys.
    """

    fmt: TestFormat
    stateful: bool
    allow: tuple[IPv4Network | IPv6Network, ...] = ()
    dscp: int | None = None
    max_peers: int = 4096
    idle_ns: int = LIGHT_IDLE_NS
    symmetric_only: bool = False
    rate_pps: int = 0
    burst: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "allow", tuple(ipaddress.ip_network(n, strict=False) for n in self.allow)
        )
        _check_dscp(self.dscp)
        if self.fmt.test_mode is not TestMode.OPEN:
            raise ValueError("TWAMP Light / STAMP reflection is unauthenticated only")
        if self.max_peers < 0:
            raise ValueError("max_peers cannot be negative")
        if self.idle_ns <= 0:
            raise ValueError("idle_ns must be positive")
        if not 0 <= self.rate_pps <= 1_000_000_000:
            raise ValueError("rate_pps must be 0 (off) to 1e9")
        if self.burst < 1:
            raise ValueError("burst must be at least 1")


class StopFlag(Protocol):
    """What `Sender.run` needs of its `stop` argument; `threading.Event` is one."""

    def is_set(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class SenderResult:
    """What one `Sender.run` call sent and received.

    `sent`: one `metrics.SENT_DTYPE` row per packet the kernel accepted, in send order.
    `received`: one `metrics.RECORD_DTYPE` row per valid reflection, in arrival order (late
    replies to earlier `run` calls and duplicates included). `counters`: see `Sender`.
    `tx_kernel_ns`: with `Sender(tx_timestamps=True)`, the kernel's software transmit time of
    each row of `sent` (`SO_TIMESTAMPING`, Unix ns; 0 where the kernel sent no report), so
    `tx_kernel_ns - sent["t1"]` is how early the Timestamp written into the packet was; None
    otherwise.
    """

    sent: npt.NDArray[np.void]
    received: npt.NDArray[np.void]
    counters: dict[str, int]
    tx_kernel_ns: npt.NDArray[np.int64] | None = None
