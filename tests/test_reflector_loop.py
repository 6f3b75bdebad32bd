"""One ReflectorLoop (one thread, one epoll set) runs every Reflector of a process.

Over both twins: many Reflectors share one thread; an idle loop is never woken; Reflectors come
and go while traffic flows. Compiled twin only: the loop reflects while another thread holds the
GIL, and the Error Estimate it computes in C equals `clock.py`'s.
"""

from __future__ import annotations

import ctypes
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from twamp import clock, dataplane
from twamp.constants import TestMode
from twamp.dataplane import Twin
from twamp.dataplane.sockets import open_test_socket
from twamp.timestamps import ErrorEstimate, ns_from_ntp
from twamp.wire.packets import TestFormat, build_sender

OPEN = TestFormat(TestMode.OPEN)
REFL_OPEN = struct.Struct("!IQH2xQIQH2xB")  # RFC 5357 §4.2.1, unauthenticated: 41 octets
REQUIRE = dataplane.REQUIRE_EXTENSION


@pytest.fixture(params=sorted(dataplane.implementations()))
def impl(request: pytest.FixtureRequest) -> Twin:
    return dataplane.implementations()[request.param]


@pytest.fixture
def compiled() -> Twin:
    twins = dataplane.implementations()
    if "cython" not in twins:
        if REQUIRE:
            pytest.fail("TWAMP_REQUIRE_EXTENSION=1 but the compiled data plane is missing")
        pytest.skip("the compiled twins are not built")
    return twins["cython"]


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    made: list[socket.socket] = []
    yield made
    for s in made:
        s.close()


def _peer(sockets: list[socket.socket]) -> socket.socket:
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(2.0)
    sockets.append(peer)
    return peer


def _reflector(impl: Twin, loop: Any, peer: socket.socket, sockets: list[socket.socket]) -> Any:
    sock = open_test_socket("127.0.0.1", 0, rcvbuf=1 << 16, sndbuf=1 << 16)
    sockets.append(sock)
    refl = impl.Reflector(sock, loop=loop)
    refl.add_session(impl.SessionSpec(peer.getsockname(), OPEN))
    return refl


def _loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "twamp-reflector"]


def _switches(native_id: int) -> int:
    with open(f"/proc/self/task/{native_id}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches line")


def test_one_thread_runs_many_reflectors(impl: Twin, sockets: list[socket.socket]) -> None:
    before = len(_loop_threads())
    loop = impl.ReflectorLoop(batch=16)
    peer = _peer(sockets)
    reflectors = [_reflector(impl, loop, peer, sockets) for _ in range(64)]
    try:
        for r in reflectors:
            r.start()
        assert len(_loop_threads()) == before + 1
        assert len(loop) == 64 and all(r.running and r.loop is loop for r in reflectors)
        for seq, r in enumerate(reflectors):
            peer.sendto(bytes(build_sender(OPEN, seq, 0, 0, b"")), r.socket.getsockname())
            reply, src = peer.recvfrom(2048)
            assert src == r.socket.getsockname()
            assert REFL_OPEN.unpack_from(reply)[4] == seq  # the echoed Sender Sequence Number
        # Stopped Reflectors are off the loop at once; the loop thread stays for the others.
        for r in reflectors[:32]:
            r.stop()
        assert len(loop) == 32 and not reflectors[0].running and reflectors[40].running
        peer.sendto(bytes(build_sender(OPEN, 1, 0, 0, b"")), reflectors[0].socket.getsockname())
        peer.settimeout(0.2)
        with pytest.raises(TimeoutError):
            peer.recvfrom(2048)
        assert reflectors[0].counters()["received"] == 1  # only the one before its stop
    finally:
        loop.close()
    assert len(_loop_threads()) == before
    assert not any(r.running for r in reflectors)


def test_an_idle_loop_is_never_woken(impl: Twin, sockets: list[socket.socket]) -> None:
    loop = impl.ReflectorLoop()
    peer = _peer(sockets)
    reflectors = [_reflector(impl, loop, peer, sockets) for _ in range(32)]
    try:
        for r in reflectors:
            r.start()
        thread = loop.thread
        assert thread is not None and thread in _loop_threads() and thread.native_id is not None
        time.sleep(0.05)  # let it settle into epoll_wait
        first = _switches(thread.native_id)
        time.sleep(0.6)
        # A timeout-driven loop (100 ms before this package) wakes 6 times in 0.6 s.
        assert _switches(thread.native_id) - first == 0
        # ... and it does wake for a datagram.
        peer.sendto(bytes(build_sender(OPEN, 7, 0, 0, b"")), reflectors[5].socket.getsockname())
        assert REFL_OPEN.unpack_from(peer.recvfrom(2048)[0])[4] == 7
    finally:
        loop.close()


def test_reflectors_come_and_go_under_load(impl: Twin, sockets: list[socket.socket]) -> None:
    """A blaster thread (a session peer of every Reflector) sends to every socket while the
    main thread starts and stops Reflectors on the running loop; every datagram a Reflector
    took in is accounted for, and a stopped Reflector answers nothing."""
    loop = impl.ReflectorLoop(batch=32)
    peer = _peer(sockets)
    blaster = _peer(sockets)
    reflectors = [_reflector(impl, loop, peer, sockets) for _ in range(24)]
    for r in reflectors:
        r.add_session(impl.SessionSpec(blaster.getsockname(), OPEN))
    targets = [r.socket.getsockname() for r in reflectors]
    done = threading.Event()
    sent = [0]

    def blast() -> None:
        deadline = time.monotonic() + 10.0
        seq = 0
        while not done.is_set() and time.monotonic() < deadline and seq < 200_000:
            pkt = bytes(build_sender(OPEN, seq, 0, 0, b""))
            blaster.sendto(pkt, targets[seq % len(targets)])
            seq += 1
        sent[0] = seq

    thread = threading.Thread(target=blast)
    try:
        for r in reflectors[:12]:
            r.start()
        thread.start()
        for cycle in range(40):
            a = reflectors[cycle % 24]
            if a.running:
                a.stop()
            else:
                a.start()
            time.sleep(0.005)
        done.set()
        thread.join()
        assert sent[0] > 100
        # Let the running Reflectors drain what the blaster queued (full receive buffers would
        # drop the check datagrams below): until their counters stand still, at most 5 s.
        last, deadline = -1, time.monotonic() + 5.0
        while time.monotonic() < deadline:
            now = sum(r.counters()["received"] for r in reflectors)
            if now == last:
                break
            last = now
            time.sleep(0.1)
        running = [r for r in reflectors if r.running]
        stopped = [r for r in reflectors if not r.running]
        assert running and stopped
        for r in running:
            peer.sendto(bytes(build_sender(OPEN, 99, 0, 0, b"")), r.socket.getsockname())
            assert peer.recvfrom(2048)[1] == r.socket.getsockname()
        for r in stopped:
            peer.sendto(bytes(build_sender(OPEN, 98, 0, 0, b"")), r.socket.getsockname())
        peer.settimeout(0.2)
        with pytest.raises(TimeoutError):
            peer.recvfrom(2048)
    finally:
        done.set()
        if thread.is_alive():
            thread.join()
        loop.close()
    for r in reflectors:  # counted once the loop is gone: no batch is half done
        c = r.counters()
        accounted = sum(c[k] for k in c if k != "received" and k != "reflected") + c["reflected"]
        assert c["received"] == accounted, c
        assert c["unknown_peer"] == c["malformed"] == 0, c
    assert sum(r.counters()["reflected"] for r in reflectors) > 100


def test_the_loop_reflects_while_python_holds_the_gil(
    compiled: Twin, sockets: list[socket.socket]
) -> None:
    """Nothing on the compiled packet path waits for Python: with the GIL held by this
    thread for 300 ms (a libc sleep called through PyDLL keeps it), the loop still reflects
    at once, and the first batch of a new Reflector (which refreshes the Error Estimate)
    is among them."""
    loop = compiled.ReflectorLoop()
    peer = _peer(sockets)
    refl = _reflector(compiled, loop, peer, sockets)
    libc = ctypes.PyDLL(None)  # PyDLL: the GIL stays held during the call
    try:
        refl.start()
        for seq in range(5):
            peer.sendto(bytes(build_sender(OPEN, seq, 0, 0, b"")), refl.socket.getsockname())
        held_from = clock.realtime_ns()
        libc.usleep(300_000)
        held_until = clock.realtime_ns()
        for _ in range(5):
            reply = peer.recvfrom(2048)[0]
            t3 = ns_from_ntp(REFL_OPEN.unpack_from(reply)[1], held_until)
            # Sent during the hold, not after it.
            assert t3 < held_from + 150_000_000, (t3 - held_from) / 1e6
        assert held_until - held_from >= 290_000_000
    finally:
        loop.close()


def test_error_estimate_in_c_matches_clock(compiled: Twin) -> None:
    module = compiled.reflector_module
    for error_ns in (0, 1, 999, 1000, 232, 233, 10**6, 16 * 10**9, 10**15, 2**63 // 1000):
        for sync in (False, True):
            wire = ErrorEstimate.from_ns(error_ns, sync).to_wire()
            assert module.c_ee_from_ns(error_ns, sync) == wire, (error_ns, sync)
    got = ErrorEstimate.from_wire(module.c_error_estimate())
    want = ErrorEstimate.from_wire(clock.estimate_from_state(clock.read_clock_state()))
    # maxerror grows by 500 ppm while nobody disciplines the clock: same flags and scale,
    # the multiplier at most one step apart between the two reads.
    assert (got.synchronized, got.ptp, got.scale) == (want.synchronized, want.ptp, want.scale)
    assert abs(got.multiplier - want.multiplier) <= 1


def test_t3_diagnostic_measures_the_reflectors_own_timestamps(
    impl: Twin, sockets: list[socket.socket]
) -> None:
    """tx_timestamps=True: every reply's transmit Timestamp is matched with the kernel's
    software transmit time of that reply (SO_TIMESTAMPING); the Timestamp comes first."""
    loop = impl.ReflectorLoop()
    peer = _peer(sockets)
    sock = open_test_socket("127.0.0.1", 0, rcvbuf=1 << 16, sndbuf=1 << 16)
    sockets.append(sock)
    refl = impl.Reflector(sock, loop=loop, tx_timestamps=True)
    plain = impl.Reflector(sock, loop=loop)
    assert plain.t3_error() is None
    refl.add_session(impl.SessionSpec(peer.getsockname(), OPEN))
    assert refl.t3_error()["samples"] == 0
    try:
        refl.start()
        for seq in range(50):
            peer.sendto(bytes(build_sender(OPEN, seq, 0, 0, b"")), sock.getsockname())
            peer.recvfrom(2048)
        deadline = time.monotonic() + 5
        while refl.t3_error()["samples"] < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        loop.close()
    t3 = refl.t3_error()
    assert t3["samples"] == 50, t3
    assert 0 <= t3["min_ns"] <= t3["mean_ns"] <= t3["max_ns"] < 1_000_000_000, t3
    assert t3["p50_ns"] <= t3["p99_ns"] and t3["p50_ns"] >= t3["min_ns"], t3


def test_a_connected_session_socket_never_sees_strangers(
    impl: Twin, sockets: list[socket.socket]
) -> None:
    """open_test_socket(peer=...): the kernel drops other senders' datagrams before the
    session's queue, so they are not even counted; the peer is answered as before."""
    loop = impl.ReflectorLoop()
    peer, stranger = _peer(sockets), _peer(sockets)
    sock = open_test_socket("::", 0, peer=peer.getsockname())  # dual-stack, an IPv4 peer
    sockets.append(sock)
    refl = impl.Reflector(sock, loop=loop)
    refl.add_session(impl.SessionSpec(peer.getsockname(), OPEN))
    target = ("127.0.0.1", sock.getsockname()[1])
    try:
        refl.start()
        for seq in range(20):
            stranger.sendto(bytes(build_sender(OPEN, seq, 0, 0, b"")), target)
        peer.sendto(bytes(build_sender(OPEN, 5, 0, 0, b"")), target)
        reply, src = peer.recvfrom(2048)
        assert REFL_OPEN.unpack_from(reply)[4] == 5 and src[1] == target[1]
        time.sleep(0.05)
    finally:
        loop.close()
    c = refl.counters()
    assert (c["received"], c["reflected"], c["unknown_peer"]) == (1, 1, 0), c
    with pytest.raises(ValueError):
        open_test_socket("127.0.0.1", 0, peer=("2001:db8::1", 1))
