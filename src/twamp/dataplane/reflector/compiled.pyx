# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""The Session-Reflector, compiled twin of `reflector/pure.py` (Linux).

`Reflector` and `ReflectorLoop`: same API, same counters, same bytes on the wire as the
pure-Python twin; read its docstrings for what a Session-Reflector does per datagram (RFC 5357
§4.2). This docstring says how the compiled Reflector does it. The C declarations are in
`compiled.pxd`, `../wire.pxd` and `../system.pxd`; the per-datagram code sits between
`# hot-loop-begin` and `# hot-loop-end` markers, where `tools/check_annotate.py` allows no
Python interaction and no call that can wait for the GIL (but the "python" crypto backend's).

Theory of operation (Reflector)
-------------------------------
`start()` puts the Reflector on a `ReflectorLoop` (its class docstring has the details): one
thread per loop, and by default one loop per process, that drops the GIL for good and sleeps in
`epoll_wait` over every member's socket, with no timeout. A ready socket gets one `recvmmsg` of
up to `batch` datagrams (`MSG_DONTWAIT`: what is queued, at least one, never blocking) into the
loop's preallocated buffers (64 KiB each, `BUF_STRIDE` apart), with the peer's address and the
`SO_TIMESTAMPNS`, TTL/hop-limit and TOS/traffic-class control messages.

Per datagram, in C: admission through an open-addressing hash table keyed on the peer's
16-octet address (IPv4 as v4-mapped) and port, holding the sessions of Python's slots and the
TWAMP Light peers; the deadline, length and counter updates; then the rewrite *in place* into the
reflector layout (the padding moved up by `memmove`, the head rebuilt from a copy of the fields it
needs), byte for byte what `packets.reflect()` builds for every TestFormat. Counters live in C
structs; Python reads them while the loop runs (relaxed atomic loads, one writer at a time).

The session table is only written with a pthread mutex held: by Python in add/remove/stop
(which wait for it with the GIL released), and by the loop, which holds it for the whole of a
batch (admission, crypto, send and counting), so a session cannot vanish under a datagram. Light
peers are admitted by the loop itself. Nobody waits for the mutex while holding the GIL, so the
loop may take the GIL while holding the mutex without deadlock.

Transmit timestamps (RFC 5357 §4.2.1: the Timestamp is the send time, never a copy of the
Receive Timestamp). `sendmmsg` hands the kernel its datagrams one after
another, about 1.3 µs each here, so with one clock read per batch the Timestamp of the k-th
reply would be early by about k x 1.3 µs (measured on a 2-vCPU VM). Here the clock
(`clock_gettime(CLOCK_REALTIME)`, about 35 ns) is read per datagram just before its `mmsghdr` is
built, and the choice of how many go into one `sendmmsg` follows the queue: a batch shorter than
`batch` means the loop keeps up, and every reply goes out in its own call, right after its
stamp; a longer queue means a backlog, and replies go out up to `send_batch` per call
(`REFLECTOR_SEND_BATCH`, 4), the number growing with the backlog (1 + n x 3 / batch for n
queued), which saves system calls when they matter and bounds the earliness to 3 sends. On
loopback each send inside one `sendmmsg` costs about 4 µs of kernel time (the receiver's side
runs in the same call), so a cap of 8 left the Timestamps of a backlog early by 14-19 µs on
average; 4 halves that at no measurable CPU cost, 2 or 1 cost 10-30 % more CPU per datagram
(benchmarks/t3_backlog.py, figures in docs/performance.md). `send_batch` tunes it per
Reflector (`Reflector(send_batch=N)`). Classification streams into the send groups: a group
is stamped and sent as soon as it is complete, so the first replies of a large receive batch
do not wait for the classification of the rest (before, all n were classified first).

Authenticated and encrypted sessions (modes 2 and 4). With `CRYPTO_BACKEND == "libcrypto"` the
loop protects test packets in C without the GIL, with OpenSSL's libcrypto loaded at run time
(`_libcrypto.h`: dlopen of libcrypto.so.3, else .so.1.1, which CPython's _hashlib has mapped
already; a dozen symbols by dlsym, no OpenSSL headers or link-time dependency). Each session gets
an AES-128-ECB encrypt and decrypt context and a keyed HMAC_CTX in `add_session` (freed with the
session); per datagram the HMAC restarts from the keyed state. `_classify` unprotects the request
(decryption of the covered blocks in one ECB call, XOR of the previous ciphertext for CBC IV 0,
HMAC-SHA1 truncated to 16, compared with CRYPTO_memcmp) and rewrites it. Mode 2 covers octets
0-15 only, so the reply is protected at once and stamped at the send, as in open mode. Mode 4
covers the Timestamp: `_send_ready` stamps each reply, then protects it (HMAC over 0-95, CBC as
chained ECB blocks), right before queueing it. Bytes are those of `TestPacketCrypto`.

If libcrypto or a symbol is missing, or TWAMP_NO_LIBCRYPTO=1 at import, `CRYPTO_BACKEND` is
"python": the datagrams of a batch that need crypto are set aside, and the loop takes the GIL
once per batch: per session one `TestPacketCrypto.unprotect_sender_batch`, the C rewrite, and
`protect_reflector_batch` (in mode 2 for the whole batch, the Timestamp written afterwards; in
mode 4 stamped, protected and sent in groups of one, of `send_batch` when behind, still within
the batch's one GIL section, since stamping a whole batch and then protecting it made Timestamps
early by the batch's encryption time, p50 0.3-0.5 ms for 64).

Error Estimate (RFC 4656 §4.1.2): the loop computes it in C (`twamp_error_estimate` in
system.pxd: adjtimex(2) read-only, the same rules as `clock.py`) at most every `EE_REFRESH_NS`
(1 s), so the packet path never waits for Python; `process()` asks `clock.error_estimate()`, as
the pure twin does. Counters are read with relaxed atomic loads, or copied out under the table
mutex and turned into Python objects after it is released (`session_counters`).

Measured figures (timestamp truth, CPU per datagram, maximum rate) are kept, dated and with the
command that produced them, in docs/performance.md, not here where they would go stale.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from twamp.dataplane.libcrypto cimport *
from twamp.dataplane.system cimport *
from twamp.dataplane.wire cimport *

import os
import socket
import threading

from twamp import clock
from twamp.constants import TestMode
from twamp.dataplane.sockets import enable_tx_timestamps, set_send_ttl
from twamp.dataplane.types import (
    RESIDENCE_BOUNDS_NS, RESIDENCE_KEYS, check_buf_stride, check_send_batch, diag_summary,
    normalize_ip,
)

assert len(RESIDENCE_BOUNDS_NS) + 1 == RES_BUCKETS
from twamp.inet import dscp_to_tos

__all__ = ["CRYPTO_BACKEND", "IMPLEMENTATION", "Reflector", "ReflectorLoop", "default_loop"]

IMPLEMENTATION = "cython"

# Which code protects the Reflector's mode 2/4 test packets: "libcrypto" (OpenSSL through
# dlopen, in C without the GIL) or "python" (TestPacketCrypto's batch helpers under the GIL),
# when libcrypto or one of its symbols cannot be found, or TWAMP_NO_LIBCRYPTO=1 at import.
cdef int USE_LIBCRYPTO = os.environ.get("TWAMP_NO_LIBCRYPTO") != "1" and twamp_tc_load() == 1
CRYPTO_BACKEND = "libcrypto" if USE_LIBCRYPTO else "python"

cdef enum:
    SEND_RETRIES = 3
    DIAG_RING = 4096  # replies whose Timestamps the T3 diagnostic remembers (a power of two)

    # Pkt.state
    ST_DROP = 0
    ST_UNPROTECT = 1  # admitted; waits for unprotect_sender_batch
    ST_PROTECT = 2  # rewritten; waits for protect_reflector_batch
    ST_READY = 3  # to be stamped and sent
    ST_STAMPED = 4  # stamped (mode 4: before protection), to be sent
    ST_SENT = 5  # handed to sendmmsg
    ST_SEAL = 6  # libcrypto, mode 4: rewritten; stamped, then protected, just before its send


# system.pxd's C literals as the compiled code sees them (tests compare them with types.py).
C_CONSTANTS = {
    "MAX_DATAGRAM": MAX_DATAGRAM,
    "SEND_BATCH": SEND_BATCH,
    "REFLECTOR_SEND_BATCH": REFLECTOR_SEND_BATCH,
    "BUF_STRIDE": BUF_STRIDE,
    "SPIN_NS": SPIN_NS,
    "MAX_SLEEP_NS": MAX_SLEEP_NS,
    "BEHIND_NS": BEHIND_NS,
    "LIGHT_IDLE_NS": LIGHT_IDLE_NS,
    "EE_REFRESH_NS": EE_REFRESH_NS,
    "NEVER": NEVER,
    "S_BIT": S_BIT,
    "Z_BIT": Z_BIT,
    "NS": NS,
    "NTP_UNIX_DELTA": NTP_UNIX_DELTA,
    "TAI_OFFSET_S": TAI_OFFSET_S,
}


def c_error_estimate():
    """The Error Estimate the loop writes (system.pxd's twamp_error_estimate), for tests."""
    return twamp_error_estimate()


def c_ee_from_ns(uint64_t error_ns, bint synchronized):
    """system.pxd's twamp_ee_from_ns, for tests against timestamps.ErrorEstimate.from_ns."""
    return twamp_ee_from_ns(error_ns, synchronized)


# -- the session table's helpers --------------------------------------------------------------

# hot-loop-begin
cdef inline uint32_t key_hash(const uint8_t *addr, uint32_t port) noexcept nogil:
    # `port`: the UDP port, or (for the Light table) port | SSID << 16.
    cdef uint64_t x
    cdef uint64_t y
    memcpy(&x, addr, 8)
    memcpy(&y, addr + 8, 8)
    cdef uint64_t h = x * <uint64_t>0x9E3779B97F4A7C15 ^ (y + port) * <uint64_t>0xC2B2AE3D27D4EB4F
    h ^= h >> 29
    return <uint32_t>h


cdef inline int prefix_match(const uint8_t *a, const uint8_t *net, int bits) noexcept nogil:
    cdef int whole = bits >> 3
    cdef int rest = bits & 7
    if memcmp(a, net, whole) != 0:
        return 0
    if rest == 0:
        return 1
    cdef uint8_t mask = <uint8_t>(0xFF << (8 - rest))
    return (a[whole] & mask) == (net[whole] & mask)


cdef inline int residence_bucket(int64_t r) noexcept nogil:
    # types.RESIDENCE_BOUNDS_NS as literals (types.residence_bucket, `le`: a residence equal
    # to a bound counts in that bound's bucket): one comparison picks the band, then at most
    # six; a negative residence lands in bucket 0. tests/test_residence.py checks every bound.
    if r <= 10000:
        if r <= 1000:
            return 0
        if r <= 2000:
            return 1
        if r <= 5000:
            return 2
        return 3
    if r <= 1000000:
        if r <= 20000:
            return 4
        if r <= 50000:
            return 5
        if r <= 100000:
            return 6
        if r <= 200000:
            return 7
        if r <= 500000:
            return 8
        return 9
    if r <= 2000000:
        return 10
    if r <= 5000000:
        return 11
    if r <= 10000000:
        return 12
    return 13
# hot-loop-end


def c_residence_bucket(int64_t residence_ns):
    """The compiled loop's residence_bucket, for tests against types.residence_bucket."""
    return residence_bucket(residence_ns)


cdef dict session_dict(Session *s):
    return {
        "received": twamp_load_u64(&s.received),
        "reflected": twamp_load_u64(&s.reflected),
        "dropped": twamp_load_u64(&s.dropped),
        "errors": twamp_load_u64(&s.errors),
        "last_rx_ns": twamp_load_i64(&s.last_rx_ns),
    }


cdef void free_session(Session *s) noexcept nogil:
    if s != NULL:
        twamp_tc_free(s.tc)
        free(s)


cdef class Reflector:
    """Reflects TWAMP-Test datagrams arriving on `sock` for the sessions added to it.

    The compiled twin of `reflector/pure.py`: same arguments, methods and counters.
    `send_batch` (default `REFLECTOR_SEND_BATCH`; also a writable attribute) caps the datagrams per
    `sendmmsg`; the number grows with the backlog from one datagram per call (the loop keeps
    up) to `send_batch` (a full batch). `send_groups()` counts the calls by datagrams sent.
    """

    IMPLEMENTATION = IMPLEMENTATION

    def __cinit__(self, *args, **kwargs):
        pthread_mutex_init(&self._mutex, NULL)
        self._member = -1
        self._table_cap = 16
        self._table = <Entry *>calloc(self._table_cap, sizeof(Entry))
        if self._table == NULL:
            raise MemoryError()

    def __init__(self, sock, *, batch=None, busy_poll=None, light=None, loop=None,
                 tx_timestamps=False, send_batch=None):
        send_batch = check_send_batch(send_batch)
        if batch is None:
            batch = 64 if loop is None else loop.batch
        if busy_poll is None:
            busy_poll = False if loop is None else loop.busy_poll
        if batch < 1:
            raise ValueError("batch must be at least 1")
        if loop is not None and batch > loop.batch:
            raise ValueError(f"batch {batch} exceeds the loop's batch {loop.batch}")
        if loop is not None and bool(busy_poll) != loop.busy_poll:
            raise ValueError("busy_poll must match the loop's")
        self._sock = sock
        self._fd = sock.fileno()
        self._v6 = sock.family == socket.AF_INET6
        self._batch = batch
        self._busy_poll = bool(busy_poll)
        self.send_batch = send_batch
        self._light = light
        self._cryptos = {}
        self._given_loop = loop
        self._member = -1
        self._ee = twamp_error_estimate()
        set_send_ttl(sock)
        if light is not None:
            self._init_light(light)
        if tx_timestamps:
            self._init_diag(sock)

    def _init_diag(self, sock):
        cdef int i
        self._diag_ring = <int64_t *>calloc(DIAG_RING, sizeof(int64_t))
        self._eq = <mmsghdr *>calloc(EQ_BATCH, sizeof(mmsghdr))
        self._eq_iov = <iovec *>calloc(EQ_BATCH, sizeof(iovec))
        self._eq_ctrl = <uint8_t *>calloc(EQ_BATCH, EQ_CTRL)
        self._eq_data = <uint8_t *>calloc(EQ_BATCH, 8)
        if (self._diag_ring == NULL or self._eq == NULL or self._eq_iov == NULL
                or self._eq_ctrl == NULL or self._eq_data == NULL):
            raise MemoryError()
        for i in range(EQ_BATCH):
            self._eq_iov[i].iov_base = self._eq_data + 8 * i
            self._eq_iov[i].iov_len = 8
            self._eq[i].msg_hdr.msg_iov = &self._eq_iov[i]
            self._eq[i].msg_hdr.msg_iovlen = 1
        self._diag_min = NEVER
        enable_tx_timestamps(sock)
        self._diag = 1

    def t3_error(self):
        """The T3 diagnostic (`tx_timestamps=True`), else None: how early the transmit
        Timestamps were, against the kernel's software transmit time of the same replies.

        samples, min_ns, mean_ns, max_ns, and p50_ns / p99_ns as upper bounds (powers of two
        of ns, from a histogram). Copied under the table mutex, Python objects after.
        """
        cdef uint64_t hist[64]
        cdef uint64_t n
        cdef int64_t total
        cdef int64_t low
        cdef int64_t high
        if not self._diag:
            return None
        self._lock()
        memcpy(hist, self._diag_hist, sizeof(hist))
        n, total, low, high = self._diag_n, self._diag_sum, self._diag_min, self._diag_max
        self._unlock()
        return diag_summary([hist[i] for i in range(64)], n, total, low, high)

    def residence(self):
        """The residence histogram (T3 - T2 of every reflected datagram, `types.RESIDENCE_KEYS`):
        counts per bucket, not cumulative, the last one +Inf, then `residence_sum_ns`. Copied
        under the table mutex (so counts and sum agree), Python objects after."""
        cdef uint64_t hist[RES_BUCKETS]
        cdef uint64_t total
        self._lock()
        memcpy(hist, self._res_hist, sizeof(hist))
        total = self._res_sum_ns
        self._unlock()
        return dict(zip(RESIDENCE_KEYS, [hist[i] for i in range(RES_BUCKETS)] + [total],
                        strict=True))

    def send_groups(self):
        """{datagrams per sendmmsg call: calls} since the start (only sizes that occurred;
        the last size, GRP_BUCKETS - 1, counts that many or more). Copied under the table
        mutex, Python objects after."""
        cdef uint64_t hist[GRP_BUCKETS]
        cdef int i
        self._lock()
        memcpy(hist, self._grp_hist, sizeof(hist))
        self._unlock()
        return {i: hist[i] for i in range(1, GRP_BUCKETS) if hist[i]}

    cdef int _init_light(self, light) except -1:
        fill_fmt(&self._light_fmt, light.fmt)
        self._light_on = 1
        self._light_stateful = bool(light.stateful)
        self._light_tos = -1 if light.dscp is None else dscp_to_tos(light.dscp)
        self._light_max = light.max_peers
        self._light_idle_ns = light.idle_ns
        self._light_symmetric = bool(light.symmetric_only)
        if light.rate_pps > 0 and light.max_peers > 0:
            self._rate_t = max(1, 1_000_000_000 // light.rate_pps)
            self._rate_tau = self._rate_t * (light.burst - 1)
            self._rate_max = light.max_peers
            rcap = 16
            while rcap <= 2 * light.max_peers + 1:
                rcap <<= 1
            self._rate_keys = <Entry *>calloc(rcap, sizeof(Entry))
            self._rate_tat = <int64_t *>calloc(rcap, sizeof(int64_t))
            if self._rate_keys == NULL or self._rate_tat == NULL:
                raise MemoryError()
            self._rate_cap = rcap
        if light.stateful:
            cap = 16
            while cap <= 2 * light.max_peers + 1:
                cap <<= 1
            self._ltable = <Entry *>calloc(cap, sizeof(Entry))
            if self._ltable == NULL:
                raise MemoryError()
            self._ltable_cap = cap
        nets = list(light.allow)
        if nets:
            self._allow = <Net *>calloc(len(nets), sizeof(Net))
            if self._allow == NULL:
                raise MemoryError()
        for i, net in enumerate(nets):
            key, v4 = addr16(str(net.network_address))
            memcpy(self._allow[i].addr, <const char *>key, 16)
            self._allow[i].bits = net.prefixlen + (96 if v4 else 0)
            self._allow[i].v4 = v4
        self._n_allow = len(nets)
        if not light.stateful:
            # Stateless Light peers share one session: no sequence counter to keep apart.
            self._light_shared = <Session *>calloc(1, sizeof(Session))
            if self._light_shared == NULL:
                raise MemoryError()
            self._light_shared.slot = -1
            self._light_shared.fmt = self._light_fmt
            self._light_shared.tos = self._light_tos
            self._light_shared.deadline_ns = NEVER
        return 0

    def __dealloc__(self):
        cdef int i
        for i in range(self._n_slots):
            free_session(self._slots[i])
        free(self._slots)
        cdef Session *s = self._lru_head
        cdef Session *nxt
        while s != NULL:
            nxt = s.lru_next
            free(s)
            s = nxt
        self._free_graves()
        free(self._ltable)
        free(self._light_shared)
        free(self._diag_ring)
        free(self._rate_keys)
        free(self._rate_tat)
        free(self._eq)
        free(self._eq_iov)
        free(self._eq_ctrl)
        free(self._eq_data)
        free(self._allow)
        free(self._table)
        pthread_mutex_destroy(&self._mutex)

    # -- session table -------------------------------------------------------------------------

    cdef int _lock(self) except -1:
        # Never wait for the table mutex holding the GIL: the loop may hold the mutex and want
        # the GIL (the "python" crypto backend's batch phase).
        with nogil:
            pthread_mutex_lock(&self._mutex)
        return 0

    cdef void _unlock(self) noexcept nogil:
        pthread_mutex_unlock(&self._mutex)

    # hot-loop-begin
    cdef Session *_lookup(self, const uint8_t *addr, uint16_t port) noexcept nogil:
        cdef uint32_t mask = self._table_cap - 1
        cdef uint32_t i = key_hash(addr, port) & mask
        cdef Entry *e
        while True:
            e = &self._table[i]
            if e.sess == NULL:
                return NULL
            if e.port == port and memcmp(e.addr, addr, 16) == 0:
                return e.sess
            i = (i + 1) & mask

    cdef int _insert(self, Session *s) noexcept nogil:
        cdef uint32_t mask
        cdef uint32_t i
        if (self._table_used + 1) * 2 > self._table_cap:
            if self._rebuild() < 0:
                return -1
        mask = self._table_cap - 1
        i = key_hash(s.addr, s.port) & mask
        while self._table[i].sess != NULL:
            i = (i + 1) & mask
        memcpy(self._table[i].addr, s.addr, 16)
        self._table[i].port = s.port
        self._table[i].sess = s
        self._table_used += 1
        return 0

    cdef int _rebuild(self) noexcept nogil:
        # A fresh table at most half full, from the slots and the Light peers; the old one is
        # only freed once the new one exists.
        cdef uint32_t cap = 16
        cdef int64_t n = self._n_sessions + 1
        cdef Entry *table
        cdef Entry *old = self._table
        cdef int64_t i
        while cap < 2 * n:
            cap <<= 1
        table = <Entry *>calloc(cap, sizeof(Entry))
        if table == NULL:
            return -1
        self._table = table
        self._table_cap = cap
        self._table_used = 0
        free(old)
        for i in range(self._n_slots):
            if self._slots[i] != NULL:
                self._insert(self._slots[i])
        return 0

    cdef Session *_admit(self, Pkt *p) noexcept nogil:
        """The session of a datagram: a slot's, a Light sender's (new ones admitted), or NULL."""
        cdef Session *s = self._lookup(p.addr, p.port)
        if s != NULL or not self._light_on:
            return s
        if not self._light_stateful:
            # Stateless Light peers share one session: no sequence counter to keep apart.
            return self._light_shared if self._allowed(p) else NULL
        return self._light_state(p)

    cdef int _allowed(self, Pkt *p) noexcept nogil:
        cdef int i
        if not self._n_allow:
            return 1
        for i in range(self._n_allow):
            if self._allow[i].v4 == p.v4 and prefix_match(p.addr, self._allow[i].addr,
                                                          self._allow[i].bits):
                return 1
        return 0

    cdef int _rate_ok(self, Pkt *p) noexcept nogil:
        """LightPolicy.rate_pps: GCRA (a token bucket) per source address; 0 to drop.

        tat is when the bucket would be full again; a datagram is over the rate when it comes
        more than tau (burst - 1 intervals) before tat. The table holds at most _rate_max
        addresses; when one more arrives, every bucket starts full again (a reset, never a
        lock-out), as the pure twin's dict does.
        """
        cdef uint32_t mask = self._rate_cap - 1
        cdef uint32_t i = key_hash(p.addr, 0) & mask
        cdef int64_t tat
        while self._rate_keys[i].sess != NULL:
            if memcmp(self._rate_keys[i].addr, p.addr, 16) == 0:
                break
            i = (i + 1) & mask
        if self._rate_keys[i].sess == NULL:
            if self._rate_used >= self._rate_max:
                memset(self._rate_keys, 0, self._rate_cap * sizeof(Entry))
                self._rate_used = 0
                i = key_hash(p.addr, 0) & mask
            memcpy(self._rate_keys[i].addr, p.addr, 16)
            self._rate_keys[i].sess = <Session *>1  # a used mark, never dereferenced
            self._rate_tat[i] = p.rx_ns
            self._rate_used += 1
        tat = self._rate_tat[i]
        if tat < p.rx_ns:
            tat = p.rx_ns
        if tat - p.rx_ns > self._rate_tau:
            return 0
        self._rate_tat[i] = tat + self._rate_t
        return 1

    cdef Session *_light_state(self, Pkt *p) noexcept nogil:
        """Stateful TWAMP Light: the state of (address, port, SSID), made or refreshed.

        RFC 8972 §3: a STAMP sender's SSID tells its test sessions apart, so it is part of the
        key (0 when the format has none or the datagram is too short for it). A state starts
        its sequence counter afresh when the sender's restarts at 0 or after `idle_ns` of
        silence (a new test session from the same port). The table holds at most `max_peers`
        states; a new sender when it is full evicts the least recently used one (counted in
        `light_evicted`), so no set of senders can lock others out until restart.
        """
        cdef uint16_t ssid = 0
        cdef Fmt *f = &self._light_fmt
        cdef Session *s
        if f.ssid_off >= 0 and p.size >= <uint32_t>f.ssid_off + 2:
            ssid = get16(p.buf + f.ssid_off)
        s = self._llookup(p.addr, p.port, ssid)
        if s != NULL:
            self._lru_unlink(s)
            self._lru_push(s)
            if s.last_rx_ns != 0 and (p.rx_ns - s.last_rx_ns > self._light_idle_ns
                                      or (p.size >= 4 and get32(p.buf) == 0)):
                s.seq = 0
            return s
        if not self._allowed(p) or self._light_max <= 0:
            return NULL
        if self._n_lights >= self._light_max:
            self._evict(self._lru_tail, 1)
        s = <Session *>calloc(1, sizeof(Session))
        if s == NULL:
            return NULL
        memcpy(s.addr, p.addr, 16)
        s.port = p.port
        s.ssid = ssid
        s.slot = -1
        s.fmt = self._light_fmt
        s.tos = self._light_tos
        s.stateful = 1
        s.deadline_ns = NEVER
        self._linsert(s)
        self._lru_push(s)
        self._n_lights += 1
        return s

    cdef Session *_llookup(self, const uint8_t *addr, uint16_t port,
                           uint16_t ssid) noexcept nogil:
        cdef uint32_t mask = self._ltable_cap - 1
        cdef uint32_t i = key_hash(addr, port | (<uint32_t>ssid << 16)) & mask
        cdef Entry *e
        while True:
            e = &self._ltable[i]
            if e.sess == NULL:
                return NULL
            if e.port == port and e.ssid == ssid and memcmp(e.addr, addr, 16) == 0:
                return e.sess
            i = (i + 1) & mask

    cdef void _linsert(self, Session *s) noexcept nogil:
        # Never full: the capacity is above twice the most states there can be.
        cdef uint32_t mask = self._ltable_cap - 1
        cdef uint32_t i = key_hash(s.addr, s.port | (<uint32_t>s.ssid << 16)) & mask
        while self._ltable[i].sess != NULL:
            i = (i + 1) & mask
        memcpy(self._ltable[i].addr, s.addr, 16)
        self._ltable[i].port = s.port
        self._ltable[i].ssid = s.ssid
        self._ltable[i].sess = s

    cdef void _ldelete(self, Session *s) noexcept nogil:
        """Take `s` out of the Light table: linear probing's backward-shift deletion.

        Every entry after the hole, up to the next empty bucket, moves back into the hole
        unless its home bucket lies cyclically in (hole, its position]: then a lookup from its
        home would still reach it without crossing the hole, and it stays.
        """
        cdef uint32_t mask = self._ltable_cap - 1
        cdef uint32_t i = key_hash(s.addr, s.port | (<uint32_t>s.ssid << 16)) & mask
        cdef uint32_t j
        cdef uint32_t home
        cdef Entry *e
        while self._ltable[i].sess != s:
            if self._ltable[i].sess == NULL:
                return  # not there (cannot happen)
            i = (i + 1) & mask
        j = i
        while True:
            j = (j + 1) & mask
            e = &self._ltable[j]
            if e.sess == NULL:
                break
            home = key_hash(e.addr, e.port | (<uint32_t>e.ssid << 16)) & mask
            if (i < j and i < home <= j) or (i > j and (home > i or home <= j)):
                continue
            self._ltable[i] = e[0]
            i = j
        self._ltable[i].sess = NULL

    cdef void _lru_unlink(self, Session *s) noexcept nogil:
        if s.lru_prev != NULL:
            s.lru_prev.lru_next = s.lru_next
        else:
            self._lru_head = s.lru_next
        if s.lru_next != NULL:
            s.lru_next.lru_prev = s.lru_prev
        else:
            self._lru_tail = s.lru_prev
        s.lru_prev = NULL
        s.lru_next = NULL

    cdef void _lru_push(self, Session *s) noexcept nogil:
        s.lru_prev = NULL
        s.lru_next = self._lru_head
        if self._lru_head != NULL:
            self._lru_head.lru_prev = s
        self._lru_head = s
        if self._lru_tail == NULL:
            self._lru_tail = s

    cdef void _evict(self, Session *s, int full) noexcept nogil:
        # A datagram earlier in this batch may still point at `s`: it is freed after the
        # batch (`_free_graves`), never under a pending reply. `full`: the table was full.
        self._ldelete(s)
        self._lru_unlink(s)
        self._n_lights -= 1
        s.lru_next = self._graves
        self._graves = s
        if full:
            twamp_inc(&self._c.light_evicted)

    cdef void _free_graves(self) noexcept nogil:
        cdef Session *s = self._graves
        cdef Session *nxt
        while s != NULL:
            nxt = s.lru_next
            free(s)
            s = nxt
        self._graves = NULL
    # hot-loop-end

    cdef Session *_session(self, slot) except NULL:
        if 0 <= slot < self._n_slots and self._slots[<int>slot] != NULL:
            return self._slots[<int>slot]
        raise KeyError(f"no session in slot {slot}")

    def add_session(self, spec):
        """Start admitting `spec.peer`; returns the session's slot (the lowest free one)."""
        cdef Session *s
        cdef Session *light
        cdef Session *nxt
        cdef Session **grown
        cdef int slot
        ip, port = spec.peer
        key, v4 = addr16(ip)
        fmt, crypto = spec.fmt, spec.crypto
        s = <Session *>calloc(1, sizeof(Session))
        if s == NULL:
            raise MemoryError()
        try:
            memcpy(s.addr, <const char *>key, 16)
            s.port = port
            fill_fmt(&s.fmt, fmt)
            s.tos = -1 if spec.dscp is None else dscp_to_tos(spec.dscp)
            s.stateful = bool(spec.stateful)
            s.deadline_ns = NEVER
            if crypto is not None:
                s.crypto = <PyObject *>crypto
                s.crypto_mode = CRYPTO_ENC
                if crypto.test_mode is TestMode.AUTHENTICATED and fmt.timestamp_offset >= 16:
                    s.crypto_mode = CRYPTO_AUTH
                s.tc = new_tc(crypto, USE_LIBCRYPTO)
        except BaseException:
            free_session(s)
            raise
        self._lock()
        try:
            if self._lookup(s.addr, s.port) != NULL:
                raise ValueError(f"a session for peer {spec.peer} exists already")
            slot = 0
            while slot < self._n_slots and self._slots[slot] != NULL:
                slot += 1
            if slot == self._cap_slots:
                grown = <Session **>realloc(self._slots, (slot * 2 + 8) * sizeof(Session *))
                if grown == NULL:
                    raise MemoryError()
                self._slots = grown
                self._cap_slots = slot * 2 + 8
            s.slot = slot
            # Into the table before the slot: a rebuild inside _insert must not see it twice.
            if self._insert(s) < 0:
                raise MemoryError()
            self._slots[slot] = s
            if slot == self._n_slots:
                self._n_slots += 1
            self._n_sessions += 1
            # A Light sender that now has a negotiated session: its Light states go.
            light = self._lru_head
            while light != NULL:
                nxt = light.lru_next
                if light.port == s.port and memcmp(light.addr, s.addr, 16) == 0:
                    self._evict(light, 0)
                light = nxt
            self._free_graves()
            if crypto is not None:
                self._cryptos[slot] = crypto
            s = NULL
        finally:
            self._unlock()
            free_session(s)
        return slot

    cdef void _unpublish(self, int slot) noexcept nogil:
        self._slots[slot] = NULL
        self._n_sessions -= 1
        while self._n_slots and self._slots[self._n_slots - 1] == NULL:
            self._n_slots -= 1

    def stop_session(self, slot, deadline_ns):
        """After Stop-Sessions: reflect what arrives up to `deadline_ns` (realtime), then drop."""
        cdef int64_t deadline = max(-NEVER - 1, min(deadline_ns, NEVER))
        self._lock()
        try:
            self._session(slot).deadline_ns = deadline
        finally:
            self._unlock()

    def remove_session(self, slot):
        """Forget the session; returns its final counters."""
        cdef Session *s
        cdef Session copy
        self._lock()
        try:
            s = self._session(slot)
            slot = s.slot
            self._slots[slot] = NULL
            if self._rebuild() < 0:
                self._slots[slot] = s
                raise MemoryError()
            self._unpublish(slot)
            copy = s[0]
            copy.tc = NULL
            free_session(s)
        finally:
            self._unlock()
        self._cryptos.pop(slot, None)
        return session_dict(&copy)

    def session_counters(self, slot):
        """The session's counters: copied under the table mutex, made Python objects after."""
        cdef Session copy
        self._lock()
        try:
            copy = self._session(slot)[0]
        finally:
            self._unlock()
        return session_dict(&copy)

    def counters(self):
        return {
            "received": twamp_load_u64(&self._c.received),
            "reflected": twamp_load_u64(&self._c.reflected),
            "unknown_peer": twamp_load_u64(&self._c.unknown_peer),
            "malformed": twamp_load_u64(&self._c.malformed),
            "auth_failed": twamp_load_u64(&self._c.auth_failed),
            "late": twamp_load_u64(&self._c.late),
            "send_errors": twamp_load_u64(&self._c.send_errors),
            "light_evicted": twamp_load_u64(&self._c.light_evicted),
            "rate_limited": twamp_load_u64(&self._c.rate_limited),
        }

    # -- per datagram --------------------------------------------------------------------------

    # hot-loop-begin
    cdef int _classify(self, Pkt *p) noexcept nogil:
        """Steps 2-5 of the pure twin's docstring; 1 if the datagram waits for the crypto phase."""
        cdef Session *s = NULL
        twamp_inc(&self._c.received)
        p.state = ST_DROP
        if p.v4 >= 0:
            s = self._admit(p)
        if s == NULL:
            twamp_inc(&self._c.unknown_peer)
            return 0
        p.sess = s
        twamp_inc(&s.received)
        if s.slot < 0 and self._rate_t and not self._rate_ok(p):
            twamp_inc(&self._c.rate_limited)
            twamp_inc(&s.dropped)
            return 0
        if p.rx_ns > s.deadline_ns:
            twamp_inc(&self._c.late)
            twamp_inc(&s.dropped)
            return 0
        if p.size < s.fmt.min_request or (
                s.slot < 0 and self._light_symmetric and p.size < s.fmt.reflector_header):
            # The second: LightPolicy.symmetric_only, a reply never longer than its request.
            twamp_inc(&self._c.malformed)
            twamp_inc(&s.dropped)
            return 0
        if s.crypto_mode != CRYPTO_NONE:
            if s.tc == NULL:
                p.state = ST_UNPROTECT
                return 1
            if not twamp_tc_unprotect_sender(s.tc, p.buf, p.size):
                twamp_inc(&self._c.auth_failed)
                twamp_inc(&s.dropped)
                return 0
            self._rewrite(p)
            if p.state == ST_READY:
                if s.crypto_mode == CRYPTO_ENC:
                    p.state = ST_SEAL
                else:
                    # Mode 2 covers octets 0-15 only: protect now, stamp at the send.
                    self._seal(p)
            return 0
        self._rewrite(p)
        return 0

    cdef int _seal(self, Pkt *p) noexcept nogil:
        """libcrypto: protect the reply in place (ST_READY); 0 and dropped on failure."""
        if twamp_tc_protect_reflector(p.sess.tc, p.buf):
            p.state = ST_READY
            return 1
        twamp_inc(&self._c.malformed)
        twamp_inc(&p.sess.dropped)
        p.state = ST_DROP
        return 0

    cdef void _rewrite(self, Pkt *p) noexcept nogil:
        """packets.reflect() in place: the request in p.buf becomes the reply (no Timestamp)."""
        cdef Session *s = p.sess
        cdef Fmt *f = &s.fmt
        cdef uint8_t *b = p.buf
        cdef uint32_t n = p.size
        cdef uint32_t header = f.reflector_header
        cdef uint8_t seq[4]
        cdef uint8_t ts[10]
        cdef uint8_t ssid[2]
        cdef int has_ssid = f.ssid_off >= 0 and n >= <uint32_t>f.ssid_off + 2
        if p.ttl < 0 or (f.dscp_off >= 0 and not p.tos_ok):
            twamp_inc(&self._c.malformed)
            twamp_inc(&s.dropped)
            p.state = ST_DROP
            return
        memcpy(seq, b, 4)
        memcpy(ts, b + f.ts_off, 10)
        if has_ssid:
            memcpy(ssid, b + f.ssid_off, 2)
        if n > header:
            # RFC 5357 §4.2.1: the start of the sender's padding, truncated at the end.
            memmove(b + header, b + f.sender_header, n - header)
        memset(b, 0, header)
        if s.stateful:
            put32(b, s.seq)  # RFC 5357 §4.2.1: the reflector's own counter
            s.seq += 1
        else:
            memcpy(b, seq, 4)  # RFC 5357 Appendix I: stateless copies the sender's
        put16(b + f.ts_off + 8, self._ee)
        put64(b + f.rts_off, ntp_from_ns(p.rx_ns))
        memcpy(b + f.sseq_off, seq, 4)
        memcpy(b + f.sts_off, ts, 10)
        b[f.ttl_off] = <uint8_t>p.ttl
        if f.dscp_off >= 0:
            b[f.dscp_off] = <uint8_t>p.tos  # RFC 7750 §2.2.1
        if has_ssid:
            memcpy(b + f.ssid_off, ssid, 2)  # RFC 8972 §3
        p.reply_len = n if n > header else header
        p.reply_tos = s.tos if s.tos >= 0 else p.tos
        twamp_store_i64(&s.last_rx_ns, p.rx_ns)
        p.state = ST_READY
    # hot-loop-end

    cdef void _crypto_phase(self, Pkt *pkts, int n, int send) noexcept with gil:
        """Modes 2 and 4: one GIL acquisition per batch, batch helpers per session."""
        cdef int i
        cdef int j
        cdef Session *s
        for i in range(n):
            if pkts[i].state != ST_UNPROTECT:
                continue
            s = pkts[i].sess
            try:
                self._crypto_session(pkts, n, i, send)
            except BaseException:
                # A bug on this path must not kill the reflector (the pure loop's rule).
                for j in range(i, n):
                    if pkts[j].sess == s and pkts[j].state in (ST_UNPROTECT, ST_PROTECT):
                        twamp_inc(&self._c.malformed)
                        pkts[j].state = ST_DROP

    cdef void _crypto_session(self, Pkt *pkts, int n, int first, int send) except *:
        """Unprotect, rewrite and protect the datagrams of pkts[first]'s session.

        Mode 4 covers the Timestamp, so each reply is stamped right before its protection; with
        `send` (the loop) they then go out at once, in groups of one (or `send_batch` when the
        loop is behind), so that no Timestamp waits for a whole batch's encryption.
        """
        cdef Session *s = pkts[first].sess
        cdef Pkt *p
        cdef int j
        cdef int k
        cdef int g
        cdef Py_ssize_t length
        crypto = <object>s.crypto
        idx = []
        reqs = []
        for j in range(first, n):
            p = &pkts[j]
            if p.state == ST_UNPROTECT and p.sess == s:
                idx.append(j)
                length = p.size if p.size < SENDER_AUTH else SENDER_AUTH
                reqs.append(PyByteArray_FromStringAndSize(<char *>p.buf, length))
        ok = crypto.unprotect_sender_batch(reqs)
        todo = []
        for k in range(len(idx)):
            p = &pkts[<int>idx[k]]
            if ok[k]:
                memcpy(p.buf, PyByteArray_AS_STRING(reqs[k]), len(reqs[k]))
                self._rewrite(p)
                if p.state == ST_READY:
                    p.state = ST_PROTECT
                    todo.append(idx[k])
            else:
                twamp_inc(&self._c.auth_failed)
                twamp_inc(&s.dropped)
                p.state = ST_DROP
        g = len(todo)
        if s.crypto_mode == CRYPTO_ENC and send:
            g = self.send_batch if n >= self._batch and self.send_batch > 1 else 1
        for start in range(0, len(todo), g if g > 0 else 1):
            group = todo[start:start + g]
            replies = []
            for j in group:
                p = &pkts[j]
                if s.crypto_mode == CRYPTO_ENC:
                    stamp(p, self._ee)  # covered by HMAC and encryption in mode 4: before them
                replies.append(PyByteArray_FromStringAndSize(<char *>p.buf, REFLECTOR_AUTH))
            crypto.protect_reflector_batch(replies)
            for k in range(len(group)):
                p = &pkts[<int>group[k]]
                memcpy(p.buf, PyByteArray_AS_STRING(replies[k]), REFLECTOR_AUTH)
                # Mode 2 covers octets 0-15 only: the Timestamp is written at the send, as in
                # open mode.
                p.state = ST_STAMPED if s.crypto_mode == CRYPTO_ENC else ST_READY
            if s.crypto_mode == CRYPTO_ENC and send:
                for k in range(len(group)):
                    self._queue(<int>group[k], k)
                self._flush(len(group))

    def process(self, data, peer, rx_ns, ttl, tos):
        """One datagram without sockets: (reply, TOS to send it with), or None if dropped.

        Counters are updated as the loop would, counting a returned reply as reflected.
        """
        cdef Pkt pk
        cdef Session *s
        cdef const uint8_t[::1] view
        src = bytes(data)
        n = len(src)
        buf = bytearray(n if n > REFLECTOR_AUTH else REFLECTOR_AUTH)
        if n:
            view = src
            memcpy(PyByteArray_AS_STRING(buf), &view[0], n)
        memset(&pk, 0, sizeof(Pkt))
        pk.buf = <uint8_t *>PyByteArray_AS_STRING(buf)
        pk.size = n
        pk.rx_ns = rx_ns
        pk.ttl = ttl if 0 <= ttl <= 255 else -1
        pk.tos_ok = 0 <= tos <= 255
        pk.tos = tos & 0xFF
        pk.v4 = -1
        try:
            key, v4 = addr16(normalize_ip(peer[0]))
            if 0 <= peer[1] <= 0xFFFF:
                memcpy(pk.addr, <const char *>key, 16)
                pk.port = peer[1]
                pk.v4 = v4
        except ValueError:
            pass
        self._ee = clock.error_estimate()
        self._lock()
        try:
            if self._classify(&pk):
                self._crypto_phase(&pk, 1, 0)
            if pk.state == ST_READY:
                stamp(&pk, self._ee)
                pk.state = ST_STAMPED
            elif pk.state == ST_SEAL:
                stamp(&pk, self._ee)
                if self._seal(&pk):
                    pk.state = ST_STAMPED
            if pk.state != ST_STAMPED:
                return None
            s = pk.sess
            twamp_inc(&self._c.reflected)
            twamp_inc(&s.reflected)
            self._count_residence(pk.tx_ns - pk.rx_ns)
            reply_tos = tos if s.tos < 0 else s.tos
        finally:
            self._free_graves()
            self._unlock()
        return bytes(buf[:pk.reply_len]), reply_tos

    # -- the loop ------------------------------------------------------------------------------

    # hot-loop-begin
    cdef void _take_tx(self) noexcept nogil:
        """T3 diagnostic: match the kernel's transmit reports with the Timestamps written.

        Only in the diagnostic mode; the reports (SO_TIMESTAMPING, OPT_ID) carry the
        datagram's number and the transmit time (wire.read_tx_reports).
        """
        cdef TxReport reports[EQ_BATCH]
        cdef int n
        cdef int r
        cdef int i
        cdef uint32_t key
        cdef int64_t early
        cdef int bucket
        while True:
            r = read_tx_reports(self._fd, self._eq, self._eq_ctrl, self._ts_slot, reports, &n)
            for i in range(n):
                key = reports[i].key
                # Only reports of the last DIAG_RING replies can be matched.
                if <uint32_t>(<uint32_t>self._diag_next - key) - 1 >= DIAG_RING:
                    continue
                early = reports[i].stamp_ns - self._diag_ring[key & (DIAG_RING - 1)]
                if early < 0:
                    early = 0
                bucket = 0
                while bucket < 63 and (<int64_t>1 << bucket) < early:
                    bucket += 1
                self._diag_hist[bucket] += 1
                self._diag_n += 1
                self._diag_sum += early
                if early > self._diag_max:
                    self._diag_max = early
                if early < self._diag_min:
                    self._diag_min = early
            if r < EQ_BATCH:
                return

    cdef int _batch_once(self, int flags) noexcept nogil:
        """Reflect what one recvmmsg returns; -1 if the socket is gone."""
        cdef int n
        cdef int i
        cdef int n_crypto = 0
        cdef int pending = 0
        cdef int chunk
        cdef Pkt *p
        cdef msghdr *msg
        if self._diag:
            self._take_tx()
        n = recvmmsg(self._fd, self._rx, self._batch, flags, NULL)
        if n <= 0:
            if n < 0 and (errno == EBADF or errno == ENOTSOCK):
                return -1
            return 0
        if monotonic_ns() >= self._ee_due:
            # RFC 4656 §4.1.2: the clock's Error Estimate, from adjtimex in C (no GIL).
            self._ee = twamp_error_estimate()
            self._ee_due = monotonic_ns() + EE_REFRESH_NS
        pthread_mutex_lock(&self._mutex)
        # Streamed: each send group goes out as soon as it is complete, so the first replies
        # of a large batch do not wait for the classification of the rest (residence).
        chunk = self._chunk(n)
        for i in range(n):
            p = &self._pkts[i]
            msg = &self._rx[i].msg_hdr
            # RFC 5357 §4.2.1: Sender TTL 255 when the TTL cannot be read.
            parse_received(p, msg, self._rx[i].msg_len, 255)
            peer_key(p, &self._names[i], msg.msg_namelen)
            if self._classify(p):
                n_crypto += 1  # the "python" crypto backend: after the batch, with the GIL
            else:
                pending = self._pend(i, pending, chunk)
        if pending:
            self._emit(pending)
        if n_crypto:
            self._crypto_phase(self._pkts, n, 1)
            self._send_ready(n)
        if self._graves != NULL:
            self._free_graves()
        pthread_mutex_unlock(&self._mutex)
        for i in range(n):
            # The kernel shortened these; give the next recvmmsg the full sizes again.
            msg = &self._rx[i].msg_hdr
            msg.msg_namelen = sizeof(sockaddr_storage)
            msg.msg_controllen = RX_CTRL
            msg.msg_flags = 0
        return n

    cdef int _chunk(self, int n) noexcept nogil:
        """Replies per sendmmsg for a receive batch of n: graded with the backlog.

        A short batch means the loop keeps up: one datagram per call, so each Timestamp is
        read right before its own send. A full batch means a backlog: groups of send_batch
        spare system calls, at the price of a Timestamp early by up to send_batch - 1 sends.
        """
        cdef int chunk = 1
        if self.send_batch > 1 and n > 1:
            chunk = 1 + (n * (self.send_batch - 1)) // self._batch
            if chunk > self.send_batch:
                chunk = self.send_batch
        return chunk

    cdef int _pend(self, int i, int pending, int chunk) noexcept nogil:
        """Add pkts[i] to the next send group if it has a reply; send the group once it holds
        `chunk`. Returns the new number pending (in _tx_idx)."""
        cdef int state = self._pkts[i].state
        if state != ST_READY and state != ST_SEAL and state != ST_STAMPED:
            return pending
        self._tx_idx[pending] = i
        pending += 1
        if pending < chunk:
            return pending
        self._emit(pending)
        return 0

    cdef void _emit(self, int count) noexcept nogil:
        """Stamp the pending group one by one (mode 4: stamp, then protect), then one sendmmsg:
        the Timestamps are read after the group's classification, right before the call."""
        cdef int j
        cdef int i
        cdef int k = 0
        cdef Pkt *p
        for j in range(count):
            i = self._tx_idx[j]
            p = &self._pkts[i]
            if p.state == ST_READY:
                stamp(p, self._ee)
            elif p.state == ST_SEAL:
                # Mode 4 covers the Timestamp: stamp, then protect, right before the send.
                stamp(p, self._ee)
                if not self._seal(p):
                    continue
            self._queue(i, k)  # sets _tx_idx[k] = i; k <= j, so nothing unread is overwritten
            k += 1
        if k:
            self._flush(k)

    cdef void _send_ready(self, int n) noexcept nogil:
        """Send every reply of pkts[0:n] still waiting (after the "python" crypto phase)."""
        cdef int i
        cdef int pending = 0
        cdef int chunk = self._chunk(n)
        for i in range(n):
            pending = self._pend(i, pending, chunk)
        if pending:
            self._emit(pending)

    cdef void _queue(self, int i, int k) noexcept nogil:
        """Reply pkts[i] as the k-th datagram of the next sendmmsg."""
        cdef Pkt *p = &self._pkts[i]
        cdef msghdr *msg = &self._tx[k].msg_hdr
        cdef cmsghdr *cm
        cdef int value = p.reply_tos & 0xFF
        msg.msg_name = &self._names[i]
        msg.msg_namelen = self._rx[i].msg_hdr.msg_namelen
        self._tx_iov[k].iov_base = p.buf
        self._tx_iov[k].iov_len = p.reply_len
        # Per-datagram TOS: session DSCP << 2 or the received octet; towards an IPv4 or
        # v4-mapped peer the IPv4 option (IPV6_TCLASS is ignored there).
        msg.msg_controllen = CMSG_SPACE(sizeof(int))
        cm = CMSG_FIRSTHDR(msg)
        cm.cmsg_len = CMSG_LEN(sizeof(int))
        if not self._v6 or p.v4:
            cm.cmsg_level = IPPROTO_IP
            cm.cmsg_type = IP_TOS
        else:
            cm.cmsg_level = IPPROTO_IPV6
            cm.cmsg_type = IPV6_TCLASS
        memcpy(CMSG_DATA(cm), &value, sizeof(int))
        msg.msg_flags = 0
        self._tx_idx[k] = i
        p.state = ST_SENT

    cdef void _flush(self, int count) noexcept nogil:
        cdef int done = 0
        cdef int r
        cdef int j
        cdef int retries = 0
        cdef Session *s
        while done < count:
            r = sendmmsg(self._fd, self._tx + done, count - done, 0)
            if r < 0 and errno == EINTR and retries < SEND_RETRIES:
                retries += 1
                continue
            if r <= 0:
                # The datagram at `done` failed; the ones after it get their own attempt.
                s = self._pkts[self._tx_idx[done]].sess
                twamp_inc(&self._c.send_errors)
                twamp_inc(&s.errors)
                done += 1
                continue
            self._grp_hist[r if r < GRP_BUCKETS else GRP_BUCKETS - 1] += 1
            for j in range(done, done + r):
                s = self._pkts[self._tx_idx[j]].sess
                twamp_inc(&self._c.reflected)
                twamp_inc(&s.reflected)
                self._count_residence(self._pkts[self._tx_idx[j]].tx_ns
                                      - self._pkts[self._tx_idx[j]].rx_ns)
                if self._diag:
                    self._diag_ring[self._diag_next & (DIAG_RING - 1)] = \
                        self._pkts[self._tx_idx[j]].tx_ns
                    self._diag_next += 1
            done += r

    cdef void _count_residence(self, int64_t residence_ns) noexcept nogil:
        # Plain increments: every caller holds the table mutex (the loop for its whole batch,
        # process() explicitly), and residence() reads under it.
        self._res_hist[residence_bucket(residence_ns)] += 1
        if residence_ns > 0:
            self._res_sum_ns += <uint64_t>residence_ns

    # hot-loop-end

    def start(self):
        """Start reflecting: join the given loop, else the process's loop for this batch size
        (a private one with `busy_poll`). Costs a table insert; no thread per Reflector."""
        if self._member >= 0:
            raise RuntimeError("the reflector is running already")
        loop = self._given_loop
        if loop is None:
            loop = ReflectorLoop(batch=self._batch, busy_poll=True) if self._busy_poll \
                else default_loop(self._batch)
        loop._add(self)

    def stop(self):
        """Leave the loop; once this returns the loop never touches this Reflector again."""
        loop = self._owner
        if loop is None:
            return
        loop._remove(self)
        if self._given_loop is None and self._busy_poll:
            loop.close()

    @property
    def running(self):
        return self._member >= 0 and self._owner is not None and self._owner.running

    @property
    def socket(self):
        """The test socket this Reflector reads and answers on."""
        return self._sock

    @property
    def socket_failed(self):
        """True once a receive failed with EBADF/ENOTSOCK (closed under a running loop)."""
        return (self._member >= 0 and self._owner is not None
                and self._owner._members[self._member].dead != 0)

    @property
    def loop(self):
        """The ReflectorLoop this Reflector runs on (None when stopped)."""
        return self._owner

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.stop()

    def __repr__(self):
        state = "running" if self.running else "stopped"
        return f"<Reflector {IMPLEMENTATION} {state} sessions={self._n_sessions}>"


# -- the loop that runs every Reflector of a process ---------------------------------------------

cdef uint64_t WAKE_TAG = 0xFFFFFFFFFFFFFFFFULL

_default_loops = {}
_default_lock = threading.Lock()


def default_loop(batch=64):
    """The process's shared ReflectorLoop for this batch size (made on first use).

    Keyed by the process id too: a forked child must not use its parent's loop, whose thread
    did not survive the fork.
    """
    key = (os.getpid(), batch)
    with _default_lock:
        loop = _default_loops.get(key)
        if loop is None:
            loop = _default_loops[key] = ReflectorLoop(batch=batch)
        return loop


cdef class ReflectorLoop:
    """One thread, one epoll set, every Reflector of a process (or of a `--workers` worker).

    Theory of operation
    -------------------
    `Reflector.start()` adds its socket to this loop's epoll set (a table insert under the
    loop's mutex and one `epoll_ctl`); the first one starts the loop's thread, which drops the
    GIL for good and sleeps in `epoll_wait` with no timeout: an idle loop makes no system call
    at all, whatever the number of sockets. Each ready socket gets one `_batch_once` (up to
    `batch` datagrams, level-triggered, so a busy socket cannot starve the others); all of the
    loop's members share its receive and send buffers, since only this thread uses them.

    Members are entries of a C array, each epoll event tagged with (generation << 32 | index).
    The loop holds its mutex from the return of `epoll_wait` until every event of that round
    is handled, and skips an event whose generation is not the entry's current one: `remove`
    takes the same mutex, bumps the generation and clears the entry, so when it returns the
    loop will never touch that Reflector again, even for events it had already fetched.
    Python threads wait for the mutex with the GIL released; the loop never takes the GIL
    while holding it, except on the "python" crypto backend's batch phase (no libcrypto).

    `busy_poll`: no epoll; the thread spins over its members with non-blocking `recvmmsg`
    (lower latency, a whole core), yielding the mutex to waiting Python threads.

    `close()` stops the thread (an eventfd wakes it) and takes every member off.
    """

    def __cinit__(self, *args, **kwargs):
        pthread_mutex_init(&self._mutex, NULL)
        self._epfd = -1
        self._wake_fd = -1

    def __init__(self, *, batch=64, busy_poll=False, buf_stride=None):
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self._batch = batch
        self._busy_poll = bool(busy_poll)
        self._stride = check_buf_stride(buf_stride)
        self._refs = {}
        self._thread = None

    def __dealloc__(self):
        if self._epfd >= 0:
            close(self._epfd)
        if self._wake_fd >= 0:
            close(self._wake_fd)
        free(self._members)
        self._free()
        pthread_mutex_destroy(&self._mutex)

    @property
    def batch(self):
        return self._batch

    @property
    def busy_poll(self):
        return bool(self._busy_poll)

    @property
    def buf_stride(self):
        """Bytes between two receive buffers (a datagram longer than this is truncated)."""
        return self._stride

    @property
    def running(self):
        return self._thread is not None and self._thread.is_alive()

    @property
    def thread(self):
        """The loop's thread while it runs (its native_id finds it in /proc)."""
        return self._thread

    def __len__(self):
        return self._count

    cdef int _alloc(self) except -1:
        cdef int i
        cdef int b = self._batch
        cdef size_t stride = <size_t>self._stride
        cdef size_t room = stride if stride < <size_t>MAX_DATAGRAM else <size_t>MAX_DATAGRAM
        if self._pkts != NULL:
            return 0
        self._bufs = <uint8_t *>malloc(<size_t>b * stride)
        self._rx = <mmsghdr *>calloc(b, sizeof(mmsghdr))
        self._rx_iov = <iovec *>calloc(b, sizeof(iovec))
        self._names = <sockaddr_storage *>calloc(b, sizeof(sockaddr_storage))
        self._rx_ctrl = <uint8_t *>calloc(b, RX_CTRL)
        self._tx = <mmsghdr *>calloc(b, sizeof(mmsghdr))
        self._tx_iov = <iovec *>calloc(b, sizeof(iovec))
        self._tx_ctrl = <uint8_t *>calloc(b, TX_CTRL)
        self._tx_idx = <int *>calloc(b, sizeof(int))
        self._pkts = <Pkt *>calloc(b, sizeof(Pkt))
        if (self._bufs == NULL or self._rx == NULL or self._rx_iov == NULL
                or self._names == NULL or self._rx_ctrl == NULL or self._tx == NULL
                or self._tx_iov == NULL or self._tx_ctrl == NULL or self._tx_idx == NULL
                or self._pkts == NULL):
            self._free()
            raise MemoryError()
        for i in range(b):
            self._rx_iov[i].iov_base = self._bufs + <size_t>i * stride
            self._rx_iov[i].iov_len = room
            self._rx[i].msg_hdr.msg_iov = &self._rx_iov[i]
            self._rx[i].msg_hdr.msg_iovlen = 1
            self._rx[i].msg_hdr.msg_name = &self._names[i]
            self._rx[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage)
            self._rx[i].msg_hdr.msg_control = self._rx_ctrl + <size_t>i * RX_CTRL
            self._rx[i].msg_hdr.msg_controllen = RX_CTRL
            self._tx[i].msg_hdr.msg_iov = &self._tx_iov[i]
            self._tx[i].msg_hdr.msg_iovlen = 1
            self._tx[i].msg_hdr.msg_control = self._tx_ctrl + <size_t>i * TX_CTRL
            self._pkts[i].buf = self._bufs + <size_t>i * stride
        return 0

    cdef void _free(self) noexcept:
        free(self._bufs)
        free(self._rx)
        free(self._rx_iov)
        free(self._names)
        free(self._rx_ctrl)
        free(self._tx)
        free(self._tx_iov)
        free(self._tx_ctrl)
        free(self._tx_idx)
        free(self._pkts)
        self._bufs = NULL
        self._rx = NULL
        self._rx_iov = NULL
        self._names = NULL
        self._rx_ctrl = NULL
        self._tx = NULL
        self._tx_iov = NULL
        self._tx_ctrl = NULL
        self._tx_idx = NULL
        self._pkts = NULL

    cdef int _lock(self) except -1:
        # With the GIL released (see the class docstring); a busy loop sees _waiting and
        # yields the mutex.
        with nogil:
            twamp_add_int(&self._waiting, 1)
            pthread_mutex_lock(&self._mutex)
            twamp_add_int(&self._waiting, -1)
        return 0

    def _start_thread(self):
        cdef epoll_event ev
        if self.running:
            return
        self._alloc()
        if not self._busy_poll and self._epfd < 0:
            self._epfd = epoll_create1(EPOLL_CLOEXEC)
            if self._epfd < 0:
                raise OSError(errno, "epoll_create1 failed")
        if self._wake_fd < 0:
            self._wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
            if self._wake_fd < 0:
                raise OSError(errno, "eventfd failed")
            if self._epfd >= 0:
                ev.events = EPOLLIN
                ev.data.u64 = WAKE_TAG
                if epoll_ctl(self._epfd, EPOLL_CTL_ADD, self._wake_fd, &ev) < 0:
                    raise OSError(errno, "epoll_ctl failed")
        twamp_store_int(&self._stopping, 0)
        self._thread = threading.Thread(target=self._run, name="twamp-reflector", daemon=True)
        self._thread.start()

    def _run(self):
        with nogil:
            self._run_loop()

    def _add(self, Reflector refl):
        """Reflector.start(): a table insert and one epoll_ctl; starts the thread if needed."""
        cdef epoll_event ev
        cdef Member *grown
        cdef Member *m
        cdef int idx
        if refl._batch > self._batch:
            raise ValueError(f"batch {refl._batch} exceeds the loop's batch {self._batch}")
        self._start_thread()
        self._lock()
        try:
            idx = 0
            while idx < self._n_members and self._members[idx].refl != NULL:
                idx += 1
            if idx == self._cap_members:
                grown = <Member *>realloc(self._members, (idx * 2 + 16) * sizeof(Member))
                if grown == NULL:
                    raise MemoryError()
                memset(grown + idx, 0, (idx + 16) * sizeof(Member))
                self._members = grown
                self._cap_members = idx * 2 + 16
            m = &self._members[idx]
            m.gen += 1
            m.fd = refl._fd
            m.dead = 0
            if self._epfd >= 0:
                ev.events = EPOLLIN
                ev.data.u64 = (<uint64_t>m.gen << 32) | <uint32_t>idx
                if epoll_ctl(self._epfd, EPOLL_CTL_ADD, refl._fd, &ev) < 0:
                    raise OSError(errno, "epoll_ctl(EPOLL_CTL_ADD) failed for the test socket")
            # Borrowed buffers: only this loop's thread runs the member's batches.
            refl._bufs = self._bufs
            refl._rx = self._rx
            refl._rx_iov = self._rx_iov
            refl._names = self._names
            refl._rx_ctrl = self._rx_ctrl
            refl._tx = self._tx
            refl._tx_iov = self._tx_iov
            refl._tx_ctrl = self._tx_ctrl
            refl._tx_idx = self._tx_idx
            refl._pkts = self._pkts
            refl._owner = self
            refl._member = idx
            m.refl = <void *>refl
            if idx == self._n_members:
                self._n_members += 1
            self._count += 1
        finally:
            pthread_mutex_unlock(&self._mutex)
        self._refs[idx] = refl

    def _remove(self, Reflector refl):
        """Reflector.stop(): off the table and the epoll set, under the loop's mutex."""
        cdef int idx = refl._member
        cdef Member *m
        # A closed socket left epoll by itself, and its descriptor number may belong to
        # another member by now: EPOLL_CTL_DEL only while the socket is still open.
        cdef int still_open = refl._sock.fileno() == refl._fd
        if idx < 0 or refl._owner is not self:
            return
        self._lock()
        m = &self._members[idx]
        if self._epfd >= 0 and still_open and not m.dead:
            epoll_ctl(self._epfd, EPOLL_CTL_DEL, m.fd, NULL)
        m.refl = NULL
        m.gen += 1
        self._count -= 1
        while self._n_members and self._members[self._n_members - 1].refl == NULL:
            self._n_members -= 1
        pthread_mutex_unlock(&self._mutex)
        refl._member = -1
        refl._owner = None
        self._refs.pop(idx, None)

    def close(self):
        """Stop the thread and take every Reflector off (they report not running)."""
        cdef uint64_t one = 1
        for refl in list(self._refs.values()):
            self._remove(refl)
        thread = self._thread
        if thread is None:
            return
        twamp_store_int(&self._stopping, 1)
        write(self._wake_fd, &one, sizeof(one))
        thread.join()
        self._thread = None

    def __repr__(self):
        state = "running" if self.running else "stopped"
        return f"<ReflectorLoop {IMPLEMENTATION} {state} reflectors={self._count}>"

    # hot-loop-begin
    cdef void _run_loop(self) noexcept nogil:
        cdef epoll_event evs[64]
        cdef uint64_t drained
        cdef int n
        cdef int i
        while not twamp_load_int(&self._stopping):
            if self._busy_poll:
                self._spin_once()
                continue
            n = epoll_wait(self._epfd, evs, 64, -1)  # no timeout: idle costs nothing
            if n <= 0:
                continue  # EINTR
            pthread_mutex_lock(&self._mutex)
            for i in range(n):
                if evs[i].data.u64 == WAKE_TAG:
                    read(self._wake_fd, &drained, sizeof(drained))
                else:
                    self._dispatch(evs[i].data.u64)
            pthread_mutex_unlock(&self._mutex)

    cdef void _spin_once(self) noexcept nogil:
        cdef int i
        pthread_mutex_lock(&self._mutex)
        for i in range(self._n_members):
            if self._members[i].refl != NULL and not self._members[i].dead:
                self._run_member(i)
        pthread_mutex_unlock(&self._mutex)
        if twamp_load_int(&self._waiting):
            sched_yield()  # let add/remove/close in

    cdef void _dispatch(self, uint64_t tag) noexcept nogil:
        cdef uint32_t idx = <uint32_t>(tag & 0xFFFFFFFFULL)
        cdef uint32_t gen = <uint32_t>(tag >> 32)
        if idx >= <uint32_t>self._n_members:
            return
        if self._members[idx].refl == NULL or self._members[idx].gen != gen:
            return  # removed (or replaced) after epoll_wait returned this event
        if not self._members[idx].dead:
            self._run_member(idx)

    cdef void _run_member(self, int idx) noexcept nogil:
        cdef Member *m = &self._members[idx]
        if (<Reflector>m.refl)._batch_once(MSG_DONTWAIT) < 0:
            # The socket is gone (EBADF/ENOTSOCK): out of the epoll set, kept in the table
            # until Reflector.stop() so that nothing is freed under the owner's feet.
            m.dead = 1
            if self._epfd >= 0:
                epoll_ctl(self._epfd, EPOLL_CTL_DEL, m.fd, NULL)
    # hot-loop-end
