"""One convergence-lab session: lab, DUT, speaker, routers and observers, torn down together.

``with LabSession("frr", log_path="run.jsonl") as s:`` builds the topology's namespaces and
links, renders and starts the DUT, starts the FIB watcher, opens the speaker with the generator
(``s.gen``, on link ``gen``; in T4 also on ``gen2``) and the collector (``s.col``, on link
``col``) as emulated routers, optionally the TWAMP probe, and on exit (normal, exception,
Ctrl-C, SIGTERM) stops all of that in reverse order and removes every namespace. Procedure
drivers (issue 9) and the integration tests use exactly this.

`wait_adjacencies` turns the usual failures into one sentence each: the DUT never sent a Hello
("DUT never answers"), a neighbour stuck in ExStart (MTU or router-ID clash, with the router's
own diagnosis), or the DUT daemon died (with the tail of its log).
"""

from __future__ import annotations

import contextlib
import time
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from types import TracebackType
from typing import Any

from ..ospf.eventlog import EventLog
from ..ospf.events import InterfaceConfig, NeighborState, NetworkType
from ..ospf.io import Attachment, RouterHandle, Speaker
from .dut import PROFILES, Dut, TimerProfile, make_dut
from .errors import LabError
from .observers import FibWatcher, Probe
from .topology import PROBE_TARGET, Lab

__all__ = ["LabSession"]

GEN_RID = "192.0.2.2"
COL_RID = "198.51.100.2"


class LabSession:
    """Everything of one run (see module docstring); attributes are set by `__enter__`."""

    lab: Lab
    dut: Dut
    speaker: Speaker
    gen: RouterHandle
    col: RouterHandle | None
    fib: FibWatcher | None
    probe: Probe | None

    def __init__(
        self,
        dut_kind: str,
        *,
        topology: str = "T1",
        profile: TimerProfile | None = None,
        log: EventLog | None = None,
        log_path: str | Path | None = None,
        tag: str = "twamp",
        gen_rid: str = GEN_RID,
        col_rid: str = COL_RID,
        collector: bool = True,
        fib: bool = True,
        probe_rate: int | None = None,
        rxmt_interval_ns: int = 5_000_000_000,
        gen_mtu: int | None = None,
    ) -> None:
        self.dut_kind = dut_kind
        self.topology = topology
        self.profile = profile or PROFILES["tuned"]
        self.log = log if log is not None else EventLog(log_path, keep=log_path is None)
        self._own_log = log is None
        self.tag = tag
        self.gen_rid, self.col_rid = gen_rid, col_rid
        self.want_collector = collector and topology != "T3"
        self.want_fib = fib
        self.probe_rate = probe_rate
        self.rxmt_interval_ns = rxmt_interval_ns
        self.gen_mtu = gen_mtu  # announce another MTU than the link's (fault injection)
        self.col = None
        self.fib = None
        self.probe = None
        self._stack = contextlib.ExitStack()

    def iface(self, link: str, role: str) -> InterfaceConfig:
        """The emulated router's `InterfaceConfig` on its end of ``link`` (profile timers)."""
        port = self.lab.port(link, role)
        assert port.addr is not None
        hello = self.profile.hello_s or 10
        dead = self.profile.dead_s or 4 * hello
        return InterfaceConfig(
            port.ifname,
            IPv4Interface(port.addr),
            network_type=NetworkType.BROADCAST
            if link.startswith("lan")
            else NetworkType.POINT_TO_POINT,
            mtu=self.gen_mtu if (self.gen_mtu and role in ("gen", "r1")) else self.lab.mtu,
            hello_interval_s=hello,
            dead_interval_s=dead,
            rxmt_interval_ns=self.rxmt_interval_ns,
        )

    def __enter__(self) -> LabSession:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def _start(self) -> None:
        st = self._stack
        if self._own_log:
            st.callback(self.log.close)
        self.lab = st.enter_context(Lab(self.topology, tag=self.tag, log=self.log))
        self.dut = make_dut(self.dut_kind, self.lab, self.profile, log=self.log)
        self.dut.start()
        self.dut.wait_ready()
        if self.want_fib:
            self.fib = FibWatcher(self.lab.ns("dut"), self.log).start()
            st.callback(self.fib.stop)
        self.speaker = st.enter_context(Speaker(self.log))
        gen_links = [lk.name for lk in self.lab.links if lk.name in ("gen", "gen2")]
        if self.topology == "T3":
            gen_links = ["lan-r1"]
        role = "r1" if self.topology == "T3" else "gen"
        self.gen = self.speaker.add_router(
            "r1" if self.topology == "T3" else "gen",
            self.gen_rid,
            [Attachment(self.lab.ns(role), self.iface(lk, role)) for lk in gen_links],
        )
        if self.want_collector and "col" in self.lab.roles:
            self.col = self.speaker.add_router(
                "col", self.col_rid, [Attachment(self.lab.ns("col"), self.iface("col", "col"))]
            )
        if self.probe_rate:
            self.probe = Probe(
                self.log,
                src_ns=self.lab.ns("gen"),
                src=self.lab.port("gen", "gen").ip,
                dst_ns=self.lab.ns("col"),
                dst=PROBE_TARGET,
                rate_pps=self.probe_rate,
            ).start()
            st.callback(self.probe.stop)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and isinstance(exc, LabError):
            self.log.write("lab", "error", message=str(exc))
        self._stack.close()

    # ---- waiting, with one-sentence failures ---------------------------------------------
    def wait_adjacencies(self, timeout: float = 30.0) -> None:
        """Until gen (and col) are Full with the DUT, or a `LabError` naming the cause."""
        routers = [self.gen] + ([self.col] if self.col is not None else [])
        deadline = time.monotonic() + timeout
        dut = IPv4Address(self.lab.dut_rid)
        pending = list(routers)
        while pending:
            self.dut.check_alive()
            pending = [r for r in pending if not _full(r, dut)]
            if not pending:
                break
            stuck = [
                e
                for e in self.log.select(event="exstart-stuck")
                if e.source in {r.name for r in pending}
            ]
            if stuck:
                e = stuck[-1]
                raise LabError(
                    f"{e.source}'s adjacency with the DUT is stuck in {e.get('state', 'ExStart')} "
                    f"({e.get('cause')}): {e.get('hint')}"
                )
            if time.monotonic() >= deadline:
                r = pending[0]
                heard = any(ev.get("rid") == str(dut) for ev in self.log.select(r.name, "rx"))
                if not heard:
                    raise LabError(
                        f"the DUT never answered: no OSPF packet from {dut} reached {r.name} in "
                        f"{timeout:.0f} s; check that OSPF runs on the DUT's interface and that "
                        "area, hello and dead intervals match"
                    )
                states = r.neighbor_states()
                raise LabError(
                    f"{r.name} did not reach Full with the DUT within {timeout:.0f} s (now "
                    f"{states.get(str(dut), 'Down')}); if this stays in ExStart, suspect an MTU "
                    "mismatch or a router-ID clash"
                )
            time.sleep(0.05)

    def wait_acked(self, router: RouterHandle, timeout: float) -> bool:
        """Until ``router``'s retransmit lists are empty (everything it flooded is acked)."""
        return router.wait_for(lambda r: r.retransmit_count() == 0, timeout, poll=0.05)

    def wait_fib(self, prefix_of: str, count: int, timeout: float) -> bool:
        """Until the FIB watcher counts ``count`` installed routes starting with ``prefix_of``."""
        assert self.fib is not None, "the session runs without a FIB watcher"
        deadline = time.monotonic() + timeout
        while self.fib.count(prefix_of) < count:
            if time.monotonic() >= deadline:
                return False
            self.dut.check_alive()
            time.sleep(0.05)
        return True


def _full(r: RouterHandle, dut: IPv4Address) -> bool:
    nbrs: Any = r.neighbors()
    return any(n.router_id == dut and n.state == NeighborState.FULL for n in nbrs)
