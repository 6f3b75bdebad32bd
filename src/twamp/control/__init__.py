"""Sans-I/O TWAMP-Control: the Server and Control-Client state machine (RFC 5357 §3, RFC 5938).

`connection` holds what both roles share and documents the usage pattern; `server` the Server
(`ServerConnection`), `client` the Control-Client (`ClientConnection`), each with its events,
answers and refusals; `state` the transition table and its theory of operation; `events` what
`next_event()` returns.
"""

from .client import DEFAULT_RESPONSE_TIMEOUT_NS, ClientConnection
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
from .server import ServerConnection, make_sid
from .state import ControlState, LocalProtocolError, Role, SessionState

__all__ = [
    "DEFAULT_RESPONSE_TIMEOUT_NS",
    "ClientConnection",
    "ConnectionClosed",
    "ControlState",
    "Event",
    "GreetingReceived",
    "KeyDerivationRequested",
    "LocalProtocolError",
    "RequestRefused",
    "Role",
    "ServerConnection",
    "ServerStarted",
    "SessionAccepted",
    "SessionRequested",
    "SessionState",
    "SessionsStarted",
    "SetupComplete",
    "StartNAcked",
    "StartNRequested",
    "StartRequested",
    "StopNAcked",
    "StopNRequested",
    "StopRequested",
    "make_sid",
]
