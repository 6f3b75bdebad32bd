"""Sans-I/O TWAMP-Control, the Server side: `ServerConnection` (usage: `twamp.control.connection`).

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

SERVWAIT (RFC 5357 §3.1): the connection closes when no complete message arrived for
`servwait_ns`; the timer is suspended while any session runs (RFC 5938: any, not all) and while
the application owes an answer. A client that sends half a message and stalls is closed at SERVWAIT.
"""

from __future__ import annotations

import dataclasses
import hmac
import os
from collections.abc import Callable, Iterable, Mapping

from ..constants import (
    AES_BLOCK,
    DEFAULT_COUNT,
    DEFAULT_SERVWAIT_NS,
    HMAC_LEN,
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
    decrypt_token,
    derive_key,
)
from ..errors import DecodeError, StateError, UnsupportedError
from ..timestamps import ntp_from_ns
from ..wire.control import (
    SET_UP_RESPONSE_SIZE,
    AcceptSession,
    RequestTWSession,
    ServerGreeting,
    ServerStart,
    SetUpResponse,
    StartAck,
    StartNAck,
    StopNAck,
    client_command_length,
    decode_request_tw_session,
    decode_set_up_response,
    decode_start_n_sessions,
    decode_start_sessions,
    decode_stop_n_sessions,
    decode_stop_sessions,
    encode_accept_session,
    encode_server_greeting,
    encode_server_start,
    encode_start_ack,
    encode_start_n_ack,
    encode_stop_n_ack,
)
from .connection import ConnectionBase, check_sids
from .events import (
    KeyDerivationRequested,
    RequestRefused,
    SessionRequested,
    SetupComplete,
    StartNRequested,
    StartRequested,
    StopNRequested,
    StopRequested,
)
from .state import (
    SESSION_TRANSITIONS,
    ControlState,
    LocalProtocolError,
    MessageType,
    Role,
    SessionState,
    command_allowed,
)

__all__ = ["ServerConnection", "make_sid"]

_ZERO_SID = bytes(SID_LEN)
_ZERO_IV = bytes(AES_BLOCK)
_ZERO_HMAC = bytes(HMAC_LEN)
# RFC 4656 §3.5: Type-P is a DSCP (top bits 00, 6 bits, rest zero) or a PHB ID (01). Only the
# DSCP form can be honoured with a TOS byte; owamp refuses the rest the same way.
_TYPE_P_DSCP_MASK = 0x3F000000


def make_sid(ipv4: bytes, now_ns: int, random4: bytes) -> bytes:
    """The RECOMMENDED SID layout (RFC 4656 §3.5, RFC 5357 §3.5).

    4 octets of an IPv4 address of the Server, the 8-octet NTP timestamp of `now_ns` (Unix ns)
    and 4 random octets; the SID also keys the test crypto, so `random4` must be unpredictable.
    """
    if len(ipv4) != 4:
        raise ValueError(f"ipv4 must be 4 octets, got {len(ipv4)}")
    if len(random4) != 4:
        raise ValueError(f"random4 must be 4 octets, got {len(random4)}")
    return bytes(ipv4) + ntp_from_ns(now_ns).to_bytes(8, "big") + bytes(random4)


class ServerConnection(ConnectionBase):
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
        """The SERVWAIT deadline (monotonic ns), or None while suspended (RFC 5357 §3.1)."""
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
        self._n_ack(AcceptCode(accept), check_sids(sids), MessageType.START_N_ACK)

    def stop_n_ack(self, accept: AcceptCode, sids: Iterable[bytes]) -> None:
        """Answer some or all of the SIDs of `StopNRequested` (RFC 5938 §3.5)."""
        self._expect_state(ControlState.AWAIT_STOP_N_ANSWER)
        self._n_ack(AcceptCode(accept), check_sids(sids), MessageType.STOP_N_ACK)

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
            # RFC 4656 §3.2, RFC 5357 §3.2: octets 32-47 open the server's CBC stream, and the
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
