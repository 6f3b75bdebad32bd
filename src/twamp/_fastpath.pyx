# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""The TWAMP-Test data plane, compiled twin of `twamp._fastpath_py` (Linux).

`Reflector` and `Sender`: same API, same counters, same bytes on the wire as the pure-Python
twin; read its docstrings for what a Session-Reflector does per datagram (RFC 5357 §4.2, spec
§5.7) and what a Session-Sender does (RFC 5357 §4.1). This docstring says how the compiled
Reflector does it; `Sender`'s own docstring does the same for the sender. All C declarations
are in `_fastpath.pxd`; the per-datagram code sits between `# hot-loop-begin` and
`# hot-loop-end` markers, where `tools/check_annotate.py` allows no Python interaction.

Theory of operation (Reflector)
-------------------------------
`start()` runs `_loop` in a Python thread that drops the GIL for good: poll(2) on the socket and
an eventfd (the stop wake-up, with a 100 ms timeout as backstop), or with `busy_poll` a spin on
non-blocking `recvmmsg`. Each wake-up takes up to `batch` datagrams with one `recvmmsg`
(`MSG_DONTWAIT`: it returns what is queued, at least one, like `MSG_WAITFORONE`, but never
blocks, so a stop request is seen at once) into preallocated buffers of 64 KiB each, with the
peer's address and the `SO_TIMESTAMPNS`, TTL/hop-limit and TOS/traffic-class control messages.

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

Transmit timestamps (spec §5.6, §11 item 10). `sendmmsg` hands the kernel its datagrams one after
another, about 1.3 µs each here, so with one clock read per batch the Timestamp of the k-th
reply would be early by about k x 1.3 µs (research/reflector-performance.md). Here the clock
(`clock_gettime(CLOCK_REALTIME)`, about 35 ns) is read per datagram just before its `mmsghdr` is
built, and the choice of how many go into one `sendmmsg` follows the queue: a batch shorter than
`batch` means the loop keeps up, and every reply goes out in its own call, right after its
stamp; a full batch means a backlog, and replies go out `SEND_CHUNK` (8) per call, which saves
system calls when they matter and bounds the earliness to 7 sends, small beside the queueing
delay such a backlog adds anyway. Measured below; `_send_chunk` tunes it per Reflector.

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
mode 4 stamped, protected and sent in groups of one, of `SEND_CHUNK` when behind, still within
the batch's one GIL section, since stamping a whole batch and then protecting it made Timestamps
early by the batch's encryption time, p50 0.3-0.5 ms for 64).

Error Estimate: the loop thread asks `clock.error_estimate()` (which caches adjtimex for 1 s)
every `EE_REFRESH_NS`; `process()` asks it every call, as the pure twin does.

Measured on a 2-vCPU VM, loopback, Python 3.11, cryptography 48, OpenSSL 3 (ad-hoc runs,
medians):

* Timestamp truth: T4 - T3 at the peer (its kernel receive time minus our transmit Timestamp,
  one clock), bursts of 64 queued requests, 40 runs, p50 / p99 in µs (modes 2 and 4 with the
  "python" crypto backend; with "libcrypto" mode 4 protects in about 0.7 µs between stamp and
  send, not re-measured here):

    reflector                              open       mode 2      mode 4
    compiled, keeping up (1 per call)      0.7 / 7    0.6 / 9     5.4 / 19
    compiled, backlog (8 per call)         4.4 / 68   5.8 / 116    29 / 79
    64 per call (mode 4: 1 protect call)    60 / 244   75 / 396    300 / 1180
    pure twin                              1.8 / 15   4.2 / 22    4.9 / 21

* CPU per reflected datagram (30 000 queued, then drained; kernel send path included), µs:
  compiled open 2.0; crypto backend "libcrypto": mode 2 2.3, mode 4 2.7; backend "python":
  mode 2 5.7, mode 4 8.0 (earlier runs, python backend, batch 1: open 2.8, 12.4, 15.2); pure
  twin 8.5, 15.0, 15.2. So protection costs about 0.35 µs (mode 2) and 0.7 µs (mode 4) per
  datagram in libcrypto, against 4 and 6 µs in `cryptography` plus the Python glue of the batch
  helpers. One sendmmsg per datagram instead of per 8 costs about 10 % more CPU in open mode
  (within this VM's noise of +-15 %).

* benchmarks/bench_reflector.py --quick (c_sender, 1 s trials, backend "libcrypto"): max rate
  at <= 0.1 % loss, reflector CPU µs/pkt: open 518 736 pps 1.91, mode 2 400 000 pps 2.50,
  mode 4 366 802 pps 2.67, all three limited by the sender; auth/open 0.77, enc/open 0.71
  (before: 0.32 and 0.26, CPU 5.8 and 7.9 µs/pkt).
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize
from cpython.exc cimport PyErr_CheckSignals

import ipaddress
import os
import socket
import threading

import numpy as np

from . import _fastpath_py, clock
from ._fastpath_py import LightPolicy, SenderResult, SessionSpec, StopFlag, normalize_ip
from .constants import TestMode
from .dataplane.sockets import (
    SO_TIMESTAMPNS,
    enable_receive_options,
    set_send_ttl,
    tos_ancillary,
)
from .metrics import RECORD_DTYPE, SENT_DTYPE
from .timestamps import DEFAULT_TAI_OFFSET_S
from .wire.packets import build_sender

__all__ = [
    "CRYPTO_BACKEND",
    "IMPLEMENTATION",
    "LightPolicy",
    "Reflector",
    "Sender",
    "SenderResult",
    "SessionSpec",
    "StopFlag",
    "normalize_ip",
]

IMPLEMENTATION = "cython"

# Which code protects the Reflector's mode 2/4 test packets: "libcrypto" (OpenSSL through
# dlopen, in C without the GIL) or "python" (TestPacketCrypto's batch helpers under the GIL),
# when libcrypto or one of its symbols cannot be found, or TWAMP_NO_LIBCRYPTO=1 at import.
cdef int USE_LIBCRYPTO = os.environ.get("TWAMP_NO_LIBCRYPTO") != "1" and twamp_tc_load() == 1
CRYPTO_BACKEND = "libcrypto" if USE_LIBCRYPTO else "python"

cdef enum:
    BUF_SIZE = 65536  # any UDP payload fits; the pure twin's _RECV_BUFFER
    RX_CTRL = 128  # a timespec, TTL and TOS control messages, with room for both families
    TX_CTRL = 32  # one int-sized control message
    POLL_MS = 100  # backstop for stop() if the wake-up is lost
    SENDER_AUTH = 48  # sender octets TestPacketCrypto reads: HMAC at 32-47 (spec §4.6)
    REFLECTOR_AUTH = 112  # reflector octets it writes: HMAC at 96-111
    SEND_RETRIES = 3
    CHUNK = 8  # SEND_CHUNK, as a C constant

    # Pkt.state
    ST_DROP = 0
    ST_UNPROTECT = 1  # admitted; waits for unprotect_sender_batch
    ST_PROTECT = 2  # rewritten; waits for protect_reflector_batch
    ST_READY = 3  # to be stamped and sent
    ST_STAMPED = 4  # stamped (mode 4: before protection), to be sent
    ST_SENT = 5  # handed to sendmmsg
    ST_SEAL = 6  # libcrypto, mode 4: rewritten; stamped, then protected, just before its send

    # Session.crypto_mode
    CRYPTO_NONE = 0
    CRYPTO_AUTH = 1  # the Timestamp lies outside what protection covers: stamp after it
    CRYPTO_ENC = 2  # the Timestamp is covered: stamp, then protect

SEND_CHUNK = CHUNK
_SEQ_MAX = 0xFFFFFFFF
EE_REFRESH_NS = 100_000_000

cdef int64_t NS = 1000000000
cdef uint64_t NTP_UNIX_DELTA = 2208988800  # RFC 5905 §6: 1900 -> 1970
cdef int64_t NEVER = 0x7FFFFFFFFFFFFFFF
cdef int64_t TAI_OFFSET_S = DEFAULT_TAI_OFFSET_S
cdef uint8_t V4_PREFIX[12]
V4_PREFIX[:] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]
_V4_PREFIX = bytes(10) + b"\xff\xff"


# -- helpers (all nogil, used by the hot loop) ------------------------------------------------

# hot-loop-begin
cdef inline void put16(uint8_t *p, uint16_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 8)
    p[1] = <uint8_t>v


cdef inline void put32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 24)
    p[1] = <uint8_t>(v >> 16)
    p[2] = <uint8_t>(v >> 8)
    p[3] = <uint8_t>v


cdef inline void put64(uint8_t *p, uint64_t v) noexcept nogil:
    put32(p, <uint32_t>(v >> 32))
    put32(p + 4, <uint32_t>v)


cdef inline uint16_t get16(const uint8_t *p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]


cdef inline uint32_t get32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline uint64_t get64(const uint8_t *p) noexcept nogil:
    return (<uint64_t>get32(p) << 32) | get32(p + 4)


cdef inline int64_t realtime_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <int64_t>ts.tv_sec * NS + ts.tv_nsec


cdef inline int64_t monotonic_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * NS + ts.tv_nsec


cdef inline uint64_t ntp_from_ns(int64_t ns) noexcept nogil:
    # timestamps.ntp_from_ns: floored seconds modulo 2^32, fraction floor(sub * 2^32 / 1e9).
    cdef int64_t s = ns / NS
    cdef int64_t sub = ns - s * NS
    if sub < 0:
        sub += NS
        s -= 1
    cdef uint32_t sec = <uint32_t>(<uint64_t>s + NTP_UNIX_DELTA)
    return (<uint64_t>sec << 32) | (((<uint64_t>sub) << 32) // <uint64_t>NS)


cdef inline int64_t floor_div(int64_t a, int64_t b) noexcept nogil:
    cdef int64_t q = a / b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


cdef inline int64_t ns_from_ntp(uint64_t raw, int64_t pivot_ns) noexcept nogil:
    # timestamps.ns_from_ntp with a pivot: the NTP era that puts the time nearest the pivot
    # (Python's round(), half to even), the fraction ceiled back to whole nanoseconds.
    cdef int64_t sec = <int64_t>(raw >> 32)
    cdef uint64_t frac = raw & 0xFFFFFFFFULL
    cdef int64_t sub = <int64_t>((frac * <uint64_t>NS + 0xFFFFFFFFULL) >> 32)
    cdef int64_t d = floor_div(pivot_ns, NS) + <int64_t>NTP_UNIX_DELTA - sec
    cdef int64_t era = d >> 32
    cdef int64_t rest = d & 0xFFFFFFFFULL
    if rest > 0x80000000LL or (rest == 0x80000000LL and era & 1):
        era += 1
    return (sec + era * (<int64_t>1 << 32) - <int64_t>NTP_UNIX_DELTA) * NS + sub


cdef inline int64_t ns_from_timestamp(uint64_t raw, int ptp, int64_t pivot_ns,
                                      int *ok) noexcept nogil:
    # timestamps.ns_from_timestamp: RFC 8186 PTPv2 truncated (TAI) when the Z bit is set.
    cdef uint64_t sub
    if not ptp:
        return ns_from_ntp(raw, pivot_ns)
    sub = raw & 0xFFFFFFFFULL
    if sub >= <uint64_t>NS:
        ok[0] = 0  # not a PTP time: the packet is malformed
        return 0
    return (<int64_t>(raw >> 32) - TAI_OFFSET_S) * NS + <int64_t>sub


cdef inline void stamp(Pkt *p, uint16_t ee) noexcept nogil:
    # RFC 5357 §4.2.1: the transmit Timestamp and its Error Estimate, as late as possible.
    cdef uint8_t *t = p.buf + p.sess.fmt.ts_off
    put64(t, ntp_from_ns(realtime_ns()))
    put16(t + 8, ee)


cdef inline uint32_t key_hash(const uint8_t *addr, uint16_t port) noexcept nogil:
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


cdef inline void peer_key(Pkt *p, const sockaddr_storage *name, socklen_t namelen) noexcept nogil:
    cdef const sockaddr_in *a4
    cdef const sockaddr_in6 *a6
    if name.ss_family == AF_INET and namelen >= sizeof(sockaddr_in):
        a4 = <const sockaddr_in *>name
        memcpy(p.addr, V4_PREFIX, 12)
        memcpy(p.addr + 12, &a4.sin_addr.s_addr, 4)
        p.port = ntohs(a4.sin_port)
        p.v4 = 1
    elif name.ss_family == AF_INET6 and namelen >= sizeof(sockaddr_in6):
        a6 = <const sockaddr_in6 *>name
        memcpy(p.addr, a6.sin6_addr.s6_addr, 16)
        p.port = ntohs(a6.sin6_port)
        p.v4 = memcmp(p.addr, V4_PREFIX, 12) == 0
    else:
        p.v4 = -1


cdef inline void parse_received(Pkt *p, msghdr *msg, unsigned int size,
                                int no_ttl) noexcept nogil:
    # dataplane.sockets.parse_ancillary: receive time, TTL / hop limit, TOS / traffic class;
    # `no_ttl` stands in for a TTL the kernel did not report (or reported out of range).
    cdef cmsghdr *cm = CMSG_FIRSTHDR(msg)
    cdef const uint8_t *data
    cdef size_t dlen
    cdef timespec ts
    cdef int value
    cdef int have_ts = 0
    p.ttl = no_ttl
    p.tos = 0
    p.tos_ok = 1
    while cm != NULL:
        data = CMSG_DATA(cm)
        dlen = cm.cmsg_len - CMSG_LEN(0)
        if cm.cmsg_level == SOL_SOCKET:
            if cm.cmsg_type == TWAMP_SCM_TIMESTAMPNS and dlen >= sizeof(timespec):
                memcpy(&ts, data, sizeof(timespec))
                p.rx_ns = <int64_t>ts.tv_sec * NS + ts.tv_nsec
                have_ts = 1
        elif cm.cmsg_level == IPPROTO_IP:
            if cm.cmsg_type == IP_TTL and dlen >= sizeof(int):
                memcpy(&value, data, sizeof(int))
                p.ttl = value if 0 <= value <= 255 else no_ttl
            elif cm.cmsg_type == IP_TOS and dlen >= 1:
                p.tos = data[0]
        elif cm.cmsg_level == IPPROTO_IPV6:
            if cm.cmsg_type == IPV6_HOPLIMIT and dlen >= sizeof(int):
                memcpy(&value, data, sizeof(int))
                p.ttl = value if 0 <= value <= 255 else no_ttl
            elif cm.cmsg_type == IPV6_TCLASS and dlen >= sizeof(int):
                memcpy(&value, data, sizeof(int))
                p.tos = value & 0xFF
        cm = CMSG_NXTHDR(msg, cm)
    if not have_ts:
        p.rx_ns = realtime_ns()
    # A datagram cut short by the buffer cannot be reflected faithfully: malformed.
    p.size = 0 if msg.msg_flags & MSG_TRUNC else size
# hot-loop-end


cdef void fill_fmt(Fmt *f, fmt) except *:
    f.sender_header = fmt.sender_header
    f.reflector_header = fmt.reflector_header
    f.min_request = fmt.min_request_length
    f.ts_off = fmt.timestamp_offset
    f.rts_off = fmt.receive_timestamp_offset
    f.sseq_off = fmt.sender_seq_offset
    f.sts_off = fmt.sender_timestamp_offset
    f.ttl_off = fmt.sender_ttl_offset
    f.dscp_off = -1 if fmt.s_dscp_ecn_offset is None else fmt.s_dscp_ecn_offset
    f.ssid_off = -1 if fmt.ssid_offset is None else fmt.ssid_offset
    if f.reflector_header > REFLECTOR_AUTH or f.reflector_header < f.sender_header:
        raise ValueError(f"unsupported test format {fmt!r}")


cdef object addr16(str ip):
    """(16-octet key, is IPv4) of an address text; ValueError if it is not one."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.version == 4:
        return _V4_PREFIX + addr.packed, True
    return addr.packed, False


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


cdef TwampTC *new_tc(crypto) except? NULL:
    """The libcrypto contexts of a session's TestPacketCrypto, or NULL for the Python path."""
    if not USE_LIBCRYPTO:
        return NULL
    keys = getattr(crypto, "keys", None)
    if keys is None:
        return NULL
    cdef bytes aes = bytes(keys.aes_key)
    cdef bytes mac = bytes(keys.hmac_key)
    if len(aes) != 16:
        return NULL
    return twamp_tc_new(aes, mac, len(mac), crypto.test_mode is TestMode.ENCRYPTED)


cdef class Reflector:
    """Reflects TWAMP-Test datagrams arriving on `sock` for the sessions added to it.

    The compiled twin of `twamp._fastpath_py.Reflector`: same arguments, methods and counters.
    `_send_chunk` (default `SEND_CHUNK`) caps the datagrams per `sendmmsg`.
    """

    IMPLEMENTATION = IMPLEMENTATION

    def __cinit__(self, *args, **kwargs):
        pthread_mutex_init(&self._mutex, NULL)
        self._wake_fd = -1
        self._table_cap = 16
        self._table = <Entry *>calloc(self._table_cap, sizeof(Entry))
        if self._table == NULL:
            raise MemoryError()

    def __init__(self, sock, *, batch=64, busy_poll=False, light=None):
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self._sock = sock
        self._fd = sock.fileno()
        self._v6 = sock.family == socket.AF_INET6
        self._batch = batch
        self._busy_poll = bool(busy_poll)
        self._send_chunk = SEND_CHUNK
        self._light = light
        self._cryptos = {}
        self._thread = None
        self._ee = clock.error_estimate()
        set_send_ttl(sock)
        if light is not None:
            self._init_light(light)

    cdef int _init_light(self, light) except -1:
        fill_fmt(&self._light_fmt, light.fmt)
        self._light_on = 1
        self._light_stateful = bool(light.stateful)
        self._light_tos = -1 if light.dscp is None else light.dscp << 2
        self._light_max = light.max_peers
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
        if self._wake_fd >= 0:
            close(self._wake_fd)
        for i in range(self._n_slots):
            free_session(self._slots[i])
        free(self._slots)
        for i in range(self._n_lights):
            free(self._lights[i])
        free(self._lights)
        free(self._light_shared)
        free(self._allow)
        free(self._table)
        self._free_loop()
        pthread_mutex_destroy(&self._mutex)

    # -- session table -------------------------------------------------------------------------

    cdef int _lock(self) except -1:
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
        cdef int64_t n = self._n_sessions + self._n_lights + 1
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
        for i in range(self._n_lights):
            self._insert(self._lights[i])
        return 0

    cdef Session *_admit(self, const uint8_t *addr, uint16_t port, int v4) noexcept nogil:
        """The session of a peer: a slot's, a Light peer's, or a new Light peer's (or NULL)."""
        cdef Session *s = self._lookup(addr, port)
        cdef Session **grown
        cdef int i
        cdef int allowed
        if s != NULL or not self._light_on:
            return s
        if self._n_allow:
            allowed = 0
            for i in range(self._n_allow):
                if self._allow[i].v4 == v4 and prefix_match(addr, self._allow[i].addr,
                                                            self._allow[i].bits):
                    allowed = 1
                    break
            if not allowed:
                return NULL
        if not self._light_stateful:
            return self._light_shared
        if self._n_lights >= self._light_max:
            return NULL
        if self._n_lights == self._cap_lights:
            grown = <Session **>realloc(self._lights,
                                        (self._cap_lights * 2 + 16) * sizeof(Session *))
            if grown == NULL:
                return NULL
            self._lights = grown
            self._cap_lights = self._cap_lights * 2 + 16
        s = <Session *>calloc(1, sizeof(Session))
        if s == NULL:
            return NULL
        memcpy(s.addr, addr, 16)
        s.port = port
        s.slot = -1
        s.fmt = self._light_fmt
        s.tos = self._light_tos
        s.stateful = 1
        s.deadline_ns = NEVER
        if self._insert(s) < 0:
            free(s)
            return NULL
        self._lights[self._n_lights] = s
        self._n_lights += 1
        return s
    # hot-loop-end

    cdef Session *_session(self, slot) except NULL:
        if 0 <= slot < self._n_slots and self._slots[<int>slot] != NULL:
            return self._slots[<int>slot]
        raise KeyError(f"no session in slot {slot}")

    def add_session(self, spec):
        """Start admitting `spec.peer`; returns the session's slot (the lowest free one)."""
        cdef Session *s
        cdef Session *old
        cdef Session **grown
        cdef int slot
        cdef int64_t i
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
            s.tos = -1 if spec.dscp is None else spec.dscp << 2
            s.stateful = bool(spec.stateful)
            s.deadline_ns = NEVER
            if crypto is not None:
                s.crypto = <PyObject *>crypto
                s.crypto_mode = CRYPTO_ENC
                if crypto.test_mode is TestMode.AUTHENTICATED and fmt.timestamp_offset >= 16:
                    s.crypto_mode = CRYPTO_AUTH
                s.tc = new_tc(crypto)
        except BaseException:
            free_session(s)
            raise
        self._lock()
        try:
            old = self._lookup(s.addr, s.port)
            if old != NULL and old.slot >= 0:
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
            if old == NULL and self._insert(s) < 0:
                raise MemoryError()
            self._slots[slot] = s
            if slot == self._n_slots:
                self._n_slots += 1
            self._n_sessions += 1
            if old != NULL:
                # A Light peer that now has a negotiated session: its Light state goes.
                for i in range(self._n_lights):
                    if self._lights[i] == old:
                        self._n_lights -= 1
                        self._lights[i] = self._lights[self._n_lights]
                        break
                if self._rebuild() < 0:
                    self._lights[self._n_lights] = old
                    self._n_lights += 1
                    self._unpublish(slot)
                    raise MemoryError()
                free(old)
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
        self._lock()
        try:
            s = self._session(slot)
            slot = s.slot
            self._slots[slot] = NULL
            if self._rebuild() < 0:
                self._slots[slot] = s
                raise MemoryError()
            self._unpublish(slot)
            final = session_dict(s)
            free_session(s)
        finally:
            self._unlock()
        self._cryptos.pop(slot, None)
        return final

    def session_counters(self, slot):
        self._lock()
        try:
            return session_dict(self._session(slot))
        finally:
            self._unlock()

    def counters(self):
        return {
            "received": twamp_load_u64(&self._c.received),
            "reflected": twamp_load_u64(&self._c.reflected),
            "unknown_peer": twamp_load_u64(&self._c.unknown_peer),
            "malformed": twamp_load_u64(&self._c.malformed),
            "auth_failed": twamp_load_u64(&self._c.auth_failed),
            "late": twamp_load_u64(&self._c.late),
            "send_errors": twamp_load_u64(&self._c.send_errors),
        }

    # -- per datagram --------------------------------------------------------------------------

    # hot-loop-begin
    cdef int _classify(self, Pkt *p) noexcept nogil:
        """Steps 2-5 of the pure twin's docstring; 1 if the datagram waits for the crypto phase."""
        cdef Session *s = NULL
        twamp_inc(&self._c.received)
        p.state = ST_DROP
        if p.v4 >= 0:
            s = self._admit(p.addr, p.port, p.v4)
        if s == NULL:
            twamp_inc(&self._c.unknown_peer)
            return 0
        p.sess = s
        twamp_inc(&s.received)
        if p.rx_ns > s.deadline_ns:
            twamp_inc(&self._c.late)
            twamp_inc(&s.dropped)
            return 0
        if p.size < s.fmt.min_request:
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
            put32(b, s.seq)  # spec §5.6: the reflector's own counter
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
        `send` (the loop) they then go out at once, in groups of one (or `_send_chunk` when the
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
            g = self._send_chunk if n >= self._batch and self._send_chunk > 1 else 1
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

    cdef void _refresh_ee(self) noexcept with gil:
        try:
            self._ee = clock.error_estimate()
        except BaseException:
            pass
        self._ee_due = monotonic_ns() + EE_REFRESH_NS

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
            reply_tos = tos if s.tos < 0 else s.tos
        finally:
            self._unlock()
        return bytes(buf[:pk.reply_len]), reply_tos

    # -- the loop ------------------------------------------------------------------------------

    cdef int _alloc_loop(self) except -1:
        cdef int i
        cdef int b = self._batch
        if self._pkts != NULL:
            return 0
        self._bufs = <uint8_t *>malloc(<size_t>b * BUF_SIZE)
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
            self._free_loop()
            raise MemoryError()
        for i in range(b):
            self._rx_iov[i].iov_base = self._bufs + <size_t>i * BUF_SIZE
            self._rx_iov[i].iov_len = BUF_SIZE
            self._rx[i].msg_hdr.msg_iov = &self._rx_iov[i]
            self._rx[i].msg_hdr.msg_iovlen = 1
            self._rx[i].msg_hdr.msg_name = &self._names[i]
            self._rx[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage)
            self._rx[i].msg_hdr.msg_control = self._rx_ctrl + <size_t>i * RX_CTRL
            self._rx[i].msg_hdr.msg_controllen = RX_CTRL
            self._tx[i].msg_hdr.msg_iov = &self._tx_iov[i]
            self._tx[i].msg_hdr.msg_iovlen = 1
            self._tx[i].msg_hdr.msg_control = self._tx_ctrl + <size_t>i * TX_CTRL
            self._pkts[i].buf = self._bufs + <size_t>i * BUF_SIZE
        return 0

    cdef void _free_loop(self) noexcept:
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

    # hot-loop-begin
    cdef int _batch_once(self, int flags) noexcept nogil:
        """Reflect what one recvmmsg returns; -1 if the socket is gone."""
        cdef int n
        cdef int i
        cdef int n_crypto = 0
        cdef Pkt *p
        cdef msghdr *msg
        n = recvmmsg(self._fd, self._rx, self._batch, flags, NULL)
        if n <= 0:
            if n < 0 and (errno == EBADF or errno == ENOTSOCK):
                return -1
            return 0
        if monotonic_ns() >= self._ee_due:
            self._refresh_ee()
        pthread_mutex_lock(&self._mutex)
        for i in range(n):
            p = &self._pkts[i]
            msg = &self._rx[i].msg_hdr
            # RFC 5357 §4.2.1: Sender TTL 255 when the TTL cannot be read.
            parse_received(p, msg, self._rx[i].msg_len, 255)
            peer_key(p, &self._names[i], msg.msg_namelen)
            n_crypto += self._classify(p)
        if n_crypto:
            self._crypto_phase(self._pkts, n, 1)
        self._send_ready(n)
        pthread_mutex_unlock(&self._mutex)
        for i in range(n):
            # The kernel shortened these; give the next recvmmsg the full sizes again.
            msg = &self._rx[i].msg_hdr
            msg.msg_namelen = sizeof(sockaddr_storage)
            msg.msg_controllen = RX_CTRL
            msg.msg_flags = 0
        return n

    cdef void _send_ready(self, int n) noexcept nogil:
        """Stamp each reply just before queueing it; send one by one, or in chunks if behind.

        A short batch means the loop keeps up: one datagram per call, so each Timestamp is
        read right before its own send. A full batch means a backlog: chunks of _send_chunk
        spare system calls, at the price of a Timestamp early by up to _send_chunk - 1 sends.
        """
        cdef int i
        cdef int k = 0
        cdef int chunk = 1
        cdef Pkt *p
        if n >= self._batch and self._send_chunk > 1:
            chunk = self._send_chunk
        for i in range(n):
            p = &self._pkts[i]
            if p.state == ST_READY:
                stamp(p, self._ee)
            elif p.state == ST_SEAL:
                # Mode 4 covers the Timestamp: stamp, then protect, right before the send.
                stamp(p, self._ee)
                if not self._seal(p):
                    continue
            elif p.state != ST_STAMPED:
                continue
            self._queue(i, k)
            k += 1
            if k == chunk:
                self._flush(k)
                k = 0
        if k:
            self._flush(k)

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
            for j in range(done, done + r):
                s = self._pkts[self._tx_idx[j]].sess
                twamp_inc(&self._c.reflected)
                twamp_inc(&s.reflected)
            done += r

    cdef void _loop(self) noexcept nogil:
        cdef pollfd fds[2]
        cdef int r
        if self._busy_poll:
            while not twamp_load_int(&self._stopping):
                if self._batch_once(MSG_DONTWAIT) < 0:
                    return
            return
        fds[0].fd = self._fd
        fds[0].events = POLLIN
        fds[1].fd = self._wake_fd
        fds[1].events = POLLIN
        while not twamp_load_int(&self._stopping):
            r = poll(fds, 2, POLL_MS)
            if r <= 0:
                continue
            if fds[0].revents & POLLNVAL:
                return
            if fds[0].revents:
                if self._batch_once(MSG_DONTWAIT) < 0:
                    return
    # hot-loop-end

    def _run(self):
        self._refresh_ee()
        with nogil:
            self._loop()

    def start(self):
        """Run the loop in a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("the reflector is running already")
        self._alloc_loop()
        self._wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if self._wake_fd < 0:
            raise OSError(errno, "eventfd failed")
        twamp_store_int(&self._stopping, 0)
        self._thread = threading.Thread(target=self._run, name="twamp-reflector", daemon=True)
        self._thread.start()

    def stop(self):
        """Stop the loop promptly and join its thread (no-op if not running)."""
        cdef uint64_t one = 1
        thread = self._thread
        if thread is None:
            return
        twamp_store_int(&self._stopping, 1)
        write(self._wake_fd, &one, sizeof(one))  # the poll timeout ends the loop anyway
        thread.join()
        close(self._wake_fd)
        self._wake_fd = -1
        self._thread = None

    @property
    def running(self):
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.stop()

    def __repr__(self):
        state = "running" if self.running else "stopped"
        return f"<Reflector {IMPLEMENTATION} {state} sessions={self._n_sessions}>"


# -- Session-Sender ----------------------------------------------------------------------------

cdef enum:
    SEND_RING = 64  # packets built ahead (mode 2: protected ahead)
    RECV_ALL = 65536  # what a stopped run still takes in (the pure twin's _RECV_BUFFER)
    PREPARE_FEW = 8  # at least CHUNK
    S_BIT = 0x8000  # Error Estimate: synchronised (RFC 4656 §4.1.2)
    Z_BIT = 0x4000  # Error Estimate: PTP timestamps (RFC 8186 §2.3)

# The pure twin's pacing constants, so that both twins pace, and count lateness, alike.
cdef int64_t SPIN_NS = _fastpath_py._SPIN_NS
cdef int64_t MAX_SLEEP_NS = _fastpath_py._MAX_SLEEP_NS
cdef int64_t BEHIND_NS = _fastpath_py._BEHIND_NS
# How often the nogil loop takes the GIL to look at `stop`, signals and the Error Estimate.
cdef int64_t TICK_NS = 10_000_000
# Mode 2 protects packets ahead: a ring's worth when the next send is at least PREPARE_NS off,
# else as many as fit before it (up to PREPARE_FEW) at PREPARE_PACKET_NS each, measured
# (protect_sender_batch: 6 µs for 1, 27 µs for 8, 140 µs for 64), keeping PREPARE_MARGIN_NS.
cdef int64_t PREPARE_NS = 1_000_000
cdef int64_t PREPARE_PACKET_NS = 4_000
cdef int64_t PREPARE_MARGIN_NS = 15_000


cdef uint8_t *buffer_of(arr) except NULL:
    """The first octet of a C-contiguous numpy array (structured rows are packed octets)."""
    cdef uint8_t[::1] octets = arr.view(np.uint8)
    return &octets[0]


cdef class Sender:
    """The Session-Sender data plane of one test session, compiled twin of
    `twamp._fastpath_py.Sender`: same arguments, pacing, counters and records.

    Theory of operation
    -------------------
    `run()` releases the GIL for the whole call except short, bounded sections: a "tick" every
    `TICK_NS` (the `stop` flag, pending signals such as Ctrl-C, the Error Estimate), growing
    the records array when duplicates overflow it, and the crypto batch calls (crypto backend "python" only).

    Pacing follows the pure twin: the schedule moves to the monotonic clock once per call;
    until `_SPIN_NS` before a send time the loop sleeps in ppoll(2) on the socket (taking in
    replies as they come, at most `_MAX_SLEEP_NS` at a time) or, with `busy_poll`, spins on
    non-blocking `recvmmsg`; the rest is spun on `clock_gettime`. Every packet whose time has
    come goes into one `sendmmsg` (at most `SEND_CHUNK`: one when on schedule, several only
    when behind), each stamped (realtime clock, NTP format) just before its `mmsghdr` is built,
    the same value going into `sent["t1"]`. Lateness (`behind_schedule`, `max_lag_ns`) is
    measured per packet at its stamp. After each send as many queued replies are taken in as
    packets went out.

    Protection (RFC 5357 §4.1.2, spec §4.6): in mode 2 the HMAC and encryption cover octets
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

    Measured (2-vCPU VM shared with other work, loopback, the compiled Reflector in another
    process; lateness = sent t1 - schedule): open mode at 50 and 100 kpps, none behind, p99
    30-60 µs (the pure twin: thousands behind at 50 kpps); mode 2 at 33 kpps, none behind, p99
    36 µs; mode 4 at 20 kpps, none behind, p99 70-80 µs, at 50 kpps behind (about 10 µs of
    `cryptography` and glue per packet and reply), which `behind_schedule` reports. Those
    figures are for the "python" crypto backend. With "libcrypto" (ad-hoc, 2 s runs, the
    compiled Reflector in the same process, lateness from the realtime schedule): modes 2 and 4
    at 50 kpps, about 0.25 % behind, p99 17-19 µs; at 100 kpps, 0-0.6 % behind, p99 10-75 µs.
    """

    IMPLEMENTATION = IMPLEMENTATION

    def __init__(self, sock, peer, *, fmt, crypto=None, padding=0, tos=0, batch=32,
                 busy_poll=False):
        if (fmt.test_mode is TestMode.OPEN) != (crypto is None):
            raise ValueError("crypto is required in authenticated/encrypted mode, and only there")
        if not 0 <= padding <= BUF_SIZE - fmt.reflector_header:
            raise ValueError(
                f"padding {padding} is outside 0..{BUF_SIZE - fmt.reflector_header}"
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
            self._tc = new_tc(crypto)
        # RFC 5357 §4.1.2 / spec §5.5: pseudo-random, drawn independently of everything else.
        self._template = bytes(build_sender(fmt, 0, 0, 0, os.urandom(padding)))
        self._pkt_len = len(self._template)
        self._template_c = <const uint8_t *><const char *>self._template
        ((level, kind, value),) = tos_ancillary(sock.family, self._dest[0], tos)
        self._set_cmsg(level, kind, value)
        self._layout()
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        enable_receive_options(sock)
        set_send_ttl(sock)

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
        self._tx = <mmsghdr *>calloc(CHUNK, sizeof(mmsghdr))
        self._tx_iov = <iovec *>calloc(CHUNK, sizeof(iovec))
        self._tx_rt = <int64_t *>calloc(CHUNK, sizeof(int64_t))
        self._tx_lag = <int64_t *>calloc(CHUNK, sizeof(int64_t))
        self._tx_j = <Py_ssize_t *>calloc(CHUNK, sizeof(Py_ssize_t))
        self._rx_bufs = <uint8_t *>malloc(<size_t>b * BUF_SIZE)
        self._rx = <mmsghdr *>calloc(b, sizeof(mmsghdr))
        self._rx_iov = <iovec *>calloc(b, sizeof(iovec))
        self._rx_names = <sockaddr_storage *>calloc(b, sizeof(sockaddr_storage))
        self._rx_ctrl = <uint8_t *>calloc(b, RX_CTRL)
        self._rx_pkts = <Pkt *>calloc(b, sizeof(Pkt))
        if (self._ring == NULL or self._tx == NULL or self._tx_iov == NULL
                or self._tx_rt == NULL or self._tx_lag == NULL or self._tx_j == NULL
                or self._rx_bufs == NULL or self._rx == NULL or self._rx_iov == NULL
                or self._rx_names == NULL or self._rx_ctrl == NULL or self._rx_pkts == NULL):
            self._free()
            raise MemoryError()
        for i in range(CHUNK):
            self._tx[i].msg_hdr.msg_name = &self._dest_sa
            self._tx[i].msg_hdr.msg_namelen = self._dest_len
            self._tx[i].msg_hdr.msg_iov = &self._tx_iov[i]
            self._tx[i].msg_hdr.msg_iovlen = 1
            self._tx[i].msg_hdr.msg_control = self._tx_cmsg
            self._tx[i].msg_hdr.msg_controllen = self._tx_cmsg_len
            self._tx_iov[i].iov_len = self._pkt_len
        for i in range(b):
            self._rx_iov[i].iov_base = self._rx_bufs + <size_t>i * BUF_SIZE
            self._rx_iov[i].iov_len = BUF_SIZE
            self._rx[i].msg_hdr.msg_iov = &self._rx_iov[i]
            self._rx[i].msg_hdr.msg_iovlen = 1
            self._rx[i].msg_hdr.msg_name = &self._rx_names[i]
            self._rx[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage)
            self._rx[i].msg_hdr.msg_control = self._rx_ctrl + <size_t>i * RX_CTRL
            self._rx[i].msg_hdr.msg_controllen = RX_CTRL
            self._rx_pkts[i].buf = self._rx_bufs + <size_t>i * BUF_SIZE
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

    def run(self, schedule_ns, *, first_seq=0, wait_ns=2_000_000_000, stop=None):
        """Send one packet per scheduled time, then wait for replies (see the class docstring)."""
        cdef int64_t wait = wait_ns
        schedule = np.asarray(schedule_ns, dtype=np.int64)
        if schedule.ndim != 1:
            raise ValueError("schedule_ns must be one-dimensional")
        if schedule.size > 1 and bool(np.any(np.diff(schedule) < 0)):
            raise ValueError("schedule_ns must be ascending")
        if not 0 <= first_seq <= _SEQ_MAX:
            raise ValueError(f"first_seq {first_seq} is outside 0..{_SEQ_MAX}")
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
        self._records = np.zeros(max(n, 16), dtype=RECORD_DTYPE)
        self._keep = (targets, sent, answered)
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
        finally:
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
        return SenderResult(sent[:self._c.sent].copy(), records, counters)

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
        while count < CHUNK and count < left and self._targets[j + count] <= now:
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
        """One reply that passed the checks: a RECORD_DTYPE row (spec §5.6: T1..T4)."""
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
        self._rec_n += 1
        idx = s_seq - self._first_seq
        if idx < self._n and not self._answered[idx]:
            self._answered[idx] = 1
            self._c.answered += 1

    cdef int _drain(self, Py_ssize_t limit) noexcept nogil:
        """Take in up to `limit` queued datagrams without blocking; -1 to stop."""
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
                self._drain(RECV_ALL)  # what is queued is still received
            return
        self._wait_replies(monotonic_ns() + wait_ns)
    # hot-loop-end

    def __repr__(self):
        return f"<Sender {IMPLEMENTATION} peer={self._peer[0]}:{self._peer[1]}>"
