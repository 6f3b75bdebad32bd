"""The compiled Reflector against its pure-Python twin, datagram for datagram.

Both twins get identical inputs (every TestFormat, modes 1/2/4, stateful and stateless, Light
policies, short, forged and random datagrams, unknown and odd peers), through `process()` and
over real loopback sockets; their replies must be byte-identical once the fields that are
legitimately different are masked: the transmit Timestamp (read from each twin's own clock) and,
over sockets, the Receive Timestamp (each run has its own arrival times). Encrypted replies are
decrypted first; mode 4 covers the Timestamp, so the raw bytes cannot match. Counters must be
equal after every datagram. `tests/test_reflector.py` checks each twin against the spec; this
file checks that they are twins.
"""

from __future__ import annotations

import importlib.machinery
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twamp import dataplane
from twamp.constants import TestMode
from twamp.crypto import TestPacketCrypto, derive_test_keys
from twamp.dataplane import Twin
from twamp.dataplane.sockets import open_test_socket
from twamp.dataplane.types import REFLECTOR_SEND_BATCH
from twamp.timestamps import ns_from_ntp
from twamp.wire.packets import TestFormat, build_sender

PURE = dataplane.implementations()["python"]

REQUIRE = os.environ.get("TWAMP_REQUIRE_EXTENSION", "") not in ("", "0")
SID = bytes(range(0x30, 0x40))
KEYS = derive_test_keys(SID, bytes(range(16)), bytes(range(0x40, 0x60)))
RX_NS = 1_700_000_000_000_000_000
WAIT = 2.0

FORMATS = [
    TestFormat(TestMode.OPEN),
    TestFormat(TestMode.OPEN, symmetrical=True),
    TestFormat(TestMode.OPEN, dscp_ecn=True),
    TestFormat(TestMode.OPEN, symmetrical=True, dscp_ecn=True),
    TestFormat(TestMode.OPEN, stamp=True),
    TestFormat(TestMode.AUTHENTICATED),
    TestFormat(TestMode.AUTHENTICATED, symmetrical=True),
    TestFormat(TestMode.AUTHENTICATED, dscp_ecn=True),
    TestFormat(TestMode.ENCRYPTED),
    TestFormat(TestMode.ENCRYPTED, symmetrical=True, dscp_ecn=True),
]


def _fmt_id(fmt: TestFormat) -> str:
    flags = [f for f in ("symmetrical", "dscp_ecn", "stamp") if getattr(fmt, f)]
    return "-".join([fmt.test_mode.value, *flags])


def _compiled() -> Twin:
    twins = dataplane.implementations()
    if "cython" not in twins:
        if REQUIRE:
            pytest.fail("TWAMP_REQUIRE_EXTENSION=1 but the compiled data plane is not importable")
        pytest.skip("the compiled twin (twamp.dataplane) is not built")
    return twins["cython"]


@pytest.fixture
def compiled() -> Twin:
    return _compiled()


def test_compiled_twin_is_the_one_in_use_when_required() -> None:
    if not REQUIRE:
        if dataplane.implementations().get("cython") is None:
            pytest.skip("not built, and TWAMP_REQUIRE_EXTENSION is not set")
    else:
        assert dataplane.IMPLEMENTATION == "cython"
        assert dataplane.Reflector.IMPLEMENTATION == "cython"
    compiled = _compiled()
    for module in (compiled.reflector_module, compiled.sender_module):
        # A pure module posing under the name would end in .py.
        assert module.__file__ is not None
        assert module.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
        assert module.IMPLEMENTATION == "cython"
    assert compiled.IMPLEMENTATION == "cython"
    assert compiled.Reflector.IMPLEMENTATION == compiled.Sender.IMPLEMENTATION == "cython"
    # The plain data classes are shared, so callers can build specs once for either twin.
    assert compiled.SessionSpec is PURE.SessionSpec is dataplane.SessionSpec
    assert compiled.LightPolicy is PURE.LightPolicy is dataplane.LightPolicy


# --------------------------------------------------------------------------------------------
# process(): identical inputs, identical outputs


def crypto_for(fmt: TestFormat) -> TestPacketCrypto | None:
    return None if fmt.test_mode is TestMode.OPEN else TestPacketCrypto(KEYS, fmt.test_mode)


def canonical(fmt: TestFormat, reply: bytes) -> bytes:
    """The reply with its transmit Timestamp zeroed; decrypted first in mode 4."""
    data = bytearray(reply)
    if fmt.test_mode is TestMode.ENCRYPTED:
        peer = TestPacketCrypto(KEYS, fmt.test_mode)
        peer.unprotect_reflector(data)  # raises if the HMAC is wrong
        data[96:112] = bytes(16)  # it covers the Timestamp
    o = fmt.timestamp_offset
    data[o : o + 8] = bytes(8)
    return bytes(data)


def transmit_ns(fmt: TestFormat, reply: bytes) -> int:
    data = bytearray(reply)
    if fmt.test_mode is TestMode.ENCRYPTED:
        TestPacketCrypto(KEYS, fmt.test_mode).unprotect_reflector(data)
    o = fmt.timestamp_offset
    return ns_from_ntp(int.from_bytes(data[o : o + 8], "big"))


@dataclass
class Pair:
    """The same sessions in both twins' Reflectors (sockets never used: process() only)."""

    py: Any
    c: Any
    socks: list[socket.socket]

    def call(self, data: Any, peer: tuple[Any, ...], rx_ns: int, ttl: int, tos: int) -> None:
        before = time.time_ns()
        out_py = self.py.process(data, peer, rx_ns, ttl, tos)
        out_c = self.c.process(data, peer, rx_ns, ttl, tos)
        after = time.time_ns()
        assert (out_py is None) == (out_c is None), (data, peer, out_py, out_c)
        self.check_counters()
        if out_py is None:
            return
        assert out_py[1] == out_c[1]  # the reply's TOS
        assert len(out_py[0]) == len(out_c[0])
        fmt = self.fmt_of(peer)
        assert canonical(fmt, out_c[0]) == canonical(fmt, out_py[0])
        if fmt.test_mode is TestMode.AUTHENTICATED:
            # Mode 2 protects octets 0-15 only: the raw bytes match but for the Timestamp.
            assert out_c[0][:16] == out_py[0][:16] and out_c[0][24:] == out_py[0][24:]
        assert before <= transmit_ns(fmt, out_c[0]) <= after

    fmts: dict[tuple[str, int], TestFormat] | None = None
    light_fmt: TestFormat | None = None

    def fmt_of(self, peer: tuple[Any, ...]) -> TestFormat:
        assert self.fmts is not None
        key = (dataplane.normalize_ip(peer[0]), peer[1])
        if key in self.fmts:
            return self.fmts[key]
        assert self.light_fmt is not None
        return self.light_fmt

    def add(self, spec_kw: dict[str, Any]) -> int:
        fmt = spec_kw["fmt"]
        a = self.py.add_session(PURE.SessionSpec(**spec_kw, crypto=crypto_for(fmt)))
        b = self.c.add_session(PURE.SessionSpec(**spec_kw, crypto=crypto_for(fmt)))
        assert a == b
        assert isinstance(a, int)
        assert self.fmts is not None
        self.fmts[PURE.SessionSpec(**spec_kw, crypto=crypto_for(fmt)).peer] = fmt
        return a

    def check_counters(self) -> None:
        assert self.c.counters() == self.py.counters()


@pytest.fixture
def pair(compiled: Twin) -> Iterator[Callable[..., Pair]]:
    made: list[socket.socket] = []

    def make(family: int = socket.AF_INET, **kw: Any) -> Pair:
        a = socket.socket(family, socket.SOCK_DGRAM)
        b = socket.socket(family, socket.SOCK_DGRAM)
        made.extend([a, b])
        p = Pair(PURE.Reflector(a, **kw), compiled.Reflector(b, **kw), [a, b])
        p.fmts = {}
        light = kw.get("light")
        p.light_fmt = None if light is None else light.fmt
        return p

    yield make
    for s in made:
        s.close()


def requests(fmt: TestFormat, rng: random.Random) -> list[bytes]:
    """Valid, short, forged and random requests of one format."""
    sender = crypto_for(fmt)
    out: list[bytes] = []
    for seq, pad in enumerate([0, 1, 27, 64, 71, 200, 1400]):
        pkt = build_sender(
            fmt,
            rng.getrandbits(32),
            rng.getrandbits(64),
            rng.getrandbits(16),
            rng.randbytes(pad),
            ssid=rng.getrandbits(16) if fmt.stamp else 0,
        )
        if sender is not None:
            sender.protect_sender(pkt)
        out.append(bytes(pkt))
        if seq == 2:
            forged = bytearray(pkt)
            forged[rng.randrange(len(forged))] ^= 1 << rng.randrange(8)
            out.append(bytes(forged))  # open modes: just other field values
    if fmt.stamp and not fmt.authenticated:
        # RFC 8762 §4.6: an unauthenticated STAMP reflector answers TWAMP Light requests too,
        # with or without the SSID octets.
        out += [rng.randbytes(n) for n in (14, 15, 16, 41, 43)]
    shortest = fmt.min_request_length
    out += [b"", rng.randbytes(1), rng.randbytes(shortest - 1), rng.randbytes(shortest)]
    out += [rng.randbytes(rng.randrange(0, 300)) for _ in range(4)]
    return out


@pytest.mark.parametrize("fmt", FORMATS, ids=_fmt_id)
@pytest.mark.parametrize("stateful", [True, False], ids=["stateful", "stateless"])
def test_process_every_format(pair: Callable[..., Pair], fmt: TestFormat, stateful: bool) -> None:
    rng = random.Random(f"{_fmt_id(fmt)}-{stateful}")
    p = pair()
    peer = ("192.0.2.10", 5000)
    slot = p.add({"peer": peer, "fmt": fmt, "stateful": stateful, "dscp": None})
    other = p.add({"peer": ("2001:db8::7", 6000), "fmt": fmt, "dscp": 46})
    rx = RX_NS
    for data in requests(fmt, rng):
        for who in (peer, ("2001:db8::7", 6000), ("::ffff:192.0.2.10", 5000)):
            rx += rng.randrange(1, 10**6)
            p.call(data, who, rx, rng.randrange(256), rng.randrange(256))
        p.call(data, ("192.0.2.10", 5001), rx, 64, 0)  # unknown peer
    for s in (slot, other):
        assert p.c.session_counters(s) == p.py.session_counters(s)
    assert p.c.counters()["reflected"] > 0


def test_process_odd_inputs(pair: Callable[..., Pair]) -> None:
    fmt = TestFormat(TestMode.OPEN, dscp_ecn=True)
    p = pair(socket.AF_INET6)
    p.add({"peer": ("192.0.2.1", 9), "fmt": fmt})
    p.add({"peer": ("2001:db8::1", 9), "fmt": TestFormat(TestMode.OPEN), "stateful": False})
    req = build_sender(fmt, 7, 8, 9, bytes(30))
    for data in (bytes(req), bytearray(req), memoryview(bytes(req) + b"xyz")[:44]):
        p.call(data, ("192.0.2.1", 9), RX_NS, 64, 0x2E)
    # An address in another spelling, a v6 peer tuple of 4, text that is no address.
    p.call(req, ("::FFFF:192.0.2.1", 9), RX_NS, 64, 0)
    p.call(req, ("2001:DB8:0::1", 9, 0, 0), RX_NS, 64, 0)
    p.call(req, ("not-an-address", 9), RX_NS, 64, 0)
    # TTL and TOS that are not octets: reflect() refuses them, so both count them malformed
    # (except a TOS in a layout that has no room for it: it only becomes the reply's TOS).
    p.call(req, ("192.0.2.1", 9), RX_NS, 256, 0)
    p.call(req, ("192.0.2.1", 9), RX_NS, -1, 0)
    p.call(req, ("192.0.2.1", 9), RX_NS, 64, 300)
    p.call(req, ("2001:db8::1", 9), RX_NS, 64, 300)
    # Times before 1970 and after the NTP era rollover of 2036.
    p.call(req, ("192.0.2.1", 9), -1_500_000_000_123, 64, 0)
    p.call(req, ("192.0.2.1", 9), 2_100_000_000_999_999_999, 64, 0)
    assert p.c.counters()["malformed"] == 3


def test_process_stop_deadline_and_slot_reuse(pair: Callable[..., Pair]) -> None:
    fmt = TestFormat(TestMode.AUTHENTICATED)
    p = pair()
    sender = TestPacketCrypto(KEYS, fmt.test_mode)

    def req(seq: int) -> bytes:
        pkt = build_sender(fmt, seq, 0, 0, bytes(64))
        sender.protect_sender(pkt)
        return bytes(pkt)

    a = p.add({"peer": ("192.0.2.1", 1), "fmt": fmt})
    b = p.add({"peer": ("192.0.2.2", 1), "fmt": fmt})
    for seq in range(3):
        p.call(req(seq), ("192.0.2.1", 1), RX_NS + seq, 64, 0)
    p.py.stop_session(a, RX_NS + 10)
    p.c.stop_session(a, RX_NS + 10)
    p.call(req(3), ("192.0.2.1", 1), RX_NS + 10, 64, 0)  # at the deadline: reflected
    p.call(req(4), ("192.0.2.1", 1), RX_NS + 11, 64, 0)  # after: late
    assert p.c.remove_session(a) == p.py.remove_session(a)
    p.call(req(5), ("192.0.2.1", 1), RX_NS + 12, 64, 0)  # unknown now
    assert p.add({"peer": ("192.0.2.3", 1), "fmt": fmt}) == a
    assert p.c.session_counters(b) == p.py.session_counters(b)
    for twin in (p.c, p.py):
        with pytest.raises(KeyError):
            twin.session_counters(7)
        with pytest.raises(KeyError):
            twin.stop_session(-1, 0)
        with pytest.raises(ValueError):
            twin.add_session(PURE.SessionSpec(("192.0.2.2", 1), TestFormat(TestMode.OPEN)))
    assert p.c.counters()["late"] == 1


@pytest.mark.parametrize("stateful", [True, False])
def test_process_light_policies(pair: Callable[..., Pair], stateful: bool) -> None:
    fmt = TestFormat(TestMode.OPEN, stamp=True)
    light = PURE.LightPolicy(
        fmt,
        stateful,
        # LightPolicy converts network strings itself; its annotation names the result.
        allow=("198.51.100.0/25", "2001:db8:8000::/33", "10.0.0.7/32"),  # type: ignore[arg-type]
        max_peers=5,
    )
    p = pair(socket.AF_INET6, light=light)
    rng = random.Random(stateful)
    peers = [
        ("198.51.100.1", 1),
        ("198.51.100.127", 2),
        ("198.51.100.128", 3),  # outside the /25
        ("::ffff:198.51.100.5", 4),  # v4-mapped counts as IPv4
        ("2001:db8:8000::1", 5),
        ("2001:db8:7fff::1", 6),  # outside the /33
        ("10.0.0.7", 7),
        ("10.0.0.8", 7),
        ("::ffff:10.0.0.7", 8),
    ] + [("198.51.100.9", port) for port in range(10, 16)]  # beyond max_peers when stateful
    for _ in range(3):
        for peer in peers:
            data = build_sender(fmt, rng.getrandbits(32), 1, 2, rng.randbytes(rng.randrange(40)))
            p.call(bytes(data), peer, RX_NS, 64, rng.randrange(256))
    # A negotiated session for a Light peer takes over (its Light counter is gone).
    p.fmts = {("198.51.100.1", 1): fmt}
    slot = p.add({"peer": ("198.51.100.1", 1), "fmt": fmt})
    p.call(bytes(build_sender(fmt, 9, 1, 2, b"")), ("198.51.100.1", 1), RX_NS, 64, 0)
    p.py.remove_session(slot)
    p.c.remove_session(slot)
    p.call(bytes(build_sender(fmt, 9, 1, 2, b"")), ("198.51.100.1", 1), RX_NS, 64, 0)
    assert p.c.counters()["unknown_peer"] > 0


def test_process_many_sessions_and_light_peers(pair: Callable[..., Pair]) -> None:
    # Enough sessions and Light peers to grow the compiled twin's hash table several times.
    fmt = TestFormat(TestMode.OPEN)
    light = PURE.LightPolicy(fmt, stateful=True, max_peers=150)
    p = pair(socket.AF_INET6, light=light)
    p.light_fmt = fmt
    req = bytes(build_sender(fmt, 1, 2, 3, bytes(27)))
    peers = [(f"2001:db8::{i:x}", 1000 + i) for i in range(120)]
    slots = [
        p.add({"peer": peer, "fmt": fmt, "stateful": i % 2 == 0}) for i, peer in enumerate(peers)
    ]
    assert slots == list(range(120))
    for peer in peers:
        p.call(req, peer, RX_NS, 64, 0)
    for slot in slots[::3]:
        assert p.c.remove_session(slot) == p.py.remove_session(slot)
    for i in range(200):  # the first 150 become Light peers, the rest are refused
        p.call(req, (f"10.{i // 250}.{i % 250}.1", 7), RX_NS, 64, 0)
    for peer in peers:  # removed ones are Light peers now
        p.call(req, peer, RX_NS, 64, 0)
    for slot in slots[1::3]:
        assert p.c.session_counters(slot) == p.py.session_counters(slot)
    assert p.c.counters()["light_evicted"] >= 50
    assert p.c.counters()["unknown_peer"] == 0


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fmt=st.sampled_from(FORMATS),
    stateful=st.booleans(),
    datagrams=st.lists(
        st.tuples(
            st.binary(max_size=160),
            st.integers(0, 3),  # which peer
            st.integers(0, 255),
            st.integers(0, 255),
            st.integers(-(2**40), 2**40),
        ),
        max_size=12,
    ),
)
def test_process_random_datagrams(
    pair: Callable[..., Pair],
    fmt: TestFormat,
    stateful: bool,
    datagrams: list[tuple[bytes, int, int, int, int]],
) -> None:
    p = pair()
    p.add({"peer": ("192.0.2.1", 7), "fmt": fmt, "stateful": stateful})
    p.add({"peer": ("192.0.2.2", 7), "fmt": fmt, "stateful": not stateful, "dscp": 1})
    who = [("192.0.2.1", 7), ("192.0.2.2", 7), ("192.0.2.3", 7), ("::ffff:192.0.2.1", 7)]
    sender = crypto_for(fmt)
    for data, peer, ttl, tos, dt in datagrams:
        if sender is not None and len(data) >= 48 and data[0] & 1:
            pkt = bytearray(data)
            sender.protect_sender(pkt)  # a valid HMAC over random content
            data = bytes(pkt)
        p.call(data, who[peer], RX_NS + dt, ttl, tos)


# --------------------------------------------------------------------------------------------
# The loops over loopback sockets


class Peer:
    def __init__(self, host: str = "127.0.0.1", tos: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        level = socket.IPPROTO_IPV6 if ":" in host else socket.IPPROTO_IP
        self.sock.setsockopt(level, 67 if ":" in host else socket.IP_TOS, tos)
        self.sock.setsockopt(level, 66 if ":" in host else 13, 1)  # receive the TOS
        self.sock.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS

    @property
    def addr(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def recv(self, timeout: float = WAIT) -> tuple[bytes, int | None, int]:
        """(payload, TOS, kernel receive time)."""
        self.sock.settimeout(timeout)
        data, anc, _, _ = self.sock.recvmsg(65536, 256)
        tos = None
        rx = 0
        for level, kind, value in anc:
            if (level, kind) == (socket.IPPROTO_IP, 1):
                tos = value[0]
            elif (level, kind) == (socket.IPPROTO_IPV6, 67):
                tos = int.from_bytes(value[:4], "little")
            elif (level, kind) == (socket.SOL_SOCKET, 35):
                sec, nsec = struct.unpack("@ll", value[:16])
                rx = sec * 10**9 + nsec
        return data, tos, rx


@pytest.fixture
def loopback() -> Iterator[Callable[..., Any]]:
    made: list[Any] = []

    def make(kind: str, host: str = "127.0.0.1", **kw: Any) -> Any:
        obj = open_test_socket(host, 0) if kind == "socket" else Peer(host, **kw)
        made.append(obj)
        return obj

    yield make
    for obj in made:
        (obj if isinstance(obj, socket.socket) else obj.sock).close()


def masked_over_socket(fmt: TestFormat, reply: bytes) -> bytes:
    data = bytearray(canonical(fmt, reply))
    o = fmt.receive_timestamp_offset
    data[o : o + 8] = bytes(8)
    return bytes(data)


def reflect_script(
    impl: Twin, make: Callable[..., Any], fmt: TestFormat, host: str, batch: int
) -> list[tuple[bytes, int | None]]:
    """Queue a fixed script of datagrams from three peers, then run one Reflector on it."""
    sock = make("socket", "::" if host == "dual" else host)
    peer_host = "127.0.0.1" if host == "dual" else host
    a, b, stranger = (make("peer", peer_host, tos=t) for t in (0x2D, 0xB8, 0))
    dest = ("127.0.0.1" if host == "dual" else host, sock.getsockname()[1])
    refl = impl.Reflector(sock, batch=batch)
    refl.add_session(impl.SessionSpec(a.addr, fmt, crypto_for(fmt)))
    refl.add_session(impl.SessionSpec(b.addr, fmt, crypto_for(fmt), dscp=12, stateful=False))
    rng = random.Random(f"{_fmt_id(fmt)}-{host}")
    reqs = requests(fmt, rng)
    for data in reqs:
        for peer in (a, b, stranger):
            peer.sock.sendto(data, dest)
    fates = ("reflected", "unknown_peer", "malformed", "auth_failed", "late", "send_errors")
    before = time.time_ns()
    with refl:
        assert wait_until(lambda: sum(refl.counters()[k] for k in fates) == 3 * len(reqs)), (
            refl.counters()
        )
        counters = refl.counters()
    got: list[tuple[bytes, int | None]] = []
    for peer in (a, b):
        while True:
            try:
                data, tos, rx = peer.recv(timeout=0.05)
            except TimeoutError:
                break
            assert before <= transmit_ns(fmt, data) <= rx
            got.append((masked_over_socket(fmt, data), tos))
    assert counters["unknown_peer"] == len(reqs)
    assert counters["received"] == 3 * len(reqs)
    assert counters["reflected"] == len(got)
    return got


@pytest.mark.parametrize("fmt", [FORMATS[i] for i in (0, 3, 4, 5, 8, 9)], ids=_fmt_id)
@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "dual"])
def test_loop_differential(
    compiled: Twin, loopback: Callable[..., Any], fmt: TestFormat, host: str
) -> None:
    py = reflect_script(PURE, loopback, fmt, host, 64)
    c = reflect_script(compiled, loopback, fmt, host, 64)
    assert len(py) > 10
    assert c == py
    # Small batches exercise the chunked send path (a full batch is a backlog).
    assert reflect_script(compiled, loopback, fmt, host, 3) == py


@pytest.mark.parametrize("mode", [TestMode.AUTHENTICATED, TestMode.ENCRYPTED])
@pytest.mark.parametrize("batch", [1, 8, 64])
def test_loop_protected_burst(
    compiled: Twin, loopback: Callable[..., Any], mode: TestMode, batch: int
) -> None:
    # A backlog of protected requests: batches of several, one GIL section each.
    fmt = TestFormat(mode)
    sock, peer = loopback("socket"), loopback("peer")
    sender = TestPacketCrypto(KEYS, mode)
    refl = compiled.Reflector(sock, batch=batch)
    refl.add_session(compiled.SessionSpec(peer.addr, fmt, TestPacketCrypto(KEYS, mode)))
    n = 100
    for i in range(n):
        pkt = build_sender(fmt, 1000 + i, i, 0x3FFF, bytes(64))
        sender.protect_sender(pkt)
        if i == 50:
            pkt[40] ^= 1  # one forgery in the middle
        peer.sock.sendto(bytes(pkt), sock.getsockname())
    with refl:
        replies = [bytearray(peer.recv()[0]) for _ in range(n - 1)]
        assert wait_until(lambda: refl.counters()["auth_failed"] == 1)
    t3_prev = 0
    for i, reply in enumerate(replies):
        sender.unprotect_reflector(reply)
        seq, s_seq = struct.unpack_from("!I", reply)[0], struct.unpack_from("!I", reply, 48)[0]
        assert seq == i  # its own counter: the forgery used no number
        assert s_seq == 1000 + (i if i < 50 else i + 1)
        t2 = ns_from_ntp(int.from_bytes(reply[32:40], "big"))
        t3 = ns_from_ntp(int.from_bytes(reply[16:24], "big"))
        assert t2 <= t3 and t3 >= t3_prev  # stamped one by one, in sending order
        t3_prev = t3
    assert refl.counters()["reflected"] == n - 1


def wait_until(cond: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


@pytest.mark.parametrize("name", ["python", "cython"])
def test_sessions_change_while_the_loop_runs(
    compiled: Twin, loopback: Callable[..., Any], name: str
) -> None:
    impl = compiled if name == "cython" else PURE
    fmt = TestFormat(TestMode.OPEN)
    sock = loopback("socket")
    peers = [loopback("peer") for _ in range(6)]
    dest = sock.getsockname()
    light = impl.LightPolicy(
        fmt,
        stateful=True,
        # LightPolicy converts network strings itself; its annotation names the result.
        allow=("127.0.0.0/8",),  # type: ignore[arg-type]
        max_peers=2,
    )
    refl = impl.Reflector(sock, batch=16, light=light)
    stop = threading.Event()
    sent = [0]

    def blast() -> None:
        pkt = build_sender(fmt, 0, 0, 0, bytes(27))
        deadline = time.monotonic() + 5
        while not stop.is_set() and time.monotonic() < deadline:
            for peer in peers:
                peer.sock.sendto(pkt, dest)
                sent[0] += 1
            time.sleep(0.0002)

    finals: list[dict[str, int]] = []
    with refl:
        thread = threading.Thread(target=blast)
        thread.start()
        try:
            t_end = time.monotonic() + 0.6
            rng = random.Random(1)
            while time.monotonic() < t_end:
                chosen = rng.sample(peers, 3)
                slots = [refl.add_session(impl.SessionSpec(p.addr, fmt)) for p in chosen]
                refl.stop_session(slots[0], time.time_ns() + 1_000_000)
                time.sleep(0.003)
                # Read while the loop runs: a session's counters only ever grow, up to the
                # final ones remove_session returns (a torn or reset slot would go back).
                first = [refl.session_counters(s) for s in slots]
                again = [refl.session_counters(s) for s in slots]
                removed = [refl.remove_session(s) for s in slots]
                for a, b, final in zip(first, again, removed, strict=True):
                    assert set(a) == {"received", "reflected", "dropped", "errors", "last_rx_ns"}
                    for key in ("received", "reflected", "dropped", "errors", "last_rx_ns"):
                        assert a[key] <= b[key] <= final[key], (key, a, b, final)
                finals += removed
        finally:
            stop.set()
            thread.join()
        assert refl.running
        fates = ("reflected", "unknown_peer", "malformed", "auth_failed", "late", "send_errors")
        total = sent[0]
        # Every datagram has exactly one fate, once the loop has caught up.
        assert wait_until(
            lambda: (
                refl.counters()["received"] == total
                and sum(refl.counters()[k] for k in fates) == total
            )
        ), (total, refl.counters())
    c = refl.counters()
    # Six Light senders share a table of two: they evict each other, nobody is refused.
    assert c["light_evicted"] > 0 and c["reflected"] > 0 and c["unknown_peer"] == 0
    assert sum(f["received"] for f in finals) > 0
    if name == "cython":
        # The compiled loop holds the table's mutex for a whole batch: a removed session's
        # counters are never caught between receive and send.
        assert all(f["received"] == f["reflected"] + f["dropped"] for f in finals)


def test_compiled_send_batch_and_busy_poll(compiled: Twin, loopback: Callable[..., Any]) -> None:
    fmt = TestFormat(TestMode.OPEN)
    sock, peer = loopback("socket"), loopback("peer")
    refl = compiled.Reflector(sock, batch=4, busy_poll=True)
    assert refl.send_batch == REFLECTOR_SEND_BATCH
    refl.send_batch = 3
    refl.add_session(compiled.SessionSpec(peer.addr, fmt))
    for i in range(40):
        peer.sock.sendto(bytes(build_sender(fmt, i, 0, 0, b"")), sock.getsockname())
    with refl:
        seqs = [struct.unpack_from("!I", peer.recv()[0], 24)[0] for _ in range(40)]
    assert seqs == list(range(40))
    assert "stopped" in repr(refl) and "cython" in repr(refl)
