"""Sans-I/O TWAMP-Control connections: `ServerConnection` and `ClientConnection`.

Neither class touches a socket or a clock. The caller feeds received octets and the time, takes
events and octets to send, and arms one timer (the h11 / aioquic pattern)::

    conn.receive_data(data, now_ns)        # b"" when the peer closed its side
    while (event := conn.next_event()) is not None:
        ...                                 # react, maybe by calling an answer/action method
    transport.write(conn.data_to_send())
    deadline = conn.get_timer()            # monotonic ns, or None
    ...at the deadline: conn.handle_timer(now_ns)
    if conn.closed: flush data_to_send() and close the TCP connection

`next_event()` returns None when it needs more data, and also while the Server waits for its
application to answer a ``*Requested`` event: the bytes of later commands (and the peer's close)
stay buffered until the answer, so call `next_event()` again after answering. Data received
after the connection closed is ignored. Remote misbehaviour never raises: it ends the
connection with a `ConnectionClosed` event (after any reply the protocol prescribes, left in
`data_to_send()`). Methods raise `LocalProtocolError` when called in the wrong state and
`ValueError` for bad arguments.

Server
------
``ServerConnection(*, modes, keys, count=2048, start_time_ns, now_ns, servwait_ns=900 s,
random_bytes=os.urandom, defer_key_derivation=False)`` queues its Server-Greeting at once.
`keys` maps KeyID -> passphrase octets. Modes 0 means "go away": the greeting is queued and the
connection is closed.

Events and answers:

* `KeyDerivationRequested(key_id, passphrase, salt, count)` (only with
  ``defer_key_derivation=True``): ``key_derived(derive_key(passphrase, salt, count))`` or
  ``refuse_key_derivation(accept, reason)``; lets the application run PBKDF2 off its loop.
* `SetupComplete(mode, key_id)`: nothing to answer; Server-Start (Accept 0) is queued.
* `SessionRequested(request)`: ``accept_session(port, sid, reflected_octets=None,
  server_octets=0)`` or ``reject_session(accept)``. `make_sid()` builds a SID (RFC 5357 §3.5).
* `StartRequested(sids)`: ``start_ack(accept)``. With Accept 0 the sessions run.
* `StopRequested(accept, sids)`: no answer (RFC 5357 §3.8).
* `StartNRequested(sids)` / `StopNRequested(sids)`: ``start_n_ack(accept, sids)`` /
  ``stop_n_ack(accept, sids)``, once or several times, until every SID is answered.
* `RequestRefused(command, accept, reason)`: the Server refused on its own; nothing to do.
* `ConnectionClosed(reason, accept)`.

What the Server refuses on its own:

* Set-Up-Response: Mode 0 -> close without Server-Start. Not exactly one security bit, or a
  known bit not offered -> Server-Start Accept 3, close. Unknown KeyID or a Token that does not
  carry the Challenge -> Server-Start Accept 1, close. Unknown Mode bits are ignored (RFC 5618
  §3.1).
* Request-TW-Session with Conf-Sender/Conf-Receiver, schedule slots, packets or SID non-zero,
  a Type-P that is not a plain DSCP, or (RFC 6038) Padding Length not greater than the padding
  to reflect -> Accept-Session Accept 3; the connection goes on (RFC 5357 §3.5).
* A command number that is unknown, forbidden, reserved or not allowed in the negotiated mode
  (2 and 3 with Individual Session Control, 7 and 9 without) -> Accept-Session Accept 3, close:
  the length of such a message is unknown (RFC 5357 §3.5).
* Start-Sessions when no accepted session waits to start -> Start-Ack Accept 1 (decision: RFC
  4656 §3.7 says Start-Sessions starts the requested sessions; with none there is nothing to
  acknowledge as done, but the stream stays in step, so the connection goes on).
* Stop-Sessions whose Number of Sessions is not the number running -> close (RFC 5357 §3.8).
* Start-N-Sessions / Stop-N-Sessions SIDs that are unknown or not in a state to start (accepted,
  not started) or stop (running) -> one ack with Accept 1 for them; the others go to the app.
* A bad HMAC -> close (Accept 1); a message that does not decode -> close with its Accept value
  (after an Accept-Session carrying it, for a Request-TW-Session).

SERVWAIT (RFC 5357 §3.1, spec §8): the connection closes when no complete message arrived for
`servwait_ns`; the timer is suspended while any session runs and while the application owes an
answer. A client that sends half a message and stalls is closed at SERVWAIT.

Control-Client
--------------
``ClientConnection(*, now_ns, max_count=32768, random_bytes=os.urandom,
response_timeout_ns=30 s)``. Events: `GreetingReceived(modes, count)`, then the application
calls ``setup(mode, key_id=b"", passphrase=b"")`` (Mode 0 declines and closes);
`ServerStarted(accept, start_time)`; then, in any order the state allows:

* ``request_session(req)`` -> `SessionAccepted(accept_session)`;
* ``start_sessions()`` -> `SessionsStarted(accept)`;
* ``stop_sessions(accept=OK)``, no reply; Number of Sessions is computed here;
* with Individual Session Control (Mode bit 16, which forbids the two above):
  ``start_n_sessions(sids)`` -> `StartNAcked(ack)`..., ``stop_n_sessions(sids)`` ->
  `StopNAcked(ack)`...; several may be outstanding.

Every action takes an optional ``now_ns`` (default: the latest time the connection was given)
that starts the response timer. A server message that does not arrive within
`response_timeout_ns` closes the connection. The client closes on a Count below 1024 or above
`max_count`, on Modes 0 (or no security mode at all), and on a Server-Start with Accept != 0.

Both: `state`, `mode`, `closed`, `sessions` (SID -> `SessionState`), `running_sessions`, and in
modes 2, 4, 8 `test_keys(sid)` (RFC 5357 §4.1.2, spec §4.5).
"""

from __future__ import annotations

import dataclasses
import hmac
import os
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType

from ..constants import (
    AES_BLOCK,
    DEFAULT_COUNT,
    DEFAULT_MAX_COUNT,
    DEFAULT_SERVWAIT_NS,
    HMAC_LEN,
    KEYID_LEN,
    MIN_COUNT,
    SECURE_CONTROL_MODES,
    SECURITY_MODES,
    SID_LEN,
    AcceptCode,
    Command,
    Mode,
)
from ..crypto import (
    ControlCipher,
    TestKeys,
    decrypt_token,
    derive_key,
    derive_test_keys,
    encrypt_token,
)
from ..errors import DecodeError, ProtocolError, StateError, UnsupportedError
from ..timestamps import NS, ns_from_ntp, ntp_from_ns
from ..wire.buffer import ReceiveBuffer
from ..wire.control import (
    ACCEPT_SESSION_SIZE,
    MAX_N_SESSIONS,
    SERVER_GREETING_SIZE,
    SERVER_START_SIZE,
    SET_UP_RESPONSE_SIZE,
    START_ACK_SIZE,
    AcceptSession,
    RequestTWSession,
    ServerGreeting,
    ServerStart,
    SetUpResponse,
    StartAck,
    StartNAck,
    StartNSessions,
    StartSessions,
    StopNAck,
    StopNSessions,
    StopSessions,
    client_command_length,
    decode_accept_session,
    decode_request_tw_session,
    decode_server_greeting,
    decode_server_start,
    decode_set_up_response,
    decode_start_ack,
    decode_start_n_ack,
    decode_start_n_sessions,
    decode_start_sessions,
    decode_stop_n_ack,
    decode_stop_n_sessions,
    decode_stop_sessions,
    encode_accept_session,
    encode_request_tw_session,
    encode_server_greeting,
    encode_server_start,
    encode_set_up_response,
    encode_start_ack,
    encode_start_n_ack,
    encode_start_n_sessions,
    encode_start_sessions,
    encode_stop_n_ack,
    encode_stop_n_sessions,
    encode_stop_sessions,
    n_message_length,
)
from .events import (
    ConnectionClosed,
    Event,
    GreetingReceived,
    KeyDerivationRequested,
    RequestRefused,
    ServerStarted,
    SessionAccepted,
    SessionRequested,
    SessionsStarted,
    SetupComplete,
    StartNAcked,
    StartNRequested,
    StartRequested,
    StopNAcked,
    StopNRequested,
    StopRequested,
)
from .state import (
    SESSION_TRANSITIONS,
    ControlState,
    ControlStateMachine,
    LocalProtocolError,
    MessageType,
    Role,
    SessionState,
    command_allowed,
)

__all__ = [
    "DEFAULT_RESPONSE_TIMEOUT_NS",
    "ClientConnection",
    "ServerConnection",
    "make_sid",
]

# RFC 4656 §3 asks for a timeout on every expected message; 30 s is ample on any real path.
DEFAULT_RESPONSE_TIMEOUT_NS = 30 * NS

_ZERO_SID = bytes(SID_LEN)
_ZERO_IV = bytes(AES_BLOCK)
_ZERO_HMAC = bytes(HMAC_LEN)
# RFC 4656 §3.5: Type-P is a DSCP (top bits 00, 6 bits, rest zero) or a PHB ID (01). Only the
# DSCP form can be honoured with a TOS byte; owamp refuses the rest the same way (spec §3.8).
_TYPE_P_DSCP_MASK = 0x3F000000


def make_sid(ipv4: bytes, now_ns: int, random4: bytes) -> bytes:
    """The RECOMMENDED SID layout (RFC 5357 §3.5, spec §3.12).

    4 octets of an IPv4 address of the Server, the 8-octet NTP timestamp of `now_ns` (Unix ns)
    and 4 random octets; the SID also keys the test crypto, so `random4` must be unpredictable.
    """
    if len(ipv4) != 4:
        raise ValueError(f"ipv4 must be 4 octets, got {len(ipv4)}")
    if len(random4) != 4:
        raise ValueError(f"random4 must be 4 octets, got {len(random4)}")
    return bytes(ipv4) + ntp_from_ns(now_ns).to_bytes(8, "big") + bytes(random4)


def _check_sids(sids: Iterable[bytes]) -> tuple[bytes, ...]:
    out = tuple(sids)
    if not 1 <= len(out) <= MAX_N_SESSIONS:
        raise ValueError(f"1 to {MAX_N_SESSIONS} SIDs are needed, got {len(out)}")
    for sid in out:
        if not isinstance(sid, bytes) or len(sid) != SID_LEN:
            raise ValueError(f"a SID is {SID_LEN} octets: {sid!r}")
    if len(set(out)) != len(out):
        raise ValueError("duplicate SIDs")
    return out


class _Connection:
    """What both roles share: buffers, events, the CBC streams, sessions, closing."""

    def __init__(self, role: Role, now_ns: int, random_bytes: Callable[[int], bytes]) -> None:
        self._sm = ControlStateMachine(role)
        self._buffer = ReceiveBuffer()
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._now = now_ns
        self._random = random_bytes
        self._peer_closed = False
        self._mode = Mode(0)
        # Modes 2, 4, 8 (RFC 5357 §3.2-3.4): one CBC stream and running HMAC per direction.
        self._tx: ControlCipher | None = None
        self._rx: ControlCipher | None = None
        self._aes_key: bytes | None = None
        self._hmac_key: bytes | None = None
        # The decrypted first block of a message whose rest has not arrived: CBC decrypts each
        # octet exactly once, so the block is kept, not decrypted again.
        self._first_block: bytes | None = None
        self._sessions: dict[bytes, SessionState] = {}

    # -- public, both roles -----------------------------------------------------------------

    @property
    def state(self) -> ControlState:
        return self._sm.state

    @property
    def mode(self) -> Mode:
        """The Mode chosen in Set-Up-Response (known bits only); Mode(0) before that."""
        return self._mode

    @property
    def closed(self) -> bool:
        return self._sm.state is ControlState.CLOSED

    @property
    def sessions(self) -> Mapping[bytes, SessionState]:
        """Every session accepted on this connection, by SID."""
        return MappingProxyType(self._sessions)

    @property
    def running_sessions(self) -> int:
        return sum(1 for s in self._sessions.values() if s is SessionState.STARTED)

    def receive_data(self, data: bytes, now_ns: int) -> None:
        """Octets received from the peer; b"" means the peer closed its side."""
        self._now = now_ns
        if self.closed:
            return
        if data:
            self._buffer.feed(data)
        else:
            self._peer_closed = True

    def next_event(self) -> Event | None:
        """The next event, or None: more data is needed, or the application owes an answer."""
        while not self._events and not self.closed and self._sm.reading:
            try:
                if not self._read():
                    break
            except ProtocolError as err:
                self._fail(err)
        if not self._events and self._peer_closed and not self.closed and self._sm.reading:
            partial = len(self._buffer) or self._first_block is not None
            self._close("peer closed the connection" + (" mid-message" if partial else ""))
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def test_keys(self, sid: bytes) -> TestKeys:
        """The TWAMP-Test keys of session `sid` (modes 2, 4, 8; RFC 5357 §4.1.2)."""
        if self._aes_key is None or self._hmac_key is None:
            raise LocalProtocolError("no session keys: the mode is not 2, 4 or 8, or no setup yet")
        return derive_test_keys(sid, self._aes_key, self._hmac_key)

    # -- internals --------------------------------------------------------------------------

    def _read(self) -> bool:
        """Parse at most one message; True if anything happened, False if data is missing."""
        raise NotImplementedError

    def _fail(self, err: ProtocolError) -> None:
        self._close(str(err), err.accept)

    def _close(self, reason: str, accept: AcceptCode | None = None) -> None:
        if self.closed:
            return
        self._sm.close()
        self._first_block = None
        self._events.append(ConnectionClosed(reason, accept))

    def _send(self, message: bytes) -> None:
        # Mode 1 leaves the HMAC field zero (RFC 5357 §3.2); the encoders write zeros there.
        self._out += self._tx.seal(message) if self._tx is not None else message

    def _take(self, length_of: Callable[[bytes], int]) -> bytes | None:
        """The plaintext of the next whole message after setup, HMAC checked, or None.

        `length_of(first 16 plaintext octets)` gives the length and may raise ProtocolError.
        """
        if self._first_block is None:
            block = self._buffer.extract(AES_BLOCK)
            if block is None:
                return None
            self._first_block = self._rx.crypt(block) if self._rx is not None else block
        first = self._first_block
        rest = self._buffer.extract(length_of(first) - AES_BLOCK)
        if rest is None:
            return None
        self._first_block = None
        if self._rx is None:
            return first + rest
        message = first + (self._rx.crypt(rest) if rest else b"")
        # RFC 5357 §3.2: the HMAC is checked before anything in the message is acted on.
        self._rx.verify(message)
        return message

    def _move_sessions(self, sids: Iterable[bytes], trigger: MessageType) -> None:
        for sid in sids:
            current = self._sessions.get(sid)
            if current is not None:
                self._sessions[sid] = SESSION_TRANSITIONS[current].get(trigger, current)

    def _sids_in(self, state: SessionState) -> tuple[bytes, ...]:
        return tuple(sid for sid, s in self._sessions.items() if s is state)


class ServerConnection(_Connection):
    """The Server side of one TWAMP-Control connection (see the module docstring)."""

    def __init__(
        self,
        *,
        modes: Mode,
        keys: Mapping[bytes, bytes],
        count: int = DEFAULT_COUNT,
        start_time_ns: int,
        now_ns: int,
        servwait_ns: int | None = DEFAULT_SERVWAIT_NS,
        random_bytes: Callable[[int], bytes] = os.urandom,
        defer_key_derivation: bool = False,
    ) -> None:
        super().__init__(Role.SERVER, now_ns, random_bytes)
        self._defer_kdf = defer_key_derivation
        self._pending_setup: tuple[Mode, SetUpResponse] | None = None
        # RFC 4656 §3.1: Count is a power of 2 and at least 1024.
        if count < MIN_COUNT or count & (count - 1):
            raise ValueError(f"count must be a power of 2 >= {MIN_COUNT}, got {count}")
        self._offered = Mode(modes)
        self._keys = dict(keys)
        self._count = count
        self._start_time = ntp_from_ns(start_time_ns)
        self._servwait = servwait_ns
        self._last_message_ns = now_ns
        self._key_id = b""
        # What the application owes an answer for.
        self._request: RequestTWSession | None = None
        self._to_answer: set[bytes] = set()
        self._challenge = self._random(16)
        salt = self._random(16)
        self._salt = salt
        greeting = ServerGreeting(self._offered, self._challenge, salt, count)
        self._out += encode_server_greeting(greeting)
        self._sm.process(MessageType.SERVER_GREETING)
        if not self._offered:
            # RFC 4656 §3.1: Modes 0 tells the client the Server will not serve it.
            self._close("no modes offered (Modes 0)")

    @property
    def key_id(self) -> bytes:
        return self._key_id

    # -- timer ------------------------------------------------------------------------------

    def get_timer(self) -> int | None:
        """The SERVWAIT deadline (monotonic ns), or None while suspended (spec §8)."""
        if self._servwait is None or not self._sm.reading or self.running_sessions:
            return None
        return self._last_message_ns + self._servwait

    def handle_timer(self, now_ns: int) -> None:
        self._now = now_ns
        deadline = self.get_timer()
        if deadline is not None and now_ns >= deadline:
            self._close("SERVWAIT expired: no complete message from the client")

    # -- application answers ------------------------------------------------------------------

    def accept_session(
        self,
        port: int,
        sid: bytes,
        *,
        reflected_octets: int | None = None,
        server_octets: int = 0,
    ) -> None:
        """Accept the requested session on reflector UDP `port` with `sid` (RFC 5357 §3.5).

        `reflected_octets` defaults to the request's Octets to be reflected when Reflect Octets
        mode (RFC 6038) was negotiated, else 0; `server_octets` needs that mode too.
        """
        self._expect_state(ControlState.AWAIT_SESSION_ANSWER)
        assert self._request is not None
        if not 1 <= port <= 0xFFFF:
            raise ValueError(f"port {port} is not a UDP port")
        if not isinstance(sid, bytes) or len(sid) != SID_LEN or sid == _ZERO_SID:
            raise ValueError("sid must be 16 octets, not all zero")
        if sid in self._sessions:
            raise ValueError(f"SID {sid.hex()} is already used on this connection")
        reflect = bool(self._mode & Mode.REFLECT_OCTETS)
        if reflected_octets is None:
            reflected_octets = self._request.octets_to_reflect if reflect else 0
        if not reflect and (reflected_octets or server_octets):
            # RFC 6038 §4.3: octets 20-23 stay MBZ unless Reflect Octets was negotiated.
            raise ValueError("reflected/server octets need Reflect Octets mode (Mode bit 32)")
        self._answer_session(
            AcceptSession(AcceptCode.OK, port, sid, reflected_octets, server_octets)
        )
        self._sessions[sid] = SessionState.ACCEPTED

    def reject_session(self, accept: AcceptCode) -> None:
        """Refuse the requested session; Port and SID are sent as zeros (RFC 5357 §3.5)."""
        self._expect_state(ControlState.AWAIT_SESSION_ANSWER)
        if AcceptCode(accept) is AcceptCode.OK:
            raise ValueError("reject_session needs a non-zero Accept value")
        self._answer_session(AcceptSession(accept, 0, _ZERO_SID))

    def start_ack(self, accept: AcceptCode) -> None:
        """Answer Start-Sessions; with Accept 0 every session in `StartRequested.sids` runs."""
        self._expect_state(ControlState.AWAIT_START_ANSWER)
        accept = AcceptCode(accept)
        self._send(encode_start_ack(StartAck(accept)))
        self._sm.process(MessageType.START_ACK)
        if accept is AcceptCode.OK:
            self._move_sessions(self._to_answer, MessageType.START_ACK)
        self._to_answer = set()

    def start_n_ack(self, accept: AcceptCode, sids: Iterable[bytes]) -> None:
        """Answer some or all of the SIDs of `StartNRequested` (RFC 5938 §3.3)."""
        self._expect_state(ControlState.AWAIT_START_N_ANSWER)
        self._n_ack(AcceptCode(accept), _check_sids(sids), MessageType.START_N_ACK)

    def stop_n_ack(self, accept: AcceptCode, sids: Iterable[bytes]) -> None:
        """Answer some or all of the SIDs of `StopNRequested` (RFC 5938 §3.5)."""
        self._expect_state(ControlState.AWAIT_STOP_N_ANSWER)
        self._n_ack(AcceptCode(accept), _check_sids(sids), MessageType.STOP_N_ACK)

    def _expect_state(self, state: ControlState) -> None:
        if self._sm.state is not state:
            raise LocalProtocolError(
                f"nothing to answer that way: the server is in state {self._sm.state.value}"
            )

    def _answer_session(self, msg: AcceptSession) -> None:
        self._send(encode_accept_session(msg))
        self._sm.process(MessageType.ACCEPT_SESSION)
        self._request = None

    def _n_ack(self, accept: AcceptCode, sids: tuple[bytes, ...], kind: MessageType) -> None:
        unknown = [sid.hex() for sid in sids if sid not in self._to_answer]
        if unknown:
            raise ValueError(f"SIDs not awaiting an answer: {', '.join(unknown)}")
        if kind is MessageType.START_N_ACK:
            self._send(encode_start_n_ack(StartNAck(accept, sids)))
        else:
            self._send(encode_stop_n_ack(StopNAck(accept, sids)))
        self._to_answer.difference_update(sids)
        if accept is AcceptCode.OK:
            self._move_sessions(sids, kind)
        if not self._to_answer:
            self._sm.process(kind)

    # -- reading ------------------------------------------------------------------------------

    def _read(self) -> bool:
        if self._sm.state is ControlState.AWAIT_SETUP:
            return self._read_setup_response()
        return self._read_command()

    def _message_done(self) -> None:
        self._last_message_ns = self._now

    def _read_setup_response(self) -> bool:
        data = self._buffer.extract(SET_UP_RESPONSE_SIZE)
        if data is None:
            return False
        self._message_done()
        resp = decode_set_up_response(data)
        self._sm.process(MessageType.SETUP_RESPONSE)
        if not resp.mode:
            # RFC 4656 §3.1: Mode 0 means the client will not continue; no Server-Start.
            self._close("client declined (Mode 0)")
            return True
        # RFC 5618 §3.1: bits this implementation does not know are ignored.
        mode = Mode.known(resp.mode)
        security = mode & SECURITY_MODES
        if bin(int(security)).count("1") != 1:
            return self._refuse_setup(
                AcceptCode.NOT_SUPPORTED, f"Mode {int(resp.mode)} has not one security bit"
            )
        if int(mode) & ~int(self._offered):
            return self._refuse_setup(
                AcceptCode.NOT_SUPPORTED,
                f"Mode {int(mode)} selects bits not offered ({int(self._offered)})",
            )
        if security & SECURE_CONTROL_MODES:
            passphrase = self._keys.get(resp.key_id)
            if passphrase is None:
                return self._refuse_setup(AcceptCode.FAILURE, f"unknown KeyID {resp.key_id!r}")
            if self._defer_kdf:
                # PBKDF2 costs about a millisecond: the application runs it off its event loop
                # and answers with key_derived() or refuse_key_derivation().
                self._pending_setup = (mode, resp)
                self._events.append(
                    KeyDerivationRequested(resp.key_id, passphrase, self._salt, self._count)
                )
                return True
            return self._finish_setup(mode, resp, derive_key(passphrase, self._salt, self._count))
        return self._finish_setup(mode, resp, None)

    def key_derived(self, dk: bytes) -> None:
        """Answer `KeyDerivationRequested` with ``derive_key(passphrase, salt, count)``."""
        pending = self._take_pending_setup()
        if pending is not None:
            self._finish_setup(pending[0], pending[1], dk)

    def refuse_key_derivation(self, accept: AcceptCode, reason: str) -> None:
        """Answer `KeyDerivationRequested` with a refusing Server-Start (e.g. Accept 5)."""
        if self._take_pending_setup() is not None:
            self._refuse_setup(accept, reason)

    def _take_pending_setup(self) -> tuple[Mode, SetUpResponse] | None:
        if self.closed:
            self._pending_setup = None
            return None
        if self._pending_setup is None:
            raise LocalProtocolError("no key derivation is awaited")
        pending, self._pending_setup = self._pending_setup, None
        return pending

    def _finish_setup(self, mode: Mode, resp: SetUpResponse, dk: bytes | None) -> bool:
        server_iv = _ZERO_IV
        if dk is not None:
            challenge, aes_key, hmac_key = decrypt_token(dk, resp.token)
            if not hmac.compare_digest(challenge, self._challenge):
                return self._refuse_setup(
                    AcceptCode.FAILURE,
                    f"Token does not carry the Challenge (wrong secret for KeyID {resp.key_id!r})",
                )
            server_iv = self._random(AES_BLOCK)
            self._aes_key, self._hmac_key = aes_key, hmac_key
            self._rx = ControlCipher(aes_key, resp.client_iv, hmac_key, encrypt=False)
            self._key_id = resp.key_id
        self._mode = mode
        start = encode_server_start(ServerStart(AcceptCode.OK, server_iv, self._start_time))
        if self._aes_key is not None and self._hmac_key is not None:
            # RFC 5357 §3.2, spec §4.3-4.4: octets 32-47 open the server's CBC stream, and the
            # first HMAC the Server sends covers them.
            self._tx = ControlCipher(self._aes_key, server_iv, self._hmac_key, encrypt=True)
            self._tx.mac_update(start[32:])
            start = start[:32] + self._tx.crypt(start[32:])
        self._out += start
        self._sm.process(MessageType.SERVER_START)
        self._events.append(SetupComplete(mode, self._key_id))
        return True

    def _refuse_setup(self, accept: AcceptCode, reason: str) -> bool:
        # RFC 4656 §3.1: a refusing Server-Start is all clear text, Start-Time zero.
        self._out += encode_server_start(ServerStart(accept, _ZERO_IV, 0))
        self._sm.process(MessageType.SERVER_START)
        self._close(reason, accept)
        return True

    def _read_command(self) -> bool:
        try:
            message = self._take(self._command_length)
        except UnsupportedError as err:
            self._refuse_command(err)
            return True
        if message is None:
            return False
        self._message_done()
        command = Command(message[0])
        if command is Command.REQUEST_TW_SESSION:
            self._on_request(message)
        elif command is Command.START_SESSIONS:
            self._on_start(message)
        elif command is Command.STOP_SESSIONS:
            self._on_stop(message)
        elif command is Command.START_N_SESSIONS:
            self._on_start_n(message)
        else:
            self._on_stop_n(message)
        return True

    def _command_length(self, first_block: bytes) -> int:
        if not command_allowed(first_block[0], self._mode):
            # Checked before the length: a forbidden command's length is not to be trusted.
            raise UnsupportedError(
                f"command {first_block[0]} is not allowed in Mode {int(self._mode)}",
                message_type="Command",
                field="command",
            )
        return client_command_length(first_block)

    def _refuse_command(self, err: UnsupportedError) -> None:
        # RFC 5357 §3.5: an unexpected command gets Accept-Session with Accept 3; its length
        # (hence the next message boundary) is unknown, so the connection ends.
        self._first_block = None
        self._send(encode_accept_session(AcceptSession(AcceptCode.NOT_SUPPORTED, 0, _ZERO_SID)))
        self._close(str(err), AcceptCode.NOT_SUPPORTED)

    def _refused(self, command: Command, accept: AcceptCode, reason: str) -> None:
        self._events.append(RequestRefused(command, accept, reason))

    def _on_request(self, message: bytes) -> None:
        self._sm.process(MessageType.REQUEST_TW_SESSION)
        try:
            req = decode_request_tw_session(message)
        except DecodeError as err:
            # The stream is still in step, but a peer that sends this is not to be trusted.
            self._answer_session(AcceptSession(err.accept, 0, _ZERO_SID))
            self._fail(err)
            return
        reason = self._unsupported_request(req)
        if reason is not None:
            self._answer_session(AcceptSession(AcceptCode.NOT_SUPPORTED, 0, _ZERO_SID))
            self._refused(Command.REQUEST_TW_SESSION, AcceptCode.NOT_SUPPORTED, reason)
            return
        if not self._mode & Mode.REFLECT_OCTETS:
            # RFC 6038 §4.2: octets 88-91 are MBZ without Reflect Octets mode, so ignored.
            req = dataclasses.replace(req, octets_to_reflect=0, padding_to_reflect=0)
        self._request = req
        self._events.append(SessionRequested(req))

    def _unsupported_request(self, req: RequestTWSession) -> str | None:
        """Why the request must get Accept 3, or None (RFC 5357 §3.5, RFC 6038 §4.2)."""
        if req.conf_sender or req.conf_receiver:
            return "Conf-Sender and Conf-Receiver must be zero"
        if req.schedule_slots or req.num_packets:
            return "Number of Schedule Slots and Number of Packets must be zero"
        if req.sid != _ZERO_SID:
            return "the SID must be zero: the Server assigns it"
        if req.type_p & ~_TYPE_P_DSCP_MASK:
            return f"Type-P {req.type_p:#010x} is not a DSCP (PHB IDs are not supported)"
        if (
            self._mode & Mode.REFLECT_OCTETS
            and req.padding_to_reflect
            and req.padding_length <= req.padding_to_reflect
        ):
            return (
                f"Padding Length {req.padding_length} is not greater than the "
                f"{req.padding_to_reflect} octets of padding to reflect"
            )
        return None

    def _on_start(self, message: bytes) -> None:
        decode_start_sessions(message)
        self._sm.process(MessageType.START_SESSIONS)
        sids = self._sids_in(SessionState.ACCEPTED)
        if not sids:
            self._send(encode_start_ack(StartAck(AcceptCode.FAILURE)))
            self._sm.process(MessageType.START_ACK)
            self._refused(Command.START_SESSIONS, AcceptCode.FAILURE, "no session to start")
            return
        self._to_answer = set(sids)
        self._events.append(StartRequested(sids))

    def _on_stop(self, message: bytes) -> None:
        stop = decode_stop_sessions(message)
        running = self._sids_in(SessionState.STARTED)
        if stop.num_sessions != len(running):
            # RFC 5357 §3.8: the message is invalid; close and treat the results as invalid.
            raise StateError(
                f"Number of Sessions {stop.num_sessions}, but {len(running)} in progress",
                message_type="StopSessions",
                field="num_sessions",
            )
        self._sm.process(MessageType.STOP_SESSIONS)
        self._move_sessions(running, MessageType.STOP_SESSIONS)
        self._events.append(StopRequested(stop.accept, running))

    def _on_start_n(self, message: bytes) -> None:
        sids = decode_start_n_sessions(message).sids
        self._sm.process(MessageType.START_N_SESSIONS)
        self._split_n(sids, MessageType.START_N_ACK, Command.START_N_SESSIONS)

    def _on_stop_n(self, message: bytes) -> None:
        sids = decode_stop_n_sessions(message).sids
        self._sm.process(MessageType.STOP_N_SESSIONS)
        self._split_n(sids, MessageType.STOP_N_ACK, Command.STOP_N_SESSIONS)

    def _split_n(self, sids: tuple[bytes, ...], kind: MessageType, command: Command) -> None:
        """SIDs the app can act on go to it; the others get one Accept 1 ack at once."""
        sids = tuple(dict.fromkeys(sids))  # a repeated SID is answered once
        mine: list[bytes] = []
        others: list[bytes] = []
        for sid in sids:
            current = self._sessions.get(sid)
            eligible = current is not None and kind in SESSION_TRANSITIONS[current]
            (mine if eligible else others).append(sid)
        self._to_answer = set(sids)
        if others:
            self._n_ack(AcceptCode.FAILURE, tuple(others), kind)
            self._refused(command, AcceptCode.FAILURE, f"{len(others)} SID(s) unknown or not ready")
        if mine:
            event = StartNRequested if kind is MessageType.START_N_ACK else StopNRequested
            self._events.append(event(tuple(mine)))


class _Pending:
    """An RFC 5938 command whose SIDs the client still expects acks for."""

    __slots__ = ("kind", "sids")

    def __init__(self, kind: MessageType, sids: tuple[bytes, ...]) -> None:
        self.kind = kind
        self.sids = set(sids)


class ClientConnection(_Connection):
    """The Control-Client side of one TWAMP-Control connection (see the module docstring)."""

    def __init__(
        self,
        *,
        now_ns: int,
        max_count: int = DEFAULT_MAX_COUNT,
        random_bytes: Callable[[int], bytes] = os.urandom,
        response_timeout_ns: int | None = DEFAULT_RESPONSE_TIMEOUT_NS,
    ) -> None:
        super().__init__(Role.CLIENT, now_ns, random_bytes)
        self._max_count = max_count
        self._timeout = response_timeout_ns
        self._waiting_since = now_ns  # when the awaited server message became due
        self._greeting: ServerGreeting | None = None
        self._pending: deque[_Pending] = deque()

    # -- timer ------------------------------------------------------------------------------

    def _expecting(self) -> bool:
        state = self._sm.state
        if state in (ControlState.GREETING_RECEIVED, ControlState.CLOSED):
            return False
        return state is not ControlState.READY or bool(self._pending)

    def get_timer(self) -> int | None:
        """When the awaited server message is overdue (monotonic ns), or None."""
        if self._timeout is None or not self._expecting():
            return None
        return self._waiting_since + self._timeout

    def handle_timer(self, now_ns: int) -> None:
        self._now = now_ns
        deadline = self.get_timer()
        if deadline is not None and now_ns >= deadline:
            self._close(f"no reply from the server in state {self._sm.state.value}")

    # -- application actions ------------------------------------------------------------------

    def setup(
        self,
        mode: Mode,
        key_id: bytes = b"",
        passphrase: bytes = b"",
        *,
        now_ns: int | None = None,
    ) -> None:
        """Answer the greeting with Set-Up-Response (RFC 4656 §3.1); Mode 0 declines and closes.

        `mode`: exactly one security bit the server offered, plus offered feature bits only.
        Modes 2, 4 and 8 need `key_id` (at most 80 octets) and the shared secret `passphrase`.
        """
        self._expect_state(ControlState.GREETING_RECEIVED)
        greeting = self._greeting
        assert greeting is not None
        mode = Mode(mode)
        if not mode:
            self._out += encode_set_up_response(SetUpResponse(Mode(0)))
            self._sm.process(MessageType.SETUP_RESPONSE)
            self._close("declined the server's modes (Mode 0)")
            return
        if bin(int(mode & SECURITY_MODES)).count("1") != 1:
            raise ValueError(f"Mode {int(mode)} must have exactly one security bit (1, 2, 4, 8)")
        if int(mode) & ~int(greeting.modes):
            raise ValueError(f"Mode {int(mode)} selects bits not offered ({int(greeting.modes)})")
        response = SetUpResponse(mode)
        if mode & SECURE_CONTROL_MODES:
            if not 1 <= len(key_id) <= KEYID_LEN or key_id.endswith(b"\0"):
                raise ValueError("key_id must be 1-80 octets and not end in a zero octet")
            if not passphrase:
                raise ValueError(f"Mode {int(mode)} needs the shared secret (passphrase)")
            dk = derive_key(passphrase, greeting.salt, greeting.count)
            # RFC 4656 §3.1: the client picks the session keys and the Client-IV at random.
            aes_key = self._random(16)
            hmac_key = self._random(32)
            client_iv = self._random(AES_BLOCK)
            token = encrypt_token(dk, greeting.challenge, aes_key, hmac_key)
            response = SetUpResponse(mode, key_id, token, client_iv)
            self._aes_key, self._hmac_key = aes_key, hmac_key
            # The client's stream starts with its first command (spec §4.3).
            self._tx = ControlCipher(aes_key, client_iv, hmac_key, encrypt=True)
        self._mode = mode
        self._out += encode_set_up_response(response)
        self._sm.process(MessageType.SETUP_RESPONSE)
        self._start_waiting(now_ns)

    def request_session(self, req: RequestTWSession, *, now_ns: int | None = None) -> None:
        """Send Request-TW-Session (RFC 5357 §3.5); the answer is `SessionAccepted`."""
        self._expect_quiet("Request-TW-Session")
        self._send(encode_request_tw_session(dataclasses.replace(req, hmac=_ZERO_HMAC)))
        self._sm.process(MessageType.REQUEST_TW_SESSION)
        self._start_waiting(now_ns)

    def start_sessions(self, *, now_ns: int | None = None) -> None:
        """Send Start-Sessions (RFC 5357 §3.7); the answer is `SessionsStarted`."""
        self._expect_classic("Start-Sessions")
        self._expect_quiet("Start-Sessions")
        self._send(encode_start_sessions(StartSessions()))
        self._sm.process(MessageType.START_SESSIONS)
        self._start_waiting(now_ns)

    def stop_sessions(self, accept: AcceptCode = AcceptCode.OK) -> None:
        """Send Stop-Sessions for every running session (RFC 5357 §3.8); there is no answer."""
        self._expect_classic("Stop-Sessions")
        self._expect_quiet("Stop-Sessions")
        running = self._sids_in(SessionState.STARTED)
        self._send(encode_stop_sessions(StopSessions(AcceptCode(accept), len(running))))
        self._sm.process(MessageType.STOP_SESSIONS)
        self._move_sessions(running, MessageType.STOP_SESSIONS)

    def start_n_sessions(self, sids: Iterable[bytes], *, now_ns: int | None = None) -> None:
        """Send Start-N-Sessions (RFC 5938 §3.2); answered by one or more `StartNAcked`."""
        self._n_command(_check_sids(sids), MessageType.START_N_SESSIONS, now_ns)

    def stop_n_sessions(self, sids: Iterable[bytes], *, now_ns: int | None = None) -> None:
        """Send Stop-N-Sessions (RFC 5938 §3.4); answered by one or more `StopNAcked`."""
        self._n_command(_check_sids(sids), MessageType.STOP_N_SESSIONS, now_ns)

    def _expect_state(self, state: ControlState) -> None:
        if self._sm.state is not state:
            raise LocalProtocolError(f"not allowed in state {self._sm.state.value}")

    def _expect_quiet(self, what: str) -> None:
        """Commands whose answer has no command number wait until nothing else is due."""
        self._expect_state(ControlState.READY)
        if self._pending:
            raise LocalProtocolError(f"{what} must wait for the outstanding RFC 5938 acks")

    def _expect_classic(self, what: str) -> None:
        if self._mode & Mode.INDIVIDUAL_SESSION_CONTROL:
            raise LocalProtocolError(f"{what} is forbidden in Individual Session Control mode")

    def _n_command(self, sids: tuple[bytes, ...], kind: MessageType, now_ns: int | None) -> None:
        if not self._mode & Mode.INDIVIDUAL_SESSION_CONTROL:
            raise LocalProtocolError(f"{kind.value} needs Individual Session Control (Mode 16)")
        self._expect_state(ControlState.READY)
        if kind is MessageType.START_N_SESSIONS:
            self._send(encode_start_n_sessions(StartNSessions(sids)))
            ack = MessageType.START_N_ACK
        else:
            self._send(encode_stop_n_sessions(StopNSessions(sids)))
            ack = MessageType.STOP_N_ACK
        self._sm.process(kind)
        if not self._pending:
            self._start_waiting(now_ns)
        self._pending.append(_Pending(ack, sids))

    def _start_waiting(self, now_ns: int | None) -> None:
        if now_ns is not None:
            self._now = now_ns
        self._waiting_since = self._now

    # -- reading ------------------------------------------------------------------------------

    def _read(self) -> bool:
        state = self._sm.state
        if state is ControlState.CONNECTED:
            return self._read_greeting()
        if state is ControlState.AWAIT_SERVER_START:
            return self._read_server_start()
        if state is ControlState.AWAIT_ACCEPT_SESSION:
            return self._read_accept_session()
        if state is ControlState.AWAIT_START_ACK:
            return self._read_start_ack()
        if self._pending:
            return self._read_n_ack()
        if len(self._buffer):
            raise StateError(
                f"{len(self._buffer)} octet(s) from the server when no message was due "
                f"(state {state.value})"
            )
        return False

    def _message_done(self) -> None:
        self._waiting_since = self._now

    def _read_greeting(self) -> bool:
        data = self._buffer.extract(SERVER_GREETING_SIZE)
        if data is None:
            return False
        self._message_done()
        greeting = decode_server_greeting(data)
        self._sm.process(MessageType.SERVER_GREETING)
        if not greeting.modes:
            self._close("the server offers no modes (Modes 0)")
        elif not greeting.modes & SECURITY_MODES:
            self._close(f"the server offers no security mode (Modes {int(greeting.modes)})")
        elif not MIN_COUNT <= greeting.count <= self._max_count:
            # RFC 5357 §6: a huge Count makes the client burn CPU in PBKDF2 (a DoS).
            self._close(f"Count {greeting.count} is outside {MIN_COUNT}-{self._max_count}")
        else:
            self._greeting = greeting
            self._events.append(GreetingReceived(greeting.modes, greeting.count))
        return True

    def _read_server_start(self) -> bool:
        data = self._buffer.extract(SERVER_START_SIZE)
        if data is None:
            return False
        self._message_done()
        # Octet 15 is Accept. Only a Server-Start with Accept 0 opens the server's stream
        # (spec §3.4); a refusal is all clear text.
        if data[15] == AcceptCode.OK and self._tx is not None:
            assert self._aes_key is not None and self._hmac_key is not None
            self._rx = ControlCipher(self._aes_key, data[16:32], self._hmac_key, encrypt=False)
            tail = self._rx.crypt(data[32:])
            self._rx.mac_update(tail)
            data = data[:32] + tail
        start = decode_server_start(data)
        self._sm.process(MessageType.SERVER_START)
        if start.accept is not AcceptCode.OK:
            self._close(f"the server refused the setup (Accept {start.accept})", start.accept)
        else:
            self._events.append(ServerStarted(start.accept, ns_from_ntp(start.start_time)))
        return True

    def _read_accept_session(self) -> bool:
        message = self._take(lambda _: ACCEPT_SESSION_SIZE)
        if message is None:
            return False
        self._message_done()
        accept = decode_accept_session(message)
        self._sm.process(MessageType.ACCEPT_SESSION)
        if accept.accept is AcceptCode.OK:
            self._sessions[accept.sid] = SessionState.ACCEPTED
        self._events.append(SessionAccepted(accept))
        return True

    def _read_start_ack(self) -> bool:
        message = self._take(lambda _: START_ACK_SIZE)
        if message is None:
            return False
        self._message_done()
        ack = decode_start_ack(message)
        self._sm.process(MessageType.START_ACK)
        if ack.accept is AcceptCode.OK:
            self._move_sessions(self._sids_in(SessionState.ACCEPTED), MessageType.START_ACK)
        self._events.append(SessionsStarted(ack.accept))
        return True

    def _read_n_ack(self) -> bool:
        head = self._pending[0]
        want = Command.START_N_ACK if head.kind is MessageType.START_N_ACK else Command.STOP_N_ACK

        def length(first_block: bytes) -> int:
            if first_block[0] != want:
                raise StateError(
                    f"command {first_block[0]} from the server, expected {want.value}",
                    message_type=head.kind.value,
                    field="command",
                )
            return n_message_length(first_block)

        message = self._take(length)
        if message is None:
            return False
        self._message_done()
        ack: StartNAck | StopNAck
        ack = (
            decode_start_n_ack(message)
            if want is Command.START_N_ACK
            else decode_stop_n_ack(message)
        )
        stray = set(ack.sids) - head.sids
        if stray:
            raise StateError(
                f"{len(stray)} SID(s) acknowledged that were not asked for",
                message_type=head.kind.value,
                field="sids",
            )
        self._sm.process(head.kind)
        head.sids.difference_update(ack.sids)
        if not head.sids:
            self._pending.popleft()
        if ack.accept is AcceptCode.OK:
            self._move_sessions(ack.sids, head.kind)
        event = StartNAcked(ack) if isinstance(ack, StartNAck) else StopNAcked(ack)
        self._events.append(event)
        return True
