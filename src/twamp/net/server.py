"""The TWAMP Server and Session-Reflector over asyncio ("complete TWAMP", RFC 5357 §5.1).

Theory of operation
-------------------
Thin glue between three sans-I/O or self-contained parts, after aioquic's asyncio layer:

* `control.ServerConnection` decides everything about TWAMP-Control: message order, the crypto,
  what to refuse on its own, SERVWAIT. `_ControlProtocol` feeds it received octets and the
  monotonic clock, answers its ``*Requested`` events, writes `data_to_send()` and arms a timer.
* `sessions.SessionTable` holds every policy decision: who may connect, limits, the allow-list,
  zero addresses, the Sender Address rule, the RFC 6038 room check, port choice, SIDs, Timeout
  cap, REFWAIT, the set-up deadline, the key-derivation rate. Its module docstring is the
  reference for the limits and their defaults.
* `dataplane.Reflector`, one per bound test socket (all on the process's one reflector loop),
  reflects the TWAMP-Test packets. Each test socket is connect()ed to its session's sender
  (`connect_test_sockets`), so strangers never reach its queue; without that, several sessions
  share a socket when their senders differ.

This module only does what the table says: binds and closes test ports, admits sessions to
reflectors and stops them at their deadline (converting the table's monotonic times to the
reflector's wall clock), runs PBKDF2 in a thread pool (RFC 4656 §3.1; it costs about a
millisecond and would otherwise stall every connection), logs every refusal, and closes
connections whose deadline passed. A refused client gets a Server-Greeting with Modes 0 and is
closed (RFC 4656 §3.1). The listen backlog is the kernel's ``net.core.somaxconn``.

Nothing a peer sends can raise out of this module; an unexpected error in the handling of one
connection is logged and ends that connection only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import fcntl
import ipaddress
import logging
import os
import socket
import struct
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from .. import clock, dataplane
from ..constants import (
    DEFAULT_COUNT,
    DEFAULT_REFWAIT_NS,
    DEFAULT_SERVWAIT_NS,
    MIN_COUNT,
    SECURE_CONTROL_MODES,
    SECURITY_MODES,
    TWAMP_CONTROL_PORT,
    AcceptCode,
    Mode,
    TestMode,
    mode_names,
)
from ..control import (
    ConnectionClosed,
    Event,
    KeyDerivationRequested,
    RequestRefused,
    ServerConnection,
    SessionRequested,
    SetupComplete,
    StartNRequested,
    StartRequested,
    StopNRequested,
    StopRequested,
)
from ..crypto import TestPacketCrypto, derive_key
from ..dataplane.sockets import open_test_socket
from ..dataplane.types import add_counts, t3_counts
from ..inet import normalize_ip
from ..sessions import (
    DEFAULT_PORT_RANGE,
    BindResult,
    Freed,
    Limits,
    Refused,
    Session,
    SessionTable,
)
from ..timestamps import NS

__all__ = [
    "DEFAULT_FEATURES",
    "DEFAULT_PORT_RANGE",
    "SUPPORTED_FEATURES",
    "ServerConfig",
    "TwampServer",
    "listen_backlog",
]

log = logging.getLogger("twamp.server")

# Feature bits the state machine and the reflector implement (RFC 5618 §3.1): RFC 5938, RFC 6038
# (both bits), RFC 7750. Not IKEv2-derived keys (RFC 7717, bit 128: a Set-Up-Response selecting
# it gets Server-Start Accept 3, since it was not offered) nor PTP timestamps (512).
SUPPORTED_FEATURES = (
    Mode.INDIVIDUAL_SESSION_CONTROL | Mode.REFLECT_OCTETS | Mode.SYMMETRICAL_SIZE | Mode.DSCP_ECN
)
DEFAULT_FEATURES = SUPPORTED_FEATURES

_MODE_NAMES = {
    Mode.UNAUTHENTICATED: "open",
    Mode.AUTHENTICATED: "authenticated",
    Mode.ENCRYPTED: "encrypted",
    Mode.MIXED: "mixed",
}
_SIOCGIFADDR = 0x8915  # <linux/sockios.h>
_IFREQ = struct.Struct("16s24x")  # struct ifreq (Linux, 64-bit): name, then the union
_WRITE_HIGH_WATER = 64 * 1024  # control replies a client does not read: stop reading it
_FALLBACK_BACKLOG = 4096  # the kernel's default somaxconn since Linux 5.4
_KDF_THREADS = 2

Network = IPv4Network | IPv6Network
_DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything `TwampServer` can be told; times are integer nanoseconds.

    The limits are those of `sessions.Limits` (see its module docstring for what each does).
    """

    listen: tuple[tuple[str, int], ...] = (("::", TWAMP_CONTROL_PORT),)
    """(address literal, TCP port) pairs; port 0 picks a free one. ``::`` is dual-stack unless
    ``0.0.0.0`` is also listed with the same port. If IPv6 is unavailable, ``::`` falls back
    to ``0.0.0.0``."""
    modes: Mode = SECURITY_MODES
    """Security modes to offer (1, 2, 4, 8); the secure ones only if `keys` is not empty."""
    features: Mode = DEFAULT_FEATURES
    """Feature bits to offer, a subset of `SUPPORTED_FEATURES`."""
    keys: Mapping[bytes, bytes] = field(default_factory=dict)
    """KeyID -> passphrase octets (`net.keyfile.load_keyfile`)."""
    count: int = DEFAULT_COUNT
    """PBKDF2 iteration count announced in Server-Greeting (power of 2, >= 1024)."""
    port_range: tuple[int, int] = DEFAULT_PORT_RANGE
    """Inclusive range of UDP ports for test sessions."""
    servwait_ns: int | None = DEFAULT_SERVWAIT_NS
    refwait_ns: int | None = DEFAULT_REFWAIT_NS
    max_connections: int = _DEFAULT_LIMITS.max_connections
    max_connections_per_address: int = _DEFAULT_LIMITS.max_connections_per_address
    max_sessions: int = _DEFAULT_LIMITS.max_sessions
    max_sessions_per_client: int = _DEFAULT_LIMITS.max_sessions_per_client
    allow: tuple[Network, ...] = ()
    """Client networks served; empty: everyone."""
    allow_third_party_sender: bool = False
    """Accept a Sender Address other than the control client's (amplification risk)."""
    setup_timeout_ns: int | None = _DEFAULT_LIMITS.setup_timeout_ns
    max_timeout_ns: int = _DEFAULT_LIMITS.max_timeout_ns
    kdf_per_s: float = _DEFAULT_LIMITS.kdf_per_s
    kdf_burst: int = _DEFAULT_LIMITS.kdf_burst
    backlog: int | None = None
    """Listen backlog; None: ``net.core.somaxconn``."""
    connect_test_sockets: bool = True
    """connect() each test socket to its session's sender, so that the kernel drops strangers'
    datagrams before they reach the session's receive queue; one session per test port then.
    False: a test port is shared by sessions whose senders differ, and the reflector drops and
    counts strangers (`unknown_peer`) after they took room in the queue."""
    batch: int = 64
    busy_poll: bool = False
    """Reflector options (`dataplane.Reflector`); busy polling spins one core per test port."""
    t3_diagnostic: bool = False
    """Measure the T3 error of every reflector (`Reflector(tx_timestamps=True).t3_error()`):
    `stats()["t3"]`."""
    linger_ns: int = NS
    """How long a stopped session is kept after its Timeout, counting late packets."""
    sid_address: IPv4Address | None = None
    """The IPv4 address put in SIDs; None: a non-loopback IPv4 address of this host."""
    housekeeping_ns: int = 200_000_000
    """Period of the REFWAIT and end-of-session checks."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "modes", Mode(self.modes))
        set_(self, "features", Mode(self.features))
        set_(self, "listen", tuple((str(h), int(p)) for h, p in self.listen))
        set_(self, "allow", tuple(ipaddress.ip_network(n, strict=False) for n in self.allow))
        if not self.listen:
            raise ValueError("at least one listen address is needed")
        for host, port in self.listen:
            _ip(host, "listen address")
            if not 0 <= port <= 0xFFFF:
                raise ValueError(f"listen port {port} is outside 0-65535")
        if not self.modes & SECURITY_MODES or self.modes & ~SECURITY_MODES:
            raise ValueError(f"modes {int(self.modes)} must be a non-empty subset of 1, 2, 4, 8")
        if self.features & ~SUPPORTED_FEATURES:
            raise ValueError(f"feature bits {int(self.features & ~SUPPORTED_FEATURES)} unsupported")
        if self.count < MIN_COUNT or self.count & (self.count - 1):
            raise ValueError(f"count must be a power of 2 >= {MIN_COUNT}, got {self.count}")
        if self.batch < 1:
            raise ValueError("batch must be at least 1")
        if self.backlog is not None and self.backlog < 1:
            raise ValueError("backlog must be at least 1")
        if self.housekeeping_ns <= 0:
            raise ValueError("housekeeping_ns must be positive")
        self.limits()  # the table's own checks

    def limits(self) -> Limits:
        return Limits(
            max_connections=self.max_connections,
            max_connections_per_address=self.max_connections_per_address,
            max_sessions=self.max_sessions,
            max_sessions_per_client=self.max_sessions_per_client,
            allow=self.allow,
            allow_third_party_sender=self.allow_third_party_sender,
            port_range=self.port_range,
            servwait_ns=self.servwait_ns,
            refwait_ns=self.refwait_ns,
            setup_timeout_ns=self.setup_timeout_ns,
            max_timeout_ns=self.max_timeout_ns,
            linger_ns=self.linger_ns,
            kdf_per_s=self.kdf_per_s,
            kdf_burst=self.kdf_burst,
            share_ports=not self.connect_test_sockets,
        )


def _ip(text: str, what: str) -> IPv4Address | IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not an IP address") from None


def _endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _mode_name(mode: Mode) -> str:
    name = _MODE_NAMES.get(Mode(mode & SECURITY_MODES), "?")
    features = int(mode & ~SECURITY_MODES)
    return f"{int(mode)} ({name}{f', features {features}' if features else ''})"


def listen_backlog() -> int:
    """``net.core.somaxconn``: the kernel caps any larger backlog to it anyway."""
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return max(1, int(f.read().strip()))
    except (OSError, ValueError):
        return _FALLBACK_BACKLOG


def host_ipv4() -> bytes | None:
    """A non-loopback IPv4 address of this host (the SID, RFC 5357 §3.5), from the interfaces.

    Falls back to the last 4 octets of a global IPv6 address; None if there is neither.
    """
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                ifreq = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, _IFREQ.pack(name.encode()))
            except OSError:
                continue  # no IPv4 address on this interface
            addr = ifreq[20:24]  # ifr_addr: family (2), port (2), address (4)
            if addr[0] != 127 and addr != bytes(4):
                return bytes(addr)
    with contextlib.suppress(OSError, ValueError), open("/proc/net/if_inet6") as f:
        for line in f:
            raw = bytes.fromhex(line.split()[0])
            v6 = IPv6Address(raw)
            if not (v6.is_loopback or v6.is_link_local or v6.is_unspecified):
                return raw[12:]
    return None


class _TestPort:
    """One bound UDP socket and the reflector thread serving it."""

    __slots__ = ("reflector", "sock")

    def __init__(self, sock: socket.socket, reflector: dataplane.Reflector) -> None:
        self.sock = sock
        self.reflector = reflector


class TwampServer:
    """TWAMP Server + Session-Reflector; see the module docstring.

    ``await start()`` binds the listeners, ``await stop()`` ends every connection and session.
    """

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config = config if config is not None else ServerConfig()
        security = config.modes
        if security & SECURE_CONTROL_MODES and not config.keys:
            log.warning(
                "no keys: modes 2, 4 and 8 (authenticated, encrypted, mixed) are not offered"
            )
            security &= ~SECURE_CONTROL_MODES
        if not security:
            raise ValueError("no mode left to offer: secure modes need keys (a key file)")
        self.offered_modes = Mode(security | config.features)
        self._keys = dict(config.keys)
        sid_ip = config.sid_address.packed if config.sid_address is not None else host_ipv4()
        self.table = SessionTable(config.limits(), sid_ipv4=sid_ip, random4=lambda: os.urandom(4))
        self._listeners: list[asyncio.Server] = []
        self._connections: set[_ControlProtocol] = set()
        self._ports: dict[tuple[str, int], _TestPort] = {}
        self._slots: dict[bytes, int] = {}  # SID -> reflector slot, while admitted
        self._specs: dict[bytes, dataplane.SessionSpec] = {}
        self._scope: dict[bytes, int] = {}
        self._housekeeper: asyncio.Task[None] | None = None
        self._kdf_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._start_time_ns = clock.realtime_ns()
        self._closed_counters: Counter[str] = Counter()
        self._closed_residence: Counter[str] = Counter()
        self._closed_t3: dict[str, int] = {}
        self._running = False

    # -- public ---------------------------------------------------------------------------------

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound listen addresses (with the port the kernel chose for port 0)."""
        out: list[tuple[str, int]] = []
        for server in self._listeners:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                out.append((host, port))
        return out

    async def start(self) -> None:
        if self._running:
            raise RuntimeError("the server is running already")
        loop = asyncio.get_running_loop()
        self._start_time_ns = clock.realtime_ns()
        self._running = True
        self._kdf_pool = concurrent.futures.ThreadPoolExecutor(
            _KDF_THREADS, thread_name_prefix="twamp-kdf"
        )
        try:
            backlog = self.config.backlog or listen_backlog()
            for sock in self._listen_sockets(backlog):
                # asyncio calls listen() again with its own backlog (default 100).
                server = await loop.create_server(
                    lambda: _ControlProtocol(self), sock=sock, backlog=backlog
                )
                self._listeners.append(server)
        except BaseException:
            for server in self._listeners:
                server.close()
            self._listeners.clear()
            self._running = False
            self._kdf_pool.shutdown(wait=False)
            raise
        self._housekeeper = loop.create_task(self._housekeeping())
        log.info(
            "listening on %s; modes %s; reflector %s; test ports %d-%d",
            ", ".join(_endpoint(h, p) for h, p in self.addresses),
            mode_names(self.offered_modes),
            dataplane.IMPLEMENTATION,
            *self.config.port_range,
        )

    async def stop(self) -> None:
        """Close the listeners, every control connection, session, socket and thread."""
        if not self._running:
            return
        self._running = False
        for server in self._listeners:
            server.close()
        for proto in list(self._connections):
            proto.abort("the server is stopping")
        if self._housekeeper is not None:
            self._housekeeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeper
            self._housekeeper = None
        self._apply(self.table.free_all("the server is stopping"))
        for key in list(self._ports):
            self._close_port(key)
        if self._kdf_pool is not None:
            self._kdf_pool.shutdown(wait=True, cancel_futures=True)
            self._kdf_pool = None
        for server in self._listeners:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)
        self._listeners.clear()
        log.info("stopped")

    async def __aenter__(self) -> TwampServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def stats(self) -> dict[str, Any]:
        """Counters: connections, sessions by state, refusals by limit, reflector counters and
        the reflectors' residence histogram."""
        totals = self.table.counters
        reflector = Counter(self._closed_counters)
        residence = Counter(self._closed_residence)
        t3 = dict(self._closed_t3)
        for tp in self._ports.values():
            reflector.update(tp.reflector.counters())
            residence.update(tp.reflector.residence())
            add_counts(t3, t3_counts(tp.reflector.t3_error()))
        return {
            "connections": {
                "open": self.table.connections,
                "total": totals["connections"],
                "refused": totals["connections_refused"]
                + totals["connections_refused_per_address"],
                "refused_per_address": totals["connections_refused_per_address"],
                "setup_timeouts": totals["setup_timeouts"],
            },
            "sessions": {
                **self.table.stats(),
                "total": totals["sessions"],
                "refused": totals["sessions_refused"],
                "refwait_expired": totals["refwait_expired"],
                "third_party_refused": totals["third_party_sender"],
                "timeouts_capped": totals["timeouts_capped"],
            },
            "key_derivations": {
                "done": totals["key_derivations"],
                "refused": totals["kdf_refused"] + totals["kdf_refused_rate"],
            },
            "test_ports": len(self._ports),
            "reflector": dict(reflector),
            # dataplane.types.RESIDENCE_KEYS, summed over the test ports (closed ones included)
            "residence": dict(residence),
            # --t3-diagnostic: dataplane.types.t3_counts, added up likewise; else {}
            "t3": t3,
            "implementation": dataplane.IMPLEMENTATION,
        }

    # -- listeners ------------------------------------------------------------------------------

    def _listen_sockets(self, backlog: int) -> list[socket.socket]:
        listen = self.config.listen
        v4_wild_ports = {p for h, p in listen if h == "0.0.0.0"}
        socks: list[socket.socket] = []
        try:
            for host, port in listen:
                addr = _ip(host, "listen address")
                if addr.version == 6 and addr.is_unspecified:
                    # A dual-stack [::] would take the IPv4 port of a listed 0.0.0.0 as well.
                    dual = port not in v4_wild_ports
                    try:
                        socks.append(_listen_socket(str(addr), port, not dual, backlog))
                    except OSError as exc:
                        if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL) or not dual:
                            raise
                        log.warning("IPv6 unavailable (%s): listening on 0.0.0.0", exc.strerror)
                        socks.append(_listen_socket("0.0.0.0", port, True, backlog))
                else:
                    socks.append(_listen_socket(str(addr), port, True, backlog))
        except BaseException:
            for s in socks:
                s.close()
            raise
        return socks

    # -- control connections --------------------------------------------------------------------

    def _new_connection(self, proto: _ControlProtocol) -> ServerConnection:
        """Admit `proto` (or not: Modes 0) and make its state machine."""
        now = clock.monotonic_ns()
        refused = False
        if not self._running:
            refused = True
            proto.info("refused: the server is stopping (Modes 0)")
        else:
            try:
                self.table.open_connection(proto, proto.peer_ip, now)
            except Refused as refusal:
                refused = True
                proto.info("refused: %s (Modes 0)", refusal.reason)
            else:
                self._connections.add(proto)
        return ServerConnection(
            modes=Mode(0) if refused else self.offered_modes,
            keys=self._keys,
            count=self.config.count,
            start_time_ns=self._start_time_ns,
            now_ns=now,
            servwait_ns=self.config.servwait_ns,
            defer_key_derivation=True,
        )

    def _connection_gone(self, proto: _ControlProtocol) -> None:
        """The control connection ended: running sessions stop (capped Timeout), others go."""
        self._connections.discard(proto)
        freed, stopped = self.table.close_connection(proto, clock.monotonic_ns())
        self._apply(freed)
        self._stop_in_reflectors(stopped)

    def _derive(self, proto: _ControlProtocol, conn: ServerConnection, ev: Any) -> None:
        """PBKDF2 for a Set-Up-Response, rate-limited, in the thread pool (RFC 4656 §3.1)."""
        assert isinstance(ev, KeyDerivationRequested)
        try:
            self.table.begin_key_derivation(proto, clock.monotonic_ns())
        except Refused as refusal:
            proto.info("key derivation refused, Server-Start Accept 5: %s", refusal.reason)
            conn.refuse_key_derivation(refusal.accept, refusal.reason)
            return
        pool = self._kdf_pool
        assert pool is not None
        future = asyncio.get_running_loop().run_in_executor(
            pool, derive_key, ev.passphrase, ev.salt, ev.count
        )
        future.add_done_callback(lambda f: self._derived(proto, conn, f))

    def _derived(
        self, proto: _ControlProtocol, conn: ServerConnection, future: asyncio.Future[bytes]
    ) -> None:
        self.table.end_key_derivation()
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            log.error("%s: key derivation failed: %s", proto.name, exc)
            conn.refuse_key_derivation(AcceptCode.INTERNAL_ERROR, "key derivation failed")
        else:
            conn.key_derived(future.result())
        proto.pump()

    # -- requests -------------------------------------------------------------------------------

    def _request(
        self, proto: _ControlProtocol, conn: ServerConnection, ev: SessionRequested
    ) -> None:
        def bind(ip: str, port: int, peer: tuple[str, int]) -> BindResult:
            return self._bind(ip, proto.scope_id, port, peer)

        try:
            sess, _ = self.table.reserve(
                proto, proto.local_ip, conn.mode, ev.request, wall_ns=clock.realtime_ns(), bind=bind
            )
        except Refused as refusal:
            conn.reject_session(refusal.accept)
            proto.info("session refused, Accept %d: %s", int(refusal.accept), refusal.reason)
            return
        try:
            crypto = None
            if sess.fmt.test_mode is not TestMode.OPEN:
                crypto = TestPacketCrypto(conn.test_keys(sess.sid), sess.fmt.test_mode)
            self._specs[sess.sid] = dataplane.SessionSpec(sess.peer, sess.fmt, crypto, sess.dscp)
            conn.accept_session(sess.receiver[1], sess.sid)
        except BaseException:
            self._apply([f for f in [self.table.free(sess.sid, "could not be accepted")] if f])
            raise
        capped = ""
        if sess.requested_timeout_ns > sess.timeout_ns:
            capped = f" (capped by --max-timeout; {sess.requested_timeout_ns / NS:.0f} s asked)"
        proto.info(
            "session %s accepted: sender %s -> reflector %s, DSCP %s, Timeout %.3f s%s",
            sess.sid.hex(),
            _endpoint(*sess.peer),
            _endpoint(*sess.receiver),
            "-" if sess.dscp is None else sess.dscp,
            sess.timeout_ns / NS,
            capped,
        )

    def _bind(self, ip: str, scope_id: int, port: int, peer: tuple[str, int]) -> BindResult:
        host = ip
        if scope_id and ipaddress.ip_address(ip).is_link_local:
            host = f"{ip}%{scope_id}"
        # A connect()ed socket hears only its sender: strangers are dropped by the kernel (and
        # counted there, Udp NoPorts) instead of filling the session's queue (issue 12). A
        # link-local sender would need its scope in connect(): such sockets stay unconnected.
        connect = (
            self.config.connect_test_sockets and not ipaddress.ip_address(peer[0]).is_link_local
        )
        try:
            sock = open_test_socket(host, port, peer=peer if connect else None)
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return BindResult.NOT_LOCAL
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                log.debug("cannot bind UDP %s: %s", _endpoint(ip, port), exc)
            return BindResult.BUSY
        try:
            reflector = dataplane.Reflector(
                sock,
                batch=self.config.batch,
                busy_poll=self.config.busy_poll,
                tx_timestamps=self.config.t3_diagnostic,
            )
            reflector.start()
        except BaseException:
            sock.close()
            raise
        self._ports[(ip, port)] = _TestPort(sock, reflector)
        return BindResult.BOUND

    def _close_port(self, key: tuple[str, int]) -> None:
        tp = self._ports.pop(key, None)
        if tp is None:
            return
        try:
            tp.reflector.stop()
            self._closed_counters.update(tp.reflector.counters())
            self._closed_residence.update(tp.reflector.residence())
            add_counts(self._closed_t3, t3_counts(tp.reflector.t3_error()))
        finally:
            tp.sock.close()

    # -- start and stop -------------------------------------------------------------------------

    def _start(self, proto: _ControlProtocol, sids: tuple[bytes, ...]) -> AcceptCode:
        """Admit `sids` to their reflectors; all or none (Start-Ack has one Accept)."""
        sessions = self.table.start(sids, clock.monotonic_ns())
        admitted: list[Session] = []
        try:
            for sess in sessions:
                reflector = self._ports[sess.receiver].reflector
                self._slots[sess.sid] = reflector.add_session(self._specs[sess.sid])
                admitted.append(sess)
        except Exception as exc:
            proto.info("start failed, Accept 2: %s", exc)
            for sess in admitted:
                self._unslot(sess)
            self.table.unstart(sessions)
            return AcceptCode.INTERNAL_ERROR
        return AcceptCode.OK

    def _stop(self, sids: tuple[bytes, ...]) -> None:
        self._stop_in_reflectors(self.table.stop(sids, clock.monotonic_ns()))

    def _stop_in_reflectors(self, sessions: list[Session]) -> None:
        mono, real = clock.monotonic_ns(), clock.realtime_ns()
        for sess in sessions:
            slot = self._slots.get(sess.sid)
            if slot is not None:
                # RFC 5357 §4.2: packets arriving within Timeout after the stop are reflected;
                # the reflector compares wall-clock receive times.
                self._ports[sess.receiver].reflector.stop_session(
                    slot, real + sess.reflect_until_ns - mono
                )

    def _unslot(self, sess: Session) -> dict[str, int] | None:
        slot = self._slots.pop(sess.sid, None)
        tp = self._ports.get(sess.receiver)
        if slot is None or tp is None:
            return None
        return dict(tp.reflector.remove_session(slot))

    def _apply(self, freed: list[Freed]) -> None:
        """Take freed sessions out of their reflectors, close unused ports, log the ends."""
        for f in freed:
            sess = f.session
            counters = self._unslot(sess)
            self._specs.pop(sess.sid, None)
            if f.close_port is not None:
                self._close_port(f.close_port)
            if counters is not None:
                log.info(
                    "%s: session %s ended (%s): received %d, reflected %d, dropped %d",
                    sess.client,
                    sess.sid.hex(),
                    f.why,
                    counters.get("received", 0),
                    counters.get("reflected", 0),
                    counters.get("dropped", 0),
                )
            else:
                log.info("%s: session %s freed (%s)", sess.client, sess.sid.hex(), f.why)

    # -- timers ---------------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        period = self.config.housekeeping_ns / NS
        while True:
            await asyncio.sleep(period)
            try:
                self._tick()
            except Exception:
                log.exception("housekeeping failed")

    def _tick(self) -> None:
        mono, real = clock.monotonic_ns(), clock.realtime_ns()

        def last_rx(sess: Session) -> int:
            slot, tp = self._slots.get(sess.sid), self._ports.get(sess.receiver)
            if slot is None or tp is None:
                return 0
            last = int(tp.reflector.session_counters(slot)["last_rx_ns"])
            return mono - (real - last) if last else 0  # wall clock -> monotonic

        freed = self.table.expire(mono, last_rx)
        self._apply(freed)
        for f in freed:
            owner = f.session.owner
            if isinstance(owner, _ControlProtocol) and f.why.startswith("REFWAIT"):
                owner.arm_timer()  # SERVWAIT may resume (RFC 5357 §3.1)


def _listen_socket(host: str, port: int, v6only: bool, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if v6only else 0)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _ControlProtocol(asyncio.Protocol):
    """One TWAMP-Control connection: bytes in and out of a `ServerConnection`, events answered."""

    def __init__(self, server: TwampServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._conn: ServerConnection | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._gone = False
        self._last_rx_ns = 0
        self.peer_ip = ""
        self.local_ip = ""
        self.scope_id = 0
        self.name = "?"

    def info(self, message: str, *args: object) -> None:
        log.info("%s: " + message, self.name, *args)

    # -- asyncio callbacks --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)
        try:
            peer = transport.get_extra_info("peername")
            local = transport.get_extra_info("sockname")
            self.peer_ip = normalize_ip(peer[0])
            self.local_ip = normalize_ip(local[0])
            self.scope_id = local[3] if len(local) > 3 else 0
            self.name = _endpoint(self.peer_ip, peer[1])
            self._conn = self._server._new_connection(self)
        except Exception:
            log.exception("cannot set up a control connection")
            self._gone = True
            transport.abort()
            return
        self._last_rx_ns = clock.monotonic_ns()
        if self._conn.closed:
            self._gone = True  # refused (Modes 0): never counted as open
        else:
            self.info("connected to %s", _endpoint(self.local_ip, local[1]))
        self.pump()

    def data_received(self, data: bytes) -> None:
        if self._conn is None:
            return
        self._last_rx_ns = now = clock.monotonic_ns()
        self._conn.receive_data(data, now)
        self.pump()

    def eof_received(self) -> bool | None:
        if self._conn is not None:
            self._conn.receive_data(b"", clock.monotonic_ns())
            self.pump()
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if not self._gone:
            reason = f"connection lost ({exc})" if exc is not None else "connection lost"
            self._end(reason)

    def pause_writing(self) -> None:
        # A client that does not read its replies must not make us buffer them without bound.
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    # -- the glue -----------------------------------------------------------------------------

    def pump(self) -> None:
        conn, transport = self._conn, self._transport
        if conn is None or transport is None or transport.is_closing():
            return
        try:
            while (event := conn.next_event()) is not None:
                self._handle(conn, event)
            data = conn.data_to_send()
        except Exception:
            log.exception("%s: internal error; closing this connection", self.name)
            self.abort("internal error")
            return
        if data:
            transport.write(data)
        if conn.closed:
            self._cancel_timer()
            transport.close()
        else:
            self.arm_timer()

    def _handle(self, conn: ServerConnection, event: Event) -> None:
        server = self._server
        if not isinstance(event, (SetupComplete, KeyDerivationRequested, ConnectionClosed)):
            server.table.command_seen(self)
        if isinstance(event, SessionRequested):
            server._request(self, conn, event)
        elif isinstance(event, StartRequested):
            accept = server._start(self, event.sids)
            conn.start_ack(accept)
            self.info("start: %d session(s), Accept %d", len(event.sids), int(accept))
        elif isinstance(event, StartNRequested):
            accept = server._start(self, event.sids)
            conn.start_n_ack(accept, event.sids)
            self.info("start-N: %d session(s), Accept %d", len(event.sids), int(accept))
        elif isinstance(event, StopRequested):
            server._stop(event.sids)
            self.info("stop: %d session(s), Accept %d", len(event.sids), int(event.accept))
        elif isinstance(event, StopNRequested):
            server._stop(event.sids)
            conn.stop_n_ack(AcceptCode.OK, event.sids)
            self.info("stop-N: %d session(s)", len(event.sids))
        elif isinstance(event, KeyDerivationRequested):
            server._derive(self, conn, event)
        elif isinstance(event, SetupComplete):
            key = f", KeyID {event.key_id.decode('utf-8', 'replace')!r}" if event.key_id else ""
            self.info("mode %s%s", _mode_name(event.mode), key)
        elif isinstance(event, RequestRefused):
            self.info(
                "%s refused, Accept %d: %s",
                event.command.name.replace("_", "-").title(),
                int(event.accept),
                event.reason,
            )
        elif isinstance(event, ConnectionClosed):
            code = "" if event.accept is None else f", Accept {int(event.accept)}"
            self._end(f"{event.reason}{code}")

    def _end(self, reason: str) -> None:
        """Log the close once and hand the sessions back to the server."""
        if self._gone:
            return
        self._gone = True
        self.info("closed: %s", reason)
        self._server._connection_gone(self)

    def abort(self, reason: str) -> None:
        self._cancel_timer()
        self._end(reason)
        if self._transport is not None:
            self._transport.abort()

    # -- timers -------------------------------------------------------------------------------

    def _due(self, now_ns: int | None) -> tuple[int, str] | str | None:
        conn = self._conn
        if conn is None or conn.closed:
            return None
        table = self._server.table
        args = (self, conn.get_timer(), self._last_rx_ns)
        running = bool(conn.running_sessions)
        if now_ns is None:
            return table.connection_deadline(*args, sessions_running=running)
        return table.connection_due(self, now_ns, *args[1:], sessions_running=running)

    def arm_timer(self) -> None:
        self._cancel_timer()
        deadline = self._due(None)
        if not isinstance(deadline, tuple) or self._transport is None:
            return
        delay = max(0, deadline[0] - clock.monotonic_ns()) / NS
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        conn = self._conn
        if conn is None or conn.closed:
            return
        now = clock.monotonic_ns()
        due = self._due(now)
        if due == "":
            conn.handle_timer(now)
            self.pump()
        elif isinstance(due, str):
            self.info("%s", due)
            self.abort(due)
        else:
            self.arm_timer()
