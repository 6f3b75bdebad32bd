"""OSPFv2 codec: known-answer vectors for every packet and LSA type, checksums, sequence
numbers, LSA comparison, MTU packing figures, and scapy's OSPF layer as an oracle (tests only).

The vectors were written field by field from the RFC 2328 Appendix A diagrams (the comments
name the fields); the two checksums in each were cross-checked against scapy, an independent
implementation, when the vectors were made, and are checked again by the oracle tests below.
"""

from __future__ import annotations

import importlib
import struct
import warnings
from ipaddress import IPv4Address
from typing import Any

import pytest

from conftest import require
from twamp.errors import DecodeError, ProtocolError
from twamp.ospf.wire import (
    INITIAL_SEQUENCE_NUMBER,
    MAX_AGE,
    MAX_SEQUENCE_NUMBER,
    AsExternalLsaBody,
    AuType,
    DatabaseDescription,
    DbdFlags,
    Hello,
    LinkStateAck,
    LinkStateRequest,
    LinkStateUpdate,
    LinkType,
    LsaHeader,
    LsaKey,
    LsaType,
    NetworkLsaBody,
    OpaqueLsaBody,
    Options,
    OspfDecodeError,
    PacketType,
    RouterLink,
    RouterLsaBody,
    RouterLsaFlags,
    SummaryLsaBody,
    compare_lsa,
    dbd_capacity,
    decode_lsa,
    decode_packet,
    encode_lsa,
    encode_packet,
    internet_checksum,
    lsa_checksum,
    lsa_checksum_ok,
    lsr_capacity,
    make_lsa,
    pack_lsus,
    packet_checksum_ok,
    with_age,
)

A = IPv4Address
GEN = A("192.0.2.2")
DUT = A("192.0.2.129")
AREA0 = A(0)


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# --- known answers: LSAs ----------------------------------------------------------------------

EXTERNAL = h(
    "0001 02 05"  # age 1, options E, type 5
    "c6120000 c0000202"  # link state id 198.18.0.0, advertising router 192.0.2.2
    "80000001 d947 0024"  # seq InitialSequenceNumber, checksum, length 36
    "ffffff00 80000014"  # mask /24; E=1, TOS 0, metric 20
    "00000000 00000000"  # forwarding address, route tag
)
ROUTER = h(
    "0001 02 01 c0000202 c0000202 80000002 3c9f 0030"  # header, length 48
    "02 00 0002"  # flags E, 0, 2 links
    "c0000281 c0000202 01 00 000a"  # p2p to 192.0.2.129 via 192.0.2.2, metric 10
    "c0000200 fffffffc 03 00 000a"  # stub 192.0.2.0/30, metric 10
)
NETWORK = h(
    "0001 02 02 c0000201 c0000281 80000003 88c1 0020"
    "fffffffc c0000281 c0000202"  # mask /30, attached 192.0.2.129 and 192.0.2.2
)
SUMMARY3 = h("0001 02 03 cb007100 c0000281 80000004 7b3f 001c ffffff00 0000001e")
SUMMARY4 = h("0001 02 04 c0000207 c0000281 80000005 e23f 001c 00000000 00000028")

LSA_VECTORS = [
    (
        EXTERNAL,
        LsaType.AS_EXTERNAL,
        A("198.18.0.0"),
        GEN,
        INITIAL_SEQUENCE_NUMBER,
        AsExternalLsaBody(A("255.255.255.0"), 20, True, A(0), 0),
    ),
    (
        ROUTER,
        LsaType.ROUTER,
        GEN,
        GEN,
        INITIAL_SEQUENCE_NUMBER + 1,
        RouterLsaBody(
            RouterLsaFlags.E,
            (
                RouterLink(DUT, GEN, LinkType.POINT_TO_POINT, 10),
                RouterLink(A("192.0.2.0"), A("255.255.255.252"), LinkType.STUB, 10),
            ),
        ),
    ),
    (
        NETWORK,
        LsaType.NETWORK,
        A("192.0.2.1"),
        DUT,
        INITIAL_SEQUENCE_NUMBER + 2,
        NetworkLsaBody(A("255.255.255.252"), (DUT, GEN)),
    ),
    (
        SUMMARY3,
        LsaType.SUMMARY_NETWORK,
        A("203.0.113.0"),
        DUT,
        INITIAL_SEQUENCE_NUMBER + 3,
        SummaryLsaBody(A("255.255.255.0"), 30),
    ),
    (
        SUMMARY4,
        LsaType.SUMMARY_ASBR,
        A("192.0.2.7"),
        DUT,
        INITIAL_SEQUENCE_NUMBER + 4,
        SummaryLsaBody(A(0), 40),
    ),
]


@pytest.mark.parametrize(("raw", "ls_type", "lsid", "adv", "seq", "body"), LSA_VECTORS)
def test_lsa_known_answers(
    raw: bytes, ls_type: LsaType, lsid: A, adv: A, seq: int, body: object
) -> None:
    lsa, encoded = make_lsa(ls_type, lsid, adv, seq, body, age=1)  # type: ignore[arg-type]
    assert encoded == raw
    assert encode_lsa(lsa) == raw
    decoded = decode_lsa(raw)
    assert decoded == lsa
    assert decoded.header.ls_type is ls_type
    assert decoded.header.length == len(raw)
    assert lsa_checksum_ok(raw)
    assert lsa_checksum(raw) == int.from_bytes(raw[16:18], "big")


def test_sequence_numbers_are_signed_on_the_wire() -> None:
    # RFC 2328 §12.1.6: 0x80000001 is InitialSequenceNumber = -0x7FFFFFFF.
    assert INITIAL_SEQUENCE_NUMBER == -0x7FFFFFFF
    assert decode_lsa(EXTERNAL).header.seq == INITIAL_SEQUENCE_NUMBER
    _lsa, raw = make_lsa(5, A("198.18.0.0"), GEN, MAX_SEQUENCE_NUMBER, LSA_VECTORS[0][5])  # type: ignore[arg-type]
    assert raw[12:16] == h("7fffffff")
    assert decode_lsa(raw).header.seq == MAX_SEQUENCE_NUMBER
    with pytest.raises(ValueError, match="seq"):
        make_lsa(5, A("198.18.0.0"), GEN, 0x80000001, LSA_VECTORS[0][5])  # type: ignore[arg-type]


def test_lsa_checksum_rejects_corruption_and_ignores_age() -> None:
    assert lsa_checksum_ok(with_age(EXTERNAL, 1234))
    assert with_age(EXTERNAL, MAX_AGE)[:2] == h("0e10")
    bad = bytearray(EXTERNAL)
    bad[30] ^= 0x01
    assert not lsa_checksum_ok(bytes(bad))
    zero = bytearray(EXTERNAL)
    zero[16:18] = b"\0\0"
    assert not lsa_checksum_ok(bytes(zero))
    assert not lsa_checksum_ok(EXTERNAL[:10])


def test_unknown_lsa_type_is_kept_opaque() -> None:
    _lsa, raw = make_lsa(10, A("1.0.0.1"), DUT, 7, OpaqueLsaBody(b"\x00\x01\x00\x04abcd"))
    assert lsa_checksum_ok(raw)
    back = decode_lsa(raw)
    assert back.body == OpaqueLsaBody(b"\x00\x01\x00\x04abcd")
    assert back.header.ls_type == 10
    assert encode_lsa(back) == raw


# --- known answers: packets --------------------------------------------------------------------

HELLO = h(
    "02 01 0030 c0000202 00000000 771a 0000 0000000000000000"  # v2 Hello, len 48, checksum
    "fffffffc 000a 02 01 00000028"  # mask /30, hello 10 s, options E, priority 1, dead 40 s
    "00000000 00000000 c0000281"  # DR, BDR, neighbour 192.0.2.129
)
DBD = h("02 02 0020 c0000202 00000000 cb4b 0000 0000000000000000 05dc 02 07 12345678")
LSR = h(
    "02 03 0030 c0000202 00000000 2eab 0000 0000000000000000"
    "00000001 c0000281 c0000281"  # router-LSA of 192.0.2.129
    "00000005 c6120000 c0000202"  # external 198.18.0.0 of 192.0.2.2
)
LSU = h("02 04 0040 c0000202 00000000 d919 0000 0000000000000000 00000001") + EXTERNAL
LSACK = h("02 05 002c c0000202 00000000 5843 0000 0000000000000000") + EXTERNAL[:20]

EXT_LSA = decode_lsa(EXTERNAL)
PACKET_VECTORS = [
    (
        HELLO,
        Hello(A("255.255.255.252"), 10, Options.E, 1, 40, A(0), A(0), (DUT,)),
    ),
    (DBD, DatabaseDescription(1500, Options.E, DbdFlags.I | DbdFlags.M | DbdFlags.MS, 0x12345678)),
    (
        LSR,
        LinkStateRequest(
            (LsaKey(1, DUT, DUT), LsaKey(5, A("198.18.0.0"), GEN)),
        ),
    ),
    (LSU, LinkStateUpdate((EXT_LSA,), (EXTERNAL,))),
    (LSACK, LinkStateAck((EXT_LSA.header,))),
]


@pytest.mark.parametrize(("raw", "body"), PACKET_VECTORS)
def test_packet_known_answers(raw: bytes, body: object) -> None:
    assert encode_packet(GEN, AREA0, body) == raw  # type: ignore[arg-type]
    pkt = decode_packet(raw)
    assert pkt.body == body
    assert pkt.header.router_id == GEN
    assert pkt.header.length == len(raw)
    assert packet_checksum_ok(raw)


def test_packet_checksum_is_verified_and_trailing_octets_ignored() -> None:
    bad = bytearray(HELLO)
    bad[30] ^= 0xFF
    with pytest.raises(OspfDecodeError, match="checksum"):
        decode_packet(bytes(bad))
    assert decode_packet(bytes(bad), verify_checksum=False).body.options == 0xFD  # type: ignore[union-attr]
    assert decode_packet(HELLO + b"\0\0\0\0").body == PACKET_VECTORS[0][1]


def test_packet_checksum_ignores_authentication_field() -> None:
    # RFC 2328 §D.4.1: the 64-bit authentication field is excluded from the checksum.
    body = PACKET_VECTORS[0][1]
    simple = encode_packet(GEN, AREA0, body, au_type=AuType.SIMPLE, auth=b"secret!!")  # type: ignore[arg-type]
    blank = encode_packet(GEN, AREA0, body, au_type=AuType.SIMPLE)  # type: ignore[arg-type]
    assert simple[12:14] == blank[12:14]
    assert simple[24:] == blank[24:] and simple[16:24] == b"secret!!"
    assert packet_checksum_ok(simple)
    assert decode_packet(simple).header.auth == b"secret!!"


def test_internet_checksum_reference() -> None:
    # RFC 1071 §3 example words 0001 f203 f4f5 f6f7 sum to 0xddf2 before complement.
    assert internet_checksum(h("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2
    assert internet_checksum(h("01")) == 0xFFFF - 0x0100


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"", "length"),
        (HELLO[:23], "length"),
        (b"\x03" + HELLO[1:], "version"),
        (HELLO[:1] + b"\x09" + HELLO[2:], "type"),
        (HELLO[:2] + b"\x00\x40" + HELLO[4:], "length"),
        (HELLO[:2] + b"\x00\x14" + HELLO[4:], "length"),
    ],
)
def test_malformed_packets_raise_the_protocol_error(data: bytes, field: str) -> None:
    with pytest.raises(OspfDecodeError) as info:
        decode_packet(data)
    assert info.value.field == field
    assert isinstance(info.value, DecodeError)
    assert isinstance(info.value, ProtocolError)


def _repack(head: bytes, payload: bytes) -> bytes:
    """A packet with a correct checksum around a (possibly bad) payload."""
    length = 24 + len(payload)
    raw = bytearray(head[:2] + struct.pack("!H", length) + head[4:12] + b"\0\0" + head[14:24])
    raw += payload
    raw[12:14] = internet_checksum(bytes(raw)).to_bytes(2, "big")
    return bytes(raw)


@pytest.mark.parametrize(
    ("head", "payload", "message"),
    [
        (HELLO, HELLO[24:-1], "Hello"),  # neighbour list not a multiple of 4
        (DBD, DBD[24:-1], "DatabaseDescription"),
        (DBD, DBD[24:] + EXTERNAL[:19], "DatabaseDescription"),
        (LSR, LSR[24:-4], "LinkStateRequest"),
        (LSU, h("00000002") + EXTERNAL, "LinkStateUpdate"),  # count 2, one LSA
        (LSU, h("00000001") + EXTERNAL[:18] + h("0100") + EXTERNAL[20:], "LinkStateUpdate"),
        (LSU, h("00000001") + ROUTER[:22] + h("0009") + ROUTER[24:], "RouterLsa"),
        (LSACK, LSACK[24:-1], "LinkStateAck"),
    ],
)
def test_malformed_bodies(head: bytes, payload: bytes, message: str) -> None:
    with pytest.raises(OspfDecodeError) as info:
        decode_packet(_repack(head, payload))
    assert info.value.message_type == message


# --- RFC 2328 §13.1: which instance is newer ----------------------------------------------------


def _hdr(seq: int = 1, checksum: int = 0x1000, age: int = 10) -> LsaHeader:
    return LsaHeader(age, Options.E, 5, A("198.18.0.0"), GEN, seq, checksum, 36)


def test_compare_lsa_rules_in_order() -> None:
    assert compare_lsa(_hdr(seq=2), _hdr(seq=1)) == 1
    assert compare_lsa(_hdr(seq=INITIAL_SEQUENCE_NUMBER), _hdr(seq=-1)) == -1  # signed order
    assert compare_lsa(_hdr(checksum=0x2000), _hdr(checksum=0x1000)) == 1
    assert compare_lsa(_hdr(age=MAX_AGE), _hdr(age=1)) == 1
    assert compare_lsa(_hdr(age=1), _hdr(age=MAX_AGE)) == -1
    assert compare_lsa(_hdr(age=10), _hdr(age=911)) == 1  # differ by more than MaxAgeDiff
    assert compare_lsa(_hdr(age=10), _hdr(age=910)) == 0
    assert compare_lsa(_hdr(), _hdr()) == 0


# --- MTU arithmetic (research note §3) ----------------------------------------------------------


def test_mtu_packing_figures_at_1500() -> None:
    assert dbd_capacity(1500) == 72
    assert lsr_capacity(1500) == 121
    raws = [EXTERNAL] * 85
    groups = pack_lsus(raws, 1500)
    assert [len(g) for g in groups] == [40, 40, 5]
    for g in groups:
        payload = h("00000000") + b"".join(raws[i] for i in g)
        assert 20 + 24 + len(payload) <= 1500
    # One more external would not fit: 20 + 24 + 4 + 41 * 36 = 1524.
    assert 20 + 24 + 4 + 41 * 36 > 1500


def test_full_dbd_and_lsr_fit_the_mtu() -> None:
    headers = tuple(_hdr(seq=i) for i in range(dbd_capacity(1500)))
    dbd = encode_packet(GEN, AREA0, DatabaseDescription(1500, Options.E, DbdFlags.MS, 1, headers))
    assert 20 + len(dbd) <= 1500 < 20 + len(dbd) + 20
    keys = tuple(LsaKey(5, A(i), GEN) for i in range(lsr_capacity(1500)))
    lsr = encode_packet(GEN, AREA0, LinkStateRequest(keys))
    assert 20 + len(lsr) <= 1500 < 20 + len(lsr) + 12


# --- scapy as an oracle (tests only; never imported by the package) ----------------------------


@pytest.fixture(scope="module")
def scapy_ospf() -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module("scapy.contrib.ospf")
    except ImportError:
        require(False, "scapy is not installed (pip install scapy): the codec's oracle")
        raise


def test_scapy_parses_our_packets(scapy_ospf) -> None:  # type: ignore[no-untyped-def]
    o = scapy_ospf
    hello = o.OSPF_Hdr(HELLO)
    assert hello.type == 1 and hello.src == "192.0.2.2" and hello.chksum == 0x771A
    assert hello[o.OSPF_Hello].neighbors == ["192.0.2.129"]
    assert hello[o.OSPF_Hello].deadinterval == 40
    dbd = o.OSPF_Hdr(DBD)
    assert dbd[o.OSPF_DBDesc].mtu == 1500 and dbd[o.OSPF_DBDesc].ddseq == 0x12345678
    lsr = o.OSPF_Hdr(LSR)
    assert [r.id for r in lsr[o.OSPF_LSReq].requests] == ["192.0.2.129", "198.18.0.0"]
    lsu = o.OSPF_Hdr(LSU)
    ext = lsu[o.OSPF_LSUpd].lsalist[0]
    assert (ext.type, ext.id, ext.seq, ext.metric, ext.ebit) == (5, "198.18.0.0", 0x80000001, 20, 1)
    ack = o.OSPF_Hdr(LSACK)
    assert ack[o.OSPF_LSAck].lsaheaders[0].chksum == 0xD947


def test_we_parse_scapy_packets(scapy_ospf) -> None:  # type: ignore[no-untyped-def]
    o = scapy_ospf
    rtr = o.OSPF_Router_LSA(
        age=3,
        options=0x02,
        id="192.0.2.9",
        adrouter="192.0.2.9",
        seq=0x80000010,
        flags=0x01,
        linklist=[
            o.OSPF_Link(id="192.0.2.10", data="192.0.2.9", type=1, metric=7),
            o.OSPF_Link(id="198.51.100.0", data="255.255.255.0", type=3, metric=1),
        ],
    )
    pkt = bytes(o.OSPF_Hdr(src="192.0.2.9", area="0.0.0.1") / o.OSPF_LSUpd(lsalist=[rtr]))
    decoded = decode_packet(pkt)
    assert decoded.header.packet_type is PacketType.LINK_STATE_UPDATE
    assert decoded.header.area_id == A("0.0.0.1")
    (lsa,) = decoded.body.lsas  # type: ignore[union-attr]
    assert lsa.header.seq == 0x80000010 - (1 << 32)
    assert lsa.body == RouterLsaBody(
        RouterLsaFlags.B,
        (
            RouterLink(A("192.0.2.10"), A("192.0.2.9"), LinkType.POINT_TO_POINT, 7),
            RouterLink(A("198.51.100.0"), A("255.255.255.0"), LinkType.STUB, 1),
        ),
    )
    assert lsa_checksum_ok(decoded.body.raw_lsas[0])  # type: ignore[union-attr]


@pytest.mark.parametrize("index", range(len(LSA_VECTORS)))
def test_lsa_checksum_matches_scapy(scapy_ospf, index: int) -> None:  # type: ignore[no-untyped-def]
    raw = LSA_VECTORS[index][0]
    assert scapy_ospf.ospf_lsa_checksum(raw) == raw[16:18]
    # And for LSAs of other sizes and contents.
    for metric in (0, 1, 0xFFFFFF):
        _, ext = make_lsa(5, A("198.18.1.0"), DUT, metric - 5, AsExternalLsaBody(A(0), metric))
        assert scapy_ospf.ospf_lsa_checksum(ext) == ext[16:18]
