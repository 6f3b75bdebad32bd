"""The reflector's residence histogram (T3 - T2 per reflected datagram), in both twins.

`types.RESIDENCE_BOUNDS_NS` is the one declaration; the compiled loop repeats it as C literals,
so its bucket search is compared with `types.residence_bucket` at and around every bound, and
both twins are driven with the same datagrams (offline through `process()` with forced receive
times, and over loopback sockets) and must bucket them the same way.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pytest

from twamp import clock, dataplane
from twamp.constants import TestMode
from twamp.dataplane import SessionSpec, Twin
from twamp.dataplane.sockets import open_test_socket
from twamp.dataplane.types import RESIDENCE_BOUNDS_NS, RESIDENCE_KEYS, residence_bucket
from twamp.wire.packets import TestFormat

OPEN = TestFormat(TestMode.OPEN)
INF = len(RESIDENCE_BOUNDS_NS)  # index of the +Inf bucket


@pytest.fixture(params=sorted(dataplane.implementations()))
def impl(request: pytest.FixtureRequest) -> Twin:
    return dataplane.implementations()[request.param]


def request(seq: int) -> bytes:
    return struct.pack("!IQH", seq, 0, 0x3FFF)  # RFC 5357 §4.1.2, open mode, no padding


def test_bounds_are_increasing_and_keys_match() -> None:
    assert list(RESIDENCE_BOUNDS_NS) == sorted(set(RESIDENCE_BOUNDS_NS))
    assert len(RESIDENCE_KEYS) == len(RESIDENCE_BOUNDS_NS) + 2  # +Inf and the sum


def test_python_bucket_is_inclusive_upper_bound() -> None:
    assert residence_bucket(-5) == 0
    assert residence_bucket(0) == 0
    for i, bound in enumerate(RESIDENCE_BOUNDS_NS):
        assert residence_bucket(bound) == i
        assert residence_bucket(bound + 1) == i + 1
    assert residence_bucket(10**12) == INF


def test_compiled_bucket_matches_types() -> None:
    twins = dataplane.implementations()
    if "cython" not in twins:
        if dataplane.REQUIRE_EXTENSION:
            pytest.fail("TWAMP_REQUIRE_EXTENSION=1 but the compiled data plane is missing")
        pytest.skip("the compiled twins are not built")
    c_residence_bucket = twins["cython"].reflector_module.c_residence_bucket
    values = [-(10**9), -1, 0, 1, 10**12, (1 << 62)]
    for bound in RESIDENCE_BOUNDS_NS:
        values += [bound - 1, bound, bound + 1]
    for value in values:
        assert c_residence_bucket(value) == residence_bucket(value), value


def test_process_buckets_forced_residences(impl: Twin) -> None:
    """Receive times forced into the past (or future) put each reply in a known bucket."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        refl = impl.Reflector(sock)
        refl.add_session(SessionSpec(("192.0.2.1", 1000), OPEN))
        assert refl.residence() == dict.fromkeys(RESIDENCE_KEYS, 0)
        # Residence = (clock at the stamp) - rx_ns: at least the offset, plus the few µs that
        # process() takes here, far from the next bound above each offset.
        offsets = {3_000_000: 11, 30_000_000: INF, 150_000: 7}
        for seq, offset in enumerate(offsets):
            t0 = clock.realtime_ns()
            assert refl.process(request(seq), ("192.0.2.1", 1000), t0 - offset, 64, 0)
        # A receive time in the future (a clock step between T2 and T3): the first bucket.
        assert refl.process(request(9), ("192.0.2.1", 1000), clock.realtime_ns() + 10**9, 64, 0)
        assert refl.process(request(10), ("192.0.2.2", 1000), 0, 64, 0) is None  # not counted
        got = refl.residence()
    finally:
        sock.close()
    expected = [0] * (INF + 1)
    for index in offsets.values():
        expected[index] += 1
    expected[0] += 1
    assert [got[k] for k in RESIDENCE_KEYS[:-1]] == expected
    total = sum(offsets)
    assert total <= got["residence_sum_ns"] < total + 3 * 50_000_000  # the future one adds 0
    assert sum(got[k] for k in RESIDENCE_KEYS[:-1]) == refl.counters()["reflected"] == 4


@pytest.fixture
def rsock() -> Iterator[socket.socket]:
    sock = open_test_socket("127.0.0.1", 0)
    yield sock
    sock.close()


def test_loop_counts_every_reflected_datagram(impl: Twin, rsock: socket.socket) -> None:
    n = 200
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(2.0)
    refl = impl.Reflector(rsock)
    refl.start()
    try:
        refl.add_session(SessionSpec(peer.getsockname(), OPEN))
        for seq in range(n):
            peer.sendto(request(seq), rsock.getsockname())
            if seq % 20 == 19:  # bounded bursts: nothing is lost to a full receive buffer
                for _ in range(20):
                    peer.recv(4096)
        deadline = time.monotonic() + 2.0
        while refl.counters()["reflected"] < n and time.monotonic() < deadline:
            time.sleep(0.005)
        got = refl.residence()
        reflected = refl.counters()["reflected"]
    finally:
        refl.stop()
        peer.close()
    assert reflected == n
    assert sum(got[k] for k in RESIDENCE_KEYS[:-1]) == n
    # Kernel receive time to our stamp on loopback: positive and below 10 ms for the bulk.
    assert got["residence_sum_ns"] > 0
    assert got["residence_le_inf"] < n // 2
