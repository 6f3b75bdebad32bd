"""TWAMP-Test and STAMP packets, `TestFormat`, and the reference reflect transform.

Layouts follow ../shared/spec/twamp-wire.md §5 (RFC 5357 §4.1.2, §4.2.1), §6 (RFC 6038, RFC 7750)
and §7 (RFC 8762, RFC 8972). Offsets are 0-based from the first octet of the UDP payload.

Test packets, unlike control messages, have a variable length: a base header followed by Packet
Padding (TWAMP) or TLVs (STAMP). Decoders therefore require *at least* the base length and keep
the rest as raw bytes. MBZ octets are written as zero and ignored on receipt (RFC 4656 §3.1), so a
decoder only fails on a packet that is too short.

Packets in authenticated and encrypted modes are handled here in *plaintext*: `twamp.crypto`
decrypts the covered octets before decoding and fills in the HMAC after encoding. Timestamps and
Error Estimates stay the raw wire integers (`twamp.timestamps` converts them).

The reflector's hot path is `reflect` followed by `write_transmit_timestamp`; it is the reference
the compiled fast path is compared against, so it works on one preallocated `bytearray` with
`pack_into` and slice assignment and builds no per-field objects.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from struct import Struct
from struct import error as StructError
from typing import ClassVar

from ..constants import (
    HMAC_LEN,
    REFLECTOR_BASE_AUTH,
    REFLECTOR_BASE_OPEN,
    SENDER_BASE_AUTH,
    SENDER_BASE_OPEN,
    STAMP_BASE_AUTH,
    STAMP_BASE_OPEN,
    TestMode,
)
from ..errors import DecodeError

__all__ = [
    "ReflectorAuth",
    "ReflectorOpen",
    "SenderAuth",
    "SenderOpen",
    "StampReflector",
    "StampReflectorAuth",
    "StampSender",
    "StampSenderAuth",
    "TestFormat",
    "Tlv",
    "TlvFlag",
    "TlvType",
    "build_sender",
    "decode_reflector_auth",
    "decode_reflector_open",
    "decode_sender_auth",
    "decode_sender_open",
    "decode_stamp_reflector",
    "decode_stamp_reflector_auth",
    "decode_stamp_sender",
    "decode_stamp_sender_auth",
    "decode_tlvs",
    "encode_reflector_auth",
    "encode_reflector_open",
    "encode_sender_auth",
    "encode_sender_open",
    "encode_stamp_reflector",
    "encode_stamp_reflector_auth",
    "encode_stamp_sender",
    "encode_stamp_sender_auth",
    "encode_tlvs",
    "parse_reflection",
    "parse_sender",
    "reflect",
    "write_transmit_timestamp",
]

Buffer = bytes | bytearray | memoryview

_ZERO_HMAC = bytes(HMAC_LEN)

# One Struct per layout. `Q` is a raw 64-bit timestamp, `x` an MBZ octet (packed as zero,
# skipped on unpack, so MBZ content never reaches a dataclass).
_SENDER_OPEN = Struct("!IQH")  # 14
_SENDER_OPEN_SYM = Struct("!IQH27x")  # 41, RFC 6038 §4.2
_SENDER_AUTH = Struct("!I12xQH6x16s")  # 48
_SENDER_AUTH_SYM = Struct("!I12xQH6x16s64x")  # 112, see SenderAuth
_REFLECTOR_OPEN = Struct("!IQH2xQIQH2xB")  # 41
_REFLECTOR_OPEN_DSCP = Struct("!IQH2xQIQH2xBB2x")  # 44, RFC 7750 §2.2.1
_REFLECTOR_AUTH = Struct("!I12xQH6xQ8xI12xQH6xB15x16s")  # 112
_REFLECTOR_AUTH_DSCP = Struct("!I12xQH6xQ8xI12xQH6xBB14x16s")  # 112, RFC 7750 §2.2.1
_STAMP_SENDER = Struct("!IQHH28x")  # 44
_STAMP_REFLECTOR = Struct("!IQHHQIQH2xB3x")  # 44
_STAMP_SENDER_AUTH = Struct("!I12xQHH68x16s")  # 112
_STAMP_REFLECTOR_AUTH = Struct("!I12xQHH4xQ8xI12xQH6xB15x16s")  # 112
_TLV_HEADER = Struct("!BBH")  # RFC 8972 §4

# Partial layouts used by the reflect transform and the sender builder.
_U16 = Struct("!H")
_TS_EE = Struct("!QH")  # Timestamp followed by its Error Estimate
_REFLECT_HEAD_OPEN = Struct("!I8xH2xQ")  # Sequence Number, Error Estimate, Receive Timestamp
_REFLECT_HEAD_AUTH = Struct("!I12x8xH6xQ")
_SEND_HEAD_OPEN = Struct("!IQH")  # Sequence Number, Timestamp, Error Estimate
_SEND_HEAD_AUTH = Struct("!I12xQH")

# (field name, end offset) in wire order: names the field a truncated packet cuts off.
_Fields = tuple[tuple[str, int], ...]
_F_SENDER_OPEN: _Fields = (("Sequence Number", 4), ("Timestamp", 12), ("Error Estimate", 14))
_F_SENDER_OPEN_SYM: _Fields = (*_F_SENDER_OPEN, ("MBZ", 41))
_F_SENDER_AUTH: _Fields = (
    ("Sequence Number", 4),
    ("MBZ", 16),
    ("Timestamp", 24),
    ("Error Estimate", 26),
    ("MBZ", 32),
    ("HMAC", 48),
)
_F_SENDER_AUTH_SYM: _Fields = (*_F_SENDER_AUTH, ("MBZ", 112))
_F_REFLECTOR_OPEN: _Fields = (
    ("Sequence Number", 4),
    ("Timestamp", 12),
    ("Error Estimate", 14),
    ("MBZ", 16),
    ("Receive Timestamp", 24),
    ("Sender Sequence Number", 28),
    ("Sender Timestamp", 36),
    ("Sender Error Estimate", 38),
    ("MBZ", 40),
    ("Sender TTL", 41),
)
_F_REFLECTOR_OPEN_DSCP: _Fields = (*_F_REFLECTOR_OPEN, ("S-DSCP-ECN", 42), ("MBZ", 44))
_F_REFLECTOR_AUTH_HEAD: _Fields = (
    ("Sequence Number", 4),
    ("MBZ", 16),
    ("Timestamp", 24),
    ("Error Estimate", 26),
)
_F_REFLECTOR_AUTH_TAIL: _Fields = (
    ("Receive Timestamp", 40),
    ("MBZ", 48),
    ("Sender Sequence Number", 52),
    ("MBZ", 64),
    ("Sender Timestamp", 72),
    ("Sender Error Estimate", 74),
    ("MBZ", 80),
    ("Sender TTL", 81),
)
_F_REFLECTOR_AUTH: _Fields = (
    *_F_REFLECTOR_AUTH_HEAD,
    ("MBZ", 32),
    *_F_REFLECTOR_AUTH_TAIL,
    ("MBZ", 96),
    ("HMAC", 112),
)
_F_REFLECTOR_AUTH_DSCP: _Fields = (
    *_F_REFLECTOR_AUTH_HEAD,
    ("MBZ", 32),
    *_F_REFLECTOR_AUTH_TAIL,
    ("S-DSCP-ECN", 82),
    ("MBZ", 96),
    ("HMAC", 112),
)
_F_STAMP_SENDER: _Fields = (*_F_SENDER_OPEN, ("SSID", 16), ("MBZ", 44))
_F_STAMP_REFLECTOR: _Fields = (
    *_F_SENDER_OPEN,
    ("SSID", 16),
    *_F_REFLECTOR_OPEN[4:],
    ("MBZ", 44),
)
_F_STAMP_SENDER_AUTH: _Fields = (
    *_F_REFLECTOR_AUTH_HEAD,
    ("SSID", 28),
    ("MBZ", 96),
    ("HMAC", 112),
)
_F_STAMP_REFLECTOR_AUTH: _Fields = (
    *_F_REFLECTOR_AUTH_HEAD,
    ("SSID", 28),
    ("MBZ", 32),
    *_F_REFLECTOR_AUTH_TAIL,
    ("MBZ", 96),
    ("HMAC", 112),
)


def _truncated(message_type: str, fields: _Fields, length: int) -> DecodeError:
    name = next((n for n, end in fields if end > length), fields[-1][0])
    return DecodeError(
        f"truncated: {length} octets, the header needs {fields[-1][1]}",
        message_type=message_type,
        field=name,
    )


def _check_hmac(message_type: str, hmac: bytes) -> None:
    if len(hmac) != HMAC_LEN:
        raise ValueError(f"{message_type}: HMAC must be {HMAC_LEN} octets, not {len(hmac)}")


def _pack(message_type: str, layout: Struct, tail: bytes, *values: int | bytes) -> bytes:
    try:
        return layout.pack(*values) + tail
    except StructError as exc:
        raise ValueError(f"{message_type}: a field is out of range: {exc}") from None


# --------------------------------------------------------------------------------------------
# Session-Sender packets (TWAMP)


@dataclass(frozen=True, slots=True)
class SenderOpen:
    """Session-Sender test packet, unauthenticated and mixed modes (RFC 5357 §4.1.2)::

         0                   1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                        Sequence Number                        |  0
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                          Timestamp                            |  4
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |        Error Estimate         |                               | 12
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               |
        .                        Packet Padding                         . 14
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    With RFC 6038 Symmetrical Size (`symmetrical=True`, RFC 6038 §4.2) octets 14-40 are MBZ and
    the padding starts at 41, so the header is as long as the reflector's.
    """

    seq: int
    timestamp: int
    error_estimate: int
    padding: bytes = b""


def encode_sender_open(msg: SenderOpen, *, symmetrical: bool = False) -> bytes:
    layout = _SENDER_OPEN_SYM if symmetrical else _SENDER_OPEN
    return _pack("SenderOpen", layout, msg.padding, msg.seq, msg.timestamp, msg.error_estimate)


def decode_sender_open(data: Buffer, *, symmetrical: bool = False) -> SenderOpen:
    layout = _SENDER_OPEN_SYM if symmetrical else _SENDER_OPEN
    if len(data) < layout.size:
        fields = _F_SENDER_OPEN_SYM if symmetrical else _F_SENDER_OPEN
        raise _truncated("SenderOpen", fields, len(data))
    seq, timestamp, error_estimate = layout.unpack_from(data)
    return SenderOpen(seq, timestamp, error_estimate, bytes(data[layout.size :]))


@dataclass(frozen=True, slots=True)
class SenderAuth:
    """Session-Sender test packet, authenticated and encrypted modes (RFC 5357 §4.1.2)::

         0                   1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                        Sequence Number                        |  0
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                        MBZ (12 octets)                        |  4
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                          Timestamp                            | 16
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |        Error Estimate         |                               | 24
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               |
        |                        MBZ (6 octets)                         |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                      HMAC (16 octets)                         | 32
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        .                        Packet Padding                         . 48
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    With RFC 6038 Symmetrical Size (`symmetrical=True`) 64 MBZ octets follow the HMAC and the
    padding starts at 112. RFC 6038 §4.2 says "56 MBZ octets" without a figure; only 64 make the
    header as long as the 112-octet reflector (spec §6.1, §10 row 8).
    """

    seq: int
    timestamp: int
    error_estimate: int
    hmac: bytes = _ZERO_HMAC
    padding: bytes = b""


def encode_sender_auth(msg: SenderAuth, *, symmetrical: bool = False) -> bytes:
    _check_hmac("SenderAuth", msg.hmac)
    layout = _SENDER_AUTH_SYM if symmetrical else _SENDER_AUTH
    return _pack(
        "SenderAuth", layout, msg.padding, msg.seq, msg.timestamp, msg.error_estimate, msg.hmac
    )


def decode_sender_auth(data: Buffer, *, symmetrical: bool = False) -> SenderAuth:
    layout = _SENDER_AUTH_SYM if symmetrical else _SENDER_AUTH
    if len(data) < layout.size:
        fields = _F_SENDER_AUTH_SYM if symmetrical else _F_SENDER_AUTH
        raise _truncated("SenderAuth", fields, len(data))
    seq, timestamp, error_estimate, hmac = layout.unpack_from(data)
    return SenderAuth(seq, timestamp, error_estimate, hmac, bytes(data[layout.size :]))


# --------------------------------------------------------------------------------------------
# Session-Reflector packets (TWAMP)


@dataclass(frozen=True, slots=True)
class ReflectorOpen:
    """Session-Reflector test packet, unauthenticated and mixed modes (RFC 5357 §4.2.1)::

         0                   1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                        Sequence Number                        |  0
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                          Timestamp                            |  4
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |         Error Estimate        |           MBZ                 | 12
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                          Receive Timestamp                    | 16
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                 Sender Sequence Number                        | 24
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                      Sender Timestamp                         | 28
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |      Sender Error Estimate    |           MBZ                 | 36
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |  Sender TTL   |                                               | 40
        +-+-+-+-+-+-+-+-+                                               +
        .                        Packet Padding                         . 41
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    With RFC 7750 DSCP and ECN Monitoring (`dscp_ecn=True`, RFC 7750 §2.2.1) S-DSCP-ECN sits at
    41, octets 42-43 are MBZ and the padding starts at 44. `s_dscp_ecn` is the received TOS /
    Traffic Class octet (spec §6.2) and must be 0 in the plain layout, which has no room for it.
    """

    seq: int
    timestamp: int
    error_estimate: int
    receive_timestamp: int
    sender_seq: int
    sender_timestamp: int
    sender_error_estimate: int
    sender_ttl: int
    s_dscp_ecn: int = 0
    padding: bytes = b""


def _check_no_dscp(message_type: str, s_dscp_ecn: int) -> None:
    if s_dscp_ecn:
        raise ValueError(f"{message_type}: S-DSCP-ECN needs the RFC 7750 layout (dscp_ecn=True)")


def encode_reflector_open(msg: ReflectorOpen, *, dscp_ecn: bool = False) -> bytes:
    values = (
        msg.seq,
        msg.timestamp,
        msg.error_estimate,
        msg.receive_timestamp,
        msg.sender_seq,
        msg.sender_timestamp,
        msg.sender_error_estimate,
        msg.sender_ttl,
    )
    if dscp_ecn:
        return _pack("ReflectorOpen", _REFLECTOR_OPEN_DSCP, msg.padding, *values, msg.s_dscp_ecn)
    _check_no_dscp("ReflectorOpen", msg.s_dscp_ecn)
    return _pack("ReflectorOpen", _REFLECTOR_OPEN, msg.padding, *values)


def decode_reflector_open(data: Buffer, *, dscp_ecn: bool = False) -> ReflectorOpen:
    n = len(data)
    if dscp_ecn:
        if n < _REFLECTOR_OPEN_DSCP.size:
            raise _truncated("ReflectorOpen", _F_REFLECTOR_OPEN_DSCP, n)
        seq, ts, ee, rts, s_seq, s_ts, s_ee, ttl, s_dscp_ecn = _REFLECTOR_OPEN_DSCP.unpack_from(
            data
        )
        padding = bytes(data[_REFLECTOR_OPEN_DSCP.size :])
    else:
        if n < _REFLECTOR_OPEN.size:
            raise _truncated("ReflectorOpen", _F_REFLECTOR_OPEN, n)
        seq, ts, ee, rts, s_seq, s_ts, s_ee, ttl = _REFLECTOR_OPEN.unpack_from(data)
        s_dscp_ecn = 0
        padding = bytes(data[_REFLECTOR_OPEN.size :])
    return ReflectorOpen(seq, ts, ee, rts, s_seq, s_ts, s_ee, ttl, s_dscp_ecn, padding)


@dataclass(frozen=True, slots=True)
class ReflectorAuth:
    """Session-Reflector test packet, authenticated and encrypted modes (RFC 5357 §4.2.1)::

         0                   1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                        Sequence Number                        |  0
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                        MBZ (12 octets)                        |  4
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                          Timestamp                            | 16
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |        Error Estimate         |                               | 24
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               |
        |                        MBZ (6 octets)                         |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                        Receive Timestamp                      | 32
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                        MBZ (8 octets)                         | 40
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                        Sender Sequence Number                 | 48
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                        MBZ (12 octets)                        | 52
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                        Sender Timestamp                       | 64
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |      Sender Error Estimate    |                               | 72
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               |
        |                        MBZ (6 octets)                         |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |  Sender TTL   |                                               | 80
        +-+-+-+-+-+-+-+-+                                               |
        |                        MBZ (15 octets)                        |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                        HMAC (16 octets)                       | 96
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        .                        Packet Padding                         . 112
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    The header is 112 octets as the figure sums, not the 104 of the RFC text (spec §5.4, §10
    row 1). With RFC 7750 (`dscp_ecn=True`) S-DSCP-ECN takes octet 81 and the size is unchanged.
    """

    seq: int
    timestamp: int
    error_estimate: int
    receive_timestamp: int
    sender_seq: int
    sender_timestamp: int
    sender_error_estimate: int
    sender_ttl: int
    s_dscp_ecn: int = 0
    hmac: bytes = _ZERO_HMAC
    padding: bytes = b""


def encode_reflector_auth(msg: ReflectorAuth, *, dscp_ecn: bool = False) -> bytes:
    _check_hmac("ReflectorAuth", msg.hmac)
    values = (
        msg.seq,
        msg.timestamp,
        msg.error_estimate,
        msg.receive_timestamp,
        msg.sender_seq,
        msg.sender_timestamp,
        msg.sender_error_estimate,
        msg.sender_ttl,
    )
    if dscp_ecn:
        return _pack(
            "ReflectorAuth",
            _REFLECTOR_AUTH_DSCP,
            msg.padding,
            *values,
            msg.s_dscp_ecn,
            msg.hmac,
        )
    _check_no_dscp("ReflectorAuth", msg.s_dscp_ecn)
    return _pack("ReflectorAuth", _REFLECTOR_AUTH, msg.padding, *values, msg.hmac)


def decode_reflector_auth(data: Buffer, *, dscp_ecn: bool = False) -> ReflectorAuth:
    n = len(data)
    if dscp_ecn:
        if n < _REFLECTOR_AUTH_DSCP.size:
            raise _truncated("ReflectorAuth", _F_REFLECTOR_AUTH_DSCP, n)
        seq, ts, ee, rts, s_seq, s_ts, s_ee, ttl, s_dscp_ecn, hmac = (
            _REFLECTOR_AUTH_DSCP.unpack_from(data)
        )
    else:
        if n < _REFLECTOR_AUTH.size:
            raise _truncated("ReflectorAuth", _F_REFLECTOR_AUTH, n)
        seq, ts, ee, rts, s_seq, s_ts, s_ee, ttl, hmac = _REFLECTOR_AUTH.unpack_from(data)
        s_dscp_ecn = 0
    padding = bytes(data[REFLECTOR_BASE_AUTH:])
    return ReflectorAuth(seq, ts, ee, rts, s_seq, s_ts, s_ee, ttl, s_dscp_ecn, hmac, padding)


# --------------------------------------------------------------------------------------------
# STAMP packets (RFC 8762 §4.2, §4.3; SSID from RFC 8972 §3)


@dataclass(frozen=True, slots=True)
class StampSender:
    """STAMP Session-Sender test packet, unauthenticated (RFC 8762 §4.2.1, RFC 8972 §3)::

         0                   1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                        Sequence Number                        |  0
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                          Timestamp                            |  4
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |         Error Estimate        |             SSID              | 12
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                                                               | 16
        |                         MBZ (28 octets)                       |
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        ~                            TLVs                               ~ 44
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    SSID 0 means "no RFC 8972 session identifier" (an RFC 8762-only sender). `tlvs` is the raw
    remainder of the packet; `decode_tlvs` parses it.
    """

    seq: int
    timestamp: int
    error_estimate: int
    ssid: int = 0
    tlvs: bytes = b""


def encode_stamp_sender(msg: StampSender) -> bytes:
    return _pack(
        "StampSender", _STAMP_SENDER, msg.tlvs, msg.seq, msg.timestamp, msg.error_estimate, msg.ssid
    )


def decode_stamp_sender(data: Buffer) -> StampSender:
    if len(data) < STAMP_BASE_OPEN:
        raise _truncated("StampSender", _F_STAMP_SENDER, len(data))
    seq, ts, ee, ssid = _STAMP_SENDER.unpack_from(data)
    return StampSender(seq, ts, ee, ssid, bytes(data[STAMP_BASE_OPEN:]))


@dataclass(frozen=True, slots=True)
class StampReflector:
    """STAMP Session-Reflector test packet, unauthenticated (RFC 8762 §4.3.1, RFC 8972 §3)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                        Sequence Number                        |  0
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                          Timestamp                            |  4
    |                                                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |         Error Estimate        |             SSID              | 12
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                          Receive Timestamp                    | 16
    |                                                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                 Session-Sender Sequence Number                | 24
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                  Session-Sender Timestamp                     | 28
    |                                                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    | Session-Sender Error Estimate |           MBZ                 | 36
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |Ses-Sender TTL |                   MBZ                         | 40
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ~                            TLVs                               ~ 44
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    """

    seq: int
    timestamp: int
    error_estimate: int
    ssid: int
    receive_timestamp: int
    sender_seq: int
    sender_timestamp: int
    sender_error_estimate: int
    sender_ttl: int
    tlvs: bytes = b""


def encode_stamp_reflector(msg: StampReflector) -> bytes:
    return _pack(
        "StampReflector",
        _STAMP_REFLECTOR,
        msg.tlvs,
        msg.seq,
        msg.timestamp,
        msg.error_estimate,
        msg.ssid,
        msg.receive_timestamp,
        msg.sender_seq,
        msg.sender_timestamp,
        msg.sender_error_estimate,
        msg.sender_ttl,
    )


def decode_stamp_reflector(data: Buffer) -> StampReflector:
    if len(data) < STAMP_BASE_OPEN:
        raise _truncated("StampReflector", _F_STAMP_REFLECTOR, len(data))
    seq, ts, ee, ssid, rts, s_seq, s_ts, s_ee, ttl = _STAMP_REFLECTOR.unpack_from(data)
    tlvs = bytes(data[STAMP_BASE_OPEN:])
    return StampReflector(seq, ts, ee, ssid, rts, s_seq, s_ts, s_ee, ttl, tlvs)


@dataclass(frozen=True, slots=True)
class StampSenderAuth:
    """STAMP Session-Sender test packet, authenticated (RFC 8762 §4.2.2, RFC 8972 §3)::

         0                   1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                        Sequence Number                        |  0
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                        MBZ (12 octets)                        |  4
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                          Timestamp                            | 16
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |         Error Estimate        |             SSID              | 24
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                                                               | 28
        |                         MBZ (68 octets)                       |
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                         HMAC (16 octets)                      | 96
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        ~                            TLVs                               ~ 112
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    The HMAC is HMAC-SHA-256 truncated to 16 octets over octets 0-95 (RFC 8762 §4.4), MBZ
    included; STAMP never encrypts.
    """

    seq: int
    timestamp: int
    error_estimate: int
    ssid: int = 0
    hmac: bytes = _ZERO_HMAC
    tlvs: bytes = b""


def encode_stamp_sender_auth(msg: StampSenderAuth) -> bytes:
    _check_hmac("StampSenderAuth", msg.hmac)
    return _pack(
        "StampSenderAuth",
        _STAMP_SENDER_AUTH,
        msg.tlvs,
        msg.seq,
        msg.timestamp,
        msg.error_estimate,
        msg.ssid,
        msg.hmac,
    )


def decode_stamp_sender_auth(data: Buffer) -> StampSenderAuth:
    if len(data) < STAMP_BASE_AUTH:
        raise _truncated("StampSenderAuth", _F_STAMP_SENDER_AUTH, len(data))
    seq, ts, ee, ssid, hmac = _STAMP_SENDER_AUTH.unpack_from(data)
    return StampSenderAuth(seq, ts, ee, ssid, hmac, bytes(data[STAMP_BASE_AUTH:]))


@dataclass(frozen=True, slots=True)
class StampReflectorAuth:
    """STAMP Session-Reflector test packet, authenticated (RFC 8762 §4.3.2, RFC 8972 §3).

    The TWAMP authenticated reflector layout (see `ReflectorAuth`) with the SSID at 24-25 of the
    third word, i.e. octets 26-27, and MBZ 28-31::

         0                   1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                        Sequence Number                        |  0
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                        MBZ (12 octets)                        |  4
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                          Timestamp                            | 16
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |         Error Estimate        |             SSID              | 24
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                             MBZ                               | 28
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                        Receive Timestamp                      | 32
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                        MBZ (8 octets)                         | 40
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                 Session-Sender Sequence Number                | 48
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                        MBZ (12 octets)                        | 52
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                  Session-Sender Timestamp                     | 64
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        | Session-Sender Error Estimate  |        MBZ (6 octets)         | 72
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |Ses-Sender TTL |                MBZ (15 octets)                | 80
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                         HMAC (16 octets)                      | 96
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        ~                            TLVs                               ~ 112
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    """

    seq: int
    timestamp: int
    error_estimate: int
    ssid: int
    receive_timestamp: int
    sender_seq: int
    sender_timestamp: int
    sender_error_estimate: int
    sender_ttl: int
    hmac: bytes = _ZERO_HMAC
    tlvs: bytes = b""


def encode_stamp_reflector_auth(msg: StampReflectorAuth) -> bytes:
    _check_hmac("StampReflectorAuth", msg.hmac)
    return _pack(
        "StampReflectorAuth",
        _STAMP_REFLECTOR_AUTH,
        msg.tlvs,
        msg.seq,
        msg.timestamp,
        msg.error_estimate,
        msg.ssid,
        msg.receive_timestamp,
        msg.sender_seq,
        msg.sender_timestamp,
        msg.sender_error_estimate,
        msg.sender_ttl,
        msg.hmac,
    )


def decode_stamp_reflector_auth(data: Buffer) -> StampReflectorAuth:
    if len(data) < STAMP_BASE_AUTH:
        raise _truncated("StampReflectorAuth", _F_STAMP_REFLECTOR_AUTH, len(data))
    seq, ts, ee, ssid, rts, s_seq, s_ts, s_ee, ttl, hmac = _STAMP_REFLECTOR_AUTH.unpack_from(data)
    tlvs = bytes(data[STAMP_BASE_AUTH:])
    return StampReflectorAuth(seq, ts, ee, ssid, rts, s_seq, s_ts, s_ee, ttl, hmac, tlvs)


# --------------------------------------------------------------------------------------------
# RFC 8972 TLVs


class TlvFlag(enum.IntFlag):
    """Flags octet of an RFC 8972 TLV (RFC 8972 §4). Bits 0x1F are reserved (MBZ)."""

    UNRECOGNIZED = 0x80
    MALFORMED = 0x40
    INTEGRITY = 0x20
    U = UNRECOGNIZED
    M = MALFORMED
    I = INTEGRITY  # noqa: E741 - the RFC's own name for the flag


class TlvType(enum.IntEnum):
    """STAMP TLV Types registered by RFC 8972 §4 (0 and 255 are reserved)."""

    EXTRA_PADDING = 1
    LOCATION = 2
    TIMESTAMP_INFORMATION = 3
    CLASS_OF_SERVICE = 4
    DIRECT_MEASUREMENT = 5
    ACCESS_REPORT = 6
    FOLLOW_UP_TELEMETRY = 7
    HMAC = 8


@dataclass(frozen=True, slots=True)
class Tlv:
    """One STAMP TLV (RFC 8972 §4)::

         0                   1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |STAMP TLV Flags|     Type      |           Length              |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        ~                            Value                              ~
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

    Length counts the Value only. `flags` and `type` stay raw ints so that unknown types and
    reserved flag bits survive a round trip (a reflector copies TLVs it does not understand).
    """

    flags: int
    type: int
    value: bytes


def encode_tlvs(tlvs: Iterable[Tlv]) -> bytes:
    out = bytearray()
    for tlv in tlvs:
        try:
            out += _TLV_HEADER.pack(tlv.flags, tlv.type, len(tlv.value))
        except StructError as exc:
            raise ValueError(f"TLV: a field is out of range: {exc}") from None
        out += tlv.value
    return bytes(out)


def decode_tlvs(data: Buffer) -> tuple[Tlv, ...]:
    """Every TLV in `data` (what follows the 44- or 112-octet base), in order."""
    tlvs = []
    offset, end = 0, len(data)
    while offset < end:
        if end - offset < _TLV_HEADER.size:
            field_name = "Type" if end - offset == 1 else "Length"
            raise DecodeError(
                f"truncated TLV header at offset {offset}", message_type="TLV", field=field_name
            )
        flags, tlv_type, length = _TLV_HEADER.unpack_from(data, offset)
        offset += _TLV_HEADER.size
        if offset + length > end:
            raise DecodeError(
                f"Length {length} at offset {offset - 4} runs past the end ({end} octets)",
                message_type="TLV",
                field="Length",
            )
        tlvs.append(Tlv(flags, tlv_type, bytes(data[offset : offset + length])))
        offset += length
    return tuple(tlvs)


# --------------------------------------------------------------------------------------------
# Test formats and the reflect transform


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
    """Build the plaintext reply to a plaintext Session-Sender packet (spec §5.7 step 3).

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
    STAMP reflector answers a 41-octet TWAMP Light request with 44 octets (spec §11 item 17).
    """
    if fmt.stamp:
        return decode_stamp_reflector(data)  # TestFormat refuses authenticated STAMP
    if fmt.authenticated:
        return decode_reflector_auth(data, dscp_ecn=fmt.dscp_ecn)
    return decode_reflector_open(data, dscp_ecn=fmt.dscp_ecn)
