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

**The medium's maximum frame rate.** RFC 2544 Appendix A: "the maximum frame rate that should
be used when testing LAN connections SHOULD be the listed theoretical maximum rate for the frame
size on the media"; its Appendix B lists them (10 Mb/s Ethernet: 14,880 frames/s of 64 octets),
RFC 5180 Appendix A.1 gives the formula and faster Ethernets. `--medium` names the Ethernet the
reflector is meant for (`MEDIA`); the search of each size is then capped at
`ethernet_max_fps` of its frames, and a figure that reached the cap is the medium's limit, not
the reflector's. There is no default: on loopback there is no medium, and a remote reflector's
link speed is not ours to guess, so without `--medium` the search is not capped (a deviation the
report lists).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Any

from ..inet import check_dscp
from ..wire.packets import TestFormat

__all__ = [
    "C_SENDER_MAX_PACKETS",
    "C_SENDER_MAX_TRIAL_S",
    "DEFAULT_SIZES",
    "ETHERNET_L1_EXTRA",
    "ETHERNET_L2_EXTRA",
    "ETHERNET_MIN_FRAME",
    "IMIX",
    "MAX_PAYLOAD",
    "MEDIA",
    "PROFILES",
    "RFC2544_SIZES",
    "BenchSettings",
    "PacketSize",
    "ethernet_max_fps",
    "frame_octets",
    "mode_minimum",
    "parse_medium",
    "parse_sizes",
    "resolve_sizes",
    "rfc2544_settings",
]

C_SENDER_MAX_TRIAL_S = 3600.0
"""csrc/c_sender.c's bound on one trial (MAX_DURATION_S): a bound in time, not in memory."""
C_SENDER_MAX_PACKETS = 200_000_000
"""csrc/c_sender.c's bound on one trial's packets (MAX_PACKETS): its duplicate bitmap, 25 MB."""
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


UDP_HEADER = 8
ETHERNET_L2_EXTRA = 14 + 4  # header + FCS (IEEE 802.3 §3.1.1)
ETHERNET_L1_EXTRA = 8 + 12  # preamble/SFD + the minimum inter-frame gap
ETHERNET_MIN_FRAME = 64  # header to FCS; shorter frames are padded

MEDIA: dict[str, tuple[str, int]] = {
    "10M": ("10 Mb/s Ethernet", 10_000_000),
    "100M": ("100 Mb/s Ethernet", 100_000_000),
    "1G": ("1 Gb/s Ethernet", 1_000_000_000),
    "2.5G": ("2.5 Gb/s Ethernet", 2_500_000_000),
    "5G": ("5 Gb/s Ethernet", 5_000_000_000),
    "10G": ("10 Gb/s Ethernet", 10_000_000_000),
    "25G": ("25 Gb/s Ethernet", 25_000_000_000),
    "40G": ("40 Gb/s Ethernet", 40_000_000_000),
    "50G": ("50 Gb/s Ethernet", 50_000_000_000),
    "100G": ("100 Gb/s Ethernet", 100_000_000_000),
    "200G": ("200 Gb/s Ethernet", 200_000_000_000),
    "400G": ("400 Gb/s Ethernet", 400_000_000_000),
}
"""`--medium` name -> (words, line rate in bit/s)."""


def frame_octets(pattern: Iterable[tuple[int, int]], ipv6: bool) -> tuple[float, float]:
    """Mean (L2, L1) Ethernet octets of the frames carrying a size's UDP payloads.

    L2: payload + 8 UDP + 20 IPv4 or 40 IPv6 + 14 Ethernet header + 4 FCS, at least 64 octets;
    L1 adds the 8-octet preamble/SFD and the 12-octet inter-frame gap (IEEE 802.3), what a
    link's line rate is spent on.
    """
    ip = 40 if ipv6 else 20
    l2_total = l1_total = count = 0.0
    for octets, n in pattern:
        l2 = max(ETHERNET_MIN_FRAME, octets + UDP_HEADER + ip + ETHERNET_L2_EXTRA)
        l2_total += l2 * n
        l1_total += (l2 + ETHERNET_L1_EXTRA) * n
        count += n
    return l2_total / count, l1_total / count


def ethernet_max_fps(l2_octets: float, line_bps: int) -> int:
    """The theoretical maximum frame rate of L2 frames of this (mean) length on an Ethernet.

    RFC 5180 Appendix A.1: line rate / (8 x (frame + 20)), the 20 octets being the preamble and
    the inter-frame gap; rounded down, as RFC 2544 Appendix B lists them (10 Mb/s: 64 octets
    14,880, 1518 octets 812). A mix's mean frame gives the mix's rate: its frames share the line
    in proportion to their count.
    """
    if l2_octets <= 0 or line_bps <= 0:
        raise ValueError("the frame length and the line rate must be positive")
    # Integer arithmetic where the mean is whole, so that 14,880.95 floors to exactly 14,880.
    l1 = l2_octets + ETHERNET_L1_EXTRA
    if float(l1).is_integer():
        return line_bps // (8 * int(l1))
    return math.floor(line_bps / (8 * l1))


def parse_medium(text: str) -> str:
    """`--medium` -> its key in `MEDIA` (case-insensitive, "GbE"/"bE" suffixes allowed)."""
    key = text.strip().upper().removesuffix("BE").removesuffix("B")
    if key not in MEDIA:
        raise ValueError(f"medium {text!r} is not one of {', '.join(MEDIA)} (Ethernet line rates)")
    return key


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
    medium: str | None = None
    """A key of `MEDIA`: each size's search is capped at that Ethernet's maximum frame rate
    (RFC 2544 Appendix A). None: no cap (loopback has no medium)."""

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
        check_dscp(self.dscp)
        if self.medium is not None and self.medium not in MEDIA:
            raise ValueError(f"medium {self.medium!r} is not one of {', '.join(MEDIA)}")
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
        if self.sender == "c" and max(self.trial_duration_s, self.latency_s) > C_SENDER_MAX_TRIAL_S:
            raise ValueError(f"--sender c runs trials of at most {C_SENDER_MAX_TRIAL_S:g} s")
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
        if self.medium is None:
            out.append(
                "no --medium: the search is not capped at a medium's theoretical maximum "
                "frame rate (RFC 2544 Appendix A)"
            )
        return out

    def record(self) -> dict[str, Any]:
        """The `settings` object of the report: every field, plus the RFC 2544 deviations."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["sizes"] = list(self.sizes)
        out["latency_fractions_pct"] = list(self.latency_fractions_pct)
        out["latency_duration_s"] = self.latency_s
        out["latency_trials"] = self.latency_repeats
        out["rfc2544_deviations"] = self.deviations()
        out["medium_bps"] = None if self.medium is None else MEDIA[self.medium][1]
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
