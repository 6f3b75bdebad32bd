"""The OSPF speaker's I/O: raw protocol-89 sockets driving sans-I/O `EmulatedRouter`s.

One `Speaker` serves any number of emulated routers, each with interfaces in any lab namespace:
every (router, interface) gets its own ``AF_INET``/``SOCK_RAW``/89 socket, created inside the
interface's namespace (`twamp.lab.netns.socket_in`; a socket keeps its namespace for life), so
one process and one loop serve the generator, the collector and R1/R2 at once (research §3).

Socket settings, each for a reason (research §3, RFC 2328 §8.1, §A.1):

* ``SO_BINDTODEVICE``: a raw socket otherwise receives protocol 89 from every device.
* ``IP_ADD_MEMBERSHIP`` 224.0.0.5 on the ifindex (without it no multicast arrives at all), and
  224.0.0.6 when the router asks for AllDRouters (DR/BDR, `join_all_d_routers`).
* ``IP_MULTICAST_IF`` by ifindex (no multicast route needed), ``IP_MULTICAST_TTL`` and
  ``IP_TTL`` 1 (OSPF packets never leave the link), ``IP_TOS`` 0xC0 (Internetwork Control,
  RFC 2328 §A.1), ``IP_MULTICAST_LOOP`` 0 (or the socket hears itself).
* ``SO_RCVBUFFORCE`` 8 MiB: a 20,000-LSA flood back from the DUT must not overflow the queue.
* ``SO_TIMESTAMPNS``: the kernel's receive stamp of every packet, the ``t_ns`` of ``rx``.
* ``SO_TIMESTAMPING`` software TX stamps with ``OPT_ID | OPT_TSONLY``: every sent packet's
  stamp comes back on ``MSG_ERRQUEUE`` with a per-socket counter (``ee_data``) that matches it
  to the send; the ``tx`` event is logged when it arrives (t_ns = kernel stamp), or after
  ``TX_STAMP_WAIT_NS`` with the user stamp if it never does (research §4.3: the user stamp is
  1.4-44 µs early).

Loop choice: a ``selectors`` loop in one thread, not asyncio. The work per wake-up is "drain
these sockets' normal and error queues, run the routers' timers, send what they queued";
asyncio adds nothing there (its transports cannot read ``MSG_ERRQUEUE``, so it would be
``add_reader`` plus the same code), while a plain thread gives the procedures' drivers a
synchronous API (`Speaker.call`, `Speaker.wait_for`) without making them coroutines, and keeps
the loop's latency independent of whatever else the driver's thread does. The routers are not
thread-safe: every touch of one goes through `call`, which runs on the loop thread.

Faults: ``ENETUNREACH``/``ENETDOWN``/``ENXIO`` from ``sendto`` while a link is down are logged as
``tx-error`` and are not errors; packets that do not decode are counted per socket and logged
as ``rx-malformed`` (the router counts them too) and never stop the loop; an exception inside a
router is logged as ``internal-error`` and the loop goes on with the next packet.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import selectors
import socket
import struct
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from ipaddress import IPv4Address
from typing import Any, TypeVar

from ..lab import netns
from .eventlog import EventLog
from .events import (
    AdjacencyProblem,
    DrChange,
    Event,
    InterfaceConfig,
    InterfaceStateChange,
    LsaAckReceived,
    LsaFlushed,
    LsaOriginated,
    LsaReceived,
    MalformedPacket,
    NeighborState,
    NeighborStateChange,
    PacketRejected,
    Transmit,
)
from .router import EmulatedRouter
from .wire import (
    DatabaseDescription,
    DbdFlags,
    Hello,
    LinkStateAck,
    LinkStateRequest,
    LinkStateUpdate,
    OspfDecodeError,
    Packet,
    decode_packet,
)

__all__ = ["Attachment", "RouterHandle", "Speaker", "packet_summary"]

OSPF_PROTO = 89
ALL_SPF = "224.0.0.5"
ALL_DR = "224.0.0.6"
SO_TIMESTAMPNS = 35
SO_TIMESTAMPING = 37
SO_RCVBUFFORCE = 33
IP_RECVERR = 11
SOF_TIMESTAMPING_TX_SOFTWARE = 1 << 1
SOF_TIMESTAMPING_SOFTWARE = 1 << 4
SOF_TIMESTAMPING_OPT_ID = 1 << 7
SOF_TIMESTAMPING_OPT_TSONLY = 1 << 11
SO_EE_ORIGIN_TIMESTAMPING = 4
RCVBUF = 8 << 20
TX_STAMP_WAIT_NS = 200_000_000
_TIMESPEC = struct.Struct("=qq")
_EXT_ERR = struct.Struct("=IBBBBII")  # struct sock_extended_err (linux/errqueue.h)
_MREQN = struct.Struct("=4s4si")  # struct ip_mreqn
_ANC = socket.CMSG_SPACE(_TIMESPEC.size * 3) + socket.CMSG_SPACE(_EXT_ERR.size + 16) + 64
_DOWN_ERRNOS = {errno.ENETUNREACH, errno.ENETDOWN, errno.ENXIO, errno.EHOSTUNREACH, errno.ENOBUFS}
_NAMES = {
    NeighborState.DOWN: "Down",
    NeighborState.INIT: "Init",
    NeighborState.TWO_WAY: "2-Way",
    NeighborState.EXSTART: "ExStart",
    NeighborState.EXCHANGE: "Exchange",
    NeighborState.LOADING: "Loading",
    NeighborState.FULL: "Full",
}
_T = TypeVar("_T")


def _state_name(state: NeighborState) -> str:
    return _NAMES.get(state, str(state))


def _lsa_list(ev: LsaOriginated | LsaFlushed) -> dict[str, object]:
    return {"lsas": [{"key": str(ev.key), "seq": ev.seq}], "why": ev.reason}


# The event log's vocabulary for the router's events (`twamp.ospf.eventlog`): event class ->
# (event name, the fields after ``t_ns``). The field order is the log's order, which the
# eventlog tests pin; `MalformedPacket` has no entry because `_receive` logs it itself, with
# the packet's head and the per-socket count the router does not know.
_EVENT_LOG: dict[type[Event], tuple[str, Callable[[Any], dict[str, object]]]] = {
    NeighborStateChange: (
        "nbr",
        lambda ev: {
            "ifname": ev.ifname,
            "nbr": str(ev.neighbor_id),
            "addr": str(ev.address),
            "old": _state_name(ev.old),
            "new": _state_name(ev.new),
            "why": ev.cause,
        },
    ),
    InterfaceStateChange: (
        "ifstate",
        lambda ev: {
            "ifname": ev.ifname,
            "old": ev.old.name,
            "new": ev.new.name,
            "dr": str(ev.dr),
            "bdr": str(ev.bdr),
        },
    ),
    LsaOriginated: ("originate", _lsa_list),
    LsaFlushed: ("flush", _lsa_list),
    LsaReceived: (
        "lsa-in",
        lambda ev: {
            "ifname": ev.ifname,
            "nbr": str(ev.neighbor_id),
            "key": str(ev.key),
            "seq": ev.seq,
            "age": ev.age,
            "status": ev.status.value,
            "implied_ack": ev.implied_ack,
        },
    ),
    LsaAckReceived: (
        "ack-in",
        lambda ev: {
            "ifname": ev.ifname,
            "nbr": str(ev.neighbor_id),
            "cleared": [str(k) for k in ev.cleared],
        },
    ),
    AdjacencyProblem: (
        "exstart-stuck",
        lambda ev: {
            "ifname": ev.ifname,
            "nbr": str(ev.neighbor_id),
            "state": _state_name(ev.state),
            "cause": ev.likely_cause,
            "hint": ev.detail,
        },
    ),
    DrChange: (
        "dr-change",
        lambda ev: {
            "ifname": ev.ifname,
            "nbr": str(ev.neighbor_id),
            "dr": str(ev.dr),
            "bdr": str(ev.bdr),
        },
    ),
    PacketRejected: (
        "rejected",
        lambda ev: {
            "ifname": ev.ifname,
            "src": str(ev.source),
            "rid": str(ev.router_id),
            "type": ev.packet_type.name.lower(),
            "reason": ev.reason.value,
            "detail": ev.detail,
        },
    ),
}
_LOGGED_ELSEWHERE: frozenset[type[Event]] = frozenset({MalformedPacket})


def _flag_names(flags: DbdFlags) -> list[str]:
    return [n for n, f in (("I", DbdFlags.I), ("M", DbdFlags.M), ("MS", DbdFlags.MS)) if flags & f]


def packet_summary(pkt: Packet) -> dict[str, Any]:
    """The event log's decoded summary of one packet (module eventlog, "Packets")."""
    h = pkt.header
    out: dict[str, Any] = {"rid": str(h.router_id), "area": str(h.area_id), "len": h.length}
    b = pkt.body
    if isinstance(b, Hello):
        out.update(
            type="hello",
            dr=str(b.dr),
            bdr=str(b.bdr),
            neighbors=[str(n) for n in b.neighbors],
            priority=b.priority,
            hello_s=b.hello_interval,
            dead_s=b.dead_interval,
            mask=str(b.mask),
        )
    elif isinstance(b, DatabaseDescription):
        out.update(
            type="dbd",
            flags=_flag_names(b.flags),
            dd_seq=b.dd_seq,
            mtu=b.mtu,
            lsas=[{"key": str(x.key), "seq": x.seq} for x in b.lsa_headers],
        )
    elif isinstance(b, LinkStateRequest):
        out.update(type="lsr", keys=[str(k) for k in b.keys])
    elif isinstance(b, LinkStateUpdate):
        out.update(
            type="lsu",
            lsas=[
                {"key": str(x.header.key), "seq": x.header.seq, "age": x.header.age} for x in b.lsas
            ],
        )
    elif isinstance(b, LinkStateAck):
        out.update(
            type="ack",
            acked=[{"key": str(x.key), "seq": x.seq, "age": x.age} for x in b.lsa_headers],
        )
    return out


def _bind_tick(router: EmulatedRouter, now: int) -> Callable[[], list[Event]]:
    return lambda: router.tick(now)


@dataclasses.dataclass(frozen=True)
class Attachment:
    """An interface of an emulated router: its device lives in namespace ``ns`` (None: ours).

    ``config.name`` is the device name; ``config.address`` its address with prefix length.
    """

    ns: str | None
    config: InterfaceConfig


class _Port:
    """One raw socket: (router, interface)."""

    def __init__(self, router: str, att: Attachment, rcvbuf: int) -> None:
        self.router = router
        self.ns = att.ns
        self.ifname = att.config.name
        self.local = str(att.config.address.ip)
        self.malformed = 0
        self.tx_key = 0  # OPT_ID counter: the kernel numbers our sends 0, 1, 2 ...
        self.pending: dict[int, tuple[int, dict[str, Any]]] = {}
        self.joined_dr = False
        self.sock = netns.socket_in(att.ns, socket.AF_INET, socket.SOCK_RAW, OSPF_PROTO)
        try:
            self._configure(rcvbuf)
        except BaseException:
            self.sock.close()
            raise

    def _configure(self, rcvbuf: int) -> None:
        s = self.sock
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.ifname.encode())
        self.ifindex = socket.if_nametoindex(self.ifname) if self.ns is None else self._ifindex()
        self._membership(ALL_SPF, True)
        s.setsockopt(
            socket.IPPROTO_IP,
            socket.IP_MULTICAST_IF,
            _MREQN.pack(bytes(4), socket.inet_aton(self.local), self.ifindex),
        )
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 1)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0xC0)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except PermissionError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.setsockopt(
            socket.SOL_SOCKET,
            SO_TIMESTAMPING,
            SOF_TIMESTAMPING_TX_SOFTWARE
            | SOF_TIMESTAMPING_SOFTWARE
            | SOF_TIMESTAMPING_OPT_ID
            | SOF_TIMESTAMPING_OPT_TSONLY,
        )
        s.setblocking(False)

    def _ifindex(self) -> int:
        assert self.ns is not None
        with netns.entered(self.ns):
            return socket.if_nametoindex(self.ifname)

    def _membership(self, group: str, join: bool) -> None:
        opt = socket.IP_ADD_MEMBERSHIP if join else socket.IP_DROP_MEMBERSHIP
        mreq = _MREQN.pack(socket.inet_aton(group), socket.inet_aton(self.local), self.ifindex)
        try:
            self.sock.setsockopt(socket.IPPROTO_IP, opt, mreq)
        except OSError as exc:
            # joining twice / leaving a group not joined: harmless; anything else is real
            if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EINVAL):
                raise

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class RouterHandle:
    """A router served by a `Speaker`; every method is safe from any thread."""

    def __init__(self, speaker: Speaker, name: str) -> None:
        self.speaker = speaker
        self.name = name

    def call(self, fn: Callable[[EmulatedRouter, int], _T], timeout: float = 10.0) -> _T:
        """Run ``fn(router, now_ns)`` on the loop thread; its router events are logged."""
        return self.speaker.call(self.name, fn, timeout)

    def originate(self, specs: Sequence[Any]) -> list[Event]:
        return self.call(lambda r, now: r.originate(specs, now))

    def flush(self, keys: Sequence[Any]) -> list[Event]:
        return self.call(lambda r, now: r.flush(keys, now))

    def neighbors(self) -> list[Any]:
        return self.call(lambda r, now: r.neighbors())

    def neighbor_states(self) -> dict[str, str]:
        """``{neighbour RID: state name}`` over all interfaces."""
        return {str(n.router_id): _NAMES.get(n.state, str(n.state)) for n in self.neighbors()}

    def retransmit_count(self) -> int:
        return self.call(lambda r, now: r.retransmit_count())

    def stop_hellos(self, ifname: str) -> list[Event]:
        """RFC 4061 §6.8 "layer-3 down": we go silent on ``ifname``, carrier kept. Logged as
        ``link down`` with ``how: "hellos"``, stamped on the loop thread at the call itself."""
        return self.call(lambda r, now: self._hellos(r, now, ifname, up=False))

    def start_hellos(self, ifname: str) -> list[Event]:
        return self.call(lambda r, now: self._hellos(r, now, ifname, up=True))

    def _hellos(self, r: EmulatedRouter, now: int, ifname: str, *, up: bool) -> list[Event]:
        events = r.start_hellos(ifname, now) if up else r.stop_hellos(ifname, now)
        port = self.speaker.ports.get((self.name, ifname))
        self.speaker.log.write(
            "link",
            "up" if up else "down",
            t_ns=now,
            ns=port.ns if port is not None else None,
            ifname=ifname,
            router=self.name,
            how="hellos",
            t_done_ns=time.time_ns(),
        )
        return events

    def interface_down(self, ifname: str) -> list[Event]:
        return self.call(lambda r, now: r.interface_down(ifname, now))

    def interface_up(self, ifname: str) -> list[Event]:
        return self.call(lambda r, now: r.interface_up(ifname, now))

    def wait_for(
        self, pred: Callable[[EmulatedRouter], bool], timeout: float, poll: float = 0.02
    ) -> bool:
        """Poll ``pred(router)`` on the loop thread until true or ``timeout`` s; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            if self.call(lambda r, now: pred(r)):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)

    def wait_full(self, neighbor_id: str, timeout: float) -> bool:
        nid = IPv4Address(neighbor_id)
        return self.wait_for(
            lambda r: any(
                n.router_id == nid and n.state == NeighborState.FULL for n in r.neighbors()
            ),
            timeout,
        )


class Speaker:
    """Raw-socket I/O for emulated routers, one loop thread (see the module docstring).

    ``with Speaker(log) as sp: gen = sp.add_router("gen", "192.0.2.2", [Attachment(ns, cfg)])``;
    `add_router` may be called before or after `start` (the context manager starts the loop).
    """

    def __init__(
        self,
        log: EventLog,
        *,
        rcvbuf: int = RCVBUF,
        router_factory: Callable[..., EmulatedRouter] = EmulatedRouter,
        **router_kwargs: Any,
    ) -> None:
        self.log = log
        self.router_factory = router_factory
        self.rcvbuf = rcvbuf
        self.router_kwargs = router_kwargs
        self.routers: dict[str, EmulatedRouter] = {}
        self.ports: dict[tuple[str, str], _Port] = {}
        self.errors = 0
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._calls: list[tuple[Callable[[], Any], Future[Any]]] = []
        self._calls_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._release_lock = threading.Lock()
        self._released = False
        self._buf = bytearray(65535)

    close_timeout: float = 30.0
    """Seconds `close` waits for the loop to finish its current work (see `close`)."""

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self) -> Speaker:
        if self._stop.is_set():
            raise RuntimeError("the speaker is closed")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ospf-speaker", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the loop, log still-unstamped sends, close every socket (idempotent).

        The loop thread owns the sockets while it runs: a call it is inside (thousands of LSAs
        originated on a loaded machine) can outlast any join timeout, and closing the sockets
        under it made its next send or select fail with EBADF in the thread. So the sockets
        are closed by whichever side is last: the loop itself on its way out (`_run`), or
        here when no loop ever ran. A loop still busy after `close_timeout` is left to finish
        its call and close them itself (it is a daemon thread; nothing is queued to it any
        more, `_on_loop` refuses new calls once stopping)."""
        self._stop.set()
        thread = self._thread
        if thread is None:
            self._release()
            return
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if thread is not threading.current_thread():
            thread.join(timeout=self.close_timeout)
        if not thread.is_alive():
            self._thread = None
            self._release()  # the loop released already; idempotent

    def _release(self) -> None:
        """Log unstamped sends, close sockets and selector: once, from one thread at a time."""
        with self._release_lock:
            if self._released:
                return
            self._released = True
            for port in self.ports.values():
                self._expire(port, force=True)
                port.close()
            self.ports.clear()
            for s in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    s.close()
            with contextlib.suppress(Exception):
                self._sel.close()

    def __enter__(self) -> Speaker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- routers -------------------------------------------------------------------------
    def add_router(
        self, name: str, router_id: str, attachments: Sequence[Attachment], **kwargs: Any
    ) -> RouterHandle:
        """Open the sockets, then create the router (its first Hellos go out at once)."""
        if name in self.routers:
            raise ValueError(f"router {name!r} exists already")
        ports = [_Port(name, att, self.rcvbuf) for att in attachments]

        def make() -> None:
            now = time.time_ns()
            router = self.router_factory(
                router_id,
                [a.config for a in attachments],
                now_ns=now,
                **{**self.router_kwargs, **kwargs},
            )
            self.routers[name] = router
            for p in ports:
                self.ports[(name, p.ifname)] = p
                self._sel.register(p.sock, selectors.EVENT_READ, p)
            self._flush(name)

        try:
            self._on_loop(make, timeout=10.0)
        except BaseException:
            for p in ports:
                p.close()
            raise
        return RouterHandle(self, name)

    def remove_router(self, name: str) -> None:
        def drop() -> None:
            for key in [k for k in self.ports if k[0] == name]:
                port = self.ports.pop(key)
                self._sel.unregister(port.sock)
                self._expire(port, force=True)
                port.close()
            self.routers.pop(name, None)

        self._on_loop(drop, timeout=10.0)

    def call(self, name: str, fn: Callable[[EmulatedRouter, int], _T], timeout: float = 10.0) -> _T:
        def run() -> _T:
            now = time.time_ns()
            result = fn(self.routers[name], now)
            if isinstance(result, list):
                self._log_events(name, result)
            self._flush(name)
            return result

        return self._on_loop(run, timeout)

    def _on_loop(self, fn: Callable[[], _T], timeout: float) -> _T:
        if self._thread is None or threading.current_thread() is self._thread:
            if self._released:
                raise RuntimeError("the speaker is closed")
            return fn()
        if self._stop.is_set():
            raise RuntimeError("the speaker is closing: no more calls to its loop")
        fut: Future[_T] = Future()
        with self._calls_lock:
            self._calls.append((fn, fut))
        self._wake_w.send(b"x")
        return fut.result(timeout)

    # ---- the loop ------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        finally:
            if self._stop.is_set():
                with self._calls_lock:
                    orphans, self._calls = self._calls, []
                for _fn, fut in orphans:  # queued as close() began: answered, never left hanging
                    fut.set_exception(RuntimeError("the speaker closed before this call ran"))
                self._release()  # see `close`: the loop closes the sockets it used

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.time_ns()
            deadlines = [d for r in self.routers.values() if (d := r.next_deadline()) is not None]
            wait_ns = min([*(d - now for d in deadlines), 50_000_000])
            for key, _ in self._sel.select(max(wait_ns, 0) / 1e9):
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        self._wake_r.recv(4096)
                else:
                    self._drain(key.data)
            self._run_calls()
            now = time.time_ns()
            for name, router in list(self.routers.items()):
                d = router.next_deadline()
                if d is not None and d <= now:
                    self._guard(name, _bind_tick(router, now))
                    self._flush(name)
            for port in list(self.ports.values()):
                self._expire(port)

    def _run_calls(self) -> None:
        with self._calls_lock:
            calls, self._calls = self._calls, []
        for fn, fut in calls:
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

    def _guard(self, name: str, fn: Callable[[], list[Event]]) -> None:
        try:
            self._log_events(name, fn())
        except Exception as exc:  # a router bug must not stop the other routers' I/O
            self.errors += 1
            self.log.write(
                name,
                "internal-error",
                error=f"{type(exc).__name__}: {exc}",
                trace=traceback.format_exc(),
            )

    def _drain(self, port: _Port) -> None:
        self._drain_errqueue(port)
        for _ in range(1024):  # bounded: other sockets and timers get their turn
            try:
                nbytes, anc, _flags, _addr = port.sock.recvmsg_into([self._buf], _ANC)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.log.write(
                    port.router,
                    "rx-error",
                    ifname=port.ifname,
                    errno=errno.errorcode.get(exc.errno or 0, str(exc.errno)),
                )
                return
            t_rx = 0
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = _TIMESPEC.unpack_from(data)
                    t_rx = sec * 1_000_000_000 + nsec
            self._receive(port, bytes(self._buf[:nbytes]), t_rx)

    def _receive(self, port: _Port, raw: bytes, t_rx: int) -> None:
        stamp = "kernel-rx" if t_rx else "user"
        t_rx = t_rx or time.time_ns()
        if len(raw) < 20 or raw[0] >> 4 != 4:
            port.malformed += 1
            self.log.write(
                port.router,
                "rx-malformed",
                t_ns=t_rx,
                ifname=port.ifname,
                src="?",
                len=len(raw),
                error="not an IPv4 packet",
                count=port.malformed,
                head=raw[:64].hex(),
            )
            return
        ihl = (raw[0] & 0x0F) * 4
        src, dst = socket.inet_ntoa(raw[12:16]), socket.inet_ntoa(raw[16:20])
        data = raw[ihl:]
        try:
            summary = packet_summary(decode_packet(data))
        except OspfDecodeError as exc:
            port.malformed += 1
            self.log.write(
                port.router,
                "rx-malformed",
                t_ns=t_rx,
                ifname=port.ifname,
                src=src,
                len=len(data),
                error=str(exc),
                count=port.malformed,
                head=data[:64].hex(),
            )
            summary = None
        if summary is not None:
            self.log.write(
                port.router,
                "rx",
                t_ns=t_rx,
                ifname=port.ifname,
                src=src,
                dst=dst,
                stamp=stamp,
                **summary,
            )
        router = self.routers.get(port.router)
        if router is None:
            return
        now = time.time_ns()
        self._guard(
            port.router,
            lambda: router.receive(port.ifname, IPv4Address(src), IPv4Address(dst), data, now),
        )
        self._flush(port.router)

    # ---- transmit ------------------------------------------------------------------------
    def _flush(self, name: str) -> None:
        router = self.routers.get(name)
        if router is None:
            return
        for tx in router.take_transmits():
            port = self.ports.get((name, tx.ifname))
            if port is not None:
                self._send(port, tx)

    def _send(self, port: _Port, tx: Transmit) -> None:
        dst = str(tx.destination)
        t_user = time.time_ns()
        try:
            port.sock.sendto(tx.data, (dst, 0))
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            self.log.write(
                port.router,
                "tx-error",
                t_ns=t_user,
                ifname=port.ifname,
                dst=dst,
                type=tx.packet_type.name.lower(),
                errno=name,
                len=len(tx.data),
                expected=exc.errno in _DOWN_ERRNOS,
            )
            if exc.errno not in _DOWN_ERRNOS:
                self.errors += 1
            return
        try:
            summary = packet_summary(decode_packet(tx.data))
        except OspfDecodeError as exc:  # our own packet: a codec bug, say so loudly
            summary = {"type": tx.packet_type.name.lower(), "error": str(exc)}
        summary.update(ifname=port.ifname, src=port.local, dst=dst, t_user_ns=t_user)
        if tx.retransmission:
            summary["retransmission"] = True
        if tx.neighbor_id is not None:
            summary["nbr"] = str(tx.neighbor_id)
        port.pending[port.tx_key] = (t_user, summary)
        port.tx_key = (port.tx_key + 1) & 0xFFFFFFFF

    def _drain_errqueue(self, port: _Port) -> None:
        for _ in range(4096):
            try:
                _n, anc, _flags, _addr = port.sock.recvmsg(1, _ANC, socket.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            t_tx = 0
            key: int | None = None
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPING:
                    sec, nsec = _TIMESPEC.unpack_from(data)  # [0] is the software stamp
                    t_tx = sec * 1_000_000_000 + nsec
                elif level == socket.IPPROTO_IP and kind == IP_RECVERR:
                    _e, origin, _t, _c, _p, _info, ee_data = _EXT_ERR.unpack_from(data)
                    if origin == SO_EE_ORIGIN_TIMESTAMPING:
                        key = ee_data
            if key is None or not t_tx:
                continue
            entry = port.pending.pop(key, None)
            if entry is not None:
                _t_user, summary = entry
                self.log.write(port.router, "tx", t_ns=t_tx, stamp="kernel-tx", **summary)

    def _expire(self, port: _Port, *, force: bool = False) -> None:
        """Log sends whose kernel stamp never came within TX_STAMP_WAIT_NS, with the user stamp."""
        if not port.pending:
            return
        limit = time.time_ns() - TX_STAMP_WAIT_NS
        for key in [k for k, (t, _) in port.pending.items() if force or t < limit]:
            t_user, summary = port.pending.pop(key)
            self.log.write(port.router, "tx", t_ns=t_user, stamp="user", **summary)

    # ---- router events -------------------------------------------------------------------
    def _log_events(self, name: str, events: Sequence[Event]) -> None:
        for ev in events:
            entry = _EVENT_LOG.get(type(ev))
            if entry is None:  # `_LOGGED_ELSEWHERE`
                continue
            event_name, fields = entry
            self.log.write(name, event_name, t_ns=ev.t_ns, **fields(ev))
            if isinstance(ev, InterfaceStateChange):
                self._dr_membership(name, ev)

    def _dr_membership(self, name: str, ev: InterfaceStateChange) -> None:
        """Join AllDRouters as DR or BDR, leave it otherwise (RFC 2328 §A.1)."""
        port = self.ports.get((name, ev.ifname))
        if port is None:
            return
        want = ev.new.name in ("DR", "BACKUP")
        if want != port.joined_dr:
            port._membership(ALL_DR, want)
            port.joined_dr = want


def listen_hello(
    ifname: str, local: str, timeout: float, ns: str | None = None
) -> tuple[int, dict[str, Any]] | None:
    """The first OSPF Hello heard on `ifname` within `timeout` seconds, as (kernel receive
    stamp, `packet_summary`), without sending anything: how a tester learns a real router's
    HelloInterval and RouterDeadInterval (RFC 2328 §A.3.2) before it speaks, so its own
    Hellos match them (§10.5 drops a neighbour whose intervals differ)."""
    sock = netns.socket_in(ns, socket.AF_INET, socket.SOCK_RAW, OSPF_PROTO)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        if ns is None:
            ifindex = socket.if_nametoindex(ifname)
        else:
            with netns.entered(ns):
                ifindex = socket.if_nametoindex(ifname)
        mreq = _MREQN.pack(socket.inet_aton(ALL_SPF), socket.inet_aton(local), ifindex)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, anc, _flags, _addr = sock.recvmsg(65535, _ANC)
            except TimeoutError:
                return None
            t_rx = time.time_ns()
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = _TIMESPEC.unpack_from(cdata)
                    t_rx = sec * 1_000_000_000 + nsec
            ihl = (data[0] & 0x0F) * 4 if data else 0
            try:
                pkt = decode_packet(data[ihl:])
            except OspfDecodeError:
                continue
            if isinstance(pkt.body, Hello):
                return t_rx, packet_summary(pkt)
        return None
    finally:
        sock.close()
