"""Sans-I/O TWAMP-Control, the Control-Client side: `ClientConnection`.

Usage pattern and the API both roles share: `twamp.control.connection`.

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
"""

from __future__ import annotations

import dataclasses
import os
from collections import deque
from collections.abc import Callable, Iterable

from ..constants import (
    AES_BLOCK,
    DEFAULT_MAX_COUNT,
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
    derive_key,
    encrypt_token,
)
from ..errors import StateError
from ..timestamps import NS, ns_from_ntp
from ..wire.control import (
    ACCEPT_SESSION_SIZE,
    SERVER_GREETING_SIZE,
    SERVER_START_SIZE,
    START_ACK_SIZE,
    RequestTWSession,
    ServerGreeting,
    SetUpResponse,
    StartNAck,
    StartNSessions,
    StartSessions,
    StopNAck,
    StopNSessions,
    StopSessions,
    decode_accept_session,
    decode_server_greeting,
    decode_server_start,
    decode_start_ack,
    decode_start_n_ack,
    decode_stop_n_ack,
    encode_request_tw_session,
    encode_set_up_response,
    encode_start_n_sessions,
    encode_start_sessions,
    encode_stop_n_sessions,
    encode_stop_sessions,
    n_message_length,
)
from .connection import ConnectionBase, check_sids
from .events import (
    GreetingReceived,
    ServerStarted,
    SessionAccepted,
    SessionsStarted,
    StartNAcked,
    StopNAcked,
)
from .state import (
    ControlState,
    LocalProtocolError,
    MessageType,
    Role,
    SessionState,
)

__all__ = ["DEFAULT_RESPONSE_TIMEOUT_NS", "ClientConnection"]

# RFC 4656 §3 asks for a timeout on every expected message; 30 s is ample on any real path.
DEFAULT_RESPONSE_TIMEOUT_NS = 30 * NS

_ZERO_SID = bytes(SID_LEN)
_ZERO_IV = bytes(AES_BLOCK)
_ZERO_HMAC = bytes(HMAC_LEN)
# RFC 4656 §3.5: Type-P is a DSCP (top bits 00, 6 bits, rest zero) or a PHB ID (01). Only the
# DSCP form can be honoured with a TOS byte; owamp refuses the rest the same way.
_TYPE_P_DSCP_MASK = 0x3F000000


class _Pending:
    """An RFC 5938 command whose SIDs the client still expects acks for."""

    __slots__ = ("kind", "sids")

    def __init__(self, kind: MessageType, sids: tuple[bytes, ...]) -> None:
        self.kind = kind
        self.sids = set(sids)


class ClientConnection(ConnectionBase):
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
            # The client's stream starts with its first command (RFC 4656 §3.2).
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
        self._n_command(check_sids(sids), MessageType.START_N_SESSIONS, now_ns)

    def stop_n_sessions(self, sids: Iterable[bytes], *, now_ns: int | None = None) -> None:
        """Send Stop-N-Sessions (RFC 5938 §3.4); answered by one or more `StopNAcked`."""
        self._n_command(check_sids(sids), MessageType.STOP_N_SESSIONS, now_ns)

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
        # (RFC 5357 §3.1); a refusal is all clear text.
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
