# C declarations of the compiled fast path `twamp._fastpath` (Linux): every system header it
# uses, the per-session and per-datagram C structs, and the fields of its cdef classes.
# uvloop keeps such declarations apart from the code (includes/system.pxd); all are nogil.

from cpython.ref cimport PyObject
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t


cdef extern from "<sys/types.h>" nogil:
    ctypedef long ssize_t


cdef extern from "<errno.h>" nogil:
    int errno
    enum:
        EAGAIN
        EWOULDBLOCK
        EINTR
        EBADF
        ENOTSOCK


cdef extern from "<string.h>" nogil:
    void *memcpy(void *dest, const void *src, size_t n)
    void *memmove(void *dest, const void *src, size_t n)
    void *memset(void *s, int c, size_t n)
    int memcmp(const void *a, const void *b, size_t n)


cdef extern from "<stdlib.h>" nogil:
    void *malloc(size_t size)
    void *calloc(size_t nmemb, size_t size)
    void *realloc(void *ptr, size_t size)
    void free(void *ptr)


cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    ctypedef int clockid_t

    struct timespec:
        time_t tv_sec
        long tv_nsec

    enum:
        CLOCK_REALTIME
        CLOCK_MONOTONIC

    int clock_gettime(clockid_t clk, timespec *tp)
    int nanosleep(const timespec *req, timespec *rem)


cdef extern from "<unistd.h>" nogil:
    ssize_t read(int fd, void *buf, size_t count)
    ssize_t write(int fd, const void *buf, size_t count)
    int close(int fd)


cdef extern from "<sys/eventfd.h>" nogil:
    enum:
        EFD_NONBLOCK
        EFD_CLOEXEC

    int eventfd(unsigned int initval, int flags)


cdef extern from "<poll.h>" nogil:
    ctypedef unsigned long nfds_t

    struct pollfd:
        int fd
        short events
        short revents

    enum:
        POLLIN
        POLLERR
        POLLHUP
        POLLNVAL

    int poll(pollfd *fds, nfds_t nfds, int timeout)
    int ppoll(pollfd *fds, nfds_t nfds, const timespec *tmo, const void *sigmask)


cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_mutexattr_t:
        pass

    int pthread_mutex_init(pthread_mutex_t *m, const pthread_mutexattr_t *attr)
    int pthread_mutex_destroy(pthread_mutex_t *m)
    int pthread_mutex_lock(pthread_mutex_t *m)
    int pthread_mutex_unlock(pthread_mutex_t *m)


cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len


cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t

    struct sockaddr:
        sa_family_t sa_family

    struct sockaddr_storage:
        sa_family_t ss_family

    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags

    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len

    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type

    enum:
        AF_INET
        AF_INET6
        SOL_SOCKET
        MSG_DONTWAIT
        MSG_WAITFORONE
        MSG_TRUNC
        MSG_CTRUNC

    cmsghdr *CMSG_FIRSTHDR(msghdr *msg)
    cmsghdr *CMSG_NXTHDR(msghdr *msg, cmsghdr *cmsg)
    unsigned char *CMSG_DATA(cmsghdr *cmsg)
    size_t CMSG_SPACE(size_t length)
    size_t CMSG_LEN(size_t length)

    int recvmmsg(int fd, mmsghdr *msgvec, unsigned int vlen, int flags, timespec *timeout)
    int sendmmsg(int fd, mmsghdr *msgvec, unsigned int vlen, int flags)
    ssize_t sendmsg(int fd, const msghdr *msg, int flags)


cdef extern from "<netinet/in.h>" nogil:
    ctypedef uint32_t in_addr_t
    ctypedef uint16_t in_port_t

    struct in_addr:
        in_addr_t s_addr

    struct in6_addr:
        unsigned char s6_addr[16]

    struct sockaddr_in:
        sa_family_t sin_family
        in_port_t sin_port
        in_addr sin_addr

    struct sockaddr_in6:
        sa_family_t sin6_family
        in_port_t sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id

    enum:
        IPPROTO_IP
        IPPROTO_IPV6
        IP_TOS
        IP_TTL
        IPV6_HOPLIMIT
        IPV6_TCLASS

    uint16_t htons(uint16_t v)
    uint16_t ntohs(uint16_t v)


cdef extern from *:
    """
    /* Linux value (<asm-generic/socket.h>); older libc headers lack the name. */
    #ifndef SCM_TIMESTAMPNS
    #define SCM_TIMESTAMPNS 35
    #endif
    #define TWAMP_SCM_TIMESTAMPNS SCM_TIMESTAMPNS

    /* Words shared between the loop thread and Python threads. Single writer (the loop, or
       whoever holds the session mutex), lock-free readers: relaxed atomics are enough. */
    static inline int twamp_load_int(const int *p) {
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);
    }
    static inline void twamp_store_int(int *p, int v) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    static inline uint64_t twamp_load_u64(const uint64_t *p) {
        return __atomic_load_n(p, __ATOMIC_RELAXED);
    }
    static inline void twamp_inc(uint64_t *p) {
        __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    }
    static inline int64_t twamp_load_i64(const int64_t *p) {
        return __atomic_load_n(p, __ATOMIC_RELAXED);
    }
    static inline void twamp_store_i64(int64_t *p, int64_t v) {
        __atomic_store_n(p, v, __ATOMIC_RELAXED);
    }
    """
    int TWAMP_SCM_TIMESTAMPNS
    int twamp_load_int(const int *p) nogil
    void twamp_store_int(int *p, int v) nogil
    uint64_t twamp_load_u64(const uint64_t *p) nogil
    void twamp_inc(uint64_t *p) nogil
    int64_t twamp_load_i64(const int64_t *p) nogil
    void twamp_store_i64(int64_t *p, int64_t v) nogil


cdef extern from "_libcrypto.h" nogil:
    # OpenSSL's libcrypto through dlopen/dlsym (the header has no OpenSSL include).
    ctypedef struct TwampTC:
        pass

    int twamp_tc_load()
    TwampTC *twamp_tc_new(const uint8_t *aes_key, const uint8_t *hmac_key, int hmac_len,
                          int encrypted)
    void twamp_tc_free(TwampTC *tc)
    int twamp_tc_unprotect_sender(TwampTC *tc, uint8_t *pkt, uint32_t size)
    int twamp_tc_protect_reflector(TwampTC *tc, uint8_t *pkt)
    int twamp_tc_protect_sender(TwampTC *tc, uint8_t *pkt)
    int twamp_tc_unprotect_reflector(TwampTC *tc, uint8_t *pkt, uint32_t size)


# -- the Reflector's C state -------------------------------------------------------------------

cdef struct Fmt:
    # A TestFormat reduced to the offsets the rewrite needs (wire/packets.py, spec §5 and §7).
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


cdef struct Entry:
    uint8_t addr[16]
    uint16_t port
    Session *sess  # NULL: empty bucket


cdef struct Net:
    uint8_t addr[16]
    int bits  # prefix length over the 16-octet form (IPv4: 96 + prefix)
    int v4


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


cdef struct Counters:
    uint64_t received
    uint64_t reflected
    uint64_t unknown_peer
    uint64_t malformed
    uint64_t auth_failed
    uint64_t late
    uint64_t send_errors


cdef class Reflector:
    cdef object _sock
    cdef int _fd
    cdef int _v6
    cdef int _batch
    cdef int _busy_poll
    cdef public int _send_chunk
    cdef object _light
    cdef object _cryptos  # slot -> TestPacketCrypto: owns what Session.crypto borrows
    cdef object _thread
    cdef int _stopping
    cdef int _wake_fd
    cdef uint16_t _ee
    cdef int64_t _ee_due
    cdef pthread_mutex_t _mutex
    cdef Counters _c

    # session table (every write holds _mutex)
    cdef Session **_slots
    cdef int _n_slots
    cdef int _cap_slots
    cdef int _n_sessions
    cdef Entry *_table
    cdef uint32_t _table_cap
    cdef uint32_t _table_used
    cdef int _light_on
    cdef int _light_stateful
    cdef Fmt _light_fmt
    cdef int _light_tos
    cdef int64_t _light_max
    cdef Net *_allow
    cdef int _n_allow
    cdef Session *_light_shared
    cdef Session **_lights
    cdef int64_t _n_lights
    cdef int64_t _cap_lights

    # the loop's buffers, allocated on the first start()
    cdef uint8_t *_bufs
    cdef mmsghdr *_rx
    cdef iovec *_rx_iov
    cdef sockaddr_storage *_names
    cdef uint8_t *_rx_ctrl
    cdef mmsghdr *_tx
    cdef iovec *_tx_iov
    cdef uint8_t *_tx_ctrl
    cdef int *_tx_idx
    cdef Pkt *_pkts

    cdef int _lock(self) except -1
    cdef void _unlock(self) noexcept nogil
    cdef Session *_lookup(self, const uint8_t *addr, uint16_t port) noexcept nogil
    cdef int _insert(self, Session *s) noexcept nogil
    cdef int _rebuild(self) noexcept nogil
    cdef Session *_admit(self, const uint8_t *addr, uint16_t port, int v4) noexcept nogil
    cdef int _classify(self, Pkt *p) noexcept nogil
    cdef void _rewrite(self, Pkt *p) noexcept nogil
    cdef int _seal(self, Pkt *p) noexcept nogil
    cdef void _crypto_phase(self, Pkt *pkts, int n, int send) noexcept with gil
    cdef void _crypto_session(self, Pkt *pkts, int n, int first, int send) except *
    cdef void _refresh_ee(self) noexcept with gil
    cdef int _alloc_loop(self) except -1
    cdef void _free_loop(self) noexcept
    cdef int _batch_once(self, int flags) noexcept nogil
    cdef void _send_ready(self, int n) noexcept nogil
    cdef void _queue(self, int i, int k) noexcept nogil
    cdef void _flush(self, int count) noexcept nogil
    cdef void _loop(self) noexcept nogil
    cdef int _init_light(self, object light) except -1
    cdef Session *_session(self, object slot) except NULL
    cdef void _unpublish(self, int slot) noexcept nogil


# -- the Sender's C state ----------------------------------------------------------------------

cdef struct RecordLayout:
    # Byte offsets of the metrics.RECORD_DTYPE / SENT_DTYPE fields (packed numpy records).
    Py_ssize_t size
    Py_ssize_t sender_seq
    Py_ssize_t reflector_seq
    Py_ssize_t t1
    Py_ssize_t t2
    Py_ssize_t t3
    Py_ssize_t t4
    Py_ssize_t sender_ttl
    Py_ssize_t reply_ttl
    Py_ssize_t reply_tos
    Py_ssize_t sent_size
    Py_ssize_t sent_seq
    Py_ssize_t sent_t1


cdef struct SendCounters:
    uint64_t sent
    uint64_t send_errors
    uint64_t malformed
    uint64_t auth_failed
    uint64_t unknown_peer
    uint64_t behind
    uint64_t unsynced
    uint64_t answered
    int64_t max_lag


cdef class Sender:
    cdef object _sock
    cdef object _fmt
    cdef object _crypto
    cdef object _peer
    cdef object _dest
    cdef int _fd
    cdef int _batch
    cdef int _busy_poll
    cdef int _crypto_mode
    cdef TwampTC *_tc  # owned: libcrypto contexts (CRYPTO_BACKEND "libcrypto"), else NULL
    cdef Fmt _f
    cdef uint8_t _peer_addr[16]
    cdef uint16_t _peer_port
    cdef sockaddr_storage _dest_sa
    cdef socklen_t _dest_len
    cdef uint8_t _tx_cmsg[32]
    cdef size_t _tx_cmsg_len
    cdef uint32_t _pkt_len
    cdef object _template  # bytes: the sender packet with zero Sequence Number and Timestamp
    cdef const uint8_t *_template_c
    cdef RecordLayout _lay

    # one run() at a time: its state
    cdef object _stop
    cdef object _exc  # an exception raised on a GIL path of the loop, re-raised by run()
    cdef int _running
    cdef int _stopped
    cdef uint16_t _ee
    cdef int64_t _next_tick
    cdef object _keep  # Python objects whose buffers the C pointers below use
    cdef const int64_t *_targets
    cdef Py_ssize_t _n
    cdef Py_ssize_t _next  # index of the next packet to send
    cdef Py_ssize_t _prepared  # mode 2: packets [_next, _prepared) are built and protected
    cdef uint32_t _first_seq
    cdef uint8_t *_sent_base
    cdef object _records
    cdef uint8_t *_rec_base
    cdef Py_ssize_t _rec_n
    cdef Py_ssize_t _rec_cap
    cdef uint8_t *_answered
    cdef SendCounters _c

    # buffers, allocated on the first run()
    cdef uint8_t *_ring  # SEND_RING packets of _pkt_len
    cdef mmsghdr *_tx
    cdef iovec *_tx_iov
    cdef int64_t *_tx_rt  # per queued packet: realtime stamp, monotonic lag, index
    cdef int64_t *_tx_lag
    cdef Py_ssize_t *_tx_j
    cdef uint8_t *_rx_bufs
    cdef mmsghdr *_rx
    cdef iovec *_rx_iov
    cdef sockaddr_storage *_rx_names
    cdef uint8_t *_rx_ctrl
    cdef Pkt *_rx_pkts

    cdef int _alloc(self) except -1
    cdef void _free(self) noexcept
    cdef int _tick(self) noexcept with gil
    cdef int _prepare(self, Py_ssize_t upto) noexcept with gil
    cdef int _protect_group(self, int count) noexcept with gil
    cdef int _grow_records(self) noexcept with gil
    cdef int _unprotect(self, int n) noexcept with gil
    cdef int _crypto_failed(self) noexcept with gil
    cdef int _prepare_any(self, Py_ssize_t upto) noexcept nogil
    cdef int _protect_any(self, int count) noexcept nogil
    cdef int _unprotect_any(self, int n) noexcept nogil
    cdef void _build(self, Py_ssize_t j) noexcept nogil
    cdef int _send_due(self) noexcept nogil
    cdef void _record(self, Pkt *p) noexcept nogil
    cdef int _drain(self, Py_ssize_t limit) noexcept nogil
    cdef int _wait_until(self, int64_t target) noexcept nogil
    cdef void _wait_replies(self, int64_t deadline) noexcept nogil
    cdef void _run_loop(self, int64_t wait_ns) noexcept nogil
