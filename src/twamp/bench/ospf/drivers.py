"""The RFC 4061 procedures driven in the lab: the events that `procedures` later times.

Every procedure runs in a *session*: a lab topology (`twamp.lab.Lab`), the DUT started in it
(`twamp.lab.dut`), our emulated routers on raw sockets (`twamp.ospf.io.Speaker`), the FIB
watcher and, where routes to the probe's target change, the TWAMP data-plane probe. Sessions:

* T1 (generator and collector, no link between them): 5.1, 5.3, 6.1, 6.2, with the probe
  (6.1/6.2 remove and reinstall its route; 5.1/5.3 change routes off its path);
* T2 (the collector also linked to the generator): 5.2 (the direct link is the RFC's reference;
  the collector floods nothing to the DUT meanwhile), then 6.3 (the collector floods again);
  no probe (`analysis.DATAPLANE_NOTES` says why);
* T3 (DUT, R1, R2 on one bridge, broadcast): 6.4, 6.5 and 6.6 (one trial gives both; no probe);
* T4 (two links DUT–generator, link 2 the costlier, and the collector): 6.7, 6.8, with the
  probe over link 1 until it fails (6.8: black-holed beyond layer 2, `Lab.blackhole`).

Where the probe runs, every attempt ends with a `procedure-end` step (the RFC's procedure is
over) and then waits, bounded (`dataplane_wait_s`), until the stream flows again, so a DUT that
forwards only after the RFC's end event shows "restored after the procedure's end".

A driver only *acts* and writes marks (`trials.Marker`); it never times anything. After each
attempt the analysis of the log so far decides whether the attempt is valid; invalid ones are
repeated, up to twice the trials asked for. A DUT that does not reach the state a procedure
needs (never Full, never BDR) fails that procedure with the reason; the others still run.
Trials are spaced past the DUT's SPF hold and MinLSArrival and our own MinLSInterval (1 s).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

from ...lab.dut import PROFILES, Dut, DutPort, ExternalDut, TimerProfile, make_dut
from ...lab.errors import LabError, check_root
from ...lab.observers import FibWatcher, Probe
from ...lab.topology import PROBE_TARGET, Lab
from ...ospf.eventlog import EventLog, lsa_key
from ...ospf.events import InterfaceConfig, LsaSpec, NeighborState, NetworkType
from ...ospf.io import Attachment, RouterHandle, Speaker, listen_hello
from ...ospf.router import EmulatedRouter
from ...ospf.wire import (
    ALL_SPF_ROUTERS,
    AsExternalLsaBody,
    LinkType,
    LsaKey,
    RouterLink,
    RouterLsaBody,
)
from ..conditions import collect_conditions
from .procedures import PROCEDURES, LogIndex, Marker, evaluate

__all__ = ["BenchAborted", "Progress", "RunSettings", "run"]

GEN_RID = "192.0.2.2"
COL_RID = "198.51.100.2"
R1_RID = "192.0.2.66"
R2_RID = "192.0.2.67"
DUT_LAN = "192.0.2.65"  # DR/BDR in Hellos are interface addresses (RFC 2328 §A.3.2), not RIDs
R1_LAN = "192.0.2.66"
NS = 1_000_000_000

SESSIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("T1", ("5.1", "5.3", "6.1", "6.2")),
    ("T2", ("5.2", "6.3")),
    ("T3", ("6.4", "6.5")),
    ("T4", ("6.7", "6.8")),
)


class BenchAborted(RuntimeError):
    """The run cannot go on at all (not root, daemon missing); one sentence."""


class TrialFailed(RuntimeError):
    """The DUT did not reach the state the procedure needs: the procedure fails."""


# Valid trials per procedure when --trials is not given. Five everywhere (issue 9: "at least 5
# where the time allows") except where every trial by definition waits out a dead interval or
# restarts the DUT: 6.4 (R1 silent until the DUT declares it dead), 6.5/6.6 (a DUT restart and
# its Wait timer, one dead interval, RFC 2328 §9.4) and 6.8 (Hellos stopped until the dead
# interval). Three of those keep the default run at a few minutes; `--trials N` sets all.
DEFAULT_TRIALS = 5
DEFAULT_TRIALS_DEAD_INTERVAL = 3
DEAD_INTERVAL_PROCS = frozenset({"6.4", "6.5", "6.6", "6.8"})


def default_trials(proc: str) -> int:
    return DEFAULT_TRIALS_DEAD_INTERVAL if proc in DEAD_INTERVAL_PROCS else DEFAULT_TRIALS


@dataclass(frozen=True)
class RunSettings:
    dut: str = "frr"
    interfaces: tuple[str, ...] = ()
    tests: tuple[str, ...] = tuple(PROCEDURES)
    trials: int | None = None  # None: `default_trials` per procedure
    lsas: tuple[int, ...] = (100,)
    profile: str = "tuned"
    rate_pps: float = 1000.0
    command_line: str = "twamp-bench ospf"
    tag: str = "twamp"
    pin: bool = True

    def trials_for(self, procs: Sequence[str]) -> int:
        """Valid trials asked of an attempt serving `procs` (6.5 and 6.6 share one)."""
        if self.trials is not None:
            return self.trials
        return max(default_trials(p) for p in procs)


@dataclass
class Progress:
    """One line on stderr, rewritten in place: where the run is."""

    enabled: bool = True
    stream: Any = field(default_factory=lambda: sys.stderr)
    _shown: bool = False
    t0: float = field(default_factory=time.monotonic)

    def __call__(self, text: str) -> None:
        if not self.enabled:
            return
        line = f"[{time.monotonic() - self.t0:5.0f} s] {text}"
        self.stream.write("\r\033[K" + line[:160])
        self.stream.flush()
        self._shown = True

    def done(self) -> None:
        if self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._shown = False


class BenchRouter(EmulatedRouter):
    """The emulated router plus what RFC 4061 needs and the speaker does not: resending an LSA
    instance unchanged (a *duplicate*, §5.1, §5.3), each in an LSU of its own."""

    def send_duplicates(self, keys: Sequence[Any], ifname: str, now_ns: int) -> list[Any]:
        iface = self._iface(ifname)
        for key in keys:
            entry = self.lsdb[key]
            # One LSU per duplicate, sent to AllSPFRouters as a flood would be (p2p, RFC 2328
            # §8.1); the router's own packing and transmit path, so the send is logged and
            # stamped like every other.
            self._send_entries(iface, ALL_SPF_ROUTERS, [entry], now_ns)
        return []


def _ext(i: int, metric: int = 20) -> LsaSpec:
    """AS-external-LSA number i: 198.18.x.y/32 from the RFC 2544 benchmarking range."""
    prefix = IPv4Address(int(IPv4Address("198.18.0.0")) + i)
    return LsaSpec(
        5, prefix, IPv4Address(GEN_RID), AsExternalLsaBody(IPv4Address("255.255.255.255"), metric)
    )


def _key(spec: LsaSpec) -> str:
    return lsa_key(spec.ls_type, str(spec.link_state_id), str(spec.advertising_router))


class Session:
    """One topology with the DUT and our routers up; torn down by `close`."""

    def __init__(
        self,
        topology: str,
        settings: RunSettings,
        log: EventLog,
        marker: Marker,
        profile: TimerProfile,
        progress: Progress,
    ) -> None:
        self.settings, self.log, self.marker, self.profile = settings, log, marker, profile
        self.progress = progress
        self.topology = topology
        self.lab = Lab(topology, tag=settings.tag, log=log)
        self.dut: Dut | None = None
        self.speaker: Speaker | None = None
        self.fib: FibWatcher | None = None
        self.probe: Probe | None = None
        self.routers: dict[str, RouterHandle] = {}
        self.current_lsas: int | None = None
        self.hello_s = profile.hello_s or 10
        self.dead_s = profile.dead_s or 40
        # The devices our generator and collector speak on (the lab's, or the user's, external)
        self.gen_if = "eth-dut"
        self.col_if = "eth-dut"
        # Where §6.7/§6.8 watch for the DUT's new router-LSA: the generator's second link to
        # the DUT in T4; the collector's port on an external router (one link per role).
        self.link2 = ("gen", "eth-dut2")

    # ---- set-up ------------------------------------------------------------------------------
    def open(self) -> Session:
        self.lab.up()
        self.dut = make_dut(self.settings.dut, self.lab, self.profile, log=self.log)
        self.start_dut()
        self.fib = FibWatcher(self.lab.ns("dut"), self.log).start()
        self.speaker = Speaker(self.log, router_factory=BenchRouter).start()
        return self

    def start_dut(self) -> None:
        assert self.dut is not None
        self.dut.start()
        self.dut.wait_ready()
        self.dut.record()
        if self.settings.pin:
            _pin_dut(self.dut)

    def cfg(self, ifname: str, addr: str, **kw: Any) -> InterfaceConfig:
        return InterfaceConfig(
            ifname,
            IPv4Interface(addr),
            hello_interval_s=self.hello_s,
            dead_interval_s=self.dead_s,
            **kw,
        )

    def add(
        self, name: str, rid: str, ports: Sequence[tuple[str, str, str]], **kw: Any
    ) -> RouterHandle:
        """A router `name` with interfaces (role, ifname, addr) in the lab's namespaces."""
        assert self.speaker is not None
        atts = [
            Attachment(self.lab.ns(role), self.cfg(ifn, addr, **kw)) for role, ifn, addr in ports
        ]
        h = self.speaker.add_router(name, rid, atts)
        self.routers[name] = h
        return h

    def wait_full(self, name: str, rid: str, timeout: float | None = None) -> None:
        t = timeout if timeout is not None else 3 * self.dead_s + 10
        if not self.routers[name].wait_full(rid, t):
            raise TrialFailed(
                f"{name} did not reach Full with {rid} within {t:.0f} s (MTU, timers or "
                "router-ID clash?)"
            )

    def wait_full_on(self, name: str, ifname: str, rid: str) -> None:
        """Full with `rid` on that interface (a router with two links to the DUT, T4)."""
        nid = IPv4Address(rid)
        t = 3 * self.dead_s + 10
        ok = self.routers[name].wait_for(
            lambda r: r.neighbor_state(ifname, nid) == NeighborState.FULL, t
        )
        if not ok:
            raise TrialFailed(f"{name} did not reach Full with {rid} on {ifname} within {t} s")

    def close(self) -> None:
        """Stop what we started, in reverse, then the lab (which stops the DUT by pid file)."""
        if self.probe is not None:
            with contextlib.suppress(Exception):
                self.probe.stop()
        if self.speaker is not None:
            with contextlib.suppress(Exception):
                self.speaker.close()
        if self.fib is not None:
            with contextlib.suppress(Exception):
                self.fib.stop()
        self.lab.down()


def _pin_dut(dut: Dut) -> None:
    """The DUT's daemons on the first allowed CPU, the tester (this process) on the others."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return
    pids = getattr(dut, "pids", None)
    found = pids() if callable(pids) else {}
    for pid in (p for p in found.values() if p):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, {cpus[0]})


# ---- the trial loop ----------------------------------------------------------------------


@dataclass
class Driver:
    session: Session
    proc: str
    lsas: int = 1
    params: dict[str, Any] = field(default_factory=dict)


def _spacing(profile: TimerProfile, dut: Dut | None = None) -> float:
    """Seconds between trials: past the SPF hold, MinLSArrival, our MinLSInterval (1 s) and the
    DUT's own MinLSInterval where its quirks name one (BIRD: 5 s), so no trial's end event is
    an origination the DUT held back because of the previous trial."""
    hold = (profile.spf_hold_ms or 50) / 1e3
    arrival = (profile.min_arrival_ms if profile.min_arrival_ms is not None else 1000) / 1e3
    own = 0.0
    for q in dut.quirks() if dut is not None else ():
        if q.name == "min-ls-interval" and q.value_ms:
            own = q.value_ms / 1e3 + 0.5
    if dut is not None and dut.kind == "external":
        # An external router's LSA throttle is unknown: assume RFC 2328 Appendix B's
        # MinLSInterval (5 s), or a trial may end on the previous trial's held-back LSA.
        own = max(own, 5.5)
    return max(1.2, 2 * hold, arrival + 0.2, own)


def max_attempts(trials: int) -> int:
    """Twice the trials asked for, and at least four spare: on a loaded 2-core machine about
    half the §5.1/§5.3 attempts miss the 1 ms "at once" bound (our own lag), and a short run
    (--trials 1) must still get its one valid trial."""
    return max(2 * trials, trials + 4)


def _trials(
    ctx: Session,
    procs: Sequence[str],
    lsas: int,
    action: Callable[[int], None],
    params: dict[str, Any],
) -> None:
    """Attempt until `trials` valid (judged on the log), at most `max_attempts(trials)` times."""
    wanted = ctx.settings.trials_for(procs)
    ctx.current_lsas = lsas
    valid = 0
    attempt = 0
    while valid < wanted and attempt < max_attempts(wanted):
        ctx.progress(
            f"§{'/'.join(procs)} ({lsas} LSAs) trial {attempt + 1}: {valid}/{wanted} valid"
        )
        for p in procs:
            ctx.marker.start(p, attempt, lsas=lsas, dut_rid=ctx.lab.dut_rid, **params[p])
        try:
            action(attempt)
        except TrialFailed:
            for p in procs:
                ctx.marker.invalid(p, attempt, "the trial was abandoned (see failure)")
                ctx.marker.end(p, attempt)
            raise
        _await_dataplane(ctx, procs, attempt)
        for p in procs:
            ctx.marker.end(p, attempt)
        index = LogIndex(ctx.log.events)
        results = [
            evaluate(t)
            for t in index.trials
            if t.proc in procs and t.trial == attempt and t.lsas == lsas
        ]
        # An attempt that serves several procedures (6.5 and 6.6) counts when all are valid.
        if len(results) == len(procs) and all(r.valid for r in results):
            valid += 1
        attempt += 1
        time.sleep(_spacing(ctx.profile, ctx.dut))


def dataplane_wait_s(profile: TimerProfile) -> float:
    """The longest a trial waits, after the RFC's procedure ended, for the probe stream.

    The RFC's end event (an ack, a router-LSA) can come before the DUT forwards again: FRR
    acks our last LSA while its own adjacency is still Loading, its next LS request held for
    the retransmit interval (the LSR stall), and installs the route only after that. Two
    retransmit intervals or one dead interval, whichever is longer, plus a second: a DUT that
    forwards again within that shows "restored after the procedure's end", one that does not
    is "not restored" and the trial still ends (bounded)."""
    rxmt = float(profile.retransmit_s or 5)
    dead = float(profile.dead_s or 40)
    return max(2 * rxmt, dead) + 1.0


def _poll(s: Session, ok: Callable[[], bool], period_s: float) -> bool:
    """Until `ok()` (every `period_s`, bounded by `dataplane_wait_s`); True if it came true."""
    deadline = time.monotonic() + dataplane_wait_s(s.profile)
    while not ok():
        if time.monotonic() >= deadline:
            return False
        time.sleep(period_s)
    return True


def _await_flowing(s: Session) -> bool:
    """Until the probe's stream flows (bounded by `dataplane_wait_s`); True if it does."""
    probe = s.probe
    return probe is not None and _poll(s, probe.flowing, 0.02)


def _await_dataplane(ctx: Session, procs: Sequence[str], attempt: int) -> None:
    """Mark where the RFC's procedure ended, then keep the trial open (bounded) until the
    probe's stream flows again, so a late restoration is measured, not cut off."""
    probe = getattr(ctx, "probe", None)
    if probe is None:
        return
    limit = dataplane_wait_s(ctx.profile)
    for p in procs:
        ctx.marker.step(p, attempt, "procedure-end", dataplane_wait_s=limit)
    if not probe.flowing():
        ctx.progress(f"§{'/'.join(procs)}: waiting up to {limit:.0f} s for the data plane")
        _await_flowing(ctx)


def run(settings: RunSettings, log_path: str | Path, progress: Progress) -> None:
    """Run the selected procedures; everything goes to the event log at `log_path`."""
    try:
        check_root()
    except LabError as exc:
        raise BenchAborted(str(exc)) from None
    if settings.dut == "external":
        _check_external(settings.interfaces)
    profile = PROFILES[settings.profile]
    saved = os.sched_getaffinity(0)
    tester_cpus = _pin_tester(settings.pin)
    # SIGTERM must reach the sessions' `finally` (lab, DUT and speaker torn down) like Ctrl-C.
    old_term = None
    if threading.current_thread() is threading.main_thread():
        old_term = signal.signal(signal.SIGTERM, _terminate)
    try:
        _run(settings, log_path, progress, profile, tester_cpus)
    finally:
        os.sched_setaffinity(0, saved)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _run(
    settings: RunSettings,
    log_path: str | Path,
    progress: Progress,
    profile: TimerProfile,
    tester_cpus: dict[str, list[int]],
) -> None:
    with EventLog(log_path, keep=True) as log:
        marker = Marker(log.write)
        cond = collect_conditions(argv=settings.command_line.split(), sender={}, clock_synced=True)
        cond["command_line"] = settings.command_line
        cond["pinning"] = tester_cpus
        cond["settings"] = {
            "dut": settings.dut,
            "trials": settings.trials,
            "trials_per_procedure": {
                p: settings.trials_for([p]) for p in PROCEDURES if p in settings.tests
            },
            "lsas": list(settings.lsas),
            "profile": settings.profile,
            "tests": list(settings.tests),
            "rate_pps": settings.rate_pps,
        }
        marker.conditions(cond)
        if settings.dut == "external":
            _external(settings, log, marker, profile, progress)
            return
        for topology, procs in SESSIONS:
            wanted = [p for p in procs if p in settings.tests]
            if topology == "T3" and "6.6" in settings.tests and "6.5" not in wanted:
                wanted.append("6.5")
            if not wanted:
                continue
            _session(topology, wanted, settings, log, marker, profile, progress)


def _pin_tester(pin: bool) -> dict[str, list[int]]:
    if not pin or not hasattr(os, "sched_getaffinity"):
        return {}
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return {"dut": cpus, "tester": cpus}
    # Before any thread starts: the speaker, probe and FIB threads inherit this mask.
    os.sched_setaffinity(0, set(cpus[1:]))
    return {"dut": cpus[:1], "tester": cpus[1:]}


def _session(
    topology: str,
    procs: Sequence[str],
    settings: RunSettings,
    log: EventLog,
    marker: Marker,
    profile: TimerProfile,
    progress: Progress,
) -> None:
    progress(f"building lab {topology} with {settings.dut}")
    session = Session(topology, settings, log, marker, profile, progress)
    try:
        try:
            session.open()
        except LabError as exc:
            raise BenchAborted(str(exc).splitlines()[0]) from None
        setup = {"T1": _setup_t1, "T2": _setup_t2, "T3": _setup_t3, "T4": _setup_t4}[topology]
        try:
            setup(session)
        except TrialFailed as exc:
            for p in procs:
                marker.failed(p, str(exc))
            return
        for proc in procs:
            session.current_lsas = None
            try:
                _PROCS[proc](session)
            except TrialFailed as exc:
                marker.failed(proc, str(exc), lsas=session.current_lsas)
                if proc == "6.5":
                    marker.failed("6.6", str(exc))
            except LabError as exc:
                marker.failed(proc, str(exc).splitlines()[0], lsas=session.current_lsas)
            except TimeoutError:
                marker.failed(
                    proc,
                    "our OSPF speaker did not answer within its timeout: the tester is "
                    "overloaded (fewer --lsas, or a machine with more idle CPU)",
                    lsas=session.current_lsas,
                )
    finally:
        progress(f"tearing down lab {topology}")
        session.close()


# ---- sessions ------------------------------------------------------------------------------

_A, _C = _ext(1), _ext(3)  # duplicates of 5.1/5.3: installed once, then resent unchanged


def _setup_t1(s: Session) -> None:
    gen = s.add("gen", GEN_RID, [("gen", "eth-dut", "192.0.2.2/30")])
    col = s.add("col", COL_RID, [("col", "eth-dut", "198.51.100.2/30")])
    s.wait_full("gen", s.lab.dut_rid)
    s.wait_full("col", s.lab.dut_rid)
    gen.originate([_A, _C])
    # The probe runs through every T1 procedure: 6.1/6.2 remove and reinstall the DUT's OSPF
    # route to the probe's source; 5.1-5.3 change routes off the probe path, which the
    # stream then shows undisturbed (the report says why).
    _start_probe(s, gen, col, [_spf_stub(10)])


SPF_STUB = "198.18.254.0"


def _spf_stub(cost: int) -> RouterLink:
    """The stub behind the generator whose cost §5.3's trigger changes (a route in the FIB)."""
    return RouterLink(IPv4Address(SPF_STUB), IPv4Address("255.255.255.0"), LinkType.STUB, cost)


def _originate(h: RouterHandle, specs: Sequence[LsaSpec]) -> None:
    # Thousands of LSAs take the loop a while on a busy machine: a timeout sized to the batch.
    h.call(lambda r, now: r.originate(specs, now), timeout=30.0 + len(specs) / 100)


def _flush(h: RouterHandle, specs: Sequence[LsaSpec]) -> None:
    keys = [sp.key for sp in specs]
    h.call(lambda r, now: r.flush(keys, now), timeout=30.0 + len(keys) / 100)


def _probe_stub() -> RouterLink:
    return RouterLink(IPv4Address(PROBE_TARGET), IPv4Address("255.255.255.255"), LinkType.STUB, 1)


def _settle(h: RouterHandle, timeout: float = 12.0) -> None:
    """Until everything we flooded is acked (the DUT's delayed acks take up to ~1 s). A loop
    busy sending thousands of LSAs may not answer a query at once: asked again until the
    deadline, never an error here."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        with contextlib.suppress(TimeoutError):
            if h.call(lambda r, now: r.retransmit_count(), timeout=max(left, 1.0)) == 0:
                return
        time.sleep(0.05)


def _seq(h: RouterHandle, spec: LsaSpec) -> int:
    return h.call(lambda r, now: _seq_of(r, spec.key))


def _seq_of(r: EmulatedRouter, key: Any) -> int:
    entry = r.lsa(key)
    if entry is None:
        raise TrialFailed(f"{key} is not in our own database")
    return int(entry.lsa.header.seq)


def _dups(r: EmulatedRouter, keys: Sequence[Any], now: int) -> list[Any]:
    assert isinstance(r, BenchRouter)
    # The generator has one interface towards the DUT in the sessions that send duplicates.
    return r.send_duplicates(keys, r.interface_names[0], now)


def _drive_5_1(s: Session) -> None:
    gen = s.routers["gen"]
    par = {"5.1": {"observer": "gen", "ifname": s.gen_if, "collector": "col"}}

    def trial(i: int) -> None:
        s.marker.step("5.1", i, "dup", key=_key(_A), seq=_seq(gen, _A))
        gen.call(lambda r, now: _dups(r, [_A.key], now))
        time.sleep(0.1)

        new = _ext(100 + i)  # a new LSA, not a new instance: a FIB entry every trial

        def pair(r: EmulatedRouter, now: int) -> list[Any]:
            ev = r.originate([new], now)
            _dups(r, [_C.key], now)
            return ev

        gen.call(pair)
        s.marker.step(
            "5.1", i, "new", key=_key(new), seq=_seq(gen, new), prefix=f"{new.link_state_id}/32"
        )
        s.marker.step("5.1", i, "dup2", key=_key(_C), seq=_seq(gen, _C))
        _settle(gen, 3.0)

    _trials(s, ["5.1"], 1, trial, par)


def _drive_5_2(s: Session) -> None:
    """Bursts of N new AS-external-LSAs. Every trial floods prefixes the DUT does not have (the
    previous burst is flushed first and the prefix block rotates over three), so every trial
    also installs N routes: the FIB proxy and the install rate of the scaling rows.

    In T2 (the lab) the collector also hears the generator over their direct link, the RFC's
    reference, and floods nothing to the DUT meanwhile (RFC 4061 §5.2): were it to pass the
    burst on, the DUT could get an LSA from the collector first and never flood it back (RFC
    2328 §13.3), and the end event would never come. Flooding resumes after 5.2 (6.3 needs
    it). Without the direct link (`--dut external`) the reference is our last send stamp."""
    gen = s.routers["gen"]
    col = s.routers.get("col")
    direct = s.topology == "T2" and col is not None
    par: dict[str, Any] = {"observer": "col", "generator": "gen", "ifname": s.gen_if,
                           "col_ifname": s.col_if}  # fmt: skip
    if direct:
        par.update(
            direct_ifname="eth-gen", generator_rid=GEN_RID, generator_direct_ifname="eth-col"
        )
        assert col is not None
        col.call(lambda r, now: r.set_flooding(s.col_if, False, now))
    try:
        _bursts_5_2(s, gen, {"5.2": par})
    finally:
        if direct:
            assert col is not None
            col.call(lambda r, now: r.set_flooding(s.col_if, True, now))


def _bursts_5_2(s: Session, gen: RouterHandle, par: dict[str, Any]) -> None:
    for n in s.settings.lsas:
        previous: list[LsaSpec] = []

        def trial(i: int, n: int = n, previous: list[LsaSpec] = previous) -> None:
            if previous:
                _flush(gen, previous)
                _settle(gen, 10.0 + n / 500)
                time.sleep(1.5 + n / 5_000)  # FRR deletes externals on its 1 s ASE timer
            specs = [_ext(1000 + (i % 3) * n + j) for j in range(n)]
            s.marker.step("5.2", i, "burst", lsas=n)
            mark = len(s.log.events)
            _originate(gen, specs)
            _settle(gen, 10.0 + n / 500)
            # The last floods and FIB installs: until every prefix of the burst is in the FIB
            # (netlink), bounded. FRR installs new externals at once in T1 but on its 1 s ASE
            # timer in T2: a fixed sleep cut the FIB proxy and the install rate off there.
            if s.fib is not None:
                _wait_fib(s, mark, {f"{sp.link_state_id}/32" for sp in specs}, 2.5 + n / 1_000)
            else:  # --dut external: no FIB to watch
                time.sleep(0.5 + n / 5_000)
            previous[:] = specs

        _trials(s, ["5.2"], n, trial, par)
        if previous:
            _flush(gen, previous)
            _settle(gen, 10.0 + n / 500)
            time.sleep(1.5 + n / 5_000)


def _wait_fib(s: Session, since: int, prefixes: set[str], timeout: float) -> None:
    """Until the FIB watcher logged a route-add for each of `prefixes` after event `since`."""
    deadline = time.monotonic() + timeout
    missing = set(prefixes)
    while missing and time.monotonic() < deadline:
        time.sleep(0.05)
        events = s.log.events
        end = len(events)
        for e in events[since:end]:
            if e.source == "fib" and e.event == "route-add":
                missing.discard(str(e.get("prefix")))
        since = end
    time.sleep(0.2)


def _drive_5_3(s: Session) -> None:
    gen = s.routers["gen"]
    par = {"5.3": {"observer": "gen", "ifname": s.gen_if}}
    gen_key = lsa_key(1, GEN_RID, GEN_RID)
    dut = s.dut
    assert dut is not None

    def trial(i: int) -> None:
        before = dut.spf_report()  # white-box: the DUT's SPF count before the trigger
        s.marker.step("5.3", i, "dup0", key=_key(_A), seq=_seq(gen, _A))
        gen.call(lambda r, now: _dups(r, [_A.key], now))
        time.sleep(0.1)
        cost = 20 if i % 2 == 0 else 10

        def pair(r: EmulatedRouter, now: int) -> list[Any]:
            # The probe's source stays in the router-LSA: only the SPF stub's cost changes.
            ev = r.set_extra_links([_spf_stub(cost), _probe_src_stub()], now)
            _dups(r, [_C.key], now)
            return ev

        gen.call(pair)
        seq = gen.call(lambda r, now: _seq_of(r, _router_key(r)))
        s.marker.step("5.3", i, "trigger", key=gen_key, seq=seq, prefix=f"{SPF_STUB}/24")
        s.marker.step("5.3", i, "dup", key=_key(_C), seq=_seq(gen, _C))
        _settle(gen, 3.0)
        after = dut.spf_report()
        if before is not None and after is not None:
            s.log.write("dut", "spf", proc="5.3", trial=i, runs_before=before["runs"], **after)

    _trials(s, ["5.3"], 1, trial, par)


def _router_key(r: EmulatedRouter) -> Any:
    for key in r.lsdb:
        if key.ls_type == 1 and key.advertising_router == r.router_id:
            return key
    raise TrialFailed("our router-LSA is not in our own database")


def _wait_acked(
    s: Session,
    router: str,
    ifname: str,
    since: int,
    timeout: float,
    expect: Collection[str] = (),
) -> None:
    """Keep the trial open until the DUT acknowledged (explicitly or by flooding it back) every
    LSA instance `router` sent on `ifname` since event number `since`: LSUs answering the DUT's
    requests are on no retransmission list, so an empty list does not mean "all acked", and
    BIRD's acks come seconds later.

    `expect`: keys the DUT must have fetched too. FRR requests a large database in several LSRs
    and may hold the next one for its retransmit interval (the LSR stall): our Full and an ack
    for everything sent *so far* then come seconds before the DUT asked for the rest, and the
    RFC's end event (the ack for the generator's last LSA) is still to come."""
    deadline = time.monotonic() + timeout
    dut = s.lab.dut_rid
    while time.monotonic() < deadline:
        sent: dict[str, int] = {}
        acked: dict[str, int] = {}
        for e in s.log.events[since:]:
            if e.source != router or e.get("ifname") != ifname:
                continue
            if e.event == "tx" and e.get("type") == "lsu":
                for lsa in e.get("lsas", ()):
                    sent[lsa["key"]] = max(sent.get(lsa["key"], lsa["seq"]), lsa["seq"])
            elif e.event == "rx" and (
                e.get("type") == "ack" or (e.get("type") == "lsu" and e.get("rid") == dut)
            ):
                for lsa in e.get("acked", ()) or e.get("lsas", ()):
                    acked[lsa["key"]] = max(acked.get(lsa["key"], lsa["seq"]), lsa["seq"])
        if (
            sent
            and all(k in sent for k in expect)
            and all(acked.get(k, seq - 1) >= seq for k, seq in sent.items())
        ):
            time.sleep(0.2)
            return
        time.sleep(0.1)


def _adjacency_trials(
    s: Session,
    proc: str,
    down: Callable[[], None],
    up: Callable[[int], None],
    extra: dict[str, Any],
    *,
    fetch_all: bool = True,
) -> None:
    """`fetch_all`: the DUT must fetch every LSA of the burst from the generator (6.1, 6.2); in
    6.3 it has them already, through the collector."""
    gen = s.routers["gen"]
    for n in s.settings.lsas:
        specs = [_ext(100_000 + i) for i in range(n)]
        _originate(gen, specs)
        _settle(gen, 10.0 + n / 500)
        par = {proc: {"observer": "gen", "ifname": s.gen_if, "collector": "col", **extra}}

        def trial(i: int, specs: list[LsaSpec] = specs, n: int = n) -> None:
            down()
            time.sleep(1.1)  # our MinLSInterval since the last instance
            _originate(gen, specs)  # new instances the DUT must fetch once adjacent
            mark = len(s.log.events)
            up(i)
            s.wait_full("gen", s.lab.dut_rid)
            _settle(gen, 10.0 + n / 200)
            wait = 10.0 + n / 200 + 2 * (s.profile.retransmit_s or 5)
            expect = {_key(sp) for sp in specs} if fetch_all else set()
            _wait_acked(s, "gen", s.gen_if, mark, wait, expect=expect)

        _trials(s, [proc], n, trial, par)
        _flush(gen, specs)
        _settle(gen, 10.0 + n / 500)


def _drive_6_1(s: Session) -> None:
    gen = s.routers["gen"]

    def down() -> None:
        gen.interface_down(s.gen_if)
        s.lab.link_down("gen", "gen")
        time.sleep(0.2)

    def up(i: int) -> None:
        s.lab.link_up("gen", "gen")
        gen.interface_up(s.gen_if)

    _adjacency_trials(s, "6.1", down, up, {})


def _drive_6_2(s: Session) -> None:
    dut = s.dut
    gen = s.routers["gen"]
    if s.settings.dut == "external":
        _drive_6_2_external(s)
        return
    if dut is None or s.settings.dut not in ("frr", "bird"):
        raise TrialFailed("OSPF cannot be disabled on this DUT's interface from here")

    def ospf(enable: bool) -> None:
        if s.settings.dut == "frr":
            no = "no " if enable else ""
            dut.vtysh(f"configure terminal\ninterface eth-gen\n{no}ip ospf passive")  # type: ignore[attr-defined]
        else:
            dut.birdc("enable dut" if enable else "disable dut")  # type: ignore[attr-defined]

    def down() -> None:
        ospf(False)
        if not gen.wait_for(
            lambda r: not any(str(nb.router_id) == s.lab.dut_rid for nb in r.neighbors()),
            s.dead_s + 3,
        ):
            raise TrialFailed("the generator never lost the DUT after OSPF was disabled")

    def up(i: int) -> None:
        s.marker.step("6.2", i, "ospf-enable")
        ospf(True)

    _adjacency_trials(s, "6.2", down, up, {})


def _drive_6_2_external(s: Session) -> None:
    """§6.2 against a router that already runs OSPF on the link, from our side: our generator
    goes silent on it until the router's dead interval has dropped us, then starts its Hellos
    again (step "ospf-enable"); the start event stays the RFC's, the router's first Hello
    after that. The deviation (OSPF was enabled on *our* end, not the DUT's) is in the report."""
    gen = s.routers["gen"]

    def down() -> None:
        gen.interface_down(s.gen_if)
        time.sleep(s.dead_s + 1.0)  # the router's RouterDeadInterval (heard in its Hellos)

    def up(i: int) -> None:
        s.marker.step("6.2", i, "ospf-enable", side="tester")
        gen.interface_up(s.gen_if)

    _adjacency_trials(s, "6.2", down, up, {})


def _setup_t2(s: Session) -> None:
    s.add("gen", GEN_RID, [("gen", "eth-dut", "192.0.2.2/30"), ("gen", "eth-col", "192.0.2.9/30")])
    s.add(
        "col", COL_RID, [("col", "eth-dut", "198.51.100.2/30"), ("col", "eth-gen", "192.0.2.10/30")]
    )
    s.wait_full("gen", s.lab.dut_rid)
    s.wait_full("col", s.lab.dut_rid)
    s.wait_full("gen", COL_RID)


def _drive_6_3(s: Session) -> None:
    gen, col = s.routers["gen"], s.routers["col"]

    def down() -> None:
        gen.interface_down("eth-dut")
        s.lab.link_down("gen", "gen")
        time.sleep(0.2)

    def up(i: int) -> None:
        _settle(col, 15.0)  # the DUT has the new instances, through the collector
        time.sleep(1.0)
        s.lab.link_up("gen", "gen")
        gen.interface_up("eth-dut")

    _adjacency_trials(s, "6.3", down, up, {}, fetch_all=False)


def _setup_t3(s: Session) -> None:
    s.add(
        "r1",
        R1_RID,
        [("r1", "eth-lan", "192.0.2.66/27")],
        network_type=NetworkType.BROADCAST,
        priority=100,
    )
    s.add(
        "r2",
        R2_RID,
        [("r2", "eth-lan", "192.0.2.67/27")],
        network_type=NetworkType.BROADCAST,
        priority=0,
    )
    s.wait_full("r1", s.lab.dut_rid)
    s.wait_full("r2", s.lab.dut_rid)


def _restart_dut(s: Session) -> None:
    assert s.dut is not None
    s.dut.stop()
    s.start_dut()


def _network_lsas(r: EmulatedRouter, dut: IPv4Address) -> set[tuple[str, int]]:
    return {
        (str(k), int(e.lsa.header.seq))
        for k, e in r.lsdb.items()
        if k.ls_type == 2 and k.advertising_router == dut and not e.is_maxage
    }


def _network_lsa_snapshot(s: Session, h: RouterHandle) -> set[tuple[str, int]]:
    dut = IPv4Address(s.lab.dut_rid)
    return set(h.call(lambda r, now: _network_lsas(r, dut)))


def _wait_network_lsa(
    s: Session, h: RouterHandle, before: set[tuple[str, int]], timeout: float = 12.0
) -> None:
    """Keep the trial open until a DUT network-LSA not in `before` reached `h` (BIRD paces it
    by its MinLSInterval of 5 s); the analysis finds the packet, this only waits for it.

    `before` is taken *before the trial's event*: taken here, after the DUT had already sent
    its network-LSA (FRR does so within milliseconds of Full), it held that LSA, and the wait
    ran its whole timeout every trial (12 s of each 6.4 and 6.5 trial, until this fix)."""
    dut = IPv4Address(s.lab.dut_rid)
    h.wait_for(lambda r: bool(_network_lsas(r, dut) - before), timeout)
    time.sleep(0.2)


def _drive_6_4(s: Session) -> None:
    r1, r2 = s.routers["r1"], s.routers["r2"]
    par = {"6.4": {"observer": "r2", "r1": "r1", "r1_ifname": "eth-lan"}}

    def roles() -> tuple[str, str]:
        return r2.call(lambda r, now: (str(r.dr("eth-lan")), str(r.bdr("eth-lan"))))

    def trial(i: int) -> None:
        r1.start_hellos("eth-lan")
        if roles() != (R1_LAN, DUT_LAN):
            _restart_dut(s)  # the DR is sticky: only a fresh DUT becomes BDR under R1 again
        s.wait_full("r1", s.lab.dut_rid)
        s.wait_full("r2", s.lab.dut_rid)
        deadline = time.monotonic() + 2 * s.dead_s + 5
        while roles() != (R1_LAN, DUT_LAN):
            if time.monotonic() > deadline:
                raise TrialFailed(f"the DUT did not become BDR under R1 (DR/BDR {roles()})")
            time.sleep(0.2)
        before = _network_lsa_snapshot(s, r2)
        r1.stop_hellos("eth-lan")
        s.marker.step("6.4", i, "stop-hellos")  # the speaker logged `link down how=hellos`
        if not r2.wait_for(lambda r: str(r.dr("eth-lan")) == DUT_LAN, s.dead_s + 5):
            raise TrialFailed("the DUT never took over as DR after R1 went silent")
        _wait_network_lsa(s, r2, before)

    _trials(s, ["6.4"], 0, trial, par)
    r1.start_hellos("eth-lan")


def _drive_6_5(s: Session) -> None:
    """6.5 and 6.6 from one trial: a fresh DUT comes up on the LAN with R1 (priority 0)."""
    assert s.speaker is not None
    s.speaker.remove_router("r1")
    s.speaker.remove_router("r2")
    par = {p: {"observer": "r1", "ifname": "eth-lan"} for p in ("6.5", "6.6")}

    def trial(i: int) -> None:
        assert s.dut is not None and s.speaker is not None
        s.dut.stop()
        with contextlib.suppress(Exception):
            s.speaker.remove_router("r1")
        s.add(
            "r1",
            R1_RID,
            [("r1", "eth-lan", "192.0.2.66/27")],
            network_type=NetworkType.BROADCAST,
            priority=0,
        )
        time.sleep(0.2)
        before = _network_lsa_snapshot(s, s.routers["r1"])  # a new R1: empty, DUT stopped
        for p in ("6.5", "6.6"):
            s.marker.step(p, i, "r1-up")
        s.start_dut()
        s.wait_full("r1", s.lab.dut_rid, timeout=3 * s.dead_s + 10)
        _wait_network_lsa(s, s.routers["r1"], before)

    _trials(s, ["6.5", "6.6"], 0, trial, par)


def _setup_t4(s: Session) -> None:
    gen = s.add(
        "gen", GEN_RID, [("gen", "eth-dut", "192.0.2.2/30"), ("gen", "eth-dut2", "192.0.2.6/30")]
    )
    col = s.add("col", COL_RID, [("col", "eth-dut", "198.51.100.2/30")])
    s.wait_full("gen", s.lab.dut_rid)
    s.wait_full("col", s.lab.dut_rid)
    # The DUT's route back to gen moves from link 1 to link 2 when link 1 fails.
    with contextlib.suppress(Exception):
        s.lab.ipr("gen").route("replace", dst="203.0.113.0/24", gateway="192.0.2.5", priority=200)
    _start_probe(s, gen, col, [])


PROBE_SRC = "198.18.255.1"  # outside every LSA block the procedures inject (198.18.0-171.x)


def _probe_src_stub() -> RouterLink:
    return RouterLink(IPv4Address(PROBE_SRC), IPv4Address("255.255.255.255"), LinkType.STUB, 1)


def _start_probe(
    s: Session, gen: RouterHandle, col: RouterHandle, gen_links: list[RouterLink]
) -> None:
    """The data-plane probe from gen's loopback to 203.0.113.77 on col's. Both /32s are known
    to the DUT *only through OSPF* (stubs in our router-LSAs), never as connected routes: the
    DUT forwards the stream exactly while its OSPF routes to both ends are installed, so every
    event that removes or installs them shows as packets lost and restored."""
    with contextlib.suppress(Exception):  # exists already (a second session in this lab)
        ipr = s.lab.ipr("gen")
        ipr.addr("add", index=ipr.link_lookup(ifname="lo")[0], address=PROBE_SRC, prefixlen=32)
    with contextlib.suppress(Exception):
        s.lab.ipr("col").route("replace", dst="198.18.255.0/24", gateway="198.51.100.1")
    links = [*gen_links, _probe_src_stub()]
    gen.call(lambda r, now: r.set_extra_links(links, now))
    col.call(lambda r, now: r.set_extra_links([_probe_stub()], now))
    _settle(gen)
    time.sleep(1.0)  # the DUT's SPF and FIB install of both /32s
    s.probe = Probe(
        s.log,
        src_ns=s.lab.ns("gen"),
        src=PROBE_SRC,
        dst_ns=s.lab.ns("col"),
        dst=PROBE_TARGET,
        rate_pps=int(s.settings.rate_pps),
    ).start()
    # The first trial starts from a stream that flows: BIRD originates its router-LSA (and so
    # has a route to the probe's source) up to its MinLSInterval after Full.
    _await_flowing(s)


def _await_route(s: Session, role: str, dst: str, dev: str) -> bool:
    """Until ``role``'s kernel routes ``dst`` over ``dev`` (polled, not logged; bounded by
    `dataplane_wait_s`); True if it does."""
    return _poll(s, lambda: s.lab.route_get(role, dst, log=False).get("dev") == dev, 0.05)


def _dut_holds(s: Session) -> tuple[float, float]:
    """The DUT's (MinLSArrival, MinLSInterval) in seconds: its profile's where the daemon takes
    them (FRR), its quirks' where it has them built in (BIRD: 1 s and 5 s), else RFC 2328
    Appendix B's (1 s, 5 s) -- an external router's are not ours to know."""
    arrival, interval = 1.0, 5.0
    p = s.profile
    if s.settings.dut == "frr":
        if p.min_arrival_ms is not None:
            arrival = p.min_arrival_ms / 1e3
        if p.lsa_throttle_ms is not None:
            interval = p.lsa_throttle_ms / 1e3
    for q in s.dut.quirks() if s.dut is not None else ():
        if q.name == "min-ls-interval" and q.value_ms:
            interval = q.value_ms / 1e3
    return arrival, interval


def _await_settled(s: Session, observer: str, dut_key: LsaKey) -> bool:
    """Until neither of the DUT's LSA rate limits can touch the coming trigger (bounded by
    `dataplane_wait_s`); True if so.

    RFC 4061 §6.7/§6.8 start from a converged DUT, and the heal of the previous trial (or the
    lab's set-up) has just changed two router-LSAs:
    * ours: the DUT discards an instance that arrives within its MinLSArrival of the one it
      installed (RFC 2328 §13 (5a)), and takes the new one only from our retransmission, an
      RxmtInterval later. Our post-failure router-LSA is what BIRD reroutes on (its own comes
      later, below): in CI a failure 0.58 s after our previous instance (itself a
      retransmission) cost the stream 4.46 s instead of a tick. So: our router-LSA acked by the
      DUT, and sent last at least MinLSArrival ago.
    * the DUT's: its new router-LSA may not follow its previous one within its MinLSInterval
      (§12.4; BIRD 5 s, fixed), so a failure soon after the heal's origination ends on that
      timer, not on the DUT's work. So: the DUT's router-LSA announces both links to us again
      (the heal's instance is out: one held back is invisible from here), and is at least
      MinLSInterval old.
    `figures._settled` judges the same from the log and marks a trial that started earlier
    invalid."""
    arrival, interval = _dut_holds(s)
    margin_ns = 200_000_000
    gen_key = LsaKey(1, IPv4Address(GEN_RID), IPv4Address(GEN_RID))
    last_sent = 0

    def ours(r: EmulatedRouter, now: int) -> bool:
        nonlocal last_sent
        own = r.lsa(gen_key)
        pending = r.awaiting_ack(gen_key)
        sent = max(own.installed_ns if own is not None else 0, pending or 0)
        last_sent = max(last_sent, sent)  # a retransmission acked since the last poll
        return pending is None and now - last_sent >= arrival * 1e9 + margin_ns

    gen, watch = s.routers["gen"], s.routers[observer]
    # link 1 goes to the generator, link 2 to the observer (the generator again in our lab)
    ends = sorted([GEN_RID, str(watch.call(lambda r, now: r.router_id))])

    def theirs(r: EmulatedRouter, now: int) -> bool:
        e = r.lsa(dut_key)
        if e is None or not isinstance(e.lsa.body, RouterLsaBody):
            return False
        p2p = sorted(
            str(link.link_id)
            for link in e.lsa.body.links
            if link.link_type == LinkType.POINT_TO_POINT and str(link.link_id) in ends
        )
        return p2p == ends and now - e.installed_ns >= interval * 1e9 + margin_ns

    return _poll(s, lambda: bool(gen.call(ours)) and bool(watch.call(theirs)), 0.05)


def _in_lab(s: Session) -> bool:
    """Our own T4 lab (not --dut external): the black hole and `route_get` are ours to use."""
    return getattr(s.lab, "topology", None) == "T4"


def _link_down_trials(
    s: Session, proc: str, fail: Callable[[int], None], heal: Callable[[], None]
) -> None:
    observer, link2 = s.link2
    watch = s.routers[observer]
    in_lab = _in_lab(s)
    par = {
        proc: {
            "observer": observer,
            "link1_router": "gen",
            "link1": s.gen_if,
            "link2": link2,
            # the DUT's side of link 1, whose carrier notice 6.7 splits off (the lab's only)
            "dut_link1": "eth-gen" if in_lab else None,
            "prefix": "198.18.255.1/32",
        }
    }
    dut_lsa = LsaKey(1, IPv4Address(s.lab.dut_rid), IPv4Address(s.lab.dut_rid))
    phase = random.Random()

    def newest() -> int:
        entry = watch.call(lambda r, now: r.lsa(dut_lsa))
        return 0 if entry is None else int(entry.lsa.header.seq)

    def trial(i: int) -> None:
        # RFC 4061 §6.7/§6.8 start from a converged DUT, and the loss window is link 1's only if
        # the probe's replies take link 1 (the cheaper: `DUT_COSTS`). BIRD's router-LSA, and so
        # its route to the probe's source, can come seconds after Full, and once (in CI) the
        # DUT's kernel answered "no route" when the old code pulled link 1. Wait for both, and
        # for the DUT's LSA rate limits to be out of the way (`_await_settled`), bounded; a
        # trial that starts without them anyway is invalid (`figures._link1_path`, `_settled`).
        if in_lab:
            _await_route(s, "dut", PROBE_SRC, "eth-gen")
        _await_flowing(s)
        _await_settled(s, observer, dut_lsa)
        # Where the DUT sends the probe's replies now and, after the reroute, then: logged, so
        # a report shows the path the loss window is of.
        if in_lab:
            s.lab.route_get("dut", PROBE_SRC)
        # A random phase: the waits above end at a fixed offset from the DUT's last
        # origination, which BIRD makes on its 1 s tick, so without it every trial failed the
        # link at the same phase of that tick and five figures agreed to 25 ms (0.46-0.49 s)
        # on what is the tick's phase, judged "the DUT's work". Spread over a period, the
        # trials sample any periodic DUT timer, and the verdict can name it.
        time.sleep(0.3 + phase.uniform(0.0, 1.0))
        before = newest()
        fail(i)
        limit = time.monotonic() + s.dead_s + 6
        while newest() == before and time.monotonic() < limit:
            time.sleep(0.05)
        time.sleep(0.5)
        # Link 1 stays failed until the stream flows again over link 2 (bounded): a DUT that
        # reroutes after its router-LSA (BIRD on its tick) must not be "restored" by our heal.
        _await_flowing(s)
        if in_lab:
            s.lab.route_get("dut", PROBE_SRC)
        heal()
        # Our side may still hold the old adjacency as Full until the DUT's next Hello says
        # otherwise (6.8: the DUT dropped us, we never dropped it): wait a Hello out first.
        time.sleep(s.hello_s + 0.5)
        s.wait_full_on("gen", s.gen_if, s.lab.dut_rid)
        time.sleep(1.0)

    _trials(s, [proc], 0, trial, par)


def _drive_6_7(s: Session) -> None:
    gen = s.routers["gen"]

    def fail(i: int) -> None:
        s.lab.link_down("gen", "gen")
        gen.interface_down(s.gen_if)

    def heal() -> None:
        s.lab.link_up("gen", "gen")
        gen.interface_up(s.gen_if)
        with contextlib.suppress(Exception):
            s.lab.ipr("gen").route(
                "replace", dst="203.0.113.0/24", gateway="192.0.2.5", priority=200
            )

    _link_down_trials(s, "6.7", fail, heal)


def _drive_6_8(s: Session) -> None:
    gen = s.routers["gen"]
    in_lab = _in_lab(s)

    def fail(i: int) -> None:
        # The link fails beyond layer 2: carrier up, nothing the DUT sends over it arrives (the
        # data plane too, `Lab.blackhole`; in the lab only), and our Hellos stop. Only the dead
        # interval tells.
        if in_lab:
            s.lab.blackhole("gen", True)
        gen.stop_hellos(s.gen_if)  # the speaker logs `link down how=hellos` at the call

    def heal() -> None:
        if in_lab:
            s.lab.blackhole("gen", False)
        gen.start_hellos(s.gen_if)

    _link_down_trials(s, "6.8", fail, heal)


# ---- --dut external: a real router on the user's interfaces ------------------------------------

# Why a procedure cannot run against an external router: the tool creates nothing on the user's
# interfaces and changes nothing on them or on the router; it only speaks OSPF and sends test
# traffic there (issue 8 item 5).
EXTERNAL_NOT_RUN: dict[str, str] = {
    "6.3": "not run on --dut external: it needs topology T2 (a generator-collector link "
    "beside the router, the generator's LSAs reaching the router through the collector while "
    "its own link is down), which two ports towards the router cannot give",
    "6.4": "not run on --dut external: it needs two emulated routers and the router on one "
    "broadcast LAN, and the DR's disappearance; two point-to-point ports are not that LAN",
    "6.5": "not run on --dut external: it restarts the router on a broadcast LAN, which only "
    "the router's operator can do",
    "6.6": "not run on --dut external: it restarts the router on a broadcast LAN, which only "
    "the router's operator can do",
}
# Run against an external router only with the collector: the DUT's new router-LSA is watched
# for there (the generator's only link is the one that failed).
EXTERNAL_NEED_COLLECTOR = ("5.2", "6.7", "6.8")
NO_COLLECTOR = "not run on --dut external with one --interface: it needs the collector (name a "
NO_COLLECTOR += "second --interface, towards the router)"


class ExternalLab:
    """What a `Session` asks of its lab, for the user's interfaces in our own namespace: no
    namespace, nothing created, nothing removed. The router's ID is learned from its Hellos."""

    topology = "external"

    def __init__(self, log: EventLog, ports: Mapping[str, str] | None = None) -> None:
        self.log = log
        self.dut_rid = "0.0.0.0"
        self.ports = dict(ports or {})  # link name ("gen") -> the user's interface
        self._taken_down: set[str] = set()

    def ns(self, role: str) -> None:
        return None

    def up(self) -> None:
        return None

    def set_link(self, link: str, role: str, up: bool) -> int:
        """Carrier of the user's port down/up (§6.1, §6.7: admin state of *our* end, which a
        real router sees as carrier loss); logged as `Lab.set_link` logs it. `down` puts back
        every port this took down."""
        from pyroute2 import IPRoute  # why: only a real run needs netlink (see cli)

        ifname = self.ports[link]
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=ifname)[0]
            t0 = time.time_ns()
            ipr.link("set", index=idx, state="up" if up else "down")
            t1 = time.time_ns()
        (self._taken_down.discard if up else self._taken_down.add)(ifname)
        self.log.write(
            "link", "up" if up else "down", t_ns=t0, ns=None, ifname=ifname, link=link,
            how="carrier", t_done_ns=t1,
        )  # fmt: skip
        return t0

    def link_down(self, link: str, role: str = "gen") -> int:
        return self.set_link(link, role, False)

    def link_up(self, link: str, role: str = "gen") -> int:
        return self.set_link(link, role, True)

    def down(self) -> None:
        for link, ifname in self.ports.items():
            if ifname in self._taken_down:
                with contextlib.suppress(Exception):
                    self.set_link(link, "gen", True)


def _check_external(interfaces: Sequence[str]) -> None:
    if not 1 <= len(interfaces) <= 2:
        raise BenchAborted(
            "--dut external takes one --interface (the generator's) or two (generator, "
            f"collector), not {len(interfaces)}"
        )
    if len(set(interfaces)) != len(interfaces):
        raise BenchAborted("--dut external: the generator and collector need two different ports")
    for ifname in interfaces:
        _ipv4_of(ifname)


def _ipv4_of(ifname: str) -> str:
    """The first IPv4 address with prefix already on `ifname` in our namespace (never set)."""
    from pyroute2 import IPRoute  # why: only a real run needs netlink (see cli)

    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        if not idx:
            raise BenchAborted(f"--interface {ifname}: no such network interface here")
        for msg in ipr.get_addr(index=idx[0], family=2):
            return f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}"
    raise BenchAborted(
        f"--interface {ifname} has no IPv4 address: give it the address of its link to the "
        "router first (the tool changes nothing on it)"
    )


def _external(
    settings: RunSettings,
    log: EventLog,
    marker: Marker,
    profile: TimerProfile,
    progress: Progress,
) -> None:
    """Every procedure the tester can drive from its own side of the user's ports: 5.1, 5.3,
    6.1 (carrier of our port), 6.2 (our Hellos start), and with the collector 5.2, 6.7, 6.8;
    the rest are marked not run, each with its reason. Our routers use the Hello and dead
    intervals the router announces (heard before we speak), so `--timers` need not match."""
    ifs = settings.interfaces
    runnable = ["5.1", "5.3", "6.1", "6.2", *(EXTERNAL_NEED_COLLECTOR if len(ifs) > 1 else ())]
    for p in settings.tests:
        if p not in runnable:
            marker.failed(p, EXTERNAL_NOT_RUN.get(p, NO_COLLECTOR))
    wanted = [p for p in PROCEDURES if p in settings.tests and p in runnable]
    if not wanted:
        return
    s = Session("T1", settings, log, marker, profile, progress)
    s.lab = ExternalLab(log, {"gen": ifs[0]})  # type: ignore[assignment]
    s.gen_if = ifs[0]
    s.col_if = ifs[-1]
    s.link2 = ("col", ifs[-1])
    ports = [DutPort(i, _ipv4_of(i)) for i in ifs]
    try:
        progress(f"listening for the router's Hellos on {ifs[0]}")
        _adopt_router_timers(s, ports[0])
        s.dut = ExternalDut(
            router_id="0.0.0.0",
            ports=ports,
            profile=profile.replace(hello_s=s.hello_s, dead_s=s.dead_s),
            ns=None,
            state_dir=Path("."),
            log=log,
        )
        s.dut.start()  # records the config event; starts nothing
        s.speaker = Speaker(log, router_factory=BenchRouter).start()
        progress(f"waiting for the router on {', '.join(ifs)}")
        gen = s.add("gen", GEN_RID, [("gen", ifs[0], ports[0].addr)])
        col = s.add("col", COL_RID, [("col", ifs[1], ports[1].addr)]) if len(ifs) > 1 else None
        try:
            s.lab.dut_rid = _wait_external_full(s, gen, ifs[0])
            if col is not None:
                s.wait_full("col", s.lab.dut_rid)
            gen.originate([_A, _C])
            gen.call(lambda r, now: r.set_extra_links([_spf_stub(10)], now))
            _settle(gen)
        except TrialFailed as exc:
            for p in wanted:
                marker.failed(p, str(exc))
            return
        for proc in wanted:
            s.current_lsas = None
            try:
                _PROCS[proc](s)
            except (TrialFailed, TimeoutError) as exc:
                marker.failed(proc, str(exc) or "our speaker timed out", lsas=s.current_lsas)
    finally:
        progress("closing our sockets, putting our ports back up")
        s.close()


def _adopt_router_timers(s: Session, port: DutPort) -> None:
    """Hear one of the router's Hellos before we speak and take its HelloInterval and
    RouterDeadInterval for our routers (RFC 2328 §10.5: a mismatch stops the adjacency); the
    log's `dut`/`hello-heard` event and every later Hello say where the report's hello and
    dead lines come from. Without one within two default Hello intervals, the `--timers`
    profile's stay (and the report says so)."""
    local = str(IPv4Interface(port.addr).ip)
    heard = listen_hello(port.ifname, local, 2 * 10 + 2)
    if heard is None:
        s.log.write("dut", "hello-heard", ifname=port.ifname, heard=False, wait_s=22)
        return
    t_rx, hello = heard
    s.hello_s, s.dead_s = int(hello["hello_s"]), int(hello["dead_s"])
    s.log.write(
        "dut", "hello-heard", t_ns=t_rx, ifname=port.ifname, heard=True, rid=hello["rid"],
        hello_s=s.hello_s, dead_s=s.dead_s, mask=hello["mask"], priority=hello["priority"],
    )  # fmt: skip


def _wait_external_full(s: Session, gen: RouterHandle, ifname: str) -> str:
    """The router's ID, once our generator is Full with it (learned from its Hellos)."""
    t = 3 * s.dead_s + 10

    def full(r: EmulatedRouter) -> bool:
        return any(nb.state == NeighborState.FULL for nb in r.neighbors(ifname))

    if not gen.wait_for(full, t):
        raise TrialFailed(
            f"no adjacency reached Full on {ifname} within {t:.0f} s: check the router's OSPF "
            f"on that link (area 0, point-to-point, hello {s.hello_s} s / dead {s.dead_s} s as "
            "--timers gives, MTU)"
        )
    rids = gen.call(
        lambda r, now: [
            str(nb.router_id) for nb in r.neighbors(ifname) if nb.state == NeighborState.FULL
        ]
    )
    return str(rids[0])


_PROCS: dict[str, Callable[[Session], None]] = {
    "5.1": _drive_5_1,
    "5.2": _drive_5_2,
    "5.3": _drive_5_3,
    "6.1": _drive_6_1,
    "6.2": _drive_6_2,
    "6.3": _drive_6_3,
    "6.4": _drive_6_4,
    "6.5": _drive_6_5,
    "6.7": _drive_6_7,
    "6.8": _drive_6_8,
}
