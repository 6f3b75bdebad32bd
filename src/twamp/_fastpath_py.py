"""The Session-Reflector data plane, pure-Python twin of the compiled `twamp._fastpath`.

Theory of operation
-------------------
TWAMP-Control (another layer) negotiates sessions and hands this module a bound UDP socket and,
per session, a `SessionSpec`: the sender's exact (address, port), the packet format, the test
crypto, the DSCP to send with and whether to keep a sequence counter. `Reflector` owns a thread
that drains the socket and answers every admitted datagram at once. Both twins have the same API,
the same counters and the same per-datagram behaviour; `process()` exposes that behaviour without
sockets so that tests can compare them packet for packet.

Per datagram (RFC 5357 §4.2, spec §5.7), in this order:

1. The kernel's receive timestamp (`SO_TIMESTAMPNS`) is the Receive Timestamp: it is taken in the
   kernel when the datagram arrives, so it excludes our scheduling delay. TTL and TOS come from
   ancillary data; a missing TTL is reported as 255 (RFC 5357 §4.2.1).
2. Admission by the session's exact (address, port); v4-mapped peers of a dual-stack socket count
   as their IPv4 address. Anything else is dropped (`unknown_peer`), unless a TWAMP Light policy
   admits it (RFC 5357 Appendix I, RFC 8762: no control protocol, configured out of band).
3. After Stop-Sessions the session reflects only what arrives before its deadline (stop time +
   Timeout, RFC 5357 §4.2); later datagrams are dropped silently and counted `late`.
4. Shorter than the sender header (`TestFormat.min_request_length`): `malformed`. Modes 2/4:
   decrypt and verify; failure: `auth_failed` (RFC 5357 §4.2, spec §4.6).
5. `packets.reflect()` builds the reply: own sequence number (stateful: a per-session counter from
   0, spec §5.6; stateless Light/STAMP: the sender's), Receive Timestamp, copies of the sender's
   fields, Sender TTL, truncated padding, S-DSCP-ECN (RFC 7750) when negotiated.
6. The transmit Timestamp and Error Estimate are written last, right before the send (spec §5.6,
   §11 item 10: T3 - T2 is the time spent here and must not be hidden), then in modes 2/4 the HMAC
   and encryption, which cover the timestamps in mode 4 (spec §4.6).
7. Sent back to the peer's address from the receiving socket, with TTL 255 (set on the socket) and
   TOS = session DSCP << 2 (Not-ECT), or the received TOS octet when the session has no DSCP.

Nothing on this path logs or raises: every outcome is a counter. The session table is read by the
loop thread without a lock (dict reads are atomic in CPython); writers hold `_lock`.

API (both twins; the compiled one accepts these same SessionSpec/LightPolicy objects)::

    SessionSpec(peer: tuple[str, int], fmt: TestFormat, crypto: TestPacketCrypto | None = None,
                dscp: int | None = None, stateful: bool = True)
    LightPolicy(fmt: TestFormat, stateful: bool, allow: tuple[IPv4Network | IPv6Network, ...] = (),
                dscp: int | None = None, max_peers: int = 4096)
    Reflector(sock, *, batch: int = 64, busy_poll: bool = False, light: LightPolicy | None = None)
        IMPLEMENTATION                      # "python" here, "cython" compiled
        add_session(spec) -> int            # slot: lowest free; ValueError if the peer is taken
        stop_session(slot, deadline_ns)     # realtime ns; KeyError for a free slot
        remove_session(slot) -> dict        # its final session counters
        session_counters(slot) -> dict      # received reflected dropped errors last_rx_ns
        counters() -> dict                  # received reflected unknown_peer malformed
                                            # auth_failed late send_errors
        process(data, peer, rx_ns, ttl, tos) -> tuple[bytes, int] | None
        start() / stop() / context manager / running
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import select
import socket
import threading
import time
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from types import TracebackType
from typing import Protocol

import numpy as np
import numpy.typing as npt

from . import clock
from .constants import DEFAULT_TTL, TestMode
from .crypto import TestPacketCrypto
from .dataplane.sockets import (
    ANCBUF_SIZE,
    SO_TIMESTAMPNS,
    enable_receive_options,
    parse_ancillary,
    set_send_ttl,
    tos_ancillary,
)
from .errors import IntegrityError, ProtocolError
from .metrics import SENT_DTYPE, Records
from .timestamps import ns_from_timestamp, ntp_from_ns
from .wire.packets import (
    TestFormat,
    build_sender,
    parse_reflection,
    reflect,
    write_transmit_timestamp,
)

__all__ = [
    "CRYPTO_BACKEND",
    "IMPLEMENTATION",
    "LightPolicy",
    "Reflector",
    "Sender",
    "SenderResult",
    "SessionSpec",
    "StopFlag",
    "normalize_ip",
]

IMPLEMENTATION = "python"
CRYPTO_BACKEND = "python"  # test packets of modes 2 and 4 go through TestPacketCrypto

_NEVER = (1 << 63) - 1
_POLL_MS = 100  # backstop for stop() if the wake-up byte is lost
_RECV_BUFFER = 65536
_SEQ_MASK = 0xFFFFFFFF
_V4_MAPPED = "::ffff:"

_Buffer = bytes | bytearray | memoryview


def normalize_ip(ip: str) -> str:
    """Canonical text of an address; an IPv4-mapped IPv6 address becomes plain IPv4."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def _check_dscp(dscp: int | None) -> None:
    if dscp is not None and not 0 <= dscp <= 63:
        raise ValueError(f"DSCP {dscp} is outside 0..63")


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """One negotiated TWAMP-Test session as the reflector sees it.

    `peer` is the Session-Sender's (address, port), normalised (v4-mapped -> IPv4). `dscp` None
    preserves the received TOS octet (DSCP and ECN) in each reply. `stateful` False copies the
    sender's Sequence Number instead of counting (RFC 5357 Appendix I).
    """

    peer: tuple[str, int]
    fmt: TestFormat
    crypto: TestPacketCrypto | None = None
    dscp: int | None = None
    stateful: bool = True

    def __post_init__(self) -> None:
        ip, port = self.peer
        if not 0 < port <= 0xFFFF:
            raise ValueError(f"peer port {port} is outside 1..65535")
        object.__setattr__(self, "peer", (normalize_ip(ip), int(port)))
        _check_dscp(self.dscp)
        if (self.fmt.test_mode is TestMode.OPEN) != (self.crypto is None):
            raise ValueError("crypto is required in authenticated/encrypted mode, and only there")


@dataclass(frozen=True, slots=True)
class LightPolicy:
    """TWAMP Light / STAMP reflection without TWAMP-Control (RFC 5357 Appendix I, RFC 8762).

    Any peer inside `allow` (empty: anyone) is admitted on its first datagram. `stateful` keeps a
    sequence counter per (address, port), for at most `max_peers` peers; later peers are refused
    (`unknown_peer`). Unauthenticated only: Light has no way to agree on keys.
    """

    fmt: TestFormat
    stateful: bool
    allow: tuple[IPv4Network | IPv6Network, ...] = ()
    dscp: int | None = None
    max_peers: int = 4096

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "allow", tuple(ipaddress.ip_network(n, strict=False) for n in self.allow)
        )
        _check_dscp(self.dscp)
        if self.fmt.test_mode is not TestMode.OPEN:
            raise ValueError("TWAMP Light / STAMP reflection is unauthenticated only")
        if self.max_peers < 0:
            raise ValueError("max_peers cannot be negative")


class _Session:
    """Mutable per-session state; only the loop thread (or the `process()` caller) writes it."""

    __slots__ = (
        "crypto",
        "deadline_ns",
        "dropped",
        "errors",
        "fmt",
        "last_rx_ns",
        "peer",
        "received",
        "reflected",
        "seq",
        "stateful",
        "tos",
    )

    def __init__(
        self,
        peer: tuple[str, int] | None,
        fmt: TestFormat,
        crypto: TestPacketCrypto | None,
        dscp: int | None,
        stateful: bool,
    ) -> None:
        self.peer = peer
        self.fmt = fmt
        self.crypto = crypto
        self.tos = None if dscp is None else dscp << 2
        self.stateful = stateful
        self.seq = 0
        self.deadline_ns = _NEVER
        self.received = 0
        self.reflected = 0
        self.dropped = 0
        self.errors = 0
        self.last_rx_ns = 0

    def counters(self) -> dict[str, int]:
        return {
            "received": self.received,
            "reflected": self.reflected,
            "dropped": self.dropped,
            "errors": self.errors,
            "last_rx_ns": self.last_rx_ns,
        }


class Reflector:
    """Reflects TWAMP-Test datagrams arriving on `sock` for the sessions added to it.

    `batch`: datagrams drained per wake-up before polling again. `busy_poll`: spin on a
    non-blocking receive instead of sleeping in poll(2) (lower latency, a whole core). `light`:
    also admit unknown peers as TWAMP Light / STAMP. The socket stays the caller's: the reflector
    sets its unicast TTL to 255 and otherwise only reads and writes it.

    Session counters: `received` datagrams from the session's peer, `reflected`, `dropped` (late,
    malformed or failing authentication), `errors` (send failures), `last_rx_ns` (receive time of
    the last datagram that passed authentication, 0 if none: the server's REFWAIT clock).
    """

    IMPLEMENTATION = IMPLEMENTATION

    def __init__(
        self,
        sock: socket.socket,
        *,
        batch: int = 64,
        busy_poll: bool = False,
        light: LightPolicy | None = None,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self._sock = sock
        self._v6 = sock.family == socket.AF_INET6
        self._batch = batch
        self._busy_poll = busy_poll
        self._light = light
        set_send_ttl(sock)
        self._lock = threading.Lock()
        self._slots: list[_Session | None] = []
        self._by_peer: dict[tuple[str, int], _Session] = {}
        self._light_peers: dict[tuple[str, int], _Session] = {}
        # Stateless Light peers share one session: no sequence counter to keep apart.
        self._light_shared = (
            _Session(None, light.fmt, None, light.dscp, False)
            if light is not None and not light.stateful
            else None
        )
        self._tos_cmsg: dict[tuple[bool, int], list[tuple[int, int, bytes]]] = {}
        self._received = 0
        self._reflected = 0
        self._unknown_peer = 0
        self._malformed = 0
        self._auth_failed = 0
        self._late = 0
        self._send_errors = 0
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._wake: tuple[socket.socket, socket.socket] | None = None

    # -- session table -------------------------------------------------------------------------

    def add_session(self, spec: SessionSpec) -> int:
        """Start admitting `spec.peer`; returns the session's slot (the lowest free one)."""
        sess = _Session(spec.peer, spec.fmt, spec.crypto, spec.dscp, spec.stateful)
        with self._lock:
            if spec.peer in self._by_peer:
                raise ValueError(f"a session for peer {spec.peer} exists already")
            try:
                slot = self._slots.index(None)
                self._slots[slot] = sess
            except ValueError:
                slot = len(self._slots)
                self._slots.append(sess)
            self._by_peer[spec.peer] = sess
            self._light_peers.pop(spec.peer, None)
        return slot

    def stop_session(self, slot: int, deadline_ns: int) -> None:
        """After Stop-Sessions: reflect what arrives up to `deadline_ns` (realtime), then drop."""
        self._session(slot).deadline_ns = deadline_ns

    def remove_session(self, slot: int) -> dict[str, int]:
        """Forget the session; returns its final counters."""
        with self._lock:
            sess = self._session(slot)
            self._slots[slot] = None
            if sess.peer is not None:
                del self._by_peer[sess.peer]
            while self._slots and self._slots[-1] is None:
                self._slots.pop()
        return sess.counters()

    def session_counters(self, slot: int) -> dict[str, int]:
        return self._session(slot).counters()

    def counters(self) -> dict[str, int]:
        return {
            "received": self._received,
            "reflected": self._reflected,
            "unknown_peer": self._unknown_peer,
            "malformed": self._malformed,
            "auth_failed": self._auth_failed,
            "late": self._late,
            "send_errors": self._send_errors,
        }

    def _session(self, slot: int) -> _Session:
        sess = self._slots[slot] if 0 <= slot < len(self._slots) else None
        if sess is None:
            raise KeyError(f"no session in slot {slot}")
        return sess

    def _admit(self, ip: str, port: int) -> _Session | None:
        """Slow path for a peer not found as given: canonical form, then the Light policy."""
        try:
            norm = normalize_ip(ip)
        except ValueError:
            return None
        key = (norm, port)
        sess = self._by_peer.get(key) or self._light_peers.get(key)
        light = self._light
        if sess is not None or light is None:
            return sess
        if light.allow:
            addr = ipaddress.ip_address(norm)
            if not any(addr in net for net in light.allow):
                return None
        if light.stateful:
            if len(self._light_peers) >= light.max_peers:
                return None
            sess = self._light_peers[key] = _Session(key, light.fmt, None, light.dscp, True)
            return sess
        # Stateless: the shared session; caching it per peer only spares these checks.
        shared = self._light_shared
        if shared is not None and len(self._light_peers) < light.max_peers:
            self._light_peers[key] = shared
        return shared

    # -- per datagram --------------------------------------------------------------------------

    def _prepare(
        self,
        data: _Buffer,
        ip: str,
        port: int,
        rx_ns: int,
        ttl: int,
        tos: int,
    ) -> tuple[bytearray, int, _Session] | None:
        """Steps 2-5 of the module docstring: the reply without its transmit Timestamp."""
        self._received += 1
        key = (ip, port)
        sess = self._by_peer.get(key) or self._light_peers.get(key) or self._admit(ip, port)
        if sess is None:
            self._unknown_peer += 1
            return None
        sess.received += 1
        if rx_ns > sess.deadline_ns:
            self._late += 1
            sess.dropped += 1
            return None
        fmt = sess.fmt
        if len(data) < fmt.min_request_length:
            self._malformed += 1
            sess.dropped += 1
            return None
        crypto = sess.crypto
        request: _Buffer = data
        if crypto is not None:
            request = bytearray(data)
            try:
                crypto.unprotect_sender(request)
            except IntegrityError:
                self._auth_failed += 1
                sess.dropped += 1
                return None
        seq: int | None = None
        if sess.stateful:
            seq = sess.seq
        try:
            reply = reflect(
                fmt,
                request,
                seq=seq,
                receive_timestamp=ntp_from_ns(rx_ns),
                error_estimate=clock.error_estimate(),
                sender_ttl=ttl,
                s_dscp_ecn=tos,
            )
        except (ProtocolError, ValueError):
            self._malformed += 1
            sess.dropped += 1
            return None
        if seq is not None:
            sess.seq = (seq + 1) & _SEQ_MASK
        sess.last_rx_ns = rx_ns
        return reply, tos if sess.tos is None else sess.tos, sess

    @staticmethod
    def _finish(reply: bytearray, sess: _Session) -> None:
        """Step 6: transmit Timestamp as late as possible, then HMAC and encryption."""
        write_transmit_timestamp(
            reply, sess.fmt, ntp_from_ns(clock.realtime_ns()), clock.error_estimate()
        )
        if sess.crypto is not None:
            sess.crypto.protect_reflector(reply)

    def process(
        self,
        data: _Buffer,
        peer: tuple[str, int],
        rx_ns: int,
        ttl: int,
        tos: int,
    ) -> tuple[bytes, int] | None:
        """One datagram without sockets: (reply, TOS to send it with), or None if dropped.

        Counters are updated as the loop would, counting a returned reply as reflected.
        """
        prepared = self._prepare(data, peer[0], peer[1], rx_ns, ttl, tos)
        if prepared is None:
            return None
        reply, reply_tos, sess = prepared
        self._finish(reply, sess)
        self._reflected += 1
        sess.reflected += 1
        return bytes(reply), reply_tos

    def _cmsg(self, ip: str, tos: int) -> list[tuple[int, int, bytes]]:
        key = (":" not in ip, tos)
        anc = self._tos_cmsg.get(key)
        if anc is None:
            anc = self._tos_cmsg[key] = tos_ancillary(self._sock.family, ip, tos)
        return anc

    # -- the loop ------------------------------------------------------------------------------

    def _drain(self, view: memoryview) -> None:
        """Reflect up to `batch` queued datagrams."""
        sock = self._sock
        recv = sock.recvmsg_into
        send = sock.sendmsg
        prepare = self._prepare
        v6 = self._v6
        for _ in range(self._batch):
            try:
                size, anc, flags, addr = recv([view], ANCBUF_SIZE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EBADF:
                    self._stopping = True
                return
            rx_ns, ttl, tos = parse_ancillary(anc)
            ip: str = addr[0]
            if v6 and ip.startswith(_V4_MAPPED) and "." in ip:
                ip = ip[7:]
            if flags & socket.MSG_TRUNC:
                size = 0  # cannot be reflected faithfully: counted malformed below
            try:
                prepared = prepare(
                    view[:size],
                    ip,
                    addr[1],
                    clock.realtime_ns() if rx_ns is None else rx_ns,
                    DEFAULT_TTL if ttl is None else ttl,
                    0 if tos is None else tos,
                )
                if prepared is None:
                    continue
                reply, reply_tos, sess = prepared
                anc_out = self._cmsg(ip, reply_tos)
                self._finish(reply, sess)
            except Exception:
                # A bug in the packet code must not kill the reflector.
                self._malformed += 1
                continue
            try:
                send([reply], anc_out, 0, addr)
            except OSError:
                self._send_errors += 1
                sess.errors += 1
            else:
                self._reflected += 1
                sess.reflected += 1

    def _run(self, wake: socket.socket) -> None:
        view = memoryview(bytearray(_RECV_BUFFER))
        if self._busy_poll:
            while not self._stopping:
                self._drain(view)
            return
        poller = select.poll()
        sock_fd = self._sock.fileno()
        poller.register(sock_fd, select.POLLIN)
        poller.register(wake.fileno(), select.POLLIN)
        while not self._stopping:
            for fd, event in poller.poll(_POLL_MS):
                if fd != sock_fd:
                    continue
                if event & select.POLLNVAL:
                    return
                self._drain(view)

    def start(self) -> None:
        """Run the loop in a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("the reflector is running already")
        self._stopping = False
        self._wake = socket.socketpair()
        self._thread = threading.Thread(
            target=self._run, args=(self._wake[0],), name="twamp-reflector", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop promptly and join its thread (no-op if not running)."""
        thread, wake = self._thread, self._wake
        if thread is None or wake is None:
            return
        self._stopping = True
        with contextlib.suppress(OSError):  # the poll timeout ends the loop anyway
            wake[1].send(b"\0")
        thread.join()
        for s in wake:
            s.close()
        self._thread = self._wake = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Reflector:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Reflector {IMPLEMENTATION} {state} sessions={len(self._by_peer)}>"


# -- Session-Sender --------------------------------------------------------------------------

# Sleep until this close to a send time, then spin on the clock: nanosleep and poll overshoot
# by tens of µs (timer slack), a spin does not.
_SPIN_NS = 200_000
# Longest single sleep, so that a stop event is seen within this time.
_MAX_SLEEP_NS = 20_000_000
# A packet sent later than this after its scheduled time counts as `behind_schedule`.
_BEHIND_NS = 1_000_000
_NS_PER_MS = 1_000_000
_S_BIT = 0x8000  # Error Estimate: clock synchronised (RFC 4656 §4.1.2)
_Z_BIT = 0x4000  # Error Estimate: PTP timestamps (RFC 8186 §2.3)


class StopFlag(Protocol):
    """What `Sender.run` needs of its `stop` argument; `threading.Event` is one."""

    def is_set(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class SenderResult:
    """What one `Sender.run` call sent and received.

    `sent`: one `metrics.SENT_DTYPE` row per packet the kernel accepted, in send order.
    `received`: one `metrics.RECORD_DTYPE` row per valid reflection, in arrival order (late
    replies to earlier `run` calls and duplicates included). `counters`: see `Sender`.
    """

    sent: npt.NDArray[np.void]
    received: npt.NDArray[np.void]
    counters: dict[str, int]


class Sender:
    """The Session-Sender data plane of one test session (RFC 5357 §4.1), pure-Python twin.

    Theory of operation
    -------------------
    `run(schedule_ns)` sends one packet per entry of `schedule_ns` (realtime ns, ascending), with
    sequence numbers `first_seq`, `first_seq + 1`, ... (RFC 5357 §4.1.2: from 0, one per packet,
    so a caller that runs a session in slices passes the count sent so far). Per packet:

    1. The plaintext packet (`packets.build_sender`: sequence number, zero timestamp, padding)
       is built ahead of time, while waiting.
    2. Pacing: the schedule is moved onto the monotonic clock once per call (a realtime step
       does not disturb it). Until `_SPIN_NS` before the send time the loop sleeps in poll(2) on
       the socket, so replies are taken in as they arrive and do not pile up in the receive
       buffer; the last `_SPIN_NS` are spun. `busy_poll` spins with non-blocking receives
       throughout. A packet sent more than `_BEHIND_NS` late counts in `behind_schedule`;
       `max_lag_ns` is the largest lateness.
    3. The send Timestamp (NTP format, Z = 0) and our Error Estimate (`clock.error_estimate()`)
       are written last, just before the send; `sent["t1"]` is that same value. In modes 2 and 4
       `TestPacketCrypto.protect_sender` then adds the HMAC and encrypts (RFC 5357 §4.1.2).
       Right after each send at most one queued reply is taken in, so that replies keep pace
       with requests even when the schedule leaves no time to wait.
    4. Sent with TTL 255 (set on the socket, spec §5.6: the far end counts hops from it) and
       TOS `tos` (a per-datagram control message). A failed send counts in `send_errors` and
       uses up its sequence number; the packet is not in `sent`.

    Each reflection (RFC 5357 §4.2.1) is received with the kernel's receive timestamp (T4,
    `SO_TIMESTAMPNS`) and the TTL and TOS it arrived with (0 when unknown). It must come from
    `peer` exactly (a v4-mapped address counts as its IPv4 address), else `unknown_peer`. It
    must be at least `fmt.reflector_header` long (longer is fine: a STAMP reflector answers a
    41-octet TWAMP Light request with 44, spec §11 item 17), else `malformed`. In modes 2 and 4
    `unprotect_reflector` runs first; a bad HMAC is `auth_failed`. `packets.parse_reflection`
    decodes it; T2 and T3 are converted to ns in the format its Error Estimate's Z bit names,
    T1 is the echoed Sender Timestamp. Replies whose Error Estimate lacks the S bit are counted
    in `reflector_unsynced` (one-way delays need both clocks synchronised).

    After the last send, `run` keeps receiving for up to `wait_ns`, and returns early once every
    packet of this call has been answered (an empty schedule always waits the full `wait_ns`,
    to collect stragglers of earlier calls). A set `stop` ends sending and waiting within
    `_MAX_SLEEP_NS`; what is queued is still received.

    Counters (per call): sent, send_errors, received, malformed, auth_failed, unknown_peer,
    behind_schedule, max_lag_ns, reflector_unsynced.
    """

    IMPLEMENTATION = IMPLEMENTATION

    def __init__(
        self,
        sock: socket.socket,
        peer: tuple[str, int],
        *,
        fmt: TestFormat,
        crypto: TestPacketCrypto | None = None,
        padding: int = 0,
        tos: int = 0,
        batch: int = 32,
        busy_poll: bool = False,
    ) -> None:
        if (fmt.test_mode is TestMode.OPEN) != (crypto is None):
            raise ValueError("crypto is required in authenticated/encrypted mode, and only there")
        if not 0 <= padding <= _RECV_BUFFER - fmt.reflector_header:
            raise ValueError(
                f"padding {padding} is outside 0..{_RECV_BUFFER - fmt.reflector_header}"
            )
        if not 0 <= tos <= 0xFF:
            raise ValueError(f"TOS {tos} is outside 0..255")
        if batch < 1:
            raise ValueError("batch must be at least 1")
        ip, port = peer
        if not 0 < port <= 0xFFFF:
            raise ValueError(f"peer port {port} is outside 1..65535")
        addr = ipaddress.ip_address(ip)  # ValueError for a name: resolve before
        v6 = sock.family == socket.AF_INET6
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is None and not v6:
            raise ValueError(f"an IPv4 socket cannot reach {ip}")
        self._peer = (normalize_ip(ip), int(port))
        if v6 and isinstance(addr, ipaddress.IPv4Address):
            self._dest: tuple[str, int] = (f"{_V4_MAPPED}{addr}", int(port))
        else:
            self._dest = (str(addr), int(port))
        self._sock = sock
        self._fmt = fmt
        self._crypto = crypto
        self._batch = batch
        self._busy_poll = busy_poll
        # RFC 5357 §4.1.2 / spec §5.5: pseudo-random, drawn independently of everything else.
        self._padding = os.urandom(padding)
        self._anc = tos_ancillary(sock.family, self._dest[0], tos)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        enable_receive_options(sock)
        set_send_ttl(sock)

    @property
    def peer(self) -> tuple[str, int]:
        return self._peer

    def run(
        self,
        schedule_ns: npt.NDArray[np.int64],
        *,
        first_seq: int = 0,
        wait_ns: int = 2_000_000_000,
        stop: StopFlag | None = None,
    ) -> SenderResult:
        """Send one packet per scheduled time, then wait for replies (see the class docstring)."""
        schedule = np.asarray(schedule_ns, dtype=np.int64)
        if schedule.ndim != 1:
            raise ValueError("schedule_ns must be one-dimensional")
        if schedule.size > 1 and bool(np.any(schedule[1:] < schedule[:-1])):
            raise ValueError("schedule_ns must be ascending")
        if not 0 <= first_seq <= _SEQ_MASK:
            raise ValueError(f"first_seq {first_seq} is outside 0..{_SEQ_MASK}")
        if wait_ns < 0:
            raise ValueError("wait_ns cannot be negative")
        run = _SenderRun(self, int(schedule.size), first_seq)
        fmt, crypto, padding = self._fmt, self._crypto, self._padding
        send, anc, dest = self._sock.sendmsg, self._anc, self._dest
        sent = run.sent
        realtime, monotonic = clock.realtime_ns, clock.monotonic_ns
        # One offset for the whole call: pacing on the monotonic clock.
        offset = monotonic() - realtime()
        targets = (schedule + offset).tolist()
        n_sent = n_errors = behind = 0
        max_lag = 0
        ee = clock.error_estimate()
        stopped = False
        for i, target in enumerate(targets):
            seq = (first_seq + i) & _SEQ_MASK
            pkt = build_sender(fmt, seq, 0, 0, padding)
            if i & 0xFF == 0:
                ee = clock.error_estimate()  # cached by clock; refreshed now and then
            if self._wait_until(run, target, stop):
                stopped = True
                break
            now = realtime()
            lag = monotonic() - target
            write_transmit_timestamp(pkt, fmt, ntp_from_ns(now), ee)
            if crypto is not None:
                crypto.protect_sender(pkt)
            try:
                send([pkt], anc, 0, dest)
            except OSError:
                n_errors += 1
                continue
            sent[n_sent] = (seq, now)
            n_sent += 1
            # One reply in per packet out: even when back-to-back sends leave no time to
            # wait, replies cannot pile up in the receive buffer.
            run.drain(1)
            if lag > max_lag:
                max_lag = lag
            if lag > _BEHIND_NS:
                behind += 1
        run.n_sent = n_sent
        if stopped:
            run.drain(_RECV_BUFFER)
        else:
            self._wait_replies(run, monotonic() + wait_ns, stop)
        counters = {
            "sent": n_sent,
            "send_errors": n_errors,
            "received": len(run.records),
            "malformed": run.malformed,
            "auth_failed": run.auth_failed,
            "unknown_peer": run.unknown_peer,
            "behind_schedule": behind,
            "max_lag_ns": max_lag,
            "reflector_unsynced": run.unsynced,
        }
        return SenderResult(sent[:n_sent].copy(), run.records.array.copy(), counters)

    def _wait_until(self, run: _SenderRun, target: int, stop: StopFlag | None) -> bool:
        """Receive while waiting for monotonic time `target`; True if `stop` was set."""
        monotonic = clock.monotonic_ns
        busy = self._busy_poll
        batch = self._batch
        while True:
            if stop is not None and stop.is_set():
                return True
            remaining = target - monotonic()
            if remaining <= 0:
                return False
            if remaining <= _SPIN_NS:
                while monotonic() < target:
                    pass
                return False
            if busy:
                run.drain(batch)
                continue
            nap = min(remaining - _SPIN_NS, _MAX_SLEEP_NS)
            if nap >= _NS_PER_MS:
                # poll(2) has millisecond resolution: round down, never past the spin phase.
                if run.poller.poll(nap // _NS_PER_MS):
                    run.drain(batch)
            else:
                run.drain(batch)
                time.sleep(nap / 1e9)

    def _wait_replies(self, run: _SenderRun, deadline: int, stop: StopFlag | None) -> None:
        monotonic = clock.monotonic_ns
        batch = self._batch
        expect_all = run.n > 0
        while True:
            run.drain(batch)
            if expect_all and run.answered >= run.n_sent:
                return
            if stop is not None and stop.is_set():
                return
            remaining = deadline - monotonic()
            if remaining <= 0:
                return
            if self._busy_poll:
                continue
            run.poller.poll(max(1, min(remaining, _MAX_SLEEP_NS) // _NS_PER_MS))

    def __repr__(self) -> str:
        return f"<Sender {IMPLEMENTATION} peer={self._peer[0]}:{self._peer[1]}>"


class _SenderRun:
    """Receive-side state of one `Sender.run` call."""

    __slots__ = (
        "answered",
        "auth_failed",
        "first_seq",
        "is_answered",
        "malformed",
        "n",
        "n_sent",
        "poller",
        "records",
        "sender",
        "sent",
        "unknown_peer",
        "unsynced",
        "view",
    )

    def __init__(self, sender: Sender, n: int, first_seq: int) -> None:
        self.sender = sender
        self.n = n
        self.n_sent = 0
        self.first_seq = first_seq
        self.sent: npt.NDArray[np.void] = np.zeros(n, dtype=SENT_DTYPE)
        self.records = Records(max(n, 16))
        self.is_answered = bytearray(n)
        self.answered = 0
        self.malformed = 0
        self.auth_failed = 0
        self.unknown_peer = 0
        self.unsynced = 0
        self.view = memoryview(bytearray(_RECV_BUFFER))
        self.poller = select.poll()
        self.poller.register(sender._sock.fileno(), select.POLLIN)

    def drain(self, limit: int) -> None:
        """Take in up to `limit` queued datagrams without blocking."""
        sender = self.sender
        recv = sender._sock.recvmsg_into
        view = self.view
        fmt = sender._fmt
        crypto = sender._crypto
        peer_ip, peer_port = sender._peer
        dest_ip = sender._dest[0]
        header = fmt.reflector_header
        for _ in range(limit):
            try:
                size, anc, flags, addr = recv([view], ANCBUF_SIZE, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # An ICMP error reported on the socket (e.g. port unreachable): nothing to read.
                continue
            rx_ns, ttl, tos = parse_ancillary(anc)
            if rx_ns is None:
                rx_ns = clock.realtime_ns()
            ip: str = addr[0]
            if addr[1] != peer_port or (
                ip != dest_ip and ip != peer_ip and not _same_ip(ip, peer_ip)
            ):
                self.unknown_peer += 1
                continue
            if flags & socket.MSG_TRUNC or size < header:
                self.malformed += 1
                continue
            data: _Buffer = view[:size]
            if crypto is not None:
                data = bytearray(data)
                try:
                    crypto.unprotect_reflector(data)
                except IntegrityError:
                    self.auth_failed += 1
                    continue
                except (ProtocolError, ValueError):
                    self.malformed += 1
                    continue
            try:
                reply = parse_reflection(fmt, data)
                ee = reply.error_estimate
                t2 = ns_from_timestamp(reply.receive_timestamp, bool(ee & _Z_BIT), rx_ns)
                t3 = ns_from_timestamp(reply.timestamp, bool(ee & _Z_BIT), rx_ns)
                s_ee = reply.sender_error_estimate
                t1 = ns_from_timestamp(reply.sender_timestamp, bool(s_ee & _Z_BIT), rx_ns)
            except (ProtocolError, ValueError):
                self.malformed += 1
                continue
            if not ee & _S_BIT:
                self.unsynced += 1
            sender_seq = reply.sender_seq
            self.records.append(
                sender_seq,
                reply.seq,
                t1,
                t2,
                t3,
                rx_ns,
                reply.sender_ttl,
                0 if ttl is None else ttl,
                0 if tos is None else tos,
            )
            idx = (sender_seq - self.first_seq) & _SEQ_MASK
            if idx < self.n and not self.is_answered[idx]:
                self.is_answered[idx] = 1
                self.answered += 1


def _same_ip(a: str, b: str) -> bool:
    try:
        return normalize_ip(a) == b
    except ValueError:
        return False
