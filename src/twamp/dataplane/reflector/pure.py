"""The Session-Reflector, pure-Python twin of `reflector/compiled.pyx`.

Theory of operation
-------------------
TWAMP-Control (another layer) negotiates sessions and hands this module a bound UDP socket and,
per session, a `SessionSpec`: the sender's exact (address, port), the packet format, the test
crypto, the DSCP to send with and whether to keep a sequence counter. `Reflector` owns a thread
that drains the socket and answers every admitted datagram at once. Both twins have the same API,
the same counters and the same per-datagram behaviour; `process()` exposes that behaviour without
sockets so that tests can compare them packet for packet.

Per datagram (RFC 5357 §4.2), in this order:

1. The kernel's receive timestamp (`SO_TIMESTAMPNS`) is the Receive Timestamp: it is taken in the
   kernel when the datagram arrives, so it excludes our scheduling delay. TTL and TOS come from
   ancillary data; a missing TTL is reported as 255 (RFC 5357 §4.2.1).
2. Admission by the session's exact (address, port); v4-mapped peers of a dual-stack socket count
   as their IPv4 address. Anything else is dropped (`unknown_peer`), unless a TWAMP Light policy
   admits it (RFC 5357 Appendix I, RFC 8762: no control protocol, configured out of band).
3. After Stop-Sessions the session reflects only what arrives before its deadline (stop time +
   Timeout, RFC 5357 §4.2); later datagrams are dropped silently and counted `late`.
4. Shorter than the sender header (`TestFormat.min_request_length`): `malformed`. Modes 2/4:
   decrypt and verify; failure: `auth_failed` (RFC 5357 §4.2, §4.1.2).
5. `packets.reflect()` builds the reply: own sequence number (stateful: a per-session counter
   from 0, RFC 5357 §4.2.1; stateless Light/STAMP: the sender's), Receive Timestamp, copies of
   the sender's fields, Sender TTL, truncated padding, S-DSCP-ECN (RFC 7750) when negotiated.
6. The transmit Timestamp and Error Estimate are written last, right before the send (RFC 5357
   §4.2.1: T3 - T2 is the time spent here and must not be hidden), then in modes 2/4 the HMAC
   and encryption, which cover the timestamps in mode 4 (RFC 5357 §4.2.1, RFC 4656 §4.1.2).
7. Sent back to the peer's address from the receiving socket, with TTL 255 (set on the socket) and
   TOS = session DSCP << 2 (Not-ECT), or the received TOS octet when the session has no DSCP.

Nothing on this path logs or raises: every outcome is a counter. The session table is read by the
loop thread without a lock (dict reads are atomic in CPython); writers hold `_lock`.

API (both twins; the compiled one accepts these same SessionSpec/LightPolicy objects)::

    SessionSpec(peer: tuple[str, int], fmt: TestFormat, crypto: TestPacketCrypto | None = None,
                dscp: int | None = None, stateful: bool = True)
    LightPolicy(fmt: TestFormat, stateful: bool, allow: tuple[IPv4Network | IPv6Network, ...] = (),
                dscp: int | None = None, max_peers: int = 4096)
    Reflector(sock, *, batch: int | None = None, busy_poll: bool | None = None,
              light: LightPolicy | None = None, loop: ReflectorLoop | None = None,
              tx_timestamps: bool = False, send_batch: int | None = None)
        IMPLEMENTATION                      # "python" here, "cython" compiled
        add_session(spec) -> int            # slot: lowest free; ValueError if the peer is taken
        stop_session(slot, deadline_ns)     # realtime ns; KeyError for a free slot
        remove_session(slot) -> dict        # its final session counters
        session_counters(slot) -> dict      # received reflected dropped errors last_rx_ns
        counters() -> dict                  # received reflected unknown_peer malformed
                                            # auth_failed late send_errors light_evicted
                                            # rate_limited
        residence() -> dict                 # RESIDENCE_KEYS: T3 - T2 histogram and sum
        send_groups() -> dict[int, int]     # datagrams per send call -> calls
        send_batch                          # cap of datagrams per send call (attribute)
        process(data, peer, rx_ns, ttl, tos) -> tuple[bytes, int] | None
        start() / stop() / context manager / running / loop / socket / socket_failed
    ReflectorLoop(*, batch: int = 64, busy_poll: bool = False,   # one thread, many Reflectors
                  buf_stride: int | None = None)  # compiled: bytes between receive buffers
        close() / running / thread / len()  # start() of a Reflector joins, stop() leaves
    default_loop(batch=64) -> ReflectorLoop # the process's shared loop (per pid and batch)

For a server (the API `net/server.py` uses): open the test socket with
`dataplane.sockets.open_test_socket`, then `Reflector(sock)`, `add_session(spec)`, `start()`;
on Stop-Sessions `stop_session(slot, deadline_ns)`; at the end `remove_session(slot)` (final
counters) and `stop()`. Starting a Reflector costs a table insert on the shared loop, not a
thread; `stop()` returns once the loop can no longer touch it, so the socket may be closed then.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import selectors
import socket
import threading
from collections import OrderedDict
from types import TracebackType

from ... import clock
from ...constants import DEFAULT_TTL
from ...crypto import TestPacketCrypto
from ...errors import IntegrityError, ProtocolError
from ...inet import dscp_to_tos
from ...timestamps import ntp_from_ns
from ...wire.packets import TestFormat, reflect, write_transmit_timestamp
from ..sockets import (
    ANCBUF_SIZE,
    enable_tx_timestamps,
    parse_ancillary,
    read_tx_timestamps,
    set_send_ttl,
    tos_ancillary,
)
from ..types import (
    MAX_DATAGRAM,
    NEVER,
    RESIDENCE_KEYS,
    SEQ_MASK,
    LightPolicy,
    SessionSpec,
    check_buf_stride,
    check_send_batch,
    diag_summary,
    normalize_ip,
    residence_bucket,
)

__all__ = ["CRYPTO_BACKEND", "IMPLEMENTATION", "Reflector", "ReflectorLoop", "default_loop"]

IMPLEMENTATION = "python"
CRYPTO_BACKEND = "python"  # test packets of modes 2 and 4 go through TestPacketCrypto

_V4_MAPPED = "::ffff:"
_DIAG_RING = 4096  # the compiled twin's DIAG_RING

_Buffer = bytes | bytearray | memoryview


class _Session:
    """Mutable per-session state; only the loop thread (or the `process()` caller) writes it."""

    __slots__ = (
        "crypto",
        "deadline_ns",
        "dropped",
        "errors",
        "fmt",
        "last_rx_ns",
        "light",
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
        self.tos = None if dscp is None else dscp_to_tos(dscp)
        self.stateful = stateful
        self.light = peer is None  # a TWAMP Light state or the shared one (set by the caller)
        self.seq = 0
        self.deadline_ns = NEVER
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


class _T3Diagnostic:
    """The Timestamps of the last _DIAG_RING replies by kernel datagram number, and the
    histogram of (kernel software transmit time - Timestamp), as the compiled twin keeps."""

    __slots__ = ("hist", "max", "min", "n", "next", "ring", "total")

    def __init__(self) -> None:
        self.ring = [0] * _DIAG_RING
        self.next = 0
        self.hist = [0] * 64
        self.n = self.total = self.max = 0
        self.min = NEVER

    def sent(self, t3_ns: int) -> None:
        self.ring[self.next % _DIAG_RING] = t3_ns
        self.next += 1

    def received(self, reports: list[tuple[int, int]]) -> None:
        for key, stamp in reports:
            if ((self.next - key) & SEQ_MASK) - 1 >= _DIAG_RING:
                continue  # ee_data is 32 bits; only the last _DIAG_RING replies are known
            early = max(0, stamp - self.ring[key % _DIAG_RING])
            self.hist[0 if early <= 1 else min(63, (early - 1).bit_length())] += 1
            self.n += 1
            self.total += early
            self.max = max(self.max, early)
            self.min = min(self.min, early)

    def summary(self) -> dict[str, int]:
        return diag_summary(self.hist, self.n, self.total, self.min, self.max)


class Reflector:
    """Reflects TWAMP-Test datagrams arriving on `sock` for the sessions added to it.

    `batch`: datagrams drained per wake-up before polling again (default: the loop's, or 64).
    `busy_poll` (default: the loop's, or False): spin on a non-blocking receive instead of
    sleeping in epoll (lower latency, a whole core; a private loop unless `loop` is given).
    `loop`: the ReflectorLoop to run on; None: the process's `default_loop(batch)`. `light`:
    also admit unknown peers as TWAMP Light / STAMP. The socket stays the caller's: the reflector
    sets its unicast TTL to 255 and otherwise only reads and writes it.

    `send_batch` (default `REFLECTOR_SEND_BATCH`, validated as the compiled twin does) caps the
    replies per send system call. This twin has no `sendmmsg`: every reply goes out in its own
    `sendmsg` right after its Timestamp, which is what the compiled twin does while it keeps up
    (one per call) and the limit of every cap; `send_groups()` reports the calls by datagrams
    sent (here always 1), as the compiled twin does.

    Session counters: `received` datagrams from the session's peer, `reflected`, `dropped` (late,
    malformed or failing authentication), `errors` (send failures), `last_rx_ns` (receive time of
    the last datagram that passed authentication, 0 if none: the server's REFWAIT clock).
    """

    IMPLEMENTATION = IMPLEMENTATION

    def __init__(
        self,
        sock: socket.socket,
        *,
        batch: int | None = None,
        busy_poll: bool | None = None,
        light: LightPolicy | None = None,
        loop: ReflectorLoop | None = None,
        tx_timestamps: bool = False,
        send_batch: int | None = None,
    ) -> None:
        send_batch = check_send_batch(send_batch)
        if batch is None:
            batch = 64 if loop is None else loop.batch
        if busy_poll is None:
            busy_poll = False if loop is None else loop.busy_poll
        if batch < 1:
            raise ValueError("batch must be at least 1")
        if loop is not None and batch > loop.batch:
            raise ValueError(f"batch {batch} exceeds the loop's batch {loop.batch}")
        if loop is not None and busy_poll != loop.busy_poll:
            raise ValueError("busy_poll must match the loop's")
        self._given_loop = loop
        self._owner: ReflectorLoop | None = None
        self._sock = sock
        self._v6 = sock.family == socket.AF_INET6
        self._batch = batch
        self._busy_poll = busy_poll
        self.send_batch = send_batch
        self._send_calls = 0  # sendmsg calls that sent a reply (one each)
        self._light = light
        set_send_ttl(sock)
        self._lock = threading.Lock()
        self._slots: list[_Session | None] = []
        self._by_peer: dict[tuple[str, int], _Session] = {}
        # Stateful Light: (address, port, SSID) -> state, least recently used first.
        self._light_states: OrderedDict[tuple[str, int, int], _Session] = OrderedDict()
        # Stateless Light: peers found allowed (the shared session), at most max_peers.
        self._light_allowed: dict[tuple[str, int], _Session] = {}
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
        self._light_evicted = 0
        self._rate_limited = 0
        # types.RESIDENCE_KEYS: per bucket (last +Inf), then the sum of residences in ns
        self._residence = [0] * len(RESIDENCE_KEYS)
        self._rate_tat: dict[str, int] = {}  # LightPolicy.rate_pps: source -> GCRA tat
        self._dead = False  # the socket failed with EBADF: the loop ignores this Reflector
        self._diag: _T3Diagnostic | None = None
        if tx_timestamps:
            enable_tx_timestamps(sock)
            self._diag = _T3Diagnostic()

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
            # A Light sender that now has a negotiated session: its Light states go.
            for key in [k for k in self._light_states if k[:2] == spec.peer]:
                del self._light_states[key]
            self._light_allowed.pop(spec.peer, None)
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
            "light_evicted": self._light_evicted,
            "rate_limited": self._rate_limited,
        }

    def residence(self) -> dict[str, int]:
        """The residence histogram (T3 - T2 of every reflected datagram, `types.RESIDENCE_KEYS`):
        counts per bucket, not cumulative, the last one +Inf, then `residence_sum_ns`."""
        return dict(zip(RESIDENCE_KEYS, list(self._residence), strict=True))

    def send_groups(self) -> dict[int, int]:
        """{datagrams per send call: calls}: here every reply has a call of its own."""
        return {1: self._send_calls} if self._send_calls else {}

    def _count_residence(self, residence_ns: int) -> None:
        # types.RESIDENCE_BOUNDS_NS: a negative residence (clock stepped) in the first bucket.
        hist = self._residence
        hist[residence_bucket(residence_ns)] += 1
        if residence_ns > 0:
            hist[-1] += residence_ns

    def _session(self, slot: int) -> _Session:
        sess = self._slots[slot] if 0 <= slot < len(self._slots) else None
        if sess is None:
            raise KeyError(f"no session in slot {slot}")
        return sess

    def _admit(self, data: _Buffer, ip: str, port: int, rx_ns: int) -> _Session | None:
        """Slow path for a peer not found as given: canonical form, then the Light policy."""
        light = self._light
        if light is not None and light.stateful:
            # The fast case first: the address as the kernel gave it is the canonical one.
            sess = self._light_state(data, ip, port, rx_ns, light, checked=False)
            if sess is not None:
                return sess
        try:
            norm = normalize_ip(ip)
        except ValueError:
            return None
        key = (norm, port)
        sess = self._by_peer.get(key)
        if sess is not None or light is None:
            return sess
        if light.stateful:
            return self._light_state(data, norm, port, rx_ns, light, checked=True)
        # Stateless: the shared session; caching it per peer only spares these checks.
        sess = self._light_allowed.get(key)
        if sess is not None:
            return sess
        shared = self._light_shared
        if not self._allowed(light, norm):
            return None
        if shared is not None and len(self._light_allowed) < light.max_peers:
            self._light_allowed[key] = shared
        return shared

    def _rate_ok(self, ip: str, rx_ns: int) -> bool:
        """LightPolicy.rate_pps: GCRA per source address, as the compiled twin's `_rate_ok`."""
        light = self._light
        assert light is not None
        interval = max(1, 1_000_000_000 // light.rate_pps)
        try:
            key = normalize_ip(ip)
        except ValueError:
            return True
        tats = self._rate_tat
        tat = tats.get(key)
        if tat is None:
            if len(tats) >= light.max_peers:
                tats.clear()  # every bucket starts full again: a reset, never a lock-out
            tat = rx_ns
        tat = max(tat, rx_ns)
        if tat - rx_ns > interval * (light.burst - 1):
            tats[key] = tat
            return False
        tats[key] = tat + interval
        return True

    @staticmethod
    def _allowed(light: LightPolicy, ip: str) -> bool:
        if not light.allow:
            return True
        addr = ipaddress.ip_address(ip)
        return any(addr in net for net in light.allow)

    def _light_state(
        self, data: _Buffer, ip: str, port: int, rx_ns: int, light: LightPolicy, checked: bool
    ) -> _Session | None:
        """Stateful TWAMP Light: the state of (address, port, SSID), made or refreshed.

        See `LightPolicy`: the SSID (RFC 8972 §3) is part of the key; the counter restarts
        when the sender's does or after `idle_ns` of silence; a full table evicts the least
        recently used state. `checked`: `ip` is canonical, so a new state may be made.
        """
        off = light.fmt.ssid_offset
        ssid = 0
        if off is not None and len(data) >= off + 2:
            ssid = data[off] << 8 | data[off + 1]
        key = (ip, port, ssid)
        states = self._light_states
        sess = states.get(key)
        if sess is not None:
            states.move_to_end(key)
            if sess.last_rx_ns and (
                rx_ns - sess.last_rx_ns > light.idle_ns
                or (len(data) >= 4 and data[0] == data[1] == data[2] == data[3] == 0)
            ):
                sess.seq = 0
            return sess
        if not checked or not self._allowed(light, ip) or light.max_peers <= 0:
            return None
        if len(states) >= light.max_peers:
            states.popitem(last=False)
            self._light_evicted += 1
        sess = states[key] = _Session((ip, port), light.fmt, None, light.dscp, True)
        sess.light = True
        return sess

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
        sess = self._by_peer.get(key) or self._admit(data, ip, port, rx_ns)
        if sess is None:
            self._unknown_peer += 1
            return None
        sess.received += 1
        light = self._light
        if sess.light and light is not None and light.rate_pps and not self._rate_ok(ip, rx_ns):
            self._rate_limited += 1
            sess.dropped += 1
            return None
        if rx_ns > sess.deadline_ns:
            self._late += 1
            sess.dropped += 1
            return None
        fmt = sess.fmt
        if len(data) < fmt.min_request_length or (
            sess.light
            and light is not None
            and light.symmetric_only
            and len(data) < fmt.reflector_header
        ):
            # The second: LightPolicy.symmetric_only, a reply never longer than its request.
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
            sess.seq = (seq + 1) & SEQ_MASK
        sess.last_rx_ns = rx_ns
        return reply, tos if sess.tos is None else sess.tos, sess

    @staticmethod
    def _finish(reply: bytearray, sess: _Session) -> int:
        """Step 6: transmit Timestamp as late as possible, then HMAC and encryption; the
        Timestamp written, in Unix ns."""
        now = clock.realtime_ns()
        write_transmit_timestamp(reply, sess.fmt, ntp_from_ns(now), clock.error_estimate())
        if sess.crypto is not None:
            sess.crypto.protect_reflector(reply)
        return now

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
        t3 = self._finish(reply, sess)
        self._reflected += 1
        sess.reflected += 1
        self._count_residence(t3 - sess.last_rx_ns)
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
        if self._diag is not None:
            with self._lock:
                self._diag.received(read_tx_timestamps(self._sock))
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
                if exc.errno in (errno.EBADF, errno.ENOTSOCK):
                    self._dead = True
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
                t3 = self._finish(reply, sess)
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
                self._send_calls += 1
                sess.reflected += 1
                self._count_residence(t3 - sess.last_rx_ns)
                if self._diag is not None:
                    self._diag.sent(t3)

    def t3_error(self) -> dict[str, int] | None:
        """The T3 diagnostic (`tx_timestamps=True`), else None: how early the transmit
        Timestamps were, against the kernel's software transmit time of the same replies
        (samples, min_ns, mean_ns, max_ns, p50_ns and p99_ns as powers-of-two upper bounds).
        """
        if self._diag is None:
            return None
        with self._lock:  # the loop updates it under the same lock as the session table
            return self._diag.summary()

    def start(self) -> None:
        """Start reflecting: join the given loop, else the process's loop for this batch size
        (a private one with `busy_poll`). Costs a table insert; no thread per Reflector."""
        if self._owner is not None:
            raise RuntimeError("the reflector is running already")
        loop = self._given_loop
        if loop is None:
            loop = (
                ReflectorLoop(batch=self._batch, busy_poll=True)
                if self._busy_poll
                else default_loop(self._batch)
            )
        loop._add(self)

    def stop(self) -> None:
        """Leave the loop; once this returns the loop never touches this Reflector again."""
        loop = self._owner
        if loop is None:
            return
        loop._remove(self)
        if self._given_loop is None and self._busy_poll:
            loop.close()

    @property
    def running(self) -> bool:
        return self._owner is not None and self._owner.running

    @property
    def socket(self) -> socket.socket:
        """The test socket this Reflector reads and answers on."""
        return self._sock

    @property
    def socket_failed(self) -> bool:
        """True once a receive failed with EBADF/ENOTSOCK (closed under a running loop)."""
        return self._dead

    @property
    def loop(self) -> ReflectorLoop | None:
        """The ReflectorLoop this Reflector runs on (None when stopped)."""
        return self._owner

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


_default_loops: dict[tuple[int, int], ReflectorLoop] = {}
_default_lock = threading.Lock()


def default_loop(batch: int = 64) -> ReflectorLoop:
    """The process's shared ReflectorLoop for this batch size (made on first use).

    Keyed by the process id too: a forked child must not use its parent's loop, whose thread
    did not survive the fork.
    """
    key = (os.getpid(), batch)
    with _default_lock:
        loop = _default_loops.get(key)
        if loop is None:
            loop = _default_loops[key] = ReflectorLoop(batch=batch)
        return loop


class ReflectorLoop:
    """One thread, one selector, every Reflector of a process; the compiled twin's loop.

    `Reflector.start()` registers its socket with this loop's selector (epoll on Linux); the
    first one starts the thread, which waits in `select()` with no timeout, so an idle loop
    makes no system call. Each ready socket gets one `_drain` of up to `batch` datagrams. The
    thread holds `_lock` from the return of `select()` until that round is handled; `_remove`
    takes the same lock, so once it returns the loop never touches that Reflector again (an
    event fetched before is skipped: the Reflector is no longer a member). `busy_poll` spins
    over the members with non-blocking receives instead. `close()` stops the thread.
    """

    def __init__(
        self, *, batch: int = 64, busy_poll: bool = False, buf_stride: int | None = None
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self._batch = batch
        self._busy_poll = busy_poll
        # The compiled loop's receive-buffer layout; here one buffer of MAX_DATAGRAM serves
        # every datagram, so only the truncation limit follows the stride.
        self._stride = check_buf_stride(buf_stride)
        self._lock = threading.Lock()
        self._members: dict[int, Reflector] = {}  # id() -> Reflector
        self._selector = selectors.DefaultSelector()
        self._wake = socket.socketpair()
        self._wake[0].setblocking(False)
        self._selector.register(self._wake[0], selectors.EVENT_READ, None)
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def batch(self) -> int:
        return self._batch

    @property
    def busy_poll(self) -> bool:
        return self._busy_poll

    @property
    def buf_stride(self) -> int:
        """Bytes between two receive buffers (a datagram longer than this is truncated)."""
        return self._stride

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def thread(self) -> threading.Thread | None:
        """The loop's thread while it runs (its native_id finds it in /proc)."""
        return self._thread

    def __len__(self) -> int:
        return len(self._members)

    def _start_thread(self) -> None:
        if self.running:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="twamp-reflector", daemon=True)
        self._thread.start()

    def _add(self, refl: Reflector) -> None:
        if refl._batch > self._batch:
            raise ValueError(f"batch {refl._batch} exceeds the loop's batch {self._batch}")
        self._start_thread()
        with self._lock:
            if not self._busy_poll:
                self._selector.register(refl._sock, selectors.EVENT_READ, refl)
            self._members[id(refl)] = refl
            refl._owner = self
            refl._dead = False

    def _remove(self, refl: Reflector) -> None:
        with self._lock:
            if self._members.pop(id(refl), None) is None:
                return
            if not self._busy_poll:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.unregister(refl._sock)
            refl._owner = None

    def close(self) -> None:
        """Stop the thread and take every Reflector off (they report not running)."""
        for refl in list(self._members.values()):
            self._remove(refl)
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake[1].send(b"\0")
        thread.join()
        self._thread = None

    def _run(self) -> None:
        view = memoryview(bytearray(min(MAX_DATAGRAM, self._stride)))
        while not self._stopping:
            if self._busy_poll:
                with self._lock:
                    for refl in list(self._members.values()):
                        if not refl._dead:
                            refl._drain(view)
                continue
            events = self._selector.select()  # no timeout: idle costs nothing
            with self._lock:
                for key, _ in events:
                    refl = key.data
                    if refl is None:
                        with contextlib.suppress(OSError):
                            self._wake[0].recv(64)
                    elif self._members.get(id(refl)) is refl and not refl._dead:
                        refl._drain(view)
                        if refl.socket_failed:
                            with contextlib.suppress(KeyError, ValueError, OSError):
                                self._selector.unregister(refl._sock)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<ReflectorLoop {IMPLEMENTATION} {state} reflectors={len(self._members)}>"
