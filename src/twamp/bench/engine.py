"""Running the benchmark: probe, sender calibration, throughput searches, latency trials.

Theory of operation
-------------------
Per target, in this order (RFC 2544 §26, RFC 8219 §7-8 in spirit):

1. **Probe.** 20 packets at 100 pps. No reply at all, replies that do not parse or do not echo
   what we sent, or sends that fail each end the run for this target with one sentence
   (`BenchError`). Its median round trip (T4 - T1) sets the loss threshold.
2. **Sender calibration, per size.** Before any search the Sender (`dataplane.Sender`, the
   compiled twin when built) sends back to back into a discard sink on loopback: the rate it
   reaches is the most it could ever offer, and the search is capped below it. Trials are
   further checked one by one (step 4), because answering replies costs the sender too.
3. **Throughput, per size, `trials` times.** `search.RateSearch` picks offered rates; each trial
   sends `rate x trial_duration` packets on a fixed schedule and waits for stragglers. Loss counts
   every packet whose reflection did not come back within the loss threshold (RFC 7680 §2.4:
   loss is "not received within Tmax"): short trials would otherwise hide an overloaded
   reflector whose backlog still sits in its socket buffer when the trial ends. The first
   repetition searches from the cap down, the later ones start from the previous answer.
4. **Sender-limited trials.** A trial in which our sender could not hold the offered rate (an
   average rate under 98 % of the offered one, send errors, a stall over 20 ms, or more than
   10 % of its packets sent over 1 ms late: then its own pacing, not the schedule, spaced the
   packets) or in which our own receive buffer dropped replies (the socket's kernel drop
   counter, which `SO_RXQ_OVFL` also reports) says nothing about the reflector. It is marked
   `sender_limited` with the reason and run once more (other processes do preempt a sender
   now and then); if still limited the search is capped 10 % below that rate (each further
   step without a trial held is larger), or below what the sender achieved when that was
   less. The cap carries over to the next repetition and, as a share of the discard-sink rate,
   to the next size. A rate that passes at the cap, with no failure above it, is reported as a
   lower bound limited by the sender, never as the reflector's figure.
5. **Latency, per size,** at fixed fractions of the zero-loss rate found (or the tolerant one),
   `trials` times: RTT, one-way delays (valid only when both clocks report synchronisation, the
   S bits), reflector residence (T3 - T2), RFC 5481 IPDV, loss, reordering and duplicates, via
   `metrics.summarize`; the spread of every statistic over the trials is reported.

IMIX is sent as consecutive runs of one size (7k small, 4k medium, k large, k = 8) in a fixed
cycle, each run by its own Sender on one socket and one sequence space; the mix holds over every
cycle of a few milliseconds.

Everything is appended to the report as it is measured, so an interrupted run (Ctrl-C) still
has every trial done so far; `finalize_size` aggregates whatever is there.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import __version__, clock, dataplane
from ..metrics import RECORD_DTYPE, SENT_DTYPE, summarize
from ..wire.packets import TestFormat
from .conditions import collect_conditions, finish_conditions, socket_stats
from .config import BenchSettings, PacketSize, resolve_sizes
from .search import RateSearch
from .stats import quantiles, spread, spread_of_summaries
from .targets import (
    BenchError,
    CommandReflector,
    SessionOptions,
    Target,
    TestSession,
    hostport,
    send_error,
    throwaway_crypto,
)

__all__ = [
    "SCHEMA_VERSION",
    "Progress",
    "TrialData",
    "finalize_size",
    "measure_target",
    "run_benchmark",
    "run_probe",
    "send_schedule",
]

SCHEMA_VERSION = 1

_NS = 1_000_000_000
_LEAD_NS = 10_000_000  # a schedule starts this far ahead: time to build the first packets
_MIX_BLOCK = 8  # IMIX runs: 7k, 4k and k packets per cycle
_SEQ_MASK = 0xFFFFFFFF
_T1_TOLERANCE_NS = 1_000  # NTP rounding of the echoed Sender Timestamp is under 1 ns

# Step 4 of the module docstring.
_BEHIND_FRACTION = 0.10
_MAX_LAG_NS = 20_000_000
_MIN_ACHIEVED = 0.98
_CAP_STEP = 0.9  # a rate the sender could not hold twice: the cap goes this far below it
_MAX_ATTEMPTS = 48  # trials per search repetition, sender-limited ones included
_CAP_ACHIEVED = 0.95  # ... or this far below the best it achieved there, if that is lower
_CALIBRATION_HEADROOM = 0.9  # the first cap: this share of the discard-sink rate
_CALIBRATION_S = 0.15

_PROBE_COUNT = 20
_PROBE_PPS = 100.0
_PROBE_WAIT_NS = 1_000_000_000
_READY_TIMEOUT_NS = 10 * _NS
_MIN_LATENCY_PACKETS = 20
_BASE_THRESHOLD_NS = 20_000_000

_S_BIT = 0x8000

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@contextlib.contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """Pin the calling thread (the sender's) to `cpu`, restoring its mask afterwards."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


# -- one schedule ------------------------------------------------------------------------------


@dataclass(slots=True)
class TrialData:
    """What one schedule sent and got back, checked against what was sent.

    `received` holds only genuine reflections (their sender sequence number and echoed Sender
    Timestamp match a packet of this schedule), with sequence numbers made relative to the
    first. `foreign` counts replies that parsed but match nothing we sent (a previous trial's
    stragglers, or a reflector that answers with something else).
    """

    sent: npt.NDArray[np.void]
    received: npt.NDArray[np.void]
    foreign: int
    counters: dict[str, int]
    sender_drops: int | None
    reflector_drops: int | None

    @property
    def achieved_pps(self) -> float | None:
        n = self.sent.size
        if n < 2:
            return None
        span = int(self.sent["t1"][-1]) - int(self.sent["t1"][0])
        return (n - 1) * _NS / span if span > 0 else None


def _chunks(size: PacketSize, n: int) -> list[tuple[int, int, int]]:
    """(octets, start, stop) runs of one size covering packets 0..n-1."""
    if not size.is_mix:
        return [(size.octets[0], 0, n)]
    runs = [(o, count * _MIX_BLOCK) for o, count in size.pattern]
    out: list[tuple[int, int, int]] = []
    i = 0
    while i < n:
        for octets, count in runs:
            if i >= n:
                break
            stop = min(n, i + count)
            out.append((octets, i, stop))
            i = stop
    return out


def send_schedule(
    session: TestSession,
    size: PacketSize,
    schedule: npt.NDArray[np.int64],
    *,
    wait_ns: int,
    target: Target | None = None,
) -> TrialData:
    """Send one packet per scheduled time (realtime ns) and collect the reflections."""
    n = int(schedule.size)
    first_seq = session.advance(n)
    before = socket_stats(inode=session.inode)
    refl_before = None if target is None else target.reflector_drops()
    sent_parts: list[npt.NDArray[np.void]] = []
    recv_parts: list[npt.NDArray[np.void]] = []
    totals = {
        "sent": 0,
        "send_errors": 0,
        "received": 0,
        "malformed": 0,
        "auth_failed": 0,
        "unknown_peer": 0,
        "behind_schedule": 0,
        "max_lag_ns": 0,
        "reflector_unsynced": 0,
    }
    chunks = _chunks(size, n)
    for k, (octets, start, stop) in enumerate(chunks):
        sender = session.sender_for(octets)
        last = k == len(chunks) - 1
        result = sender.run(
            schedule[start:stop],
            first_seq=(first_seq + start) & _SEQ_MASK,
            wait_ns=wait_ns if last else 0,
        )
        sent_parts.append(result.sent)
        recv_parts.append(result.received)
        for key, value in result.counters.items():
            if key == "max_lag_ns":
                totals[key] = max(totals[key], int(value))
            elif key in totals:
                totals[key] += int(value)
    after = socket_stats(inode=session.inode)
    refl_after = None if target is None else target.reflector_drops()
    sent = np.concatenate(sent_parts) if sent_parts else np.zeros(0, dtype=SENT_DTYPE)
    received = np.concatenate(recv_parts) if recv_parts else np.zeros(0, dtype=RECORD_DTYPE)
    valid, foreign = _match(sent, received, first_seq)
    sent = sent.copy()
    sent["seq"] = (sent["seq"].astype(np.int64) - first_seq) & _SEQ_MASK
    return TrialData(
        sent=sent,
        received=valid,
        foreign=foreign,
        counters=totals,
        sender_drops=None if before is None or after is None else after.drops - before.drops,
        reflector_drops=(
            None if refl_before is None or refl_after is None else refl_after - refl_before
        ),
    )


def _match(
    sent: npt.NDArray[np.void], received: npt.NDArray[np.void], first_seq: int
) -> tuple[npt.NDArray[np.void], int]:
    """Reflections of packets in `sent` (sequence number and echoed T1 agree), made relative."""
    if received.size == 0 or sent.size == 0:
        return np.zeros(0, dtype=RECORD_DTYPE), int(received.size)
    sent_rel = (sent["seq"].astype(np.int64) - first_seq) & _SEQ_MASK
    order = np.argsort(sent_rel, kind="stable")
    sorted_rel = sent_rel[order]
    sorted_t1 = sent["t1"].astype(np.int64)[order]
    rx_rel = (received["sender_seq"].astype(np.int64) - first_seq) & _SEQ_MASK
    at = np.minimum(np.searchsorted(sorted_rel, rx_rel), sorted_rel.size - 1)
    ok = (sorted_rel[at] == rx_rel) & (
        np.abs(sorted_t1[at] - received["t1"].astype(np.int64)) <= _T1_TOLERANCE_NS
    )
    valid = received[ok].copy()
    valid["sender_seq"] = rx_rel[ok]
    return valid, int(np.count_nonzero(~ok))


def _schedule(rate_pps: float, count: int) -> npt.NDArray[np.int64]:
    start = clock.realtime_ns() + _LEAD_NS
    offsets = np.rint(np.arange(count, dtype=np.float64) * (_NS / rate_pps)).astype(np.int64)
    return start + offsets


def sender_limit(data: TrialData, offered_pps: float) -> str | None:
    """Why this trial does not measure the reflector (step 4), or None if the sender held."""
    c = data.counters
    sent = c["sent"]
    achieved = data.achieved_pps
    if c["send_errors"]:
        return f"{c['send_errors']} sends failed"
    if sent >= 20 and achieved is not None and achieved < _MIN_ACHIEVED * offered_pps:
        return f"the sender reached only {achieved:.0f} pps"
    if data.sender_drops:
        return f"our receive buffer dropped {data.sender_drops} replies"
    if c["max_lag_ns"] > _MAX_LAG_NS:
        return f"the sender stalled for {c['max_lag_ns'] / 1e6:.1f} ms"
    if sent and c["behind_schedule"] > _BEHIND_FRACTION * sent:
        late = 100.0 * c["behind_schedule"] / sent
        return f"{late:.1f} % of packets went out over 1 ms late"
    return None


def _first_copies(received: npt.NDArray[np.void]) -> npt.NDArray[np.void]:
    """One record per sender sequence number: the first to arrive."""
    if received.size == 0:
        return received
    by_arrival = received[np.argsort(received["t4"], kind="stable")]
    _, first = np.unique(by_arrival["sender_seq"], return_index=True)
    return by_arrival[first]


# -- probe --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbeResult:
    sent: int
    received: int
    total_rtt_median_ns: int
    reflector_synced: bool


def run_probe(target: Target, session: TestSession, size: PacketSize) -> ProbeResult:
    """Step 1 of the module docstring; BenchError names what is wrong with the target."""
    where = hostport(session.peer)
    data = send_schedule(session, size, _schedule(_PROBE_PPS, _PROBE_COUNT), wait_ns=_PROBE_WAIT_NS)
    c = data.counters
    got = int(np.unique(data.received["sender_seq"]).size) if data.received.size else 0
    if got == 0:
        if c["auth_failed"]:
            raise BenchError(
                f"replies from {where} fail authentication (wrong key, or not this session's?)"
            )
        if c["malformed"] or data.foreign:
            raise BenchError(f"replies from {where} are not TWAMP/STAMP reflections")
        if c["send_errors"] and c["sent"] == 0:
            why = send_error(session.peer) or "every send failed"
            raise BenchError(f"{where} is unreachable: {why[0].lower()}{why[1:]}")
        if c["unknown_peer"]:
            raise BenchError(f"no reply from {where} (replies came from another address)")
        raise BenchError(f"no reply from {where}")
    firsts = _first_copies(data.received)
    total = firsts["t4"].astype(np.int64) - firsts["t1"].astype(np.int64)
    return ProbeResult(
        sent=c["sent"],
        received=got,
        total_rtt_median_ns=int(np.median(total)),
        reflector_synced=c["reflector_unsynced"] == 0,
    )


def wait_ready(target: Target, session: TestSession, size: PacketSize) -> ProbeResult:
    """The probe; a reflector started from a command line may take a while to answer it."""
    if not isinstance(target, CommandReflector):
        return run_probe(target, session, size)
    deadline = clock.monotonic_ns() + _READY_TIMEOUT_NS
    while True:
        try:
            return run_probe(target, session, size)
        except BenchError:
            status = target.exited()
            if status is not None:
                raise BenchError(
                    f"the reflector command exited with status {status} before answering"
                ) from None
            if clock.monotonic_ns() >= deadline:
                raise


# -- calibration ---------------------------------------------------------------------------------


def calibrate(fmt: TestFormat, size: PacketSize, options: SessionOptions) -> float:
    """Step 2: the rate our Sender reaches back to back into a discard sink on loopback."""
    from ..dataplane.sockets import open_test_socket

    sink = open_test_socket("127.0.0.1", 0, rcvbuf=65536, sndbuf=65536)
    session = TestSession(
        ("127.0.0.1", int(sink.getsockname()[1])),
        fmt,
        crypto=throwaway_crypto(fmt),
        local_ip="127.0.0.1",
        tos=options.tos,
        batch=options.batch,
        busy_poll=options.busy_poll,
        rcvbuf=65536,
    )
    try:
        rate = 0.0
        count = 2000
        for _ in range(2):
            data = send_schedule(
                session, size, np.full(count, clock.realtime_ns(), dtype=np.int64), wait_ns=0
            )
            rate = data.achieved_pps or 0.0
            if rate <= 0:
                break
            count = int(min(max(rate * _CALIBRATION_S, 2000), 500_000))
        return rate
    finally:
        session.close()
        sink.close()


# -- throughput ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Thresholds:
    max_delay_ns: int
    wait_ns: int


def throughput_trial(
    session: TestSession,
    target: Target,
    size: PacketSize,
    rate: float,
    duration_s: float,
    thresholds: Thresholds,
) -> dict[str, Any]:
    """One trial at `rate`: the trial record of the report."""
    count = max(2, round(rate * duration_s))
    data = send_schedule(
        session, size, _schedule(rate, count), wait_ns=thresholds.wait_ns, target=target
    )
    firsts = _first_copies(data.received)
    total = firsts["t4"].astype(np.int64) - firsts["t1"].astype(np.int64)
    in_time = int(np.count_nonzero(total <= thresholds.max_delay_ns))
    sent = data.counters["sent"]
    c = data.counters
    achieved = data.achieved_pps
    return {
        "offered_pps": rate,
        "packets": count,
        "sent": sent,
        "received": int(firsts.size),
        "late": int(firsts.size) - in_time,
        "lost": sent - in_time,
        "loss_pct": 100.0 * (sent - in_time) / sent if sent else 100.0,
        "duplicates": int(data.received.size - firsts.size),
        "foreign": data.foreign,
        "achieved_pps": achieved,
        "behind_schedule": c["behind_schedule"],
        "max_lag_ns": c["max_lag_ns"],
        "send_errors": c["send_errors"],
        "malformed": c["malformed"] + c["auth_failed"],
        "sender_drops": data.sender_drops,
        "reflector_drops": data.reflector_drops,
        "sender_limited": False,
        "limit_reason": None,
        "_limit": sender_limit(data, rate),
    }


def _finish_trial(trial: dict[str, Any]) -> dict[str, Any]:
    """Move the sender verdict into the record's public fields."""
    reason = trial.pop("_limit")
    trial["sender_limited"] = reason is not None
    trial["limit_reason"] = reason
    return trial


def search_run(
    ctx: _Context,
    size_result: dict[str, Any],
    size: PacketSize,
    cap: float,
    cap_source: str,
    hint: float | None,
) -> tuple[dict[str, Any], float, str]:
    """One repetition of the throughput search: its record, the cap it ended at and why.

    `cap_source` is "sender" (what our sender can offer) or "max_rate" (--max-rate).
    """
    s = ctx.settings
    search = RateSearch(
        floor_pps=min(s.min_rate_pps, cap),
        cap_pps=cap,
        tolerance_pct=s.loss_tolerance_pct,
        resolution=s.resolution_pct / 100.0,
        hint=hint,
    )
    run: dict[str, Any] = {
        "zero_loss_pps": None,
        "zero_loss_fail_pps": None,
        "zero_loss_at_cap": False,
        "tolerant_pps": None,
        "tolerant_fail_pps": None,
        "tolerant_at_cap": False,
        "cap_pps": cap,
        "cap_source": cap_source,
        "complete": False,
        "trials": [],
    }
    size_result["throughput"]["runs"].append(run)
    attempts = 0
    lowered = 0  # cap lowerings since the sender last held a trial
    while (rate := search.next_rate()) is not None and attempts < _MAX_ATTEMPTS:
        limited = False
        achieved = 0.0
        for _ in range(2):  # a trial the sender could not hold is run once more
            attempts += 1
            ctx.progress(
                f"{ctx.target.name} size {size.label}: run {len(size_result['throughput']['runs'])}"
                f"/{s.trials}, trial at {rate:,.0f} pps"
            )
            trial = _finish_trial(ctx.trial(size, rate, s.trial_duration_s))
            run["trials"].append(trial)
            limited = trial["sender_limited"]
            if not limited:
                search.record(rate, trial["loss_pct"])
                lowered = 0
                break
            achieved = max(achieved, trial["achieved_pps"] or 0.0)
        if limited:
            if rate <= search.floor * (1 + 1e-9):
                run["floor_sender_limited"] = True
                break
            # Each further step down without a trial held is larger: 10 %, 19 %, 34 %, ...
            step = _CAP_STEP ** (2 ** min(lowered, 4))
            lowered += 1
            search.lower_cap(min(rate * step, achieved * _CAP_ACHIEVED or rate))
    zero, tol = search.result()
    if search.cap < cap:
        cap_source = "sender"
    run.update(
        zero_loss_pps=zero.pps,
        zero_loss_fail_pps=zero.fail_pps,
        zero_loss_at_cap=zero.at_cap,
        tolerant_pps=tol.pps,
        tolerant_fail_pps=tol.fail_pps,
        tolerant_at_cap=tol.at_cap,
        cap_pps=search.cap,
        cap_source=cap_source,
        complete=True,
    )
    return run, search.cap, cap_source


# -- latency -------------------------------------------------------------------------------------


_DIST_KEYS = ("min", "mean", "median", "p95", "p99", "max", "stddev", "count")


def latency_trial(
    session: TestSession,
    target: Target,
    size: PacketSize,
    rate: float,
    duration_s: float,
    thresholds: Thresholds,
    our_synced: bool,
) -> tuple[dict[str, Any], npt.NDArray[np.int64]]:
    """One latency trial at `rate`: its record, and its RTT samples for the CDF."""
    count = max(_MIN_LATENCY_PACKETS, round(rate * duration_s))
    data = send_schedule(
        session, size, _schedule(rate, count), wait_ns=thresholds.wait_ns, target=target
    )
    c = data.counters
    reflector_synced = c["received"] > 0 and c["reflector_unsynced"] == 0
    synced = our_synced and reflector_synced
    summary = summarize(data.sent, data.received, clocks_synced=synced, stateful_reflector=False)
    firsts = _first_copies(data.received)
    t1, t2, t3, t4 = (firsts[f].astype(np.int64) for f in ("t1", "t2", "t3", "t4"))
    rtt = (t4 - t1) - (t3 - t2)
    counts = summary["counts"]
    delay = summary["delay"]

    def dist(d: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if d is None else {k: d[k] for k in _DIST_KEYS}

    record = {
        "offered_pps": rate,
        "packets": count,
        "sent": counts["sent"],
        "received": counts["received"],
        "loss_pct": counts["loss_pct"] if counts["loss_pct"] is not None else 100.0,
        "duplicates": counts["duplicates"],
        "reordered": summary["reordering"]["round_trip"]["reordered"],
        "clocks_synced": synced,
        "rtt": dist(delay["rtt"]),
        "forward": dist(delay["forward"]),
        "backward": dist(delay["backward"]),
        "residence": dist(delay["residence"]),
        "ipdv": dist(summary["ipdv"]["rtt"]),
        "achieved_pps": data.achieved_pps,
        "behind_schedule": c["behind_schedule"],
        "max_lag_ns": c["max_lag_ns"],
        "sender_drops": data.sender_drops,
        "reflector_drops": data.reflector_drops,
        "sender_limited": False,
        "limit_reason": None,
        "_limit": sender_limit(data, rate),
    }
    return record, rtt


# -- aggregation ---------------------------------------------------------------------------------


def _rate_figure(
    runs: list[dict[str, Any]], key: str, mean_octets: float, n_wanted: int
) -> dict[str, Any]:
    done = [r for r in runs if r.get("complete")]
    figure: dict[str, Any] = {
        "status": "not_measured",
        "pps": None,
        "mbps": None,
        "lower_bound_pps": None,
        "runs": len(done),
        "runs_found": 0,
    }
    if not done:
        return figure
    at_cap = [r for r in done if r[f"{key}_at_cap"] or r.get("floor_sender_limited")]
    found = [r[f"{key}_pps"] for r in done if r[f"{key}_pps"] is not None]
    figure["runs_found"] = len(found)
    if at_cap:
        by_sender = any(
            r["cap_source"] == "sender" or r.get("floor_sender_limited") for r in at_cap
        )
        figure["status"] = "sender_limited" if by_sender else "at_max_rate"
        bounds = [r[f"{key}_pps"] for r in at_cap if r[f"{key}_pps"] is not None]
        figure["lower_bound_pps"] = min(bounds) if bounds else None
        return figure
    if not found:
        figure["status"] = "none"
        return figure
    figure["status"] = "found" if len(found) == len(done) == n_wanted else "partial"
    figure["pps"] = spread(found)
    figure["mbps"] = spread(p * mean_octets * 8 / 1e6 for p in found)
    return figure


def finalize_size(size_result: dict[str, Any], n_wanted: int) -> None:
    """Aggregate the raw runs and latency trials of one size (also after an interruption)."""
    tp = size_result["throughput"]
    mean = size_result["mean_octets"]
    tp["zero_loss"] = _rate_figure(tp["runs"], "zero_loss", mean, n_wanted)
    tp["tolerant"] = _rate_figure(tp["runs"], "tolerant", mean, n_wanted)
    for point in size_result["latency"]:
        good = [t for t in point["trials"] if not t["sender_limited"]]
        point["summary"] = spread_of_summaries(good)
        point["loss_pct"] = spread(t["loss_pct"] for t in good)
        point["reordered"] = spread(t["reordered"] for t in good)
        point["duplicates"] = spread(t["duplicates"] for t in good)
        point["clocks_synced"] = bool(good) and all(t["clocks_synced"] for t in good)
        point["trials_used"] = len(good)


def _latency_base(size_result: dict[str, Any]) -> tuple[float | None, str | None]:
    """The rate latency fractions refer to, and which figure it is."""
    for key in ("zero_loss", "tolerant"):
        fig = size_result["throughput"][key]
        if fig["pps"] is not None:
            return float(fig["pps"]["median"]), key
        if fig["status"] in ("sender_limited", "at_max_rate") and fig["lower_bound_pps"]:
            return float(fig["lower_bound_pps"]), f"{key}_lower_bound"
    return None, None


# -- driving a target ----------------------------------------------------------------------------


class _Context:
    """The state of measuring one target: its settings, thresholds, sessions, progress."""

    def __init__(
        self, target: Target, settings: BenchSettings, thresholds: Thresholds, progress: Progress
    ) -> None:
        self.target = target
        self.settings = settings
        self.thresholds = thresholds
        self.progress = progress
        self.size_session: TestSession | None = None
        # The share of the discard-sink rate the sender held with replies to take in.
        self.cap_share = _CALIBRATION_HEADROOM

    @contextlib.contextmanager
    def session(self, size: PacketSize) -> Iterator[TestSession]:
        if self.size_session is not None:
            yield self.size_session
            return
        session = self.target.open_session(size)
        try:
            yield session
        finally:
            self.target.close_session(session)

    def trial(self, size: PacketSize, rate: float, duration_s: float) -> dict[str, Any]:
        with self.session(size) as session:
            return throughput_trial(session, self.target, size, rate, duration_s, self.thresholds)


def _thresholds(settings: BenchSettings, probe: ProbeResult) -> Thresholds:
    if settings.max_delay_ms is not None:
        max_delay = int(settings.max_delay_ms * 1e6)
    else:
        max_delay = _BASE_THRESHOLD_NS + 2 * probe.total_rtt_median_ns
    if settings.wait_s is not None:
        wait = int(settings.wait_s * _NS)
    else:
        wait = max(int(1.5 * max_delay), 50_000_000)
    return Thresholds(max_delay_ns=max_delay, wait_ns=wait)


def measure_target(
    target: Target,
    settings: BenchSettings,
    record: dict[str, Any],
    *,
    progress: Progress = _quiet,
    our_synced: bool = False,
) -> None:
    """Measure one started target into `record` (its report object), step by step."""
    try:
        sizes = resolve_sizes(settings.sizes, target.fmt)
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    record["sizes"] = []
    progress(f"{target.name}: probing {hostport(target.address)}")
    probe_size = (
        sizes[0] if not sizes[0].is_mix else PacketSize("probe", ((sizes[0].octets[0], 1),))
    )
    with contextlib.ExitStack() as stack:
        session = target.open_session(probe_size)
        stack.callback(target.close_session, session)
        probe = wait_ready(target, session, probe_size)
    thresholds = _thresholds(settings, probe)
    record["probe"] = {
        "sent": probe.sent,
        "received": probe.received,
        "round_trip_median_ns": probe.total_rtt_median_ns,
        "reflector_synced": probe.reflector_synced,
        "loss_threshold_ns": thresholds.max_delay_ns,
        "wait_ns": thresholds.wait_ns,
    }
    ctx = _Context(target, settings, thresholds, progress)
    for size in sizes:
        _measure_size(ctx, size, record, our_synced)


def _measure_size(
    ctx: _Context, size: PacketSize, record: dict[str, Any], our_synced: bool
) -> None:
    s = ctx.settings
    target = ctx.target
    size_result: dict[str, Any] = {
        "size": size.label,
        "pattern": [[o, n] for o, n in size.pattern],
        "mean_octets": size.mean_octets,
        "sender_capacity_pps": None,
        "cap_pps": None,
        "throughput": {"runs": []},
        "latency": [],
        "latency_base": None,
        "complete": False,
    }
    record["sizes"].append(size_result)
    try:
        ctx.progress(f"{target.name} size {size.label}: measuring the sender")
        capacity = calibrate(target.fmt, size, target.options)
        size_result["sender_capacity_pps"] = capacity
        cap = capacity * min(_CALIBRATION_HEADROOM, ctx.cap_share / _CAP_STEP)
        cap_source = "sender"
        if s.max_rate_pps is not None and s.max_rate_pps <= cap:
            cap, cap_source = s.max_rate_pps, "max_rate"
        cap = max(cap, s.min_rate_pps)
        size_result["cap_pps"] = first_cap = cap
        stack = contextlib.ExitStack()
        with stack:
            if target.session_scope in ("run", "size"):
                ctx.size_session = target.open_session(size)
                stack.callback(target.close_session, ctx.size_session)
                stack.callback(setattr, ctx, "size_session", None)
            hint: float | None = None
            for _ in range(s.trials):
                run, cap, cap_source = search_run(ctx, size_result, size, cap, cap_source, hint)
                hint = run["tolerant_pps"] or run["zero_loss_pps"] or hint
            size_result["cap_pps"] = cap
            if capacity > 0 and cap < first_cap:
                ctx.cap_share = min(ctx.cap_share, cap / capacity)
            finalize_size(size_result, s.trials)
            base, which = _latency_base(size_result)
            size_result["latency_base"] = which
            if base is not None:
                _measure_latency(ctx, size, size_result, base, our_synced)
        size_result["complete"] = True
    finally:
        finalize_size(size_result, s.trials)


def _measure_latency(
    ctx: _Context, size: PacketSize, size_result: dict[str, Any], base: float, our_synced: bool
) -> None:
    s = ctx.settings
    for fraction in s.latency_fractions_pct:
        rate = base * fraction / 100.0
        point: dict[str, Any] = {
            "fraction_pct": fraction,
            "offered_pps": rate,
            "trials": [],
            "rtt_quantiles_ns": None,
        }
        size_result["latency"].append(point)
        samples: list[npt.NDArray[np.int64]] = []
        for i in range(s.trials):
            for _ in range(2):  # a sender-limited trial is run once more
                ctx.progress(
                    f"{ctx.target.name} size {size.label}: latency at {fraction:g} % "
                    f"({rate:,.0f} pps), trial {i + 1}/{s.trials}"
                )
                with ctx.session(size) as session:
                    trial, rtt = latency_trial(
                        session, ctx.target, size, rate, s.latency_s, ctx.thresholds, our_synced
                    )
                _finish_trial(trial)
                point["trials"].append(trial)
                if not trial["sender_limited"]:
                    samples.append(rtt)
                    point["rtt_quantiles_ns"] = quantiles(np.concatenate(samples))
                    break


# -- a whole run ---------------------------------------------------------------------------------


def new_document(command: str, settings: BenchSettings) -> dict[str, Any]:
    return {
        "tool": "twamp-bench",
        "version": __version__,
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "settings": settings_record(settings),
        "conditions": None,
        "targets": [],
        "comparison": None,
        "interrupted": False,
        "complete": False,
    }


def settings_record(s: BenchSettings) -> dict[str, Any]:
    return {
        "sizes": list(s.sizes),
        "trials": s.trials,
        "trial_duration_s": s.trial_duration_s,
        "latency_duration_s": s.latency_s,
        "loss_tolerance_pct": s.loss_tolerance_pct,
        "latency_fractions_pct": list(s.latency_fractions_pct),
        "resolution_pct": s.resolution_pct,
        "min_rate_pps": s.min_rate_pps,
        "max_rate_pps": s.max_rate_pps,
        "max_delay_ms": s.max_delay_ms,
        "wait_s": s.wait_s,
        "sender_batch": s.sender_batch,
        "busy_poll": s.busy_poll,
        "pin": s.pin,
        "dscp": s.dscp,
    }


def run_benchmark(
    targets: list[Target],
    settings: BenchSettings,
    *,
    command: str = "bench",
    argv: list[str] | None = None,
    progress: Progress = _quiet,
    sender_cpu: int | None = None,
    document: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Measure each target in turn (started, measured, stopped) into the report document.

    BenchError from a target is recorded on that target (`error`) and re-raised when it is the
    only target; KeyboardInterrupt stops the run and returns what was measured, marked
    `interrupted`. The document is filled in place, so a caller holding `document` also has
    the partial results if anything else escapes.
    """
    doc = document if document is not None else new_document(command, settings)
    started = datetime.datetime.now(datetime.timezone.utc)
    our_synced = bool(clock.error_estimate() & _S_BIT)
    doc["conditions"] = collect_conditions(
        argv=argv,
        sender={
            "implementation": getattr(dataplane.Sender, "IMPLEMENTATION", dataplane.IMPLEMENTATION),
            "batch": settings.sender_batch,
            "busy_poll": settings.busy_poll,
            "cpu": sender_cpu,
            "rcvbuf": None,
            "sndbuf": None,
        },
        clock_synced=our_synced,
        started=started,
    )
    try:
        with pinned(sender_cpu):
            for target in targets:
                record: dict[str, Any] = {
                    "name": target.name,
                    "error": None,
                    "sizes": [],
                    "probe": None,
                }
                doc["targets"].append(record)
                try:
                    progress(f"{target.name}: starting")
                    target.start()
                    record.update(target.describe(), error=None)
                    _sender_buffers(doc, target)
                    measure_target(
                        target, settings, record, progress=progress, our_synced=our_synced
                    )
                except BenchError as exc:
                    record["error"] = str(exc)
                    if len(targets) == 1:
                        raise
                finally:
                    target.stop()
                    desc = target.describe()
                    record["reflector"] = desc["reflector"]
                    record["sessions"] = desc["sessions"]
                    for key, value in desc.items():
                        record.setdefault(key, value)
        doc["complete"] = True
    except KeyboardInterrupt:
        doc["interrupted"] = True
    finally:
        finish_conditions(doc["conditions"])
    return doc


def _sender_buffers(doc: dict[str, Any], target: Target) -> None:
    """Record the socket buffers the kernel granted our sender (once per run)."""
    sender = doc["conditions"]["sender"]
    if sender["rcvbuf"] is not None:
        return
    from ..dataplane.sockets import buffer_sizes, open_test_socket

    o = target.options
    sock = open_test_socket("127.0.0.1", 0, rcvbuf=o.rcvbuf, sndbuf=o.rcvbuf)
    try:
        sender["rcvbuf"], sender["sndbuf"] = buffer_sizes(sock)
    finally:
        sock.close()
