"""What a benchmark run measures: packet sizes (IMIX included) and the settings of the suite.

Sizes are UDP payload octets, the TWAMP-Test packet the Session-Sender sends: header plus
padding (RFC 5357 §4.1.2). The reflector answers with max(request, its header) octets (RFC 5357
§4.2.1: the reflector's packet is at least its own header, and RFC 6038 §4.2 lets it echo the
sender's length), so the smallest size of a mode, the one that keeps both directions equal, is
the reflector's header: 41 octets open or mixed, 112 authenticated or encrypted, 44 STAMP.

Two profiles (`PROFILES`): `quick`, the default, short enough to finish in a few minutes on a
laptop, and `rfc2544`, RFC 2544's trial rules: the frame sizes of §9.1 for Ethernet (as UDP
payloads: frame minus 18 octets of Ethernet header and FCS, 20 IPv4 and 8 UDP), trials of 60 s
(§24: "at least 60 seconds"), 2 s of waiting for stragglers after each (§23), latency at the
throughput rate for 120 s, 20 times (§26.2). The quick profile deviates from all of these, and
the report says so (`BenchSettings.deviations`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from ..wire.packets import TestFormat

__all__ = [
    "DEFAULT_SIZES",
    "IMIX",
    "MAX_PAYLOAD",
    "PROFILES",
    "RFC2544_SIZES",
    "BenchSettings",
    "PacketSize",
    "mode_minimum",
    "parse_sizes",
    "resolve_sizes",
    "rfc2544_settings",
]

MAX_PAYLOAD = 65507  # the largest UDP payload over IPv4
IMIX_MAX = 1472  # 1500-octet MTU minus IPv4 and UDP headers
IMIX = ((64, 7), (576, 4), (1500, 1))
"""The classic simple IMIX: 7:4:1 packets of 64, 576 and about 1500 octets."""

DEFAULT_SIZES = ("min", "128", "512", "1024", "1472", "imix")
ETHERNET_UDP_OVERHEAD = 18 + 20 + 8  # Ethernet header + FCS, IPv4, UDP
RFC2544_FRAMES = (64, 128, 256, 512, 1024, 1280, 1518)
"""RFC 2544 §9.1: the frame sizes to test on Ethernet (octets, FCS included)."""
RFC2544_SIZES = ("min", *(str(f - ETHERNET_UDP_OVERHEAD) for f in RFC2544_FRAMES[1:]))
"""As UDP payloads; a 64-octet frame carries 18 octets, below any TWAMP packet: the mode's
minimum instead."""


def mode_minimum(fmt: TestFormat) -> int:
    """The smallest request whose reply is as long as itself: the reflector header."""
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
    attempts: int = 4
    """Trials at one rate before a rate our sender cannot hold is given up (search.py)."""
    latency_trials: int | None = None
    """Repetitions of each latency point. None: `trials`."""
    sender_cores: int = 1
    profile: str = "quick"
    sender: str = "ours"
    """"ours": dataplane.Sender (the compiled twin when built); "c": the C load generator."""

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
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.latency_trials is not None and self.latency_trials < 1:
            raise ValueError("latency trials must be at least 1")
        if self.sender_cores < 1:
            raise ValueError("the sender needs at least one core")
        if self.sender not in ("ours", "c"):
            raise ValueError(f"sender {self.sender!r} is not 'ours' or 'c'")
        if self.sender == "c" and self.sender_cores != 1:
            raise ValueError("--sender c runs on one core: leave --sender-cores at 1")
        if self.sender == "c" and max(self.trial_duration_s, self.latency_s) > 30:
            raise ValueError("--sender c runs trials of at most 30 s")
        if self.profile not in PROFILES:
            raise ValueError(f"profile {self.profile!r} is not one of {', '.join(PROFILES)}")

    @property
    def latency_repeats(self) -> int:
        return self.trials if self.latency_trials is None else self.latency_trials

    def deviations(self) -> list[str]:
        """Where these settings depart from RFC 2544's trial rules, in words."""
        out = []
        if self.trial_duration_s < 60:
            out.append(
                f"throughput trials last {self.trial_duration_s:g} s, not at least 60 s "
                "(RFC 2544 §24)"
            )
        if self.latency_s < 120:
            out.append(f"latency trials last {self.latency_s:g} s, not 120 s (RFC 2544 §26.2)")
        if self.latency_repeats < 20:
            out.append(
                f"each latency point is measured {self.latency_repeats} times, not 20 "
                "(RFC 2544 §26.2)"
            )
        if tuple(self.sizes) != RFC2544_SIZES:
            out.append("the sizes are not RFC 2544 §9.1's Ethernet frame sizes")
        if self.wait_s is None or self.wait_s < 2:
            out.append("stragglers are awaited for less than 2 s after a trial (RFC 2544 §23)")
        return out

    def record(self) -> dict[str, Any]:
        """The `settings` object of the report: every field, plus the RFC 2544 deviations."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["sizes"] = list(self.sizes)
        out["latency_fractions_pct"] = list(self.latency_fractions_pct)
        out["latency_duration_s"] = self.latency_s
        out["latency_trials"] = self.latency_repeats
        out["rfc2544_deviations"] = self.deviations()
        return out

    @property
    def latency_s(self) -> float:
        return self.trial_duration_s if self.latency_duration_s is None else self.latency_duration_s


PROFILES = ("quick", "rfc2544")


def rfc2544_settings(base: BenchSettings) -> BenchSettings:
    """`base` with RFC 2544's trial rules (module docstring); other settings are kept."""
    return replace(
        base,
        profile="rfc2544",
        sizes=RFC2544_SIZES,
        trial_duration_s=60.0,
        latency_duration_s=120.0,
        latency_fractions_pct=(100.0,),
        latency_trials=20,
        trials=1,
        wait_s=2.0,
    )
