"""Fixed-rate mode: `twamp-bench --rate R --duration T`, with a report every interval (iperf3).

No search: the target is offered R packets/s for T seconds, and every `interval` seconds one
line says what that interval did: packets sent and received, loss, the achieved rate in pps and
L1 Mbit/s, RTT and residence percentiles, and whether our sender held the rate. This is how the
residence time of a reflector at a fixed load is measured (`--busy-poll` for a spinning one).

Each interval is one schedule of `R x interval` packets; the next starts when the previous has
waited for its stragglers (the loss threshold, 20 ms plus twice the round trip by default), so
the load pauses that long between intervals, and a reply later than that counts as lost
(RFC 7680 §2.4). The totals aggregate the intervals; the latency percentiles of the totals are
over every packet of the run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from .config import MEDIA, BenchSettings, ethernet_max_fps, frame_octets, resolve_sizes
from .probe import wait_ready
from .targets import BenchError, Target
from .trial import Thresholds, latency_summary, make_schedule, send_schedule, sender_check

__all__ = ["format_interval", "run_fixed"]

_NS = 1_000_000_000
_BASE_THRESHOLD_NS = 20_000_000


def _interval_record(
    data: Any, rate: float, start_s: float, length_s: float, l1_octets: float, synced: bool
) -> tuple[dict[str, Any], npt.NDArray[np.int64]]:
    fields, rtt = latency_summary(data, synced)
    offered, why = sender_check(data, rate)
    achieved = data.achieved_pps
    record = {
        "start_s": start_s,
        "end_s": start_s + length_s,
        "offered_pps": rate,
        "achieved_pps": achieved,
        "l1_mbps": None if achieved is None else achieved * l1_octets * 8 / 1e6,
        "offered": offered,
        "sender_limited": why is not None,
        "limit_reason": why,
        "foreign_cpu_cores": data.foreign_cores,
        **fields,
    }
    return record, rtt


def _us(d: dict[str, Any] | None, key: str) -> str:
    if not d or d.get(key) is None:
        return "-"
    return f"{d[key] / 1e3:.1f}"


def format_interval(r: dict[str, Any]) -> str:
    """One iperf3-style line."""
    flag = "" if not r["sender_limited"] else f"  (sender: {r['limit_reason']})"
    ach = r["achieved_pps"] or 0.0
    l1 = r["l1_mbps"] or 0.0
    return (
        f"[{r['start_s']:6.2f}-{r['end_s']:6.2f} s]  sent {r['sent']:>8,d}  "
        f"recv {r['received']:>8,d}  loss {r['loss_pct']:6.2f} %  "
        f"{ach:>10,.0f} pps {l1:>8.1f} Mbit/s L1  "
        f"RTT p50 {_us(r['rtt'], 'median')} p99 {_us(r['rtt'], 'p99')} µs  "
        f"resid p50 {_us(r['residence'], 'median')} µs{flag}"
    )


def _thresholds(settings: BenchSettings, rtt_ns: int) -> Thresholds:
    max_delay = (
        int(settings.max_delay_ms * 1e6)
        if settings.max_delay_ms is not None
        else _BASE_THRESHOLD_NS + 2 * rtt_ns
    )
    wait = int(settings.wait_s * _NS) if settings.wait_s is not None else max_delay
    return Thresholds(max_delay, wait)


def run_fixed(
    target: Target,
    settings: BenchSettings,
    record: dict[str, Any],
    *,
    rate: float,
    duration_s: float,
    interval_s: float,
    report: Callable[[str], None],
    our_synced: bool,
    sender_cpus: Sequence[int | None] = (),
) -> None:
    """Offer `rate` for `duration_s` into the started `target`, filling `record["fixed_rate"]`."""
    try:
        (size, *_) = resolve_sizes(settings.sizes, target.fmt)
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    if settings.medium is not None:
        words, line_bps = MEDIA[settings.medium]
        l2, _l1 = frame_octets(size.pattern, ":" in target.address[0])
        top = ethernet_max_fps(l2, line_bps)
        if rate > top:
            raise BenchError(
                f"--rate {rate:,.0f} pps is above the {top:,} fps {words} carries of "
                f"size {size.label}'s {l2:.0f}-octet frames (RFC 2544 Appendix A)"
            )
    cpus = list(sender_cpus) or [None]
    with contextlib.ExitStack() as stack:
        sessions = target.open_sessions(size, len(cpus))
        for s in sessions:
            stack.callback(target.close_session, s)
        probe = wait_ready(target, sessions[0], size)
        thresholds = _thresholds(settings, probe.total_rtt_median_ns)
        ipv6 = ":" in target.address[0]
        _l2, l1 = frame_octets(size.pattern, ipv6)
        fixed: dict[str, Any] = {
            "rate_pps": rate,
            "duration_s": duration_s,
            "interval_s": interval_s,
            "size": size.label,
            "l1_octets": l1,
            "loss_threshold_ns": thresholds.max_delay_ns,
            "intervals": [],
            "total": None,
        }
        record["fixed_rate"] = fixed
        all_rtt: list[npt.NDArray[np.int64]] = []
        elapsed = 0.0
        while elapsed < duration_s - 1e-9:
            length = min(interval_s, duration_s - elapsed)
            count = max(2, round(rate * length))
            data = send_schedule(
                sessions,
                size,
                make_schedule(rate, count),
                wait_ns=thresholds.wait_ns,
                target=target,
                cpus=cpus,
            )
            interval, rtt = _interval_record(data, rate, elapsed, length, l1, our_synced)
            fixed["intervals"].append(interval)
            all_rtt.append(rtt)
            report(format_interval(interval))
            elapsed += length
        fixed["total"] = _total(fixed["intervals"], all_rtt)


def _total(intervals: list[dict[str, Any]], rtts: list[npt.NDArray[np.int64]]) -> dict[str, Any]:
    sent = sum(i["sent"] for i in intervals)
    received = sum(i["received"] for i in intervals)
    rtt = np.concatenate(rtts) if rtts else np.zeros(0, dtype=np.int64)
    pct = None
    if rtt.size:
        p = np.percentile(rtt.astype(np.float64), [50, 99, 100])
        pct = {"median": float(p[0]), "p99": float(p[1]), "max": float(p[2])}
    return {
        "sent": sent,
        "received": received,
        "loss_pct": 100.0 * (sent - received) / sent if sent else None,
        "rtt_ns": pct,
        "intervals_sender_limited": sum(1 for i in intervals if i["sender_limited"]),
    }
