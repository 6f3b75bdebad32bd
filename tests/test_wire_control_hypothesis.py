"""TWAMP-Control codec properties: round trips for every message, and the fuzz invariant.

Fuzz invariant (h11's fuzz/afl-server.py, for our decoders): any octets give a message or a
`ProtocolError`, never any other exception; and whatever decodes re-encodes to the same length
and decodes again to the same message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twamp.constants import MIN_COUNT, SECURE_CONTROL_MODES, AcceptCode, Mode
from twamp.errors import ProtocolError
from twamp.wire import control as c
from twamp.wire.buffer import ReceiveBuffer

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, (1 << 64) - 1)
block = st.binary(min_size=16, max_size=16)
accepts = st.sampled_from(list(AcceptCode))
# A few SIDs only: N up to MAX_N_SESSIONS is covered by the known-answer tests.
sid_tuples = st.lists(block, min_size=1, max_size=6).map(tuple)


@st.composite
def greetings(draw: st.DrawFn) -> c.ServerGreeting:
    modes = Mode(draw(u32))
    low = MIN_COUNT if modes & SECURE_CONTROL_MODES else 0
    count = draw(st.integers(low, 0xFFFFFFFF))
    return c.ServerGreeting(modes, draw(block), draw(block), count)


@st.composite
def requests(draw: st.DrawFn) -> c.RequestTWSession:
    version: Literal[4, 6] = draw(st.sampled_from([4, 6]))
    return c.RequestTWSession(
        sender_address=draw(st.ip_addresses(v=version)),
        receiver_address=draw(st.ip_addresses(v=version)),
        sender_port=draw(u16),
        receiver_port=draw(u16),
        padding_length=draw(u32),
        start_time=draw(u64),
        timeout=draw(u64),
        type_p=draw(u32),
        conf_sender=draw(u8),
        conf_receiver=draw(u8),
        schedule_slots=draw(u32),
        num_packets=draw(u32),
        sid=draw(block),
        octets_to_reflect=draw(u16),
        padding_to_reflect=draw(u16),
        hmac=draw(block),
    )


MESSAGES: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], bytes], Callable[..., Any]]] = {
    "ServerGreeting": (greetings(), c.encode_server_greeting, c.decode_server_greeting),
    "SetUpResponse": (
        st.builds(
            c.SetUpResponse,
            mode=u32.map(Mode),
            key_id=st.binary(max_size=80),
            token=st.binary(min_size=64, max_size=64),
            client_iv=block,
        ),
        c.encode_set_up_response,
        c.decode_set_up_response,
    ),
    "ServerStart": (
        st.builds(c.ServerStart, accept=accepts, server_iv=block, start_time=u64),
        c.encode_server_start,
        c.decode_server_start,
    ),
    "RequestTWSession": (requests(), c.encode_request_tw_session, c.decode_request_tw_session),
    "AcceptSession": (
        st.builds(
            c.AcceptSession,
            accept=accepts,
            port=u16,
            sid=block,
            reflected_octets=u16,
            server_octets=u16,
            hmac=block,
        ),
        c.encode_accept_session,
        c.decode_accept_session,
    ),
    "StartSessions": (
        st.builds(c.StartSessions, hmac=block),
        c.encode_start_sessions,
        c.decode_start_sessions,
    ),
    "StartAck": (
        st.builds(c.StartAck, accept=accepts, hmac=block),
        c.encode_start_ack,
        c.decode_start_ack,
    ),
    "StopSessions": (
        st.builds(c.StopSessions, accept=accepts, num_sessions=u32, hmac=block),
        c.encode_stop_sessions,
        c.decode_stop_sessions,
    ),
    "StartNSessions": (
        st.builds(c.StartNSessions, sids=sid_tuples, hmac=block),
        c.encode_start_n_sessions,
        c.decode_start_n_sessions,
    ),
    "StartNAck": (
        st.builds(c.StartNAck, accept=accepts, sids=sid_tuples, hmac=block),
        c.encode_start_n_ack,
        c.decode_start_n_ack,
    ),
    "StopNSessions": (
        st.builds(c.StopNSessions, sids=sid_tuples, hmac=block),
        c.encode_stop_n_sessions,
        c.decode_stop_n_sessions,
    ),
    "StopNAck": (
        st.builds(c.StopNAck, accept=accepts, sids=sid_tuples, hmac=block),
        c.encode_stop_n_ack,
        c.decode_stop_n_ack,
    ),
}
FIXED_SIZES = {
    "ServerGreeting": 64,
    "SetUpResponse": 164,
    "ServerStart": 48,
    "RequestTWSession": 112,
    "AcceptSession": 48,
    "StartSessions": 32,
    "StartAck": 32,
    "StopSessions": 32,
}
N_MESSAGES = {"StartNSessions", "StartNAck", "StopNSessions", "StopNAck"}
by_message = pytest.mark.parametrize("name", sorted(MESSAGES))


def expected_size(name: str, msg: Any) -> int:
    if name in N_MESSAGES:
        return 32 + 16 * len(msg.sids)
    return FIXED_SIZES[name]


def message_or_protocol_error(name: str, data: bytes) -> None:
    _, encode, decode = MESSAGES[name]
    try:
        msg = decode(data)
    except ProtocolError:
        return
    assert type(msg).__name__ == name
    again = encode(msg)
    assert len(again) == len(data)
    assert decode(again) == msg


@by_message
@given(data=st.data())
def test_round_trip(name: str, data: st.DataObject) -> None:
    strategy, encode, decode = MESSAGES[name]
    msg = data.draw(strategy)
    wire = encode(msg)
    assert len(wire) == expected_size(name, msg)
    if name != "SetUpResponse":  # 164 octets, the one clear-text message not in whole blocks
        assert len(wire) % 16 == 0
    assert decode(wire) == msg
    assert decode(bytearray(wire)) == msg
    assert decode(memoryview(wire)) == msg
    assert encode(decode(wire)) == wire


@by_message
@settings(max_examples=300)
@given(data=st.data())
def test_fuzz_random_octets(name: str, data: st.DataObject) -> None:
    size = FIXED_SIZES.get(name, 48)
    length = data.draw(
        st.one_of(st.just(size), st.integers(0, size + 48), st.sampled_from([size - 1, size + 1]))
    )
    message_or_protocol_error(name, data.draw(st.binary(min_size=length, max_size=length)))


@by_message
@settings(max_examples=500)
@given(data=st.data())
def test_fuzz_mutated_valid_messages(name: str, data: st.DataObject) -> None:
    strategy, encode, _ = MESSAGES[name]
    wire = bytearray(encode(data.draw(strategy)))
    # Command, IPVN, Accept and N live in the first block and take small values: favour both.
    offsets = st.one_of(st.integers(0, 15), st.integers(0, len(wire) - 1))
    values = st.one_of(st.integers(0, 16), u8)
    for _ in range(data.draw(st.integers(1, 8))):
        wire[data.draw(offsets)] = data.draw(values)
    cut = data.draw(st.one_of(st.just(0), st.integers(-2, 2)))  # mostly the exact length
    mutated = bytes(wire[:cut] if cut < 0 else wire + bytes(cut))
    message_or_protocol_error(name, mutated)


@settings(max_examples=500)
@given(st.binary(min_size=16, max_size=40))
def test_fuzz_framing(first: bytes) -> None:
    for framer in (c.client_command_length, c.n_message_length):
        try:
            n = framer(first)
        except ProtocolError:
            continue
        assert n >= 32 and n % 16 == 0
        assert n <= 32 + 16 * c.MAX_N_SESSIONS


@settings(max_examples=500)
@given(st.one_of(st.binary(max_size=200), st.binary(min_size=112, max_size=112)))
def test_fuzz_decode_client_command(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        c.decode_client_command(data)


client_commands = st.one_of(
    requests(),
    st.builds(c.StartSessions, hmac=block),
    st.builds(c.StopSessions, accept=accepts, num_sessions=u32, hmac=block),
    st.builds(c.StartNSessions, sids=sid_tuples, hmac=block),
    st.builds(c.StopNSessions, sids=sid_tuples, hmac=block),
)
ENCODERS: dict[type, Callable[[Any], bytes]] = {
    c.RequestTWSession: c.encode_request_tw_session,
    c.StartSessions: c.encode_start_sessions,
    c.StopSessions: c.encode_stop_sessions,
    c.StartNSessions: c.encode_start_n_sessions,
    c.StopNSessions: c.encode_stop_n_sessions,
}


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(client_commands, min_size=1, max_size=8), st.data())
def test_stream_in_random_chunks(commands: list[Any], data: st.DataObject) -> None:
    """A server's reader: any chunking of a command stream yields the same commands."""
    stream = b"".join(ENCODERS[type(m)](m) for m in commands)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    buf = ReceiveBuffer()
    out: list[Any] = []
    for chunk in chunks:
        buf.feed(chunk)
        for _ in range(len(commands) + 1):  # bounded: at most every command per chunk
            first = buf.peek(16)
            if first is None:
                break
            raw = buf.extract(c.client_command_length(first))
            if raw is None:
                break
            out.append(c.decode_client_command(raw))
    assert out == commands
    assert len(buf) == 0
