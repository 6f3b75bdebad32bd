"""Hand-built event logs with known answers: for the tests, and to try the report without root.

Each ``trial_*`` function appends one attempt at one procedure to a `SynthLog`, with the events
the real observers would write (kernel-stamped packets, link triggers, FIB changes, probe
losses) placed at times the caller chooses, so the figure the analysis must find is known
exactly. `frr_like_run` strings them into a whole run with FRR's timers (delayed ack 1 s, dead
4 s) and the pitfalls seen with FRR and BIRD (delayed acks, shared LSAcks, missing stamps).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from ....ospf.logformat import Event
from .trials import Marker

__all__ = ["DUT", "GEN", "SynthLog", "frr_like_run"]

DUT = "192.0.2.129"
GEN = "192.0.2.2"
COL = "198.51.100.2"
R1 = "192.0.2.66"
R2 = "192.0.2.67"
MS = 1_000_000
US = 1_000


class SynthLog:
    """A list of `Event` built by hand (no clock: every time is given)."""

    def __init__(self, t0: int = 1_765_000_000 * 1_000_000_000) -> None:
        self.events: list[Event] = []
        self.t = t0
        self.mark = Marker(self.write)
        self._pkt = 0
        self._seq = -2147483000

    def seq(self) -> int:
        """A fresh LS sequence number, newer than every one handed out before."""
        self._seq += 1
        return self._seq

    def write(self, source: str, event: str, t_ns: int | None = None, **fields: Any) -> Event:
        ev = Event(self.t if t_ns is None else t_ns, source, event, fields)
        self.events.append(ev)
        return ev

    def _packet(
        self,
        router: str,
        direction: str,
        t: int,
        ptype: str,
        ifname: str,
        rid: str,
        stamp: str | None,
        **fields: Any,
    ) -> Event:
        self._pkt += 1
        if stamp is None:
            stamp = "kernel-tx" if direction == "tx" else "kernel-rx"
        extra = {"t_user_ns": t - 5 * US} if direction == "tx" else {}
        return self.write(
            router,
            direction,
            t,
            ifname=ifname,
            type=ptype,
            rid=rid,
            stamp=stamp,
            len=44,
            pkt=self._pkt,
            **extra,
            **fields,
        )

    def lsu(
        self,
        router: str,
        t: int,
        lsas: Sequence[tuple[str, int]],
        *,
        direction: str = "tx",
        ifname: str = "veth-gen",
        rid: str | None = None,
        stamp: str | None = None,
    ) -> Event:
        rid = rid or (GEN if direction == "tx" else DUT)
        return self._packet(
            router,
            direction,
            t,
            "lsu",
            ifname,
            rid,
            stamp,
            lsas=[{"key": k, "seq": s, "age": 1} for k, s in lsas],
        )

    def ack(
        self,
        router: str,
        t: int,
        acked: Sequence[tuple[str, int]],
        *,
        ifname: str = "veth-gen",
        rid: str = DUT,
        stamp: str | None = None,
    ) -> Event:
        return self._packet(
            router,
            "rx",
            t,
            "ack",
            ifname,
            rid,
            stamp,
            acked=[{"key": k, "seq": s, "age": 1} for k, s in acked],
        )

    def hello(
        self,
        router: str,
        t: int,
        *,
        direction: str = "rx",
        ifname: str = "veth-gen",
        rid: str | None = None,
        dr: str = "0.0.0.0",
        dead_s: int = 4,
        stamp: str | None = None,
    ) -> Event:
        rid = rid or (DUT if direction == "rx" else GEN)
        return self._packet(
            router,
            direction,
            t,
            "hello",
            ifname,
            rid,
            stamp,
            dr=dr,
            bdr="0.0.0.0",
            neighbors=[],
            hello_s=1,
            dead_s=dead_s,
            priority=1,
        )

    def dbd(self, router: str, t: int, *, ifname: str = "veth-gen") -> Event:
        return self._packet(
            router, "rx", t, "dbd", ifname, DUT, None, flags=["MS"], dd_seq=1, mtu=1500, lsas=[]
        )

    def link(self, t: int, state: str, how: str, ifname: str = "veth-gen") -> Event:
        return self.write(
            "link",
            state,
            t,
            ns="twop-gen",
            ifname=ifname,
            how=how,
            t_done_ns=t + 200 * US,
            stamp="user",
        )

    def fib(self, t: int, prefix: str, event: str = "route-add") -> Event:
        return self.write(
            "fib",
            event,
            t,
            ns="twop-dut",
            prefix=prefix,
            table=254,
            proto=188,
            nexthops=[{"gw": GEN, "dev": "veth-dut-g"}],
            stamp="user",
        )

    def nbr(self, router: str, t: int, new: str) -> Event:
        return self.write(
            router,
            "nbr",
            t,
            ifname="veth-gen",
            nbr=DUT,
            addr="192.0.2.1",
            old="Loading",
            new=new,
            why="LoadingDone",
            stamp="user",
        )

    def probe_loss(
        self, t_first_lost: int, n_lost: int, rate_pps: float, restored: bool = True
    ) -> None:
        gap = round(1e9 / rate_pps)
        for i in range(n_lost):
            self.write(
                "probe", "lost", t_first_lost + i * gap, seq=1000 + i, tx_ns=t_first_lost + i * gap
            )
        if restored:
            self.write(
                "probe",
                "restored",
                t_first_lost + n_lost * gap,
                seq=1000 + n_lost,
                lost_run=n_lost,
                first_lost_seq=1000,
            )

    def dut_config(
        self,
        t: int,
        *,
        kind: str = "frr",
        profile: dict[str, Any] | None = None,
        quirks: list[dict[str, Any]] | None = None,
    ) -> Event:
        return self.write(
            "dut",
            "config",
            t,
            kind=kind,
            version="8.4.4",
            profile=profile if profile is not None else FRR_PROFILE,
            rendered="router ospf\n",
            quirks=quirks if quirks is not None else FRR_QUIRKS,
            stamp="user",
        )


FRR_PROFILE: dict[str, Any] = {
    "name": "tuned",
    "hello_s": 1,
    "dead_s": 4,
    "retransmit_s": 5,
    "spf_delay_ms": 0,
    "spf_hold_ms": 50,
    "lsa_throttle_ms": 0,
    "lsa_min_arrival_ms": 0,
}
FRR_QUIRKS: list[dict[str, Any]] = [
    {"name": "delayed-ack", "period_ms": 1000},
    {"name": "external-route timer (ASE)", "period_ms": 1000},
]


def _ext(i: int) -> str:
    return f"5/198.18.{i // 256}.{i % 256}/{GEN}"


def trial_5_1(
    s: SynthLog,
    trial: int,
    t: int,
    *,
    dup_ns: int,
    new_ns: int,
    gap_ns: int = 20 * US,
    new_ack_ns: int = 500 * MS,
    shared: bool = False,
    dup_stamp: str | None = None,
    retransmit: bool = False,
    flood_ns: int | None = 300 * US,
) -> int:
    """dupLSAprocTime = dup_ns, newLSAprocTime = new_ns: the figure is new_ns − dup_ns."""
    s.mark.start(
        "5.1", trial, t, lsas=1, dut_rid=DUT, observer="gen", ifname="veth-gen", collector="col"
    )
    dup, new, dup2 = (_ext(1), -2147483640), (_ext(2), s.seq()), (_ext(3), -2147483630)
    s.mark.step("5.1", trial, "dup", t + 1 * MS, key=dup[0], seq=dup[1])
    s.lsu("gen", t + 2 * MS, [dup], stamp=dup_stamp)
    s.ack("gen", t + 2 * MS + dup_ns, [dup])
    t2 = t + 100 * MS
    s.mark.step("5.1", trial, "new", t2 - 1 * MS, key=new[0], seq=new[1], prefix="198.18.0.2/32")
    s.mark.step("5.1", trial, "dup2", t2 - 1 * MS, key=dup2[0], seq=dup2[1])
    s.lsu("gen", t2, [new])
    s.lsu("gen", t2 + gap_ns, [dup2])
    if retransmit:
        s.lsu("gen", t2 + new_ns - 10 * US, [dup2])
    if shared:
        s.ack("gen", t2 + new_ns, [new, dup2])
    else:
        s.ack("gen", t2 + new_ns, [dup2])
        s.ack("gen", t2 + new_ack_ns, [new])
    if flood_ns is not None:
        s.lsu("col", t2 + flood_ns, [new], direction="rx", ifname="veth-col")
    s.fib(t2 + 600 * US, "198.18.0.2/32")
    end = t2 + max(new_ns, new_ack_ns) + 50 * MS
    s.mark.end("5.1", trial, end)
    return end


def trial_5_2(
    s: SynthLog,
    trial: int,
    t: int,
    *,
    n: int,
    flood_last_ns: int,
    direct_last_ns: int | None = None,
    per_lsu: int = 40,
    fib_last_ns: int | None = None,
    direct_skew_ns: int | None = None,
) -> int:
    """n LSAs in LSUs of per_lsu, sent 10 µs apart; the last reaches the collector via the DUT
    at t_last_send + flood_last_ns (or direct_last + flood_last_ns when the direct link runs).
    `direct_skew_ns`: the generator's sends on the direct link are logged, that much later
    than towards the DUT, and the direct arrivals are later by as much."""
    params: dict[str, Any] = (
        {"direct_ifname": "veth-col-g", "generator_rid": GEN} if direct_last_ns is not None else {}
    )
    if direct_skew_ns is not None:
        params["generator_direct_ifname"] = "veth-gen-c"
    skew = direct_skew_ns or 0
    s.mark.start(
        "5.2",
        trial,
        t,
        lsas=n,
        dut_rid=DUT,
        observer="col",
        generator="gen",
        ifname="veth-gen",
        col_ifname="veth-col",
        **params,
    )
    s.mark.step("5.2", trial, "burst", t + 1 * MS)
    seq = s.seq()
    keys = [(_ext(100 + i), seq) for i in range(n)]
    chunks = [keys[i : i + per_lsu] for i in range(0, n, per_lsu)]
    t_send = t + 2 * MS
    for j, chunk in enumerate(chunks):
        s.lsu("gen", t_send + j * 10 * US, chunk)
    t_last = t_send + (len(chunks) - 1) * 10 * US
    ref = t_last
    if direct_last_ns is not None:
        for j, chunk in enumerate(chunks):
            if direct_skew_ns is not None:
                s.lsu("gen", t_send + j * 10 * US + skew, chunk, ifname="veth-gen-c")
            s.lsu(
                "col",
                t_send + j * 10 * US + direct_last_ns + skew,
                chunk,
                direction="rx",
                ifname="veth-col-g",
                rid=GEN,
            )
        ref = t_send + (len(chunks) - 1) * 10 * US + direct_last_ns
    for j, chunk in enumerate(chunks):
        at = ref + flood_last_ns - (len(chunks) - 1 - j) * 10 * US
        s.lsu("col", at, chunk, direction="rx", ifname="veth-col")
    if fib_last_ns is not None:
        for i in range(n):
            s.fib(
                t_send + (i + 1) * fib_last_ns // n,
                f"198.18.{(100 + i) // 256}.{(100 + i) % 256}/32",
            )
    end = ref + flood_last_ns + (fib_last_ns or 0) + 100 * MS
    s.mark.end("5.2", trial, end)
    return end


def trial_5_3(
    s: SynthLog,
    trial: int,
    t: int,
    *,
    dup_ns: int,
    total_ns: int,
    gap_ns: int = 30 * US,
    shared: bool = False,
    same_lsu: bool = False,
    trig_ack_ns: int = 700 * MS,
    spf: tuple[int, int, int] | None = None,
    spf_after_ns: int = 200 * US,
) -> int:
    """totalSPFtime = total_ns, dupLSAprocTime = dup_ns: the figure is total_ns − dup_ns.

    `spf` = (duration µs, runs before, runs after): FRR's white-box reading at the trial's
    end, its last run started `spf_after_ns` after the trigger's send (negative: before it);
    "executed ... ago" in FRR's ms steps, as it prints durations of 1 ms and more."""
    s.mark.start("5.3", trial, t, lsas=1, dut_rid=DUT, observer="gen", ifname="veth-gen")
    dup0, trig, dup = (_ext(1), -2147483640), (f"1/{GEN}/{GEN}", s.seq()), (_ext(3), -2147483630)
    s.mark.step("5.3", trial, "dup0", t + 1 * MS, key=dup0[0], seq=dup0[1])
    s.lsu("gen", t + 2 * MS, [dup0])
    s.ack("gen", t + 2 * MS + dup_ns, [dup0])
    t2 = t + 100 * MS
    s.mark.step("5.3", trial, "trigger", t2 - MS, key=trig[0], seq=trig[1], prefix="203.0.113.0/24")
    s.mark.step("5.3", trial, "dup", t2 - MS, key=dup[0], seq=dup[1])
    if same_lsu:
        s.lsu("gen", t2, [trig, dup])
    else:
        s.lsu("gen", t2, [trig])
        s.lsu("gen", t2 + gap_ns, [dup])
    if shared:
        s.ack("gen", t2 + total_ns, [trig, dup])
    else:
        s.ack("gen", t2 + total_ns, [dup])
        s.ack("gen", t2 + trig_ack_ns, [trig])
    s.fib(t2 + 900 * US, "203.0.113.0/24")
    end = t2 + max(total_ns, trig_ack_ns) + 50 * MS
    if spf is not None:
        t_read = end - 10 * MS
        ago_us = (t_read - (t2 + spf_after_ns)) // 1000 // 1000 * 1000
        how = "vtysh show ip ospf: Last SPF duration"
        s.write("dut", "spf", t_read, proc="5.3", trial=trial, runs_before=spf[1], runs=spf[2],
                duration_us=spf[0], precision_us=1, text=f"{spf[0]} usecs", ago_us=ago_us,
                ago_precision_us=1000, read_from=how)  # fmt: skip
    s.mark.end("5.3", trial, end)
    return end


def trial_adjacency(
    s: SynthLog,
    proc: str,
    trial: int,
    t: int,
    *,
    n: int,
    hello_ns: int,
    ack_ns: int,
    full_ns: int,
    dataplane_wait_ns: int | None = None,
) -> int:
    """6.1/6.2/6.3: start (carrier up; or the DUT's first Hello hello_ns after the enable/up)
    → ack of the generator's last LSA at start + ack_ns. `dataplane_wait_ns`: the driver marks
    the procedure's end there and keeps the trial open that much longer for the probe."""
    s.mark.start(
        proc, trial, t, lsas=n, dut_rid=DUT, observer="gen", ifname="veth-gen", collector="col"
    )
    t_trig = t + 1 * MS
    if proc == "6.2":
        s.mark.step(proc, trial, "ospf-enable", t_trig)
    else:
        s.link(t_trig, "up", "carrier")
    t_start = t_trig if proc == "6.1" else t_trig + hello_ns
    s.hello("gen", t_trig + hello_ns)
    s.dbd("gen", t_start + full_ns // 2)
    seq = s.seq()
    keys = [(_ext(200 + i), seq) for i in range(n)]
    for j in range(0, n, 40):
        s.lsu("gen", t_start + full_ns // 2 + j * US, keys[j : j + 40])
    s.nbr("gen", t_start + full_ns, "Full")
    s.lsu(
        "col",
        t_start + full_ns + 200 * US,
        [(f"1/{DUT}/{DUT}", s.seq())],
        direction="rx",
        ifname="veth-col",
    )
    s.ack("gen", t_start + ack_ns, keys)
    s.fib(t_start + full_ns + 2 * MS, "198.18.1.0/32")
    end = t_start + ack_ns + 50 * MS
    if dataplane_wait_ns is not None:
        s.mark.step(proc, trial, "procedure-end", end, dataplane_wait_s=11.0)
        end += dataplane_wait_ns
    s.mark.end(proc, trial, end)
    return end


def trial_6_4(s: SynthLog, trial: int, t: int, *, after_dead_ns: int, dead_s: int = 4) -> int:
    """R1's last Hello at t+1ms; the DUT's network-LSA at R2 dead + after_dead_ns later."""
    s.mark.start("6.4", trial, t, dut_rid=DUT, observer="r2", r1="r1", r1_ifname="r1-eth")
    s.hello("r2", t, ifname="r2-eth", dead_s=dead_s)
    s.hello("r1", t + 1 * MS, direction="tx", ifname="r1-eth", rid=R1)
    s.mark.step("6.4", trial, "stop-hellos", t + 2 * MS)
    t_end = t + 1 * MS + dead_s * 1_000_000_000 + after_dead_ns
    s.lsu("r2", t_end, [(f"2/192.0.2.65/{DUT}", s.seq())], direction="rx", ifname="r2-eth")
    s.mark.end("6.4", trial, t_end + 10 * MS)
    return t_end + 10 * MS


def trial_6_5_6(
    s: SynthLog,
    proc: str,
    trial: int,
    t: int,
    *,
    first_hello_ns: int,
    dr_hello_ns: int,
    net_lsa_ns: int,
    dead_s: int = 4,
) -> int:
    """R1 up at t; the DUT's first Hello at +first_hello_ns, its first Hello naming a DR at
    +dr_hello_ns, its network-LSA at +net_lsa_ns (all from t)."""
    s.mark.start(proc, trial, t, dut_rid=DUT, observer="r1", ifname="r1-eth")
    s.mark.step(proc, trial, "r1-up", t)
    s.hello("r1", t + first_hello_ns, ifname="r1-eth", dead_s=dead_s)
    s.hello("r1", t + dr_hello_ns, ifname="r1-eth", dr=DUT, dead_s=dead_s)
    s.lsu("r1", t + net_lsa_ns, [(f"2/192.0.2.65/{DUT}", s.seq())], direction="rx", ifname="r1-eth")
    s.mark.end(proc, trial, t + net_lsa_ns + 10 * MS)
    return t + net_lsa_ns + 10 * MS


def trial_link_down(
    s: SynthLog,
    proc: str,
    trial: int,
    t: int,
    *,
    lsa_ns: int,
    dead_s: int = 4,
    loss: tuple[int, int] | None = None,
    hellos_after: bool = False,
    route_before: dict[str, Any] | None = None,
    prev_lsa_ns: int = 9 * MS,
    ours_ns: int | None = None,
) -> int:
    """6.7 (carrier down at t) or 6.8 (last Hello on link 1 at t): the DUT's new router-LSA
    over link 2 at t + lsa_ns. loss = (first lost after t, packets lost) at 1,000 pps.
    ``route_before``: our lab's run (``dut_link1`` "eth-gen"), the DUT's `route-get` answer
    logged before the trigger; None: no lab route read (as --dut external).
    ``prev_lsa_ns``: the DUT's current router-LSA reached us that long before t (its
    MinLSInterval runs from there); ``ours_ns``: we sent our router-LSA that long before t."""
    s.mark.start(
        proc,
        trial,
        t - 10 * MS,
        dut_rid=DUT,
        observer="gen",
        link1="veth-gen",
        link2="veth-gen2",
        prefix="198.51.100.0/30",
        **({} if route_before is None else {"dut_link1": "eth-gen"}),
    )
    if route_before is not None:
        s.write("lab", "route-get", t - 7 * MS, dst="198.18.255.1", **route_before)
    key = f"1/{DUT}/{DUT}"
    s.lsu("gen", t - prev_lsa_ns, [(key, s.seq())], direction="rx", ifname="veth-gen2")
    if ours_ns is not None:
        s.lsu("gen", t - ours_ns, [(f"1/{GEN}/{GEN}", s.seq())], ifname="veth-gen2")
    s.hello("gen", t - 8 * MS, ifname="veth-gen", dead_s=dead_s)
    if proc == "6.7":
        s.link(t, "down", "carrier")
    else:
        s.hello("gen", t, direction="tx", ifname="veth-gen")
        s.link(t + 100 * US, "down", "hellos")
        if hellos_after:
            s.hello("gen", t + 1_000 * MS, direction="tx", ifname="veth-gen")
    s.lsu("gen", t + lsa_ns, [(key, s.seq())], direction="rx", ifname="veth-gen2")
    s.fib(t + lsa_ns + 1 * MS, "198.51.100.0/30", "route-del")
    if loss is not None:
        s.probe_loss(t + loss[0], loss[1], 1000.0)
    end = t + lsa_ns + 200 * MS
    s.mark.end(proc, trial, end)
    return end


def frr_like_run(trials: int = 5, seed: int = 1) -> list[Event]:
    """A whole run of the eleven procedures with FRR-like behaviour (research §4.2): delayed
    acks uniform over the 1 s timer, duplicates acked at once, dead interval 4 s."""
    rnd = random.Random(seed)
    s = SynthLog()
    s.write(
        "lab",
        "log-start",
        s.t,
        version=1,
        host="synthetic",
        kernel="6.1.0",
        nproc=2,
        clock="CLOCK_REALTIME",
    )
    s.mark.conditions({"command_line": "twamp-bench ospf (synthetic)", "synthetic": True}, s.t)
    s.dut_config(s.t)
    s.write(
        "probe", "start", s.t, rate_pps=1000.0, dst="203.0.113.77", src="192.0.2.2", ns="twop-gen"
    )
    t = s.t + 1_000 * MS
    for i in range(trials):
        dup = rnd.randint(110, 240) * US
        t = (
            trial_5_1(
                s,
                i,
                t,
                dup_ns=dup,
                new_ns=dup + rnd.randint(60, 160) * US,
                new_ack_ns=rnd.randint(350, 1050) * MS,
            )
            + 1_100 * MS
        )
    for n in (100, 1000):
        for i in range(trials):
            t = (
                trial_5_2(
                    s,
                    i,
                    t,
                    n=n,
                    flood_last_ns=(n * 12 + rnd.randint(100, 400)) * US,
                    fib_last_ns=n * 22 * US,
                )
                + 1_100 * MS
            )
    for i in range(trials):
        t = (
            trial_5_3(
                s,
                i,
                t,
                dup_ns=rnd.randint(110, 240) * US,
                total_ns=rnd.randint(350, 1050) * MS,
                shared=True,
            )
            + 1_100 * MS
        )
    for proc in ("6.1", "6.2", "6.3"):
        for i in range(trials):
            t = (
                trial_adjacency(
                    s,
                    proc,
                    i,
                    t,
                    n=100,
                    hello_ns=rnd.randint(0, 1000) * MS,
                    ack_ns=rnd.randint(1500, 2500) * MS,
                    full_ns=rnd.randint(1, 3) * MS,
                )
                + 1_100 * MS
            )
    for i in range(trials):
        t = trial_6_4(s, i, t, after_dead_ns=rnd.randint(1, 5) * MS) + 1_100 * MS
    for proc in ("6.5", "6.6"):
        for i in range(trials):
            first = rnd.randint(0, 1000) * MS
            t = (
                trial_6_5_6(
                    s,
                    proc,
                    i,
                    t,
                    first_hello_ns=first,
                    dr_hello_ns=first + 4_000 * MS,
                    net_lsa_ns=first + 4_000 * MS + rnd.randint(1, 4) * MS,
                )
                + 1_100 * MS
            )
    for i in range(trials):
        t = (
            trial_link_down(
                s, "6.7", i, t, lsa_ns=rnd.randint(300, 1500) * US, loss=(0, rnd.randint(60, 110))
            )
            + 1_100 * MS
        )
    for i in range(trials):
        t = (
            trial_link_down(
                s,
                "6.8",
                i,
                t,
                lsa_ns=4_000 * MS + rnd.randint(100, 2800) * US,
                loss=(0, rnd.randint(4000, 4100)),
            )
            + 1_100 * MS
        )
    return s.events
