# C state of the compiled Session-Reflector (`compiled.pyx`).

from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from twamp.dataplane.system cimport *
from twamp.dataplane.wire cimport *


cdef struct Entry:
    uint8_t addr[16]
    uint16_t port
    uint16_t ssid  # the Light table's third key part (RFC 8972); 0 in the session table
    Session *sess  # NULL: empty bucket


cdef struct Net:
    uint8_t addr[16]
    int bits  # prefix length over the 16-octet form (IPv4: 96 + prefix)
    int v4



cdef enum:
    RES_BUCKETS = 14  # len(types.RESIDENCE_BOUNDS_NS) + 1 (+Inf)


cdef struct Counters:
    uint64_t received
    uint64_t reflected
    uint64_t unknown_peer
    uint64_t malformed
    uint64_t auth_failed
    uint64_t late
    uint64_t send_errors
    uint64_t light_evicted  # stateful Light: least recently used senders dropped (table full)
    uint64_t rate_limited  # Light datagrams over LightPolicy.rate_pps of their source



cdef struct Member:
    # One Reflector on a ReflectorLoop: `refl` is borrowed (ReflectorLoop._refs owns it).
    void *refl  # NULL: a free entry
    int fd
    int dead  # its socket failed with EBADF/ENOTSOCK: out of epoll, never dispatched again
    uint32_t gen  # bumped at every add and remove; an epoll event of an older gen is stale


cdef class Reflector

cdef enum:
    GRP_BUCKETS = 65


cdef class ReflectorLoop:
    cdef int _epfd
    cdef int _wake_fd
    cdef int _batch
    cdef int _busy_poll
    cdef int _stride  # bytes between receive buffers (BUF_STRIDE unless measured otherwise)
    cdef int _stopping
    cdef int _waiting  # Python threads waiting for _mutex (a busy loop yields to them)
    cdef pthread_mutex_t _mutex  # held by the loop for each round of dispatches
    cdef Member *_members
    cdef int _n_members  # high-water mark of used entries
    cdef int _cap_members
    cdef int _count  # reflectors on the loop
    cdef object _refs  # member index -> Reflector
    cdef object _thread
    cdef object __weakref__

    # the receive and send buffers of every member (one member runs at a time)
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

    cdef int _alloc(self) except -1
    cdef void _free(self) noexcept
    cdef int _lock(self) except -1
    cdef void _run_loop(self) noexcept nogil
    cdef void _spin_once(self) noexcept nogil
    cdef void _dispatch(self, uint64_t tag) noexcept nogil
    cdef void _run_member(self, int idx) noexcept nogil


cdef class Reflector:
    cdef object _sock
    cdef int _fd
    cdef int _v6
    cdef int _batch
    cdef int _busy_poll
    cdef public int send_batch
    cdef object _light
    cdef object _cryptos  # slot -> TestPacketCrypto: owns what Session.crypto borrows
    cdef ReflectorLoop _given_loop  # the loop passed to __init__, or None
    cdef ReflectorLoop _owner  # the loop this Reflector is on while it runs
    cdef int _member  # its index there; -1: not running
    cdef uint16_t _ee
    cdef int64_t _ee_due
    cdef pthread_mutex_t _mutex
    cdef Counters _c
    # types.RESIDENCE_KEYS: T3 - T2 per reflected datagram, per bucket (last +Inf), and the
    # sum in ns; written by the loop with the table mutex held, copied out under it
    cdef uint64_t _res_hist[RES_BUCKETS]
    cdef uint64_t _res_sum_ns
    # sendmmsg calls by datagrams sent per call (index GRP_BUCKETS - 1: that many or more),
    # written by the loop with the table mutex held, copied out under it (send_groups())
    cdef uint64_t _grp_hist[GRP_BUCKETS]

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
    cdef int64_t _light_idle_ns
    cdef int _light_symmetric  # LightPolicy.symmetric_only
    # LightPolicy.rate_pps: GCRA per source address (theoretical arrival time, ns), in a
    # fixed open-addressing table cleared when _rate_max addresses are in use
    cdef int64_t _rate_t  # emission interval, ns (0: off)
    cdef int64_t _rate_tau  # burst tolerance, ns
    cdef Entry *_rate_keys
    cdef int64_t *_rate_tat
    cdef uint32_t _rate_cap
    cdef int64_t _rate_used
    cdef int64_t _rate_max
    # stateful Light: (address, port, SSID) -> state, a fixed-size open-addressing table
    # (capacity > 2 x _light_max, so it never fills) and an LRU list through the states
    cdef Entry *_ltable
    cdef uint32_t _ltable_cap
    cdef int64_t _n_lights
    cdef Session *_lru_head  # most recently used
    cdef Session *_lru_tail  # least recently used: the next to go when the table is full
    cdef Session *_graves  # evicted during a batch; freed when the batch is done

    # T3 diagnostic (tx_timestamps=True): the Timestamp written into each sent reply, by the
    # kernel's datagram number (SO_TIMESTAMPING OPT_ID) modulo DIAG_RING, and the histogram
    # of (kernel transmit time - Timestamp) in powers of two of ns
    cdef int _diag
    cdef int _ts_slot  # which stamp of scm_timestamping: software (0) or raw hardware (2)
    cdef uint64_t _diag_next
    cdef int64_t *_diag_ring
    cdef uint64_t _diag_hist[64]
    cdef uint64_t _diag_n
    cdef int64_t _diag_sum
    cdef int64_t _diag_max
    cdef int64_t _diag_min
    cdef mmsghdr *_eq
    cdef iovec *_eq_iov
    cdef uint8_t *_eq_ctrl
    cdef uint8_t *_eq_data

    # the buffers of the loop it runs on (borrowed from _owner while running)
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
    cdef Session *_admit(self, Pkt *p) noexcept nogil
    cdef int _allowed(self, Pkt *p) noexcept nogil
    cdef int _rate_ok(self, Pkt *p) noexcept nogil
    cdef Session *_light_state(self, Pkt *p) noexcept nogil
    cdef Session *_llookup(self, const uint8_t *addr, uint16_t port, uint16_t ssid) noexcept nogil
    cdef void _linsert(self, Session *s) noexcept nogil
    cdef void _ldelete(self, Session *s) noexcept nogil
    cdef void _lru_unlink(self, Session *s) noexcept nogil
    cdef void _lru_push(self, Session *s) noexcept nogil
    cdef void _evict(self, Session *s, int full) noexcept nogil
    cdef void _free_graves(self) noexcept nogil
    cdef int _classify(self, Pkt *p) noexcept nogil
    cdef void _rewrite(self, Pkt *p) noexcept nogil
    cdef int _seal(self, Pkt *p) noexcept nogil
    cdef void _crypto_phase(self, Pkt *pkts, int n, int send) noexcept with gil
    cdef void _crypto_session(self, Pkt *pkts, int n, int first, int send) except *
    cdef void _take_tx(self) noexcept nogil
    cdef int _batch_once(self, int flags) noexcept nogil
    cdef void _send_ready(self, int n) noexcept nogil
    cdef int _chunk(self, int n) noexcept nogil
    cdef int _pend(self, int i, int pending, int chunk) noexcept nogil
    cdef void _emit(self, int count) noexcept nogil
    cdef void _queue(self, int i, int k) noexcept nogil
    cdef void _flush(self, int count) noexcept nogil
    cdef void _count_residence(self, int64_t residence_ns) noexcept nogil
    cdef int _init_light(self, object light) except -1
    cdef Session *_session(self, object slot) except NULL
    cdef void _unpublish(self, int slot) noexcept nogil
