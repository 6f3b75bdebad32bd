"""TWAMP-Test and STAMP packets: one declaration per layout, with its encoder and decoder.

Layouts: RFC 5357 §4.1.2 and §4.2.1 (TWAMP), RFC 6038 §4.2 (Symmetrical Size), RFC 7750 §2.2.1
(DSCP and ECN), RFC 8762 §4.2-4.3 and RFC 8972 (STAMP, SSID, TLVs). Offsets are 0-based from the
first octet of the UDP payload.

Test packets, unlike control messages, have a variable length: a base header followed by Packet
Padding (TWAMP) or TLVs (STAMP). Decoders therefore require *at least* the base length and keep
the rest as raw bytes. MBZ octets are written as zero and ignored on receipt (RFC 4656 §3.1), so a
decoder only fails on a packet that is too short.

Packets in authenticated and encrypted modes are handled here in *plaintext*: `twamp.crypto`
decrypts the covered octets before decoding and fills in the HMAC after encoding. Timestamps and
Error Estimates stay the raw wire integers (`twamp.timestamps` converts them).

`twamp.wire.testformat` derives a session's sizes and offsets from these layouts and holds the
per-packet transforms (reflect, build a sender packet).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from struct import Struct
from struct import error as StructError

from ..constants import (
    HMAC_LEN,
    REFLECTOR_BASE_AUTH,
    STAMP_BASE_AUTH,
    STAMP_BASE_OPEN,
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
    "Tlv",
    "TlvFlag",
    "TlvType",
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
    header as long as the 112-octet reflector.
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
    Traffic Class octet, unchanged (RFC 7750 §2.2.1), and must be 0 in the plain layout, which has
    no room for it.
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

    The header is 112 octets as the figure sums, not the 104 of the RFC text (RFC 5357 §4.2.1;
    owamp, RFC 7750 and STAMP agree on 112). With RFC 7750 (`dscp_ecn=True`) S-DSCP-ECN takes
    octet 81 and the size is unchanged.
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
