# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""The Session-Sender, compiled twin of `sender/pure.py` (Linux); its class docstring says how."""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize
from cpython.exc cimport PyErr_CheckSignals
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from twamp.dataplane.libcrypto cimport *
from twamp.dataplane.system cimport *
from twamp.dataplane.wire cimport *

import ipaddress
import os
import socket

import numpy as np

from twamp import clock
from twamp.constants import TestMode
from twamp.dataplane.sockets import (
    SO_TIMESTAMPNS,
    enable_receive_options,
    enable_tx_timestamps,
    set_send_ttl,
    tos_ancillary,
)
from twamp.dataplane.types import SEQ_MASK, SenderResult, normalize_ip
from twamp.metrics import RECORD_DTYPE, SENT_DTYPE
from twamp.wire.packets import build_sender

__all__ = ["CRYPTO_BACKEND", "IMPLEMENTATION", "Sender"]

IMPLEMENTATION = "cython"

# As in the reflector: "libcrypto" protects in C without the GIL, "python" under the GIL.
cdef int USE_LIBCRYPTO = os.environ.get("TWAMP_NO_LIBCRYPTO") != "1" and twamp_tc_load() == 1
CRYPTO_BACKEND = "libcrypto" if USE_LIBCRYPTO else "python"

cdef enum:
    SEND_RETRIES = 3
    # Pkt.state
    ST_DROP = 0
    ST_UNPROTECT = 1  # received; waits for verification
    ST_READY = 3  # a reply to record

cdef enum:
    SEND_RING = 64  # packets built ahead (mode 2: protected ahead)
    PREPARE_FEW = 8  # at least SEND_BATCH

# The pacing constants (SPIN_NS, MAX_SLEEP_NS, BEHIND_NS) are system.pxd's literals, the same
# values as twamp.dataplane.types, so that both twins pace, and count lateness, alike.
# How often the nogil loop takes the GIL to look at `stop`, signals and the Error Estimate.
cdef int64_t TICK_NS = 10_000_000
# Mode 2 protects packets ahead: a ring's worth when the next send is at least PREPARE_NS off,
# else as many as fit before it (up to PREPARE_FEW) at PREPARE_PACKET_NS each, measured
# (protect_sender_batch: 6 µs for 1, 27 µs for 8, 140 µs for 64), keeping PREPARE_MARGIN_NS.
cdef int64_t PREPARE_NS = 1_000_000
cdef int64_t PREPARE_PACKET_NS = 4_000
cdef int64_t PREPARE_MARGIN_NS = 15_000


def parse_tx_report_bytes(control, int slot=TS_SLOT_SOFTWARE):
    """wire.parse_tx_report over the raw control octets of one error-queue message ->
    (datagram number, stamp in ns) or None; for the tests of the cmsg parsing (the pure
    twin has the same function), never per packet."""
    cdef bytes data = bytes(control)
    cdef msghdr msg
    cdef TxReport report
    memset(&msg, 0, sizeof(msghdr))
    msg.msg_control = <void *><const char *>data
    msg.msg_controllen = len(data)
    if not parse_tx_report(&msg, slot, &report):
        return None
    return report.key, report.stamp_ns


cdef uint8_t *buffer_of(arr) except NULL:
    """The first octet of a C-contiguous numpy array (structured rows are packed octets)."""
    cdef uint8_t[::1] octets = arr.view(np.uint8)
    return &octets[0]


cdef class Sender:
    """The Session-Sender data plane of one test session, compiled twin of
    `sender/pure.py`: same arguments, pacing, counters and records.

    Theory of operation
    -------------------
    `run()` releases the GIL for the whole call except short, bounded sections: a "tick" every
    `TICK_NS` (the `stop` flag, pending signals such as Ctrl-C, the Error Estimate), growing
    the records array when duplicates overflow it, and the crypto batch calls (crypto backend "python" only).

    Pacing follows the pure twin: the schedule moves to the monotonic clock once per call;
    until `_SPIN_NS` before a send time the loop sleeps in ppoll(2) on the socket (taking in
    replies as they come, at most `_MAX_SLEEP_NS` at a time) or, with `busy_poll`, spins on
    non-blocking `recvmmsg`; the rest is spun on `clock_gettime`. Every packet whose time has
    come goes into one `sendmmsg` (at most `SEND_BATCH`: one when on schedule, several only
    when behind), each stamped (realtime clock, NTP format) just before its `mmsghdr` is built,
    the same value going into `sent["t1"]`. Lateness (`behind_schedule`, `max_lag_ns`) is
    measured per packet at its stamp. After each send as many queued replies are taken in as
    packets went out.

    Protection (RFC 5357 §4.1.2, RFC 4656 §4.1.2): in mode 2 the HMAC and encryption cover octets
    0-15 (Sequence Number and MBZ), not the Timestamp, so packets are built and protected ahead
    in batches of up to `SEND_RING` (while waiting) and only stamped at the send. Mode 4 covers
    the Timestamp: the due packets are stamped, protected and sent at once. With
    `CRYPTO_BACKEND == "libcrypto"` protection and the replies' verification are C calls into
    OpenSSL without the GIL (`_prepare_any`, `_protect_any`, `_unprotect_any`, the module
    docstring says how); with "python" they are one `protect_sender_batch` /
    `unprotect_reflector_batch` call per group, under the GIL.

    Replies: `recvmmsg` batches with `SO_TIMESTAMPNS` (T4), TTL and TOS; the peer check, length
    check and field parsing (T1, T2, T3 to ns in C, NTP with the era nearest T4, or PTP when the
    Z bit is set) are C; modes 2 and 4 unprotect a receive batch in C (libcrypto) or with one
    `unprotect_reflector_batch`. Rows go straight into preallocated `metrics.SENT_DTYPE` and
    `metrics.RECORD_DTYPE` arrays; nothing per packet is a Python object (but, with the
    "python" crypto backend, the bytearrays the batch helpers take).

    Differences from the pure twin that a caller could see: `stop` and signals are looked at
    every `TICK_NS` (10 ms) rather than before every packet (both end within `_MAX_SLEEP_NS`);
    packets already late share a `sendmmsg`; after a group of k sends, k replies are taken in
    (the pure twin: one after each send).

    Measured pacing and protect-ahead figures: docs/performance.md.
    """

    IMPLEMENTATION = IMPLEMENTATION

    def __init__(self, sock, peer, *, fmt, crypto=None, padding=0, tos=0, batch=32,
                 busy_poll=False, tx_timestamps=False, hw_timestamps=False):
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
            self._dest = (f"::ffff:{addr}", int(port))
        else:
            self._dest = (str(addr), int(port))
        self._sock = sock
        self._fd = sock.fileno()
        self._fmt = fmt
        self._crypto = crypto
        self._batch = batch
        self._busy_poll = bool(busy_poll)
        fill_fmt(&self._f, fmt)
        key, _ = addr16(self._peer[0])
        memcpy(self._peer_addr, <const char *>key, 16)
        self._peer_port = self._peer[1]
        self._set_dest(sock.family)
        if crypto is not None:
            self._crypto_mode = CRYPTO_ENC
            if crypto.test_mode is TestMode.AUTHENTICATED and fmt.timestamp_offset >= 16:
                self._crypto_mode = CRYPTO_AUTH
            twamp_tc_free(self._tc)
            self._tc = new_tc(crypto, USE_LIBCRYPTO)
        # RFC 5357 §4.1.2, RFC 4656 §4.1.2: pseudo-random, drawn independently of anything else.
        self._template = bytes(build_sender(fmt, 0, 0, 0, os.urandom(padding)))
        self._pkt_len = len(self._template)
        self._template_c = <const uint8_t *><const char *>self._template
        ((level, kind, value),) = tos_ancillary(sock.family, self._dest[0], tos)
        self._set_cmsg(level, kind, value)
        self._layout()
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        enable_receive_options(sock)
        set_send_ttl(sock)
        # hw_timestamps: the NIC's raw transmit stamps instead (the device must have them on,
        # dataplane.hwstamp); a packet it did not stamp has none (a zero in that slot).
        self._tx_ts = bool(tx_timestamps or hw_timestamps)
        self._ts_slot = TS_SLOT_HARDWARE if hw_timestamps else TS_SLOT_SOFTWARE
        self._tx_next = 0
        if self._tx_ts:
            enable_tx_timestamps(sock, hardware=bool(hw_timestamps))

    @property
    def hw_timestamps(self):
        """The transmit stamps recorded are the NIC's raw hardware ones (`tx_kernel_ns`)."""
        return self._ts_slot == TS_SLOT_HARDWARE

    def _set_dest(self, family):
        cdef sockaddr_in *a4 = <sockaddr_in *>&self._dest_sa
        cdef sockaddr_in6 *a6 = <sockaddr_in6 *>&self._dest_sa
        host, port = self._dest
        memset(&self._dest_sa, 0, sizeof(sockaddr_storage))
        packed = ipaddress.ip_address(host).packed
        if family == socket.AF_INET:
            a4.sin_family = AF_INET
            a4.sin_port = htons(port)
            memcpy(&a4.sin_addr.s_addr, <const char *>packed, 4)
            self._dest_len = sizeof(sockaddr_in)
        else:
            info = socket.getaddrinfo(
                host, port, socket.AF_INET6, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST
            )
            a6.sin6_family = AF_INET6
            a6.sin6_port = htons(port)
            memcpy(a6.sin6_addr.s6_addr, <const char *>packed, 16)
            a6.sin6_scope_id = info[0][4][3]
            self._dest_len = sizeof(sockaddr_in6)

    def _set_cmsg(self, int level, int kind, bytes value):
        cdef cmsghdr *cm = <cmsghdr *>self._tx_cmsg
        if CMSG_SPACE(len(value)) > sizeof(self._tx_cmsg):
            raise ValueError("control message too long")
        memset(self._tx_cmsg, 0, sizeof(self._tx_cmsg))
        cm.cmsg_len = CMSG_LEN(len(value))
        cm.cmsg_level = level
        cm.cmsg_type = kind
        memcpy(CMSG_DATA(cm), <const char *>value, len(value))
        self._tx_cmsg_len = CMSG_SPACE(len(value))

    def _layout(self):
        for dtype in (RECORD_DTYPE, SENT_DTYPE):
            if not all(dtype.fields[name][0].isnative for name in dtype.names):
                raise ValueError("the record dtypes must be in native byte order")
        rec = RECORD_DTYPE.fields
        self._lay.size = RECORD_DTYPE.itemsize
        self._lay.sender_seq = rec["sender_seq"][1]
        self._lay.reflector_seq = rec["reflector_seq"][1]
        self._lay.t1 = rec["t1"][1]
        self._lay.t2 = rec["t2"][1]
        self._lay.t3 = rec["t3"][1]
        self._lay.t4 = rec["t4"][1]
        self._lay.sender_ttl = rec["sender_ttl"][1]
        self._lay.reply_ttl = rec["reply_ttl"][1]
        self._lay.reply_tos = rec["reply_tos"][1]
        self._lay.reflector_ee = rec["reflector_ee"][1]
        self._lay.sent_size = SENT_DTYPE.itemsize
        self._lay.sent_seq = SENT_DTYPE.fields["seq"][1]
        self._lay.sent_t1 = SENT_DTYPE.fields["t1"][1]

    def __dealloc__(self):
        self._free()
        twamp_tc_free(self._tc)

    @property
    def peer(self):
        return self._peer

    cdef int _alloc(self) except -1:
        cdef int i
        cdef int b = self._batch
        if self._rx_pkts != NULL:
            return 0
        self._ring = <uint8_t *>malloc(<size_t>SEND_RING * self._pkt_len)
        self._tx = <mmsghdr *>calloc(SEND_BATCH, sizeof(mmsghdr))
        self._tx_iov = <iovec *>calloc(SEND_BATCH, sizeof(iovec))
        self._tx_rt = <int64_t *>calloc(SEND_BATCH, sizeof(int64_t))
        self._tx_lag = <int64_t *>calloc(SEND_BATCH, sizeof(int64_t))
        self._tx_j = <Py_ssize_t *>calloc(SEND_BATCH, sizeof(Py_ssize_t))
        self._rx_bufs = <uint8_t *>malloc(<size_t>b * MAX_DATAGRAM)
        self._rx = <mmsghdr *>calloc(b, sizeof(mmsghdr))
        self._rx_iov = <iovec *>calloc(b, sizeof(iovec))
        self._rx_names = <sockaddr_storage *>calloc(b, sizeof(sockaddr_storage))
        self._rx_ctrl = <uint8_t *>calloc(b, RX_CTRL)
        self._rx_pkts = <Pkt *>calloc(b, sizeof(Pkt))
        self._eq = <mmsghdr *>calloc(EQ_BATCH, sizeof(mmsghdr))
        self._eq_iov = <iovec *>calloc(EQ_BATCH, sizeof(iovec))
        self._eq_ctrl = <uint8_t *>calloc(EQ_BATCH, EQ_CTRL)
        self._eq_data = <uint8_t *>calloc(EQ_BATCH, 8)
        if (self._eq == NULL or self._eq_iov == NULL or self._eq_ctrl == NULL
                or self._eq_data == NULL):
            self._free()
            raise MemoryError()
        for i in range(EQ_BATCH):
            self._eq_iov[i].iov_base = self._eq_data + 8 * i
            self._eq_iov[i].iov_len = 8
            self._eq[i].msg_hdr.msg_iov = &self._eq_iov[i]
            self._eq[i].msg_hdr.msg_iovlen = 1
        if (self._ring == NULL or self._tx == NULL or self._tx_iov == NULL
                or self._tx_rt == NULL or self._tx_lag == NULL or self._tx_j == NULL
                or self._rx_bufs == NULL or self._rx == NULL or self._rx_iov == NULL
                or self._rx_names == NULL or self._rx_ctrl == NULL or self._rx_pkts == NULL):
            self._free()
            raise MemoryError()
        for i in range(SEND_BATCH):
            self._tx[i].msg_hdr.msg_name = &self._dest_sa
            self._tx[i].msg_hdr.msg_namelen = self._dest_len
            self._tx[i].msg_hdr.msg_iov = &self._tx_iov[i]
            self._tx[i].msg_hdr.msg_iovlen = 1
            self._tx[i].msg_hdr.msg_control = self._tx_cmsg
            self._tx[i].msg_hdr.msg_controllen = self._tx_cmsg_len
            self._tx_iov[i].iov_len = self._pkt_len
        for i in range(b):
            self._rx_iov[i].iov_base = self._rx_bufs + <size_t>i * MAX_DATAGRAM
            self._rx_iov[i].iov_len = MAX_DATAGRAM
            self._rx[i].msg_hdr.msg_iov = &self._rx_iov[i]
            self._rx[i].msg_hdr.msg_iovlen = 1
            self._rx[i].msg_hdr.msg_name = &self._rx_names[i]
            self._rx[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage)
            self._rx[i].msg_hdr.msg_control = self._rx_ctrl + <size_t>i * RX_CTRL
            self._rx[i].msg_hdr.msg_controllen = RX_CTRL
            self._rx_pkts[i].buf = self._rx_bufs + <size_t>i * MAX_DATAGRAM
        return 0

    cdef void _free(self) noexcept:
        free(self._ring)
        free(self._tx)
        free(self._tx_iov)
        free(self._tx_rt)
        free(self._tx_lag)
        free(self._tx_j)
        free(self._rx_bufs)
        free(self._rx)
        free(self._rx_iov)
        free(self._rx_names)
        free(self._rx_ctrl)
        free(self._rx_pkts)
        self._ring = NULL
        self._tx = NULL
        self._tx_iov = NULL
        self._tx_rt = NULL
        self._tx_lag = NULL
        self._tx_j = NULL
        self._rx_bufs = NULL
        self._rx = NULL
        self._rx_iov = NULL
        self._rx_names = NULL
        self._rx_ctrl = NULL
        self._rx_pkts = NULL
        free(self._eq)
        free(self._eq_iov)
        free(self._eq_ctrl)
        free(self._eq_data)
        self._eq = NULL
        self._eq_iov = NULL
        self._eq_ctrl = NULL
        self._eq_data = NULL

    def run(self, schedule_ns, *, first_seq=0, wait_ns=2_000_000_000, stop=None):
        """Send one packet per scheduled time, then wait for replies (see the class docstring)."""
        cdef int64_t wait = wait_ns
        schedule = np.asarray(schedule_ns, dtype=np.int64)
        if schedule.ndim != 1:
            raise ValueError("schedule_ns must be one-dimensional")
        if schedule.size > 1 and bool(np.any(np.diff(schedule) < 0)):
            raise ValueError("schedule_ns must be ascending")
        if not 0 <= first_seq <= SEQ_MASK:
            raise ValueError(f"first_seq {first_seq} is outside 0..{SEQ_MASK}")
        if wait_ns < 0:
            raise ValueError("wait_ns cannot be negative")
        if self._running:
            raise RuntimeError("this Sender is running already")
        self._alloc()
        n = int(schedule.size)
        # One offset for the whole call: pacing on the monotonic clock.
        offset = clock.monotonic_ns() - clock.realtime_ns()
        targets = np.ascontiguousarray(np.append(schedule + offset, 0), dtype=np.int64)
        sent = np.zeros(n + 1, dtype=SENT_DTYPE)
        answered = np.zeros(n + 1, dtype=np.uint8)
        tx_kernel = np.zeros(n + 1, dtype=np.int64)
        self._records = np.zeros(max(n, 16), dtype=RECORD_DTYPE)
        self._keep = (targets, sent, answered, tx_kernel)
        self._tx_kernel = <int64_t *>buffer_of(tx_kernel)
        self._tx_base = self._tx_next
        self._targets = <const int64_t *>buffer_of(targets)
        self._sent_base = buffer_of(sent)
        self._answered = buffer_of(answered)
        self._rec_base = buffer_of(self._records)
        self._rec_cap = len(self._records)
        self._rec_n = 0
        self._n = n
        self._next = 0
        self._prepared = 0
        self._first_seq = first_seq
        memset(&self._c, 0, sizeof(SendCounters))
        self._stop = stop
        self._exc = None
        self._stopped = 0
        self._ee = clock.error_estimate()
        self._next_tick = 0
        self._running = 1
        try:
            with nogil:
                self._run_loop(wait)
                self._take_tx()
        finally:
            self._tx_kernel = NULL
            self._running = 0
            records = self._records[:self._rec_n].copy()
            self._stop = self._keep = self._records = None
            exc, self._exc = self._exc, None
        if exc is not None:
            raise exc
        counters = {
            "sent": self._c.sent,
            "send_errors": self._c.send_errors,
            "received": len(records),
            "malformed": self._c.malformed,
            "auth_failed": self._c.auth_failed,
            "unknown_peer": self._c.unknown_peer,
            "behind_schedule": self._c.behind,
            "max_lag_ns": self._c.max_lag,
            "reflector_unsynced": self._c.unsynced,
        }
        tx = tx_kernel[:self._c.sent].copy() if self._tx_ts else None
        return SenderResult(sent[:self._c.sent].copy(), records, counters, tx)

    # -- GIL sections (bounded, outside the per-packet path) -----------------------------------

    cdef int _tick(self) noexcept with gil:
        """1 if the run must stop: `stop` is set, a signal handler raised, or a bug."""
        self._next_tick = monotonic_ns() + TICK_NS
        try:
            PyErr_CheckSignals()  # Ctrl-C reaches a nogil loop only here
            self._ee = clock.error_estimate()
            if self._stop is not None and self._stop.is_set():
                self._stopped = 1
        except BaseException as exc:
            self._exc = exc
            self._stopped = 1
        return self._stopped

    cdef int _prepare(self, Py_ssize_t upto) noexcept with gil:
        """Mode 2: build and protect packets [_prepared, upto) in their ring slots."""
        cdef Py_ssize_t j
        cdef uint8_t *slot
        try:
            first = self._prepared
            reqs = []
            for j in range(first, upto):
                self._build(j)
                slot = self._ring + (j % SEND_RING) * self._pkt_len
                reqs.append(PyByteArray_FromStringAndSize(<char *>slot, SENDER_AUTH))
            self._crypto.protect_sender_batch(reqs)
            for j in range(first, upto):
                slot = self._ring + (j % SEND_RING) * self._pkt_len
                memcpy(slot, PyByteArray_AS_STRING(reqs[j - first]), SENDER_AUTH)
            self._prepared = upto
            return 0
        except BaseException as exc:
            self._exc = exc
            self._stopped = 1
            return -1

    cdef int _protect_group(self, int count) noexcept with gil:
        """Mode 4: protect the stamped packets queued for the next sendmmsg."""
        cdef int k
        cdef uint8_t *slot
        try:
            reqs = []
            for k in range(count):
                slot = <uint8_t *>self._tx_iov[k].iov_base
                reqs.append(PyByteArray_FromStringAndSize(<char *>slot, SENDER_AUTH))
            self._crypto.protect_sender_batch(reqs)
            for k in range(count):
                memcpy(self._tx_iov[k].iov_base, PyByteArray_AS_STRING(reqs[k]), SENDER_AUTH)
            return 0
        except BaseException as exc:
            self._exc = exc
            self._stopped = 1
            return -1

    cdef int _unprotect(self, int n) noexcept with gil:
        """Modes 2 and 4: verify and decrypt a receive batch's replies in one call."""
        cdef int i
        cdef Pkt *p
        try:
            idx = []
            reqs = []
            for i in range(n):
                p = &self._rx_pkts[i]
                if p.state == ST_UNPROTECT:
                    idx.append(i)
                    reqs.append(PyByteArray_FromStringAndSize(<char *>p.buf, REFLECTOR_AUTH))
            ok = self._crypto.unprotect_reflector_batch(reqs)
            for k in range(len(idx)):
                p = &self._rx_pkts[<int>idx[k]]
                if ok[k]:
                    memcpy(p.buf, PyByteArray_AS_STRING(reqs[k]), REFLECTOR_AUTH)
                    p.state = ST_READY
                else:
                    self._c.auth_failed += 1
                    p.state = ST_DROP
            return 0
        except BaseException as exc:
            self._exc = exc
            self._stopped = 1
            return -1

    cdef int _crypto_failed(self) noexcept with gil:
        self._exc = RuntimeError("libcrypto failed to protect a test packet")
        self._stopped = 1
        return -1

    cdef int _grow_records(self) noexcept with gil:
        """Duplicates and late replies may outnumber the packets: double the array."""
        try:
            grown = np.zeros(2 * self._rec_cap, dtype=RECORD_DTYPE)
            grown[:self._rec_cap] = self._records
            self._records = grown
            self._rec_base = buffer_of(grown)
            self._rec_cap = len(grown)
            return 0
        except BaseException as exc:
            self._exc = exc
            self._stopped = 1
            return -1

    # -- the loop ------------------------------------------------------------------------------

    # hot-loop-begin
    cdef int _prepare_any(self, Py_ssize_t upto) noexcept nogil:
        """Mode 2: `_prepare`, in C without the GIL when libcrypto is there."""
        cdef Py_ssize_t j
        if self._tc == NULL:
            return self._prepare(upto)
        for j in range(self._prepared, upto):
            self._build(j)
            if not twamp_tc_protect_sender(self._tc, self._ring + (j % SEND_RING) * self._pkt_len):
                return self._crypto_failed()
        self._prepared = upto
        return 0

    cdef int _protect_any(self, int count) noexcept nogil:
        """Mode 4: `_protect_group`, in C without the GIL when libcrypto is there."""
        cdef int k
        if self._tc == NULL:
            return self._protect_group(count)
        for k in range(count):
            if not twamp_tc_protect_sender(self._tc, <uint8_t *>self._tx_iov[k].iov_base):
                return self._crypto_failed()
        return 0

    cdef int _unprotect_any(self, int n) noexcept nogil:
        """Modes 2 and 4: `_unprotect`, in C without the GIL when libcrypto is there."""
        cdef int i
        cdef Pkt *p
        if self._tc == NULL:
            return self._unprotect(n)
        for i in range(n):
            p = &self._rx_pkts[i]
            if p.state != ST_UNPROTECT:
                continue
            # As unprotect_reflector_batch on the first 112 octets (the length is checked).
            if twamp_tc_unprotect_reflector(self._tc, p.buf, REFLECTOR_AUTH):
                p.state = ST_READY
            else:
                self._c.auth_failed += 1
                p.state = ST_DROP
        return 0

    cdef void _build(self, Py_ssize_t j) noexcept nogil:
        cdef uint8_t *slot = self._ring + (j % SEND_RING) * self._pkt_len
        memcpy(slot, self._template_c, self._pkt_len)
        put32(slot, <uint32_t>(self._first_seq + <uint64_t>j))  # RFC 5357 §4.1.2, mod 2^32

    cdef int _send_due(self) noexcept nogil:
        """Send the packets whose time has come (at least the next one); -1 to stop."""
        cdef Py_ssize_t j = self._next
        cdef Py_ssize_t left = self._n - j
        cdef int count = 1
        cdef int k
        cdef int r
        cdef int done = 0
        cdef int retries = 0
        cdef int64_t now = monotonic_ns()
        cdef int64_t lag
        cdef uint8_t *slot
        cdef uint8_t *row
        cdef uint32_t seq
        while count < SEND_BATCH and count < left and self._targets[j + count] <= now:
            count += 1
        if self._crypto_mode == CRYPTO_AUTH and self._prepared < j + count:
            # Nothing protected ahead (no time was left): the fewest that keep the pace.
            if self._prepare_any(min(self._n, j + PREPARE_FEW)) < 0:
                return -1
        for k in range(count):
            slot = self._ring + ((j + k) % SEND_RING) * self._pkt_len
            if self._crypto_mode != CRYPTO_AUTH:
                self._build(j + k)
            # RFC 5357 §4.1.2: the send Timestamp, read as late as possible.
            self._tx_rt[k] = realtime_ns()
            self._tx_lag[k] = monotonic_ns() - self._targets[j + k]
            self._tx_j[k] = j + k
            put64(slot + self._f.ts_off, ntp_from_ns(self._tx_rt[k]))
            put16(slot + self._f.ts_off + 8, self._ee)
            self._tx_iov[k].iov_base = slot
        if self._crypto_mode == CRYPTO_ENC and self._protect_any(count) < 0:
            return -1
        self._next = j + count
        while done < count:
            r = sendmmsg(self._fd, self._tx + done, count - done, 0)
            if r < 0 and errno == EINTR and retries < SEND_RETRIES:
                retries += 1
                continue
            if r <= 0:
                # A failed send uses up its sequence number; the packet is not in `sent`.
                self._c.send_errors += 1
                done += 1
                continue
            for k in range(done, done + r):
                row = self._sent_base + self._c.sent * self._lay.sent_size
                seq = <uint32_t>(self._first_seq + <uint64_t>self._tx_j[k])
                memcpy(row + self._lay.sent_seq, &seq, 4)
                memcpy(row + self._lay.sent_t1, &self._tx_rt[k], 8)
                self._c.sent += 1
                self._tx_next += 1
                lag = self._tx_lag[k]
                if lag > self._c.max_lag:
                    self._c.max_lag = lag
                if lag > BEHIND_NS:
                    self._c.behind += 1
            done += r
        # One reply in per packet out: back-to-back sends leave no time to wait, and replies
        # must not pile up in the receive buffer meanwhile.
        if self._drain(count) < 0:
            return -1
        return 0

    cdef void _record(self, Pkt *p) noexcept nogil:
        """One reply that passed the checks: a RECORD_DTYPE row (T1..T4, RFC 5357 §4.2.1)."""
        cdef const uint8_t *b = p.buf
        cdef Fmt *f = &self._f
        cdef uint16_t ee = get16(b + f.ts_off + 8)
        cdef uint16_t s_ee = get16(b + f.sts_off + 8)
        cdef uint32_t seq = get32(b)
        cdef uint32_t s_seq = get32(b + f.sseq_off)
        cdef uint8_t s_ttl = b[f.ttl_off]
        cdef uint8_t ttl = <uint8_t>p.ttl
        cdef uint8_t tos = <uint8_t>p.tos
        cdef int ok = 1
        cdef int64_t t2 = ns_from_timestamp(get64(b + f.rts_off), ee & Z_BIT, p.rx_ns, &ok)
        cdef int64_t t3 = ns_from_timestamp(get64(b + f.ts_off), ee & Z_BIT, p.rx_ns, &ok)
        cdef int64_t t1 = ns_from_timestamp(get64(b + f.sts_off), s_ee & Z_BIT, p.rx_ns, &ok)
        cdef uint8_t *row
        cdef uint32_t idx
        if not ok:
            self._c.malformed += 1
            return
        if not ee & S_BIT:
            self._c.unsynced += 1  # one-way delays need both clocks synchronised
        if self._rec_n == self._rec_cap and self._grow_records() < 0:
            return
        row = self._rec_base + self._rec_n * self._lay.size
        memcpy(row + self._lay.sender_seq, &s_seq, 4)
        memcpy(row + self._lay.reflector_seq, &seq, 4)
        memcpy(row + self._lay.t1, &t1, 8)
        memcpy(row + self._lay.t2, &t2, 8)
        memcpy(row + self._lay.t3, &t3, 8)
        memcpy(row + self._lay.t4, &p.rx_ns, 8)
        row[self._lay.sender_ttl] = s_ttl
        row[self._lay.reply_ttl] = ttl
        row[self._lay.reply_tos] = tos
        memcpy(row + self._lay.reflector_ee, &ee, 2)
        self._rec_n += 1
        idx = s_seq - self._first_seq
        if idx < self._n and not self._answered[idx]:
            self._answered[idx] = 1
            self._c.answered += 1

    cdef void _take_tx(self) noexcept nogil:
        """Move the kernel's transmit reports off the error queue into this run's rows.

        Each report (SO_TIMESTAMPING with OPT_ID and OPT_TSONLY) carries the datagram's number
        and the transmit time (wire.read_tx_reports); a row no report reached keeps 0, which
        the callers report as a missing stamp, never as a time.
        """
        cdef TxReport reports[EQ_BATCH]
        cdef int n
        cdef int r
        cdef int i
        cdef uint64_t row
        if not self._tx_ts:
            return
        while True:
            r = read_tx_reports(self._fd, self._eq, self._eq_ctrl, self._ts_slot, reports, &n)
            if self._tx_kernel != NULL:
                for i in range(n):
                    # ee_data is 32 bits: the datagram number modulo 2^32.
                    row = <uint32_t>(<uint64_t>reports[i].key - self._tx_base)
                    if row < <uint64_t>self._c.sent:
                        self._tx_kernel[row] = reports[i].stamp_ns
            if r < EQ_BATCH:
                return

    cdef int _drain(self, Py_ssize_t limit) noexcept nogil:
        """Take in up to `limit` queued datagrams without blocking; -1 to stop."""
        self._take_tx()
        cdef Py_ssize_t got = 0
        cdef int want
        cdef int r
        cdef int i
        cdef int n_crypto
        cdef Pkt *p
        cdef msghdr *msg
        while got < limit:
            want = self._batch if limit - got > self._batch else <int>(limit - got)
            r = recvmmsg(self._fd, self._rx, want, MSG_DONTWAIT, NULL)
            if r < 0:
                if errno == EAGAIN or errno == EINTR:  # EWOULDBLOCK is EAGAIN on Linux
                    break
                got += 1  # an ICMP error reported on the socket took this receive
                continue
            if r == 0:
                break
            n_crypto = 0
            for i in range(r):
                p = &self._rx_pkts[i]
                msg = &self._rx[i].msg_hdr
                parse_received(p, msg, self._rx[i].msg_len, 0)
                peer_key(p, &self._rx_names[i], msg.msg_namelen)
                msg.msg_namelen = sizeof(sockaddr_storage)
                msg.msg_controllen = RX_CTRL
                msg.msg_flags = 0
                p.state = ST_DROP
                if (p.v4 < 0 or p.port != self._peer_port
                        or memcmp(p.addr, self._peer_addr, 16) != 0):
                    self._c.unknown_peer += 1
                elif p.size < self._f.reflector_header:
                    self._c.malformed += 1  # short, or cut by MSG_TRUNC (size 0)
                elif self._crypto_mode != CRYPTO_NONE:
                    p.state = ST_UNPROTECT
                    n_crypto += 1
                else:
                    p.state = ST_READY
            if n_crypto and self._unprotect_any(r) < 0:
                return -1
            for i in range(r):
                if self._rx_pkts[i].state == ST_READY:
                    self._record(&self._rx_pkts[i])
            if self._stopped == 1 and self._exc is not None:
                return -1
            got += r
            if r < want:
                break
        return 0

    cdef int _wait_until(self, int64_t target) noexcept nogil:
        """Receive while waiting for monotonic time `target`; 1 if the run must stop."""
        cdef int64_t now
        cdef int64_t remaining
        cdef int64_t nap
        cdef Py_ssize_t upto
        cdef pollfd pfd
        cdef timespec tmo
        pfd.fd = self._fd
        pfd.events = POLLIN
        while True:
            now = monotonic_ns()
            if now >= self._next_tick and self._tick():
                return 1
            remaining = target - now
            if remaining <= 0:
                return 0
            if (self._crypto_mode == CRYPTO_AUTH and self._prepared < self._n
                    and self._prepared - self._next < SEND_RING):
                # Mode 2: protect ahead while there is time; many at once when there is a lot.
                upto = 0
                if (remaining > SPIN_NS + PREPARE_NS
                        and self._prepared - self._next < SEND_RING // 2):
                    upto = min(self._n, self._next + SEND_RING)
                elif remaining > PREPARE_MARGIN_NS + 2 * PREPARE_PACKET_NS:
                    upto = (remaining - PREPARE_MARGIN_NS) // PREPARE_PACKET_NS
                    upto = self._prepared + min(upto, PREPARE_FEW)
                    upto = min(upto, self._n, self._next + SEND_RING)
                if upto > self._prepared:
                    if self._prepare_any(upto) < 0:
                        return 1
                    continue
            if remaining <= SPIN_NS:
                # poll(2) and nanosleep overshoot by tens of µs (timer slack): spin the rest.
                while monotonic_ns() < target:
                    pass
                return 0
            if self._busy_poll:
                if self._drain(self._batch) < 0:
                    return 1
                continue
            nap = remaining - SPIN_NS
            if nap > MAX_SLEEP_NS:
                nap = MAX_SLEEP_NS
            tmo.tv_sec = nap // NS
            tmo.tv_nsec = nap % NS
            pfd.revents = 0
            if ppoll(&pfd, 1, &tmo, NULL) > 0 and self._drain(self._batch) < 0:
                return 1

    cdef void _wait_replies(self, int64_t deadline) noexcept nogil:
        cdef int expect_all = self._n > 0
        cdef int64_t now
        cdef int64_t remaining
        cdef pollfd pfd
        cdef timespec tmo
        pfd.fd = self._fd
        pfd.events = POLLIN
        while True:
            if self._drain(self._batch) < 0:
                return
            if expect_all and self._c.answered >= self._c.sent:
                return
            now = monotonic_ns()
            if now >= self._next_tick and self._tick():
                return
            remaining = deadline - now
            if remaining <= 0:
                return
            if self._busy_poll:
                continue
            if remaining > MAX_SLEEP_NS:
                remaining = MAX_SLEEP_NS
            tmo.tv_sec = remaining // NS
            tmo.tv_nsec = remaining % NS
            pfd.revents = 0
            ppoll(&pfd, 1, &tmo, NULL)

    cdef void _run_loop(self, int64_t wait_ns) noexcept nogil:
        while self._next < self._n:
            if self._wait_until(self._targets[self._next]):
                break
            if self._send_due() < 0:
                break
        if self._stopped:
            if self._exc is None:
                self._drain(MAX_DATAGRAM)  # what is queued is still received
            return
        self._wait_replies(monotonic_ns() + wait_ns)
    # hot-loop-end

    def __repr__(self):
        return f"<Sender {IMPLEMENTATION} peer={self._peer[0]}:{self._peer[1]}>"
