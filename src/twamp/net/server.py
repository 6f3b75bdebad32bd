"""The TWAMP Server and Session-Reflector over asyncio ("complete TWAMP", RFC 5357 §5.1).

Theory of operation
-------------------
Three layers, each ignorant of the others' insides:

* `control.ServerConnection` (sans-I/O) decides everything about TWAMP-Control: message order,
  the crypto, what to refuse on its own, SERVWAIT. `_ControlProtocol` is the glue, after
  aioquic's asyncio layer: it feeds received octets and the monotonic clock in, answers the
  ``*Requested`` events, writes `data_to_send()` and re-arms `get_timer()`.
* `TwampServer` owns what sessions need and the policy: listeners, limits, the allow-list, test
  ports, SIDs, REFWAIT, the end of sessions.
* `dataplane.Reflector`, one per bound test socket and each with its own thread, reflects the
  TWAMP-Test packets; several sessions share a socket when their senders differ.

Life of a session:

1. Request-TW-Session: zero addresses become the control connection's (RFC 5357 §3.5); limits
   are checked; a test port is reserved (socket bound with `open_test_socket`, reflector thread
   running, the sender's exact (address, port) reserved on it); a SID is made (spec §3.12);
   Accept-Session. Until the start the reflector drops the sender's packets as `unknown_peer`.
2. Start-Sessions or Start-N-Sessions: `Reflector.add_session` with the format of the mode and
   feature bits, the test keys in modes 2 and 4, and the Type-P DSCP.
3. Stop-Sessions, Stop-N-Sessions or the end of the control connection: `stop_session(slot,
   now + Timeout)`. The reflector answers what arrives before that deadline and drops (counting
   `late`) what arrives after (RFC 5357 §4.2); the session is freed `linger_ns` after the
   deadline, so that stragglers are counted rather than met by ICMP port unreachable.
4. REFWAIT (RFC 5357 §4.2, spec §8): a started session with no valid test packet for
   `refwait_ns` is freed at once. When REFWAIT has ended every running session of a control
   connection, its SERVWAIT resumes: the connection is closed after `servwait_ns` without a
   control message (RFC 5357 §3.1).

A test port's socket and reflector thread go away with its last session. Accepted sessions that
were never started are freed with their control connection.

Decisions where the RFCs leave a choice:

* Refusing a client (over `max_connections`, or its address outside `allow`): Server-Greeting
  with Modes 0, then close (RFC 4656 §3.1).
* The Receiver Address must be an address of this host (the Session-Reflector is here): any
  other gets Accept 3, "not supported". A Sender Address outside `allow` gets Accept 1.
* Receiver Port: honoured when inside `port_range` and free, or bound by us for other senders.
  Otherwise (0, outside the range, busy) another port of the range, announced in Accept-Session
  (RFC 5357 §3.5, spec §3.9). No port left: Accept 5.
* Limits: Accept 5 (temporary) while existing sessions fill `max_sessions` or
  `max_sessions_per_client` (client = the control connection's address, counting sessions until
  they are freed); Accept 4 (permanent) when the limit is configured as 0.
* RFC 6038 Reflect Octets: a request whose packets cannot carry the padding to reflect back at
  equal size gets Accept 3 (RFC 6038 §4.2).
* Secure modes need keys: without any they are not offered (with a warning).

Nothing a peer sends can raise out of this module; an unexpected error in the handling of one
connection is logged and ends that connection only.
"""

from __future__ import annotations

import asyncio
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
)
from ..control import (
    ConnectionClosed,
    Event,
    RequestRefused,
    ServerConnection,
    SessionRequested,
    SetupComplete,
    StartNRequested,
    StartRequested,
    StopNRequested,
    StopRequested,
    make_sid,
)
from ..crypto import TestPacketCrypto
from ..dataplane.sockets import open_test_socket
from ..inet import normalize_ip as _plain
from ..timestamps import NS, ns_from_ntp_interval
from ..wire.control import RequestTWSession
from ..wire.packets import TestFormat

__all__ = [
    "DEFAULT_FEATURES",
    "DEFAULT_PORT_RANGE",
    "SUPPORTED_FEATURES",
    "ServerConfig",
    "TwampServer",
]

log = logging.getLogger("twamp.server")

# Outside the Linux ephemeral range (32768-60999), so that outgoing connections of the host do
# not take the ports a firewall opens for TWAMP-Test.
DEFAULT_PORT_RANGE = (20000, 20999)
# Feature bits the state machine and the reflector implement (spec §3.1): RFC 5938, RFC 6038
# (both bits), RFC 7750. Not IKEv2-derived keys (128) nor PTP timestamps (512).
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

Network = IPv4Network | IPv6Network


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything `TwampServer` can be told; times are integer nanoseconds."""

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
    max_connections: int = 256
    max_sessions: int = 1024
    max_sessions_per_client: int = 64
    allow: tuple[Network, ...] = ()
    """Client networks served; empty: everyone."""
    batch: int = 64
    busy_poll: bool = False
    """Reflector options (`dataplane.Reflector`); busy polling spins one core per test port."""
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
        lo, hi = self.port_range
        if not 1 <= lo <= hi <= 0xFFFF:
            raise ValueError(f"port range {lo}-{hi} is not within 1-65535 with low <= high")
        for name in ("max_connections", "max_sessions", "max_sessions_per_client"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} cannot be negative")
        for name in ("servwait_ns", "refwait_ns"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive (or None to disable)")
        if self.batch < 1:
            raise ValueError("batch must be at least 1")
        if self.linger_ns < 0 or self.housekeeping_ns <= 0:
            raise ValueError("linger_ns cannot be negative and housekeeping_ns must be positive")


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


def host_ipv4() -> bytes | None:
    """A non-loopback IPv4 address of this host (spec §3.12), from the interfaces; no traffic.

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


class _Refusal(Exception):
    """A Request-TW-Session answered with a non-zero Accept value."""

    def __init__(self, accept: AcceptCode, reason: str) -> None:
        super().__init__(reason)
        self.accept = accept
        self.reason = reason


class _TestPort:
    """One bound UDP socket and the reflector thread serving it."""

    __slots__ = ("ip", "peers", "port", "reflector", "sock")

    def __init__(
        self, ip: str, port: int, sock: socket.socket, reflector: dataplane.Reflector
    ) -> None:
        self.ip = ip
        self.port = port
        self.sock = sock
        self.reflector = reflector
        self.peers: set[tuple[str, int]] = set()

    @property
    def key(self) -> tuple[str, int]:
        return (self.ip, self.port)


_ACCEPTED, _RUNNING, _STOPPING = "accepted", "running", "stopping"


class _Session:
    """A test session from Accept-Session until it is freed."""

    __slots__ = (
        "client",
        "client_name",
        "free_at",
        "owner",
        "peer",
        "sid",
        "slot",
        "spec",
        "started_ns",
        "state",
        "test_port",
        "timeout_ns",
    )

    def __init__(
        self,
        sid: bytes,
        owner: _ControlProtocol,
        test_port: _TestPort,
        peer: tuple[str, int],
        spec: dataplane.SessionSpec,
        timeout_ns: int,
    ) -> None:
        self.sid = sid
        self.owner: _ControlProtocol | None = owner
        self.client = owner.peer_ip
        self.client_name = owner.name
        self.test_port = test_port
        self.peer = peer
        self.spec = spec
        self.timeout_ns = timeout_ns
        self.state = _ACCEPTED
        self.slot: int | None = None
        self.started_ns = 0  # realtime, for REFWAIT before the first packet
        self.free_at = 0  # monotonic, once stopping


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
        self._listeners: list[asyncio.Server] = []
        self._connections: set[_ControlProtocol] = set()
        self._sessions: dict[bytes, _Session] = {}
        self._ports: dict[tuple[str, int], _TestPort] = {}
        self._per_client: Counter[str] = Counter()
        self._port_cursor = 0
        self._housekeeper: asyncio.Task[None] | None = None
        self._start_time_ns = clock.realtime_ns()
        sid_ip = config.sid_address.packed if config.sid_address is not None else host_ipv4()
        self._sid_ip = sid_ip
        self._closed_counters: Counter[str] = Counter()
        self._totals: Counter[str] = Counter()
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
        try:
            for sock in self._listen_sockets():
                server = await loop.create_server(lambda: _ControlProtocol(self), sock=sock)
                self._listeners.append(server)
        except BaseException:
            for server in self._listeners:
                server.close()
            self._listeners.clear()
            self._running = False
            raise
        self._housekeeper = loop.create_task(self._housekeeping())
        log.info(
            "listening on %s; modes %d; reflector %s; test ports %d-%d",
            ", ".join(_endpoint(h, p) for h, p in self.addresses),
            int(self.offered_modes),
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
        for sess in list(self._sessions.values()):
            self._free(sess, "the server is stopping")
        for tp in list(self._ports.values()):
            self._close_port(tp)
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
        """Counters: connections, sessions by state, test ports, summed reflector counters."""
        states = Counter(s.state for s in self._sessions.values())
        reflector = Counter(self._closed_counters)
        for tp in self._ports.values():
            reflector.update(tp.reflector.counters())
        return {
            "connections": {
                "open": len(self._connections),
                "total": self._totals["connections"],
                "refused": self._totals["connections_refused"],
            },
            "sessions": {
                "accepted": states[_ACCEPTED],
                "running": states[_RUNNING],
                "stopping": states[_STOPPING],
                "total": self._totals["sessions"],
                "refused": self._totals["sessions_refused"],
                "refwait_expired": self._totals["refwait_expired"],
            },
            "test_ports": len(self._ports),
            "reflector": dict(reflector),
            "implementation": dataplane.IMPLEMENTATION,
        }

    # -- listeners ------------------------------------------------------------------------------

    def _listen_sockets(self) -> list[socket.socket]:
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
                        socks.append(_listen_socket(str(addr), port, v6only=not dual))
                    except OSError as exc:
                        if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL) or not dual:
                            raise
                        log.warning("IPv6 unavailable (%s): listening on 0.0.0.0", exc.strerror)
                        socks.append(_listen_socket("0.0.0.0", port, v6only=True))
                else:
                    socks.append(_listen_socket(str(addr), port, v6only=True))
        except BaseException:
            for s in socks:
                s.close()
            raise
        return socks

    # -- control connections --------------------------------------------------------------------

    def _admit_connection(self, peer_ip: str) -> str | None:
        """Why a new control connection is refused, or None (then it counts as open)."""
        if not self._running:
            return "the server is stopping"
        allow = self.config.allow
        if allow:
            addr = ipaddress.ip_address(peer_ip)
            if not any(addr in net for net in allow):
                return "not in the allow-list"
        if len(self._connections) >= self.config.max_connections:
            return f"{self.config.max_connections} control connections are open already"
        return None

    def _new_connection(self, proto: _ControlProtocol, refused: bool) -> ServerConnection:
        if refused:
            self._totals["connections_refused"] += 1
        else:
            self._totals["connections"] += 1
            self._connections.add(proto)
        return ServerConnection(
            modes=Mode(0) if refused else self.offered_modes,
            keys=self._keys,
            count=self.config.count,
            start_time_ns=self._start_time_ns,
            now_ns=clock.monotonic_ns(),
            servwait_ns=self.config.servwait_ns,
        )

    def _connection_gone(self, proto: _ControlProtocol) -> None:
        """The control connection ended: running sessions stop (Timeout applies), others go."""
        self._connections.discard(proto)
        for sid in list(proto.sids):
            sess = self._sessions.get(sid)
            if sess is None:
                continue
            sess.owner = None
            if sess.state == _ACCEPTED:
                self._free(sess, "never started; control connection closed")
            elif sess.state == _RUNNING:
                self._stop_one(sess)
        proto.sids.clear()

    # -- requests -------------------------------------------------------------------------------

    def _request(
        self, proto: _ControlProtocol, conn: ServerConnection, req: RequestTWSession
    ) -> None:
        try:
            sess = self._reserve(proto, conn, req)
        except _Refusal as refusal:
            self._totals["sessions_refused"] += 1
            conn.reject_session(refusal.accept)
            proto.info("session refused, Accept %d: %s", int(refusal.accept), refusal.reason)
            return
        try:
            conn.accept_session(sess.test_port.port, sess.sid)
        except BaseException:
            self._free(sess, "could not be accepted")
            raise
        self._totals["sessions"] += 1
        dscp = sess.spec.dscp
        proto.info(
            "session %s accepted: sender %s -> reflector %s, DSCP %s, Timeout %.3f s",
            sess.sid.hex(),
            _endpoint(*sess.peer),
            _endpoint(*sess.test_port.key),
            "-" if dscp is None else dscp,
            sess.timeout_ns / NS,
        )

    def _reserve(
        self, proto: _ControlProtocol, conn: ServerConnection, req: RequestTWSession
    ) -> _Session:
        cfg = self.config
        sender, receiver = self._addresses(proto, req)
        if cfg.allow and not any(ipaddress.ip_address(sender) in n for n in cfg.allow):
            raise _Refusal(AcceptCode.FAILURE, f"Sender Address {sender} is not in the allow-list")
        if req.sender_port == 0:
            raise _Refusal(AcceptCode.NOT_SUPPORTED, "Sender Port 0")
        self._check_limits(proto.peer_ip)
        mode = conn.mode
        fmt = TestFormat(
            TestMode.for_mode(mode),
            symmetrical=bool(mode & Mode.SYMMETRICAL_SIZE),
            dscp_ecn=bool(mode & Mode.DSCP_ECN),
        )
        if req.padding_to_reflect:
            # RFC 6038 §4.2: the reply echoes padding after its own, longer, header.
            room = fmt.sender_header + req.padding_length - fmt.reflector_header
            if room < req.padding_to_reflect:
                raise _Refusal(
                    AcceptCode.NOT_SUPPORTED,
                    f"Padding Length {req.padding_length} leaves {max(room, 0)} octets to "
                    f"reflect, not {req.padding_to_reflect}",
                )
        peer = (sender, req.sender_port)
        test_port = self._reserve_port(receiver, proto.scope_id, req.receiver_port, peer)
        try:
            sid = self._new_sid(receiver)
            crypto = None
            if fmt.test_mode is not TestMode.OPEN:
                crypto = TestPacketCrypto(conn.test_keys(sid), fmt.test_mode)
            spec = dataplane.SessionSpec(peer, fmt, crypto, req.dscp)
        except BaseException:
            if not test_port.peers:
                self._close_port(test_port)
            raise
        timeout_ns = ns_from_ntp_interval(req.timeout)
        sess = _Session(sid, proto, test_port, peer, spec, timeout_ns)
        test_port.peers.add(peer)
        self._sessions[sid] = sess
        self._per_client[sess.client] += 1
        proto.sids.add(sid)
        return sess

    def _addresses(self, proto: _ControlProtocol, req: RequestTWSession) -> tuple[str, str]:
        """Sender and Receiver Address as text; zeros -> the control connection's (§3.5)."""
        out: list[str] = []
        for given, ours, what in (
            (req.sender_address, proto.peer_ip, "Sender"),
            (req.receiver_address, proto.local_ip, "Receiver"),
        ):
            if given.is_unspecified:
                if ipaddress.ip_address(ours).version != req.ipvn:
                    raise _Refusal(
                        AcceptCode.NOT_SUPPORTED,
                        f"zero {what} Address in an IPv{req.ipvn} request over an "
                        f"IPv{ipaddress.ip_address(ours).version} control connection",
                    )
                out.append(ours)
                continue
            if given.is_multicast or (isinstance(given, IPv4Address) and given.is_reserved):
                raise _Refusal(AcceptCode.NOT_SUPPORTED, f"{what} Address {given} is not unicast")
            out.append(_plain(str(given)))
        return out[0], out[1]

    def _check_limits(self, client: str) -> None:
        cfg = self.config
        for limit, used, what in (
            (cfg.max_sessions, len(self._sessions), "sessions in all"),
            (cfg.max_sessions_per_client, self._per_client[client], f"sessions for {client}"),
        ):
            if limit == 0:
                raise _Refusal(AcceptCode.PERMANENT_RESOURCE_LIMIT, f"no {what} allowed")
            if used >= limit:
                raise _Refusal(
                    AcceptCode.TEMPORARY_RESOURCE_LIMIT, f"limit of {limit} {what} reached"
                )

    def _new_sid(self, receiver: str) -> bytes:
        ip4 = self._sid_ip
        if ip4 is None:
            # owamp's choice when the host has no other IPv4 address: the receiver's.
            ip4 = ipaddress.ip_address(receiver).packed[-4:]
        while True:
            sid = make_sid(ip4, clock.realtime_ns(), os.urandom(4))
            if sid not in self._sessions:
                return sid

    def _reserve_port(
        self, ip: str, scope_id: int, requested: int, peer: tuple[str, int]
    ) -> _TestPort:
        lo, hi = self.config.port_range
        if lo <= requested <= hi:
            tp = self._ports.get((ip, requested))
            if tp is None:
                tp = self._bind(ip, scope_id, requested)
            elif peer in tp.peers:
                tp = None
            if tp is not None:
                return tp
        n = hi - lo + 1
        for i in range(n):
            port = lo + (self._port_cursor + i) % n
            if (ip, port) in self._ports:
                continue
            tp = self._bind(ip, scope_id, port)
            if tp is not None:
                self._port_cursor = (port - lo + 1) % n
                return tp
        for tp in self._ports.values():
            if tp.ip == ip and peer not in tp.peers:
                return tp
        raise _Refusal(AcceptCode.TEMPORARY_RESOURCE_LIMIT, f"no free test port in {lo}-{hi}")

    def _bind(self, ip: str, scope_id: int, port: int) -> _TestPort | None:
        host = ip
        if scope_id and ipaddress.ip_address(ip).is_link_local:
            host = f"{ip}%{scope_id}"
        try:
            sock = open_test_socket(host, port)
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise _Refusal(
                    AcceptCode.NOT_SUPPORTED, f"Receiver Address {ip} is not an address of ours"
                ) from None
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                log.debug("cannot bind UDP %s: %s", _endpoint(ip, port), exc)
            return None
        try:
            reflector = dataplane.Reflector(
                sock, batch=self.config.batch, busy_poll=self.config.busy_poll
            )
            reflector.start()
        except BaseException:
            sock.close()
            raise
        tp = self._ports[(ip, port)] = _TestPort(ip, port, sock, reflector)
        return tp

    def _close_port(self, tp: _TestPort) -> None:
        self._ports.pop(tp.key, None)
        try:
            tp.reflector.stop()
            self._closed_counters.update(tp.reflector.counters())
        finally:
            tp.sock.close()

    # -- start and stop -------------------------------------------------------------------------

    def _start(self, proto: _ControlProtocol, sids: tuple[bytes, ...]) -> AcceptCode:
        """Admit `sids` to their reflectors; all or none (Start-Ack has one Accept)."""
        started: list[_Session] = []
        now = clock.realtime_ns()
        try:
            for sid in sids:
                sess = self._sessions[sid]
                sess.slot = sess.test_port.reflector.add_session(sess.spec)
                sess.state = _RUNNING
                sess.started_ns = now
                started.append(sess)
        except Exception as exc:
            proto.info("start failed, Accept 2: %s", exc)
            for sess in started:
                self._unslot(sess)
                sess.state = _ACCEPTED
            return AcceptCode.INTERNAL_ERROR
        return AcceptCode.OK

    def _stop_one(self, sess: _Session) -> None:
        if sess.state != _RUNNING or sess.slot is None:
            return
        # RFC 5357 §4.2: packets arriving within Timeout after the stop are still reflected.
        sess.test_port.reflector.stop_session(sess.slot, clock.realtime_ns() + sess.timeout_ns)
        sess.state = _STOPPING
        sess.free_at = clock.monotonic_ns() + sess.timeout_ns + self.config.linger_ns

    def _unslot(self, sess: _Session) -> dict[str, int] | None:
        if sess.slot is None:
            return None
        slot, sess.slot = sess.slot, None
        return dict(sess.test_port.reflector.remove_session(slot))

    def _free(self, sess: _Session, why: str) -> None:
        if self._sessions.pop(sess.sid, None) is None:
            return
        counters = self._unslot(sess)
        self._per_client[sess.client] -= 1
        if self._per_client[sess.client] <= 0:
            del self._per_client[sess.client]
        tp = sess.test_port
        tp.peers.discard(sess.peer)
        if not tp.peers:
            self._close_port(tp)
        if sess.owner is not None:
            sess.owner.sids.discard(sess.sid)
        if counters is not None:
            log.info(
                "%s: session %s ended (%s): received %d, reflected %d, dropped %d",
                sess.client_name,
                sess.sid.hex(),
                why,
                counters.get("received", 0),
                counters.get("reflected", 0),
                counters.get("dropped", 0),
            )
        else:
            log.info("%s: session %s freed (%s)", sess.client_name, sess.sid.hex(), why)

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
        refwait = self.config.refwait_ns
        mono = clock.monotonic_ns()
        real = clock.realtime_ns()
        for sess in list(self._sessions.values()):
            if sess.state == _STOPPING and mono >= sess.free_at:
                self._free(sess, "stopped")
            elif refwait is not None and sess.state != _ACCEPTED and sess.slot is not None:
                last = sess.test_port.reflector.session_counters(sess.slot)["last_rx_ns"]
                if real - max(last, sess.started_ns) >= refwait:
                    owner = sess.owner
                    self._totals["refwait_expired"] += 1
                    self._free(sess, f"REFWAIT: no test packet for {refwait / NS:g} s")
                    if owner is not None:
                        owner.refwait_expired(mono)


def _listen_socket(host: str, port: int, *, v6only: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if v6only else 0)
        sock.bind((host, port))
        sock.listen(128)
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
        self._refwait_ns = 0  # monotonic time REFWAIT last ended a session here
        self.sids: set[bytes] = set()
        self.peer_ip = ""
        self.local_ip = ""
        self.scope_id = 0
        self.name = "?"

    # -- logging ----------------------------------------------------------------------------

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
            self.peer_ip = _plain(peer[0])
            self.local_ip = _plain(local[0])
            self.scope_id = local[3] if len(local) > 3 else 0
            self.name = _endpoint(self.peer_ip, peer[1])
            refused = self._server._admit_connection(self.peer_ip)
            self._conn = self._server._new_connection(self, refused is not None)
        except Exception:
            log.exception("cannot set up a control connection")
            self._gone = True
            transport.abort()
            return
        self._last_rx_ns = clock.monotonic_ns()
        if refused is not None:
            self._gone = True  # never counted as open
            self.info("refused: %s (Modes 0)", refused)
        else:
            self.info("connected to %s", _endpoint(self.local_ip, local[1]))
        self._pump()

    def data_received(self, data: bytes) -> None:
        if self._conn is None:
            return
        self._last_rx_ns = now = clock.monotonic_ns()
        self._conn.receive_data(data, now)
        self._pump()

    def eof_received(self) -> bool | None:
        if self._conn is not None:
            self._conn.receive_data(b"", clock.monotonic_ns())
            self._pump()
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

    def _pump(self) -> None:
        conn, transport = self._conn, self._transport
        if conn is None or transport is None:
            return
        try:
            while (event := conn.next_event()) is not None:
                self._handle(conn, event)
            data = conn.data_to_send()
        except Exception:
            log.exception("%s: internal error; closing this connection", self.name)
            self.abort("internal error")
            return
        if data and not transport.is_closing():
            transport.write(data)
        if conn.closed:
            self._cancel_timer()
            transport.close()
        else:
            self._arm_timer()

    def _handle(self, conn: ServerConnection, event: Event) -> None:
        server = self._server
        if isinstance(event, SessionRequested):
            server._request(self, conn, event.request)
        elif isinstance(event, StartRequested):
            accept = server._start(self, event.sids)
            conn.start_ack(accept)
            self.info("start: %d session(s), Accept %d", len(event.sids), int(accept))
        elif isinstance(event, StartNRequested):
            accept = server._start(self, event.sids)
            conn.start_n_ack(accept, event.sids)
            self.info("start-N: %d session(s), Accept %d", len(event.sids), int(accept))
        elif isinstance(event, StopRequested):
            self._stop(event.sids)
            self.info("stop: %d session(s), Accept %d", len(event.sids), int(event.accept))
        elif isinstance(event, StopNRequested):
            self._stop(event.sids)
            conn.stop_n_ack(AcceptCode.OK, event.sids)
            self.info("stop-N: %d session(s)", len(event.sids))
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

    def _stop(self, sids: tuple[bytes, ...]) -> None:
        for sid in sids:
            sess = self._server._sessions.get(sid)
            if sess is not None:
                self._server._stop_one(sess)

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

    def refwait_expired(self, now_ns: int) -> None:
        """REFWAIT ended one of our sessions: SERVWAIT may resume (RFC 5357 §3.1)."""
        self._refwait_ns = now_ns
        self._arm_timer()

    def _deadline(self) -> int | None:
        conn = self._conn
        if conn is None or conn.closed:
            return None
        deadline = conn.get_timer()
        servwait = self._server.config.servwait_ns
        if deadline is None and servwait is not None and conn.running_sessions:
            live = any(
                (s := self._server._sessions.get(sid)) is not None and s.state == _RUNNING
                for sid in self.sids
            )
            if not live and self._refwait_ns:
                deadline = max(self._last_rx_ns, self._refwait_ns) + servwait
        return deadline

    def _arm_timer(self) -> None:
        self._cancel_timer()
        deadline = self._deadline()
        if deadline is None or self._transport is None:
            return
        delay = max(0, deadline - clock.monotonic_ns()) / NS
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
        if conn.get_timer() is not None:
            conn.handle_timer(now)
            self._pump()
            return
        deadline = self._deadline()
        if deadline is not None and now >= deadline:
            self.abort("SERVWAIT expired after REFWAIT ended every running session")
        else:
            self._arm_timer()
