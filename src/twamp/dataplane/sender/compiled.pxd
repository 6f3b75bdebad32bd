# C state of the compiled Session-Sender (`compiled.pyx`).

from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from twamp.dataplane.libcrypto cimport TwampTC
from twamp.dataplane.system cimport *
from twamp.dataplane.wire cimport *


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
    Py_ssize_t reflector_ee
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

    # Sender(tx_timestamps=True): the kernel numbers sent datagrams from 0 (SO_TIMESTAMPING,
    # OPT_ID); _tx_next counts them, _tx_base is this run's first, _tx_kernel its rows' times.
    cdef int _tx_ts
    cdef int _ts_slot  # which stamp of scm_timestamping: software (0) or raw hardware (2)
    cdef uint64_t _tx_next
    cdef uint64_t _tx_base
    cdef int64_t *_tx_kernel
    cdef mmsghdr *_eq
    cdef iovec *_eq_iov
    cdef uint8_t *_eq_ctrl
    cdef uint8_t *_eq_data

    cdef void _take_tx(self) noexcept nogil
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
