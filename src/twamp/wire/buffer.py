"""A receive buffer for stream framing (TWAMP-Control over TCP).

Every TWAMP-Control message has a length known from its first 16 octets (RFC 5357 §3), so framing
needs only "wait until n octets are buffered, then take them". The buffer is a `bytearray`:
appending is amortised O(len(data)) and CPython removes a prefix of a bytearray by moving its
start pointer, so feeding one octet at a time and extracting message by message stays linear in
the bytes received (h11's `ReceiveBuffer` relies on the same property).
"""

from __future__ import annotations

__all__ = ["ReceiveBuffer"]


class ReceiveBuffer:
    """Octets received but not yet consumed."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received octets."""
        self._data += data

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"<ReceiveBuffer {len(self._data)} octets>"

    def peek(self, n: int) -> bytes | None:
        """The first `n` octets without consuming them, or None if fewer are buffered."""
        if n < 0:
            raise ValueError("n must not be negative")
        if len(self._data) < n:
            return None
        return bytes(self._data[:n])

    def extract(self, n: int) -> bytes | None:
        """Consume and return the first `n` octets, or None (consuming nothing) if fewer are
        buffered."""
        if n < 0:
            raise ValueError("n must not be negative")
        if len(self._data) < n:
            return None
        out = bytes(self._data[:n])
        del self._data[:n]
        return out
