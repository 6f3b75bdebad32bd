"""The TWAMP-Control state machine: one table for the Server, one for the Control-Client.

Theory of operation
===================

A TWAMP-Control connection (RFC 5357 §3) is a strict conversation: the Server greets,
the Control-Client answers with a Set-Up-Response, the Server confirms with a Server-Start, and
from then on the client sends commands that the Server answers one at a time. Because the
server's replies Accept-Session and Start-Ack carry no command number (RFC 5357 §3.5, §3.7),
*both* sides must always know which message comes next; that knowledge is this file.

Rule 1: everything that decides whether a message may be sent or received lives here: the
`TRANSITIONS` table (protocol state), `command_allowed` (what the negotiated Mode permits) and
`SESSION_TRANSITIONS` (the life of one test session). `connection.py`, `server.py` and
`client.py` read and write bytes, run the crypto and ask this file before they act; they never
decide an order of messages themselves.

Rule 2: the table is keyed by role. Each `MessageType` has exactly one sender (the Server sends
the greeting, Server-Start and every reply; the client sends Set-Up-Response and every command),
so a message type stands for "sent" in the sender's table and "received" in the other table,
and no direction flag is needed.

Rule 3: a state in which a side waits for its *own application* is a state of its own. The
Server hands a request to the application as an event (`SessionRequested`, `StartRequested`,
...) and then sits in an ``AWAIT_*_ANSWER`` state, reading nothing more from the peer, until the
application calls the matching answer method. When the Server refuses a request on its own
(unsupported parameters, unknown SIDs) it passes through the same states: it plays the
application's part and answers at once. The client likewise waits in ``GREETING_RECEIVED`` until
its application chooses a Mode.

Rule 4: closing is not in the table. `close()` moves any state to CLOSED, for every reason:
peer closed, protocol error, refusal at setup, a timer, a local decision. CLOSED accepts nothing.

Two things are deliberately *not* states:

* Whether test sessions are running. It is a property of the set of sessions, each moving
  ACCEPTED -> STARTED -> STOPPED (`SESSION_TRANSITIONS`); the SERVWAIT timer and the
  Stop-Sessions count are computed from that set. In Individual Session Control mode (RFC 5938)
  sessions start and stop one by one, so a single "testing" state could not describe them.
* The RFC 5938 acknowledgements the client still expects. The client may send several
  Start-N-Sessions / Stop-N-Sessions without waiting (RFC 5938 §3), and the Server may answer one
  of them with several acks, one per Accept value. The client keeps a FIFO of outstanding SID
  sets while in READY; an ack only ever shrinks the head of that FIFO. To keep the reply
  order unambiguous, a client sends Request-TW-Session (whose reply has no command number)
  only when no RFC 5938 ack is outstanding.

Server partial acks follow the same idea: in ``AWAIT_START_N_ANSWER`` each `start_n_ack` call
covers some of the SIDs; the ``START_N_ACK`` transition back to READY is taken by the call that
answers the last of them.
"""

from __future__ import annotations

import enum

from ..constants import Command, Mode

__all__ = [
    "SESSION_TRANSITIONS",
    "TRANSITIONS",
    "ControlState",
    "ControlStateMachine",
    "LocalProtocolError",
    "MessageType",
    "Role",
    "SessionState",
    "command_allowed",
]


class LocalProtocolError(RuntimeError):
    """The local application asked for something the protocol does not allow now.

    Remote misbehaviour never raises: it becomes a `ConnectionClosed` event. This exception means
    the code using the connection has a bug (h11's LocalProtocolError).
    """


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class ControlState(enum.Enum):
    CONNECTED = "connected"  # TCP is up, nothing exchanged yet
    GREETING_RECEIVED = "greeting-received"  # client: its application must choose a Mode
    AWAIT_SETUP = "await-setup"  # server: greeting sent
    SETUP_RECEIVED = "setup-received"  # server: transient, Server-Start goes out in the same call
    AWAIT_SERVER_START = "await-server-start"  # client
    READY = "ready"  # both: between commands
    AWAIT_ACCEPT_SESSION = "await-accept-session"  # client: Request-TW-Session sent
    AWAIT_START_ACK = "await-start-ack"  # client: Start-Sessions sent
    AWAIT_SESSION_ANSWER = "await-session-answer"  # server: application must accept/reject
    AWAIT_START_ANSWER = "await-start-answer"  # server: application must start_ack
    AWAIT_START_N_ANSWER = "await-start-n-answer"  # server: application must start_n_ack
    AWAIT_STOP_N_ANSWER = "await-stop-n-answer"  # server: application must stop_n_ack
    CLOSED = "closed"


class MessageType(enum.Enum):
    """Every TWAMP-Control message, named once for both directions (Rule 2)."""

    SERVER_GREETING = "Server-Greeting"  # server -> client
    SETUP_RESPONSE = "Set-Up-Response"  # client -> server
    SERVER_START = "Server-Start"  # server -> client
    REQUEST_TW_SESSION = "Request-TW-Session"  # client -> server, command 5
    ACCEPT_SESSION = "Accept-Session"  # server -> client
    START_SESSIONS = "Start-Sessions"  # client -> server, command 2
    START_ACK = "Start-Ack"  # server -> client
    STOP_SESSIONS = "Stop-Sessions"  # client -> server, command 3, never answered
    START_N_SESSIONS = "Start-N-Sessions"  # client -> server, command 7
    START_N_ACK = "Start-N-Ack"  # server -> client, command 8
    STOP_N_SESSIONS = "Stop-N-Sessions"  # client -> server, command 9
    STOP_N_ACK = "Stop-N-Ack"  # server -> client, command 10


_S = ControlState
_M = MessageType

TRANSITIONS: dict[Role, dict[ControlState, dict[MessageType, ControlState]]] = {
    Role.SERVER: {
        _S.CONNECTED: {_M.SERVER_GREETING: _S.AWAIT_SETUP},
        _S.AWAIT_SETUP: {_M.SETUP_RESPONSE: _S.SETUP_RECEIVED},
        # A Server-Start with Accept != 0 is followed by close() (RFC 4656 §3.1).
        _S.SETUP_RECEIVED: {_M.SERVER_START: _S.READY},
        _S.READY: {
            _M.REQUEST_TW_SESSION: _S.AWAIT_SESSION_ANSWER,
            _M.START_SESSIONS: _S.AWAIT_START_ANSWER,
            _M.STOP_SESSIONS: _S.READY,  # RFC 5357 §3.8: no reply
            _M.START_N_SESSIONS: _S.AWAIT_START_N_ANSWER,
            _M.STOP_N_SESSIONS: _S.AWAIT_STOP_N_ANSWER,
        },
        _S.AWAIT_SESSION_ANSWER: {_M.ACCEPT_SESSION: _S.READY},
        _S.AWAIT_START_ANSWER: {_M.START_ACK: _S.READY},
        _S.AWAIT_START_N_ANSWER: {_M.START_N_ACK: _S.READY},  # the ack answering the last SID
        _S.AWAIT_STOP_N_ANSWER: {_M.STOP_N_ACK: _S.READY},
        _S.CLOSED: {},
    },
    Role.CLIENT: {
        _S.CONNECTED: {_M.SERVER_GREETING: _S.GREETING_RECEIVED},
        _S.GREETING_RECEIVED: {_M.SETUP_RESPONSE: _S.AWAIT_SERVER_START},
        _S.AWAIT_SERVER_START: {_M.SERVER_START: _S.READY},
        _S.READY: {
            _M.REQUEST_TW_SESSION: _S.AWAIT_ACCEPT_SESSION,
            _M.START_SESSIONS: _S.AWAIT_START_ACK,
            _M.STOP_SESSIONS: _S.READY,
            # RFC 5938 commands and acks may interleave (RFC 5938 §3): see the theory above.
            _M.START_N_SESSIONS: _S.READY,
            _M.START_N_ACK: _S.READY,
            _M.STOP_N_SESSIONS: _S.READY,
            _M.STOP_N_ACK: _S.READY,
        },
        _S.AWAIT_ACCEPT_SESSION: {_M.ACCEPT_SESSION: _S.READY},
        _S.AWAIT_START_ACK: {_M.START_ACK: _S.READY},
        _S.CLOSED: {},
    },
}

# States in which a side reads the peer's bytes. In the others it waits for its own application
# (Rule 3), and bytes that arrive stay buffered.
READING_STATES: dict[Role, frozenset[ControlState]] = {
    Role.SERVER: frozenset({_S.AWAIT_SETUP, _S.READY}),
    Role.CLIENT: frozenset(
        {
            _S.CONNECTED,
            _S.GREETING_RECEIVED,  # any byte here is an error: the server must wait for us
            _S.AWAIT_SERVER_START,
            _S.READY,
            _S.AWAIT_ACCEPT_SESSION,
            _S.AWAIT_START_ACK,
        }
    ),
}


class ControlStateMachine:
    """The current state of one side, moved only through `TRANSITIONS`."""

    __slots__ = ("role", "state")

    def __init__(self, role: Role) -> None:
        self.role = role
        self.state = ControlState.CONNECTED

    def allows(self, message: MessageType) -> bool:
        return message in TRANSITIONS[self.role][self.state]

    def process(self, message: MessageType) -> None:
        """Take the transition for `message`; LocalProtocolError if the table has none."""
        try:
            self.state = TRANSITIONS[self.role][self.state][message]
        except KeyError:
            raise LocalProtocolError(
                f"{self.role.value} cannot handle {message.value} in state {self.state.value}"
            ) from None

    def close(self) -> None:
        self.state = ControlState.CLOSED

    @property
    def reading(self) -> bool:
        return self.state in READING_STATES[self.role]


# RFC 5938 §2: with Individual Session Control, Start-Sessions and Stop-Sessions are forbidden;
# without it, Start-N/Stop-N are unknown commands. Commands 0, 1, 4, 6, 8, 10, 11 and 12-255 are
# never accepted from a client (RFC 5357 §3.4, RFC 5938 §3; 8 and 10 travel server -> client only).
_ALWAYS = frozenset({Command.REQUEST_TW_SESSION})
_CLASSIC = frozenset({Command.START_SESSIONS, Command.STOP_SESSIONS})
_INDIVIDUAL = frozenset({Command.START_N_SESSIONS, Command.STOP_N_SESSIONS})


def command_allowed(command: int, mode: Mode) -> bool:
    """Whether a client command number may be sent on a connection set up with `mode`."""
    if command in _ALWAYS:
        return True
    if mode & Mode.INDIVIDUAL_SESSION_CONTROL:
        return command in _INDIVIDUAL
    return command in _CLASSIC


class SessionState(enum.Enum):
    """The life of one accepted test session, identified by its SID."""

    ACCEPTED = "accepted"  # Accept-Session with Accept 0 sent/received
    STARTED = "started"  # by Start-Sessions or Start-N-Sessions, acknowledged with Accept 0
    STOPPED = "stopped"  # by Stop-Sessions or Stop-N-Sessions (acknowledged with Accept 0)


# A session runs once: RFC 5357 §3.7 starts the sessions "requested but not started", and
# Stop-Sessions ends every running one; a stopped SID is not restarted, by either command set.
SESSION_TRANSITIONS: dict[SessionState, dict[MessageType, SessionState]] = {
    SessionState.ACCEPTED: {
        MessageType.START_ACK: SessionState.STARTED,
        MessageType.START_N_ACK: SessionState.STARTED,
    },
    SessionState.STARTED: {
        MessageType.STOP_SESSIONS: SessionState.STOPPED,
        MessageType.STOP_N_ACK: SessionState.STOPPED,
    },
    SessionState.STOPPED: {},
}
