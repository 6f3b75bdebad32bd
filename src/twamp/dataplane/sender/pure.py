"""The Session-Sender, pure-Python twin of `sender/compiled.pyx` (RFC 5357 §4.1)."""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import struct
import time

import numpy as np
import numpy.typing as npt

from ... import clock
from ...constants import TestMode
from ...crypto import TestPacketCrypto
from ...errors import IntegrityError, ProtocolError
from ...metrics import SENT_DTYPE, Records
from ...timestamps import ns_from_timestamp, ntp_from_ns
from ...wire.packets import TestFormat, build_sender, parse_reflection, write_transmit_timestamp
from ..sockets import (
    ANCBUF_SIZE,
    SO_TIMESTAMPNS,
    TS_SLOT_HARDWARE,
    TS_SLOT_SOFTWARE,
    enable_receive_options,
    enable_tx_timestamps,
    parse_ancillary,
    parse_tx_timestamp,
    read_tx_timestamps,
    set_send_ttl,
    tos_ancillary,
)
from ..types import (
    BEHIND_NS,
    MAX_DATAGRAM,
    MAX_SLEEP_NS,
    S_BIT,
    SEQ_MASK,
    SPIN_NS,
    Z_BIT,
    SenderResult,
    StopFlag,
    normalize_ip,
)

__all__ = ["CRYPTO_BACKEND", "IMPLEMENTATION", "Sender", "parse_tx_report_bytes"]

IMPLEMENTATION = "python"
_CMSGHDR = struct.Struct("@Nii")  # struct cmsghdr: cmsg_len, cmsg_level, cmsg_type
_CMSG_ALIGN = struct.calcsize("@N")


def parse_tx_report_bytes(control: bytes, slot: int = TS_SLOT_SOFTWARE) -> tuple[int, int] | None:
    """`sockets.parse_tx_timestamp` over the raw control octets of one error-queue message,
    walked as CMSG_FIRSTHDR/CMSG_NXTHDR do; the twin of the compiled one, for the tests."""
    ancdata: list[tuple[int, int, bytes]] = []
    off = 0
    while off + _CMSGHDR.size <= len(control):
        length, level, kind = _CMSGHDR.unpack_from(control, off)
        if length < _CMSGHDR.size or off + length > len(control):
            break
        ancdata.append((level, kind, bytes(control[off + _CMSGHDR.size : off + length])))
        off += -(-length // _CMSG_ALIGN) * _CMSG_ALIGN
    return parse_tx_timestamp(ancdata, slot)


CRYPTO_BACKEND = "python"

_NS_PER_MS = 1_000_000
_V4_MAPPED = "::ffff:"

_Buffer = bytes | bytearray | memoryview


class Sender:
    """The Session-Sender data plane of one test session (RFC 5357 §4.1), pure-Python twin.

    Theory of operation
    -------------------
    `run(schedule_ns)` sends one packet per entry of `schedule_ns` (realtime ns, ascending), with
    sequence numbers `first_seq`, `first_seq + 1`, ... (RFC 5357 §4.1.2: from 0, one per packet,
    so a caller that runs a session in slices passes the count sent so far). Per packet:

    1. The plaintext packet (`packets.build_sender`: sequence number, zero timestamp, padding)
       is built ahead of time, while waiting.
    2. Pacing: the schedule is moved onto the monotonic clock once per call (a realtime step
       does not disturb it). Until `SPIN_NS` before the send time the loop sleeps in poll(2) on
       the socket, so replies are taken in as they arrive and do not pile up in the receive
       buffer; the last `SPIN_NS` are spun. `busy_poll` spins with non-blocking receives
       throughout. A packet sent more than `BEHIND_NS` late counts in `behind_schedule`;
       `max_lag_ns` is the largest lateness.
    3. The send Timestamp (NTP format, Z = 0) and our Error Estimate (`clock.error_estimate()`)
       are written last, just before the send; `sent["t1"]` is that same value. In modes 2 and 4
       `TestPacketCrypto.protect_sender` then adds the HMAC and encrypts (RFC 5357 §4.1.2).
       Right after each send at most one queued reply is taken in, so that replies keep pace
       with requests even when the schedule leaves no time to wait.
    4. Sent with TTL 255 (set on the socket, RFC 5357 §4.2.1: the far end counts hops from it) and
       TOS `tos` (a per-datagram control message). A failed send counts in `send_errors` and
       uses up its sequence number; the packet is not in `sent`.

    Each reflection (RFC 5357 §4.2.1) is received with the kernel's receive timestamp (T4,
    `SO_TIMESTAMPNS`) and the TTL and TOS it arrived with (0 when unknown). It must come from
    `peer` exactly (a v4-mapped address counts as its IPv4 address), else `unknown_peer`. It
    must be at least `fmt.reflector_header` long (longer is fine: a STAMP reflector answers a
    41-octet TWAMP Light request with 44, RFC 8762 §4.6), else `malformed`. In modes 2 and 4
    `unprotect_reflector` runs first; a bad HMAC is `auth_failed`. `packets.parse_reflection`
    decodes it; T2 and T3 are converted to ns in the format its Error Estimate's Z bit names,
    T1 is the echoed Sender Timestamp. Replies whose Error Estimate lacks the S bit are counted
    in `reflector_unsynced` (one-way delays need both clocks synchronised).

    After the last send, `run` keeps receiving for up to `wait_ns`, and returns early once every
    packet of this call has been answered (an empty schedule always waits the full `wait_ns`,
    to collect stragglers of earlier calls). A set `stop` ends sending and waiting within
    `MAX_SLEEP_NS`; what is queued is still received.

    Counters (per call): sent, send_errors, received, malformed, auth_failed, unknown_peer,
    behind_schedule, max_lag_ns, reflector_unsynced.
    """

    IMPLEMENTATION = IMPLEMENTATION

    def __init__(
        self,
        sock: socket.socket,
        peer: tuple[str, int],
        *,
        fmt: TestFormat,
        crypto: TestPacketCrypto | None = None,
        padding: int = 0,
        tos: int = 0,
        batch: int = 32,
        busy_poll: bool = False,
        tx_timestamps: bool = False,
        hw_timestamps: bool = False,
    ) -> None:
        if (fmt.test_mode is TestMode.OPEN) != (crypto is None):
            raise ValueError("crypto is required in authenticated/encrypted mode, and only there")
        if not 0 <= padding <= MAX_DATAGRAM - fmt.reflector_header:
            raise ValueError(
                f"padding {padding} is outside 0..{MAX_DATAGRAM - fmt.reflector_header}"
            )
        if not 0 <= tos <= 0xFF:
            raise ValueError(f"TOS {tos} is outside 0..255")
        if batch < 1:
            raise ValueError("batch must be at least 1")
        ip, port = peer
        if not 0 < port <= 0xFFFF:
            raise ValueError(f"peer port {port} is outside 1..65535")
        addr = ipaddress.ip_address(ip)  # ValueError for a name: resolve before
        v6 = sock.family == socket.AF_INET6
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is None and not v6:
            raise ValueError(f"an IPv4 socket cannot reach {ip}")
        self._peer = (normalize_ip(ip), int(port))
        if v6 and isinstance(addr, ipaddress.IPv4Address):
            self._dest: tuple[str, int] = (f"{_V4_MAPPED}{addr}", int(port))
        else:
            self._dest = (str(addr), int(port))
        self._sock = sock
        self._fmt = fmt
        self._crypto = crypto
        self._batch = batch
        self._busy_poll = busy_poll
        # RFC 5357 §4.1.2, RFC 4656 §4.1.2: pseudo-random, drawn independently of anything else.
        self._padding = os.urandom(padding)
        self._anc = tos_ancillary(sock.family, self._dest[0], tos)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        enable_receive_options(sock)
        set_send_ttl(sock)
        # SO_TIMESTAMPING numbers datagrams from 0 when enabled: _tx_next counts them.
        # hw_timestamps: the NIC's raw transmit stamps instead (the device must have them on,
        # dataplane.hwstamp); a packet it did not stamp has none (a zero in that slot).
        self._tx_timestamps = tx_timestamps or hw_timestamps
        self._ts_slot = TS_SLOT_HARDWARE if hw_timestamps else TS_SLOT_SOFTWARE
        self._tx_next = 0
        if self._tx_timestamps:
            enable_tx_timestamps(sock, hardware=hw_timestamps)

    @property
    def peer(self) -> tuple[str, int]:
        return self._peer

    @property
    def hw_timestamps(self) -> bool:
        """The transmit stamps recorded are the NIC's raw hardware ones (`tx_kernel_ns`)."""
        return self._ts_slot == TS_SLOT_HARDWARE

    def run(
        self,
        schedule_ns: npt.NDArray[np.int64],
        *,
        first_seq: int = 0,
        wait_ns: int = 2_000_000_000,
        stop: StopFlag | None = None,
    ) -> SenderResult:
        """Send one packet per scheduled time, then wait for replies (see the class docstring)."""
        schedule = np.asarray(schedule_ns, dtype=np.int64)
        if schedule.ndim != 1:
            raise ValueError("schedule_ns must be one-dimensional")
        if schedule.size > 1 and bool(np.any(schedule[1:] < schedule[:-1])):
            raise ValueError("schedule_ns must be ascending")
        if not 0 <= first_seq <= SEQ_MASK:
            raise ValueError(f"first_seq {first_seq} is outside 0..{SEQ_MASK}")
        if wait_ns < 0:
            raise ValueError("wait_ns cannot be negative")
        run = _SenderRun(self, int(schedule.size), first_seq)
        if self._tx_timestamps:
            run.tx_kernel = np.zeros(int(schedule.size), dtype=np.int64)
            run.tx_base = self._tx_next
        fmt, crypto, padding = self._fmt, self._crypto, self._padding
        send, anc, dest = self._sock.sendmsg, self._anc, self._dest
        sent = run.sent
        realtime, monotonic = clock.realtime_ns, clock.monotonic_ns
        # One offset for the whole call: pacing on the monotonic clock.
        offset = monotonic() - realtime()
        targets = (schedule + offset).tolist()
        n_sent = n_errors = behind = 0
        max_lag = 0
        ee = clock.error_estimate()
        stopped = False
        for i, target in enumerate(targets):
            seq = (first_seq + i) & SEQ_MASK
            pkt = build_sender(fmt, seq, 0, 0, padding)
            if i & 0xFF == 0:
                ee = clock.error_estimate()  # cached by clock; refreshed now and then
            if self._wait_until(run, target, stop):
                stopped = True
                break
            now = realtime()
            lag = monotonic() - target
            write_transmit_timestamp(pkt, fmt, ntp_from_ns(now), ee)
            if crypto is not None:
                crypto.protect_sender(pkt)
            try:
                send([pkt], anc, 0, dest)
            except OSError:
                n_errors += 1
                continue
            sent[n_sent] = (seq, now)
            n_sent += 1
            self._tx_next += 1
            # One reply in per packet out: even when back-to-back sends leave no time to
            # wait, replies cannot pile up in the receive buffer.
            run.drain(1)
            if lag > max_lag:
                max_lag = lag
            if lag > BEHIND_NS:
                behind += 1
        run.n_sent = n_sent
        if stopped:
            run.drain(MAX_DATAGRAM)
        else:
            self._wait_replies(run, monotonic() + wait_ns, stop)
        run.take_tx_timestamps()
        counters = {
            "sent": n_sent,
            "send_errors": n_errors,
            "received": len(run.records),
            "malformed": run.malformed,
            "auth_failed": run.auth_failed,
            "unknown_peer": run.unknown_peer,
            "behind_schedule": behind,
            "max_lag_ns": max_lag,
            "reflector_unsynced": run.unsynced,
        }
        tx = None if run.tx_kernel is None else run.tx_kernel[:n_sent].copy()
        return SenderResult(sent[:n_sent].copy(), run.records.array.copy(), counters, tx)

    def _wait_until(self, run: _SenderRun, target: int, stop: StopFlag | None) -> bool:
        """Receive while waiting for monotonic time `target`; True if `stop` was set."""
        monotonic = clock.monotonic_ns
        busy = self._busy_poll
        batch = self._batch
        while True:
            if stop is not None and stop.is_set():
                return True
            remaining = target - monotonic()
            if remaining <= 0:
                return False
            if remaining <= SPIN_NS:
                while monotonic() < target:
                    pass
                return False
            if busy:
                run.drain(batch)
                continue
            nap = min(remaining - SPIN_NS, MAX_SLEEP_NS)
            if nap >= _NS_PER_MS:
                # poll(2) has millisecond resolution: round down, never past the spin phase.
                if run.poller.poll(nap // _NS_PER_MS):
                    run.drain(batch)
            else:
                run.drain(batch)
                time.sleep(nap / 1e9)

    def _wait_replies(self, run: _SenderRun, deadline: int, stop: StopFlag | None) -> None:
        monotonic = clock.monotonic_ns
        batch = self._batch
        expect_all = run.n > 0
        while True:
            run.drain(batch)
            if expect_all and run.answered >= run.n_sent:
                return
            if stop is not None and stop.is_set():
                return
            remaining = deadline - monotonic()
            if remaining <= 0:
                return
            if self._busy_poll:
                continue
            run.poller.poll(max(1, min(remaining, MAX_SLEEP_NS) // _NS_PER_MS))

    def __repr__(self) -> str:
        return f"<Sender {IMPLEMENTATION} peer={self._peer[0]}:{self._peer[1]}>"


class _SenderRun:
    """Receive-side state of one `Sender.run` call."""

    __slots__ = (
        "answered",
        "auth_failed",
        "first_seq",
        "is_answered",
        "malformed",
        "n",
        "n_sent",
        "poller",
        "records",
        "sender",
        "sent",
        "tx_base",
        "tx_kernel",
        "unknown_peer",
        "unsynced",
        "view",
    )

    def __init__(self, sender: Sender, n: int, first_seq: int) -> None:
        self.sender = sender
        self.n = n
        self.n_sent = 0
        self.first_seq = first_seq
        self.sent: npt.NDArray[np.void] = np.zeros(n, dtype=SENT_DTYPE)
        self.records = Records(max(n, 16))
        self.is_answered = bytearray(n)
        self.answered = 0
        self.malformed = 0
        self.auth_failed = 0
        self.unknown_peer = 0
        self.unsynced = 0
        self.view = memoryview(bytearray(MAX_DATAGRAM))
        self.poller = select.poll()
        self.poller.register(sender._sock.fileno(), select.POLLIN)
        # Sender(tx_timestamps=True): kernel transmit times by row of `sent`; the kernel's
        # datagram number tx_base is this run's first row.
        self.tx_kernel: npt.NDArray[np.int64] | None = None
        self.tx_base = 0

    def take_tx_timestamps(self) -> None:
        """Move the kernel's transmit reports from the error queue into `tx_kernel`."""
        tx = self.tx_kernel
        if tx is None:
            return
        for key, stamp in read_tx_timestamps(self.sender._sock, slot=self.sender._ts_slot):
            row = key - self.tx_base
            if 0 <= row < tx.size:
                tx[row] = stamp

    def drain(self, limit: int) -> None:
        """Take in up to `limit` queued datagrams without blocking (and transmit reports)."""
        self.take_tx_timestamps()
        sender = self.sender
        recv = sender._sock.recvmsg_into
        view = self.view
        fmt = sender._fmt
        crypto = sender._crypto
        peer_ip, peer_port = sender._peer
        dest_ip = sender._dest[0]
        header = fmt.reflector_header
        for _ in range(limit):
            try:
                size, anc, flags, addr = recv([view], ANCBUF_SIZE, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # An ICMP error reported on the socket (e.g. port unreachable): nothing to read.
                continue
            rx_ns, ttl, tos = parse_ancillary(anc)
            if rx_ns is None:
                rx_ns = clock.realtime_ns()
            ip: str = addr[0]
            if addr[1] != peer_port or (
                ip != dest_ip and ip != peer_ip and not _same_ip(ip, peer_ip)
            ):
                self.unknown_peer += 1
                continue
            if flags & socket.MSG_TRUNC or size < header:
                self.malformed += 1
                continue
            data: _Buffer = view[:size]
            if crypto is not None:
                data = bytearray(data)
                try:
                    crypto.unprotect_reflector(data)
                except IntegrityError:
                    self.auth_failed += 1
                    continue
                except (ProtocolError, ValueError):
                    self.malformed += 1
                    continue
            try:
                reply = parse_reflection(fmt, data)
                ee = reply.error_estimate
                t2 = ns_from_timestamp(reply.receive_timestamp, bool(ee & Z_BIT), rx_ns)
                t3 = ns_from_timestamp(reply.timestamp, bool(ee & Z_BIT), rx_ns)
                s_ee = reply.sender_error_estimate
                t1 = ns_from_timestamp(reply.sender_timestamp, bool(s_ee & Z_BIT), rx_ns)
            except (ProtocolError, ValueError):
                self.malformed += 1
                continue
            if not ee & S_BIT:
                self.unsynced += 1
            sender_seq = reply.sender_seq
            self.records.append(
                sender_seq,
                reply.seq,
                t1,
                t2,
                t3,
                rx_ns,
                reply.sender_ttl,
                0 if ttl is None else ttl,
                0 if tos is None else tos,
                ee,
            )
            idx = (sender_seq - self.first_seq) & SEQ_MASK
            if idx < self.n and not self.is_answered[idx]:
                self.is_answered[idx] = 1
                self.answered += 1


def _same_ip(a: str, b: str) -> bool:
    try:
        return normalize_ip(a) == b
    except ValueError:
        return False
