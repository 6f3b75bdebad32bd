"""The Session-Reflector data plane, run over every importable twin (dataplane.implementations()).

Requests are built by hand from the layouts of RFC 5357 §4.1.2 and replies read back with
`struct` at the offsets of RFC 5357 §4.2.1, not with `twamp.wire.packets`, so that the reflector is
checked against the spec rather than against the codec it uses. Everything runs on loopback, and
every receive has a timeout.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from twamp import clock, dataplane
from twamp.constants import TestMode
from twamp.crypto import TestPacketCrypto, derive_test_keys
from twamp.dataplane import LightPolicy, SessionSpec, Twin
from twamp.dataplane.sockets import (
    IPV6_TCLASS,
    SO_TIMESTAMPNS,
    buffer_sizes,
    open_test_socket,
    parse_ancillary,
    tos_ancillary,
)
from twamp.timestamps import ns_from_ntp
from twamp.wire.packets import TestFormat

OPEN = TestFormat(TestMode.OPEN)
AUTH = TestFormat(TestMode.AUTHENTICATED)
ENC = TestFormat(TestMode.ENCRYPTED)
SID = bytes(range(0x10, 0x20))
KEYS = derive_test_keys(SID, bytes(range(16)), bytes(range(0x40, 0x60)))

# Reflector layouts (RFC 5357 §4.2.1, open and authenticated), read without twamp.wire.packets.
REFL_OPEN = struct.Struct("!IQH2xQIQH2xB")  # 41
REFL_AUTH = struct.Struct("!I12xQH6xQ8xI12xQH6xB15x16s")  # 112

WAIT = 2.0  # seconds: a reply that should come
QUIET = 0.25  # seconds: listening for a reply that must not come

# Linux option numbers the test peer sets itself (<linux/in.h>, <linux/in6.h>).
IP_RECVTTL, IP_RECVTOS, IP_TTL_CMSG, IP_TOS_CMSG = 12, 13, 2, 1
IPV6_RECVHOPLIMIT, IPV6_HOPLIMIT, IPV6_RECVTCLASS = 51, 52, 66


@pytest.fixture(params=sorted(dataplane.implementations()))
def impl(request: pytest.FixtureRequest) -> Twin:
    return dataplane.implementations()[request.param]


def sender_open(seq: int, ts: int, ee: int = 0x3FFF, padding: bytes = b"") -> bytes:
    return struct.pack("!IQH", seq, ts, ee) + padding


def sender_auth(seq: int, ts: int, ee: int = 0x3FFF, padding: bytes = b"") -> bytearray:
    return bytearray(struct.pack("!I12xQH6x16x", seq, ts, ee) + padding)


def protected(crypto: TestPacketCrypto, pkt: bytearray) -> bytes:
    crypto.protect_sender(pkt)
    return bytes(pkt)


class Peer:
    """A Session-Sender's socket on loopback that reads the TTL and TOS of what it receives."""

    def __init__(self, host: str = "127.0.0.1", *, ttl: int = 64, tos: int = 0) -> None:
        self.v6 = ":" in host
        self.sock = socket.socket(socket.AF_INET6 if self.v6 else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        if self.v6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
            self.sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TCLASS, tos)
            self.sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
            self.sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVTCLASS, 1)
        else:
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
            self.sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
            self.sock.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)

    @property
    def addr(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def send(self, data: bytes, dest: tuple[Any, ...]) -> None:
        self.sock.sendto(data, dest[:2])

    def recv(self, timeout: float = WAIT) -> tuple[bytes, int | None, int | None]:
        """(payload, TTL or hop limit, TOS or traffic class) of the next datagram."""
        self.sock.settimeout(timeout)
        data, anc, _, _ = self.sock.recvmsg(4096, 256)
        ttl = tos = None
        for level, kind, value in anc:
            if (level, kind) in (
                (socket.IPPROTO_IP, IP_TTL_CMSG),
                (socket.IPPROTO_IPV6, IPV6_HOPLIMIT),
            ):
                ttl = int.from_bytes(value[:4], sys.byteorder)
            elif (level, kind) == (socket.IPPROTO_IP, IP_TOS_CMSG):
                tos = value[0]
            elif (level, kind) == (socket.IPPROTO_IPV6, IPV6_TCLASS):
                tos = int.from_bytes(value[:4], sys.byteorder)
        return data, ttl, tos

    def expect_nothing(self) -> None:
        self.sock.settimeout(QUIET)
        with pytest.raises(TimeoutError):
            self.sock.recv(4096)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def peers() -> Iterator[Callable[..., Peer]]:
    made: list[Peer] = []

    def make(host: str = "127.0.0.1", **kw: int) -> Peer:
        made.append(Peer(host, **kw))
        return made[-1]

    yield make
    for p in made:
        p.close()


@pytest.fixture
def rsock() -> Iterator[Callable[[str], socket.socket]]:
    made: list[socket.socket] = []

    def make(host: str = "127.0.0.1") -> socket.socket:
        made.append(open_test_socket(host, 0))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.fixture
def offline(impl: Twin) -> Iterator[Callable[..., Any]]:
    """Reflectors for process() tests; their (never used) sockets are closed afterwards."""
    made: list[socket.socket] = []

    def make(family: int = socket.AF_INET, **kw: Any) -> Any:
        made.append(socket.socket(family, socket.SOCK_DGRAM))
        return impl.Reflector(made[-1], **kw)

    yield make
    for s in made:
        s.close()


@contextmanager
def running(impl: Twin, sock: socket.socket, **kw: Any) -> Iterator[Any]:
    refl = impl.Reflector(sock, **kw)
    refl.start()
    try:
        yield refl
    finally:
        t0 = time.monotonic()
        refl.stop()
        assert time.monotonic() - t0 < 1.0, "stop() took too long"


def wait_until(cond: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


def dest(sock: socket.socket, host: str | None = None) -> tuple[str, int]:
    bound = sock.getsockname()
    return (host or bound[0], bound[1])


# --------------------------------------------------------------------------------------------
# process(): behaviour without sockets


RX_NS = 1_700_000_000_500_000_000  # 2023-11-14 22:13:20.5 UTC
# NTP seconds 1_700_000_000 + 2_208_988_800 = 3_908_988_800 = 0xE8FE_6F80; 0.5 s = 0x8000_0000.
RX_NTP_HEX = "e8fe6f8080000000"


def test_process_open_known_answer(offline: Callable[..., Any]) -> None:
    refl = offline()
    refl.add_session(SessionSpec(("192.0.2.7", 4000), OPEN))
    req = bytes.fromhex("0102030411223344556677883fff") + bytes([0xAA]) * 27
    before = time.time_ns()
    out = refl.process(req, ("192.0.2.7", 4000), RX_NS, 64, 0x29)
    after = time.time_ns()
    assert out is not None
    reply, tos = out
    assert tos == 0x29  # no session DSCP: the received TOS octet (DSCP and ECN) is kept
    ee = clock.error_estimate()
    expected_tail = bytes.fromhex(
        f"{ee:04x}0000" + RX_NTP_HEX + "0102030411223344556677883fff000040"
    )
    assert len(reply) == 41
    assert reply[0:4] == bytes(4)  # own counter, first packet
    assert reply[12:] == expected_tail
    assert before <= ns_from_ntp(int.from_bytes(reply[4:12], "big")) <= after


def test_process_truncates_padding_to_request_length(offline: Callable[..., Any]) -> None:
    refl = offline()
    refl.add_session(SessionSpec(("192.0.2.7", 4000), OPEN, dscp=46))
    req = sender_open(5, 1, padding=bytes(range(40)))  # 54 octets
    out = refl.process(req, ("192.0.2.7", 4000), RX_NS, 64, 0)
    assert out is not None
    reply, tos = out
    assert tos == 46 << 2
    # RFC 5357 §4.2.1: keep the lowest-numbered padding octets, drop the highest.
    assert len(reply) == 54
    assert reply[41:] == bytes(range(13))


@pytest.mark.parametrize(("fmt", "req_len", "reply_len"), [(OPEN, 14, 41), (AUTH, 48, 112)])
def test_process_short_requests_get_base_replies(
    offline: Callable[..., Any], fmt: TestFormat, req_len: int, reply_len: int
) -> None:
    refl = offline()
    peer_crypto = reflector_crypto = None
    if fmt is AUTH:
        peer_crypto = TestPacketCrypto(KEYS, TestMode.AUTHENTICATED)
        reflector_crypto = TestPacketCrypto(KEYS, TestMode.AUTHENTICATED)
    refl.add_session(SessionSpec(("192.0.2.7", 4000), fmt, reflector_crypto))
    req = sender_open(9, 77) if peer_crypto is None else protected(peer_crypto, sender_auth(9, 77))
    assert len(req) == req_len
    out = refl.process(req, ("192.0.2.7", 4000), RX_NS, 255, 0)
    assert out is not None
    assert len(out[0]) == reply_len


def test_process_stateful_counts_and_stateless_copies(offline: Callable[..., Any]) -> None:
    refl = offline()
    refl.add_session(SessionSpec(("192.0.2.1", 1000), OPEN))
    refl.add_session(SessionSpec(("192.0.2.2", 1000), OPEN, stateful=False))
    sent = [100, 57, 9]
    stateful = [refl.process(sender_open(s, 1), ("192.0.2.1", 1000), RX_NS, 64, 0) for s in sent]
    stateless = [refl.process(sender_open(s, 1), ("192.0.2.2", 1000), RX_NS, 64, 0) for s in sent]
    assert [int.from_bytes(r[0][0:4], "big") for r in stateful if r] == [0, 1, 2]
    assert [int.from_bytes(r[0][0:4], "big") for r in stateless if r] == sent
    # Sender Sequence Number is always the copy.
    assert [int.from_bytes(r[0][24:28], "big") for r in stateful if r] == sent


def test_process_admission_and_counters(offline: Callable[..., Any]) -> None:
    refl = offline(socket.AF_INET6)
    slot = refl.add_session(SessionSpec(("::ffff:192.0.2.1", 1000), OPEN))
    req = sender_open(1, 2)
    assert refl.process(req, ("192.0.2.1", 1001), RX_NS, 64, 0) is None  # wrong port
    assert refl.process(req, ("192.0.2.2", 1000), RX_NS, 64, 0) is None  # wrong address
    assert refl.process(req, ("::ffff:192.0.2.1", 1000), RX_NS, 64, 0) is not None  # v4-mapped
    assert refl.process(req, ("192.0.2.1", 1000), RX_NS + 1, 64, 0) is not None
    assert refl.process(req[:13], ("192.0.2.1", 1000), RX_NS + 2, 64, 0) is None  # short
    assert refl.counters() == {
        "received": 5,
        "reflected": 2,
        "unknown_peer": 2,
        "malformed": 1,
        "auth_failed": 0,
        "late": 0,
        "send_errors": 0,
        "light_evicted": 0,
        "rate_limited": 0,
    }
    sc = refl.session_counters(slot)
    assert (sc["received"], sc["reflected"], sc["dropped"], sc["errors"]) == (3, 2, 1, 0)
    assert sc["last_rx_ns"] == RX_NS + 1  # the malformed one does not count as alive


def test_process_stop_deadline(offline: Callable[..., Any]) -> None:
    refl = offline()
    slot = refl.add_session(SessionSpec(("192.0.2.1", 1000), OPEN))
    refl.stop_session(slot, RX_NS + 1000)
    peer = ("192.0.2.1", 1000)
    assert refl.process(sender_open(0, 1), peer, RX_NS + 1000, 64, 0) is not None  # on time
    assert refl.process(sender_open(1, 1), peer, RX_NS + 1001, 64, 0) is None  # late
    assert refl.counters()["late"] == 1
    assert refl.session_counters(slot)["dropped"] == 1


def test_process_dscp_ecn_format_reports_received_tos(offline: Callable[..., Any]) -> None:
    # RFC 7750 §2.2.1: S-DSCP-ECN at octet 41 is the received TOS octet; header 44.
    refl = offline()
    refl.add_session(SessionSpec(("192.0.2.1", 1000), TestFormat(TestMode.OPEN, dscp_ecn=True)))
    out = refl.process(sender_open(0, 1), ("192.0.2.1", 1000), RX_NS, 64, 0xB9)
    assert out is not None
    assert len(out[0]) == 44
    assert out[0][40:44] == bytes([64, 0xB9, 0, 0])


@pytest.mark.parametrize("mode", [TestMode.AUTHENTICATED, TestMode.ENCRYPTED])
def test_process_protected_modes(offline: Callable[..., Any], mode: TestMode) -> None:
    fmt = TestFormat(mode)
    sender_side = TestPacketCrypto(KEYS, mode)
    refl = offline()
    slot = refl.add_session(SessionSpec(("192.0.2.1", 1000), fmt, TestPacketCrypto(KEYS, mode)))
    req = protected(sender_side, sender_auth(0xA1B2C3D4, 0x0102030405060708, 0x8587, bytes(74)))
    before = time.time_ns()
    out = refl.process(req, ("192.0.2.1", 1000), RX_NS, 61, 0)
    after = time.time_ns()
    assert out is not None
    reply = bytearray(out[0])
    assert len(reply) == 122  # 48 + 74 padding -> 112 + 10
    assert reply[:96] != bytes(96)
    sender_side.unprotect_reflector(reply)  # raises if the HMAC is wrong
    seq, ts, ee, rts, s_seq, s_ts, s_ee, ttl, _ = REFL_AUTH.unpack_from(reply)
    assert (seq, s_seq, s_ts, s_ee, ttl) == (0, 0xA1B2C3D4, 0x0102030405060708, 0x8587, 61)
    assert rts == int(RX_NTP_HEX, 16)
    assert ee == clock.error_estimate()
    assert before <= ns_from_ntp(ts) <= after
    # A forged packet: flip one HMAC octet.
    bad = bytearray(protected(sender_side, sender_auth(1, 2)))
    bad[40] ^= 1
    assert refl.process(bytes(bad), ("192.0.2.1", 1000), RX_NS, 64, 0) is None
    assert refl.counters()["auth_failed"] == 1
    assert refl.session_counters(slot)["dropped"] == 1


def test_process_light_policy(offline: Callable[..., Any]) -> None:
    # LightPolicy converts network strings itself; its annotation names the result.
    allow: Any = ("192.0.2.0/24",)
    light = LightPolicy(OPEN, stateful=True, allow=allow, dscp=10, max_peers=2)
    refl = offline(light=light)
    seqs: dict[tuple[str, int], list[int]] = {}
    for peer in [("192.0.2.1", 1), ("192.0.2.2", 1), ("192.0.2.1", 1), ("192.0.2.2", 1)]:
        out = refl.process(sender_open(50, 1), peer, RX_NS, 64, 0)
        assert out is not None
        assert out[1] == 10 << 2
        seqs.setdefault(peer, []).append(int.from_bytes(out[0][0:4], "big"))
    assert seqs == {("192.0.2.1", 1): [0, 1], ("192.0.2.2", 1): [0, 1]}  # a counter per peer
    assert refl.process(sender_open(0, 1), ("198.51.100.1", 1), RX_NS, 64, 0) is None  # not allowed
    assert refl.counters()["unknown_peer"] == 1
    assert refl.counters()["light_evicted"] == 0


def _light_seq(refl: Any, peer: tuple[str, int], seq: int, rx_ns: int, ssid: int = 0) -> int:
    """The reflector's Sequence Number in its reply to a STAMP request (RFC 8972 SSID)."""
    req = bytearray(44)
    req[0:4] = seq.to_bytes(4, "big")
    req[12:14] = (0x3FFF).to_bytes(2, "big")  # a valid Error Estimate
    req[14:16] = ssid.to_bytes(2, "big")  # RFC 8972 §3: the SSID at octets 14-15
    out = refl.process(bytes(req), peer, rx_ns, 64, 0)
    assert out is not None
    return int.from_bytes(out[0][0:4], "big")


STAMP_FMT = TestFormat(TestMode.OPEN, stamp=True)


def test_light_table_is_lru_bounded(offline: Callable[..., Any]) -> None:
    """A full table evicts the least recently used sender: a new one is never locked out."""
    refl = offline(light=LightPolicy(STAMP_FMT, stateful=True, max_peers=3))
    a, b, c, d = (("192.0.2.1", p) for p in (1, 2, 3, 4))
    for peer in (a, b, c):
        assert _light_seq(refl, peer, 5, RX_NS) == 0
    assert _light_seq(refl, a, 6, RX_NS + 1) == 1  # a is now the most recent; b the least
    assert _light_seq(refl, d, 5, RX_NS + 2) == 0  # full: b goes
    assert refl.counters()["light_evicted"] == 1
    assert _light_seq(refl, c, 6, RX_NS + 3) == 1  # c kept its state
    assert _light_seq(refl, a, 7, RX_NS + 4) == 2  # a too
    assert _light_seq(refl, b, 6, RX_NS + 5) == 0  # b starts afresh (and evicts d)
    assert refl.counters()["light_evicted"] == 2
    assert refl.counters()["unknown_peer"] == 0
    # 4,096 source ports of one host cannot lock a newcomer out.
    many = offline(light=LightPolicy(STAMP_FMT, stateful=True, max_peers=64))
    for port in range(1, 4097):
        _light_seq(many, ("198.51.100.7", port), 1, RX_NS)
    assert _light_seq(many, ("203.0.113.1", 9), 1, RX_NS) == 0
    assert many.counters()["light_evicted"] == 4097 - 64


def test_light_state_expires_and_follows_sequence_restarts(offline: Callable[..., Any]) -> None:
    idle = 5_000_000_000
    refl = offline(light=LightPolicy(STAMP_FMT, stateful=True, idle_ns=idle))
    peer = ("192.0.2.9", 862)
    assert [_light_seq(refl, peer, s, RX_NS + s) for s in (1, 2, 3)] == [0, 1, 2]
    # Silent for longer than idle_ns: a new test session, the counter starts again.
    later = RX_NS + 3 + idle + 1
    assert _light_seq(refl, peer, 4, later) == 0
    assert _light_seq(refl, peer, 5, later + idle) == 1  # exactly idle_ns apart: the same one
    # The sender's own sequence restarts at 0: so does ours.
    assert _light_seq(refl, peer, 0, later + idle + 1) == 0
    assert _light_seq(refl, peer, 1, later + idle + 2) == 1
    assert refl.counters()["light_evicted"] == 0


def test_light_state_is_keyed_by_ssid(offline: Callable[..., Any]) -> None:
    """RFC 8972 §3: two test sessions from one address and port, told apart by their SSID."""
    refl = offline(light=LightPolicy(STAMP_FMT, stateful=True, max_peers=2))
    peer = ("2001:db8::5", 4000)
    got = [_light_seq(refl, peer, 10 + i, RX_NS + i, ssid) for i, ssid in enumerate((7, 7, 9, 7))]
    assert got == [0, 1, 0, 2]
    # A third SSID fills the table of two: the least recent (SSID 9) goes, SSID 7 stays.
    assert _light_seq(refl, peer, 20, RX_NS + 10, ssid=11) == 0
    assert _light_seq(refl, peer, 21, RX_NS + 11, ssid=7) == 3
    assert _light_seq(refl, peer, 22, RX_NS + 12, ssid=9) == 0
    assert refl.counters()["light_evicted"] == 2


def test_process_light_stateless_copies_sequence(offline: Callable[..., Any]) -> None:
    light = LightPolicy(OPEN, stateful=False)
    refl = offline(light=light)
    for seq in (7, 3, 7):
        out = refl.process(sender_open(seq, 1), ("203.0.113.9", 9), RX_NS, 64, 0x04)
        assert out is not None
        assert int.from_bytes(out[0][0:4], "big") == seq
        assert out[1] == 0x04  # no DSCP configured: the received TOS


def test_session_table_slots(offline: Callable[..., Any]) -> None:
    refl = offline()
    a = refl.add_session(SessionSpec(("192.0.2.1", 1), OPEN))
    b = refl.add_session(SessionSpec(("192.0.2.2", 1), OPEN))
    assert a != b
    with pytest.raises(ValueError):
        refl.add_session(SessionSpec(("192.0.2.1", 1), OPEN))
    refl.process(sender_open(0, 1), ("192.0.2.1", 1), RX_NS, 64, 0)
    final = refl.remove_session(a)
    assert (final["received"], final["reflected"]) == (1, 1)
    with pytest.raises(KeyError):
        refl.session_counters(a)
    assert refl.process(sender_open(0, 1), ("192.0.2.1", 1), RX_NS, 64, 0) is None
    assert refl.add_session(SessionSpec(("192.0.2.3", 1), OPEN)) == a  # the free slot is reused
    assert refl.session_counters(b)["received"] == 0


def test_spec_validation() -> None:
    crypto = TestPacketCrypto(KEYS, TestMode.AUTHENTICATED)
    assert SessionSpec(("::FFFF:10.1.2.3", 5), OPEN).peer == ("10.1.2.3", 5)
    assert SessionSpec(("2001:DB8:0::1", 5), OPEN).peer == ("2001:db8::1", 5)
    with pytest.raises(ValueError):
        SessionSpec(("10.0.0.1", 5), AUTH)  # no crypto
    with pytest.raises(ValueError):
        SessionSpec(("10.0.0.1", 5), OPEN, crypto)
    with pytest.raises(ValueError):
        SessionSpec(("10.0.0.1", 5), OPEN, dscp=64)
    with pytest.raises(ValueError):
        SessionSpec(("10.0.0.1", 0), OPEN)
    with pytest.raises(ValueError):
        SessionSpec(("not-an-address", 5), OPEN)
    with pytest.raises(ValueError):
        LightPolicy(AUTH, stateful=False)


# --------------------------------------------------------------------------------------------
# dataplane.sockets


def test_parse_ancillary_hand_made() -> None:
    ts = struct.pack("@ll", 1_700_000_000, 123_456_789)
    anc = [
        (socket.SOL_SOCKET, SO_TIMESTAMPNS, ts),
        (socket.IPPROTO_IP, 2, struct.pack("@i", 57)),  # IP_TTL
        (socket.IPPROTO_IP, 1, b"\xb9"),  # IP_TOS: one octet
    ]
    assert parse_ancillary(anc) == (1_700_000_000_123_456_789, 57, 0xB9)
    anc6 = [
        (socket.IPPROTO_IPV6, 52, struct.pack("@i", 3)),
        (socket.IPPROTO_IPV6, 67, struct.pack("@i", 0x2A)),
    ]
    assert parse_ancillary(anc6) == (None, 3, 0x2A)
    assert parse_ancillary([]) == (None, None, None)


def test_tos_ancillary_picks_the_family_of_the_peer() -> None:
    native_b8 = struct.pack("@i", 0xB8)
    assert tos_ancillary(socket.AF_INET, "127.0.0.1", 0xB8) == [(socket.IPPROTO_IP, 1, native_b8)]
    assert tos_ancillary(socket.AF_INET6, ("::1", 5, 0, 0), 0xB8) == [
        (socket.IPPROTO_IPV6, 67, native_b8)
    ]
    # Linux: IPV6_TCLASS is ignored towards v4-mapped peers.
    assert tos_ancillary(socket.AF_INET6, "::ffff:127.0.0.1", 0xB8) == [
        (socket.IPPROTO_IP, 1, native_b8)
    ]


def test_open_test_socket_options(rsock: Callable[[str], socket.socket]) -> None:
    s = rsock("127.0.0.1")
    assert s.getsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS) == 1
    assert s.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 255
    assert s.getsockopt(socket.IPPROTO_IP, IP_RECVTTL) == 1
    assert s.getsockopt(socket.IPPROTO_IP, IP_RECVTOS) == 1
    rcv, snd = buffer_sizes(s)
    if os.geteuid() == 0:  # SO_RCVBUFFORCE: the kernel grants (and reports double) 4 MiB
        assert rcv >= 4 << 20 and snd >= 4 << 20
    assert rcv > 0 and snd > 0
    d = rsock("::")
    assert d.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
    assert d.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS) == 255


# --------------------------------------------------------------------------------------------
# The loop, over real loopback sockets


def check_open_reply(reply: bytes, req: bytes, *, seq: int, ttl: int, t0: int, t1: int) -> None:
    r_seq, ts, ee, rts, s_seq, s_ts, s_ee, s_ttl = REFL_OPEN.unpack_from(reply)
    assert r_seq == seq
    assert (s_seq, s_ts, s_ee) == struct.unpack_from("!IQH", req)
    assert s_ttl == ttl
    assert ee_ok(ee)
    rx_ns, tx_ns = ns_from_ntp(rts), ns_from_ntp(ts)
    assert t0 <= rx_ns <= tx_ns <= t1


def ee_ok(ee: int) -> bool:
    """A valid reflector Error Estimate (Multiplier != 0) from the host clock."""
    return ee & 0xFF != 0 and ee == clock.error_estimate()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_loop_open_mode_fields(
    impl: Twin, rsock: Callable[[str], socket.socket], peers: Callable[..., Peer], host: str
) -> None:
    sock = rsock(host)
    peer = peers(host, ttl=64, tos=0x29)
    with running(impl, sock) as refl:
        slot = refl.add_session(SessionSpec(peer.addr, OPEN, dscp=46))
        for i, pad in enumerate([27, 60, 0]):
            req = sender_open(1000 + i, 0x1122334455667788 + i, 0x8587, bytes([i]) * pad)
            t0 = time.time_ns()
            peer.send(req, dest(sock))
            reply, ttl, tos = peer.recv()
            t1 = time.time_ns()
            assert len(reply) == max(len(req), 41)
            check_open_reply(reply, req, seq=i, ttl=64, t0=t0, t1=t1)
            assert reply[41:] == req[14 : 14 + len(reply) - 41]
            assert ttl == 255  # RFC 5357 §4.2.1
            assert tos == 46 << 2
        assert wait_until(lambda: refl.session_counters(slot)["reflected"] == 3)
        counters = refl.counters()
    assert (counters["received"], counters["reflected"]) == (3, 3)
    assert refl.session_counters(slot)["last_rx_ns"] > 0


def test_loop_preserves_tos_without_dscp(
    impl: Twin, rsock: Callable[[str], socket.socket], peers: Callable[..., Peer]
) -> None:
    sock = rsock("127.0.0.1")
    peer = peers(tos=0x29)  # DSCP 10, ECN 01: both survive
    with running(impl, sock) as refl:
        refl.add_session(SessionSpec(peer.addr, OPEN, stateful=False))
        for seq in (5, 3):
            peer.send(sender_open(seq, 1, padding=bytes(27)), dest(sock))
            reply, ttl, tos = peer.recv()
            assert tos == 0x29 and ttl == 255
            assert int.from_bytes(reply[0:4], "big") == seq  # stateless copy


def test_loop_receive_timestamp_is_the_kernels(
    impl: Twin, rsock: Callable[[str], socket.socket], peers: Callable[..., Peer]
) -> None:
    # A datagram queued before the loop starts keeps its arrival time (SO_TIMESTAMPNS), not the
    # time the loop got round to reading it.
    sock = rsock("127.0.0.1")
    peer = peers()
    refl = impl.Reflector(sock)
    refl.add_session(SessionSpec(peer.addr, OPEN))
    t0 = time.time_ns()
    peer.send(sender_open(0, 1), dest(sock))
    time.sleep(0.1)
    started = time.time_ns()
    with refl:
        reply, _, _ = peer.recv()
    rx_ns, tx_ns = (
        ns_from_ntp(int.from_bytes(reply[16:24], "big")),
        ns_from_ntp(int.from_bytes(reply[4:12], "big")),
    )
    assert t0 <= rx_ns < started <= tx_ns


def test_loop_dual_stack_v4_mapped_peer(
    impl: Twin, rsock: Callable[[str], socket.socket], peers: Callable[..., Peer]
) -> None:
    sock = rsock("::")
    peer = peers("127.0.0.1", ttl=64, tos=0)
    with running(impl, sock) as refl:
        slot = refl.add_session(SessionSpec(peer.addr, OPEN, dscp=34))
        req = sender_open(77, 5, padding=bytes(27))
        t0 = time.time_ns()
        peer.send(req, dest(sock, "127.0.0.1"))
        reply, ttl, tos = peer.recv()
        check_open_reply(reply, req, seq=0, ttl=64, t0=t0, t1=time.time_ns())
        assert ttl == 255
        assert tos == 34 << 2  # the IPv4 option: IPV6_TCLASS is ignored for v4-mapped peers
        assert refl.session_counters(slot)["received"] == 1


@pytest.mark.parametrize("mode", [TestMode.AUTHENTICATED, TestMode.ENCRYPTED])
def test_loop_protected_modes(
    impl: Twin,
    rsock: Callable[[str], socket.socket],
    peers: Callable[..., Peer],
    mode: TestMode,
) -> None:
    sock = rsock("127.0.0.1")
    peer = peers(ttl=70)
    sender_side = TestPacketCrypto(KEYS, mode)
    with running(impl, sock) as refl:
        spec = SessionSpec(peer.addr, TestFormat(mode), TestPacketCrypto(KEYS, mode), dscp=0)
        slot = refl.add_session(spec)
        for i, pad in enumerate([64, 0, 90]):
            req = protected(sender_side, sender_auth(i * 3, 0xAABB + i, 0x8F84, bytes([7]) * pad))
            t0 = time.time_ns()
            peer.send(req, dest(sock))
            wire, ttl, tos = peer.recv()
            t1 = time.time_ns()
            assert len(wire) == max(len(req), 112)
            assert (ttl, tos) == (255, 0)
            reply = bytearray(wire)
            sender_side.unprotect_reflector(reply)
            seq, ts, ee, rts, s_seq, s_ts, s_ee, s_ttl, _ = REFL_AUTH.unpack_from(reply)
            assert (seq, s_seq, s_ts, s_ee, s_ttl) == (i, i * 3, 0xAABB + i, 0x8F84, 70)
            assert ee_ok(ee)
            assert t0 <= ns_from_ntp(rts) <= ns_from_ntp(ts) <= t1
            assert reply[112:] == bytes([7]) * (len(reply) - 112)
        bad = bytearray(protected(sender_side, sender_auth(9, 9)))
        bad[33] ^= 0x80
        peer.send(bytes(bad), dest(sock))
        peer.expect_nothing()
        assert wait_until(lambda: refl.counters()["auth_failed"] == 1)
        assert refl.session_counters(slot)["reflected"] == 3


def test_loop_unknown_peer_and_malformed(
    impl: Twin, rsock: Callable[[str], socket.socket], peers: Callable[..., Peer]
) -> None:
    sock = rsock("127.0.0.1")
    peer, stranger = peers(), peers()
    with running(impl, sock) as refl:
        slot = refl.add_session(SessionSpec(peer.addr, OPEN))
        stranger.send(sender_open(0, 1, padding=bytes(27)), dest(sock))
        stranger.expect_nothing()
        assert wait_until(lambda: refl.counters()["unknown_peer"] == 1)
        peer.send(b"\x00" * 13, dest(sock))  # one octet short of the 14-octet header
        peer.send(b"", dest(sock))
        peer.expect_nothing()
        assert wait_until(lambda: refl.counters()["malformed"] == 2)
        peer.send(sender_open(1, 1), dest(sock))  # the loop is still alive
        reply, _, _ = peer.recv()
        assert len(reply) == 41
        assert int.from_bytes(reply[0:4], "big") == 0  # malformed ones did not use a number
        assert refl.session_counters(slot)["dropped"] == 2


def test_loop_stop_session_deadline(
    impl: Twin, rsock: Callable[[str], socket.socket], peers: Callable[..., Peer]
) -> None:
    sock = rsock("127.0.0.1")
    peer = peers()
    with running(impl, sock) as refl:
        slot = refl.add_session(SessionSpec(peer.addr, OPEN))
        refl.stop_session(slot, time.time_ns() + 30 * 10**9)  # stopped, Timeout not yet over
        peer.send(sender_open(0, 1), dest(sock))
        assert len(peer.recv()[0]) == 41
        refl.stop_session(slot, time.time_ns())  # the Timeout is over
        peer.send(sender_open(1, 1), dest(sock))
        peer.expect_nothing()
        assert wait_until(lambda: refl.counters()["late"] == 1)
        sc = refl.session_counters(slot)
        assert (sc["received"], sc["reflected"], sc["dropped"]) == (2, 1, 1)


def test_loop_sessions_added_and_removed_while_running(
    impl: Twin, rsock: Callable[[str], socket.socket], peers: Callable[..., Peer]
) -> None:
    sock = rsock("127.0.0.1")
    a, b = peers(), peers()
    with running(impl, sock) as refl:
        a.send(sender_open(0, 1), dest(sock))
        a.expect_nothing()
        slot_a = refl.add_session(SessionSpec(a.addr, OPEN))
        slot_b = refl.add_session(SessionSpec(b.addr, OPEN, stateful=False))
        for _ in range(3):
            a.send(sender_open(0, 1), dest(sock))
            b.send(sender_open(42, 1), dest(sock))
        assert [int.from_bytes(a.recv()[0][:4], "big") for _ in range(3)] == [0, 1, 2]
        assert [int.from_bytes(b.recv()[0][:4], "big") for _ in range(3)] == [42] * 3
        # A reply can overtake the loop's own count of it.
        assert wait_until(lambda: refl.session_counters(slot_a)["reflected"] == 3)
        final = refl.remove_session(slot_a)
        assert final["reflected"] == 3
        a.send(sender_open(0, 1), dest(sock))
        a.expect_nothing()
        b.send(sender_open(43, 1), dest(sock))
        assert int.from_bytes(b.recv()[0][:4], "big") == 43
        assert wait_until(lambda: refl.counters()["unknown_peer"] == 2)
        assert wait_until(lambda: refl.session_counters(slot_b)["reflected"] == 4)


def test_loop_light_allow_list(
    impl: Twin, rsock: Callable[[str], socket.socket], peers: Callable[..., Peer]
) -> None:
    sock = rsock("::")
    v4, v6 = peers("127.0.0.1"), peers("::1")
    allow: Any = ("127.0.0.0/8",)  # converted by LightPolicy, as above
    light = LightPolicy(OPEN, stateful=True, allow=allow, dscp=8)
    with running(impl, sock, light=light) as refl:
        for _ in range(2):
            v4.send(sender_open(9, 1, padding=bytes(27)), dest(sock, "127.0.0.1"))
        replies = [v4.recv() for _ in range(2)]
        assert [int.from_bytes(r[0][:4], "big") for r in replies] == [0, 1]
        assert all(r[2] == 8 << 2 for r in replies)
        v6.send(sender_open(9, 1), dest(sock, "::1"))  # ::1 is not in 127.0.0.0/8
        v6.expect_nothing()
        assert wait_until(lambda: refl.counters()["unknown_peer"] == 1)


def test_loop_busy_poll_and_batch_one(
    impl: Twin, rsock: Callable[[str], socket.socket], peers: Callable[..., Peer]
) -> None:
    sock = rsock("127.0.0.1")
    peer = peers()
    with running(impl, sock, busy_poll=True, batch=1) as refl:
        refl.add_session(SessionSpec(peer.addr, OPEN))
        for i in range(20):
            peer.send(sender_open(i, 1), dest(sock))
        assert sorted(int.from_bytes(peer.recv()[0][24:28], "big") for _ in range(20)) == list(
            range(20)
        )


def test_stop_is_prompt_and_restartable(
    impl: Twin, rsock: Callable[[str], socket.socket], peers: Callable[..., Peer]
) -> None:
    sock = rsock("127.0.0.1")
    peer = peers()
    refl = impl.Reflector(sock)
    refl.add_session(SessionSpec(peer.addr, OPEN))
    for _ in range(2):
        with refl:
            peer.send(sender_open(0, 1), dest(sock))
            peer.recv()
            time.sleep(0.05)  # idle in poll()
            t0 = time.monotonic()
        assert time.monotonic() - t0 < 0.3
    peer.send(sender_open(0, 1), dest(sock))  # stopped: nobody answers
    peer.expect_nothing()
    assert refl.counters()["reflected"] == 2


def test_implementation_names() -> None:
    impls = dataplane.implementations()
    assert "python" in impls
    assert dataplane.IMPLEMENTATION in impls
    for name, module in impls.items():
        assert name == module.Reflector.IMPLEMENTATION


def _import_dataplane(**env: str) -> subprocess.CompletedProcess[str]:
    code = "import twamp.dataplane as f; print(f.IMPLEMENTATION, f.Sender.IMPLEMENTATION)"
    full = {k: v for k, v in os.environ.items() if not k.startswith("TWAMP_")} | env
    return subprocess.run(
        [sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=60
    )


def test_selector_environment() -> None:
    forced = _import_dataplane(TWAMP_PURE_PYTHON="1")
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.split() == ["python", "python"]
    required = _import_dataplane(TWAMP_REQUIRE_EXTENSION="1")
    if "cython" in dataplane.implementations():
        assert required.returncode == 0, required.stderr
        assert required.stdout.split() == ["cython", "cython"]
    else:
        assert required.returncode != 0
        assert "ImportError" in required.stderr
        assert "required" in required.stderr


def test_light_symmetric_only_never_amplifies(offline: Callable[..., Any]) -> None:
    for stateful in (False, True):
        refl = offline(light=LightPolicy(STAMP_FMT, stateful=stateful, symmetric_only=True))
        short = sender_open(1, 2)  # 14 octets: the 44-octet STAMP reply would be larger
        assert refl.process(short, ("192.0.2.1", 5), RX_NS, 64, 0) is None
        full = sender_open(1, 2, padding=bytes(30))  # 44 octets: as long as the reply
        out = refl.process(full, ("192.0.2.1", 5), RX_NS, 64, 0)
        assert out is not None and len(out[0]) == len(full)
        c = refl.counters()
        assert (c["malformed"], c["reflected"]) == (1, 1), c
    # Negotiated sessions are not Light: the policy does not touch them.
    refl = offline(light=LightPolicy(STAMP_FMT, stateful=False, symmetric_only=True))
    refl.add_session(SessionSpec(("192.0.2.7", 1), OPEN))
    assert refl.process(sender_open(1, 2), ("192.0.2.7", 1), RX_NS, 64, 0) is not None


def test_light_rate_limit_per_source(offline: Callable[..., Any]) -> None:
    """LightPolicy.rate_pps: a token bucket (GCRA) per source address, any port."""
    ms = 1_000_000
    refl = offline(light=LightPolicy(OPEN, stateful=False, rate_pps=1000, burst=3))
    a, b = ("192.0.2.1", 1), ("192.0.2.1", 2)  # one address, two ports: one bucket
    got = [
        refl.process(sender_open(i, 1), (a, b)[i % 2], RX_NS, 64, 0) is not None for i in range(5)
    ]
    assert got == [True, True, True, False, False]  # a burst of 3 at one instant
    assert refl.process(sender_open(9, 1), ("192.0.2.2", 1), RX_NS, 64, 0) is not None
    assert refl.process(sender_open(9, 1), a, RX_NS + 1 * ms, 64, 0) is not None  # refilled
    assert refl.process(sender_open(9, 1), a, RX_NS + 1 * ms, 64, 0) is None
    assert refl.counters()["rate_limited"] == 3
    # Negotiated sessions are not rate limited.
    refl.add_session(SessionSpec(("192.0.2.7", 1), OPEN))
    assert all(
        refl.process(sender_open(i, 1), ("192.0.2.7", 1), RX_NS, 64, 0) is not None
        for i in range(10)
    )
