"""Observers of a convergence run: the DUT's FIB over netlink, and the TWAMP data-plane probe.

`FibWatcher`
    An rtnetlink socket in the DUT's namespace joined to RTMGRP_IPV4_ROUTE; every route the DUT
    adds or deletes becomes ``fib route-add`` / ``route-del`` in the event log. The stamp is
    the time our thread *received* the notification (``stamp: "user"``): rtnetlink carries no
    kernel timestamp, so this is a cross-check of the DUT's own view, never a primary figure
    (research §4.1 item 6). Messages are parsed by pyroute2's rtnetlink marshal.

`Probe`
    TWAMP Light through the DUT: the project's `dataplane.Reflector` (Light policy, stateless)
    on 203.0.113.77:862 in the collector's namespace, and a `dataplane.Sender` in the
    generator's, sending at ``rate_pps`` in slices. Every packet becomes ``probe sent`` and then
    either ``rcvd`` (with the kernel receive stamp of the reply) or, after ``loss_timeout_ns``
    without a reply, ``lost``; the first answered packet after a run of losses is also
    ``restored``. So a route withdrawn in the DUT shows as a loss run and its return as the
    restoration, on the same CLOCK_REALTIME as the OSPF packets. Only the public selector
    (`twamp.dataplane`) is used: no per-packet loop here, the data plane does the sending.
    RFC 4061 excludes the data plane: its figures are reported as an extension.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from typing import Any

import numpy as np
from pyroute2 import IPRoute
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from .. import dataplane
from ..constants import TestMode
from ..ospf.eventlog import EventLog
from ..wire.packets import TestFormat
from . import netns

__all__ = ["FibWatcher", "Probe"]

RTMGRP_LINK = 0x1
RTMGRP_IPV4_ROUTE = 0x40
RTM_NEWLINK = 16
IFF_LOWER_UP = 0x10000
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RT_TABLE_LOCAL = 255
TWAMP_PORT = 862


class FibWatcher:
    """Log the IPv4 routes added to and deleted from ``ns``'s main table (see module doc)."""

    def __init__(self, ns: str, log: EventLog, *, source: str = "fib") -> None:
        self.ns = ns
        self.log = log
        self.source = source
        self.adds = 0
        self.dels = 0
        self.installed: set[str] = set()
        self._sock = netns.socket_in(ns, socket.AF_NETLINK, socket.SOCK_RAW, 0)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self._sock.bind((0, RTMGRP_IPV4_ROUTE | RTMGRP_LINK))
        self._names = self._ifnames()
        self._carrier = self._carriers()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"fib-{ns}", daemon=True)

    def _carriers(self) -> dict[int, bool]:
        """Every device's carrier now, so the first change after the start is seen as one."""
        sock = netns.socket_in(self.ns, socket.AF_NETLINK, socket.SOCK_DGRAM, 0)
        with IPRoute(use_socket=sock) as ipr:
            return {int(m["index"]): bool(m["flags"] & IFF_LOWER_UP) for m in ipr.get_links()}

    def _ifnames(self) -> dict[int, str]:
        with netns.entered(self.ns):
            return {i: n for i, n in socket.if_nameindex()}

    def start(self) -> FibWatcher:
        self.log.write(self.source, "watch-start", ns=self.ns)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self._sock.close()
        self.log.write(self.source, "watch-stop", ns=self.ns, adds=self.adds, dels=self.dels)

    def __enter__(self) -> FibWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def count(self, prefix_of: str | None = None) -> int:
        """Installed routes now (as seen through the notifications), optionally by text prefix."""
        with self._lock:
            return sum(1 for p in self.installed if prefix_of is None or p.startswith(prefix_of))

    def _run(self) -> None:
        marshal = MarshalRtnl()
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], 0.1)
            if not ready:
                continue
            try:
                data = self._sock.recv(1 << 20)
            except OSError as exc:  # ENOBUFS: notifications were lost, say so
                self.log.write(self.source, "overrun", ns=self.ns, error=str(exc))
                continue
            t_ns = time.time_ns()
            for msg in marshal.parse(data):
                self._one(msg, t_ns)

    def _carrier_change(self, msg: Any, t_ns: int) -> None:
        """``fib carrier`` when a device's carrier (IFF_LOWER_UP) changes: when the DUT's
        kernel, and so the DUT, learned of it. Linux passes carrier changes through its
        linkwatch, which batches them at most once a second *machine-wide*: on a busy host the
        DUT hears of a carrier loss up to a second after the cable was pulled (RFC 4061 §6.7's
        start), through no fault of its own."""
        idx = int(msg["index"])
        up = bool(msg["flags"] & IFF_LOWER_UP)
        if self._carrier.get(idx) == up:
            return
        self._carrier[idx] = up
        name = msg.get_attr("IFLA_IFNAME") or self._names.get(idx, idx)
        self.log.write(
            self.source, "carrier", t_ns=t_ns, ns=self.ns, ifname=name, up=up, stamp="user"
        )

    def _one(self, msg: Any, t_ns: int) -> None:
        kind = msg["header"]["type"]
        if kind == RTM_NEWLINK:
            self._carrier_change(msg, t_ns)
            return
        if kind not in (RTM_NEWROUTE, RTM_DELROUTE):
            return
        table = msg.get_attr("RTA_TABLE") or msg["table"]
        if table == RT_TABLE_LOCAL:
            return
        dst = msg.get_attr("RTA_DST") or "0.0.0.0"
        prefix = f"{dst}/{msg['dst_len']}"
        hops = []
        gw, oif = msg.get_attr("RTA_GATEWAY"), msg.get_attr("RTA_OIF")
        if gw or oif:
            hops.append({"gw": gw, "dev": self._names.get(oif, oif)})
        for nh in msg.get_attr("RTA_MULTIPATH") or ():
            hops.append(
                {"gw": nh.get_attr("RTA_GATEWAY"), "dev": self._names.get(nh["oif"], nh["oif"])}
            )
        add = kind == RTM_NEWROUTE
        with self._lock:
            if add:
                self.adds += 1
                self.installed.add(prefix)
            else:
                self.dels += 1
                self.installed.discard(prefix)
        self.log.write(
            self.source,
            "route-add" if add else "route-del",
            t_ns=t_ns,
            ns=self.ns,
            prefix=prefix,
            table=table,
            proto=msg["proto"],
            nexthops=hops,
            stamp="user",
        )


class Probe:
    """TWAMP Light from ``src_ns`` (``src``) to ``dst`` in ``dst_ns``, through the DUT."""

    def __init__(
        self,
        log: EventLog,
        *,
        src_ns: str | None,
        src: str,
        dst_ns: str | None,
        dst: str,
        rate_pps: int = 1000,
        loss_timeout_ns: int = 200_000_000,
        slice_ns: int = 50_000_000,
        reflect: bool = True,
    ) -> None:
        if not 1 <= rate_pps <= 100_000:
            raise ValueError(f"probe rate {rate_pps} pps is outside 1-100000")
        self.log = log
        self.src_ns, self.src, self.dst_ns, self.dst = src_ns, src, dst_ns, dst
        self.rate_pps = rate_pps
        self.loss_timeout_ns = loss_timeout_ns
        self.slice_ns = slice_ns
        self.sent = self.rcvd = self.lost = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fmt = TestFormat(TestMode.OPEN)
        self._reflector: Any = None
        self._rsock: socket.socket | None = None
        if reflect:
            self._rsock = netns.socket_in(dst_ns, socket.AF_INET, socket.SOCK_DGRAM)
            self._rsock.bind((dst, TWAMP_PORT))
            policy = dataplane.LightPolicy(self._fmt, stateful=False)
            self._reflector = dataplane.Reflector(self._rsock, light=policy)
        self._ssock = netns.socket_in(src_ns, socket.AF_INET, socket.SOCK_DGRAM)
        self._ssock.bind((src, 0))
        self._sender = dataplane.Sender(self._ssock, (dst, TWAMP_PORT), fmt=self._fmt)
        # seq -> t1 of packets not yet answered; seq -> (t1, t4) of answered, until finalised
        self._open: dict[int, int] = {}
        self._done: dict[int, tuple[int, int | None]] = {}
        self._next_final = 0
        self._loss_run = 0
        self._first_lost = -1
        self.last_reply_ns = 0  # t4 of the newest reply received (the probe thread writes it)

    def start(self) -> Probe:
        if self._reflector is not None:
            self._reflector.start()
        self.log.write(
            "probe",
            "start",
            rate_pps=self.rate_pps,
            src=self.src,
            dst=self.dst,
            ns=self.src_ns,
            implementation=self._sender.IMPLEMENTATION,
        )
        self._thread = threading.Thread(target=self._run, name="twamp-probe", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, int]:
        """Stop sending, wait out the loss timeout for the last replies, close; the totals."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=10)
            self._thread = None
            if self._reflector is not None:
                self._reflector.stop()
            for s in (self._ssock, self._rsock):
                if s is not None:
                    with contextlib.suppress(OSError):
                        s.close()
            self.log.write("probe", "stop", sent=self.sent, rcvd=self.rcvd, lost=self.lost)
        return {"sent": self.sent, "rcvd": self.rcvd, "lost": self.lost}

    def flowing(self, now_ns: int | None = None) -> bool:
        """The stream gets through now: a reply within the last three send periods (50 ms at
        least) and no loss run left open (its `restored` event is logged). Read from another
        thread: two plain attribute reads, each atomic; a stale answer only costs one poll."""
        now = time.time_ns() if now_ns is None else now_ns
        recent = max(50_000_000, 3 * 1_000_000_000 // self.rate_pps)
        return self._loss_run == 0 and now - self.last_reply_ns < recent

    def __enter__(self) -> Probe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        period = 1_000_000_000 // self.rate_pps
        per_slice = max(1, self.slice_ns // period)
        seq = 0
        t_next = time.time_ns() + 1_000_000
        while not self._stop.is_set():
            schedule = t_next + period * np.arange(per_slice, dtype=np.int64)
            res = self._sender.run(schedule, first_seq=seq, wait_ns=0, stop=self._stop)
            self._gaps(res, seq, schedule)
            seq += per_slice
            t_next = int(schedule[-1]) + period
            self._account(res)
        res = self._sender.run(
            np.zeros(0, dtype=np.int64), first_seq=seq, wait_ns=self.loss_timeout_ns
        )
        self._account(res, final=True)

    def _gaps(self, res: Any, first: int, schedule: Any) -> None:
        """Sequence numbers of this slice not in ``sent``: failed sends (lost, e.g. ENETUNREACH
        while the route is gone) or, after a stop, never sent (skipped, not lost)."""
        sent = {int(r["seq"]) for r in res.sent}
        missing = [s for s in range(first, first + len(schedule)) if s not in sent]
        errors = int(res.counters.get("send_errors", 0))
        for i, s in enumerate(missing):
            t = int(schedule[s - first])
            if i < errors:
                self.sent += 1
                self.log.write("probe", "sent", t_ns=t, seq=s, stamp="schedule", send_error=True)
                self._done[s] = (t, None)
            else:
                self._done[s] = (t, -1)  # never sent: skipped by `_finalise`

    def _account(self, res: Any, final: bool = False) -> None:
        for row in res.sent:
            s, t1 = int(row["seq"]), int(row["t1"])
            self._open[s] = t1
            self.sent += 1
            self.log.write("probe", "sent", t_ns=t1, seq=s, stamp="user")
        for row in res.received:
            s = int(row["sender_seq"])
            if s not in self._open:
                continue  # a duplicate, or a reply after we declared the packet lost
            t1, t4 = self._open.pop(s), int(row["t4"])
            self.last_reply_ns = max(self.last_reply_ns, t4)
            self._done[s] = (t1, t4)
            self.rcvd += 1
            rtt = (t4 - t1) - (int(row["t3"]) - int(row["t2"]))
            self.log.write(
                "probe", "rcvd", t_ns=t4, seq=s, tx_ns=t1, rx_ns=t4, rtt_ns=rtt, stamp="kernel-rx"
            )
        limit = time.time_ns() - self.loss_timeout_ns
        for s in sorted(self._open):
            if final or self._open[s] < limit:
                self._done[s] = (self._open.pop(s), None)
        self._finalise()

    def _finalise(self) -> None:
        """Walk answered/lost packets in sequence order: log losses and restorations."""
        while self._next_final in self._done:
            s = self._next_final
            t1, t4 = self._done.pop(s)
            if t4 == -1:
                pass
            elif t4 is None:
                self.lost += 1
                if self._loss_run == 0:
                    self._first_lost = s
                self._loss_run += 1
                self.log.write("probe", "lost", t_ns=t1, seq=s, tx_ns=t1)
            elif self._loss_run:
                self.log.write(
                    "probe",
                    "restored",
                    t_ns=t1,
                    seq=s,
                    lost_run=self._loss_run,
                    first_lost_seq=self._first_lost,
                    rx_ns=t4,
                )
                self._loss_run = 0
            self._next_final += 1
