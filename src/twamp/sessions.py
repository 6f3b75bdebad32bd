"""The session table of a TWAMP Server: every policy decision, sans-I/O (RFC 5357 §3.5, §4.2).

`SessionTable` decides who may connect, which sessions are accepted, on which test port, with
which SID, when a session stops reflecting and when it is freed, and when a control connection
has been quiet too long. It never touches a socket, a thread or a clock: the caller (the asyncio
glue in `net.server`) passes the monotonic time `now_ns` (and the wall-clock time where a SID
needs it) and does what the returned values say: bind or close a test port, admit a session to
its reflector, stop it at a deadline, close a connection.

Connections are identified by any hashable token the caller chooses (the glue uses its protocol
object). Addresses are canonical text (`inet.normalize_ip`): a v4-mapped IPv6 peer is its IPv4
address.

Limits, each with its default (`Limits`), its refusal, a log line (by the caller, from the
`Refused.reason`) and a counter (`counters`, named in `Refused.counter`):

* Control connections: at most `max_connections` in all and `max_connections_per_address` from
  one address; an address outside `allow` is refused. The refusal is Server-Greeting Modes 0
  (RFC 4656 §3.1). A connection must complete its set-up (Set-Up-Response, then its first
  command) within `setup_timeout_ns` of the TCP accept, far shorter than SERVWAIT, so that
  silent clients cannot hold the slots for SERVWAIT (900 s by default, RFC 5357 §3.1).
* Key derivation (PBKDF2 on Set-Up-Response, RFC 4656 §3.1): at most `kdf_burst` at once per
  address and `kdf_per_s` a second after that (a token bucket per address), and at most
  `max_pending_kdf` derivations queued in all. Refusal: Server-Start Accept 5.
* Sessions: `max_sessions` in all (every session until it is freed: it holds a port and a
  thread) and `max_sessions_per_client` per control-client address, counting only sessions not
  yet stopped: a monitoring system running back-to-back short sessions is never refused by its
  own stopped sessions. Accept 5 while the limit is full, Accept 4 if it is configured as 0.
* Sender Address (RFC 5357 §3.5): it must be the control client's own address unless
  `allow_third_party_sender`; otherwise the reflector would send its replies, larger than the
  requests, to a host that never asked for them. Refusal: Accept 1 (a policy refusal, like the
  allow-list). A zero Sender Address means the control client's (RFC 5357 §3.5).
* Timeout (RFC 5357 §3.5, §4.2): a stopped session reflects for its Timeout, capped at
  `max_timeout_ns`, and is freed `linger_ns` later (so stragglers are counted as late rather
  than met by ICMP port unreachable). A session therefore never outlives the Stop or the end of
  its control connection by more than `max_timeout_ns + linger_ns`.
* REFWAIT (RFC 5357 §4.2): a started session without a valid test packet for
  `refwait_ns` is freed. When REFWAIT has ended every running session of a connection, SERVWAIT
  applies again from then (RFC 5357 §3.1).

Other decisions where the RFCs leave a choice:

* The Receiver Address must be an address of this host: any other gets Accept 3 (the caller's
  bind reports `BindResult.NOT_LOCAL`). A Sender Address outside `allow` gets Accept 1.
  Multicast, reserved or a zero address of the other IP version: Accept 3. Sender Port 0:
  Accept 3.
* Receiver Port: honoured when inside `port_range` and free, or bound by us for other senders.
  Otherwise (0, outside the range, busy) another port of the range, announced in Accept-Session
  (RFC 5357 §3.5). No port left: Accept 5.
* RFC 6038 Reflect Octets: a request whose packets cannot carry the padding to reflect back at
  equal size gets Accept 3 (RFC 6038 §4.2).
"""

from __future__ import annotations

import enum
import ipaddress
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Network

from .constants import DEFAULT_REFWAIT_NS, DEFAULT_SERVWAIT_NS, AcceptCode, Mode, TestMode
from .control import make_sid
from .inet import normalize_ip
from .timestamps import NS, ns_from_ntp_interval
from .wire.control import RequestTWSession
from .wire.packets import TestFormat

__all__ = [
    "DEFAULT_PORT_RANGE",
    "BindResult",
    "Freed",
    "Limits",
    "Refused",
    "Session",
    "SessionState",
    "SessionTable",
]

Network = IPv4Network | IPv6Network

# Outside the Linux ephemeral range (32768-60999), so that outgoing connections of the host do
# not take the ports a firewall opens for TWAMP-Test.
DEFAULT_PORT_RANGE = (20000, 20999)


@dataclass(frozen=True, slots=True)
class Limits:
    """Every limit and timer of the table; times in integer nanoseconds, None disables."""

    max_connections: int = 256
    max_connections_per_address: int = 16
    max_sessions: int = 1024
    max_sessions_per_client: int = 64
    allow: tuple[Network, ...] = ()
    """Client networks served; empty: everyone."""
    allow_third_party_sender: bool = False
    """Accept a Sender Address other than the control client's own."""
    port_range: tuple[int, int] = DEFAULT_PORT_RANGE
    servwait_ns: int | None = DEFAULT_SERVWAIT_NS
    refwait_ns: int | None = DEFAULT_REFWAIT_NS
    setup_timeout_ns: int | None = 10 * NS
    """From the TCP accept to the first command (past Set-Up-Response and Server-Start)."""
    max_timeout_ns: int = 30 * NS
    """Cap on the Timeout of a session: how long it reflects after Stop or the end of control."""
    linger_ns: int = NS
    share_ports: bool = True
    """One test port serves several sessions whose senders differ; False: one session per
    port (what a test socket connect()ed to its sender needs)."""
    kdf_per_s: float = 20.0
    kdf_burst: int = 10
    max_pending_kdf: int = 64

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "allow", tuple(ipaddress.ip_network(n, strict=False) for n in self.allow)
        )
        for name in (
            "max_connections",
            "max_connections_per_address",
            "max_sessions",
            "max_sessions_per_client",
            "max_timeout_ns",
            "linger_ns",
            "max_pending_kdf",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} cannot be negative")
        for name in ("servwait_ns", "refwait_ns", "setup_timeout_ns"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive (or None to disable)")
        if not self.kdf_per_s > 0 or self.kdf_burst < 1:
            raise ValueError("kdf_per_s must be positive and kdf_burst at least 1")
        lo, hi = self.port_range
        if not 1 <= lo <= hi <= 0xFFFF:
            raise ValueError(f"port range {lo}-{hi} is not within 1-65535 with low <= high")


class Refused(Exception):
    """A refusal: `accept` to send, `reason` for the log, `counter` incremented in the table."""

    def __init__(self, accept: AcceptCode, reason: str, counter: str) -> None:
        super().__init__(reason)
        self.accept = accept
        self.reason = reason
        self.counter = counter


class BindResult(enum.Enum):
    """What the caller's bind of a test port did."""

    BOUND = "bound"
    BUSY = "busy"  # in use by someone else, or not permitted: try another port
    NOT_LOCAL = "not-local"  # EADDRNOTAVAIL: the Receiver Address is not ours


class SessionState(enum.Enum):
    ACCEPTED = "accepted"  # Accept-Session sent; the reflector drops the sender's packets
    RUNNING = "running"
    STOPPING = "stopping"  # reflects until `reflect_until_ns`, freed at `free_at_ns`


@dataclass(slots=True, eq=False)
class Session:
    """A test session from Accept-Session until it is freed."""

    sid: bytes
    owner: Hashable | None
    """The control connection; None once it has ended."""
    client: str
    """The control client's address (the per-client limit counts by it)."""
    receiver: tuple[str, int]
    """The reflector's (address, UDP port)."""
    peer: tuple[str, int]
    """The Session-Sender's (address, port)."""
    fmt: TestFormat
    dscp: int | None
    timeout_ns: int
    """Timeout as requested, capped at `Limits.max_timeout_ns`."""
    requested_timeout_ns: int = 0
    """Timeout as requested (for the log line when it was capped)."""
    state: SessionState = SessionState.ACCEPTED
    started_ns: int = 0
    reflect_until_ns: int = 0
    free_at_ns: int = 0


@dataclass(frozen=True, slots=True)
class Freed:
    """A session the table let go: the caller removes it and closes `close_port` if set."""

    session: Session
    why: str
    close_port: tuple[str, int] | None


@dataclass(slots=True)
class _Connection:
    peer_ip: str
    opened_ns: int
    commanded: bool = False
    refwait_ns: int = 0  # when REFWAIT last ended one of its sessions
    sids: set[bytes] = field(default_factory=set)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at_ns: int


class SessionTable:
    """Sessions, test ports and control connections of one Server; see the module docstring."""

    def __init__(
        self, limits: Limits | None = None, *, sid_ipv4: bytes | None, random4: Callable[[], bytes]
    ) -> None:
        """`sid_ipv4`: the address put in SIDs (None: the receiver's); `random4` gives 4
        unpredictable octets (the SID keys the test crypto, RFC 5357 §4.1.2)."""
        self.limits = limits if limits is not None else Limits()
        self._sid_ipv4 = sid_ipv4
        self._random4 = random4
        self._connections: dict[Hashable, _Connection] = {}
        self._per_address: Counter[str] = Counter()
        self._sessions: dict[bytes, Session] = {}
        self._ports: dict[tuple[str, int], set[tuple[str, int]]] = {}
        self._per_client: Counter[str] = Counter()
        self._port_cursor = 0
        self._buckets: dict[str, _Bucket] = {}
        self._pending_kdf = 0
        self.counters: Counter[str] = Counter()
        """Totals: connections, sessions, and one ``*_refused``/expiry counter per limit."""

    # -- views --------------------------------------------------------------------------------

    @property
    def sessions(self) -> Mapping[bytes, Session]:
        return self._sessions

    @property
    def ports(self) -> Mapping[tuple[str, int], set[tuple[str, int]]]:
        """Test ports in use -> the senders reserved on each."""
        return self._ports

    @property
    def connections(self) -> int:
        return len(self._connections)

    def connection_sids(self, conn: Hashable) -> frozenset[bytes]:
        record = self._connections.get(conn)
        return frozenset(record.sids) if record is not None else frozenset()

    def _refuse(self, accept: AcceptCode, reason: str, counter: str) -> Refused:
        self.counters[counter] += 1
        return Refused(accept, reason, counter)

    # -- control connections ----------------------------------------------------------------

    def open_connection(self, conn: Hashable, peer_ip: str, now_ns: int) -> None:
        """Admit a new control connection or raise `Refused` (answer: Modes 0, then close)."""
        lim = self.limits
        peer_ip = normalize_ip(peer_ip)
        if lim.allow and not any(ipaddress.ip_address(peer_ip) in n for n in lim.allow):
            raise self._refuse(AcceptCode.FAILURE, "not in the allow-list", "connections_refused")
        if len(self._connections) >= lim.max_connections:
            raise self._refuse(
                AcceptCode.TEMPORARY_RESOURCE_LIMIT,
                f"{lim.max_connections} control connections are open already",
                "connections_refused",
            )
        if self._per_address[peer_ip] >= lim.max_connections_per_address:
            raise self._refuse(
                AcceptCode.TEMPORARY_RESOURCE_LIMIT,
                f"{lim.max_connections_per_address} control connections from {peer_ip} are open "
                "already",
                "connections_refused_per_address",
            )
        self._connections[conn] = _Connection(peer_ip, now_ns)
        self._per_address[peer_ip] += 1
        self.counters["connections"] += 1

    def command_seen(self, conn: Hashable) -> None:
        """The connection's first command arrived: its set-up deadline no longer applies."""
        record = self._connections.get(conn)
        if record is not None:
            record.commanded = True

    def close_connection(self, conn: Hashable, now_ns: int) -> tuple[list[Freed], list[Session]]:
        """The control connection ended: running sessions stop (capped Timeout), others go.

        Returns the sessions freed and those stopped (the caller tells their reflectors)."""
        record = self._connections.pop(conn, None)
        if record is None:
            return [], []
        self._per_address[record.peer_ip] -= 1
        if self._per_address[record.peer_ip] <= 0:
            del self._per_address[record.peer_ip]
        freed: list[Freed] = []
        stopped: list[Session] = []
        for sid in sorted(record.sids):
            sess = self._sessions.get(sid)
            if sess is None:
                continue
            sess.owner = None
            if sess.state is SessionState.ACCEPTED:
                freed.append(self._free(sess, "never started; control connection closed"))
            elif sess.state is SessionState.RUNNING:
                self._stop(sess, now_ns)
                stopped.append(sess)
        return freed, stopped

    def connection_deadline(
        self,
        conn: Hashable,
        servwait_deadline_ns: int | None,
        last_rx_ns: int,
        *,
        sessions_running: bool = False,
    ) -> tuple[int, str] | None:
        """When to close the connection and why, or None.

        `servwait_deadline_ns` is the state machine's own timer (`ServerConnection.get_timer`,
        None while sessions run or an answer is owed); `last_rx_ns` the time of its last octets;
        `sessions_running` whether the state machine counts sessions as running.
        Three deadlines: the set-up deadline, SERVWAIT, and SERVWAIT again once REFWAIT has
        ended every running session (RFC 5357 §3.1).
        """
        record = self._connections.get(conn)
        if record is None:
            return None
        out: list[tuple[int, str]] = []
        lim = self.limits
        if lim.setup_timeout_ns is not None and not record.commanded:
            out.append(
                (
                    record.opened_ns + lim.setup_timeout_ns,
                    f"set-up not completed within {lim.setup_timeout_ns / NS:g} s",
                )
            )
        if servwait_deadline_ns is not None:
            out.append((servwait_deadline_ns, ""))  # the state machine closes it itself
        elif lim.servwait_ns is not None and sessions_running and record.refwait_ns:
            live = any(
                (s := self._sessions.get(sid)) is not None and s.state is SessionState.RUNNING
                for sid in record.sids
            )
            if not live:
                out.append(
                    (
                        max(last_rx_ns, record.refwait_ns) + lim.servwait_ns,
                        "SERVWAIT expired after REFWAIT ended every running session",
                    )
                )
        return min(out) if out else None

    def connection_due(
        self,
        conn: Hashable,
        now_ns: int,
        servwait_deadline_ns: int | None,
        last_rx_ns: int,
        *,
        sessions_running: bool = False,
    ) -> str | None:
        """At a timer: None (not due: re-arm), "" (the state machine's own SERVWAIT: call its
        `handle_timer`), or the reason to close the connection now (counted)."""
        due = self.connection_deadline(
            conn, servwait_deadline_ns, last_rx_ns, sessions_running=sessions_running
        )
        if due is None or now_ns < due[0]:
            return None
        reason = due[1]
        if reason.startswith("set-up"):
            self.counters["setup_timeouts"] += 1
        elif reason:
            self.counters["servwait_after_refwait"] += 1
        return reason

    # -- key derivation -----------------------------------------------------------------------

    def begin_key_derivation(self, conn: Hashable, now_ns: int) -> None:
        """Admit one PBKDF2 derivation for `conn` or raise `Refused` (Server-Start Accept 5)."""
        record = self._connections.get(conn)
        ip = record.peer_ip if record is not None else "?"
        lim = self.limits
        if self._pending_kdf >= lim.max_pending_kdf:
            raise self._refuse(
                AcceptCode.TEMPORARY_RESOURCE_LIMIT,
                f"{lim.max_pending_kdf} key derivations are queued already",
                "kdf_refused",
            )
        bucket = self._buckets.get(ip)
        if bucket is None:
            bucket = self._buckets[ip] = _Bucket(float(lim.kdf_burst), now_ns)
        bucket.tokens = min(
            float(lim.kdf_burst), bucket.tokens + (now_ns - bucket.at_ns) * lim.kdf_per_s / NS
        )
        bucket.at_ns = now_ns
        if bucket.tokens < 1.0:
            raise self._refuse(
                AcceptCode.TEMPORARY_RESOURCE_LIMIT,
                f"more than {lim.kdf_per_s:g} key derivations a second from {ip}",
                "kdf_refused_rate",
            )
        bucket.tokens -= 1.0
        self._pending_kdf += 1
        if len(self._buckets) > 4 * max(lim.max_connections, 1):
            # Full buckets carry no information: forget them so the map stays bounded.
            for key, b in list(self._buckets.items()):
                if b.tokens + (now_ns - b.at_ns) * lim.kdf_per_s / NS >= lim.kdf_burst:
                    del self._buckets[key]

    def end_key_derivation(self) -> None:
        self._pending_kdf = max(0, self._pending_kdf - 1)
        self.counters["key_derivations"] += 1

    # -- sessions -----------------------------------------------------------------------------

    def reserve(
        self,
        conn: Hashable,
        local_ip: str,
        mode: Mode,
        req: RequestTWSession,
        *,
        wall_ns: int,
        bind: Callable[[str, int, tuple[str, int]], BindResult],
    ) -> tuple[Session, bool]:
        """Accept `req` on connection `conn` (whose local address is `local_ip`), or raise
        `Refused`. Returns the session and whether its test port was bound for it.

        `bind(ip, port, peer)` binds a test port for the sender `peer` (the caller keeps the
        socket, and may connect() it to `peer` when `Limits.share_ports` is off); `wall_ns` is the
        wall-clock time that goes into the SID (RFC 5357 §3.5).
        """
        record = self._connections[conn]
        try:
            sess, new_port = self._reserve(conn, record, local_ip, mode, req, wall_ns, bind)
        except Refused as refusal:
            self.counters[refusal.counter] += 1
            self.counters["sessions_refused"] += 1
            raise
        self.counters["sessions"] += 1
        return sess, new_port

    def _reserve(
        self,
        conn: Hashable,
        record: _Connection,
        local_ip: str,
        mode: Mode,
        req: RequestTWSession,
        wall_ns: int,
        bind: Callable[[str, int, tuple[str, int]], BindResult],
    ) -> tuple[Session, bool]:
        lim = self.limits
        client = record.peer_ip
        sender, receiver = self._addresses(client, normalize_ip(local_ip), req)
        if lim.allow and not any(ipaddress.ip_address(sender) in n for n in lim.allow):
            raise Refused(
                AcceptCode.FAILURE, f"Sender Address {sender} is not in the allow-list", "allow"
            )
        if sender != client and not lim.allow_third_party_sender:
            raise Refused(
                AcceptCode.FAILURE,
                f"Sender Address {sender} is not the control client's {client} (third-party "
                "senders are not allowed)",
                "third_party_sender",
            )
        if req.sender_port == 0:
            raise Refused(AcceptCode.NOT_SUPPORTED, "Sender Port 0", "unsupported")
        self._check_limits(client)
        fmt = TestFormat(
            TestMode.for_mode(mode),
            symmetrical=bool(mode & Mode.SYMMETRICAL_SIZE),
            dscp_ecn=bool(mode & Mode.DSCP_ECN),
        )
        if req.padding_to_reflect:
            # RFC 6038 §4.2: the reply echoes padding after its own, longer, header.
            room = fmt.sender_header + req.padding_length - fmt.reflector_header
            if room < req.padding_to_reflect:
                raise Refused(
                    AcceptCode.NOT_SUPPORTED,
                    f"Padding Length {req.padding_length} leaves {max(room, 0)} octets to "
                    f"reflect, not {req.padding_to_reflect}",
                    "unsupported",
                )
        peer = (sender, req.sender_port)
        port, new_port = self._choose_port(receiver, req.receiver_port, peer, bind)
        requested = timeout_ns = ns_from_ntp_interval(req.timeout)
        if timeout_ns > lim.max_timeout_ns:
            self.counters["timeouts_capped"] += 1
            timeout_ns = lim.max_timeout_ns
        sid = self._new_sid(receiver, wall_ns)
        sess = Session(
            sid, conn, client, (receiver, port), peer, fmt, req.dscp, timeout_ns, requested
        )
        self._ports[(receiver, port)].add(peer)
        self._sessions[sess.sid] = sess
        self._per_client[client] += 1
        record.sids.add(sess.sid)
        return sess, new_port

    def _addresses(self, client: str, local: str, req: RequestTWSession) -> tuple[str, str]:
        """Sender and Receiver Address as text; zeros -> the control connection's (§3.5)."""
        out: list[str] = []
        for given, ours, what in (
            (req.sender_address, client, "Sender"),
            (req.receiver_address, local, "Receiver"),
        ):
            if given.is_unspecified:
                version = ipaddress.ip_address(ours).version
                if version != req.ipvn:
                    raise Refused(
                        AcceptCode.NOT_SUPPORTED,
                        f"zero {what} Address in an IPv{req.ipvn} request over an "
                        f"IPv{version} control connection",
                        "unsupported",
                    )
                out.append(ours)
                continue
            if given.is_multicast or (isinstance(given, IPv4Address) and given.is_reserved):
                raise Refused(
                    AcceptCode.NOT_SUPPORTED,
                    f"{what} Address {given} is not unicast",
                    "unsupported",
                )
            out.append(normalize_ip(str(given)))
        return out[0], out[1]

    def _check_limits(self, client: str) -> None:
        lim = self.limits
        for limit, used, what in (
            (lim.max_sessions, len(self._sessions), "sessions in all"),
            (lim.max_sessions_per_client, self._per_client[client], f"sessions for {client}"),
        ):
            if limit == 0:
                raise Refused(
                    AcceptCode.PERMANENT_RESOURCE_LIMIT, f"no {what} allowed", "session_limit"
                )
            if used >= limit:
                raise Refused(
                    AcceptCode.TEMPORARY_RESOURCE_LIMIT,
                    f"limit of {limit} {what} reached",
                    "session_limit",
                )

    def _new_sid(self, receiver: str, wall_ns: int) -> bytes:
        ip4 = self._sid_ipv4
        if ip4 is None:
            # owamp's choice when the host has no other IPv4 address: the receiver's.
            ip4 = ipaddress.ip_address(receiver).packed[-4:]
        while True:
            sid = make_sid(ip4, wall_ns, self._random4())
            if sid not in self._sessions:
                return sid

    def _choose_port(
        self,
        ip: str,
        requested: int,
        peer: tuple[str, int],
        bind: Callable[[str, int, tuple[str, int]], BindResult],
    ) -> tuple[int, bool]:
        """The requested port if we can, else the next free one of the range (RFC 5357 §3.5).

        A port already bound by us serves several sessions whose senders differ, unless
        `Limits.share_ports` is off (a connect()ed socket has one peer).
        """
        lo, hi = self.limits.port_range
        share = self.limits.share_ports
        if lo <= requested <= hi:
            peers = self._ports.get((ip, requested))
            if peers is None:
                if self._bind(ip, requested, peer, bind):
                    return requested, True
            elif share and peer not in peers:
                return requested, False
        n = hi - lo + 1
        for i in range(n):
            port = lo + (self._port_cursor + i) % n
            if (ip, port) in self._ports:
                continue
            if self._bind(ip, port, peer, bind):
                self._port_cursor = (port - lo + 1) % n
                return port, True
        for (port_ip, port), peers in self._ports.items():
            if share and port_ip == ip and peer not in peers:
                return port, False
        raise Refused(
            AcceptCode.TEMPORARY_RESOURCE_LIMIT, f"no free test port in {lo}-{hi}", "no_port"
        )

    def _bind(
        self,
        ip: str,
        port: int,
        peer: tuple[str, int],
        bind: Callable[[str, int, tuple[str, int]], BindResult],
    ) -> bool:
        result = bind(ip, port, peer)
        if result is BindResult.NOT_LOCAL:
            raise Refused(
                AcceptCode.NOT_SUPPORTED,
                f"Receiver Address {ip} is not an address of ours",
                "unsupported",
            )
        if result is BindResult.BOUND:
            self._ports[(ip, port)] = set()
            return True
        return False

    def start(self, sids: Iterable[bytes], now_ns: int) -> list[Session]:
        """Mark accepted sessions running (the caller admits them to their reflectors)."""
        out: list[Session] = []
        for sid in sids:
            sess = self._sessions.get(sid)
            if sess is not None and sess.state is SessionState.ACCEPTED:
                sess.state = SessionState.RUNNING
                sess.started_ns = now_ns
                out.append(sess)
        return out

    def unstart(self, sessions: Iterable[Session]) -> None:
        """Undo `start` for sessions the reflector could not take (Start-Ack is all or none)."""
        for sess in sessions:
            if sess.state is SessionState.RUNNING:
                sess.state = SessionState.ACCEPTED

    def stop(self, sids: Iterable[bytes], now_ns: int) -> list[Session]:
        """Stop running sessions; each reflects until its `reflect_until_ns` (RFC 5357 §4.2)."""
        out: list[Session] = []
        for sid in sids:
            sess = self._sessions.get(sid)
            if sess is not None and sess.state is SessionState.RUNNING:
                self._stop(sess, now_ns)
                out.append(sess)
        return out

    def _stop(self, sess: Session, now_ns: int) -> None:
        sess.state = SessionState.STOPPING
        sess.reflect_until_ns = now_ns + sess.timeout_ns
        sess.free_at_ns = sess.reflect_until_ns + self.limits.linger_ns
        # The client's own limit counts sessions not yet stopped (see the module docstring).
        self._release_client_slot(sess.client)

    def _release_client_slot(self, client: str) -> None:
        self._per_client[client] -= 1
        if self._per_client[client] <= 0:
            del self._per_client[client]

    def stopped(self, sids: Iterable[bytes]) -> list[Session]:
        """The sessions among `sids` that are stopping (for the caller's reflector call)."""
        return [
            s
            for sid in sids
            if (s := self._sessions.get(sid)) is not None and s.state is SessionState.STOPPING
        ]

    def expire(self, now_ns: int, last_rx_ns: Callable[[Session], int]) -> list[Freed]:
        """Free stopped sessions past `free_at_ns` and started ones idle for REFWAIT.

        `last_rx_ns(session)` is the (monotonic) time of its last valid test packet, 0 if none.
        """
        refwait = self.limits.refwait_ns
        freed: list[Freed] = []
        for sess in list(self._sessions.values()):
            if sess.state is SessionState.STOPPING:
                if now_ns >= sess.free_at_ns:
                    freed.append(self._free(sess, "stopped"))
            elif (
                refwait is not None
                and sess.state is SessionState.RUNNING
                and now_ns - max(last_rx_ns(sess), sess.started_ns) >= refwait
            ):
                self.counters["refwait_expired"] += 1
                owner = self._connections.get(sess.owner) if sess.owner is not None else None
                if owner is not None:
                    owner.refwait_ns = now_ns
                freed.append(self._free(sess, f"REFWAIT: no test packet for {refwait / NS:g} s"))
        return freed

    def free(self, sid: bytes, why: str) -> Freed | None:
        sess = self._sessions.get(sid)
        return self._free(sess, why) if sess is not None else None

    def free_all(self, why: str) -> list[Freed]:
        return [self._free(s, why) for s in list(self._sessions.values())]

    def _free(self, sess: Session, why: str) -> Freed:
        del self._sessions[sess.sid]
        if sess.state is not SessionState.STOPPING:
            self._release_client_slot(sess.client)
        if sess.owner is not None:
            record = self._connections.get(sess.owner)
            if record is not None:
                record.sids.discard(sess.sid)
        peers = self._ports.get(sess.receiver)
        close_port = None
        if peers is not None:
            peers.discard(sess.peer)
            if not peers:
                del self._ports[sess.receiver]
                close_port = sess.receiver
        return Freed(sess, why, close_port)

    def release_port(self, key: tuple[str, int]) -> None:
        """Forget a bound port no session uses (the caller could not use it after binding)."""
        if not self._ports.get(key, True):
            del self._ports[key]

    def stats(self) -> dict[str, int]:
        states = Counter(s.state for s in self._sessions.values())
        return {
            "accepted": states[SessionState.ACCEPTED],
            "running": states[SessionState.RUNNING],
            "stopping": states[SessionState.STOPPING],
        }
