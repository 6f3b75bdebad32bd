"""What a benchmark run measures: packet sizes (IMIX included) and the settings of the suite.

Sizes are UDP payload octets, the TWAMP-Test packet the Session-Sender sends: header plus
padding (RFC 5357 §4.1.2). The reflector answers with max(request, its header) octets (spec
§5.5), so the smallest size of a mode, the one that keeps both directions equal, is the
reflector's header: 41 octets open or mixed, 112 authenticated or encrypted, 44 STAMP.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..wire.packets import TestFormat

__all__ = [
    "DEFAULT_SIZES",
    "IMIX",
    "MAX_PAYLOAD",
    "BenchSettings",
    "PacketSize",
    "mode_minimum",
    "parse_sizes",
    "resolve_sizes",
]

MAX_PAYLOAD = 65507  # the largest UDP payload over IPv4
IMIX_MAX = 1472  # 1500-octet MTU minus IPv4 and UDP headers
IMIX = ((64, 7), (576, 4), (1500, 1))
"""The classic simple IMIX: 7:4:1 packets of 64, 576 and about 1500 octets."""

DEFAULT_SIZES = ("min", "128", "512", "1024", "1472", "imix")


def mode_minimum(fmt: TestFormat) -> int:
    """The smallest request whose reply is as long as itself: the reflector header (spec §5.5)."""
    return max(fmt.sender_header, fmt.reflector_header)


@dataclass(frozen=True, slots=True)
class PacketSize:
    """One size of the suite: a single payload length, or a mix sent in a fixed pattern.

    `pattern` holds (octets, count) runs; a single size is one run of count 1. The runs are
    sent in this order and repeated, so a mix keeps its proportions over every cycle.
    """

    label: str
    pattern: tuple[tuple[int, int], ...]

    @property
    def octets(self) -> tuple[int, ...]:
        """The distinct payload lengths, in pattern order."""
        return tuple(o for o, _ in self.pattern)

    @property
    def cycle(self) -> int:
        """Packets per repetition of the pattern."""
        return sum(n for _, n in self.pattern)

    @property
    def mean_octets(self) -> float:
        return sum(o * n for o, n in self.pattern) / self.cycle

    @property
    def is_mix(self) -> bool:
        return len(self.pattern) > 1


def parse_sizes(text: str) -> tuple[str, ...]:
    """`--sizes` -> its items ("min", "imix" or a decimal octet count); ValueError if bad."""
    items = [t.strip().lower() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError("give at least one size")
    for item in items:
        if item in ("min", "imix"):
            continue
        if not item.isdigit():
            raise ValueError(f"{item!r} is not a size: use octet counts, 'min' or 'imix'")
        if not 1 <= int(item) <= MAX_PAYLOAD:
            raise ValueError(f"size {item} is outside 1..{MAX_PAYLOAD}")
    return tuple(dict.fromkeys(items))


def resolve_sizes(items: tuple[str, ...], fmt: TestFormat) -> list[PacketSize]:
    """Turn parsed `--sizes` items into packet sizes for the negotiated format.

    A size below the mode's minimum cannot be sent symmetrically: ValueError naming it. IMIX
    sizes are clipped to [minimum, 1472].
    """
    low = mode_minimum(fmt)
    sizes: list[PacketSize] = []
    seen: set[str] = set()
    for item in items:
        if item == "min":
            size = PacketSize(str(low), ((low, 1),))
        elif item == "imix":
            runs = tuple((min(max(o, low), IMIX_MAX), n) for o, n in IMIX)
            size = PacketSize("imix", runs)
        else:
            octets = int(item)
            if octets < low:
                raise ValueError(
                    f"size {octets} is below the {low}-octet minimum of this mode "
                    f"(the reflector's header: a shorter request gets a longer reply)"
                )
            size = PacketSize(str(octets), ((octets, 1),))
        if size.label not in seen:
            seen.add(size.label)
            sizes.append(size)
    return sizes


@dataclass(frozen=True, slots=True)
class BenchSettings:
    """The measurement settings of one run; every field is recorded with the results."""

    sizes: tuple[str, ...] = DEFAULT_SIZES
    trials: int = 3
    trial_duration_s: float = 0.2
    latency_duration_s: float | None = None
    """None: the trial duration."""
    loss_tolerance_pct: float = 0.1
    latency_fractions_pct: tuple[float, ...] = (10.0, 50.0, 90.0)
    resolution_pct: float = 5.0
    min_rate_pps: float = 1000.0
    max_rate_pps: float | None = None
    max_delay_ms: float | None = None
    """Loss threshold (RFC 7680 §2.4): a reflection later than this counts as lost in a
    throughput trial. None: 20 ms plus twice the probe's median RTT."""
    wait_s: float | None = None
    """How long to wait for stragglers after each trial. None: 1.5 x the loss threshold."""
    sender_batch: int = 32
    busy_poll: bool = False
    pin: bool = True
    dscp: int = 0

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ValueError("trials must be at least 1")
        if self.trial_duration_s <= 0:
            raise ValueError("the trial duration must be positive")
        if self.latency_duration_s is not None and self.latency_duration_s <= 0:
            raise ValueError("the latency duration must be positive")
        if not 0 <= self.loss_tolerance_pct < 100:
            raise ValueError("the loss tolerance must be in 0..100 %")
        if not self.latency_fractions_pct or not all(
            0 < f <= 100 for f in self.latency_fractions_pct
        ):
            raise ValueError("latency fractions must be in (0, 100] %")
        if self.resolution_pct <= 0:
            raise ValueError("the resolution must be positive")
        if self.min_rate_pps <= 0:
            raise ValueError("the minimum rate must be positive")
        if self.max_rate_pps is not None and self.max_rate_pps < self.min_rate_pps:
            raise ValueError("the maximum rate is below the minimum rate")
        if self.max_delay_ms is not None and self.max_delay_ms <= 0:
            raise ValueError("the loss threshold must be positive")
        if self.wait_s is not None and self.wait_s < 0:
            raise ValueError("the wait cannot be negative")
        if self.sender_batch < 1:
            raise ValueError("the batch must be at least 1")
        if not 0 <= self.dscp <= 63:
            raise ValueError("DSCP must be in 0..63")

    @property
    def latency_s(self) -> float:
        return self.trial_duration_s if self.latency_duration_s is None else self.latency_duration_s
