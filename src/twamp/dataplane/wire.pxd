# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# Inline wire helpers and the per-datagram C structs shared by the compiled reflector and sender.
#
# Everything the per-packet code calls is `noexcept nogil` here, so Cython itself refuses any
# Python object inside them; the three helpers at the end (fill_fmt, addr16, new_tc) run when a
# session or sender is set up, never per packet.

from cpython.ref cimport PyObject
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from twamp.dataplane.libcrypto cimport TwampTC, twamp_tc_new
from twamp.dataplane.system cimport *


cdef enum:
    RX_CTRL = 128  # a timespec, TTL and TOS control messages, with room for both families
    TX_CTRL = 32  # one int-sized control message
    SENDER_AUTH = 48  # sender octets TestPacketCrypto reads: HMAC at 32-47 (RFC 5357 §4.1.2)
    REFLECTOR_AUTH = 112  # reflector octets it writes: HMAC at 96-111 (RFC 5357 §4.2.1)

    # Session.crypto_mode
    CRYPTO_NONE = 0
    CRYPTO_AUTH = 1  # the Timestamp lies outside what protection covers: stamp after it
    CRYPTO_ENC = 2  # the Timestamp is covered: stamp, then protect

    # The error queue of SO_TIMESTAMPING transmit reports (read_tx_reports)
    EQ_BATCH = 32  # transmit reports taken off the error queue per recvmmsg
    EQ_CTRL = 128  # an scm_timestamping (48 octets) and a sock_extended_err, with room
    TS_SLOT_SOFTWARE = 0  # scm_timestamping.ts[0]: the software stamp
    TS_SLOT_HARDWARE = 2  # scm_timestamping.ts[2]: the raw hardware stamp (ts[1] is unused)


cdef struct Fmt:
    # A TestFormat reduced to the offsets the rewrite needs (wire/packets.py; RFC 5357 §4.1.2/§4.2.1, RFC 8762 §4.2/§4.3).
    uint16_t sender_header
    uint16_t reflector_header
    uint16_t min_request
    uint16_t ts_off
    uint16_t rts_off
    uint16_t sseq_off
    uint16_t sts_off
    uint16_t ttl_off
    int16_t dscp_off  # -1: no S-DSCP-ECN field
    int16_t ssid_off  # -1: no SSID field



cdef struct Session:
    uint8_t addr[16]  # IPv4 as ::ffff:a.b.c.d, so v4 and v4-mapped peers are one key
    uint16_t port
    int32_t slot  # Python's slot number; -1 for a TWAMP Light peer
    Fmt fmt
    int tos  # reply TOS octet; -1: the received one
    int stateful
    int crypto_mode  # CRYPTO_NONE / CRYPTO_AUTH / CRYPTO_ENC
    PyObject *crypto  # borrowed: Reflector._cryptos keeps the reference
    TwampTC *tc  # owned: the libcrypto contexts (CRYPTO_BACKEND "libcrypto"), else NULL
    uint32_t seq
    int64_t deadline_ns
    uint64_t received
    uint64_t reflected
    uint64_t dropped
    uint64_t errors
    int64_t last_rx_ns
    # stateful TWAMP Light only (slot -1): RFC 8972 SSID of the key, and the LRU list
    uint16_t ssid
    Session *lru_prev  # towards the most recently used
    Session *lru_next  # towards the least recently used (also the graveyard's link)



cdef struct TxReport:
    # One SO_TIMESTAMPING transmit report: the datagram's number (OPT_ID, modulo 2^32) and the
    # kernel's (or the NIC's) transmit time in Unix ns.
    uint32_t key
    int64_t stamp_ns


cdef struct Pkt:
    # One datagram on its way through a batch.
    uint8_t *buf
    Session *sess
    uint8_t addr[16]  # the peer, in the Session.addr form
    uint16_t port
    int v4  # 1 IPv4 (or v4-mapped), 0 IPv6, -1 no usable address
    int64_t rx_ns
    uint32_t size
    uint32_t reply_len
    int ttl  # -1: not an octet (process() only): malformed, as reflect() would raise
    int tos
    int tos_ok  # 0: the TOS is not an octet, so an S-DSCP-ECN layout cannot carry it
    int reply_tos
    int state
    int64_t tx_ns  # the transmit Timestamp written (Unix ns), for the T3 diagnostic



# -- per-packet helpers ----------------------------------------------------------------------

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
    p.tx_ns = realtime_ns()
    put64(t, ntp_from_ns(p.tx_ns))
    put16(t + 8, ee)


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


cdef inline int parse_tx_report(msghdr *msg, int slot, TxReport *out) noexcept nogil:
    # dataplane.sockets.parse_tx_timestamp: one error-queue message -> 1 and `out` when it holds
    # both the datagram number (sock_extended_err.ee_data, origin SO_EE_ORIGIN_TIMESTAMPING,
    # <linux/errqueue.h>) and a non-zero stamp in scm_timestamping.ts[slot]; else 0. A zero stamp
    # is the kernel saying "no stamp of this kind" (a hardware slot without hardware stamping),
    # so it is never taken for a time.
    cdef cmsghdr *cm = CMSG_FIRSTHDR(msg)
    cdef timespec ts
    cdef int have_key = 0
    cdef int64_t stamp_ns = 0
    while cm != NULL:
        if (cm.cmsg_level == SOL_SOCKET and cm.cmsg_type == TWAMP_SCM_TIMESTAMPING
                and cm.cmsg_len >= CMSG_LEN(<size_t>(slot + 1) * sizeof(timespec))):
            memcpy(&ts, CMSG_DATA(cm) + <size_t>slot * sizeof(timespec), sizeof(timespec))
            stamp_ns = <int64_t>ts.tv_sec * NS + ts.tv_nsec
        elif (((cm.cmsg_level == IPPROTO_IP and cm.cmsg_type == TWAMP_IP_RECVERR)
                or (cm.cmsg_level == IPPROTO_IPV6 and cm.cmsg_type == TWAMP_IPV6_RECVERR))
                and cm.cmsg_len >= CMSG_LEN(16)
                and CMSG_DATA(cm)[4] == TWAMP_SO_EE_ORIGIN_TIMESTAMPING):
            memcpy(&out.key, CMSG_DATA(cm) + 12, 4)
            have_key = 1
        cm = CMSG_NXTHDR(msg, cm)
    out.stamp_ns = stamp_ns
    return 1 if have_key and stamp_ns != 0 else 0


cdef inline int read_tx_reports(int fd, mmsghdr *eq, uint8_t *eq_ctrl, int slot,
                                TxReport *out, int *n_out) noexcept nogil:
    # The one MSG_ERRQUEUE reader of both compiled twins: one recvmmsg of up to EQ_BATCH
    # transmit reports off `fd`'s error queue (SO_TIMESTAMPING with OPT_ID and OPT_TSONLY),
    # never blocking. The usable ones go to out[0 .. *n_out); returns what recvmmsg returned,
    # so a caller loops while it is EQ_BATCH. `eq` has EQ_BATCH entries whose msg_iov are set
    # up, `eq_ctrl` EQ_BATCH * EQ_CTRL octets. Left on the queue, reports would fill the
    # receive buffer and keep epoll/ppoll awake (EPOLLERR/POLLERR).
    cdef int r
    cdef int i
    cdef msghdr *msg
    n_out[0] = 0
    for i in range(EQ_BATCH):
        msg = &eq[i].msg_hdr
        msg.msg_name = NULL
        msg.msg_namelen = 0
        msg.msg_control = eq_ctrl + <size_t>i * EQ_CTRL
        msg.msg_controllen = EQ_CTRL
        msg.msg_flags = 0
    r = recvmmsg(fd, eq, EQ_BATCH, MSG_ERRQUEUE | MSG_DONTWAIT, NULL)
    for i in range(r if r > 0 else 0):
        if parse_tx_report(&eq[i].msg_hdr, slot, &out[n_out[0]]):
            n_out[0] += 1
    return r


# -- set-up helpers (Python objects; never per packet) ----------------------------------------

cdef inline int fill_fmt(Fmt *f, fmt) except -1:
    """A TestFormat reduced to the offsets the rewrite needs."""
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
    return 0


cdef inline tuple addr16(str ip):
    """(16-octet key, is IPv4) of an address text; ValueError if it is not one."""
    # why: a .pxd cannot hold module-level Python imports; this runs at set-up only
    import ipaddress

    addr = ipaddress.ip_address(ip)
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.version == 4:
        return bytes(10) + b"\xff\xff" + addr.packed, True
    return addr.packed, False


cdef inline TwampTC *new_tc(crypto, int use_libcrypto) except? NULL:
    """The libcrypto contexts of a session's TestPacketCrypto, or NULL for the Python path."""
    # why: a .pxd cannot hold module-level Python imports; this runs at set-up only
    from twamp.constants import TestMode

    if not use_libcrypto:
        return NULL
    keys = getattr(crypto, "keys", None)
    if keys is None:
        return NULL
    cdef bytes aes = bytes(keys.aes_key)
    cdef bytes mac = bytes(keys.hmac_key)
    if len(aes) != 16:
        return NULL
    return twamp_tc_new(aes, mac, len(mac), crypto.test_mode is TestMode.ENCRYPTED)
