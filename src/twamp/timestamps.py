"""Timestamps and the Error Estimate (RFC 4656 §4.1.2, RFC 8186).

Inside `twamp` time is an integer count of nanoseconds since the Unix epoch (UTC). Wire
timestamps are 64-bit values whose format the Z bit of the accompanying Error Estimate selects:

* NTP (Z = 0): 32-bit seconds since 1900-01-01 and a 32-bit binary fraction. The seconds field
  wraps in February 2036 (NTP era 1), so decoding picks the era nearest a pivot time.
* PTPv2 truncated (Z = 1, RFC 8186): 32-bit seconds since 1970-01-01 TAI and 32-bit nanoseconds.

Wire dataclasses keep timestamps as the raw 64-bit value, because NTP's 2^-32 s resolution is finer
than a nanosecond: raw -> ns -> raw is not the identity, and re-encoding a decoded packet must be
byte-exact. Conversion happens here, at the edge. ns -> NTP -> ns *is* the identity: the fraction is
floored on the way out (`int(frac * 2**32)`, RFC 4656 §4.1.2) and the nanoseconds ceiled on the
way back.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

NS = 1_000_000_000
NTP_UNIX_DELTA_S = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
_ERA = 1 << 32
# TAI - UTC since 2017-01-01: PTP time is TAI (RFC 8186). Callers with a better source pass
# their own.
DEFAULT_TAI_OFFSET_S = 37


def ntp_from_ns(ns: int) -> int:
    """Unix nanoseconds -> raw 64-bit NTP timestamp (seconds modulo 2^32, so era 1 wraps)."""
    s, sub = divmod(ns, NS)
    return (((s + NTP_UNIX_DELTA_S) % _ERA) << 32) | ((sub << 32) // NS)


def ns_from_ntp(raw: int, pivot_ns: int | None = None) -> int:
    """Raw 64-bit NTP timestamp -> Unix nanoseconds.

    The era is the one that puts the result nearest `pivot_ns`. Without a pivot the rule of
    RFC 4330 §3 applies: a seconds field with its top bit clear is in era 1 (2036-2104), which
    covers 1968-2104 unambiguously.
    """
    sec, frac = raw >> 32, raw & 0xFFFFFFFF
    sub = -((-frac * NS) >> 32)  # ceil(frac * 1e9 / 2^32): exact inverse of ntp_from_ns
    if pivot_ns is None:
        era = 0 if sec & 0x80000000 else 1
    else:
        pivot_s = pivot_ns // NS + NTP_UNIX_DELTA_S
        era = round((pivot_s - sec) / _ERA)
    return (sec + era * _ERA - NTP_UNIX_DELTA_S) * NS + sub


def ntp_interval_from_ns(ns: int) -> int:
    """A duration in ns -> NTP-format interval (Request-TW-Session Timeout, RFC 5357 §3.5)."""
    if ns < 0:
        raise ValueError("an interval cannot be negative")
    s, sub = divmod(ns, NS)
    if s >= _ERA:
        raise ValueError("interval too long for the 32-bit seconds field")
    return (s << 32) | ((sub << 32) // NS)


def ns_from_ntp_interval(raw: int) -> int:
    sec, frac = raw >> 32, raw & 0xFFFFFFFF
    return sec * NS - ((-frac * NS) >> 32)


def ptp_from_ns(ns: int, tai_offset_s: int = DEFAULT_TAI_OFFSET_S) -> int:
    """Unix (UTC) nanoseconds -> raw PTPv2 truncated timestamp (TAI seconds, nanoseconds)."""
    s, sub = divmod(ns, NS)
    return (((s + tai_offset_s) % _ERA) << 32) | sub


def ns_from_ptp(raw: int, tai_offset_s: int = DEFAULT_TAI_OFFSET_S) -> int:
    sec, sub = raw >> 32, raw & 0xFFFFFFFF
    if sub >= NS:
        raise ValueError(f"PTP nanoseconds field {sub} is not below 10^9")
    return (sec - tai_offset_s) * NS + sub


def timestamp_from_ns(ns: int, ptp: bool = False) -> int:
    """Raw wire timestamp in the format the Z bit selects."""
    return ptp_from_ns(ns) if ptp else ntp_from_ns(ns)


def ns_from_timestamp(raw: int, ptp: bool = False, pivot_ns: int | None = None) -> int:
    return ns_from_ptp(raw) if ptp else ns_from_ntp(raw, pivot_ns)


@dataclass(frozen=True, slots=True)
class ErrorEstimate:
    """The 2-octet Error Estimate (RFC 4656 §4.1.2, RFC 8186 §2.3)::

         0                   1
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |S|Z|   Scale   |   Multiplier  |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    Error in seconds = Multiplier * 2^(Scale - 32). S: clock synchronised to UTC. Z: the
    timestamps it describes are PTPv2 (1) or NTP (0). Multiplier 0 is invalid: a receiver should
    discard such a packet (`valid` tells), but decoding never fails, so the caller decides.
    """

    synchronized: bool
    ptp: bool
    scale: int
    multiplier: int

    def __post_init__(self) -> None:
        if not 0 <= self.scale <= 63:
            raise ValueError(f"Error Estimate scale {self.scale} is outside 0..63")
        if not 0 <= self.multiplier <= 255:
            raise ValueError(f"Error Estimate multiplier {self.multiplier} is outside 0..255")

    @classmethod
    def from_wire(cls, value: int) -> ErrorEstimate:
        return cls(bool(value & 0x8000), bool(value & 0x4000), (value >> 8) & 0x3F, value & 0xFF)

    def to_wire(self) -> int:
        return (self.synchronized << 15) | (self.ptp << 14) | (self.scale << 8) | self.multiplier

    @classmethod
    def from_seconds(
        cls, error_s: float | Fraction, synchronized: bool, ptp: bool = False
    ) -> ErrorEstimate:
        """The smallest representable bound >= `error_s` (exact arithmetic, RFC 4656 §4.1.2)."""
        if error_s < 0:
            raise ValueError("an error estimate cannot be negative")
        units = Fraction(error_s) * _ERA  # in 2^-32 s
        for scale in range(64):
            mult = -((-units.numerator) // (units.denominator << scale))  # ceil
            if mult <= 255:
                return cls(synchronized, ptp, scale, max(mult, 1))
        return cls(synchronized, ptp, 63, 255)

    @classmethod
    def from_ns(cls, error_ns: int, synchronized: bool, ptp: bool = False) -> ErrorEstimate:
        return cls.from_seconds(Fraction(error_ns, NS), synchronized, ptp)

    @property
    def seconds(self) -> float:
        return self.multiplier * 2.0 ** (self.scale - 32)

    @property
    def valid(self) -> bool:
        return self.multiplier != 0


# Scale 63, Multiplier 255, S = 0: "error unknown, not synchronised" (owamp, twampy).
UNKNOWN_ERROR = ErrorEstimate(False, False, 63, 255)
