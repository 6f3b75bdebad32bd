"""The eleven RFC 4061 figures, each computed from one trial's events exactly as the RFC times it.

Pure functions over an event log (`trials.LogIndex`): no sockets, no clock. Each procedure is
one `Procedure` (its section, its topology, its start and end events in words) and one function
from a `Trial` to a `TrialResult`: the RFC's figure, the components it was subtracted from, and
the *proxies* a reader needs beside it when a daemon timer swamps the RFC's quantity (flood time
to the collector, FIB change seen by netlink, data-plane restoration, the figure minus the dead
interval). `verdicts` then says, over all trials, whether the figure measures the DUT or a timer.

Validity. A trial the tester could not drive as planned is *invalid* and never reported as the
DUT's figure; the driver repeats it. Invalid means: the driver said so (its own lag, a trigger
that did not happen); a start or end packet lacks its kernel stamp (a user-space stamp is
10-50 µs late and jitters with CPU load, research §4.3); the generator retransmitted the very
LSA whose ack ends the figure (the ack may then answer the retransmission); the pair sent "at
once" was more than `LAG_NS` apart; an end event never came within the trial.

Stamps. Receptions carry ``SO_TIMESTAMPNS`` kernel stamps and transmissions ``SO_TIMESTAMPING``
software stamps (the packet leaving the IP stack); link triggers are stamped in user space right
before the netlink request; FIB events when our watcher *received* the notification (a
cross-check only). All are CLOCK_REALTIME, so they subtract directly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ....ospf.logformat import Event
from .trials import Trial, lsa_type
from .verdicts import dut_timers

__all__ = [
    "LAG_NS",
    "PROCEDURES",
    "Procedure",
    "TrialResult",
    "evaluate",
]

LAG_NS = 1_000_000
"""The most two packets sent "at once" (RFC 4061 §5.1, §5.3) may be apart: 1 ms.

Beyond that the tester itself lagged (this is a shared 2-core machine) and the DUT may have
finished the first LSA before the second arrived, so the subtraction no longer isolates it."""

_NO_DR = "0.0.0.0"
_MAX_AGE = 3600  # RFC 2328 §B MaxAge


class Invalid(Exception):
    """The trial could not be driven or observed as planned; the message is the reason."""


@dataclass
class TrialResult:
    """One attempt at one procedure (all times in integer nanoseconds)."""

    proc: str
    trial: int
    lsas: int
    valid: bool
    reason: str | None = None
    value_ns: int | None = None
    parts: dict[str, int] = field(default_factory=dict)
    proxies: dict[str, int] = field(default_factory=dict)
    shared_ack: bool = False
    counts: dict[str, float] = field(default_factory=dict)
    dataplane: dict[str, Any] | None = None
    t_start_ns: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "proc": self.proc,
            "trial": self.trial,
            "lsas": self.lsas,
            "valid": self.valid,
            "reason": self.reason,
            "value_ns": self.value_ns,
            "parts_ns": dict(self.parts),
            "proxies_ns": dict(self.proxies),
            "shared_ack": self.shared_ack,
            "counts": dict(self.counts),
            "dataplane": self.dataplane,
            "t_start_ns": self.t_start_ns,
        }


@dataclass(frozen=True)
class Procedure:
    """One RFC 4061 test: what it times, and which timers can swamp it."""

    id: str
    title: str
    topology: str
    start: str
    end: str
    observed_at: str
    timers: tuple[str, ...]
    """Timers (canonical names, `verdicts.TIMER_NAMES`) that can dominate the figure."""
    design_timer: str | None
    """A timer the RFC's own definition includes (the dead interval in 6.4, 6.5, 6.8)."""
    proxies: Mapping[str, str]
    """Proxy name -> what it is, in words."""
    fn: Callable[[Trial], TrialResult]
    lsa_procedure: bool = False
    """Run at several LSA counts by the scaling option."""
    ends_on_origination: bool = False
    """The end event is an LSA the DUT originates (its router- or network-LSA): a DUT that
    originates only on a periodic timer (BIRD's tick) quantises the figure to it."""


# -- shared pieces ---------------------------------------------------------------------------


_T = TypeVar("_T")


def _require(ev: _T | None, what: str) -> _T:
    if ev is None:
        raise Invalid(f"no {what} within the trial")
    return ev


def _stamped(ev: Event, what: str) -> int:
    """The event's time, insisting on a kernel stamp for packets (module docstring)."""
    stamp = ev.get("stamp")
    if ev.event == "tx" and stamp != "kernel-tx":
        raise Invalid(f"the kernel transmit stamp of {what} is missing")
    if ev.event == "rx" and stamp != "kernel-rx":
        raise Invalid(f"the kernel receive stamp of {what} is missing")
    return ev.t_ns


def _step(trial: Trial, name: str) -> Event:
    ev = trial.step(name)
    if ev is None:
        raise Invalid(f"the driver's {name!r} step is not in the log")
    return ev


def _single_send(trial: Trial, router: str, step: Event, what: str) -> tuple[Event, int]:
    """The one LSU that carried the step's LSA, and its send stamp."""
    key, seq = step.get("key"), step.get("seq")
    if not isinstance(key, str):
        raise Invalid(f"the {what} step names no LSA")
    sends = trial.lsa_sends(router, key, seq)
    if not sends:
        raise Invalid(f"{router} never sent the {what} ({key})")
    return sends[0], _stamped(sends[0], f"the {what}")


def _acked(
    trial: Trial,
    router: str,
    step: Event,
    sent: Event,
    what: str,
    *,
    requested_ok: bool = False,
) -> tuple[Event, int]:
    """The DUT's first ack of the step's LSA after `sent`; invalid if we retransmitted first.

    `requested_ok` (the adjacency procedures, whose end event is "the ack for the last LSA",
    whichever copy it answers): a resend that answers the DUT's own LS request again (it
    dropped or ignored our LSU, and its request timer ran) is the DUT's doing and part of its
    figure; only our retransmission (RxmtInterval, flagged in the log) invalidates."""
    key, seq = step["key"], step.get("seq")
    ack = _require(trial.first_ack(router, key, seq, after=sent.t_ns), f"ack for the {what}")
    # Only a resend to the same neighbour counts: the same instance flooded on our other
    # interfaces (to the collector in T2) is not a retransmission towards the DUT.
    resent = [
        e
        for e in trial.lsa_sends(router, key, seq)
        if sent.t_ns < e.t_ns < ack.t_ns
        and e.get("ifname") == sent.get("ifname")
        and (not requested_ok or e.get("retransmission"))
    ]
    if resent:
        raise Invalid(f"{router} retransmitted the {what} before the DUT acked it")
    return ack, _stamped(ack, f"the ack for the {what}")


def _fib_after(
    trial: Trial, t_ns: int, prefix: str | None = None, event: str | None = None
) -> Event | None:
    for e in trial.events(source="fib"):
        if e.t_ns < t_ns or e.event not in ("route-add", "route-del"):
            continue
        if (prefix is None or e.get("prefix") == prefix) and (event is None or e.event == event):
            return e
    return None


def _healed(trial: Trial, t_start: int) -> int | None:
    """When link 1 came back in a 6.7/6.8 trial (the first `link up` after the start)."""
    ups = [e.t_ns for e in trial.events(source="link", event="up") if e.t_ns > t_start]
    return ups[0] if ups else None


def dataplane(trial: Trial, t_start: int, until: int | None = None) -> dict[str, Any] | None:
    """Loss window of the TWAMP stream through the DUT in this trial, from the probe's events.

    ``window_ns``: first packet lost to the first one answered after the last run of losses
    (both the sender's transmit times); ``lost``: packets lost; ``loss_time_ns``: lost / offered
    rate, the loss in time; ``restored_after_ns``: first restored packet's send time minus the
    trial's start event (the data-plane convergence time); None when the probe did not run.

    The driver marks where the RFC's procedure ended (step ``procedure-end``) and keeps the
    trial open, bounded, until the stream flows again: ``restored_after_end_ns`` is then how
    long after the procedure's end the DUT forwarded again (the RFC's end event came first),
    and `_dp_evidence` says from the log why (route install, the DUT's adjacency state).
    """
    probe = trial.index.between(
        trial.index.times[0] if trial.index.times else 0, trial.t1, source="probe", event="start"
    )
    in_trial = trial.events(source="probe")
    if not probe or not any(e.event in ("sent", "rcvd", "lost") for e in in_trial):
        return None
    rate = float(probe[-1].get("rate_pps") or 0.0)
    lost = [e for e in in_trial if e.event == "lost" and e.t_ns >= t_start]
    if until is not None:
        # 6.7/6.8: the failure's loss window ends where we heal link 1; packets lost after that
        # (the DUT moving back to link 1) are another event, counted apart
        after = [e for e in lost if e.t_ns >= until]
        lost = [e for e in lost if e.t_ns < until]
    restored = [e for e in in_trial if e.event == "restored" and e.t_ns >= t_start]
    out: dict[str, Any] = {"rate_pps": rate, "lost": len(lost)}
    if until is not None:
        out["lost_after_heal"] = len(after)
    # The DUT's next hop towards the probe's source, asked before the trigger and after the
    # reroute (`lab route-get`, 6.7/6.8): the path whose loss window this is.
    path = [e.get("dev") or "none" for e in trial.events(source="lab", event="route-get")]
    if path:
        out["path"] = path
    end = trial.step("procedure-end")
    if end is not None:
        out["procedure_end_after_ns"] = end.t_ns - t_start
        if end.get("dataplane_wait_s") is not None:
            out["wait_s"] = float(end["dataplane_wait_s"])
    if not lost:
        out.update(window_ns=0, loss_time_ns=0, restored=True, restored_after_ns=None)
        return out
    first, last = lost[0].t_ns, lost[-1].t_ns
    after_last = [e for e in restored if e.t_ns > last]
    out["first_lost_after_ns"] = first - t_start
    out["loss_time_ns"] = round(len(lost) / rate * 1e9) if rate > 0 else None
    t_back = after_last[0].t_ns if after_last else None
    if t_back is not None:
        out.update(window_ns=t_back - first, restored=True, restored_after_ns=t_back - t_start)
    else:
        out.update(window_ns=None, restored=False, restored_after_ns=None)
    if end is not None and (t_back is None or t_back > end.t_ns):
        if t_back is not None:
            out["restored_after_end_ns"] = t_back - end.t_ns
        out.update(_dp_evidence(trial, probe[-1], t_start, first, end.t_ns, t_back))
    elif end is None and t_back is None:
        # A log from before the procedure-end step: the trial's end mark was the procedure's
        # end, and the evidence is read as of then.
        out.update(_dp_evidence(trial, probe[-1], t_start, first, trial.t1, None))
    return out


_ADJ_FRR = re.compile(r"AdjChg: Nbr ([\d.]+).*?(?:: (\w+) -> (\w+)| from (\w+) to (\w+))")
_ADJ_BIRD = re.compile(r"[Nn]eighbor ([\d.]+) .*changed state from (\w+) to (\w+)")


def _adj_change(text: str) -> tuple[str, str] | None:
    """(neighbour, new state) from an FRR `AdjChg` or a BIRD state-change log line."""
    m = _ADJ_FRR.search(text)
    if m:
        return m.group(1), m.group(3) or m.group(5)
    m = _ADJ_BIRD.search(text)
    return (m.group(1), m.group(3)) if m else None


def _dp_evidence(
    trial: Trial, probe: Event, t_start: int, t_lost: int, t_end: int, t_back: int | None
) -> dict[str, Any]:
    """Why the stream was still broken when the RFC's procedure ended, from the log alone: when
    the DUT installed its route to either end of the probe (netlink), and which of the DUT's
    adjacencies were not Full at the procedure's end (the DUT's own log), and when they were.
    """
    ends = {f"{probe.get('src')}/32", f"{probe.get('dst')}/32"}
    out: dict[str, Any] = {}
    adds = [
        e
        for e in trial.events(source="fib")
        if e.event == "route-add" and e.get("prefix") in ends and e.t_ns >= t_lost
    ]
    if adds:
        out["route_installed_after_ns"] = adds[0].t_ns - t_start
        out["route_installed_prefix"] = adds[0].get("prefix")
    state: dict[str, tuple[str, int]] = {}
    later_full: dict[str, int] = {}
    for e in trial.events(source="dut-log"):
        if e.t_ns < t_start:
            continue
        change = _adj_change(str(e.get("text", "")))
        if change is None:
            continue
        nbr, new = change
        if e.t_ns <= t_end:
            state[nbr] = (new, e.t_ns)
        elif new == "Full" and nbr not in later_full:
            later_full[nbr] = e.t_ns - t_start
    stuck = {n: st for n, (st, _) in state.items() if st != "Full"}
    if stuck:
        out["dut_adjacency_at_end"] = stuck
        full = {n: later_full[n] for n in stuck if n in later_full}
        if full:
            out["dut_full_after_ns"] = full
    return out


def _result(
    trial: Trial, value: int, t_start: int, *, dp_until: int | None = None, **kw: Any
) -> TrialResult:
    return TrialResult(
        proc=trial.proc,
        trial=trial.trial,
        lsas=trial.lsas,
        valid=True,
        value_ns=value,
        t_start_ns=t_start,
        dataplane=dataplane(trial, t_start, dp_until),
        **kw,
    )


def _flood_proxy(trial: Trial, key: str, seq: int | None, t_sent: int) -> int | None:
    """Our send of `key` to its first receipt at the collector from the DUT (upper bound on the
    DUT's per-LSA processing: it includes one more hop's transmit and receive)."""
    col, dut = trial.param("collector"), trial.param("dut_rid")
    if not col:
        return None
    got = trial.first_lsa_rx(
        col,
        lambda lsa: lsa.get("key") == key and (seq is None or lsa.get("seq", seq) >= seq),
        after=t_sent,
        rid=dut,
    )
    return None if got is None else got[0].t_ns - t_sent


# -- §5.1 Time required to process an LSA ----------------------------------------------------


def _dup_time(trial: Trial, gen: str, name: str) -> int:
    """dupLSAprocTime (RFC 4061 §5.1): a duplicate's send to its ack."""
    step = _step(trial, name)
    sent, t_tx = _single_send(trial, gen, step, f"duplicate LSA ({name})")
    _, t_ack = _acked(trial, gen, step, sent, f"duplicate LSA ({name})")
    return t_ack - t_tx


def fig_5_1(trial: Trial) -> TrialResult:
    """newLSAprocTime − dupLSAprocTime.

    (a) a duplicate of an LSA the DUT holds, alone: its ack time is dupLSAprocTime; (b) a new
    LSA and at once a duplicate of a *different* LSA: the duplicate's ack, timed from the new
    LSA's send, is newLSAprocTime, because the DUT processes the new LSA before the duplicate.
    If the duplicate's ack rides in the same LSAck packet as the new LSA's, the DUT held it for
    its delayed-ack timer and the subtraction measures that timer (``shared_ack``).
    """
    gen = trial.param("observer", "gen")
    dup_ns = _dup_time(trial, gen, "dup")
    new, dup2 = _step(trial, "new"), _step(trial, "dup2")
    new_sent, t_new = _single_send(trial, gen, new, "new LSA")
    dup2_sent, t_dup2 = _single_send(trial, gen, dup2, "second duplicate")
    gap = t_dup2 - t_new
    if not 0 <= gap <= LAG_NS:
        raise Invalid(f"the duplicate followed the new LSA by {gap / 1e6:.3f} ms (tester lag)")
    ack2, t_ack2 = _acked(trial, gen, dup2, dup2_sent, "second duplicate")
    new_ack = trial.first_ack(gen, new["key"], new.get("seq"), after=new_sent.t_ns)
    new_ns = t_ack2 - t_new
    proxies: dict[str, int] = {"dup_ack": dup_ns}
    if new_ack is not None:
        proxies["new_lsa_ack"] = new_ack.t_ns - t_new
    flood = _flood_proxy(trial, new["key"], new.get("seq"), t_new)
    if flood is not None:
        proxies["flood_to_collector"] = flood
    fib = _fib_after(trial, t_new, new.get("prefix"))
    if fib is not None:
        proxies["fib"] = fib.t_ns - t_new
    return _result(
        trial,
        new_ns - dup_ns,
        t_new,
        parts={"dupLSAprocTime": dup_ns, "newLSAprocTime": new_ns, "gap": gap},
        proxies=proxies,
        shared_ack=new_ack is ack2,
    )


# -- §5.2 Flooding time ----------------------------------------------------------------------


def fig_5_2(trial: Trial) -> TrialResult:
    """Last LSA at the collector via the DUT − last LSA at the collector straight from the
    generator (T2). Without the generator–collector link the reference is the generator's send
    of its last LSA (``parts['method']`` says which: 1 direct, 0 send stamp)."""
    gen = trial.param("generator", "gen")
    col = trial.param("observer", "col")
    dut, gen_if = trial.param("dut_rid"), trial.param("ifname")
    direct_if, col_if = trial.param("direct_ifname"), trial.param("col_ifname")
    burst = _step(trial, "burst")

    def of_burst(e: Event) -> list[Mapping[str, Any]]:
        # The burst is AS-external-LSAs: our router-LSA (its E bit set by the first burst) and
        # LSAs we pass on from the collector (T2) are no part of it, and the latter never go
        # back over the direct link, whose copy of every burst LSA the RFC's reference needs.
        return [lsa for lsa in e.get("lsas", ()) if lsa_type(str(lsa.get("key", ""))) == 5]

    sends = [
        e for e in trial.packets(gen, "tx", "lsu", ifname=gen_if, after=burst.t_ns) if of_burst(e)
    ]
    if not sends:
        raise Invalid("the generator sent no LSU after the burst step")
    # Only the last LSU of the burst sets the RFC figure's reference: it needs its kernel
    # stamp. The first one only starts the per-LSA span (hundreds of ms at 10,000 LSAs, where
    # a user stamp's tens of µs do not matter); the others only say which LSAs went out (an
    # overloaded sender loses some transmit stamps, research §4.3).
    first_tx: dict[str, tuple[int, int]] = {}
    octets = 0
    for e in sends:
        t = e.t_ns
        octets += int(e.get("len", 0))
        for lsa in of_burst(e):
            first_tx.setdefault(lsa["key"], (t, int(lsa["seq"])))
    n = len(first_tx)
    t_first = min(t for t, _ in first_tx.values())
    t_last_tx = max(t for t, _ in first_tx.values())
    last = next(e for e in reversed(sends) if e.t_ns == t_last_tx)
    _stamped(last, "the burst's last LSU")
    via_dut = _last_arrivals(trial, col, first_tx, rid=dut, ifname=col_if, after=t_first)
    if len(via_dut) < n:
        raise Invalid(f"{n - len(via_dut)} of {n} LSAs never reached the collector via the DUT")
    t_last_dut = max(via_dut.values())
    # A key sent twice before the last flood arrived: our retransmission, not the DUT's pace.
    early = sum(len(of_burst(e)) for e in sends if e.t_ns < t_last_dut)
    if early > n:
        raise Invalid("the generator retransmitted LSAs of the burst before it was flooded")
    method, ref = 0, t_last_tx
    parts: dict[str, int] = {}
    if direct_if:
        direct = _last_arrivals(
            trial, col, first_tx, rid=trial.param("generator_rid"), ifname=direct_if, after=t_first
        )
        if len(direct) == n:
            method, ref = 1, max(direct.values())
            parts["rfc_uncorrected"] = t_last_dut - ref
            skew = _send_skew(trial, gen, first_tx, t_last_tx)
            if skew is not None:
                # Our generator sends the burst on its two links one after the other, not "at
                # once": the direct copy of the last LSA left `skew` later than the copy to the
                # DUT. The reference is when it would have arrived had both left together.
                ref -= skew
                parts["send_skew"] = skew
    value = t_last_dut - ref
    proxies: dict[str, int] = {"first_at_collector": min(via_dut.values()) - t_first}
    fibs = [e for e in trial.events(source="fib") if e.event == "route-add" and e.t_ns >= t_first]
    counts: dict[str, float] = {"lsas": n, "lsus": len(sends), "octets": octets}
    if t_last_tx > t_first:
        counts["send_rate_lsa_s"] = n / ((t_last_tx - t_first) / 1e9)
    if fibs:
        proxies["fib_last"] = fibs[-1].t_ns - t_first
        counts["fib_routes"] = len(fibs)
        span = fibs[-1].t_ns - t_first
        if span > 0:
            counts["fib_rate_routes_s"] = len(fibs) / (span / 1e9)
    # The DUT's cost per LSA: from our first send to the last LSA at the collector, over N.
    # When the last flood follows our last send closely, the DUT kept pace with our sender and
    # this is an upper bound set by the sender (`sender_bound` 1), not the DUT's limit.
    span = t_last_dut - t_first
    counts["span_ns"] = span
    counts["per_lsa_ns"] = span / n
    counts["sender_bound"] = 1 if span > 0 and (t_last_dut - t_last_tx) < 0.1 * span else 0
    parts.update(method=method, last_sent_to_last_flooded=t_last_dut - t_last_tx)
    return _result(
        trial,
        value,
        t_first,
        parts=parts,
        proxies=proxies,
        counts=counts,
    )


def _send_skew(
    trial: Trial, gen: str, wanted: Mapping[str, tuple[int, int]], t_last_tx: int
) -> int | None:
    """Our send of the burst's last LSA on the generator-collector link minus our send of it
    towards the DUT (both kernel stamps), or None when that link's sends are not in the log."""
    gen_direct_if = trial.param("generator_direct_ifname")
    if not gen_direct_if:
        return None
    last = None
    seen: set[str] = set()
    for e in trial.packets(gen, "tx", "lsu", ifname=gen_direct_if, after=trial.t0):
        for lsa in e.get("lsas", ()):
            k = lsa.get("key")
            if k in wanted and k not in seen and lsa.get("seq", 0) >= wanted[k][1]:
                seen.add(k)
                last = e
    if last is None or len(seen) < len(wanted):
        return None
    return _stamped(last, "the burst's last LSU on the direct link") - t_last_tx


def _last_arrivals(
    trial: Trial,
    router: str,
    wanted: Mapping[str, tuple[int, int]],
    *,
    rid: str | None,
    ifname: str | None,
    after: int,
) -> dict[str, int]:
    """First receipt time of each wanted (key, seq or newer) at `router` from `rid`."""
    seen: dict[str, int] = {}
    for e in trial.packets(router, "rx", "lsu", ifname=ifname, after=after):
        if rid is not None and e.get("rid") != rid:
            continue
        for lsa in e.get("lsas", ()):
            k = lsa.get("key")
            if k in wanted and k not in seen and lsa.get("seq", 0) >= wanted[k][1]:
                seen[k] = _stamped(e, "an LSU at the collector")
    return seen


# -- §5.3 SPF time -----------------------------------------------------------------------------


def fig_5_3(trial: Trial) -> TrialResult:
    """totalSPFtime − dupLSAprocTime: an LSA that changes a link cost, right after it a duplicate
    in its own LSU; the duplicate's ack, timed from the trigger's send, includes the SPF run."""
    gen = trial.param("observer", "gen")
    dup_ns = _dup_time(trial, gen, "dup0")
    trig, dup = _step(trial, "trigger"), _step(trial, "dup")
    trig_sent, t_trig = _single_send(trial, gen, trig, "trigger LSA")
    dup_sent, t_dup = _single_send(trial, gen, dup, "duplicate after the trigger")
    if dup_sent is trig_sent:
        raise Invalid("the trigger and the duplicate went in one LSU (the RFC wants two)")
    gap = t_dup - t_trig
    if not 0 <= gap <= LAG_NS:
        raise Invalid(f"the duplicate followed the trigger by {gap / 1e6:.3f} ms (tester lag)")
    ack, t_ack = _acked(trial, gen, dup, dup_sent, "duplicate after the trigger")
    trig_ack = trial.first_ack(gen, trig["key"], trig.get("seq"), after=t_trig)
    total = t_ack - t_trig
    proxies: dict[str, int] = {"dup_ack": dup_ns}
    if trig_ack is not None:
        proxies["trigger_ack"] = trig_ack.t_ns - t_trig
    fib = _fib_after(trial, t_trig, trig.get("prefix"))
    if fib is not None:
        proxies["fib"] = fib.t_ns - t_trig
    counts: dict[str, float] = {}
    white = _spf_whitebox(trial, t_trig)
    if white is not None:
        proxies["spf_whitebox"], counts["spf_runs"], counts["spf_precision_us"] = white
    return _result(
        trial,
        total - dup_ns,
        t_trig,
        parts={"totalSPFtime": total, "dupLSAprocTime": dup_ns, "gap": gap},
        proxies=proxies,
        shared_ack=trig_ack is ack,
        counts=counts,
    )


def _spf_whitebox(trial: Trial, t_trig: int) -> tuple[int, int, int] | None:
    """RFC 4061 §5.3's white-box variant: the DUT's own "last SPF duration", read after the
    trial (``dut``/``spf``), when it belongs to this trial's trigger: at least one SPF ran
    since the reading before the trigger (``runs_before``), and the last one started after the
    trigger was sent (its start is the reading's time minus FRR's "executed ... ago", within
    that value's printed precision). Returns (duration ns, SPF runs in the trial, precision
    µs), or None (no reading: a DUT that exposes none, or an SPF not caused by the trigger)."""
    readings = trial.events("dut", "spf")
    if not readings:
        return None
    ev = readings[-1]
    dur, runs, before = ev.get("duration_us"), ev.get("runs"), ev.get("runs_before")
    if not isinstance(dur, int) or not isinstance(runs, int) or not isinstance(before, int):
        return None
    if runs <= before:
        return None  # no SPF ran in the trial: the duration is an older run's
    ago, slack = ev.get("ago_us"), ev.get("ago_precision_us") or 0
    if isinstance(ago, int) and ev.t_ns - (ago + slack) * 1000 < t_trig:
        return None  # the last run started before our trigger: not its SPF
    return dur * 1000, runs - before, int(ev.get("precision_us") or 0)


# -- §6.1-6.3 Adjacency -------------------------------------------------------------------------


def _dut_hello(
    trial: Trial,
    router: str,
    after: int,
    ifname: str | None = None,
    pred: Callable[[Event], bool] | None = None,
) -> Event | None:
    dut = trial.param("dut_rid")
    for e in trial.packets(router, "rx", "hello", ifname=ifname, after=after):
        if (dut is None or e.get("rid") == dut) and (pred is None or pred(e)):
            return e
    return None


def _link_event(trial: Trial, state: str, how: str) -> Event:
    for e in trial.events(source="link", event=state):
        if e.get("how") == how:
            return e
    raise Invalid(f"no link {state} ({how}) within the trial")


def _adjacency(trial: Trial, t_start: int, start_what: str) -> TrialResult:
    """Start → the DUT's ack for the last LSA the generator sent it (RFC 4061 §6.1-6.3)."""
    gen, ifname = trial.param("observer", "gen"), trial.param("ifname")
    sends = trial.packets(gen, "tx", "lsu", ifname=ifname, after=t_start)
    first: dict[str, tuple[Event, int]] = {}
    for e in sends:
        for lsa in e.get("lsas", ()):
            first.setdefault(lsa["key"], (e, int(lsa["seq"])))
    if not first:
        raise Invalid(f"the generator sent the DUT no LSA after the {start_what}")
    last_key = max(first, key=lambda k: first[k][0].t_ns)
    last_ev, last_seq = first[last_key]
    _stamped(last_ev, "the generator's last LSA")
    step = Event(last_ev.t_ns, "lab", "mark", {"key": last_key, "seq": last_seq})
    _, t_end = _acked(trial, gen, step, last_ev, "generator's last LSA", requested_ok=True)
    acks = [trial.first_ack(gen, k, s, after=ev.t_ns) for k, (ev, s) in first.items()]
    proxies: dict[str, int] = {}
    if all(a is not None for a in acks):
        proxies["all_acked"] = max(a.t_ns for a in acks if a is not None) - t_start
    full = [e for e in trial.events(source=gen, event="nbr") if e.t_ns >= t_start]
    full = [e for e in full if e.get("new") == "Full"]
    if full:
        proxies["full_at_generator"] = full[0].t_ns - t_start
    dut = trial.param("dut_rid")
    col = trial.param("collector")
    if col and dut:
        key = f"1/{dut}/{dut}"
        before = trial.newest_seq_before(key, t_start)
        got = trial.first_lsa_rx(
            col,
            lambda lsa: lsa.get("key") == key and (before is None or lsa.get("seq", 0) > before),
            after=t_start,
            rid=dut,
        )
        if got is not None:
            proxies["dut_router_lsa_at_collector"] = got[0].t_ns - t_start
    fibs = [e for e in trial.events(source="fib") if e.event == "route-add" and e.t_ns >= t_start]
    if fibs:
        proxies["fib_last"] = fibs[-1].t_ns - t_start
    dbds = [e for e in trial.packets(gen, "rx", "dbd", after=t_start) if e.get("rid") == dut]
    parts: dict[str, int] = {}
    if dbds:
        parts["last_dut_dbd"] = dbds[-1].t_ns - t_start
    return _result(
        trial,
        t_end - t_start,
        t_start,
        parts=parts,
        proxies=proxies,
        counts={"lsas_sent": len(first), "lsus": len(sends)},
    )


def fig_6_1(trial: Trial) -> TrialResult:
    """Carrier up at the generator → the DUT's ack for the generator's last LSA."""
    up = _link_event(trial, "up", "carrier")
    return _adjacency(trial, up.t_ns, "link up")


def fig_6_2(trial: Trial) -> TrialResult:
    """The DUT's first Hello (OSPF just enabled on its interface) → its ack for our last LSA."""
    gen, enable = trial.param("observer", "gen"), _step(trial, "ospf-enable")
    hello = _require(_dut_hello(trial, gen, enable.t_ns, trial.param("ifname")), "DUT Hello")
    return _adjacency(trial, _stamped(hello, "the DUT's first Hello"), "DUT's first Hello")


def fig_6_3(trial: Trial) -> TrialResult:
    """As 6.2, with the generator's LSAs already in the DUT's database (learnt via the
    collector while the DUT–generator link was down): first DUT Hello after link up → the ack
    for our last LSA. The DUT's last DBD is noted in ``parts``."""
    gen, up = trial.param("observer", "gen"), _link_event(trial, "up", "carrier")
    hello = _require(_dut_hello(trial, gen, up.t_ns, trial.param("ifname")), "DUT Hello")
    return _adjacency(trial, _stamped(hello, "the DUT's first Hello"), "DUT's first Hello")


# -- §6.4-6.6 Broadcast: DR election, initial convergence -------------------------------------


def _dut_network_lsa(trial: Trial, router: str, t_start: int) -> int:
    """The first network-LSA the DUT originated after `t_start`, received at `router`.

    "Originated" excludes a flush (MaxAge, RFC 2328 §14.1: a restarted DUT ages out its old
    network-LSA) and a re-flood of the instance current before the start; a *different*
    sequence number counts even if lower, because a restarted DUT begins again at
    InitialSequenceNumber (§12.1.6) before §13.4 lifts it."""
    dut = trial.param("dut_rid")
    before: dict[str, int | None] = {}

    def is_new(lsa: Mapping[str, Any]) -> bool:
        key = str(lsa.get("key", ""))
        if lsa_type(key) != 2 or not key.endswith(f"/{dut}") or lsa.get("age", 0) >= _MAX_AGE:
            return False
        if key not in before:
            before[key] = trial.newest_seq_before(key, t_start)
        return lsa.get("seq") != before[key]

    got = _require(trial.first_lsa_rx(router, is_new, after=t_start), "network-LSA from the DUT")
    return _stamped(got[0], "the DUT's network-LSA")


def _dead_ns(trial: Trial, router: str) -> int | None:
    """The DUT's RouterDeadInterval, from its own Hellos (authoritative: what it runs with)."""
    for e in trial.index.by_source(router):
        if e.event == "rx" and e.get("type") == "hello" and e.get("rid") == trial.param("dut_rid"):
            d = e.get("dead_s")
            if d:
                return int(d) * 1_000_000_000
    return None


def _hellos_before(trial: Trial, router: str, ifname: str | None, t_ns: int) -> list[Event]:
    """The router's Hellos on `ifname` in the last two minutes up to `t_ns`: the last one may
    precede the trial's start mark (a Hello goes out once per HelloInterval)."""
    return [
        e
        for e in trial.index.between(t_ns - 120 * 1_000_000_000, t_ns, source=router, event="tx")
        if e.get("type") == "hello" and (ifname is None or e.get("ifname") == ifname)
    ]


def fig_6_4(trial: Trial) -> TrialResult:
    """R1's (the DR's) last Hello → the DUT's (the BDR's) first network-LSA, observed at R2.
    Includes the DUT's RouterDeadInterval by the RFC's own definition."""
    r1, r2 = trial.param("r1", "r1"), trial.param("observer", "r2")
    stop = _step(trial, "stop-hellos")
    hellos = _hellos_before(trial, r1, trial.param("r1_ifname"), stop.t_ns + LAG_NS)
    if not hellos:
        raise Invalid("R1 sent no Hello before it stopped")
    later = trial.packets(
        r1, "tx", "hello", ifname=trial.param("r1_ifname"), after=stop.t_ns + LAG_NS + 1
    )
    if later:
        raise Invalid("R1 kept sending Hellos after the stop")
    t_start = _stamped(hellos[-1], "R1's last Hello")
    t_end = _dut_network_lsa(trial, r2, t_start)
    return _with_dead(trial, r2, t_end - t_start, t_start)


def _with_dead(
    trial: Trial, router: str, value: int, t_start: int, dp_until: int | None = None
) -> TrialResult:
    dead = _dead_ns(trial, router)
    proxies = {} if dead is None else {"minus_dead_interval": value - dead}
    parts = {} if dead is None else {"dead_interval": dead}
    return _result(trial, value, t_start, parts=parts, proxies=proxies, dp_until=dp_until)


def _r1_up(trial: Trial) -> int:
    step = trial.step("r1-up")
    if step is not None:
        return step.t_ns
    return _link_event(trial, "up", "carrier").t_ns


def fig_6_5(trial: Trial) -> TrialResult:
    """First DUT Hello received by R1 (R1's link just up) → the DUT's first network-LSA.
    Includes the Wait timer (= RouterDeadInterval, RFC 2328 §9.4)."""
    r1 = trial.param("observer", "r1")
    hello = _require(_dut_hello(trial, r1, _r1_up(trial)), "DUT Hello at R1")
    t_start = _stamped(hello, "the DUT's first Hello")
    return _with_dead(trial, r1, _dut_network_lsa(trial, r1, t_start) - t_start, t_start)


def fig_6_6(trial: Trial) -> TrialResult:
    """First DUT Hello that lists a DR → the DUT's first network-LSA (the Wait timer is over).

    The end event is the same as 6.5's (the first network-LSA since R1 came up). A DUT may
    originate it *before* its next periodic Hello names the DR: the figure is then negative,
    and reported as such (the verdict says what it means)."""
    r1 = trial.param("observer", "r1")
    t_up = _r1_up(trial)
    hello = _require(
        _dut_hello(trial, r1, t_up, pred=lambda e: e.get("dr", _NO_DR) != _NO_DR),
        "DUT Hello listing a DR",
    )
    t_start = _stamped(hello, "the DUT's Hello listing a DR")
    # Searched from the DUT's first Hello (6.5's start): nothing of this DUT comes before it,
    # and a DUT restarted for the trial is known to be up by then.
    first = _require(_dut_hello(trial, r1, t_up), "DUT Hello at R1")
    t_end = _dut_network_lsa(trial, r1, first.t_ns)
    return _result(trial, t_end - t_start, t_start)


# -- §6.7-6.8 Link down ---------------------------------------------------------------------------


def _link1_ready(trial: Trial, gen: str, t_start: int) -> None:
    """RFC 4061 §6.7/§6.8 start from Full on both links: our neighbour state on link 1 at the
    trigger must be Full, else the DUT had nothing to lose there and the "new router-LSA" is
    some other change (an adjacency forming later)."""
    link1 = trial.param("link1")
    states = [
        e
        for e in trial.index.between(
            0, t_start, source=trial.param("link1_router", gen), event="nbr"
        )
        if e.get("ifname") == link1
    ]
    if states and states[-1].get("new") != "Full":
        raise Invalid(
            f"the adjacency on link 1 was {states[-1].get('new')}, not Full, at the start"
        )


def _link1_path(trial: Trial, t_trigger: int) -> None:
    """In our lab (``dut_link1`` set) the driver asks the DUT's kernel, before the trigger, where
    it sends the probe's replies (`Lab.route_get`). RFC 4061 §6.7/§6.8 start from a converged
    DUT, and the loss window is link 1's only if that answer is link 1: a DUT routing the probe
    over link 2 already, or with no route at all (BIRD once, in CI), has
    not converged on the starting topology, and its trial measures something else."""
    dut_if = trial.param("dut_link1")
    if dut_if is None:
        return  # --dut external: the router's table is not ours to read
    gets = [e for e in trial.events(source="lab", event="route-get") if e.t_ns < t_trigger]
    if not gets:
        raise Invalid("the DUT's route to the probe's source was not read before the failure")
    dev = gets[-1].get("dev")
    if dev != dut_if:
        where = f"over {dev}" if dev else f"nowhere ({gets[-1].get('error') or 'no device'})"
        raise Invalid(
            f"before the failure the DUT routed the probe's source {where}, not over link 1 "
            f"({dut_if}): it had not converged on the starting topology"
        )


_RFC_MIN_LS_ARRIVAL_NS = 1_000_000_000
_RFC_MIN_LS_INTERVAL_NS = 5_000_000_000
"""RFC 2328 Appendix B's MinLSArrival and MinLSInterval, for a DUT whose own are not known."""


def _own_router_lsa(tx: Event, lsa: Mapping[str, Any]) -> bool:
    rid = tx.get("rid")
    return bool(lsa.get("key") == f"1/{rid}/{rid}")


def _settled(trial: Trial, t_trigger: int, react_ns: int = 0) -> None:
    """Neither of the DUT's LSA rate limits may reach into the trial (`drivers._await_settled`
    waits for the same before the trigger):

    * our router-LSA sent within the DUT's MinLSArrival before the failure: the DUT discards
      our next instance (RFC 2328 §13 (5a)) and takes it only from our retransmission an
      RxmtInterval later, and a DUT that reroutes on it (BIRD) loses the stream for that long
      (CI: 4.46 s where a tick was due);
    * the DUT's previous router-LSA within its MinLSInterval before the failure (§12.4): its
      new one waits for that timer, and the figure measures the timer's remainder (BIRD: 5 s
      from the previous trial's heal), not the DUT's work.

    `react_ns`: the DUT cannot react sooner after the trigger (6.8: its dead interval), so
    both limits count to then."""
    timers = dut_timers(trial.index)
    arrival = timers["min-ls-arrival"].ns if "min-ls-arrival" in timers else _RFC_MIN_LS_ARRIVAL_NS
    interval = (
        timers["min-ls-interval"].ns if "min-ls-interval" in timers else _RFC_MIN_LS_INTERVAL_NS
    )
    gen = trial.param("link1_router") or trial.param("observer", "gen")
    if arrival > 0:
        ours = [
            e
            for e in trial.index.between(
                t_trigger + react_ns - arrival, t_trigger, source=gen, event="tx"
            )
            if e.get("type") == "lsu" and any(_own_router_lsa(e, lsa) for lsa in e.get("lsas", ()))
        ]
        if ours:
            raise Invalid(
                f"we sent our router-LSA {(t_trigger - ours[-1].t_ns) / 1e6:.0f} ms before the "
                f"failure, within the DUT's MinLSArrival ({arrival / 1e9:g} s): the DUT may "
                "discard our next instance (RFC 2328 §13 (5a)) and reroute only on its "
                "retransmission"
            )
    dut = trial.param("dut_rid")
    prev = trial.newest_before(f"1/{dut}/{dut}", t_trigger)
    if interval > 0 and prev is not None and t_trigger + react_ns - prev[1] < interval:
        raise Invalid(
            f"the DUT originated its previous router-LSA {(t_trigger - prev[1]) / 1e6:.0f} ms "
            f"before the failure, within its MinLSInterval ({interval / 1e9:g} s): its new one "
            "may wait for that timer, not for its work"
        )


def _new_router_lsa(trial: Trial, t_start: int) -> tuple[int, dict[str, int]]:
    """The DUT's first router-LSA newer than any before `t_start`, over link 2 (RFC 4061 §6.7),
    before we restored link 1 (else it may announce the restoration, not the failure)."""
    gen, dut = trial.param("observer", "gen"), trial.param("dut_rid")
    _link1_ready(trial, gen, t_start)
    key = f"1/{dut}/{dut}"
    before = trial.newest_seq_before(key, t_start)
    got = _require(
        trial.first_lsa_rx(
            gen,
            lambda lsa: lsa.get("key") == key and (before is None or lsa.get("seq", 0) > before),
            after=t_start,
            ifname=trial.param("link2"),
        ),
        "new router-LSA from the DUT over link 2",
    )
    t_end = _stamped(got[0], "the DUT's new router-LSA")
    ups = [e for e in trial.events(source="link", event="up") if e.t_ns > t_start]
    if ups and ups[0].t_ns < t_end:
        raise Invalid("the DUT's new router-LSA came only after link 1 was restored")
    proxies: dict[str, int] = {}
    fib = _fib_after(trial, t_start, trial.param("prefix"))
    if fib is not None:
        proxies["fib"] = fib.t_ns - t_start
    return t_end, proxies


def fig_6_7(trial: Trial) -> TrialResult:
    """Link 1 fails (carrier down) → the DUT's new router-LSA over link 2. The start is the
    netlink request's user stamp (`link` events).

    The DUT learns of the carrier loss only when its kernel tells it, and Linux batches carrier
    changes (linkwatch) at most once a second machine-wide: on a busy host up to a second
    passes first. The FIB watcher's ``fib carrier`` event in the DUT's namespace is when that
    happened: ``parts['kernel_notice']``, and the proxy ``after_kernel_notice`` is the DUT's
    own part (the figure from there)."""
    down = _link_event(trial, "down", "carrier")
    _link1_path(trial, down.t_ns)
    _settled(trial, down.t_ns)
    t_end, proxies = _new_router_lsa(trial, down.t_ns)
    parts: dict[str, int] = {}
    dut_if = trial.param("dut_link1")
    for e in trial.events(source="fib", event="carrier"):
        if (
            e.t_ns >= down.t_ns
            and not e.get("up")
            and (dut_if is None or e.get("ifname") == dut_if)
        ):
            parts["kernel_notice"] = e.t_ns - down.t_ns
            proxies["after_kernel_notice"] = t_end - e.t_ns
            break
    return _result(
        trial,
        t_end - down.t_ns,
        down.t_ns,
        parts=parts,
        proxies=proxies,
        dp_until=_healed(trial, down.t_ns),
    )


def fig_6_8(trial: Trial) -> TrialResult:
    """The generator's last Hello on link 1 (it stops OSPF there, carrier kept) → the DUT's new
    router-LSA over link 2. Includes the DUT's RouterDeadInterval by definition."""
    gen = trial.param("link1_router") or trial.param("observer", "gen")
    stop = _link_event(trial, "down", "hellos")
    _link1_path(trial, stop.t_ns)
    link1 = trial.param("link1")
    hellos = _hellos_before(trial, gen, link1, stop.t_ns + LAG_NS)
    if not hellos:
        raise Invalid("the generator sent no Hello on link 1 before it stopped")
    ups = [e for e in trial.events(source="link", event="up") if e.t_ns > stop.t_ns]
    resumed = ups[0].t_ns if ups else trial.t1
    late = [
        e
        for e in trial.packets(gen, "tx", "hello", ifname=link1, after=stop.t_ns + LAG_NS + 1)
        if e.t_ns < resumed
    ]
    if late:
        raise Invalid("the generator kept sending Hellos on link 1 after the stop")
    t_start = _stamped(hellos[-1], "the generator's last Hello on link 1")
    dead = _dead_ns(trial, gen)
    _settled(trial, t_start, dead or 0)
    t_end, proxies = _new_router_lsa(trial, t_start)
    if dead is not None and t_end - t_start < dead - LAG_NS:
        # The DUT cannot declare us down before its RouterDeadInterval has run from our last
        # Hello (RFC 2328 §10.2 InactivityTimer): an earlier router-LSA announces something
        # else, e.g. the previous trial's restoration held back by its MinLSInterval.
        raise Invalid(
            f"the DUT's new router-LSA came {(t_end - t_start) / 1e6:.0f} ms after our last "
            f"Hello, before its dead interval ({dead / 1e9:g} s): it announces another change"
        )
    res = _with_dead(trial, gen, t_end - t_start, t_start, dp_until=_healed(trial, t_start))
    res.proxies.update(proxies)
    return res


# -- registry ------------------------------------------------------------------------------------

_ADJ_PROXIES = {
    "full_at_generator": "our neighbour reached Full",
    "dut_router_lsa_at_collector": "DUT's new router-LSA at the collector",
    "all_acked": "every LSA acked",
    "fib_last": "last route installed (netlink)",
}

PROCEDURES: Mapping[str, Procedure] = {
    p.id: p
    for p in (
        Procedure(
            "5.1",
            "LSA processing",
            "T1",
            "new LSA sent (after a lone duplicate's ack time is taken)",
            "ack of a different duplicate sent at once; minus dupLSAprocTime",
            "the generator",
            ("delayed-ack",),
            None,
            {
                "flood_to_collector": "new LSA flooded to the collector (upper bound)",
                "dup_ack": "duplicate-ack round trip",
                "new_lsa_ack": "new LSA's own ack",
                "fib": "route installed (netlink)",
            },
            fig_5_1,
        ),
        Procedure(
            "5.2",
            "Flooding",
            "T2",
            "last LSA at the collector straight from the generator (else its send)",
            "last LSA at the collector via the DUT",
            "the collector",
            ("min-ls-arrival",),
            None,
            {
                "first_at_collector": "first LSA at the collector",
                "fib_last": "last route installed",
            },
            fig_5_2,
            lsa_procedure=True,
        ),
        Procedure(
            "5.3",
            "SPF",
            "T1",
            "LSA changing a link cost sent",
            "ack of the duplicate sent right after, minus dupLSAprocTime",
            "the generator",
            ("delayed-ack", "spf-delay", "spf-hold", "tick"),
            None,
            {
                "spf_whitebox": "the DUT's own last SPF duration (white-box, RFC 4061 §5.3: "
                "FRR's 'Last SPF duration', in 1 µs steps below 1 ms, 1 ms steps above)",
                "fib": "route changed (netlink)",
                "trigger_ack": "trigger LSA's own ack",
                "dup_ack": "duplicate-ack round trip",
            },
            fig_5_3,
        ),
        Procedure(
            "6.1",
            "Adjacency p2p, link up",
            "T1",
            "carrier up at the generator",
            "DUT's ack for the generator's last LSA",
            "the generator",
            ("delayed-ack", "hello", "retransmit"),
            None,
            _ADJ_PROXIES,
            fig_6_1,
            lsa_procedure=True,
        ),
        Procedure(
            "6.2",
            "Adjacency p2p",
            "T1",
            "DUT's first Hello (OSPF enabled on its interface)",
            "DUT's ack for the generator's last LSA",
            "the generator",
            ("delayed-ack", "hello", "retransmit"),
            None,
            _ADJ_PROXIES,
            fig_6_2,
            lsa_procedure=True,
        ),
        Procedure(
            "6.3",
            "Adjacency, DB present",
            "T2",
            "DUT's first Hello after link up",
            "DUT's ack for the generator's last LSA",
            "the generator",
            ("delayed-ack", "hello", "retransmit"),
            None,
            _ADJ_PROXIES,
            fig_6_3,
            lsa_procedure=True,
        ),
        Procedure(
            "6.4",
            "DR election",
            "T3",
            "R1's (the DR's) last Hello",
            "DUT's first network-LSA at R2",
            "R2",
            ("dead",),
            "dead",
            {"minus_dead_interval": "figure minus the DUT's dead interval"},
            fig_6_4,
            ends_on_origination=True,
        ),
        Procedure(
            "6.5",
            "Initial convergence, broadcast 1",
            "T3",
            "first DUT Hello at R1",
            "DUT's first network-LSA at R1",
            "R1",
            ("dead",),
            "dead",
            {"minus_dead_interval": "figure minus the Wait timer (= dead interval)"},
            fig_6_5,
            ends_on_origination=True,
        ),
        Procedure(
            "6.6",
            "Initial convergence, broadcast 2",
            "T3",
            "first DUT Hello listing a DR",
            "DUT's first network-LSA at R1",
            "R1",
            ("min-ls-interval", "tick"),
            None,
            {},
            fig_6_6,
            ends_on_origination=True,
        ),
        Procedure(
            "6.7",
            "Link down, layer 2",
            "T4",
            "link 1 carrier down",
            "DUT's new router-LSA over link 2",
            "the generator",
            ("min-ls-interval", "tick", "spf-hold"),
            None,
            {
                "fib": "route changed (netlink)",
                "after_kernel_notice": "from the DUT kernel's carrier-loss notice (linkwatch)",
            },
            fig_6_7,
            ends_on_origination=True,
        ),
        Procedure(
            "6.8",
            "Link down, layer 3",
            "T4",
            "generator's last Hello on link 1",
            "DUT's new router-LSA over link 2",
            "the generator",
            ("dead",),
            "dead",
            {
                "minus_dead_interval": "figure minus the DUT's dead interval",
                "fib": "route changed (netlink)",
            },
            fig_6_8,
            ends_on_origination=True,
        ),
    )
}


def evaluate(trial: Trial) -> TrialResult:
    """The trial's figure, or an invalid result with the reason."""

    def invalid(reason: str) -> TrialResult:
        return TrialResult(trial.proc, trial.trial, trial.lsas, valid=False, reason=reason)

    proc = PROCEDURES.get(trial.proc)
    if proc is None:
        return invalid(f"unknown procedure {trial.proc!r}")
    if trial.driver_invalid:
        return invalid(trial.driver_invalid)
    if trial.end is None:
        return invalid("the trial has no end mark (the run stopped during it)")
    try:
        return proc.fn(trial)
    except Invalid as exc:
        return invalid(str(exc))
    except (KeyError, TypeError, ValueError) as exc:
        # A field missing or of the wrong type: a log written by another version; never a crash.
        return invalid(f"the log lacks what this procedure needs ({exc.__class__.__name__}: {exc})")


def evaluate_all(trials: Sequence[Trial]) -> list[TrialResult]:
    return [evaluate(t) for t in trials]
