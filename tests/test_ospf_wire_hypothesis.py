"""OSPFv2 codec properties: round trips for every packet and LSA type, and the fuzz invariant
(any bytes decode to a packet or raise OspfDecodeError, nothing else)."""

from __future__ import annotations

import contextlib
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twamp.ospf.wire import (
    AsExternalLsaBody,
    DatabaseDescription,
    DbdFlags,
    Hello,
    LinkStateAck,
    LinkStateRequest,
    LinkStateUpdate,
    Lsa,
    LsaBody,
    LsaHeader,
    LsaKey,
    NetworkLsaBody,
    OpaqueLsaBody,
    Options,
    OspfDecodeError,
    RouterLink,
    RouterLsaBody,
    RouterLsaFlags,
    SummaryLsaBody,
    decode_lsa,
    decode_packet,
    encode_lsa,
    encode_packet,
    lsa_checksum_ok,
    make_lsa,
)

addrs = st.integers(0, 0xFFFFFFFF).map(IPv4Address)
u8, u16, u24, u32 = (st.integers(0, (1 << b) - 1) for b in (8, 16, 24, 32))
seqs = st.integers(-(1 << 31), (1 << 31) - 1)
options = u8.map(Options)

router_links = st.builds(
    RouterLink,
    addrs,
    addrs,
    u8,
    u16,
    st.lists(st.tuples(u8, u16), max_size=3).map(tuple),
)
router_bodies = st.builds(
    RouterLsaBody, u8.map(RouterLsaFlags), st.lists(router_links, max_size=6).map(tuple)
)
network_bodies = st.builds(NetworkLsaBody, addrs, st.lists(addrs, max_size=6).map(tuple))
summary_bodies = st.builds(
    SummaryLsaBody, addrs, u24, st.lists(st.tuples(st.integers(1, 255), u24), max_size=3).map(tuple)
)
external_bodies = st.builds(
    AsExternalLsaBody,
    addrs,
    u24,
    st.booleans(),
    addrs,
    u32,
    st.lists(st.tuples(st.booleans(), st.integers(1, 127), u24, addrs, u32), max_size=2).map(tuple),
)
opaque_bodies = st.binary(max_size=64).map(OpaqueLsaBody)


@st.composite
def lsas(draw: st.DrawFn) -> tuple[Lsa, bytes]:
    ls_type, body = draw(
        st.one_of(
            router_bodies.map(lambda b: (1, b)),
            network_bodies.map(lambda b: (2, b)),
            summary_bodies.map(lambda b: (3, b)),
            summary_bodies.map(lambda b: (4, b)),
            external_bodies.map(lambda b: (5, b)),
            st.tuples(st.integers(6, 255), opaque_bodies),
        )
    )
    body_typed: LsaBody = body
    return make_lsa(
        ls_type,
        draw(addrs),
        draw(addrs),
        draw(seqs),
        body_typed,
        age=draw(u16),
        options=draw(options),
    )


@pytest.mark.slow
@given(lsas())
def test_lsa_round_trip(item: tuple[Lsa, bytes]) -> None:
    lsa, raw = item
    assert lsa_checksum_ok(raw)
    assert decode_lsa(raw) == lsa
    assert encode_lsa(decode_lsa(raw)) == raw


headers = st.builds(LsaHeader, u16, options, u8, addrs, addrs, seqs, u16, st.integers(20, 0xFFFF))
keys = st.builds(LsaKey, u8, addrs, addrs)

bodies = st.one_of(
    st.builds(
        Hello, addrs, u16, options, u8, u32, addrs, addrs, st.lists(addrs, max_size=8).map(tuple)
    ),
    st.builds(
        DatabaseDescription,
        u16,
        options,
        u8.map(DbdFlags),
        u32,
        st.lists(headers, max_size=5).map(tuple),
    ),
    st.builds(LinkStateRequest, st.lists(keys, max_size=8).map(tuple)),
    st.lists(lsas(), max_size=4).map(
        lambda xs: LinkStateUpdate(tuple(x for x, _ in xs), tuple(r for _, r in xs))
    ),
    st.builds(LinkStateAck, st.lists(headers, max_size=5).map(tuple)),
)


@given(addrs, addrs, bodies)
def test_packet_round_trip(rid: IPv4Address, area: IPv4Address, body: object) -> None:
    raw = encode_packet(rid, area, body)  # type: ignore[arg-type]
    pkt = decode_packet(raw)
    assert pkt.body == body
    assert (pkt.header.router_id, pkt.header.area_id, pkt.header.length) == (rid, area, len(raw))
    assert encode_packet(rid, area, pkt.body) == raw


def _decode_or_protocol_error(data: bytes, verify: bool) -> None:
    with contextlib.suppress(OspfDecodeError):
        decode_packet(data, verify_checksum=verify)


@settings(max_examples=500)
@given(st.binary(max_size=200), st.booleans())
def test_fuzz_random_bytes(data: bytes, verify: bool) -> None:
    _decode_or_protocol_error(data, verify)


@pytest.mark.slow
@settings(max_examples=500)
@given(addrs, bodies, st.data())
def test_fuzz_mutated_packets(rid: IPv4Address, body: object, data: st.DataObject) -> None:
    # Mutations of valid packets reach the body decoders (random bytes mostly stop at the
    # header); the checksum is not verified so that corrupted bodies are parsed.
    raw = bytearray(encode_packet(rid, IPv4Address(0), body))  # type: ignore[arg-type]
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(u8)
    cut = data.draw(st.integers(0, len(raw)))
    _decode_or_protocol_error(bytes(raw[:cut]), False)
    _decode_or_protocol_error(bytes(raw), False)


@given(st.binary(max_size=120))
def test_fuzz_lsa_decoder(data: bytes) -> None:
    with contextlib.suppress(OspfDecodeError):
        decode_lsa(data)
