"""Sans-I/O TWAMP-Control: the Server and Control-Client state machine (RFC 5357 §3, RFC 5938).

`connection` holds the two connection classes and documents their API; `state` the transition
table and its theory of operation; `events` what `next_event()` returns.
"""

from .connection import DEFAULT_RESPONSE_TIMEOUT_NS, ClientConnection, ServerConnection, make_sid
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
