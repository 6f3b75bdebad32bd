"""Events that `ServerConnection.next_event()` and `ClientConnection.next_event()` return.

Each event is a frozen slotted dataclass. Client events report what the Server said; server
events report what the client asked for, and those ending in ``Requested`` must be answered by
the application (see the theory of operation in `twamp.control.state`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..constants import AcceptCode, Command, Mode
from ..wire.control import AcceptSession, RequestTWSession, StartNAck, StopNAck

__all__ = [
    "ConnectionClosed",
    "Event",
    "GreetingReceived",
    "KeyDerivationRequested",
    "RequestRefused",
    "ServerStarted",
    "SessionAccepted",
    "SessionRequested",
    "SessionsStarted",
    "SetupComplete",
    "StartNAcked",
    "StartNRequested",
    "StartRequested",
    "StopNAcked",
    "StopNRequested",
    "StopRequested",
]


class Event:
    """Base class of every control event."""

    __slots__ = ()


# Both roles


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The connection is over; the caller closes the TCP connection after `data_to_send()`.

    `reason` is a sentence for the log. `accept` is the Accept value involved: the one the
    Server sent before closing (Server-Start or Accept-Session), the one a client received in
    Server-Start, or the value of the protocol error that ended the connection (1 for a bad
    HMAC). None for an orderly end: the peer closed, Mode 0, an expired timer.
    """

    reason: str
    accept: AcceptCode | None = None


# Control-Client events


@dataclass(frozen=True, slots=True)
class GreetingReceived(Event):
    """Server-Greeting arrived (RFC 4656 §3.1): call `setup()` with one of `modes`."""

    modes: Mode
    count: int


@dataclass(frozen=True, slots=True)
class ServerStarted(Event):
    """Server-Start with Accept 0; `start_time` is the Server's start, in Unix ns."""

    accept: AcceptCode
    start_time: int


@dataclass(frozen=True, slots=True)
class SessionAccepted(Event):
    """The Accept-Session answering `request_session()`; it may carry a refusal (Accept != 0)."""

    accept_session: AcceptSession


@dataclass(frozen=True, slots=True)
class SessionsStarted(Event):
    """The Start-Ack answering `start_sessions()`."""

    accept: AcceptCode


@dataclass(frozen=True, slots=True)
class StartNAcked(Event):
    """One Start-N-Ack; several may answer one `start_n_sessions()` (RFC 5938 §2.1)."""

    ack: StartNAck


@dataclass(frozen=True, slots=True)
class StopNAcked(Event):
    """One Stop-N-Ack; several may answer one `stop_n_sessions()` (RFC 5938 §2.2)."""

    ack: StopNAck


# Server events


@dataclass(frozen=True, slots=True, repr=False)
class KeyDerivationRequested(Event):
    """A secure Set-Up-Response with a known KeyID (server made with
    ``defer_key_derivation=True``): run ``crypto.derive_key(passphrase, salt, count)`` off the
    event loop, then call `key_derived(dk)` or `refuse_key_derivation(accept, reason)`.
    Nothing more is read until then (RFC 4656 §3.1: PBKDF2 costs about a millisecond)."""

    key_id: bytes
    passphrase: bytes
    salt: bytes
    count: int

    def __repr__(self) -> str:  # the passphrase stays out of logs
        return f"KeyDerivationRequested(key_id={self.key_id!r}, count={self.count})"


@dataclass(frozen=True, slots=True)
class SetupComplete(Event):
    """Set-Up-Response accepted and Server-Start (Accept 0) queued.

    `mode` holds the known Mode bits the client chose; `key_id` is empty in mode 1.
    """

    mode: Mode
    key_id: bytes


@dataclass(frozen=True, slots=True)
class SessionRequested(Event):
    """A valid Request-TW-Session: answer with `accept_session()` or `reject_session()`.

    The RFC 6038 fields (`octets_to_reflect`, `padding_to_reflect`) are zero unless Mode bit 32
    was negotiated, because they are MBZ octets otherwise (RFC 6038 §4.2).
    """

    request: RequestTWSession


@dataclass(frozen=True, slots=True)
class StartRequested(Event):
    """Start-Sessions for the accepted, not yet started `sids`: answer with `start_ack()`."""

    sids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class StopRequested(Event):
    """Stop-Sessions stopped `sids` (RFC 5357 §3.8); no answer is sent.

    Accept != 0 means the client considers the results invalid. Each session's Timeout now runs.
    """

    accept: AcceptCode
    sids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class StartNRequested(Event):
    """Start-N-Sessions for accepted, not started `sids`: answer every one with `start_n_ack()`."""

    sids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class StopNRequested(Event):
    """Stop-N-Sessions for running `sids`: answer every one with `stop_n_ack()`."""

    sids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class RequestRefused(Event):
    """The Server answered a command on its own, with a refusal; nothing for the app to do.

    Request-TW-Session with unsupported parameters (Accept 3), Start-Sessions with nothing to
    start, or SIDs in Start-N/Stop-N that are unknown or in the wrong state (Accept 1).
    """

    command: Command
    accept: AcceptCode
    reason: str
