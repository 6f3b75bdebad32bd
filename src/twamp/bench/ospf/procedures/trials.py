"""Trials in an OSPF event log: the driver's marks, and the packet queries the procedures need.

The drivers (`drivers`) and the analysis (`procedures`) meet only in the event log
(`twamp.ospf.eventlog`): a driver brackets every attempt at a procedure with ``lab``/``mark``
events, and notes the steps it took (which LSA it sent as the duplicate, which as the new one);
everything else (send and receive stamps, acks, Hellos, link triggers, FIB changes, probe
losses) comes from the observers. The analysis re-derives every RFC 4061 figure from those
records alone, so ``twamp-bench ospf report LOG`` gives the same figures later.

Mark protocol (source ``lab``, event ``mark``, all with ``bench == "rfc4061"``)
--------------------------------------------------------------------------------
``phase == "conditions"``
    ``conditions``: the run's conditions (command line, pinning, DUT, profile...), once.
``phase == "start"``
    ``proc`` (``"5.1"`` ... ``"6.8"``), ``trial`` (attempt number, unique per procedure and
    LSA count), ``lsas`` (the emulated topology's LSA count), ``dut_rid``, ``observer`` (the
    emulated router at which the RFC observes the end event), ``ifname`` (the observer's
    DUT-facing interface), and per procedure: ``collector``, ``col_ifname`` (5.2, 6.1-6.3),
    ``direct_ifname`` (5.2: the collector's direct link to the generator), ``r1``,
    ``r1_ifname`` (6.4), ``link1``, ``link2`` (6.7/6.8: the generator's interfaces).
``phase == "step"``
    ``proc``, ``trial``, ``step`` (a name the procedure defines: ``dup``, ``new``, ``dup2``,
    ``trigger``, ``burst``, ``ospf-enable``, ``stop-hellos``...), and ``key``/``seq`` (an LSA
    the step sent), ``prefix`` (a route the step should change) where they apply.
``phase == "invalid"``
    ``proc``, ``trial``, ``reason``: the driver could not drive the attempt as planned.
``phase == "failed"``
    ``proc``, ``reason``, optional ``lsas``: the DUT never reached the state the procedure needs
    (at that LSA count, or at all); no more attempts.
``phase == "end"``
    ``proc``, ``trial``.

Only the window between a trial's start and end marks belongs to it; the queries below never
look outside it, so a late ack from an earlier attempt can never end a later one.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ....ospf.logformat import Event

__all__ = [
    "BENCH_TAG",
    "LogIndex",
    "Marker",
    "Trial",
    "lsa_type",
]

BENCH_TAG = "rfc4061"


def lsa_type(key: str) -> int:
    """The LS type of a log key ``"type/id/adv"``."""
    return int(key.split("/", 1)[0])


def lsa_adv(key: str) -> str:
    return key.rsplit("/", 1)[1]


class _Writer(Protocol):
    def __call__(
        self, source: str, event: str, t_ns: int | None = None, **fields: Any
    ) -> Event: ...


class Marker:
    """Writes the mark protocol (module docstring) into an `EventLog` (or any writer with its
    signature): what a driver calls, and what the synthetic logs of the tests call."""

    def __init__(self, write: _Writer) -> None:
        self.write = write

    def _mark(self, phase: str, t_ns: int | None, **fields: Any) -> Event:
        label = " ".join(
            str(x)
            for x in (
                BENCH_TAG,
                fields.get("proc", ""),
                phase,
                fields.get("step", ""),
                fields.get("trial", ""),
            )
            if x != ""
        )
        return self.write("lab", "mark", t_ns, label=label, bench=BENCH_TAG, phase=phase, **fields)

    def conditions(self, conditions: Mapping[str, Any], t_ns: int | None = None) -> Event:
        return self._mark("conditions", t_ns, conditions=dict(conditions))

    def start(self, proc: str, trial: int, t_ns: int | None = None, **params: Any) -> Event:
        return self._mark("start", t_ns, proc=proc, trial=trial, **params)

    def step(
        self, proc: str, trial: int, step: str, t_ns: int | None = None, **fields: Any
    ) -> Event:
        return self._mark("step", t_ns, proc=proc, trial=trial, step=step, **fields)

    def invalid(self, proc: str, trial: int, reason: str, t_ns: int | None = None) -> Event:
        return self._mark("invalid", t_ns, proc=proc, trial=trial, reason=reason)

    def failed(
        self, proc: str, reason: str, t_ns: int | None = None, lsas: int | None = None
    ) -> Event:
        """The procedure cannot run (at this LSA count, or at all when `lsas` is None)."""
        extra = {} if lsas is None else {"lsas": lsas}
        return self._mark("failed", t_ns, proc=proc, reason=reason, **extra)

    def end(self, proc: str, trial: int, t_ns: int | None = None) -> Event:
        return self._mark("end", t_ns, proc=proc, trial=trial)


_PHASE_ORDER = {"conditions": 0, "start": 1, "step": 2, "invalid": 3, "end": 4, "failed": 5}


def _is_mark(ev: Event) -> bool:
    return ev.source == "lab" and ev.event == "mark" and ev.get("bench") == BENCH_TAG


@dataclass
class Trial:
    """One attempt at one procedure: its marks and a view of the log between them."""

    proc: str
    trial: int
    start: Event
    index: LogIndex
    end: Event | None = None
    steps: list[Event] = field(default_factory=list)
    driver_invalid: str | None = None

    @property
    def t0(self) -> int:
        return self.start.t_ns

    @property
    def t1(self) -> int:
        # An attempt whose end mark is missing (a run killed mid-trial) extends to the log's end;
        # `procedures` marks such trials invalid anyway.
        return self.end.t_ns if self.end is not None else self.index.t_last

    @property
    def lsas(self) -> int:
        return int(self.start.get("lsas", 0) or 0)

    def param(self, name: str, default: Any = None) -> Any:
        return self.start.get(name, default)

    def step(self, name: str) -> Event | None:
        for ev in self.steps:
            if ev.get("step") == name:
                return ev
        return None

    def events(self, source: str | None = None, event: str | None = None) -> list[Event]:
        return self.index.between(self.t0, self.t1, source=source, event=event)

    # -- OSPF packet queries, all confined to the trial window -------------------------------

    def packets(
        self,
        router: str,
        direction: str,
        ptype: str,
        *,
        ifname: str | None = None,
        after: int | None = None,
        pred: Callable[[Event], bool] | None = None,
    ) -> list[Event]:
        """`rx`/`tx` events of one emulated router, of one packet type, in time order."""
        lo = self.t0 if after is None else max(self.t0, after)
        return [
            e
            for e in self.index.between(lo, self.t1, source=router, event=direction)
            if e.get("type") == ptype
            and (ifname is None or e.get("ifname") == ifname)
            and (pred is None or pred(e))
        ]

    def lsa_sends(self, router: str, key: str, seq: int | None = None) -> list[Event]:
        """Every LSU the router sent in this trial carrying `key` (at `seq`, if given)."""
        return self.packets(
            router, "tx", "lsu", pred=lambda e: _carries(e.get("lsas", ()), key, seq, exact=True)
        )

    def first_ack(
        self, router: str, key: str, seq: int | None, *, after: int | None = None
    ) -> Event | None:
        """The first acknowledgement the router received for `key` at `seq` or newer: an LSAck,
        or an LSU from the DUT carrying that instance (an implied acknowledgement, RFC 2328
        §13.5: a neighbour that floods the instance back has it)."""
        dut = self.param("dut_rid")
        lo = self.t0 if after is None else max(self.t0, after)
        for e in self.index.between(lo, self.t1, source=router, event="rx"):
            kind = e.get("type")
            if kind == "ack" and _carries(e.get("acked", ()), key, seq, exact=False):
                return e
            if (
                kind == "lsu"
                and dut is not None
                and e.get("rid") == dut
                and _carries(e.get("lsas", ()), key, seq, exact=False)
            ):
                return e
        return None

    def first_lsa_rx(
        self,
        router: str,
        match: Callable[[Mapping[str, Any]], bool],
        *,
        after: int | None = None,
        ifname: str | None = None,
        rid: str | None = None,
    ) -> tuple[Event, Mapping[str, Any]] | None:
        """The first LSU the router received (from `rid`) with an LSA for which `match` holds."""
        for e in self.packets(router, "rx", "lsu", ifname=ifname, after=after):
            if rid is not None and e.get("rid") != rid:
                continue
            for lsa in e.get("lsas", ()):
                if match(lsa):
                    return e, lsa
        return None

    def newest_seq_before(self, key: str, t_ns: int) -> int | None:
        """The newest sequence number of `key` any emulated router saw before `t_ns`.

        "A new router-LSA" means newer than every instance seen before the trigger, including
        instances from earlier trials, but only since the DUT last started: a restarted DUT
        begins again at InitialSequenceNumber (RFC 2328 §12.1.6), as does every new lab.
        """
        newest = self.newest_before(key, t_ns)
        return None if newest is None else newest[0]

    def newest_before(self, key: str, t_ns: int) -> tuple[int, int] | None:
        """`newest_seq_before`'s instance and when an emulated router first received it."""
        since = self.index.dut_start_before(t_ns)
        best: tuple[int, int] | None = None
        for e in self.index.lsu_rx_of(key):  # in time order: the first copy of a seq wins
            if e.t_ns >= t_ns:
                break
            if e.t_ns < since:
                continue
            for lsa in e.get("lsas", ()):
                if lsa.get("key") == key and (best is None or lsa["seq"] > best[0]):
                    best = (int(lsa["seq"]), e.t_ns)
        return best


def _carries(lsas: Iterable[Mapping[str, Any]], key: str, seq: int | None, *, exact: bool) -> bool:
    for lsa in lsas:
        if lsa.get("key") != key:
            continue
        if seq is None:
            return True
        s = lsa.get("seq")
        if s is None:
            continue
        if (s == seq) if exact else (s >= seq):
            return True
    return False


class LogIndex:
    """A log sorted by time, indexed by source and by event, and split into trials."""

    def __init__(self, events: Iterable[Event]) -> None:
        # Stable sort: a transmit is logged when its kernel stamp returns, after later receptions.
        self.events = sorted(events, key=lambda e: e.t_ns)
        self.times = [e.t_ns for e in self.events]
        self._by_source: dict[str, list[Event]] = defaultdict(list)
        self._lsu_rx: dict[str, list[Event]] = defaultdict(list)
        for e in self.events:
            self._by_source[e.source].append(e)
            if e.event == "rx" and e.get("type") == "lsu":
                for lsa in e.get("lsas", ()):
                    key = lsa.get("key")
                    if isinstance(key, str):
                        self._lsu_rx[key].append(e)
        self._src_times = {s: [e.t_ns for e in evs] for s, evs in self._by_source.items()}
        self._dut_starts = [
            e.t_ns for e in self._by_source.get("dut", []) if e.event in ("start", "config")
        ]
        self.t_last = self.times[-1] if self.times else 0
        self.trials: list[Trial] = []
        self.failed: dict[tuple[str, int | None], str] = {}
        self.conditions: dict[str, Any] = {}
        self.memo: dict[str, Any] = {}
        """What is derived from the whole log once (`verdicts.dut_timers`)."""
        self._split()

    @property
    def marks(self) -> list[Event]:
        """The bench's marks in time order; at one instant a start before its steps and end."""
        marks = [e for e in self._by_source.get("lab", []) if _is_mark(e)]
        return sorted(marks, key=lambda e: (e.t_ns, _PHASE_ORDER.get(e.get("phase"), 9)))

    def between(
        self, lo: int, hi: int, *, source: str | None = None, event: str | None = None
    ) -> list[Event]:
        """Events with lo <= t_ns <= hi (of one source, one event name), in time order."""
        if source is None:
            evs, times = self.events, self.times
        else:
            evs, times = self._by_source.get(source, []), self._src_times.get(source, [])
        i, j = bisect.bisect_left(times, lo), bisect.bisect_right(times, hi)
        return [e for e in evs[i:j] if event is None or e.event == event]

    def dut_start_before(self, t_ns: int) -> int:
        """When the DUT last (re)started before `t_ns` (0 when the log does not say)."""
        i = bisect.bisect_left(self._dut_starts, t_ns)
        return self._dut_starts[i - 1] if i else 0

    def lsu_rx_of(self, key: str) -> list[Event]:
        return self._lsu_rx.get(key, [])

    def first(self, source: str, event: str) -> Event | None:
        for e in self._by_source.get(source, []):
            if e.event == event:
                return e
        return None

    def by_source(self, source: str) -> list[Event]:
        return self._by_source.get(source, [])

    def _split(self) -> None:
        open_trials: dict[tuple[str, int], Trial] = {}
        for m in self.marks:
            phase = m.get("phase")
            proc = str(m.get("proc", ""))
            if phase == "conditions":
                self.conditions = dict(m.get("conditions") or {})
                continue
            if phase == "failed":
                n = m.get("lsas")
                key = (proc, int(n) if isinstance(n, int) else None)
                self.failed[key] = str(m.get("reason") or "the DUT did not reach the state")
                continue
            k = (proc, int(m.get("trial", -1)))
            if phase == "start":
                t = Trial(proc=proc, trial=k[1], start=m, index=self)
                open_trials[k] = t
                self.trials.append(t)
            elif k in open_trials:
                t = open_trials[k]
                if phase == "step":
                    t.steps.append(m)
                elif phase == "invalid":
                    t.driver_invalid = str(m.get("reason") or "marked invalid by the driver")
                elif phase == "end":
                    t.end = m
                    del open_trials[k]

    def trials_of(self, proc: str) -> Iterator[Trial]:
        return (t for t in self.trials if t.proc == proc)
