"""Errors raised by the sans-I/O core.

Every protocol error carries the Accept value a Server answers with (RFC 4656 §3.3), so the
layer that catches it can close the connection with the right code without knowing the cause.
"""

from __future__ import annotations

from .constants import AcceptCode


class ProtocolError(Exception):
    """A message or packet that cannot be accepted.

    `accept` is the Accept value to answer with; `message_type` and `field` name what was wrong
    so that the log line that closes a connection says where.
    """

    default_accept = AcceptCode.FAILURE

    def __init__(
        self,
        reason: str,
        *,
        message_type: str | None = None,
        field: str | None = None,
        accept: AcceptCode | None = None,
    ) -> None:
        self.reason = reason
        self.message_type = message_type
        self.field = field
        self.accept = self.default_accept if accept is None else accept
        where = ": ".join(x for x in (message_type, field) if x)
        super().__init__(f"{where}: {reason}" if where else reason)


class DecodeError(ProtocolError):
    """Bytes that do not form the expected message (wrong length, impossible field value)."""


class IntegrityError(ProtocolError):
    """An HMAC that does not verify or a Token that does not decrypt to the Challenge."""


class UnsupportedError(ProtocolError):
    """A well-formed request for something this implementation does not do (Accept 3)."""

    default_accept = AcceptCode.NOT_SUPPORTED


class ResourceLimitError(ProtocolError):
    """A request refused for lack of resources (Accept 4 or 5)."""

    default_accept = AcceptCode.TEMPORARY_RESOURCE_LIMIT


class StateError(ProtocolError):
    """A message that is valid on its own but not allowed in the current protocol state."""
