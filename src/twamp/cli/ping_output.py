"""What `twamp ping` prints: the summary, twping's -v per-packet lines, -R raw lines, -M keys.

Everything here formats a finished `PingResult`; nothing measures. Times are shown in the unit
of twping's `-n` (n, u, m, s; milliseconds by default).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ..inet import check_dscp, tos_to_dscp
from ..ping import PingResult
from ..timestamps import ntp_from_ns

__all__ = [
    "DSCP_NAMES",
    "UNITS",
    "format_machine",
    "format_packets",
    "format_raw",
    "format_report",
    "parse_dscp",
    "parse_percentiles",
    "parse_port_range",
]

UNITS: dict[str, tuple[float, str]] = {
    "n": (1.0, "ns"),
    "u": (1e3, "us"),
    "m": (1e6, "ms"),
    "s": (1e9, "s"),
}
"""twping's -n letters: ns per unit and the unit's name."""

# RFC 2474/4594 names as owping(1) lists them.
DSCP_NAMES: dict[str, int] = {
    "NONE": 0,
    "DEFAULT": 0,
    "DF": 0,
    "CS0": 0,
    "CS1": 8,
    "AF11": 10,
    "AF12": 12,
    "AF13": 14,
    "CS2": 16,
    "AF21": 18,
    "AF22": 20,
    "AF23": 22,
    "CS3": 24,
    "AF31": 26,
    "AF32": 28,
    "AF33": 30,
    "CS4": 32,
    "AF41": 34,
    "AF42": 36,
    "AF43": 38,
    "CS5": 40,
    "EF": 46,
    "CS6": 48,
    "CS7": 56,
}


def parse_dscp(text: str) -> int:
    """twping's -D: a name (EF, AF41, CS5, ...) or a number in decimal, hex (0x2e) or octal (056).

    twping reads the number with strtol(base 0), so a leading 0 means octal, as here.
    """
    value = text.strip()
    name = value.upper()
    if name in DSCP_NAMES:
        return DSCP_NAMES[name]
    try:
        if name.startswith("0X"):
            number = int(value[2:], 16)
        elif len(value) > 1 and value.startswith("0"):
            number = int(value[1:].removeprefix("o").removeprefix("O"), 8)
        else:
            number = int(value, 10)
    except ValueError:
        raise ValueError(
            f"-D {text!r} is not a DSCP: give 0-63 (decimal, 0x hex or 0 octal) or a name such "
            f"as EF, AF41 or CS5"
        ) from None
    try:
        return check_dscp(number)
    except ValueError:
        raise ValueError(f"-D {text!r}: the DSCP must be 0-63 (6 bits, 0x00-0x3f)") from None


def parse_port_range(text: str) -> tuple[int, int] | None:
    """twping's -P: '0' (any port) or 'LOW-HIGH'."""
    value = text.strip()
    if value == "0":
        return None
    low, sep, high = value.partition("-")
    if not sep or not low.isdigit() or not high.isdigit():
        raise ValueError(f"-P {text!r}: give a port range as LOW-HIGH (e.g. 8760-8790) or 0")
    first, last = int(low), int(high)
    if not 1 <= first <= last <= 0xFFFF:
        raise ValueError(f"-P {text!r}: the range must be LOW-HIGH with 1 <= LOW <= HIGH <= 65535")
    return first, last


def parse_percentiles(text: str) -> tuple[float, ...]:
    """twping's -a: comma-separated percentiles, each 0-100."""
    out = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"-a {text!r}: {item!r} is not a percentile (0-100)") from None
        if not 0.0 <= value <= 100.0:
            raise ValueError(f"-a {text!r}: a percentile is between 0 and 100, not {item}")
        out.append(value)
    return tuple(out)


# -- summary ------------------------------------------------------------------------------------


class _Fmt:
    def __init__(self, unit: str) -> None:
        self.scale, self.name = UNITS[unit]

    def __call__(self, ns: float) -> str:
        return f"{ns / self.scale:.{3 if self.name != 's' else 6}f}"

    def dist(self, d: Mapping[str, Any] | None, keys: Sequence[str]) -> str:
        if not d:
            return "no samples"
        return " / ".join(f"{k} {self(d[k])}" for k in keys) + f" {self.name}"


def _hops(h: Mapping[str, Any] | None, reason: str | None) -> str:
    if not h:
        return f"unknown ({reason})" if reason else "unknown"
    if h["min"] == h["max"]:
        return f"{h['min']} (consistently)"
    return f"{h['min']}-{h['max']} (mostly {h['mode']})"


def _extra_percentiles(result: PingResult, percentiles: Sequence[float], fmt: _Fmt) -> str:
    rtt = _rtts(result)
    if rtt.size == 0 or not percentiles:
        return ""
    values = np.percentile(rtt.astype(np.float64), list(percentiles))
    shown = ", ".join(f"p{p:g} {fmt(v)}" for p, v in zip(percentiles, values, strict=True))
    return f"round trip  percentiles {shown} {fmt.name}"


def _rtts(result: PingResult) -> np.ndarray[Any, np.dtype[np.int64]]:
    rec = result.received
    if rec.size == 0:
        return np.zeros(0, dtype=np.int64)
    _, first = np.unique(rec["sender_seq"], return_index=True)
    r = rec[first]
    rtt: np.ndarray[Any, np.dtype[np.int64]] = (r["t4"].astype(np.int64) - r["t1"]) - (
        r["t3"].astype(np.int64) - r["t2"]
    )
    return rtt


def _err(result: PingResult, fmt: _Fmt) -> str:
    """twping's err=: our Error Estimate plus the largest the reflector gave."""
    theirs = result.summary.get("reflector_error_estimate", {}).get("max_ns")
    if result.error_estimate_ns is None and theirs is None:
        return ""
    return f" (err={fmt((result.error_estimate_ns or 0) + (theirs or 0))} {fmt.name})"


def _packet_lines(result: PingResult) -> Iterator[str]:
    s = result.summary
    c = s["counts"]
    loss = "n/a" if c["loss_pct"] is None else f"{c['loss_pct']:.1f}%"
    split = ""
    if c["forward_lost"] is not None:
        split = f" (forward {c['forward_lost']}, backward {c['backward_lost']})"
    reordered = s["reordering"]["round_trip"]["reordered"]
    yield (
        f"packets     {c['sent']} sent, {c['received']} received, {loss} loss{split}, "
        f"{c['duplicates']} duplicates, {reordered} reordered"
    )
    counters = result.counters
    bad = counters.get("malformed", 0)
    if bad:
        yield (
            f"unparsable  {bad} replies could not be parsed (shorter than a TWAMP reflection, "
            "or malformed) and count as lost: the reflector does not speak this test format"
        )
    if counters.get("auth_failed", 0):
        yield (
            f"auth failed {counters['auth_failed']} replies failed the HMAC check and count as "
            "lost: wrong key, or the reflector mangles authenticated packets"
        )
    if counters.get("unknown_peer", 0):
        yield f"strangers   {counters['unknown_peer']} datagrams from other addresses ignored"


def _delay_lines(result: PingResult, fmt: _Fmt) -> Iterator[str]:
    s = result.summary
    d = s["delay"]
    keys = ("min", "median", "p95", "p99", "max")
    yield f"round trip  {fmt.dist(d['rtt'], keys)}{_err(result, fmt)}"
    yield "            (T4−T1)−(T3−T2): the time away minus the reflector's residence below"
    yield f"reflector   residence {fmt.dist(d['residence'], ('min', 'median', 'max'))}"
    away = d.get("time_away")
    if away:
        yield f"time away   T4−T1, residence included: median {fmt(away['median'])} {fmt.name}"
    for name in ("forward", "backward"):
        shown = fmt.dist(d[name], ("min", "median", "max"))
        yield f"{name:<12}{shown}{_one_way_note(result, name, fmt)}"


def _one_way_note(result: PingResult, name: str, fmt: _Fmt) -> str:
    """Why a one-way figure is not to be trusted: unsynchronised clocks, or inside the error."""
    s = result.summary
    if not s["clocks_synced"]:
        return " (clocks not synchronised: not valid)"
    dist = s["delay"][name]
    theirs = s.get("reflector_error_estimate", {}).get("max_ns")
    if result.error_estimate_ns is None and theirs is None:
        return ""
    err = (result.error_estimate_ns or 0) + (theirs or 0)
    if dist and abs(dist["median"]) < err:
        return f" (within the clocks' error estimates, ±{fmt(err)} {fmt.name}: not significant)"
    return ""


def format_report(
    result: PingResult,
    *,
    quiet: bool = False,
    unit: str = "m",
    percentiles: Sequence[float] = (),
) -> str:
    """The human summary: counts, delays, jitter, hops, and warnings for what cannot be true."""
    fmt = _Fmt(unit)
    s = result.summary
    sess = result.session
    lines = []
    if not quiet:
        lines.append(
            f"TWAMP ping {result.target}: mode {result.mode}, {sess['count']} packets, "
            f"schedule {sess.get('send_schedule', '')} ({result.schedule}), "
            f"padding {sess['padding']}, DSCP {sess['dscp']}, "
            f"ports {sess['sender_port']} -> {sess['reflector_port']} ({result.implementation})"
        )
    lines.append(
        f"--- {result.target} statistics"
        + (" (interrupted)" if result.interrupted else "")
        + " ---"
    )
    if result.control_closed:
        lines.append(
            "control     the server closed the control connection during the test; sending "
            f"stopped after {s['counts']['sent']} packets"
        )
    lines.extend(_packet_lines(result))
    lines.extend(_delay_lines(result, fmt))
    lines.extend(kernel_stamp_lines(result.kernel_stamps, result.kernel_stamps_note))
    extra = _extra_percentiles(result, percentiles, fmt)
    if extra:
        lines.append(extra)
    ipdv = s["ipdv"]["rtt"]
    if ipdv:
        keys = ("min", "median", "max")
        lines.append(
            f"jitter      round-trip IPDV {fmt.dist(ipdv, keys)}, stddev {fmt(ipdv['stddev'])} "
            f"{fmt.name}"
        )
    else:
        lines.append("jitter      round-trip IPDV: no consecutive replies")
    hops = s["hops"]
    lines.append(
        f"hops        forward {_hops(hops['forward'], hops.get('forward_unknown'))}, "
        f"backward {_hops(hops['backward'], hops.get('backward_unknown'))}"
    )
    tos = s["reply_tos"]
    if tos and set(tos) != {"0"}:
        shown = ", ".join(
            f"DSCP {tos_to_dscp(int(k))} x{v}"
            for k, v in sorted(tos.items(), key=lambda kv: int(kv[0]))
        )
        lines.append(f"reply TOS   {shown}")
    lines.extend(f"warning     {a['message']}" for a in s.get("anomalies", ()))
    return "\n".join(lines)


def _us(ns: int) -> str:
    return f"{ns / 1e3:.1f}"


def kernel_stamp_lines(
    stamps: Mapping[str, Any] | None, note: str | None, *, indent: str = "            "
) -> Iterator[str]:
    """The send-time error and the RTT from kernel stamps (`metrics.kernel_stamps`), in µs.

    Shared by `twamp ping` and `twamp-bench`; a missing stamp is said in words, never shown as
    a number.
    """
    if stamps is None:
        if note:
            yield f"kernel tx   none: {note}"
        return
    if note:
        yield f"kernel tx   {note}"
    err = stamps["send_error"]
    source = stamps["source"]
    if err is None:
        yield f"kernel tx   no {source} transmit stamp came back from the kernel"
    else:
        yield (
            f"send error  kernel {source} TX stamp − T1 written: median {_us(err['median'])} / "
            f"p99 {_us(err['p99'])} / max {_us(err['max'])} us "
            f"({stamps['stamped']} of {stamps['sent']} packets stamped)"
        )
    rk, rw = stamps["rtt_kernel"], stamps["rtt_written"]
    if rk is not None and rw is not None:
        yield (
            f"kernel RTT  median {_us(rk['median'])} / p99 {_us(rk['p99'])} us from kernel "
            f"stamps at both ends; written Timestamps: median {_us(rw['median'])} / "
            f"p99 {_us(rw['p99'])} us"
        )
    if source == "hardware" and err is not None:
        yield (
            f"{indent}hardware stamps are on the NIC's clock (PHC): the send error and the "
            "kernel RTT hold only while it is synchronised to the system clock (phc2sys)"
        )
    if stamps["missing_note"]:
        yield f"{indent}{stamps['missing_note']}"


# -- per packet ---------------------------------------------------------------------------------


def _first_replies(result: PingResult) -> dict[int, tuple[int, ...]]:
    out: dict[int, tuple[int, ...]] = {}
    for row in result.received.tolist():
        out.setdefault(int(row[0]), tuple(row))
    return out


def _combined_error(ours: int | None, reflector_raw: int) -> float | None:
    """twping's err= of a one-way delay: our estimate plus the reflector's (RFC 4656 §4.1.2)."""
    multiplier, scale = reflector_raw & 0xFF, (reflector_raw >> 8) & 0x3F
    theirs = multiplier * 2.0 ** (scale - 32) * 1e9 if multiplier else None
    if ours is None and theirs is None:
        return None
    return (ours or 0) + (theirs or 0)


def format_packets(result: PingResult, *, unit: str = "m", limit: int | None = None) -> str:
    """twping's -v: one line per packet with its delays, '*LOST*' for no reply."""
    fmt = _Fmt(unit)
    replies = _first_replies(result)
    sync = "sync" if result.summary["clocks_synced"] else "unsync"
    lines = []
    for seq, _t1 in result.sent.tolist()[: limit if limit else None]:
        row = replies.get(int(seq))
        if row is None:
            lines.append(f"seq_no={seq} *LOST*")
            continue
        _, _, t1, t2, t3, t4, sender_ttl, reply_ttl, _, reflector_ee = row
        rtt = (t4 - t1) - (t3 - t2)
        both = _combined_error(result.error_estimate_ns, reflector_ee)
        err = "" if both is None else f", err={fmt(both)}"
        lines.append(
            f"seq_no={seq} rtt={fmt(rtt)} {fmt.name} ({sync}{err} {fmt.name}) "
            f"send={fmt(t2 - t1)} reflect={fmt(t4 - t3)} residence={fmt(t3 - t2)} "
            f"ttl={sender_ttl} reply_ttl={reply_ttl}"
        )
    return "\n".join(lines)


def format_raw(result: PingResult) -> str:
    """twping's -R: 'SEQNO STIME SS SERR RTIME RS RERR TTL' per packet, round trip.

    STIME is T1 and RTIME is T4, both on our clock, as 64-bit NTP integers; SS/RS our S bit;
    SERR/RERR our Error Estimate in seconds; TTL the reply's TTL (255 when it could not be read,
    as twping writes). A lost packet has RTIME 0.
    """
    replies = _first_replies(result)
    synced = 1 if result.summary["clocks_synced"] else 0
    err = (result.error_estimate_ns or 0) / 1e9
    lines = []
    for seq, t1 in result.sent.tolist():
        row = replies.get(int(seq))
        t4, ttl = (0, 255) if row is None else (row[5], row[7] or 255)
        rtime = ntp_from_ns(t4) if t4 else 0
        lines.append(
            f"{seq} {ntp_from_ns(t1):020d} {synced} {err:g} {rtime:020d} {synced} {err:g} {ttl}"
        )
    return "\n".join(lines)


def format_machine(result: PingResult) -> str:
    """twping's -M: KEY VALUE lines, times in seconds."""
    s = result.summary
    c = s["counts"]
    out = {
        "SENT": c["sent"],
        "LOST": c["lost"],
        "DUPS": c["duplicates"],
        "UNPARSABLE": result.counters.get("malformed", 0),
        "SYNC": int(bool(s["clocks_synced"])),
        "MAXERR": (result.error_estimate_ns or 0) / 1e9,
    }
    for name, key in (("RTT", "rtt"), ("RESIDENCE", "residence"), ("FWD", "forward")):
        dist = s["delay"][key]
        if dist:
            for stat in ("min", "median", "max"):
                out[f"{name}_{stat.upper()}"] = dist[stat] / 1e9
    return "\n".join(f"{k}\t{v:g}" if isinstance(v, float) else f"{k}\t{v}" for k, v in out.items())
