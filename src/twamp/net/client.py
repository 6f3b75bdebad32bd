"""The asyncio TWAMP Control-Client: sockets and timeouts around `control.ClientConnection`.

All protocol logic lives in the sans-I/O `ClientConnection` (RFC 5357 §3); this module only
moves octets, bounds every wait, picks the mode and turns what went wrong into one clear
sentence (`ClientError` and its subclasses)::

    async with TwampClient.connect("192.0.2.1", mode=(Mode.ENCRYPTED, Mode.UNAUTHENTICATED),
                                   key_id="alice", passphrase=b"secret") as client:
        accept = await client.request_session(sender_port=50000, padding=64)
        await client.start()
        ...                                   # run the Session-Sender (twamp.dataplane.Sender)
        await client.stop()

Mode choice (RFC 4656 §3.1, RFC 5357 §3.1), as twping does: the caller lists
the security modes it allows in order of preference; the first one the Server offers, and for
which a key is at hand, is chosen. Mixed mode (RFC 5618) is optional, so it is chosen only when
the Server-Greeting offers bit 3. Without a preference list: the strongest offered mode
(encrypted, authenticated, mixed, open) when a key is given, open otherwise.

`BlockingClient` drives the same client from synchronous code (`twamp.ping`) on a private event
loop, one call at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from ipaddress import IPv4Address, IPv6Address
from types import TracebackType
from typing import Any, TypeVar

from .. import clock
from ..constants import (
    DEFAULT_MAX_COUNT,
    SECURE_CONTROL_MODES,
    SECURITY_MODES,
    TWAMP_CONTROL_PORT,
    AcceptCode,
    Mode,
    TestMode,
)
from ..control import (
    ClientConnection,
    ConnectionClosed,
    Event,
    GreetingReceived,
    ServerStarted,
    SessionAccepted,
    SessionsStarted,
    StartNAcked,
    StopNAcked,
)
from ..crypto import TestKeys, TestPacketCrypto
from ..inet import normalize_ip
from ..timestamps import NS, ntp_from_ns, ntp_interval_from_ns
from ..wire.control import AcceptSession, RequestTWSession, type_p_for_dscp

__all__ = [
    "MODE_LETTERS",
    "MODE_STRENGTH",
    "BlockingClient",
    "ClientError",
    "ClientTimeoutError",
    "ConnectionRefused",
    "SessionRefused",
    "SetupError",
    "TwampClient",
    "accept_text",
    "choose_mode",
    "mode_name",
    "parse_modes",
    "resolve",
    "resolve_blocking",
]

MODE_LETTERS = {
    "O": Mode.UNAUTHENTICATED,
    "A": Mode.AUTHENTICATED,
    "E": Mode.ENCRYPTED,
    "M": Mode.MIXED,
}
"""twping's -A letters: Open, Authenticated, Encrypted, Mixed (RFC 5618)."""

MODE_STRENGTH = (Mode.ENCRYPTED, Mode.AUTHENTICATED, Mode.MIXED, Mode.UNAUTHENTICATED)
"""Security modes, strongest first: mixed protects control but not test packets."""

_MODE_NAMES = {
    Mode.UNAUTHENTICATED: "open",
    Mode.AUTHENTICATED: "authenticated",
    Mode.ENCRYPTED: "encrypted",
    Mode.MIXED: "mixed",
}

_ACCEPT_TEXT = {
    AcceptCode.OK: "OK",
    AcceptCode.FAILURE: "failure, reason unspecified",
    AcceptCode.INTERNAL_ERROR: "internal error",
    AcceptCode.NOT_SUPPORTED: "some aspect of the request is not supported",
    AcceptCode.PERMANENT_RESOURCE_LIMIT: "permanent resource limitation",
    AcceptCode.TEMPORARY_RESOURCE_LIMIT: "temporary resource limitation",
    AcceptCode.IKEV2_SA_NOT_FOUND: "IKEv2 security association not found",
}

_READ_SIZE = 65536
_CLOSE_WAIT_S = 1.0
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_SESSION_TIMEOUT_NS = 2 * NS
NO_FEATURES = Mode(0)

T = TypeVar("T")


class ClientError(Exception):
    """TWAMP-Control failed; the message is one sentence for the user.

    `accept` is the Accept value involved (RFC 4656 §3.3), when there is one.
    """

    def __init__(self, message: str, accept: AcceptCode | None = None) -> None:
        super().__init__(message)
        self.accept = accept


class SetupError(ClientError):
    """No common mode, no key for the modes offered, Modes 0, or Server-Start Accept != 0."""


class SessionRefused(ClientError):
    """Accept-Session, Start-Ack, Start-N-Ack or Stop-N-Ack carried Accept != 0."""


class ClientTimeoutError(ClientError, TimeoutError):
    """The server did not connect or answer in time."""


class ConnectionRefused(ClientError, ConnectionRefusedError):
    """Nothing listens on the control port."""


def accept_text(accept: AcceptCode) -> str:
    """'Accept 3: some aspect of the request is not supported'."""
    return f"Accept {int(accept)}: {_ACCEPT_TEXT.get(accept, 'reserved value')}"


def mode_name(mode: Mode) -> str:
    """'open', 'authenticated', 'encrypted' or 'mixed' for the security bit of `mode`."""
    names = [name for bit, name in _MODE_NAMES.items() if mode & bit]
    return "+".join(names) if names else "none"


def parse_modes(letters: str) -> tuple[Mode, ...]:
    """twping's -A argument ('AEO', 'e', ...) -> security modes in preference order."""
    modes: list[Mode] = []
    if not letters:
        raise ValueError("the mode list is empty: use letters O, A, E, M")
    for letter in letters.upper():
        mode = MODE_LETTERS.get(letter)
        if mode is None:
            raise ValueError(
                f"unknown mode letter {letter!r}: use O (open), A (authenticated), "
                "E (encrypted) or M (mixed)"
            )
        if mode not in modes:
            modes.append(mode)
    return tuple(modes)


def _preferences(mode: Mode | Sequence[Mode] | None, have_key: bool) -> tuple[Mode, ...]:
    if mode is None:
        return MODE_STRENGTH if have_key else (Mode.UNAUTHENTICATED,)
    if isinstance(mode, Mode):
        return tuple(m for m in MODE_STRENGTH if mode & m)
    prefs = tuple(Mode(m) for m in mode)
    for m in prefs:
        if m not in MODE_STRENGTH:
            raise ValueError(f"Mode {int(m)} is not one security mode (1, 2, 4 or 8)")
    return prefs


def choose_mode(offered: Mode, preferences: Sequence[Mode], *, have_key: bool) -> Mode | None:
    """The first of `preferences` that `offered` includes and that we can use, or None."""
    for m in preferences:
        if offered & m and (have_key or not m & SECURE_CONTROL_MODES):
            return m
    return None


def _names(modes: Iterable[Mode]) -> str:
    return ", ".join(mode_name(m) for m in modes) or "none"


async def resolve(host: str, port: int, *, udp: bool = False) -> tuple[str, int]:
    """The first address of `host` (a name or literal) as an (IP literal, port) pair."""
    loop = asyncio.get_running_loop()
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    try:
        infos = await loop.getaddrinfo(host, port, type=kind)
    except socket.gaierror as exc:
        raise ClientError(f"cannot resolve {host!r}: {exc.strerror}") from None
    ip, real_port = infos[0][4][:2]
    return str(ip), int(real_port)


class TwampClient:
    """One TWAMP-Control connection, set up and ready for requests (use `connect` or `open`)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn: ClientConnection,
        *,
        timeout: float,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._conn = conn
        self._timeout = timeout
        self._start_time = 0
        sockname = writer.get_extra_info("sockname")
        peername = writer.get_extra_info("peername")
        self.local_address: tuple[str, int] = (normalize_ip(sockname[0]), int(sockname[1]))
        """Our end of the control connection (an IPv4-mapped address shown as IPv4)."""
        self.peer_address: tuple[str, int] = (normalize_ip(peername[0]), int(peername[1]))
        """The server's end of the control connection."""

    # -- opening --------------------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls,
        host: str,
        port: int = TWAMP_CONTROL_PORT,
        *,
        mode: Mode | Sequence[Mode] | None = None,
        key_id: str | bytes | None = None,
        passphrase: str | bytes | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        local_address: str | None = None,
        features: Mode = NO_FEATURES,
        max_count: int = DEFAULT_MAX_COUNT,
    ) -> AsyncIterator[TwampClient]:
        """`async with`: `open`, then `close` however the block ends."""
        client = await cls.open(
            host,
            port,
            mode=mode,
            key_id=key_id,
            passphrase=passphrase,
            timeout=timeout,
            local_address=local_address,
            features=features,
            max_count=max_count,
        )
        try:
            yield client
        finally:
            await client.close()

    @classmethod
    async def open(
        cls,
        host: str,
        port: int = TWAMP_CONTROL_PORT,
        *,
        mode: Mode | Sequence[Mode] | None = None,
        key_id: str | bytes | None = None,
        passphrase: str | bytes | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        local_address: str | None = None,
        features: Mode = NO_FEATURES,
        max_count: int = DEFAULT_MAX_COUNT,
    ) -> TwampClient:
        """Connect, read the greeting, choose the mode, set up; raise `ClientError` on failure.

        `mode`: security modes in preference order, or a Mode with several security bits
        (strongest first), or None (see the module docstring). `key_id` and `passphrase` are the
        shared secret of modes 2, 4 and 8. `timeout` bounds the connect and every answer.
        `features`: feature bits to select when offered (e.g. Individual Session Control).
        """
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        kid = key_id.encode() if isinstance(key_id, str) else key_id
        secret = passphrase.encode() if isinstance(passphrase, str) else passphrase
        have_key = bool(kid) and bool(secret)
        if bool(kid) != bool(secret):
            raise ValueError("a key needs both its KeyID and its passphrase")
        prefs = _preferences(mode, have_key)
        where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    host, port, local_addr=(local_address, 0) if local_address else None
                ),
                timeout,
            )
        except asyncio.TimeoutError:
            raise ClientTimeoutError(f"no TCP connection to {where} within {timeout:g} s") from None
        except ConnectionRefusedError:
            raise ConnectionRefused(
                f"connection refused by {where}: no TWAMP server listens there"
            ) from None
        except socket.gaierror as exc:
            raise ClientError(f"cannot resolve {host!r}: {exc.strerror}") from None
        conn = ClientConnection(
            now_ns=clock.monotonic_ns(), max_count=max_count, response_timeout_ns=None
        )
        client = cls(reader, writer, conn, timeout=timeout)
        try:
            await client._setup(where, prefs, kid or b"", secret or b"", features)
        except BaseException:
            await client.close()
            raise
        return client

    async def _setup(
        self, where: str, prefs: tuple[Mode, ...], key_id: bytes, secret: bytes, features: Mode
    ) -> None:
        event = await self._next_event("Server-Greeting", setup=True)
        if not isinstance(event, GreetingReceived):
            raise ClientError(f"unexpected {type(event).__name__} instead of Server-Greeting")
        offered = Mode.known(event.modes)
        chosen = choose_mode(offered, prefs, have_key=bool(key_id))
        if chosen is None:
            self._conn.setup(Mode(0))  # RFC 4656 §3.1: Mode 0 says we will not continue
            await self._flush()
            usable = [m for m in MODE_STRENGTH if offered & m]
            hint = ""
            if not key_id and any(m & SECURE_CONTROL_MODES for m in usable):
                hint = "; give a KeyID and key file for the secure modes"
            raise SetupError(
                f"no common mode with {where}: it offers {_names(usable)}, "
                f"we allow {_names(prefs)}{hint}"
            )
        # Feature bits: only those offered (RFC 4656 §3.1), and never a second security bit.
        extra = Mode(features & offered & ~SECURITY_MODES)
        if chosen & SECURE_CONTROL_MODES:
            self._conn.setup(chosen | extra, key_id, secret)
        else:
            self._conn.setup(chosen | extra)
        await self._flush()
        started = await self._next_event("Server-Start", setup=True)
        if not isinstance(started, ServerStarted):
            raise ClientError(f"unexpected {type(started).__name__} instead of Server-Start")
        self._start_time = started.start_time

    # -- properties -----------------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        """The Mode chosen in Set-Up-Response (security bit plus feature bits)."""
        return self._conn.mode

    @property
    def test_mode(self) -> TestMode:
        """How test packets are protected: mixed mode (8) sends them open (RFC 5618)."""
        return TestMode.for_mode(self._conn.mode)

    @property
    def server_start_time(self) -> int:
        """Server-Start's Start-Time: when the server started, Unix ns."""
        return self._start_time

    @property
    def closed(self) -> bool:
        return self._conn.closed

    @property
    def connection(self) -> ClientConnection:
        """The sans-I/O connection (for its `sessions` table)."""
        return self._conn

    def test_keys(self, sid: bytes) -> TestKeys:
        """The TWAMP-Test keys of session `sid` (modes 2, 4, 8; RFC 5357 §4.1.2)."""
        return self._conn.test_keys(sid)

    def test_crypto(self, sid: bytes) -> TestPacketCrypto | None:
        """Test packet protection for session `sid`: None in modes 1 and 8."""
        test_mode = self.test_mode
        if test_mode is TestMode.OPEN:
            return None
        return TestPacketCrypto(self.test_keys(sid), test_mode)

    # -- commands -------------------------------------------------------------------------------

    async def request_session(
        self,
        *,
        sender_port: int,
        receiver_port: int = 0,
        sender_address: str | None = None,
        receiver_address: str | None = None,
        padding: int = 0,
        start_time_ns: int | None = None,
        timeout_ns: int = DEFAULT_SESSION_TIMEOUT_NS,
        dscp: int = 0,
        type_p: int | None = None,
        octets_to_reflect: int = 0,
        padding_to_reflect: int = 0,
    ) -> AcceptSession:
        """Request-TW-Session (RFC 5357 §3.5) -> Accept-Session; `SessionRefused` if Accept != 0.

        Addresses default to the two ends of this control connection: the test packets go where
        the control connection goes. `receiver_port` 0 lets the server choose. `timeout_ns` is
        how long the reflector goes on after Stop-Sessions. `dscp` sets Type-P (RFC 5357 §3.5),
        which the reflector uses for its replies; `type_p` overrides it with a raw descriptor.
        """
        sender = ipaddress.ip_address(sender_address or self.local_address[0])
        receiver = ipaddress.ip_address(receiver_address or self.peer_address[0])
        sender, receiver = _same_family(sender, receiver)
        req = RequestTWSession(
            sender_address=sender,
            receiver_address=receiver,
            sender_port=sender_port,
            receiver_port=receiver_port,
            padding_length=padding,
            start_time=ntp_from_ns(clock.realtime_ns() if start_time_ns is None else start_time_ns),
            timeout=ntp_interval_from_ns(timeout_ns),
            type_p=type_p_for_dscp(dscp) if type_p is None else type_p,
            octets_to_reflect=octets_to_reflect,
            padding_to_reflect=padding_to_reflect,
        )
        return await self.request(req)

    async def request(self, req: RequestTWSession) -> AcceptSession:
        """Send a ready-made Request-TW-Session; `SessionRefused` if Accept != 0."""
        self._conn.request_session(req, now_ns=clock.monotonic_ns())
        await self._flush()
        event = await self._next_event("Accept-Session")
        if not isinstance(event, SessionAccepted):
            raise ClientError(f"unexpected {type(event).__name__} instead of Accept-Session")
        accept = event.accept_session
        if accept.accept is not AcceptCode.OK:
            raise SessionRefused(
                f"the server refused the test session ({accept_text(accept.accept)})",
                accept.accept,
            )
        return accept

    async def start(self) -> None:
        """Start-Sessions (RFC 5357 §3.7); `SessionRefused` unless Start-Ack is Accept 0."""
        self._conn.start_sessions(now_ns=clock.monotonic_ns())
        await self._flush()
        event = await self._next_event("Start-Ack")
        if not isinstance(event, SessionsStarted):
            raise ClientError(f"unexpected {type(event).__name__} instead of Start-Ack")
        if event.accept is not AcceptCode.OK:
            raise SessionRefused(
                f"the server refused to start the sessions ({accept_text(event.accept)})",
                event.accept,
            )

    async def stop(self, accept: AcceptCode = AcceptCode.OK) -> None:
        """Stop-Sessions for every running session (RFC 5357 §3.8); no answer comes."""
        self._conn.stop_sessions(accept)
        await self._flush()

    async def start_n(self, sids: Iterable[bytes]) -> dict[bytes, AcceptCode]:
        """Start-N-Sessions (RFC 5938): every SID's Accept, gathered from one or more acks."""
        wanted = tuple(sids)
        self._conn.start_n_sessions(wanted, now_ns=clock.monotonic_ns())
        await self._flush()
        return await self._gather_acks(wanted, "Start-N-Ack")

    async def stop_n(self, sids: Iterable[bytes]) -> dict[bytes, AcceptCode]:
        """Stop-N-Sessions (RFC 5938): every SID's Accept, gathered from one or more acks."""
        wanted = tuple(sids)
        self._conn.stop_n_sessions(wanted, now_ns=clock.monotonic_ns())
        await self._flush()
        return await self._gather_acks(wanted, "Stop-N-Ack")

    async def _gather_acks(self, sids: tuple[bytes, ...], what: str) -> dict[bytes, AcceptCode]:
        answers: dict[bytes, AcceptCode] = {}
        while len(answers) < len(set(sids)):
            event = await self._next_event(what)
            if not isinstance(event, StartNAcked | StopNAcked):
                raise ClientError(f"unexpected {type(event).__name__} instead of {what}")
            for sid in event.ack.sids:
                answers[sid] = event.ack.accept
        return answers

    async def poll(self) -> bool:
        """Whether the control connection is still open, without waiting (between requests).

        Lets the loop run two iterations, so that an end of file or a reset the kernel holds is
        delivered to the stream; no message is expected while sessions run (RFC 5357 §3.7), so
        the connection counts as closed when the server closed or reset it.
        """
        for _ in range(2):
            await asyncio.sleep(0)
        reader = self._reader
        if reader.at_eof() or reader.exception() is not None or self._writer.is_closing():
            return False
        return not self._conn.closed

    async def close(self) -> None:
        """Close the TCP connection (idempotent; errors while closing are ignored)."""
        writer = self._writer
        if writer.is_closing():
            return
        writer.close()
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), _CLOSE_WAIT_S)

    async def __aenter__(self) -> TwampClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- plumbing -------------------------------------------------------------------------------

    async def _flush(self) -> None:
        data = self._conn.data_to_send()
        if not data:
            return
        try:
            self._writer.write(data)
            await asyncio.wait_for(self._writer.drain(), self._timeout)
        except asyncio.TimeoutError:
            raise ClientTimeoutError(
                f"the server did not take our data within {self._timeout:g} s"
            ) from None
        except (ConnectionError, OSError) as exc:
            raise ClientError(f"the control connection broke: {exc}") from None

    async def _next_event(self, what: str, *, setup: bool = False) -> Event:
        """The next event, reading as needed; `ClientError` if the connection ends instead."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        conn = self._conn
        while True:
            event = conn.next_event()
            await self._flush()
            if isinstance(event, ConnectionClosed):
                raise self._closed_error(event, what, setup)
            if event is not None:
                return event
            if conn.closed:
                raise ClientError(f"the control connection is closed (waiting for {what})")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ClientTimeoutError(f"no {what} from the server within {self._timeout:g} s")
            try:
                data = await asyncio.wait_for(self._reader.read(_READ_SIZE), remaining)
            except asyncio.TimeoutError:
                raise ClientTimeoutError(
                    f"no {what} from the server within {self._timeout:g} s"
                ) from None
            except (ConnectionError, OSError):
                data = b""
            conn.receive_data(data, clock.monotonic_ns())

    def _closed_error(self, event: ConnectionClosed, what: str, setup: bool) -> ClientError:
        reason = event.reason
        if "HMAC" in reason:
            return ClientError(
                f"integrity check of the server's {what} failed ({reason}): "
                "wrong key, or the connection was tampered with",
                event.accept,
            )
        if what == "Server-Greeting":
            if "Modes 0" in reason or "security mode" in reason:
                return SetupError(f"server refused us: {reason}", event.accept)
            # Twelve octets of MBZ, then Modes and a Count in 1024..: anything else (an HTTP or
            # SSH banner, say) is another protocol on that port (RFC 4656 §3.1).
            return SetupError(
                f"the peer is not a TWAMP server (its Server-Greeting is invalid: {reason}); "
                "check the host and port (TWAMP-Control is TCP 862)",
                event.accept,
            )
        if what == "Server-Start" and event.accept is not None:
            text = f"the server refused the setup ({accept_text(event.accept)})"
            if self._conn.mode & SECURE_CONTROL_MODES:
                text += ": wrong key or passphrase?"
            return SetupError(text, event.accept)
        cls = SetupError if setup else ClientError
        return cls(f"the control connection ended while waiting for {what}: {reason}", event.accept)


def _same_family(
    a: IPv4Address | IPv6Address, b: IPv4Address | IPv6Address
) -> tuple[IPv4Address | IPv6Address, IPv4Address | IPv6Address]:
    """Request-TW-Session carries one IPVN for both addresses (RFC 5357 §3.5)."""
    if a.version == b.version:
        return a, b
    if isinstance(a, IPv4Address):
        return IPv6Address(f"::ffff:{a}"), b
    return a, IPv6Address(f"::ffff:{b}")


class BlockingClient:
    """`TwampClient` for synchronous callers: each call runs to completion on a private loop.

    Between calls no loop runs; the kernel buffers whatever the server sends meanwhile (it sends
    nothing while sessions run). Not thread-safe: one thread uses it at a time.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, client: TwampClient) -> None:
        self._loop = loop
        self._client = client

    @classmethod
    def open(
        cls,
        host: str,
        port: int = TWAMP_CONTROL_PORT,
        *,
        mode: Mode | Sequence[Mode] | None = None,
        key_id: str | bytes | None = None,
        passphrase: str | bytes | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        local_address: str | None = None,
        features: Mode = NO_FEATURES,
        max_count: int = DEFAULT_MAX_COUNT,
    ) -> BlockingClient:
        loop = asyncio.new_event_loop()
        try:
            client = loop.run_until_complete(
                TwampClient.open(
                    host,
                    port,
                    mode=mode,
                    key_id=key_id,
                    passphrase=passphrase,
                    timeout=timeout,
                    local_address=local_address,
                    features=features,
                    max_count=max_count,
                )
            )
        except BaseException:
            loop.close()
            raise
        return cls(loop, client)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(coro)

    @property
    def client(self) -> TwampClient:
        return self._client

    @property
    def mode(self) -> Mode:
        return self._client.mode

    @property
    def test_mode(self) -> TestMode:
        return self._client.test_mode

    @property
    def server_start_time(self) -> int:
        return self._client.server_start_time

    @property
    def local_address(self) -> tuple[str, int]:
        return self._client.local_address

    @property
    def peer_address(self) -> tuple[str, int]:
        return self._client.peer_address

    @property
    def closed(self) -> bool:
        return self._client.closed

    def test_keys(self, sid: bytes) -> TestKeys:
        return self._client.test_keys(sid)

    def test_crypto(self, sid: bytes) -> TestPacketCrypto | None:
        return self._client.test_crypto(sid)

    def request_session(
        self,
        *,
        sender_port: int,
        receiver_port: int = 0,
        sender_address: str | None = None,
        receiver_address: str | None = None,
        padding: int = 0,
        start_time_ns: int | None = None,
        timeout_ns: int = DEFAULT_SESSION_TIMEOUT_NS,
        dscp: int = 0,
        type_p: int | None = None,
        octets_to_reflect: int = 0,
        padding_to_reflect: int = 0,
    ) -> AcceptSession:
        return self._run(
            self._client.request_session(
                sender_port=sender_port,
                receiver_port=receiver_port,
                sender_address=sender_address,
                receiver_address=receiver_address,
                padding=padding,
                start_time_ns=start_time_ns,
                timeout_ns=timeout_ns,
                dscp=dscp,
                type_p=type_p,
                octets_to_reflect=octets_to_reflect,
                padding_to_reflect=padding_to_reflect,
            )
        )

    def request(self, req: RequestTWSession) -> AcceptSession:
        return self._run(self._client.request(req))

    def start(self) -> None:
        self._run(self._client.start())

    def poll(self) -> bool:
        """`TwampClient.poll`: False once the server closed the control connection."""
        return self._run(self._client.poll())

    def stop(self, accept: AcceptCode = AcceptCode.OK) -> None:
        self._run(self._client.stop(accept))

    def start_n(self, sids: Iterable[bytes]) -> dict[bytes, AcceptCode]:
        return self._run(self._client.start_n(sids))

    def stop_n(self, sids: Iterable[bytes]) -> dict[bytes, AcceptCode]:
        return self._run(self._client.stop_n(sids))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._run(self._client.close())
        finally:
            self._loop.close()

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def resolve_blocking(
    host: str, port: int, *, udp: bool = False, version: int = 0
) -> tuple[str, int]:
    """`resolve` for synchronous callers; `version` 4 or 6 keeps to that family (0: either)."""
    family = {0: socket.AF_UNSPEC, 4: socket.AF_INET, 6: socket.AF_INET6}[version]
    try:
        infos = socket.getaddrinfo(
            host, port, family, type=socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
        )
    except socket.gaierror as exc:
        if version and exc.errno in (socket.EAI_ADDRFAMILY, socket.EAI_NONAME, socket.EAI_FAMILY):
            raise ClientError(
                f"{host} has no IPv{version} address; drop -{version} or give an IPv{version} "
                "target"
            ) from None
        raise ClientError(f"cannot resolve {host!r}: {exc.strerror}") from None
    ip, real_port = infos[0][4][:2]
    return str(ip), int(real_port)
