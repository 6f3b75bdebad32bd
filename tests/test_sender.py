"""The Session-Sender data plane over every importable twin that has one.

Two kinds of peer: the pure-Python Reflector (a full round trip in every mode and family), and a
hand-driven socket that reads our packets with `struct` at the offsets of RFC 5357 §4.1.2 and
answers with replies packed by hand from RFC 5357 §4.2.1, so that the Sender is checked against the
spec and not only against the codec it shares with the Reflector. Loopback only; every wait is
bounded.
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from twamp import clock, dataplane
from twamp.constants import TestMode
from twamp.crypto import TestPacketCrypto, derive_test_keys
from twamp.dataplane import Twin
from twamp.dataplane.sockets import open_test_socket
from twamp.timestamps import ns_from_ntp
from twamp.wire.packets import TestFormat

PURE = dataplane.implementations()["python"]

OPEN = TestFormat(TestMode.OPEN)
AUTH = TestFormat(TestMode.AUTHENTICATED)
ENC = TestFormat(TestMode.ENCRYPTED)
SID = bytes(range(0x20, 0x30))
KEYS = derive_test_keys(SID, bytes(range(16)), bytes(range(0x40, 0x60)))
MS = 1_000_000
S = 1_000_000_000

# Spec §5.1 (sender, open) and §5.3 (reflector, open), written out independently.
SENDER_OPEN = struct.Struct("!IQH")
REFLECTOR_OPEN = struct.Struct("!IQH2xQIQH2xB")

IP_RECVTTL, IP_RECVTOS, IP_TTL_CMSG, IP_TOS_CMSG = 12, 13, 2, 1
IPV6_RECVHOPLIMIT, IPV6_HOPLIMIT, IPV6_RECVTCLASS, IPV6_TCLASS = 51, 52, 66, 67


@pytest.fixture(params=sorted(dataplane.implementations()))
def impl(request: pytest.FixtureRequest) -> Twin:
    return dataplane.implementations()[request.param]


def test_every_twin_has_a_sender() -> None:
    for name, module in dataplane.implementations().items():
        assert name == module.Sender.IMPLEMENTATION
    assert dataplane.Sender.IMPLEMENTATION == dataplane.IMPLEMENTATION


def crypto_for(fmt: TestFormat) -> TestPacketCrypto | None:
    return None if fmt.test_mode is TestMode.OPEN else TestPacketCrypto(KEYS, fmt.test_mode)


def schedule(n: int, interval_ns: int = MS, lead_ns: int = 20 * MS) -> np.ndarray[Any, Any]:
    return clock.realtime_ns() + lead_ns + np.arange(n, dtype=np.int64) * interval_ns


@pytest.fixture
def sockets(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, socket.socket]]:
    host = getattr(request, "param", "127.0.0.1")
    a = open_test_socket(host, 0)
    b = open_test_socket(host, 0)
    yield a, b
    a.close()
    b.close()


def addr(sock: socket.socket) -> tuple[str, int]:
    host, port = sock.getsockname()[:2]
    return host, port


# -- against the pure Reflector -------------------------------------------------------------


@pytest.mark.parametrize("sockets", ["127.0.0.1", "::1"], indirect=True)
@pytest.mark.parametrize("fmt", [OPEN, AUTH, ENC], ids=["open", "auth", "enc"])
def test_round_trip(
    impl: Twin, sockets: tuple[socket.socket, socket.socket], fmt: TestFormat
) -> None:
    send_sock, refl_sock = sockets
    n, tos = 40, 0xB8  # EF; the reflector session has no DSCP, so it echoes our TOS
    reflector = PURE.Reflector(refl_sock)
    reflector.add_session(PURE.SessionSpec(addr(send_sock), fmt, crypto_for(fmt)))
    sender = impl.Sender(
        send_sock, addr(refl_sock), fmt=fmt, crypto=crypto_for(fmt), padding=27, tos=tos
    )
    started = time.monotonic()
    with reflector:
        result = sender.run(schedule(n), wait_ns=5 * S)
    assert time.monotonic() - started < 4.0, "run did not return once everything was answered"
    c = result.counters
    assert (c["sent"], c["received"], c["send_errors"]) == (n, n, 0)
    assert c["malformed"] == c["auth_failed"] == c["unknown_peer"] == 0
    assert reflector.counters()["auth_failed"] == 0
    assert reflector.counters()["reflected"] == n

    sent, rec = result.sent, result.received
    assert sent["seq"].tolist() == list(range(n))
    assert np.all(np.diff(sent["t1"]) > 0)
    rec = rec[np.argsort(rec["sender_seq"])]
    assert rec["sender_seq"].tolist() == list(range(n))
    assert sorted(rec["reflector_seq"].tolist()) == list(range(n))  # stateful session
    # T1 is the echoed Sender Timestamp: exactly what we recorded when sending.
    assert rec["t1"].tolist() == sent["t1"].tolist()
    assert np.all(rec["t1"] <= rec["t4"])
    assert np.all(rec["t2"] <= rec["t3"])
    # One host, one clock: the reflector's stamps sit between ours.
    assert np.all(rec["t1"] <= rec["t2"]) and np.all(rec["t3"] <= rec["t4"])
    rtt = (rec["t4"] - rec["t1"]) - (rec["t3"] - rec["t2"])
    assert np.all(rtt > 0) and np.all(rtt < 1 * S)
    assert set(rec["sender_ttl"].tolist()) == {255}  # we send with TTL 255 (RFC 5357 §4.1.2)
    assert set(rec["reply_ttl"].tolist()) == {255}
    assert set(rec["reply_tos"].tolist()) == {tos}


@pytest.mark.parametrize("sockets", ["127.0.0.1", "::1"], indirect=True)
def test_kernel_transmit_times_beside_the_timestamps(
    impl: Twin, sockets: tuple[socket.socket, socket.socket]
) -> None:
    """tx_timestamps=True: each sent row gets the kernel's software transmit time
    (SO_TIMESTAMPING), on the same clock and after the Timestamp we wrote; across two runs,
    so the kernel's datagram numbering is followed from one run to the next."""
    send_sock, refl_sock = sockets
    reflector = PURE.Reflector(refl_sock)
    reflector.add_session(PURE.SessionSpec(addr(send_sock), OPEN))
    sender = impl.Sender(send_sock, addr(refl_sock), fmt=OPEN, tx_timestamps=True)
    plain = impl.Sender(send_sock, addr(refl_sock), fmt=OPEN)
    with reflector:
        for first_seq in (0, 30):
            result = sender.run(schedule(30), first_seq=first_seq, wait_ns=2 * S)
            tx = result.tx_kernel_ns
            assert tx is not None and tx.shape == result.sent.shape == (30,)
            early = tx - result.sent["t1"].astype(np.int64)
            assert np.all(tx > 0), tx  # a report for every packet
            assert np.all(early >= 0) and np.all(early < 1 * S), early
        assert plain.run(schedule(3), first_seq=60, wait_ns=S).tx_kernel_ns is None


def test_back_to_back_sends_are_all_answered(
    impl: Twin, sockets: tuple[socket.socket, socket.socket]
) -> None:
    """A schedule with no gaps (every packet due at once): all sent, all answered, in order."""
    send_sock, refl_sock = sockets
    n = 2000
    reflector = PURE.Reflector(refl_sock)
    reflector.add_session(PURE.SessionSpec(addr(send_sock), OPEN))
    sender = impl.Sender(send_sock, addr(refl_sock), fmt=OPEN, padding=27)
    with reflector:
        result = sender.run(np.full(n, clock.realtime_ns(), dtype=np.int64), wait_ns=5 * S)
    assert result.counters["sent"] == n
    assert result.sent["seq"].tolist() == list(range(n))
    assert sorted(result.received["sender_seq"].tolist()) == list(range(n))


def test_reflector_dscp_reaches_records(
    impl: Twin, sockets: tuple[socket.socket, socket.socket]
) -> None:
    send_sock, refl_sock = sockets
    reflector = PURE.Reflector(refl_sock)
    reflector.add_session(PURE.SessionSpec(addr(send_sock), OPEN, dscp=10))
    sender = impl.Sender(send_sock, addr(refl_sock), fmt=OPEN, padding=27)
    with reflector:
        result = sender.run(schedule(5), wait_ns=3 * S)
    assert result.counters["received"] == 5
    assert set(result.received["reply_tos"].tolist()) == {10 << 2}


def test_runs_continue_the_sequence(
    impl: Twin, sockets: tuple[socket.socket, socket.socket]
) -> None:
    send_sock, refl_sock = sockets
    reflector = PURE.Reflector(refl_sock)
    reflector.add_session(PURE.SessionSpec(addr(send_sock), OPEN))
    sender = impl.Sender(send_sock, addr(refl_sock), fmt=OPEN)
    with reflector:
        first = sender.run(schedule(10), wait_ns=3 * S)
        second = sender.run(schedule(10), first_seq=10, wait_ns=3 * S)
    assert first.sent["seq"].tolist() == list(range(10))
    assert second.sent["seq"].tolist() == list(range(10, 20))
    assert sorted(second.received["sender_seq"].tolist()) == list(range(10, 20))
    # The reflector's own counter goes on across the calls: it is one session.
    assert sorted(second.received["reflector_seq"].tolist()) == list(range(10, 20))


def test_stop_event_is_prompt(impl: Twin, sockets: tuple[socket.socket, socket.socket]) -> None:
    send_sock, refl_sock = sockets
    reflector = PURE.Reflector(refl_sock)
    reflector.add_session(PURE.SessionSpec(addr(send_sock), OPEN))
    sender = impl.Sender(send_sock, addr(refl_sock), fmt=OPEN)
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    with reflector:
        started = time.monotonic()
        timer.start()
        try:
            result = sender.run(schedule(1000, 10 * MS), wait_ns=10 * S, stop=stop)
        finally:
            timer.cancel()
        elapsed = time.monotonic() - started
    assert elapsed < 1.5, f"stop took {elapsed:.2f} s"
    assert 0 < result.counters["sent"] < 1000
    assert result.sent["seq"].tolist() == list(range(result.counters["sent"]))


def test_stop_during_the_wait(impl: Twin, sockets: tuple[socket.socket, socket.socket]) -> None:
    send_sock, silent = sockets  # nobody answers
    sender = impl.Sender(send_sock, addr(silent), fmt=OPEN)
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    started = time.monotonic()
    timer.start()
    try:
        result = sender.run(schedule(3), wait_ns=30 * S, stop=stop)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 1.5
    assert result.counters["sent"] == 3
    assert result.counters["received"] == 0


def test_waits_for_late_replies_up_to_wait_ns(
    impl: Twin, sockets: tuple[socket.socket, socket.socket]
) -> None:
    send_sock, silent = sockets
    sender = impl.Sender(send_sock, addr(silent), fmt=OPEN)
    started = time.monotonic()
    result = sender.run(schedule(2, lead_ns=0), wait_ns=300 * MS)
    elapsed = time.monotonic() - started
    assert 0.28 <= elapsed < 2.0
    assert len(result.received) == 0 and result.counters["sent"] == 2


def test_empty_schedule_only_listens(
    impl: Twin, sockets: tuple[socket.socket, socket.socket]
) -> None:
    send_sock, peer = sockets
    sender = impl.Sender(send_sock, addr(peer), fmt=OPEN)
    result = sender.run(np.zeros(0, dtype=np.int64), wait_ns=50 * MS)
    assert result.counters["sent"] == 0 and len(result.sent) == 0
    with pytest.raises(BlockingIOError):
        peer.recv(64, socket.MSG_DONTWAIT)


def test_late_schedule_counts_behind(
    impl: Twin, sockets: tuple[socket.socket, socket.socket]
) -> None:
    send_sock, silent = sockets
    sender = impl.Sender(send_sock, addr(silent), fmt=OPEN)
    past = clock.realtime_ns() - S + np.arange(5, dtype=np.int64)
    result = sender.run(past, wait_ns=0)
    assert result.counters["sent"] == 5
    assert result.counters["behind_schedule"] == 5
    assert result.counters["max_lag_ns"] >= S


def test_pacing_follows_the_schedule(
    impl: Twin, sockets: tuple[socket.socket, socket.socket]
) -> None:
    send_sock, silent = sockets
    sender = impl.Sender(send_sock, addr(silent), fmt=OPEN)
    plan = schedule(20, 5 * MS)
    result = sender.run(plan, wait_ns=0)
    lateness = result.sent["t1"] - plan
    # Never early; late by scheduling noise only (generous: a loaded CI machine).
    assert np.all(lateness >= -50_000)
    assert np.median(lateness) < 2 * MS


@pytest.mark.parametrize(
    "bad",
    [
        np.array([3, 2, 1], dtype=np.int64),
        np.zeros((2, 2), dtype=np.int64),
    ],
    ids=["descending", "2-d"],
)
def test_rejects_bad_schedules(
    impl: Twin, sockets: tuple[socket.socket, socket.socket], bad: Any
) -> None:
    send_sock, peer = sockets
    sender = impl.Sender(send_sock, addr(peer), fmt=OPEN)
    with pytest.raises(ValueError):
        sender.run(bad)


def test_rejects_crypto_mismatch(impl: Twin, sockets: tuple[socket.socket, socket.socket]) -> None:
    send_sock, peer = sockets
    with pytest.raises(ValueError):
        impl.Sender(send_sock, addr(peer), fmt=AUTH)
    with pytest.raises(ValueError):
        impl.Sender(send_sock, addr(peer), fmt=OPEN, crypto=crypto_for(AUTH))


# -- against a hand-driven peer ------------------------------------------------------------


def recv_with_ttl_tos(sock: socket.socket) -> tuple[bytes, tuple[str, int], int, int]:
    sock.settimeout(3.0)
    data, anc, _, peer = sock.recvmsg(4096, 256)
    ttl = tos = -1
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
    return data, peer, ttl, tos


def run_in_thread(sender: Any, plan: Any, **kwargs: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(sender.run(plan, **kwargs)), daemon=True)
    thread.start()
    return thread, out


@pytest.mark.parametrize("sockets", ["127.0.0.1", "::1"], indirect=True)
def test_packet_on_the_wire_and_hand_made_reply(
    impl: Twin, sockets: tuple[socket.socket, socket.socket]
) -> None:
    send_sock, peer = sockets
    sender = impl.Sender(send_sock, addr(peer), fmt=OPEN, padding=27, tos=0x28)
    before = clock.realtime_ns()
    thread, out = run_in_thread(sender, schedule(1, lead_ns=0), wait_ns=3 * S)
    data, src, ttl, tos = recv_with_ttl_tos(peer)
    # Spec §5.1: 14-octet header + 27 octets of padding; TTL 255 and our TOS on the wire.
    assert len(data) == 41
    assert (ttl, tos) == (255, 0x28)
    seq, ts, ee = SENDER_OPEN.unpack_from(data)
    assert seq == 0
    t1 = ns_from_ntp(ts)
    assert before <= t1 <= clock.realtime_ns()
    assert ee & 0x4000 == 0  # Z = 0: NTP format
    assert ee & 0xFF != 0  # Multiplier 0 is invalid (RFC 4656 §4.1.2)
    # A reply packed by hand (RFC 5357 §4.2.1): reflector seq 7, PTP-free NTP stamps, S bit set.
    t2_ntp = ts + (1 << 20)
    t3_ntp = ts + (2 << 20)
    reply = REFLECTOR_OPEN.pack(7, t3_ntp, 0x8001, t2_ntp, seq, ts, ee, 254) + bytes(3)
    peer.sendto(reply, src)
    thread.join(5)
    assert not thread.is_alive()
    result = out[0]
    assert result.counters["received"] == 1
    assert result.counters["reflector_unsynced"] == 0
    rec = result.received[0]
    assert (int(rec["sender_seq"]), int(rec["reflector_seq"])) == (0, 7)
    assert int(rec["t1"]) == t1 == int(result.sent[0]["t1"])
    assert int(rec["t2"]) == ns_from_ntp(t2_ntp)
    assert int(rec["t3"]) == ns_from_ntp(t3_ntp)
    assert int(rec["sender_ttl"]) == 254
    assert int(rec["t4"]) >= t1


def test_ptp_reply_timestamps(impl: Twin, sockets: tuple[socket.socket, socket.socket]) -> None:
    """Z = 1 in the reflector's Error Estimate: T2/T3 are PTPv2 truncated (RFC 8186)."""
    send_sock, peer = sockets
    sender = impl.Sender(send_sock, addr(peer), fmt=OPEN)
    thread, out = run_in_thread(sender, schedule(1, lead_ns=0), wait_ns=3 * S)
    data, src, _, _ = recv_with_ttl_tos(peer)
    seq, ts, ee = SENDER_OPEN.unpack_from(data)
    t2_unix = ns_from_ntp(ts) + 1000
    tai = 37  # TAI - UTC (RFC 8186: PTP timestamps count TAI)
    t2_ptp = ((t2_unix // S + tai) << 32) | (t2_unix % S)
    t3_ptp = t2_ptp + 500  # 500 ns later, same second unless at the edge
    if t3_ptp & 0xFFFFFFFF >= S:
        t3_ptp = t2_ptp
    peer.sendto(REFLECTOR_OPEN.pack(0, t3_ptp, 0xC001, t2_ptp, seq, ts, ee, 255), src)
    thread.join(5)
    rec = out[0].received[0]
    assert int(rec["t2"]) == t2_unix
    assert int(rec["t3"]) - int(rec["t2"]) in (0, 500)


def test_other_peers_short_and_forged_replies(
    impl: Twin, sockets: tuple[socket.socket, socket.socket]
) -> None:
    send_sock, peer = sockets
    stranger = open_test_socket("127.0.0.1", 0)
    try:
        sender = impl.Sender(send_sock, addr(peer), fmt=AUTH, crypto=crypto_for(AUTH))
        thread, out = run_in_thread(sender, schedule(1, lead_ns=0), wait_ns=600 * MS)
        _, src, _, _ = recv_with_ttl_tos(peer)
        good_looking = bytes(112)
        stranger.sendto(good_looking, src)  # wrong address: unknown_peer
        peer.sendto(bytes(40), src)  # shorter than 112: malformed
        peer.sendto(bytes(range(112)), src)  # HMAC does not verify: auth_failed
        thread.join(5)
    finally:
        stranger.close()
    c = out[0].counters
    assert (c["unknown_peer"], c["malformed"], c["auth_failed"], c["received"]) == (1, 1, 1, 0)
    assert len(out[0].received) == 0
