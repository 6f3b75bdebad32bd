"""Sans-I/O TWAMP-Control connections: what `ServerConnection` and `ClientConnection` share.

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

The Server side lives in `twamp.control.server`, the Control-Client side in
`twamp.control.client`; each module documents its events, answers and refusals.

Both: `state`, `mode`, `closed`, `sessions` (SID -> `SessionState`), `running_sessions`, and in
modes 2, 4, 8 `test_keys(sid)` (RFC 4656 §4.1.2, RFC 5357 §4.1.2).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType

from ..constants import (
    AES_BLOCK,
    SID_LEN,
    AcceptCode,
    Mode,
)
from ..crypto import (
    ControlCipher,
    TestKeys,
    derive_test_keys,
)
from ..errors import ProtocolError
from ..wire.buffer import ReceiveBuffer
from ..wire.control import (
    MAX_N_SESSIONS,
)
from .events import (
    ConnectionClosed,
    Event,
)
from .state import (
    SESSION_TRANSITIONS,
    ControlState,
    ControlStateMachine,
    LocalProtocolError,
    MessageType,
    Role,
    SessionState,
)

__all__ = ["ConnectionBase", "check_sids"]


def check_sids(sids: Iterable[bytes]) -> tuple[bytes, ...]:
    out = tuple(sids)
    if not 1 <= len(out) <= MAX_N_SESSIONS:
        raise ValueError(f"1 to {MAX_N_SESSIONS} SIDs are needed, got {len(out)}")
    for sid in out:
        if not isinstance(sid, bytes) or len(sid) != SID_LEN:
            raise ValueError(f"a SID is {SID_LEN} octets: {sid!r}")
    if len(set(out)) != len(out):
        raise ValueError("duplicate SIDs")
    return out


class ConnectionBase:
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
