"""One trial: send a schedule of test packets, collect the reflections, and judge the sender.

A trial sends one packet per scheduled time (realtime ns) from one or more `TestSession`s (one
per sender core, `--sender-cores`), collects what comes back, keeps only genuine reflections of
what it sent, and records what our own sender did: how far behind its schedule it fell, whether
its receive buffer dropped replies, how much CPU other processes took meanwhile.

**Judging the sender** (`sender_check`). The search (`search.verdict`) needs two facts per trial:

* `offered`: the sender put the offered rate on the wire: every packet sent, none failed, and
  the achieved average rate at least 98 % of the offered one. Only such a trial can *pass*.
* `clean`: offered, no stall over 20 ms, and no reply lost in our own receive buffer (the
  socket's kernel drop counter, which `SO_RXQ_OVFL` also reports). Only such a trial can
  *fail*: otherwise the loss may be our own doing (the catch-up burst after a long stall
  overflowing a reflector's buffer, replies our socket dropped). Shorter lateness is not held
  against a failure: a sender that catches up within 20 ms sends at most 20 ms of packets at
  once (2,000 at 100 kpps), which a reflector's socket buffer of ordinary size absorbs; a
  reflector that loses them would lose them to any bursty real traffic too. How many packets
  left over 1 ms late is recorded with every trial (`behind_schedule`).

A trial that is not clean is marked `sender_limited` with the reason in words.

**A busy machine** (`disturbance`). Other work can take the CPU from the reflector without our
sender noticing: a process on the reflector's core halves what it can reflect, and the trial
fails although the reflector is fine. So every trial also records two readings
(`conditions.CpuSampler`), and is `disturbed`, with the reason in words, when either is over
its limit:

* `foreign_cpu_cores` over `FOREIGN_CORES_LIMIT` = 0.1: CPU the kernel accounted on the
  trial's cores (the reflector's and the senders' when pinned, else the whole host) to anything
  but our process, the reflector and the softirq threads of those cores (ksoftirqd/N, which on
  loopback carry our own packets). On a quiet 2-core VM every trial of five default runs read
  0.00, up to full rate; a CPU-bound process beside them read 0.04-0.71 per trial (it is
  sampled at the clock tick: about 0.05 cores of resolution over 0.2 s on two cores, so 0.1 is
  two ticks of margin).
* `reflector_wait_pct` over `RUN_QUEUE_WAIT_LIMIT` = 5 %: the share of the trial the
  reflector's busiest thread was runnable but waiting for its core (schedstat, nanoseconds;
  less the time the softirq thread of its core ran, which on loopback delivers its replies).
  It measures directly that someone had the reflector's core, whoever it was. Without
  competition the wait is the scheduler's wake-up latency only: 0.1-0.2 µs per wake-up
  measured here (a pipe ping-pong between two pinned real-time threads), under 1 % even at
  30,000 wake-ups a second; a busy loop sharing the core makes it 20-60 % (both measured on a
  shared 2-core VM). Our sender's wait (`sender_wait_pct`) is recorded but not judged: what
  it costs shows as lateness (`clean`), and on loopback its core also carries the softirq
  work of every packet.

A disturbed trial that lost packets the way a reflector short of CPU loses them is no
failure of the reflector (`aggregate.lost_to_a_disturbance`; `search`: "disturbed"): it fell
behind, so its losses are a backlog: replies late or dropped in its full socket buffer, or the
tail of the schedule never answered in time (`lost_at_end`). A reflector that discards packets
by design (a policer, a dropper) loses them spread over the trial, on time otherwise, and that
stays a failure on a busy machine too. A
disturbed trial that passed is a pass. Unknown readings (another OS, a reflector elsewhere)
claim nothing.

With several sender cores the schedule is dealt out round robin (session k sends packets k,
k + N, k + 2N, ...), each session from its own thread on its own core and its own socket (so its
own source port: the reflector sees N stateless flows); the compiled Sender releases the GIL in
its loop. Records are merged back into one sequence space, packet i of the schedule being
sequence number i.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import clock
from ..metrics import RECORD_DTYPE, SENT_DTYPE, kernel_stamps, summarize
from .conditions import CpuSampler, socket_stats, udp_owner_pid
from .config import PacketSize
from .csender import CSenderError
from .targets import BenchError, Target, TestSession

__all__ = [
    "FOREIGN_CORES_LIMIT",
    "RUN_QUEUE_WAIT_LIMIT",
    "Thresholds",
    "TrialData",
    "disturbance",
    "first_copies",
    "latency_trial",
    "make_schedule",
    "match",
    "pinned",
    "send_schedule",
    "sender_check",
    "throughput_trial",
]

NS = 1_000_000_000
_LEAD_NS = 10_000_000  # a schedule starts this far ahead: time to build the first packets
_MIX_BLOCK = 8  # IMIX runs: 7k, 4k and k packets per cycle
_SEQ_MASK = 0xFFFFFFFF
_T1_TOLERANCE_NS = 1_000  # NTP rounding of the echoed Sender Timestamp is under 1 ns
_MIN_LATENCY_PACKETS = 20

# The sender checks of the module docstring.
_MAX_LAG_NS = 20_000_000
_MIN_ACHIEVED = 0.98

# A busy machine (see the module docstring).
FOREIGN_CORES_LIMIT = 0.1
RUN_QUEUE_WAIT_LIMIT = 0.05

_COUNTERS = (
    "sent",
    "send_errors",
    "received",
    "malformed",
    "auth_failed",
    "unknown_peer",
    "behind_schedule",
    "max_lag_ns",
    "reflector_unsynced",
    "own_drops",  # replies the sender's own socket dropped, when it reports them (c_sender)
)

# A hook for tests: called with the session before each of its Sender runs (to inject a stall).
BeforeRun = Callable[[TestSession], None]
before_run: BeforeRun | None = None


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


@dataclass(slots=True)
class TrialData:
    """What one schedule sent and got back, checked against what was sent.

    `received` holds only genuine reflections (their sender sequence number and echoed Sender
    Timestamp match a packet of this schedule), with sequence numbers made relative to the
    schedule (packet i is i). `foreign` counts replies that parsed but match nothing we sent
    (a previous trial's stragglers, or a reflector that answers with something else).
    """

    sent: npt.NDArray[np.void]
    received: npt.NDArray[np.void]
    foreign: int
    counters: dict[str, int]
    sender_drops: int | None
    reflector_drops: int | None
    foreign_cores: float | None = None
    reflector_cpu_s: float | None = None
    reflector_wait: float | None = None
    sender_wait: float | None = None
    tx_kernel: npt.NDArray[np.int64] | None = None
    """With `send_schedule(tx_stamps=True)`: the kernel transmit stamp of each `sent` row
    (0: none reported), else None and `tx_note` says why."""
    tx_note: str | None = None

    @property
    def achieved_pps(self) -> float | None:
        n = self.sent.size
        if n < 2:
            return None
        t1 = self.sent["t1"]
        span = int(t1.max()) - int(t1.min())
        return (n - 1) * NS / span if span > 0 else None


@dataclass(slots=True)
class Thresholds:
    """When a reflection counts as lost (RFC 7680 §2.4: not received within Tmax)."""

    max_delay_ns: int
    wait_ns: int


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


def make_schedule(rate_pps: float, count: int) -> npt.NDArray[np.int64]:
    """`count` send times (realtime ns) at `rate_pps`, starting a moment from now."""
    start = clock.realtime_ns() + _LEAD_NS
    offsets = np.rint(np.arange(count, dtype=np.float64) * (NS / rate_pps)).astype(np.int64)
    return start + offsets


def match(
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


def _send_one(
    session: TestSession,
    size: PacketSize,
    schedule: npt.NDArray[np.int64],
    wait_ns: int,
    tx_stamps: bool = False,
) -> TrialData:
    """One session's share of a schedule, in the calling thread."""
    if not tx_stamps:
        return _send_chunks(session, size, schedule, wait_ns)
    with session.tx_stamps(size.octets) as note:
        data = _send_chunks(session, size, schedule, wait_ns)
    data.tx_note = note
    return data


def _send_chunks(
    session: TestSession, size: PacketSize, schedule: npt.NDArray[np.int64], wait_ns: int
) -> TrialData:
    n = int(schedule.size)
    first_seq = session.advance(n)
    before = socket_stats(inode=session.inode)
    sent_parts: list[npt.NDArray[np.void]] = []
    recv_parts: list[npt.NDArray[np.void]] = []
    tx_parts: list[npt.NDArray[np.int64]] | None = []
    totals = dict.fromkeys(_COUNTERS, 0)
    if before_run is not None:
        before_run(session)
    chunks = _chunks(size, n)
    for k, (octets, start, stop) in enumerate(chunks):
        try:
            result = session.stamped_sender(octets).run(
                schedule[start:stop],
                first_seq=(first_seq + start) & _SEQ_MASK,
                wait_ns=wait_ns if k == len(chunks) - 1 else 0,
            )
        except CSenderError as exc:  # a bound of --sender c, or it failed: one sentence
            raise BenchError(str(exc)) from None
        sent_parts.append(result.sent)
        recv_parts.append(result.received)
        tx = getattr(result, "tx_kernel_ns", None)  # the C sender's result has none
        if tx is None or tx_parts is None:
            tx_parts = None
        else:
            tx_parts.append(tx)
        for key, value in result.counters.items():
            if key == "max_lag_ns":
                totals[key] = max(totals[key], int(value))
            elif key in totals:
                totals[key] += int(value)
    after = socket_stats(inode=session.inode)
    sent = np.concatenate(sent_parts) if sent_parts else np.zeros(0, dtype=SENT_DTYPE)
    received = np.concatenate(recv_parts) if recv_parts else np.zeros(0, dtype=RECORD_DTYPE)
    valid, foreign = match(sent, received, first_seq)
    sent = sent.copy()
    sent["seq"] = (sent["seq"].astype(np.int64) - first_seq) & _SEQ_MASK
    drops = None if before is None or after is None else after.drops - before.drops
    if totals["own_drops"]:
        drops = (drops or 0) + totals["own_drops"]
    data = TrialData(sent, valid, foreign, totals, drops, None)
    if tx_parts:
        data.tx_kernel = np.concatenate(tx_parts)
    return data


def _merge(parts: list[TrialData]) -> TrialData:
    """Session k's packet j is packet j*N + k of the schedule (see the module docstring)."""
    if len(parts) == 1:
        return parts[0]
    n = len(parts)
    sent, received = [], []
    txs = [p.tx_kernel for p in parts]
    totals = dict.fromkeys(_COUNTERS, 0)
    drops: int | None = 0
    for k, part in enumerate(parts):
        s = part.sent.copy()
        s["seq"] = s["seq"].astype(np.int64) * n + k
        r = part.received.copy()
        r["sender_seq"] = r["sender_seq"].astype(np.int64) * n + k
        sent.append(s)
        received.append(r)
        for key, value in part.counters.items():
            totals[key] = max(totals[key], value) if key == "max_lag_ns" else totals[key] + value
        drops = None if drops is None or part.sender_drops is None else drops + part.sender_drops
    all_sent = np.concatenate(sent)
    order = np.argsort(all_sent["seq"], kind="stable")
    all_sent = all_sent[order]
    foreign = sum(p.foreign for p in parts)
    data = TrialData(all_sent, np.concatenate(received), foreign, totals, drops, None)
    if all(tx is not None for tx in txs):
        data.tx_kernel = np.concatenate([tx for tx in txs if tx is not None])[order]
    data.tx_note = next((p.tx_note for p in parts if p.tx_note), None)
    return data


def send_schedule(
    sessions: Sequence[TestSession] | TestSession,
    size: PacketSize,
    schedule: npt.NDArray[np.int64],
    *,
    wait_ns: int,
    target: Target | None = None,
    cpus: Sequence[int | None] = (),
    tx_stamps: bool = False,
) -> TrialData:
    """Send one packet per scheduled time and collect the reflections (see the docstring).

    `cpus[k]` pins session k's thread (k >= 1; session 0 runs in the calling thread, which the
    caller has pinned already).
    """
    if isinstance(sessions, TestSession):
        sessions = [sessions]
    refl_before = None if target is None else target.reflector_drops()
    sampler = CpuSampler(*_sampled(target, cpus))
    sampler.start()
    n = len(sessions)
    if n == 1:
        parts = [_send_one(sessions[0], size, schedule, wait_ns, tx_stamps)]
    else:
        parts = _send_threads(sessions, size, schedule, wait_ns, cpus, tx_stamps)
    cpu = sampler.stop()
    data = _merge(parts)
    refl_after = None if target is None else target.reflector_drops()
    if refl_before is not None and refl_after is not None:
        data.reflector_drops = refl_after - refl_before
    data.foreign_cores = cpu.foreign_cores
    data.reflector_cpu_s = cpu.reflector_cpu_s
    data.reflector_wait = cpu.reflector_wait
    data.sender_wait = cpu.sender_wait
    return data


def _sampled(
    target: Target | None, cpus: Sequence[int | None]
) -> tuple[int | None, frozenset[int] | None, int | None]:
    """(reflector pid, the trial's cores, the reflector's core): cores when all are pinned.

    A reflector on loopback that we did not start is found by its socket (`udp_owner_pid`).
    """
    reflector = {} if target is None else target.reflector
    pid = reflector.get("pid")
    if pid is None and target is not None:
        pid = _loopback_owner(target.address[0], target.address[1])
    core = reflector.get("cpu") if pid is not None else None
    cores: set[int | None] = set(cpus) or {None}
    if pid is not None:
        cores.add(core)
    if None in cores:
        return pid, None, core
    return pid, frozenset(c for c in cores if c is not None), core


_OWNERS: dict[tuple[str, int], int | None] = {}


def _loopback_owner(host: str, port: int) -> int | None:
    try:
        if not ipaddress.ip_address(host.split("%")[0]).is_loopback:
            return None
    except ValueError:
        return None
    key = (host, port)
    if key not in _OWNERS:
        _OWNERS[key] = udp_owner_pid(port)
    pid = _OWNERS[key]
    if pid is not None and not os.path.exists(f"/proc/{pid}"):
        _OWNERS[key] = pid = udp_owner_pid(port)  # restarted since
    return pid


def _send_threads(
    sessions: Sequence[TestSession],
    size: PacketSize,
    schedule: npt.NDArray[np.int64],
    wait_ns: int,
    cpus: Sequence[int | None],
    tx_stamps: bool = False,
) -> list[TrialData]:
    n = len(sessions)
    results: list[TrialData | BaseException | None] = [None] * n

    def work(k: int) -> None:
        cpu = cpus[k] if k < len(cpus) else None
        try:
            with pinned(cpu):
                results[k] = _send_one(sessions[k], size, schedule[k::n], wait_ns, tx_stamps)
        except BaseException as exc:  # re-raised in the calling thread below
            results[k] = exc

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(1, n)]
    for t in threads:
        t.start()
    work(0)
    for t in threads:
        t.join()
    out: list[TrialData] = []
    for r in results:
        if isinstance(r, BaseException):
            raise r
        assert r is not None
        out.append(r)
    return out


def sender_check(data: TrialData, offered_pps: float) -> tuple[bool, str | None]:
    """(offered, why the trial is not clean or None): see the module docstring."""
    c = data.counters
    sent = c["sent"]
    achieved = data.achieved_pps
    if c["send_errors"]:
        return False, f"{c['send_errors']} sends failed"
    if sent >= 20 and achieved is not None and achieved < _MIN_ACHIEVED * offered_pps:
        return False, f"the sender reached only {achieved:,.0f} pps"
    if data.sender_drops:
        return True, f"our receive buffer dropped {data.sender_drops} replies"
    if c["max_lag_ns"] > _MAX_LAG_NS:
        return True, f"the sender stalled for {c['max_lag_ns'] / 1e6:.1f} ms"
    return True, None


def sender_limit(data: TrialData, offered_pps: float) -> str | None:
    """Why this trial's sender was not clean, or None."""
    return sender_check(data, offered_pps)[1]


def first_copies(received: npt.NDArray[np.void]) -> npt.NDArray[np.void]:
    """One record per sender sequence number: the first to arrive."""
    if received.size == 0:
        return received
    by_arrival = received[np.argsort(received["t4"], kind="stable")]
    _, first = np.unique(by_arrival["sender_seq"], return_index=True)
    return by_arrival[first]


def _pct(share: float | None) -> float | None:
    return None if share is None else round(100.0 * share, 3)


def disturbance(data: TrialData) -> str | None:
    """Why other work on the machine may have cost this trial packets, in words, or None.

    See "A busy machine" in the module docstring for the two limits and the evidence.
    """
    why = []
    if data.foreign_cores is not None and data.foreign_cores > FOREIGN_CORES_LIMIT:
        why.append(f"other processes took {data.foreign_cores:.2f} cores")
    wait = data.reflector_wait
    if wait is not None and wait > RUN_QUEUE_WAIT_LIMIT:
        why.append(f"the reflector waited {100 * wait:.1f} % of the trial for its core")
    return "; ".join(why) or None


def _common(data: TrialData, rate: float, count: int) -> dict[str, Any]:
    """The fields every trial record has: what was asked, what the sender did."""
    c = data.counters
    offered, why = sender_check(data, rate)
    refl_cpu = data.reflector_cpu_s
    received = int(np.unique(data.received["sender_seq"]).size) if data.received.size else 0
    per_packet = None
    if refl_cpu is not None and received:
        per_packet = refl_cpu * 1e6 / received
    start = int(data.sent["t1"].min()) if data.sent.size else None
    return {
        "offered_pps": rate,
        "packets": count,
        "start_ns": start,
        "achieved_pps": data.achieved_pps,
        "behind_schedule": c["behind_schedule"],
        "max_lag_ns": c["max_lag_ns"],
        "sender_drops": data.sender_drops,
        "reflector_drops": data.reflector_drops,
        "offered": offered,
        "sender_limited": why is not None,
        "limit_reason": why,
        "foreign_cpu_cores": data.foreign_cores,
        "reflector_wait_pct": _pct(data.reflector_wait),
        "sender_wait_pct": _pct(data.sender_wait),
        "disturbed": disturbance(data) is not None,
        "disturbance": disturbance(data),
        "reflector_cpu_us_per_packet": per_packet,
    }


def throughput_trial(
    sessions: Sequence[TestSession],
    target: Target,
    size: PacketSize,
    rate: float,
    duration_s: float,
    thresholds: Thresholds,
    cpus: Sequence[int | None] = (),
) -> dict[str, Any]:
    """One trial at `rate`: the trial record of the report."""
    count = max(2, round(rate * duration_s))
    data = send_schedule(
        sessions,
        size,
        make_schedule(rate, count),
        wait_ns=thresholds.wait_ns,
        target=target,
        cpus=cpus,
    )
    firsts = first_copies(data.received)
    total = firsts["t4"].astype(np.int64) - firsts["t1"].astype(np.int64)
    ok = total <= thresholds.max_delay_ns
    in_time = int(np.count_nonzero(ok))
    c = data.counters
    sent = c["sent"]
    lost = sent - in_time
    # How many of the last `lost` packets sent were lost: all of them when the reflector fell
    # behind (a FIFO backlog loses the tail), about lost²/sent when losses are spread out.
    tail_ok = np.count_nonzero(firsts["sender_seq"][ok].astype(np.int64) >= sent - lost)
    record = _common(data, rate, count)
    record.update(
        sent=sent,
        received=int(firsts.size),
        late=int(firsts.size) - in_time,
        lost=lost,
        lost_at_end=max(0, lost - int(tail_ok)),
        loss_pct=100.0 * (sent - in_time) / sent if sent else 100.0,
        duplicates=int(data.received.size - firsts.size),
        foreign=data.foreign,
        send_errors=c["send_errors"],
        malformed=c["malformed"] + c["auth_failed"],
    )
    return record


_DIST_KEYS = ("min", "mean", "median", "p95", "p99", "max", "stddev", "count")


def _dist(d: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if d is None else {k: d[k] for k in _DIST_KEYS}


def latency_summary(
    data: TrialData, our_synced: bool
) -> tuple[dict[str, Any], npt.NDArray[np.int64]]:
    """The delay fields of a latency record, and its RTT samples (reflector time removed)."""
    c = data.counters
    reflector_synced = c["received"] > 0 and c["reflector_unsynced"] == 0
    synced = our_synced and reflector_synced
    summary = summarize(data.sent, data.received, clocks_synced=synced, stateful_reflector=False)
    firsts = first_copies(data.received)
    t1, t2, t3, t4 = (firsts[f].astype(np.int64) for f in ("t1", "t2", "t3", "t4"))
    counts, delay = summary["counts"], summary["delay"]
    fields = {
        "sent": counts["sent"],
        "received": counts["received"],
        "loss_pct": counts["loss_pct"] if counts["loss_pct"] is not None else 100.0,
        "duplicates": counts["duplicates"],
        "reordered": summary["reordering"]["round_trip"]["reordered"],
        "clocks_synced": synced,
        "rtt": _dist(delay["rtt"]),
        "forward": _dist(delay["forward"]),
        "backward": _dist(delay["backward"]),
        "residence": _dist(delay["residence"]),
        "ipdv": _dist(summary["ipdv"]["rtt"]),
        "kernel_stamps": None,
        "kernel_stamps_note": data.tx_note,
    }
    if data.tx_kernel is not None:
        fields["kernel_stamps"] = kernel_stamps(data.sent, data.received, data.tx_kernel)
    elif data.tx_note is None:
        fields["kernel_stamps_note"] = "kernel transmit stamps not asked for"
    return fields, (t4 - t1) - (t3 - t2)


def latency_trial(
    sessions: Sequence[TestSession],
    target: Target,
    size: PacketSize,
    rate: float,
    duration_s: float,
    thresholds: Thresholds,
    our_synced: bool,
    cpus: Sequence[int | None] = (),
) -> tuple[dict[str, Any], npt.NDArray[np.int64]]:
    """One latency trial at `rate`: its record, and its RTT samples for the CDF."""
    count = max(_MIN_LATENCY_PACKETS, round(rate * duration_s))
    data = send_schedule(
        sessions,
        size,
        make_schedule(rate, count),
        wait_ns=thresholds.wait_ns,
        target=target,
        cpus=cpus,
        tx_stamps=True,
    )
    record = _common(data, rate, count)
    fields, rtt = latency_summary(data, our_synced)
    record.update(fields)
    return record, rtt
