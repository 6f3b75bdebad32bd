"""TWAMP-Control codec: known-answer vectors, framing, errors, and the owamp captures (RFC 5357 §3).

Every hex vector below was written by hand from the figures of RFC 4656 §3, RFC 5357 §3 and RFC
5938 §3, one field per string; none was produced by the encoder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import pytest

from twamp.constants import AcceptCode, Mode
from twamp.errors import DecodeError, UnsupportedError
from twamp.wire import control as c
from twamp.wire.buffer import ReceiveBuffer


def h(*parts: str) -> bytes:
    return bytes.fromhex("".join(parts))


SID_A = bytes([0xA1]) * 16
SID_B = bytes([0xB2]) * 16
SID_C = bytes([0xC3]) * 16
OWAMP_SID = h("7f000001 eeae9633 5276427c 5f6ff6ff")


@dataclass(frozen=True)
class Vector:
    id: str
    msg: Any
    wire: bytes
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes | bytearray | memoryview], Any]
    # How a reader learns the length from the first 16 octets (RFC 5357 §3 framing).
    length: Callable[[bytes], int]
    mbz: tuple[range, ...] = ()


def fixed(n: int) -> Callable[[bytes], int]:
    return lambda _first: n


VECTORS = [
    Vector(
        "greeting",
        c.ServerGreeting(
            modes=Mode(15), challenge=bytes(range(16)), salt=bytes(range(16, 32)), count=2048
        ),
        h(
            "00" * 12,
            "0000000f",
            "000102030405060708090a0b0c0d0e0f",
            "101112131415161718191a1b1c1d1e1f",
            "00000800",
            "00" * 12,
        ),
        c.encode_server_greeting,
        c.decode_server_greeting,
        fixed(64),
        (range(0, 12), range(52, 64)),
    ),
    Vector(
        "greeting-open-only-count-0",
        # Count is only checked when a secure mode is offered; bit 16 is unassigned and kept.
        c.ServerGreeting(modes=Mode(0x10001), challenge=b"\xaa" * 16, salt=b"\x55" * 16, count=0),
        h("00" * 12, "00010001", "aa" * 16, "55" * 16, "00000000", "00" * 12),
        c.encode_server_greeting,
        c.decode_server_greeting,
        fixed(64),
        (range(0, 12), range(52, 64)),
    ),
    Vector(
        "set-up-response-auth",
        c.SetUpResponse(
            mode=Mode.AUTHENTICATED,
            key_id=b"twamp",
            token=bytes(range(0x40, 0x80)),
            client_iv=b"\xc0" * 16,
        ),
        h(
            "00000002",
            "7477616d70",
            "00" * 75,
            "404142434445464748494a4b4c4d4e4f",
            "505152535455565758595a5b5c5d5e5f",
            "606162636465666768696a6b6c6d6e6f",
            "707172737475767778797a7b7c7d7e7f",
            "c0" * 16,
        ),
        c.encode_set_up_response,
        c.decode_set_up_response,
        fixed(164),
    ),
    Vector(
        "set-up-response-open",
        c.SetUpResponse(mode=Mode.UNAUTHENTICATED | Mode.REFLECT_OCTETS),
        h("00000021", "00" * 160),
        c.encode_set_up_response,
        c.decode_set_up_response,
        fixed(164),
    ),
    Vector(
        "server-start",
        c.ServerStart(
            accept=AcceptCode.OK, server_iv=bytes(range(0xA0, 0xB0)), start_time=0x0123456789ABCDEF
        ),
        h("00" * 15, "00", "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf", "0123456789abcdef", "00" * 8),
        c.encode_server_start,
        c.decode_server_start,
        fixed(48),
        (range(0, 15), range(40, 48)),
    ),
    Vector(
        "server-start-refused",
        c.ServerStart(accept=AcceptCode.NOT_SUPPORTED, server_iv=bytes(16), start_time=0),
        h("00" * 15, "03", "00" * 16, "00" * 8, "00" * 8),
        c.encode_server_start,
        c.decode_server_start,
        fixed(48),
        (range(0, 15), range(40, 48)),
    ),
    Vector(
        "request-ipv4-dscp-ef",
        c.RequestTWSession(
            sender_address=IPv4Address("192.0.2.1"),
            receiver_address=IPv4Address("198.51.100.7"),
            sender_port=9521,
            receiver_port=862,
            padding_length=27,
            start_time=0xEEAE963400000000,
            timeout=2 << 32,
            type_p=46 << 24,
        ),
        h(
            "05",  # Request-TW-Session
            "04",  # IPVN 4
            "00 00",  # Conf-Sender, Conf-Receiver
            "00000000 00000000",  # Schedule Slots, Packets
            "2531 035e",  # ports 9521, 862
            "c0000201",
            "00" * 12,
            "c6336407",
            "00" * 12,
            "00" * 16,  # SID
            "0000001b",  # Padding Length 27, network order
            "eeae963400000000",
            "00000002 00000000",  # Timeout 2 s
            "2e000000",  # Type-P: DSCP 46 in octet 84
            "0000 0000 00000000",
            "00" * 16,
        ),
        c.encode_request_tw_session,
        c.decode_request_tw_session,
        c.client_command_length,
        (range(20, 32), range(36, 48), range(92, 96)),
    ),
    Vector(
        "request-ipv6-reflect-octets",
        c.RequestTWSession(
            sender_address=IPv6Address("2001:db8::1"),
            receiver_address=IPv6Address("2001:db8::2"),
            sender_port=50000,
            receiver_port=50001,
            padding_length=1000,
            start_time=0x0102030405060708,
            timeout=0x0000000180000000,
            octets_to_reflect=0xBEEF,
            padding_to_reflect=16,
            hmac=b"\x99" * 16,
        ),
        h(
            "05 06 00 00",
            "00000000 00000000",
            "c350 c351",
            "20010db8000000000000000000000001",
            "20010db8000000000000000000000002",
            "00" * 16,
            "000003e8",
            "0102030405060708",
            "00000001 80000000",
            "00000000",
            "beef 0010",  # RFC 6038 octets 88-91
            "00000000",
            "99" * 16,
        ),
        c.encode_request_tw_session,
        c.decode_request_tw_session,
        c.client_command_length,
        (range(92, 96),),
    ),
    Vector(
        "request-must-be-zero-fields-reported",
        # The decoder reports these; the Server answers them with Accept 3 (RFC 5357 §3.5).
        c.RequestTWSession(
            sender_address=IPv4Address("0.0.0.0"),
            receiver_address=IPv4Address("0.0.0.0"),
            sender_port=0,
            receiver_port=0,
            padding_length=0,
            start_time=0,
            timeout=0,
            type_p=0x40000000 | (0x1234 << 14),
            conf_sender=1,
            conf_receiver=2,
            schedule_slots=3,
            num_packets=4,
            sid=SID_A,
        ),
        h(
            "05 04 01 02",
            "00000003 00000004",
            "0000 0000",
            "00" * 32,
            "a1" * 16,
            "00000000",
            "00" * 16,
            "448d0000",  # 0x40000000 | 0x1234 << 14
            "00" * 8,
            "00" * 16,
        ),
        c.encode_request_tw_session,
        c.decode_request_tw_session,
        c.client_command_length,
        (range(20, 32), range(36, 48), range(92, 96)),
    ),
    Vector(
        "accept-session",
        c.AcceptSession(
            accept=AcceptCode.OK,
            port=19312,
            sid=OWAMP_SID,
            reflected_octets=0xBEEF,
            server_octets=0x1234,
            hmac=b"\x5a" * 16,
        ),
        h(
            "00",
            "00",
            "4b70",
            "7f000001eeae96335276427c5f6ff6ff",
            "beef",
            "1234",
            "00" * 8,
            "5a" * 16,
        ),
        c.encode_accept_session,
        c.decode_accept_session,
        fixed(48),
        (range(1, 2), range(24, 32)),
    ),
    Vector(
        "accept-session-refused",
        c.AcceptSession(accept=AcceptCode.TEMPORARY_RESOURCE_LIMIT, port=0, sid=bytes(16)),
        h("05", "00", "0000", "00" * 16, "0000", "0000", "00" * 8, "00" * 16),
        c.encode_accept_session,
        c.decode_accept_session,
        fixed(48),
        (range(1, 2), range(24, 32)),
    ),
    Vector(
        "start-sessions",
        c.StartSessions(hmac=bytes(range(16))),
        h("02", "00" * 15, "000102030405060708090a0b0c0d0e0f"),
        c.encode_start_sessions,
        c.decode_start_sessions,
        c.client_command_length,
        (range(1, 16),),
    ),
    Vector(
        "start-ack",
        c.StartAck(accept=AcceptCode.OK),
        h("00", "00" * 15, "00" * 16),
        c.encode_start_ack,
        c.decode_start_ack,
        fixed(32),
        (range(1, 16),),
    ),
    Vector(
        "start-ack-refused",
        c.StartAck(accept=AcceptCode.PERMANENT_RESOURCE_LIMIT, hmac=b"\xff" * 16),
        h("04", "00" * 15, "ff" * 16),
        c.encode_start_ack,
        c.decode_start_ack,
        fixed(32),
        (range(1, 16),),
    ),
    Vector(
        "stop-sessions",
        c.StopSessions(accept=AcceptCode.OK, num_sessions=1),
        h("03", "00", "0000", "00000001", "00" * 8, "00" * 16),
        c.encode_stop_sessions,
        c.decode_stop_sessions,
        c.client_command_length,
        (range(2, 4), range(8, 16)),
    ),
    Vector(
        "stop-sessions-failure",
        c.StopSessions(accept=AcceptCode.FAILURE, num_sessions=0x01020304, hmac=b"\x42" * 16),
        h("03", "01", "0000", "01020304", "00" * 8, "42" * 16),
        c.encode_stop_sessions,
        c.decode_stop_sessions,
        c.client_command_length,
        (range(2, 4), range(8, 16)),
    ),
    Vector(
        "start-n-sessions-1",
        c.StartNSessions(sids=(SID_A,)),
        h("07", "00" * 11, "00000001", "a1" * 16, "00" * 16),
        c.encode_start_n_sessions,
        c.decode_start_n_sessions,
        c.client_command_length,
        (range(1, 12),),
    ),
    Vector(
        "start-n-sessions-3",
        c.StartNSessions(sids=(SID_A, SID_B, SID_C), hmac=b"\x01" * 16),
        h("07", "00" * 11, "00000003", "a1" * 16, "b2" * 16, "c3" * 16, "01" * 16),
        c.encode_start_n_sessions,
        c.decode_start_n_sessions,
        c.client_command_length,
        (range(1, 12),),
    ),
    Vector(
        "start-n-ack",
        c.StartNAck(accept=AcceptCode.TEMPORARY_RESOURCE_LIMIT, sids=(SID_B,)),
        h("08", "05", "00" * 10, "00000001", "b2" * 16, "00" * 16),
        c.encode_start_n_ack,
        c.decode_start_n_ack,
        c.n_message_length,
        (range(2, 12),),
    ),
    Vector(
        "stop-n-sessions",
        c.StopNSessions(sids=(SID_A, SID_B)),
        h("09", "00" * 11, "00000002", "a1" * 16, "b2" * 16, "00" * 16),
        c.encode_stop_n_sessions,
        c.decode_stop_n_sessions,
        c.client_command_length,
        (range(1, 12),),
    ),
    Vector(
        "stop-n-ack",
        c.StopNAck(accept=AcceptCode.OK, sids=(SID_C,), hmac=b"\x77" * 16),
        h("0a", "00", "00" * 10, "00000001", "c3" * 16, "77" * 16),
        c.encode_stop_n_ack,
        c.decode_stop_n_ack,
        c.n_message_length,
        (range(2, 12),),
    ),
]

by_id = pytest.mark.parametrize("v", VECTORS, ids=[v.id for v in VECTORS])


def test_every_message_class_has_a_vector() -> None:
    classes = {
        c.ServerGreeting,
        c.SetUpResponse,
        c.ServerStart,
        c.RequestTWSession,
        c.AcceptSession,
        c.StartSessions,
        c.StartAck,
        c.StopSessions,
        c.StartNSessions,
        c.StartNAck,
        c.StopNSessions,
        c.StopNAck,
    }
    assert {type(v.msg) for v in VECTORS} == classes


@by_id
def test_encode(v: Vector) -> None:
    assert v.encode(v.msg) == v.wire


@by_id
def test_decode(v: Vector) -> None:
    assert v.decode(v.wire) == v.msg
    assert v.decode(bytearray(v.wire)) == v.msg
    assert v.decode(memoryview(v.wire)) == v.msg


@by_id
def test_decoded_message_has_decoded_types(v: Vector) -> None:
    msg = v.decode(v.wire)
    if hasattr(msg, "accept"):
        assert type(msg.accept) is AcceptCode
    for name in ("modes", "mode"):
        if hasattr(msg, name):
            assert type(getattr(msg, name)) is Mode
    for name in ("challenge", "salt", "sid", "hmac", "token", "client_iv", "server_iv", "key_id"):
        if hasattr(msg, name):
            assert type(getattr(msg, name)) is bytes


def read_one(buf: ReceiveBuffer, length: Callable[[bytes], int]) -> bytes | None:
    """h11-style reader: None means "need more data"."""
    first = buf.peek(16)
    if first is None:
        return None
    return buf.extract(length(first))


@by_id
def test_buffer_whole(v: Vector) -> None:
    buf = ReceiveBuffer()
    buf.feed(v.wire)
    raw = read_one(buf, v.length)
    assert raw == v.wire
    assert v.decode(raw) == v.msg
    assert len(buf) == 0
    assert read_one(buf, v.length) is None


@by_id
def test_buffer_one_octet_at_a_time(v: Vector) -> None:
    buf = ReceiveBuffer()
    got = []
    for i in range(len(v.wire)):
        buf.feed(v.wire[i : i + 1])
        raw = read_one(buf, v.length)
        if raw is not None:
            got.append((i, raw))
    # The message appears exactly when its last octet arrives, not before.
    assert got == [(len(v.wire) - 1, v.wire)]
    assert v.decode(got[0][1]) == v.msg
    assert len(buf) == 0


@by_id
def test_buffer_trailing_octets_remain(v: Vector) -> None:
    trailing = h("deadbeef" * 5)
    buf = ReceiveBuffer()
    buf.feed(v.wire + trailing)
    raw = read_one(buf, v.length)
    assert raw is not None
    assert v.decode(raw) == v.msg
    assert len(buf) == len(trailing)
    assert buf.extract(len(trailing)) == trailing


@pytest.mark.parametrize("v", [v for v in VECTORS if v.mbz], ids=lambda v: v.id)
def test_mbz_garbage_is_ignored(v: Vector) -> None:
    dirty = bytearray(v.wire)
    for r in v.mbz:
        for i in r:
            dirty[i] = 0xFF
    assert bytes(dirty) != v.wire
    assert v.decode(bytes(dirty)) == v.msg
    assert v.encode(v.decode(bytes(dirty))) == v.wire  # encoding writes the zeros back


@by_id
def test_short_and_long_input(v: Vector) -> None:
    name = type(v.msg).__name__
    for bad in (b"", v.wire[:-1], v.wire + b"\x00", v.wire + bytes(16)):
        with pytest.raises(DecodeError) as info:
            v.decode(bad)
        assert info.value.message_type == name, bad
        assert info.value.field == "length", bad


def test_struct_sizes() -> None:
    assert c._SERVER_GREETING.size == c.SERVER_GREETING_SIZE == 64
    assert c._SET_UP_RESPONSE.size == c.SET_UP_RESPONSE_SIZE == 164
    assert c._SERVER_START.size == c.SERVER_START_SIZE == 48
    assert c._REQUEST_TW_SESSION.size == c.REQUEST_TW_SESSION_SIZE == 112
    assert c._ACCEPT_SESSION.size == c.ACCEPT_SESSION_SIZE == 48
    assert c._START_SESSIONS.size == c.START_SESSIONS_SIZE == 32
    assert c._START_ACK.size == c.START_ACK_SIZE == 32
    assert c._STOP_SESSIONS.size == c.STOP_SESSIONS_SIZE == 32
    assert c._N_COMMAND_HEAD.size == c._N_ACK_HEAD.size == 16
    assert c.N_MESSAGE_BASE_SIZE == 32


# ---------------------------------------------------------------------------------------------
# Impossible content


def with_octet(wire: bytes, offset: int, value: int) -> bytes:
    out = bytearray(wire)
    out[offset] = value
    return bytes(out)


V = {v.id: v for v in VECTORS}


@pytest.mark.parametrize(
    ("vid", "right", "name"),
    [
        ("request-ipv4-dscp-ef", 5, "RequestTWSession"),
        ("start-sessions", 2, "StartSessions"),
        ("stop-sessions", 3, "StopSessions"),
        ("start-n-sessions-1", 7, "StartNSessions"),
        ("start-n-ack", 8, "StartNAck"),
        ("stop-n-sessions", 9, "StopNSessions"),
        ("stop-n-ack", 10, "StopNAck"),
    ],
)
def test_wrong_command_octet(vid: str, right: int, name: str) -> None:
    v = V[vid]
    assert v.wire[0] == right
    for wrong in [*range(13), 255]:
        if wrong == right:
            continue
        with pytest.raises(DecodeError) as info:
            v.decode(with_octet(v.wire, 0, wrong))
        assert (info.value.message_type, info.value.field) == (name, "command")


@pytest.mark.parametrize("octet1", [0x00, 0x05, 0x0F, 0x40, 0x60])
def test_impossible_ipvn(octet1: int) -> None:
    v = V["request-ipv4-dscp-ef"]
    with pytest.raises(DecodeError) as info:
        v.decode(with_octet(v.wire, 1, octet1))
    assert (info.value.message_type, info.value.field) == ("RequestTWSession", "ipvn")


def test_every_value_of_octet_1_in_a_request() -> None:
    v = V["request-ipv6-reflect-octets"]
    for value in range(256):
        wire = with_octet(v.wire, 1, value)
        if value & 0x0F in (4, 6):
            assert v.decode(wire).ipvn == value & 0x0F
        else:
            with pytest.raises(DecodeError) as info:
                v.decode(wire)
            assert info.value.field == "ipvn"


ACCEPT_OFFSET = {
    "ServerStart": 15,
    "AcceptSession": 0,
    "StartAck": 0,
    "StopSessions": 1,
    "StartNAck": 1,
    "StopNAck": 1,
}


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: v.id)
def test_every_value_of_the_first_block_octets(v: Vector) -> None:
    """Exhaustive over octets 0-15: a message or a DecodeError, never another exception; and a
    decoded message re-encodes to the input, except where the receiver normalises: MBZ octets
    to 0, IPVN's MBZ high nibble to 0, reserved Accept values to 1 (RFC 4656 §3.3)."""
    name = type(v.msg).__name__
    for offset in range(16):
        for value in range(256):
            wire = with_octet(v.wire, offset, value)
            try:
                msg = v.decode(wire)
            except DecodeError as exc:
                assert exc.message_type == name
                continue
            expected = bytearray(wire)
            if any(offset in r for r in v.mbz):
                expected[offset] = 0
            elif name == "RequestTWSession" and offset == 1:
                expected[1] &= 0x0F
                if expected[1] == 4:  # IPv4 reads 4 address octets; the other 12 are MBZ
                    expected[20:32] = expected[36:48] = bytes(12)
            elif ACCEPT_OFFSET.get(name) == offset and value > max(AcceptCode):
                expected[offset] = AcceptCode.FAILURE
            assert v.encode(msg) == bytes(expected), (offset, value)


def test_ipvn_high_nibble_is_mbz() -> None:
    v4, v6 = V["request-ipv4-dscp-ef"], V["request-ipv6-reflect-octets"]
    assert v4.decode(with_octet(v4.wire, 1, 0xF4)) == v4.msg
    assert v6.decode(with_octet(v6.wire, 1, 0x16)) == v6.msg


def test_ipvn_6_reads_all_16_address_octets() -> None:
    v = V["request-ipv4-dscp-ef"]
    msg = v.decode(with_octet(v.wire, 1, 0x06))
    assert msg.sender_address == IPv6Address("c000:0201::")
    assert msg.ipvn == 6


@pytest.mark.parametrize(
    ("vid", "name"),
    [
        ("start-n-sessions-1", "StartNSessions"),
        ("start-n-ack", "StartNAck"),
        ("stop-n-sessions", "StopNSessions"),
        ("stop-n-ack", "StopNAck"),
    ],
)
def test_n_message_errors(vid: str, name: str) -> None:
    v = V[vid]
    head = v.wire[:12]
    one_more = f"{len(v.msg.sids) + 1:08x}"
    cases = {
        # N = 0 in an otherwise 32-octet message: RFC 5938 requires N >= 1.
        head + h("00000000") + bytes(16): "num_sessions",
        head + h("00000000") + v.wire[16:]: "num_sessions",
        head + h("00000401") + v.wire[16:]: "num_sessions",  # MAX_N_SESSIONS + 1
        head + h("ffffffff") + v.wire[16:]: "num_sessions",
        # N disagrees with the number of SIDs present.
        head + h(one_more) + v.wire[16:]: "length",
        v.wire[:16]: "length",
        v.wire[:5]: "length",
    }
    for bad, field in cases.items():
        with pytest.raises(DecodeError) as info:
            v.decode(bad)
        assert (info.value.message_type, info.value.field) == (name, field), bad.hex()


@pytest.mark.parametrize("count", [0, 1, 1023])
@pytest.mark.parametrize("modes", [2, 4, 8, 15, 0x8000000C])
def test_greeting_count_below_minimum_with_secure_modes(count: int, modes: int) -> None:
    wire = h("00" * 12, f"{modes:08x}", "00" * 32, f"{count:08x}", "00" * 12)
    with pytest.raises(DecodeError) as info:
        c.decode_server_greeting(wire)
    assert (info.value.message_type, info.value.field) == ("ServerGreeting", "count")


@pytest.mark.parametrize("modes", [0, 1, 16 | 1, 0x80000001])
def test_greeting_count_ignored_without_secure_modes(modes: int) -> None:
    wire = h("00" * 12, f"{modes:08x}", "00" * 32, "00000000", "00" * 12)
    assert c.decode_server_greeting(wire).count == 0


def test_greeting_count_not_power_of_two_is_accepted() -> None:
    # RFC 4656 says "a power of 2"; only the minimum matters for the key's strength.
    wire = h("00" * 12, "00000002", "00" * 32, "00000bb8", "00" * 12)
    assert c.decode_server_greeting(wire).count == 3000


# ---------------------------------------------------------------------------------------------
# Modes and Accept values as received


def test_unknown_mode_bits_are_kept() -> None:
    greeting = h("00" * 12, "fffffc0f", "00" * 32, "00000400", "00" * 12)
    msg = c.decode_server_greeting(greeting)
    assert int(msg.modes) == 0xFFFFFC0F
    assert Mode.ENCRYPTED in msg.modes
    assert Mode.known(msg.modes) == Mode(15)  # bits 4-9 are clear in 0xFFFFFC0F
    assert c.encode_server_greeting(msg) == greeting

    setup = h("80000001", "00" * 160)
    resp = c.decode_set_up_response(setup)
    assert int(resp.mode) == 0x80000001
    assert resp.mode.security == Mode.UNAUTHENTICATED
    assert c.encode_set_up_response(resp) == setup


@pytest.mark.parametrize("value", [7, 8, 100, 255])
def test_reserved_accept_values_decode_as_failure(value: int) -> None:
    start = h("00" * 15, f"{value:02x}", "00" * 32)
    accept = h(f"{value:02x}", "00" * 47)
    ack = h(f"{value:02x}", "00" * 31)
    stop = h("03", f"{value:02x}", "00" * 30)
    n_ack = h("08", f"{value:02x}", "00" * 10, "00000001", "00" * 32)
    assert c.decode_server_start(start).accept is AcceptCode.FAILURE
    assert c.decode_accept_session(accept).accept is AcceptCode.FAILURE
    assert c.decode_start_ack(ack).accept is AcceptCode.FAILURE
    assert c.decode_stop_sessions(stop).accept is AcceptCode.FAILURE
    assert c.decode_start_n_ack(n_ack).accept is AcceptCode.FAILURE


def test_known_accept_values_are_kept() -> None:
    for value in range(7):
        ack = h(f"{value:02x}", "00" * 31)
        assert c.decode_start_ack(ack).accept == value


# ---------------------------------------------------------------------------------------------
# Field properties and constructors


def test_type_p_dscp_ef_is_octet_84() -> None:
    v = V["request-ipv4-dscp-ef"]
    assert v.wire[84] == 0x2E
    assert v.msg.dscp == 46
    assert v.msg.phb_id is None
    assert c.type_p_for_dscp(46) == 0x2E000000
    assert c.type_p_for_dscp(0) == 0


def test_type_p_phb_id() -> None:
    msg = V["request-must-be-zero-fields-reported"].msg
    assert msg.phb_id == 0x1234
    assert msg.dscp is None
    assert c.type_p_for_phb_id(0x1234) == 0x448D0000


@pytest.mark.parametrize("type_p", [0x80000000, 0xC0000000, 0xFFFFFFFF])
def test_type_p_reserved_top_bits_are_neither(type_p: int) -> None:
    msg = c.RequestTWSession(
        IPv4Address("127.0.0.1"), IPv4Address("127.0.0.1"), 1, 2, 0, 0, 0, type_p=type_p
    )
    assert msg.dscp is None
    assert msg.phb_id is None


def test_type_p_helpers_reject_out_of_range() -> None:
    with pytest.raises(ValueError):
        c.type_p_for_dscp(64)
    with pytest.raises(ValueError):
        c.type_p_for_phb_id(0x10000)


def test_ipvn_property() -> None:
    assert V["request-ipv4-dscp-ef"].msg.ipvn == 4
    assert V["request-ipv6-reflect-octets"].msg.ipvn == 6


def test_key_id_is_held_without_its_padding() -> None:
    a = c.SetUpResponse(Mode.AUTHENTICATED, key_id=b"abc\x00\x00")
    assert a.key_id == b"abc"
    assert a == c.SetUpResponse(Mode.AUTHENTICATED, key_id=b"abc")
    full = bytes(range(1, 81))
    msg = c.decode_set_up_response(h("00000002") + full + bytes(80))
    assert msg.key_id == full


def test_sids_list_becomes_tuple() -> None:
    msg = c.StartNSessions(sids=[SID_A, SID_B])  # type: ignore[arg-type]
    assert msg.sids == (SID_A, SID_B)
    hash(msg)


BAD_CONSTRUCTIONS: list[tuple[Callable[[], object], str]] = [
    (lambda: c.ServerGreeting(Mode(1), bytes(15), bytes(16), 0), "challenge"),
    (lambda: c.ServerGreeting(Mode(1), bytes(16), bytes(17), 0), "salt"),
    (lambda: c.ServerGreeting(Mode(2), bytes(16), bytes(16), 1023), "count"),
    (lambda: c.ServerGreeting(Mode(1), bytes(16), bytes(16), 1 << 32), "count"),
    (lambda: c.ServerGreeting(-1, bytes(16), bytes(16), 1024), "modes"),  # type: ignore[arg-type]
    (lambda: c.SetUpResponse(Mode(1 << 32)), "mode"),
    (lambda: c.SetUpResponse(Mode(2), key_id=b"k" * 81), "key_id"),
    (lambda: c.SetUpResponse(Mode(2), token=bytes(63)), "token"),
    (lambda: c.SetUpResponse(Mode(2), client_iv=bytes(8)), "client_iv"),
    (lambda: c.ServerStart(7, bytes(16), 0), "accept"),  # type: ignore[arg-type]
    (lambda: c.ServerStart(AcceptCode.OK, bytes(16), 1 << 64), "start_time"),
    (lambda: c.AcceptSession(AcceptCode.OK, 65536, bytes(16)), "port"),
    (lambda: c.AcceptSession(AcceptCode.OK, -1, bytes(16)), "port"),
    (lambda: c.AcceptSession(AcceptCode.OK, 1, bytes(16), reflected_octets=1 << 16), "reflected"),
    (lambda: c.AcceptSession(AcceptCode.OK, 1, bytes(16), hmac=bytes(20)), "hmac"),
    (lambda: c.StartSessions(hmac=bytes(15)), "hmac"),
    (lambda: c.StartAck(256), "accept"),  # type: ignore[arg-type]
    (lambda: c.StopSessions(AcceptCode.OK, 1 << 32), "num_sessions"),
    (lambda: c.StartNSessions(sids=()), "sids"),
    (lambda: c.StartNSessions(sids=(bytes(15),)), "sids"),
    (lambda: c.StopNSessions(sids=(bytes(16),) * (c.MAX_N_SESSIONS + 1)), "sids"),
    (lambda: c.StartNAck(AcceptCode.OK, sids=()), "sids"),
    (lambda: c.StopNAck(AcceptCode.OK, sids=(bytes(16), bytes(17))), "sids"),
]

REQUEST_ARGS: dict[str, Any] = dict(
    sender_address=IPv4Address("127.0.0.1"),
    receiver_address=IPv4Address("127.0.0.1"),
    sender_port=1,
    receiver_port=2,
    padding_length=0,
    start_time=0,
    timeout=0,
)
for field, bad in [
    ("receiver_address", IPv6Address("::1")),
    ("sender_port", 65536),
    ("receiver_port", -1),
    ("padding_length", 1 << 32),
    ("start_time", 1 << 64),
    ("timeout", -1),
    ("type_p", 1 << 32),
    ("conf_sender", 256),
    ("conf_receiver", 256),
    ("schedule_slots", 1 << 32),
    ("num_packets", -1),
    ("sid", bytes(15)),
    ("octets_to_reflect", 1 << 16),
    ("padding_to_reflect", 1 << 16),
    ("hmac", bytes(17)),
]:
    BAD_CONSTRUCTIONS.append((partial(c.RequestTWSession, **{**REQUEST_ARGS, field: bad}), field))


@pytest.mark.parametrize(
    ("make", "field"), BAD_CONSTRUCTIONS, ids=[b[1] for b in BAD_CONSTRUCTIONS]
)
def test_construction_validates(make: Callable[[], object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        make()


def test_wrong_types_raise_type_error() -> None:
    with pytest.raises(TypeError):
        c.ServerGreeting(Mode(1), "0123456789abcdef", bytes(16), 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        c.SetUpResponse(Mode(1), key_id="twamp")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        c.RequestTWSession(**{**REQUEST_ARGS, "sender_address": "127.0.0.1"})


def test_messages_are_frozen() -> None:
    msg = c.StartAck(AcceptCode.OK)
    with pytest.raises(AttributeError):
        msg.accept = AcceptCode.FAILURE  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# Framing


@pytest.mark.parametrize(
    ("first", "length"),
    [
        (h("02", "00" * 15), 32),
        (h("03", "00" * 15), 32),
        (h("05", "04", "00" * 14), 112),
        (h("07", "00" * 11, "00000001"), 48),
        (h("09", "00" * 11, "00000003"), 80),
        (h("07", "00" * 11, "00000400"), 32 + 16 * 1024),
        (h("05", "00" * 31), 112),  # longer input: only the first block is read
    ],
)
def test_client_command_length(first: bytes, length: int) -> None:
    assert c.client_command_length(first) == length
    assert c.client_command_length(bytearray(first)) == length


@pytest.mark.parametrize("command", [0, 1, 4, 6, 8, 10, 11, 12, 100, 255])
def test_client_command_length_unsupported(command: int) -> None:
    with pytest.raises(UnsupportedError) as info:
        c.client_command_length(bytes([command]) + bytes(15))
    assert info.value.accept is AcceptCode.NOT_SUPPORTED
    assert info.value.field == "command"
    assert f"command number {command} " in str(info.value)


def test_unsupported_error_names_the_command() -> None:
    for command, name in [(1, "FORBIDDEN"), (6, "EXPERIMENTATION"), (11, "MICRO"), (12, "UNASS")]:
        with pytest.raises(UnsupportedError, match=name):
            c.client_command_length(bytes([command]) + bytes(15))


@pytest.mark.parametrize(("command", "name"), [(7, "StartNSessions"), (9, "StopNSessions")])
@pytest.mark.parametrize("n", ["00000000", "00000401", "ffffffff"])
def test_client_command_length_bad_n(command: int, name: str, n: str) -> None:
    with pytest.raises(DecodeError) as info:
        c.client_command_length(bytes([command]) + bytes(11) + h(n))
    assert (info.value.message_type, info.value.field) == (name, "num_sessions")


@pytest.mark.parametrize("framer", [c.client_command_length, c.n_message_length])
def test_framing_needs_a_whole_block(framer: Callable[[bytes], int]) -> None:
    for short in (b"", h("05"), h("07", "00" * 14)):
        with pytest.raises(DecodeError) as info:
            framer(short)
        assert info.value.field == "length"


@pytest.mark.parametrize(
    ("first", "length"),
    [
        (h("08", "00", "00" * 10, "00000001"), 48),
        (h("0a", "05", "00" * 10, "00000002"), 64),
        (h("07", "00" * 11, "00000003"), 80),
        (h("09", "00" * 11, "00000001"), 48),
    ],
)
def test_n_message_length(first: bytes, length: int) -> None:
    assert c.n_message_length(first) == length


def test_n_message_length_errors() -> None:
    for command in (0, 2, 5, 6, 11, 255):
        with pytest.raises(DecodeError) as info:
            c.n_message_length(bytes([command]) + bytes(11) + h("00000001"))
        assert info.value.field == "command"
    with pytest.raises(DecodeError) as info:
        c.n_message_length(h("08", "00" * 11, "00000000"))
    assert (info.value.message_type, info.value.field) == ("StartNAck", "num_sessions")
    with pytest.raises(DecodeError) as info:
        c.n_message_length(h("0a", "00" * 11, "00000401"))
    assert (info.value.message_type, info.value.field) == ("StopNAck", "num_sessions")


def test_decode_client_command_dispatches() -> None:
    for vid in (
        "request-ipv6-reflect-octets",
        "start-sessions",
        "stop-sessions",
        "start-n-sessions-3",
        "stop-n-sessions",
    ):
        assert c.decode_client_command(V[vid].wire) == V[vid].msg
    with pytest.raises(UnsupportedError):
        c.decode_client_command(V["start-n-ack"].wire)
    with pytest.raises(UnsupportedError):
        c.decode_client_command(h("01", "00" * 111))
    with pytest.raises(DecodeError):
        c.decode_client_command(b"")


# ---------------------------------------------------------------------------------------------
# ReceiveBuffer on its own


def test_receive_buffer_peek_and_extract() -> None:
    buf = ReceiveBuffer()
    assert len(buf) == 0
    assert buf.peek(1) is None
    assert buf.extract(1) is None
    assert buf.peek(0) == b"" and buf.extract(0) == b""
    buf.feed(b"abc")
    buf.feed(bytearray(b"de"))
    buf.feed(memoryview(b"fg"))
    assert buf.peek(8) is None
    assert buf.extract(8) is None
    assert len(buf) == 7  # a failed extract consumes nothing
    assert buf.peek(2) == b"ab"
    assert buf.peek(2) == b"ab"  # peek does not consume
    assert buf.extract(3) == b"abc"
    assert buf.extract(4) == b"defg"
    assert len(buf) == 0
    with pytest.raises(ValueError):
        buf.peek(-1)
    with pytest.raises(ValueError):
        buf.extract(-1)


def test_receive_buffer_returns_bytes_snapshots() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"0123456789")
    peeked = buf.peek(4)
    out = buf.extract(4)
    buf.feed(b"xyz")
    assert type(peeked) is bytes and type(out) is bytes
    assert peeked == out == b"0123"


def test_receive_buffer_many_small_messages() -> None:
    stream = b"".join(bytes([i % 256]) * 16 for i in range(2000))
    buf = ReceiveBuffer()
    out: list[bytes] = []
    for i in range(0, len(stream), 7):  # chunks that straddle message boundaries
        buf.feed(stream[i : i + 7])
        while len(out) < 2000 and (msg := buf.extract(16)) is not None:
            out.append(msg)
    assert b"".join(out) == stream
    assert len(out) == 2000


# ---------------------------------------------------------------------------------------------
# Interop: perfSONAR owamp 5.2.3 twping <-> twampd captures (tests/vectors/README.md)


def load_capture(vectors_dir: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((vectors_dir / name).read_text())
    return data


def control_stream(capture: dict[str, Any], side: str) -> bytes:
    return b"".join(
        bytes.fromhex(f["payload_hex"])
        for f in capture["frames"]
        if f["transport"] == "tcp" and f["from"] == side
    )


def test_owamp_open_capture(vectors_dir: Path) -> None:
    capture = load_capture(vectors_dir, "owamp-twping-open.json")
    client, server = ReceiveBuffer(), ReceiveBuffer()
    client.feed(control_stream(capture, "client"))
    server.feed(control_stream(capture, "server"))
    seen: list[str] = []

    def take(buf: ReceiveBuffer, n: int) -> bytes:
        raw = buf.extract(n)
        assert raw is not None, f"stream ended early after {seen}"
        return raw

    def roundtrip(
        raw: bytes, decode: Callable[[bytes], Any], encode: Callable[[Any], bytes]
    ) -> Any:
        msg = decode(raw)
        assert encode(msg) == raw, type(msg).__name__
        seen.append(type(msg).__name__)
        return msg

    greeting = roundtrip(
        take(server, c.SERVER_GREETING_SIZE), c.decode_server_greeting, c.encode_server_greeting
    )
    assert greeting.modes == Mode(15)
    assert greeting.count == 2048
    setup = roundtrip(
        take(client, c.SET_UP_RESPONSE_SIZE), c.decode_set_up_response, c.encode_set_up_response
    )
    assert setup.mode == capture["mode"] == Mode.UNAUTHENTICATED
    start = roundtrip(
        take(server, c.SERVER_START_SIZE), c.decode_server_start, c.encode_server_start
    )
    assert start.accept is AcceptCode.OK

    requests, accepts = [], []
    encoders: dict[type, Callable[[Any], bytes]] = {
        c.RequestTWSession: c.encode_request_tw_session,
        c.StartSessions: c.encode_start_sessions,
        c.StopSessions: c.encode_stop_sessions,
        c.StartNSessions: c.encode_start_n_sessions,
        c.StopNSessions: c.encode_stop_n_sessions,
    }
    for _ in range(16):  # bounded: the capture holds a handful of commands
        first = client.peek(16)
        if first is None:
            break
        raw = take(client, c.client_command_length(first))
        command = c.decode_client_command(raw)
        assert encoders[type(command)](command) == raw
        seen.append(type(command).__name__)
        if isinstance(command, c.RequestTWSession):
            requests.append(command)
            accepts.append(
                roundtrip(
                    take(server, c.ACCEPT_SESSION_SIZE),
                    c.decode_accept_session,
                    c.encode_accept_session,
                )
            )
        elif isinstance(command, c.StartSessions):
            ack = roundtrip(take(server, c.START_ACK_SIZE), c.decode_start_ack, c.encode_start_ack)
            assert ack.accept is AcceptCode.OK
        elif isinstance(command, c.StopSessions):
            assert command.num_sessions == len(requests)

    assert seen == [
        "ServerGreeting",
        "SetUpResponse",
        "ServerStart",
        "RequestTWSession",
        "AcceptSession",
        "StartSessions",
        "StartAck",
        "StopSessions",
    ]
    assert len(client) == 0 and len(server) == 0  # every octet was accounted for

    (request,), (accept,) = requests, accepts
    ports = capture["test_ports"]
    assert request.sender_port == ports["sender"]
    assert request.sender_address == IPv4Address("127.0.0.1")
    assert request.ipvn == 4
    assert request.timeout >> 32 == 2  # twping's default: 2 s and a fraction
    # twping asked for its own port number; twampd offered another, which the session used.
    assert accept.accept is AcceptCode.OK
    assert accept.port == ports["reflector"]
    # owamp's SID starts with the server's IPv4 address (README).
    assert accept.sid[:4] == bytes([127, 0, 0, 1])


@pytest.mark.parametrize(
    "name",
    [
        "owamp-twping-open.json",
        "owamp-twping-authenticated.json",
        "owamp-twping-encrypted.json",
        "owamp-twping-mixed.json",
    ],
)
def test_owamp_clear_text_setup_in_every_mode(vectors_dir: Path, name: str) -> None:
    capture = load_capture(vectors_dir, name)
    server = control_stream(capture, "server")
    client = control_stream(capture, "client")
    greeting = c.decode_server_greeting(server[:64])
    assert greeting.modes == Mode(15) and greeting.count == 2048
    assert c.encode_server_greeting(greeting) == server[:64]
    setup = c.decode_set_up_response(client[:164])
    assert setup.mode == capture["mode"]
    assert c.encode_set_up_response(setup) == client[:164]
    key_id = capture["key_id"]
    assert setup.key_id == (key_id.encode("ascii") if key_id else b"")
    if capture["mode"] != 1:
        assert setup.token != bytes(64) and setup.client_iv != bytes(16)
    # Server-Start octets 0-31 are clear text in every mode (RFC 5357 §3.1).
    start = server[64:112]
    assert start[15] == AcceptCode.OK
    # The rest of both streams is whole messages, each a multiple of 16 octets.
    assert (len(server) - 112) % 16 == 0 and (len(client) - 164) % 16 == 0
