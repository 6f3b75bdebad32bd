"""Property tests for twamp.wire.testpackets and testformat: round trips, fuzzing, reflect."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from twamp.constants import TestMode
from twamp.errors import ProtocolError
from twamp.wire.testformat import (
    TestFormat,
    parse_reflection,
    parse_sender,
    reflect,
    write_transmit_timestamp,
)
from twamp.wire.testpackets import (
    ReflectorAuth,
    ReflectorOpen,
    SenderAuth,
    SenderOpen,
    StampReflector,
    StampReflectorAuth,
    StampSender,
    StampSenderAuth,
    Tlv,
    decode_reflector_auth,
    decode_reflector_open,
    decode_sender_auth,
    decode_sender_open,
    decode_stamp_reflector,
    decode_stamp_reflector_auth,
    decode_stamp_sender,
    decode_stamp_sender_auth,
    decode_tlvs,
    encode_reflector_auth,
    encode_reflector_open,
    encode_sender_auth,
    encode_sender_open,
    encode_stamp_reflector,
    encode_stamp_reflector_auth,
    encode_stamp_sender,
    encode_stamp_sender_auth,
    encode_tlvs,
)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 0xFFFFFFFFFFFFFFFF)
hmacs = st.binary(min_size=16, max_size=16)
tails = st.binary(max_size=80)


@given(u32, u64, u16, tails, st.booleans())
def test_sender_open_round_trip(
    seq: int, ts: int, ee: int, padding: bytes, symmetrical: bool
) -> None:
    msg = SenderOpen(seq, ts, ee, padding)
    wire = encode_sender_open(msg, symmetrical=symmetrical)
    assert len(wire) == (41 if symmetrical else 14) + len(padding)
    assert decode_sender_open(wire, symmetrical=symmetrical) == msg


@given(u32, u64, u16, hmacs, tails, st.booleans())
def test_sender_auth_round_trip(
    seq: int, ts: int, ee: int, hmac: bytes, padding: bytes, symmetrical: bool
) -> None:
    msg = SenderAuth(seq, ts, ee, hmac, padding)
    wire = encode_sender_auth(msg, symmetrical=symmetrical)
    assert len(wire) == (112 if symmetrical else 48) + len(padding)
    assert wire[32:48] == hmac
    assert decode_sender_auth(wire, symmetrical=symmetrical) == msg


reflector_fields = st.tuples(u32, u64, u16, u64, u32, u64, u16, u8)
Fields8 = tuple[int, int, int, int, int, int, int, int]
Fields5 = tuple[int, int, int, int, int]


@given(reflector_fields, u8, tails, st.booleans())
def test_reflector_open_round_trip(
    fields: Fields8, tos: int, padding: bytes, dscp_ecn: bool
) -> None:
    msg = ReflectorOpen(*fields, s_dscp_ecn=tos if dscp_ecn else 0, padding=padding)
    wire = encode_reflector_open(msg, dscp_ecn=dscp_ecn)
    assert len(wire) == (44 if dscp_ecn else 41) + len(padding)
    assert decode_reflector_open(wire, dscp_ecn=dscp_ecn) == msg


@given(reflector_fields, u8, hmacs, tails, st.booleans())
def test_reflector_auth_round_trip(
    fields: Fields8, tos: int, hmac: bytes, padding: bytes, dscp_ecn: bool
) -> None:
    msg = ReflectorAuth(*fields, s_dscp_ecn=tos if dscp_ecn else 0, hmac=hmac, padding=padding)
    wire = encode_reflector_auth(msg, dscp_ecn=dscp_ecn)
    assert len(wire) == 112 + len(padding)
    assert wire[96:112] == hmac
    assert decode_reflector_auth(wire, dscp_ecn=dscp_ecn) == msg


@given(u32, u64, u16, u16, tails)
def test_stamp_sender_round_trip(seq: int, ts: int, ee: int, ssid: int, tlvs: bytes) -> None:
    msg = StampSender(seq, ts, ee, ssid, tlvs)
    wire = encode_stamp_sender(msg)
    assert len(wire) == 44 + len(tlvs)
    assert decode_stamp_sender(wire) == msg


@given(u32, u64, u16, u16, hmacs, tails)
def test_stamp_sender_auth_round_trip(
    seq: int, ts: int, ee: int, ssid: int, hmac: bytes, tlvs: bytes
) -> None:
    msg = StampSenderAuth(seq, ts, ee, ssid, hmac, tlvs)
    wire = encode_stamp_sender_auth(msg)
    assert len(wire) == 112 + len(tlvs)
    assert wire[96:112] == hmac
    assert decode_stamp_sender_auth(wire) == msg


@given(u32, u64, u16, u16, st.tuples(u64, u32, u64, u16, u8), tails)
def test_stamp_reflector_round_trip(
    seq: int, ts: int, ee: int, ssid: int, rest: Fields5, tlvs: bytes
) -> None:
    msg = StampReflector(seq, ts, ee, ssid, *rest, tlvs=tlvs)
    wire = encode_stamp_reflector(msg)
    assert len(wire) == 44 + len(tlvs)
    assert decode_stamp_reflector(wire) == msg


@given(u32, u64, u16, u16, st.tuples(u64, u32, u64, u16, u8), hmacs, tails)
def test_stamp_reflector_auth_round_trip(
    seq: int, ts: int, ee: int, ssid: int, rest: Fields5, hmac: bytes, tlvs: bytes
) -> None:
    msg = StampReflectorAuth(seq, ts, ee, ssid, *rest, hmac=hmac, tlvs=tlvs)
    wire = encode_stamp_reflector_auth(msg)
    assert len(wire) == 112 + len(tlvs)
    assert decode_stamp_reflector_auth(wire) == msg


tlv_lists = st.lists(st.builds(Tlv, u8, u8, st.binary(max_size=40)), max_size=6)


@given(tlv_lists)
def test_tlvs_round_trip(tlvs: list[Tlv]) -> None:
    wire = encode_tlvs(tlvs)
    assert len(wire) == sum(4 + len(t.value) for t in tlvs)
    assert decode_tlvs(wire) == tuple(tlvs)


# --------------------------------------------------------------------------------------------
# Fuzzing: any bytes give a packet or a ProtocolError, never anything else.

DECODERS: list[tuple[Callable[..., Any], dict[str, bool], int]] = [
    (decode_sender_open, {}, 14),
    (decode_sender_open, {"symmetrical": True}, 41),
    (decode_sender_auth, {}, 48),
    (decode_sender_auth, {"symmetrical": True}, 112),
    (decode_reflector_open, {}, 41),
    (decode_reflector_open, {"dscp_ecn": True}, 44),
    (decode_reflector_auth, {}, 112),
    (decode_reflector_auth, {"dscp_ecn": True}, 112),
    (decode_stamp_sender, {}, 44),
    (decode_stamp_reflector, {}, 44),
    (decode_stamp_sender_auth, {}, 112),
    (decode_stamp_reflector_auth, {}, 112),
]

FORMATS = [
    TestFormat(mode, symmetrical, dscp_ecn)
    for mode in TestMode
    for symmetrical in (False, True)
    for dscp_ecn in (False, True)
] + [TestFormat(TestMode.OPEN, stamp=True)]


@given(st.binary(max_size=160))
def test_fuzz_decoders(data: bytes) -> None:
    for decoder, kw, header in DECODERS:
        try:
            decoder(data, **kw)
        except ProtocolError:
            assert len(data) < header
        else:
            assert len(data) >= header  # MBZ is ignored, so any long-enough input decodes


@given(st.binary(max_size=160))
def test_fuzz_tlvs(data: bytes) -> None:
    try:
        tlvs = decode_tlvs(data)
    except ProtocolError:
        return
    assert encode_tlvs(tlvs) == data


@given(st.binary(max_size=160), st.sampled_from(FORMATS))
def test_fuzz_parse_and_reflect(data: bytes, fmt: TestFormat) -> None:
    for parse, header in (
        (parse_sender, fmt.sender_header),
        (parse_reflection, fmt.reflector_header),
    ):
        try:
            parse(fmt, data)
        except ProtocolError:
            assert len(data) < header
        else:
            assert len(data) >= header
    try:
        reply = reflect(fmt, data, seq=None, receive_timestamp=0, error_estimate=1, sender_ttl=255)
    except ProtocolError:
        assert len(data) < fmt.min_request_length
    else:
        assert len(reply) == fmt.reply_length(len(data))


# --------------------------------------------------------------------------------------------
# The reflect transform


@st.composite
def requests(draw: st.DrawFn) -> tuple[TestFormat, bytes]:
    fmt = draw(st.sampled_from(FORMATS))
    extra = draw(st.integers(0, 120))
    return fmt, draw(
        st.binary(min_size=fmt.sender_header + extra, max_size=fmt.sender_header + extra)
    )


@given(requests(), st.one_of(st.none(), u32), u64, u16, u8, u8, u64, u16)
def test_reflect_property(
    req: tuple[TestFormat, bytes],
    seq: int | None,
    t2: int,
    ee: int,
    ttl: int,
    tos: int,
    t3: int,
    ee3: int,
) -> None:
    fmt, request = req
    reply = reflect(
        fmt,
        request,
        seq=seq,
        receive_timestamp=t2,
        error_estimate=ee,
        sender_ttl=ttl,
        s_dscp_ecn=tos,
    )
    assert len(reply) == fmt.reply_length(len(request))
    sent: Any = parse_sender(fmt, request)
    got: Any = parse_reflection(fmt, reply)
    assert got.seq == (sent.seq if seq is None else seq)
    assert got.timestamp == 0  # until write_transmit_timestamp
    assert got.error_estimate == ee
    assert got.receive_timestamp == t2
    assert (got.sender_seq, got.sender_timestamp, got.sender_error_estimate) == (
        sent.seq,
        sent.timestamp,
        sent.error_estimate,
    )
    assert got.sender_ttl == ttl
    if fmt.authenticated:
        assert got.hmac == bytes(16)
    if fmt.stamp:
        assert got.ssid == sent.ssid
        assert got.tlvs == sent.tlvs
    else:
        assert got.s_dscp_ecn == (tos if fmt.dscp_ecn else 0)
        assert got.padding == sent.padding[: len(got.padding)]
        assert len(got.padding) == max(0, len(request) - fmt.reflector_header)
    write_transmit_timestamp(reply, fmt, t3, ee3)
    after: Any = parse_reflection(fmt, reply)
    assert (after.timestamp, after.error_estimate) == (t3, ee3)
    assert after == type(after)(**{**_fields(got), "timestamp": t3, "error_estimate": ee3})


def _fields(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}


@given(st.binary(min_size=14, max_size=43))
def test_reflect_short_stamp_request_gets_44(request: bytes) -> None:
    # RFC 8762 §4.6: a TWAMP Light request shorter than 44 octets gets the 44-octet base packet.
    fmt = TestFormat(TestMode.OPEN, stamp=True)
    reply = reflect(fmt, request, seq=None, receive_timestamp=5, error_estimate=1, sender_ttl=64)
    assert len(reply) == 44
    assert reply[0:4] == request[0:4]
    assert reply[24:38] == request[0:14]
    assert reply[14:16] == (request[14:16] if len(request) >= 16 else bytes(2))
    assert reply[41:44] == bytes(3)
