"""The compiled Session-Sender (`twamp.dataplane`, the compiled Sender) on loopback.

Against both Reflector twins in every mode and family; against hand-packed replies (offsets of
RFC 5357 §4.2.1 written out with `struct`), which must give the same records and counters as the
pure Sender's; and its pacing, grouping of late packets, stop event and sequence wrap.
`tests/test_sender.py` runs the shared Sender tests over both twins as well. Timing assertions
are loose (behaviour, not speed): these machines are shared VMs.
"""

from __future__ import annotations

import os
import socket
import struct
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
from twamp.wire.packets import TestFormat

PURE = dataplane.implementations()["python"]

REQUIRE = os.environ.get("TWAMP_REQUIRE_EXTENSION", "") not in ("", "0")
OPEN = TestFormat(TestMode.OPEN)
AUTH = TestFormat(TestMode.AUTHENTICATED)
ENC = TestFormat(TestMode.ENCRYPTED)
KEYS = derive_test_keys(bytes(range(0x50, 0x60)), bytes(range(16)), bytes(range(0x40, 0x60)))
MS = 1_000_000
S = 1_000_000_000

# Reflector layouts, RFC 5357 §4.2.1 (open, 41) and its authenticated form (112).
REFL_OPEN = struct.Struct("!IQH2xQIQH2xB")
REFL_AUTH = struct.Struct("!I12xQH6xQ8xI12xQH6xB15x16x")


@pytest.fixture(scope="module")
def compiled() -> Twin:
    twins = dataplane.implementations()
    if "cython" not in twins or getattr(twins["cython"], "Sender", None) is None:
        if REQUIRE:
            pytest.fail("TWAMP_REQUIRE_EXTENSION=1 but the compiled Sender is not importable")
        pytest.skip("the compiled twin (twamp.dataplane) is not built")
    return twins["cython"]


def crypto_for(fmt: TestFormat) -> TestPacketCrypto | None:
    return None if fmt.test_mode is TestMode.OPEN else TestPacketCrypto(KEYS, fmt.test_mode)


def schedule(n: int, interval_ns: int = MS, lead_ns: int = 20 * MS) -> np.ndarray[Any, Any]:
    return clock.realtime_ns() + lead_ns + np.arange(n, dtype=np.int64) * interval_ns


def addr(sock: socket.socket) -> tuple[str, int]:
    host, port = sock.getsockname()[:2]
    return host, port


@pytest.fixture
def socks() -> Iterator[Any]:
    made: list[socket.socket] = []

    def make(host: str = "127.0.0.1") -> socket.socket:
        made.append(open_test_socket(host, 0))
        return made[-1]

    yield make
    for s in made:
        s.close()


def check_records(result: Any, n: int, first_seq: int = 0) -> np.ndarray[Any, Any]:
    c = result.counters
    assert (c["sent"], c["received"], c["send_errors"]) == (n, n, 0)
    assert c["malformed"] == c["auth_failed"] == c["unknown_peer"] == 0
    sent = result.sent
    seqs = [(first_seq + i) & 0xFFFFFFFF for i in range(n)]
    assert sent["seq"].tolist() == seqs
    assert np.all(np.diff(sent["t1"]) > 0)  # one clock read per packet, in sending order
    rec: np.ndarray[Any, Any] = result.received
    rec = rec[np.argsort(rec["t1"], kind="stable")]
    assert rec["sender_seq"].tolist() == seqs  # every packet answered once
    assert rec["t1"].tolist() == sent["t1"].tolist()  # T1 echoed, ns -> NTP -> ns exact
    # One host, one clock: T1 <= T2 <= T3 <= T4.
    assert np.all(rec["t1"] <= rec["t2"]) and np.all(rec["t2"] <= rec["t3"])
    assert np.all(rec["t3"] <= rec["t4"]) and np.all(rec["t4"] - rec["t1"] < S)
    assert set(rec["sender_ttl"].tolist()) == {255}
    assert set(rec["reply_ttl"].tolist()) == {255}
    return rec


@pytest.mark.parametrize("reflector", ["python", "cython"])
@pytest.mark.parametrize("fmt", [OPEN, AUTH, ENC], ids=["open", "auth", "enc"])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "dual"])
def test_round_trip_against_both_reflectors(
    compiled: Twin, socks: Any, reflector: str, fmt: TestFormat, host: str
) -> None:
    impl = compiled if reflector == "cython" else PURE
    refl_sock = socks("::" if host == "dual" else host)
    send_sock = socks("127.0.0.1" if host == "dual" else host)
    dest = ("127.0.0.1", refl_sock.getsockname()[1]) if host == "dual" else addr(refl_sock)
    refl = impl.Reflector(refl_sock)
    refl.add_session(impl.SessionSpec(addr(send_sock), fmt, crypto_for(fmt), dscp=10))
    n = 60
    sender = compiled.Sender(send_sock, dest, fmt=fmt, crypto=crypto_for(fmt), padding=64, tos=0x2C)
    started = time.monotonic()
    with refl:
        result = sender.run(schedule(n, 500_000), wait_ns=5 * S)
    assert time.monotonic() - started < 4.0, "run did not end once all was answered"
    rec = check_records(result, n)
    assert rec["reflector_seq"].tolist() == list(range(n))  # stateful: its own counter
    assert set(rec["reply_tos"].tolist()) == {10 << 2}  # the session's DSCP
    assert refl.counters()["reflected"] == n
    assert result.counters["reflector_unsynced"] == (
        n if not clock.error_estimate() & 0x8000 else 0
    )


def test_pacing_follows_the_schedule(compiled: Twin, socks: Any) -> None:
    send_sock, refl_sock = socks(), socks()
    refl = compiled.Reflector(refl_sock)
    refl.add_session(compiled.SessionSpec(addr(send_sock), OPEN))
    n, interval = 150, 2 * MS
    plan = schedule(n, interval)
    sender = compiled.Sender(send_sock, addr(refl_sock), fmt=OPEN, padding=27)
    with refl:
        result = sender.run(plan, wait_ns=2 * S)
    check_records(result, n)
    lateness = result.sent["t1"] - plan
    # Never early (the offset between the clocks is read once; allow its read jitter), and
    # on time as a rule: these are loose bounds for a shared VM.
    assert lateness.min() > -200_000
    assert np.median(lateness) < 1 * MS
    assert np.median(np.diff(result.sent["t1"])) == pytest.approx(interval, abs=0.5 * MS)
    c = result.counters
    assert c["behind_schedule"] <= n // 10
    # max_lag_ns is the same lateness, measured on the monotonic clock at the stamp.
    assert abs(c["max_lag_ns"] - max(0, int(lateness.max()))) < 200_000


@pytest.mark.parametrize("fmt", [OPEN, AUTH, ENC], ids=["open", "auth", "enc"])
def test_a_late_schedule_goes_out_at_once_and_counts_behind(
    compiled: Twin, socks: Any, fmt: TestFormat
) -> None:
    send_sock, refl_sock = socks(), socks()
    refl = compiled.Reflector(refl_sock)
    refl.add_session(compiled.SessionSpec(addr(send_sock), fmt, crypto_for(fmt)))
    n = 300
    plan = np.full(n, clock.realtime_ns() - 50 * MS, dtype=np.int64)  # all due, 50 ms late
    sender = compiled.Sender(send_sock, addr(refl_sock), fmt=fmt, crypto=crypto_for(fmt))
    with refl:
        result = sender.run(plan, wait_ns=5 * S)
    check_records(result, n)
    c = result.counters
    assert c["behind_schedule"] == n
    assert c["max_lag_ns"] >= 50 * MS
    # The late packets went out back to back, not paced.
    assert int(result.sent["t1"][-1] - result.sent["t1"][0]) < n * MS


def test_stop_event_while_sending_and_while_waiting(compiled: Twin, socks: Any) -> None:
    send_sock, refl_sock = socks(), socks()
    refl = compiled.Reflector(refl_sock)
    refl.add_session(compiled.SessionSpec(addr(send_sock), OPEN))
    sender = compiled.Sender(send_sock, addr(refl_sock), fmt=OPEN)
    stop = threading.Event()
    with refl:
        timer = threading.Timer(0.15, stop.set)
        timer.start()
        t0 = time.monotonic()
        result = sender.run(schedule(1000, 10 * MS), wait_ns=10 * S, stop=stop)
        elapsed = time.monotonic() - t0
        timer.join()
    assert elapsed < 0.15 + 0.1  # honoured within the brief's ~100 ms
    c = result.counters
    assert 3 <= c["sent"] < 1000
    assert result.sent["seq"].tolist() == list(range(c["sent"]))
    # Replies already queued when the stop came are still taken in.
    assert c["received"] >= c["sent"] - 1
    # Stop during the wait: a silent peer, and a long wait_ns.
    silent = socks()
    quiet = compiled.Sender(send_sock, addr(silent), fmt=OPEN)
    stop.clear()
    timer = threading.Timer(0.1, stop.set)
    timer.start()
    t0 = time.monotonic()
    result = quiet.run(schedule(2), wait_ns=10 * S, stop=stop)
    timer.join()
    assert time.monotonic() - t0 < 0.1 + 0.1
    assert (result.counters["sent"], result.counters["received"]) == (2, 0)


def test_wait_ns_bounds_the_wait(compiled: Twin, socks: Any) -> None:
    send_sock, silent = socks(), socks()
    sender = compiled.Sender(send_sock, addr(silent), fmt=OPEN, busy_poll=True)
    t0 = time.monotonic()
    result = sender.run(schedule(3, lead_ns=0), wait_ns=250 * MS)
    elapsed = time.monotonic() - t0
    assert 0.24 < elapsed < 0.6
    assert (result.counters["sent"], result.counters["received"]) == (3, 0)
    assert len(silent.recv(100)) == 14  # the packets did go out


def test_sequence_numbers_wrap_and_runs_continue(compiled: Twin, socks: Any) -> None:
    send_sock, refl_sock = socks(), socks()
    refl = compiled.Reflector(refl_sock)
    refl.add_session(compiled.SessionSpec(addr(send_sock), OPEN, stateful=False))
    sender = compiled.Sender(send_sock, addr(refl_sock), fmt=OPEN)
    first = 0xFFFFFFFF - 2
    with refl:
        t0 = time.monotonic()
        one = sender.run(schedule(6), first_seq=first, wait_ns=5 * S)
        # Answers are matched modulo 2^32: the run ends as soon as all are in.
        assert time.monotonic() - t0 < 2.0
        two = sender.run(schedule(4), first_seq=3, wait_ns=5 * S)
    check_records(one, 6, first)
    check_records(two, 4, 3)
    assert one.sent["seq"].tolist() == [first, first + 1, first + 2, 0, 1, 2]
    # Stateless reflector: it copies our sequence numbers.
    assert sorted(one.received["reflector_seq"].tolist()) == sorted(one.sent["seq"].tolist())


# --------------------------------------------------------------------------------------------
# Hand-packed replies: both Senders must make the same records of them


def ntp(sec: int, frac: int) -> int:
    return (sec << 32) | frac


def hand_made_replies(fmt: TestFormat) -> list[tuple[str, bytes]]:
    """(who sends it, payload): the corner cases of reading a reflection."""
    now_ntp_s = clock.realtime_ns() // S + 2_208_988_800
    cases: list[tuple[int, int, int, int, int, int, int]] = [
        # seq, T3 raw, EE, T2 raw, sender seq, T1 raw, sender EE
        (
            1,
            ntp(now_ntp_s, 0x80000000),
            0x8001,
            ntp(now_ntp_s, 0x7FFFFFFF),
            0,
            ntp(now_ntp_s - 1, 1),
            0x3FFF,
        ),
        (
            2,
            ntp(now_ntp_s, 0xFFFFFFFF),
            0x0001,
            ntp(now_ntp_s, 0),
            1,
            ntp(now_ntp_s, 0xFFFFFFFF),
            0x8101,
        ),
        # Seconds that only make sense in NTP era 1 (after 2036) or long ago: the era nearest
        # the receive time wins.
        (
            3,
            ntp(0x00000010, 5),
            0x8001,
            ntp(0xFFFFFFF0, 5),
            2,
            ntp(now_ntp_s - 2**31 + 5, 9),
            0x0001,
        ),
        # PTP (Z set): TAI seconds and nanoseconds (RFC 8186).
        (
            4,
            ntp(1_800_000_037, 999_999_999),
            0xC001,
            ntp(1_800_000_037, 0),
            3,
            ntp(1_800_000_000, 1),
            0x4001,
        ),
        # PTP with a nanoseconds field of 10^9 or more: not a time at all.
        (5, ntp(1_800_000_037, 1_000_000_000), 0xC001, ntp(1_800_000_037, 0), 4, 0, 0),
        (6, ntp(now_ntp_s, 0), 0xC001, ntp(1, 2), 5, ntp(1_800_000_000, 0xFFFFFFFF), 0x4001),
    ]
    crypto = crypto_for(fmt)
    out: list[tuple[str, bytes]] = []
    for seq, t3, ee, t2, s_seq, t1, s_ee in cases:
        if fmt.authenticated:
            pkt = bytearray(REFL_AUTH.pack(seq, t3, ee, t2, s_seq, t1, s_ee, 200 + seq))
        else:
            pkt = bytearray(REFL_OPEN.pack(seq, t3, ee, t2, s_seq, t1, s_ee, 200 + seq))
        pkt += bytes(seq * 3)  # padding, of any length
        if crypto is not None:
            crypto.protect_reflector(pkt)
        out.append(("peer", bytes(pkt)))
    good = out[0][1]
    out += [("peer", good)] * 20  # duplicates: more rows than the 16 preallocated
    out += [("stranger", good), ("peer", good[:20])]
    out += [("peer", b""), ("peer", good[: fmt.reflector_header - 1])]
    if crypto is not None:
        forged = bytearray(good)
        forged[100] ^= 1
        out.append(("peer", bytes(forged)))
    return out


def listen_to(
    impl: Twin, socks: Any, fmt: TestFormat, host: str, replies: list[tuple[str, bytes]]
) -> Any:
    send_sock, peer, stranger = socks(host), socks(host), socks(host)
    sender = impl.Sender(send_sock, addr(peer), fmt=fmt, crypto=crypto_for(fmt))
    for who, data in replies:
        (peer if who == "peer" else stranger).sendto(data, addr(send_sock))
    t0 = clock.realtime_ns()
    result = sender.run(np.zeros(0, dtype=np.int64), wait_ns=150 * MS)  # listen only
    assert np.all(result.received["t4"] >= t0 - S)
    return result


@pytest.mark.parametrize("fmt", [OPEN, AUTH, ENC], ids=["open", "auth", "enc"])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_hand_made_replies_give_the_pure_senders_records(
    compiled: Twin, socks: Any, fmt: TestFormat, host: str
) -> None:
    replies = hand_made_replies(fmt)
    pure = listen_to(PURE, socks, fmt, host, replies)
    fast = listen_to(compiled, socks, fmt, host, replies)
    assert fast.counters == pure.counters
    c = fast.counters
    assert c["received"] == 4 + 20 and c["unknown_peer"] == 1
    assert c["malformed"] == 5  # three short, two with a PTP time that is none
    assert c["auth_failed"] == (1 if fmt.authenticated else 0)
    names = [n for n in fast.received.dtype.names if n != "t4"]
    assert fast.received[names].tolist() == pure.received[names].tolist()
    first = fast.received[0]
    assert (int(first["sender_seq"]), int(first["reflector_seq"])) == (0, 1)
    assert int(first["sender_ttl"]) == 201
    # Spot checks of the conversions against values worked out by hand.
    by_seq = {int(r["reflector_seq"]): r for r in fast.received[:5]}
    now_s = clock.realtime_ns() // S
    assert int(by_seq[1]["t3"]) % S == 500_000_000  # 0x80000000 / 2^32 s, exactly
    # A fraction of 2^32 - 1 ceils to a whole second: T3 - T2 is exactly 1 s.
    assert int(by_seq[2]["t3"]) - int(by_seq[2]["t2"]) == S
    assert int(by_seq[3]["t3"]) // S == 0x10 + 2**32 - 2_208_988_800  # era 1: after 2036
    assert abs(int(by_seq[3]["t2"]) // S - now_s) < 2**31  # the era nearest now
    assert int(by_seq[4]["t3"]) == 1_800_000_000 * S + 999_999_999  # PTP, TAI - 37 s
    assert int(by_seq[4]["t1"]) == (1_800_000_000 - 37) * S + 1
    assert 5 not in by_seq and 6 not in by_seq  # PTP nanoseconds of 10^9 or more: malformed
    assert c["reflector_unsynced"] == 1  # only reflector seq 2 lacks the S bit
