"""A test session's packet format (`TestFormat`) and the per-packet transforms on it.

`TestFormat` turns the session's choices (TestMode, RFC 6038 Symmetrical Size, RFC 7750
DSCP-ECN, STAMP) into the sizes and offsets every packet of the session shares; the layouts
themselves are declared once in `twamp.wire.testpackets`.

The reflector's hot path is `reflect` followed by `write_transmit_timestamp`; it is the reference
the compiled fast path is compared against, so it works on one preallocated `bytearray` with
`pack_into` and slice assignment and builds no per-field objects. `build_sender` is the
Session-Sender's counterpart; `parse_sender` and `parse_reflection` pick the decoder of the
session's format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from struct import Struct
from struct import error as StructError
from typing import ClassVar

from ..constants import (
    REFLECTOR_BASE_AUTH,
    REFLECTOR_BASE_OPEN,
    SENDER_BASE_AUTH,
    SENDER_BASE_OPEN,
    STAMP_BASE_OPEN,
    TestMode,
)
from ..errors import DecodeError
from .testpackets import (
    Buffer,
    ReflectorAuth,
    ReflectorOpen,
    SenderAuth,
    SenderOpen,
    StampReflector,
    StampReflectorAuth,
    StampSender,
    StampSenderAuth,
    decode_reflector_auth,
    decode_reflector_open,
    decode_sender_auth,
    decode_sender_open,
    decode_stamp_reflector,
    decode_stamp_sender,
)

__all__ = [
    "TestFormat",
    "build_sender",
    "parse_reflection",
    "parse_sender",
    "reflect",
    "write_transmit_timestamp",
]

# Partial layouts used by the reflect transform and the sender builder.
_U16 = Struct("!H")
_TS_EE = Struct("!QH")  # Timestamp followed by its Error Estimate
_REFLECT_HEAD_OPEN = Struct("!I8xH2xQ")  # Sequence Number, Error Estimate, Receive Timestamp
_REFLECT_HEAD_AUTH = Struct("!I12x8xH6xQ")
_SEND_HEAD_OPEN = Struct("!IQH")  # Sequence Number, Timestamp, Error Estimate
_SEND_HEAD_AUTH = Struct("!I12xQH")


@dataclass(frozen=True, slots=True)
class TestFormat:
    """Which packet layouts a test session uses, with the sizes and offsets derived from them.

    Valid combinations: TWAMP in any TestMode with any of RFC 6038 Symmetrical Size
    (`symmetrical`) and RFC 7750 DSCP-ECN (`dscp_ecn`); STAMP (`stamp`) unauthenticated only,
    with neither extension (STAMP has no encryption, RFC 8762 §4.4, and is symmetric by design;
    authenticated STAMP needs RFC 8762's own HMAC, not implemented). Others raise ValueError.

    Offsets of fields that a layout lacks are None. `min_request_length` is the shortest sender
    packet `reflect` accepts: `sender_header`, except for an unauthenticated STAMP reflector,
    which also answers TWAMP Light requests of 14 octets and more (RFC 8762 §4.6).
    """

    __test__: ClassVar[bool] = False  # not a pytest class

    test_mode: TestMode
    symmetrical: bool = False
    dscp_ecn: bool = False
    stamp: bool = False

    authenticated: bool = field(init=False, repr=False, compare=False)
    """True in authenticated and encrypted modes: the 48/112-octet layouts."""
    sender_header: int = field(init=False, repr=False, compare=False)
    reflector_header: int = field(init=False, repr=False, compare=False)
    min_request_length: int = field(init=False, repr=False, compare=False)
    timestamp_offset: int = field(init=False, repr=False, compare=False)
    """Where the Timestamp sits, in sender and reflector packets alike (4 or 16)."""
    error_estimate_offset: int = field(init=False, repr=False, compare=False)
    receive_timestamp_offset: int = field(init=False, repr=False, compare=False)
    sender_seq_offset: int = field(init=False, repr=False, compare=False)
    """Reflector packet: Sender Sequence Number (24 or 48)."""
    sender_timestamp_offset: int = field(init=False, repr=False, compare=False)
    """Reflector packet: Sender Timestamp, followed by the Sender Error Estimate (28 or 64)."""
    sender_ttl_offset: int = field(init=False, repr=False, compare=False)
    s_dscp_ecn_offset: int | None = field(init=False, repr=False, compare=False)
    ssid_offset: int | None = field(init=False, repr=False, compare=False)
    sender_hmac_offset: int | None = field(init=False, repr=False, compare=False)
    reflector_hmac_offset: int | None = field(init=False, repr=False, compare=False)
    _reflect_head: Struct = field(init=False, repr=False, compare=False)
    _send_head: Struct = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        auth = self.test_mode is not TestMode.OPEN
        if self.stamp:
            if self.test_mode is TestMode.ENCRYPTED:
                raise ValueError("STAMP has no encrypted mode (RFC 8762 §4.4)")
            if auth:
                # RFC 8762 §4.2.2/§4.3: HMAC-SHA-256 truncated to 16 octets over octets 0-95,
                # with a key given out of band. TWAMP's test crypto (HMAC-SHA1 over block 0,
                # keys from TWAMP-Control) would build packets no STAMP peer accepts, so no
                # layout is offered until the STAMP HMAC exists in both data-plane twins.
                raise ValueError(
                    "authenticated STAMP is not supported (RFC 8762 §4.3 HMAC-SHA-256 with an "
                    "out-of-band key is not implemented); use unauthenticated STAMP, or TWAMP "
                    "in authenticated or encrypted mode"
                )
            if self.symmetrical or self.dscp_ecn:
                raise ValueError("RFC 6038 and RFC 7750 variants are TWAMP-only, not STAMP")
            sender = reflector = STAMP_BASE_OPEN
            min_request = SENDER_BASE_OPEN
            ssid: int | None = 14
            sender_hmac: int | None = None
        else:
            if auth:
                sender = REFLECTOR_BASE_AUTH if self.symmetrical else SENDER_BASE_AUTH
                reflector = REFLECTOR_BASE_AUTH
            else:
                sender = REFLECTOR_BASE_OPEN if self.symmetrical else SENDER_BASE_OPEN
                # RFC 7750 §2.2.1: S-DSCP-ECN and 2 MBZ octets grow the open reflector to 44.
                reflector = REFLECTOR_BASE_OPEN + 3 if self.dscp_ecn else REFLECTOR_BASE_OPEN
            min_request = sender
            ssid = None
            sender_hmac = 32 if auth else None
        ts = 16 if auth else 4
        ttl = 80 if auth else 40
        values: dict[str, object] = {
            "authenticated": auth,
            "sender_header": sender,
            "reflector_header": reflector,
            "min_request_length": min_request,
            "timestamp_offset": ts,
            "error_estimate_offset": ts + 8,
            "receive_timestamp_offset": 32 if auth else 16,
            "sender_seq_offset": 48 if auth else 24,
            "sender_timestamp_offset": 64 if auth else 28,
            "sender_ttl_offset": ttl,
            "s_dscp_ecn_offset": ttl + 1 if self.dscp_ecn else None,
            "ssid_offset": ssid,
            "sender_hmac_offset": sender_hmac,
            "reflector_hmac_offset": 96 if auth else None,
            "_reflect_head": _REFLECT_HEAD_AUTH if auth else _REFLECT_HEAD_OPEN,
            "_send_head": _SEND_HEAD_AUTH if auth else _SEND_HEAD_OPEN,
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def reply_length(self, received_len: int) -> int:
        """RFC 5357 §4.2.1 as owamp implements it: as long as the request, at least the header."""
        return received_len if received_len > self.reflector_header else self.reflector_header


def reflect(
    fmt: TestFormat,
    request: Buffer,
    *,
    seq: int | None,
    receive_timestamp: int,
    error_estimate: int,
    sender_ttl: int,
    s_dscp_ecn: int = 0,
) -> bytearray:
    """Build the plaintext reply to a plaintext Session-Sender packet (RFC 5357 §4.2).

    `seq` is the reflector's own per-session counter (RFC 5357 §4.2.1), or None for a stateless
    TWAMP Light or STAMP reflector, which copies the sender's (RFC 5357 Appendix I, RFC 8762
    §4.3). `error_estimate` is the reflector's and covers the Receive Timestamp; the transmit
    Timestamp and the HMAC stay zero until `write_transmit_timestamp` and `twamp.crypto`.

    The padding after the reflector header is the start of the request's padding, truncated
    from the end so that the reply is as long as the request (RFC 5357 §4.2.1). Because RFC 6038
    reflected octets are the first octets of the sender's padding, this also echoes them, and for
    STAMP (header 44/112 on both sides) it copies every TLV unchanged.
    """
    n = len(request)
    if n < fmt.min_request_length:
        raise DecodeError(
            f"request of {n} octets is shorter than the {fmt.min_request_length}-octet header",
            message_type="TWAMP-Test request",
            field="length",
        )
    header = fmt.reflector_header
    buf = bytearray(n if n > header else header)
    try:
        fmt._reflect_head.pack_into(
            buf, 0, 0 if seq is None else seq, error_estimate, receive_timestamp
        )
    except StructError as exc:
        raise ValueError(f"reflect: a field is out of range: {exc}") from None
    if seq is None:
        buf[0:4] = request[0:4]
    # RFC 5357 §4.2.1: Sender Sequence Number, Timestamp and Error Estimate copied verbatim.
    o = fmt.sender_seq_offset
    buf[o : o + 4] = request[0:4]
    o, t = fmt.sender_timestamp_offset, fmt.timestamp_offset
    buf[o : o + 10] = request[t : t + 10]
    buf[fmt.sender_ttl_offset] = sender_ttl
    if fmt.s_dscp_ecn_offset is not None:
        buf[fmt.s_dscp_ecn_offset] = s_dscp_ecn
    if fmt.ssid_offset is not None and n >= fmt.ssid_offset + 2:
        # RFC 8972 §3: the SSID comes back at the same offset. A 14- or 15-octet TWAMP Light
        # request has none, and 0 tells the sender so.
        o = fmt.ssid_offset
        buf[o : o + 2] = request[o : o + 2]
    if n > header:
        # reflector_header >= sender_header in every format, so the slice is exactly n - header.
        start = fmt.sender_header
        buf[header:] = request[start : start + n - header]
    return buf


def write_transmit_timestamp(
    buf: bytearray, fmt: TestFormat, timestamp: int, error_estimate: int
) -> None:
    """Write the reflector's Timestamp and Error Estimate, as late as possible (RFC 5357 §4.2.1)."""
    try:
        _TS_EE.pack_into(buf, fmt.timestamp_offset, timestamp, error_estimate)
    except StructError as exc:
        raise ValueError(f"transmit timestamp: a field is out of range: {exc}") from None


def build_sender(
    fmt: TestFormat,
    seq: int,
    timestamp: int,
    error_estimate: int,
    padding: bytes,
    *,
    ssid: int = 0,
) -> bytearray:
    """A plaintext Session-Sender packet: header (MBZ and HMAC zero) followed by `padding`.

    For STAMP, `padding` is what follows the base packet (TLVs) and `ssid` the RFC 8972 SSID.
    In authenticated and encrypted modes `twamp.crypto` fills the HMAC and encrypts afterwards.
    """
    if ssid and fmt.ssid_offset is None:
        raise ValueError("only STAMP packets carry an SSID")
    header = fmt.sender_header
    buf = bytearray(header + len(padding))
    try:
        fmt._send_head.pack_into(buf, 0, seq, timestamp, error_estimate)
        if fmt.ssid_offset is not None:
            _U16.pack_into(buf, fmt.ssid_offset, ssid)
    except StructError as exc:
        raise ValueError(f"build_sender: a field is out of range: {exc}") from None
    buf[header:] = padding
    return buf


def parse_sender(
    fmt: TestFormat, data: Buffer
) -> SenderOpen | SenderAuth | StampSender | StampSenderAuth:
    """Decode a plaintext Session-Sender packet of the session's format."""
    if fmt.stamp:
        return decode_stamp_sender(data)  # TestFormat refuses authenticated STAMP
    if fmt.authenticated:
        return decode_sender_auth(data, symmetrical=fmt.symmetrical)
    return decode_sender_open(data, symmetrical=fmt.symmetrical)


def parse_reflection(
    fmt: TestFormat, data: Buffer
) -> ReflectorOpen | ReflectorAuth | StampReflector | StampReflectorAuth:
    """Decode a plaintext reflected packet of the session's format.

    Replies longer than the request are accepted: the surplus is padding or TLVs. A stateless
    STAMP reflector answers a 41-octet TWAMP Light request with 44 octets (RFC 8762 §4.6).
    """
    if fmt.stamp:
        return decode_stamp_reflector(data)  # TestFormat refuses authenticated STAMP
    if fmt.authenticated:
        return decode_reflector_auth(data, dscp_ecn=fmt.dscp_ecn)
    return decode_reflector_open(data, dscp_ecn=fmt.dscp_ecn)
