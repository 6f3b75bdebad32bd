# System (C library and Linux) declarations of the compiled data plane, shared by the reflector
# (`reflector/compiled.pyx`) and the sender (`sender/compiled.pyx`); all nogil. uvloop keeps such
# declarations apart from the code in the same way (includes/system.pxd).

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
        MSG_ERRQUEUE
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
    /* SO_TIMESTAMPING transmit reports on the error queue (<linux/errqueue.h>). */
    #define TWAMP_SCM_TIMESTAMPING 37
    #define TWAMP_IP_RECVERR 11
    #define TWAMP_IPV6_RECVERR 25
    #define TWAMP_SO_EE_ORIGIN_TIMESTAMPING 4

    /* Words shared between the loop thread and Python threads. Single writer (the loop, or
       whoever holds the session mutex), lock-free readers: relaxed atomics are enough. */
    static inline int twamp_load_int(const int *p) {
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);
    }
    static inline void twamp_store_int(int *p, int v) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    static inline void twamp_add_int(int *p, int v) {
        __atomic_add_fetch(p, v, __ATOMIC_ACQ_REL);
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
    int TWAMP_SCM_TIMESTAMPING
    int TWAMP_IP_RECVERR
    int TWAMP_IPV6_RECVERR
    int TWAMP_SO_EE_ORIGIN_TIMESTAMPING
    int twamp_load_int(const int *p) nogil
    void twamp_store_int(int *p, int v) nogil
    void twamp_add_int(int *p, int v) nogil
    uint64_t twamp_load_u64(const uint64_t *p) nogil
    void twamp_inc(uint64_t *p) nogil
    int64_t twamp_load_i64(const int64_t *p) nogil
    void twamp_store_i64(int64_t *p, int64_t v) nogil


cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        void *ptr
        int fd
        uint32_t u32
        uint64_t u64

    struct epoll_event:
        uint32_t events
        epoll_data_t data

    enum:
        EPOLLIN
        EPOLLERR
        EPOLLHUP
        EPOLL_CTL_ADD
        EPOLL_CTL_DEL
        EPOLL_CLOEXEC

    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)


cdef extern from "<sched.h>" nogil:
    int sched_yield()


cdef extern from *:
    """
    #include <string.h>
    #include <sys/timex.h>

    /* The Error Estimate (RFC 4656 §4.1.2) of this host's clock, as clock.py computes it, in C
       so that the reflector loop never waits for Python to refresh it: adjtimex(2) read-only;
       S only when the kernel says the clock is synchronised; the error is esterror when
       synchronised (and positive), else maxerror, both in µs; the smallest Scale whose
       Multiplier ceil(error * 2^32 / 2^Scale) fits in 8 bits, Multiplier never 0. Without
       adjtimex: "unknown" (S = 0, Scale 63, Multiplier 255). */
    static inline uint16_t twamp_ee_from_ns(uint64_t err_ns, int sync) {
        unsigned __int128 units = (unsigned __int128)err_ns << 32;  /* over 1e9 */
        for (int scale = 0; scale < 64; scale++) {
            unsigned __int128 den = (unsigned __int128)1000000000ULL << scale;
            unsigned __int128 mult = (units + den - 1) / den;
            if (mult <= 255)
                return (uint16_t)((sync ? 0x8000 : 0) | (scale << 8) | (mult ? (int)mult : 1));
        }
        return (uint16_t)((sync ? 0x8000 : 0) | (63 << 8) | 255);
    }
    static inline uint16_t twamp_error_estimate(void) {
        struct timex tx;
        memset(&tx, 0, sizeof tx);  /* modes 0: read only, no privilege needed */
        int state = adjtimex(&tx);
        if (state < 0)
            return 0x3FFF;
        int sync = !(tx.status & STA_UNSYNC) && state != TIME_ERROR;
        long err_us = (sync && tx.esterror > 0) ? tx.esterror : tx.maxerror;
        if (err_us < 0)
            err_us = 0;
        return twamp_ee_from_ns((uint64_t)err_us * 1000u, sync);
    }
    """
    uint16_t twamp_ee_from_ns(uint64_t err_ns, int sync) nogil
    uint16_t twamp_error_estimate() nogil


cdef extern from *:
    """
    /* The data plane's constants as literals the C compiler can fold; twamp.dataplane.types
       holds the same values for Python (tests/test_dataplane_layout.py compares them). */
    #define TWAMP_NS 1000000000LL
    #define TWAMP_NTP_UNIX_DELTA 2208988800ULL  /* RFC 5905 §6: 1900 -> 1970 */
    #define TWAMP_NEVER 0x7FFFFFFFFFFFFFFFLL
    #define TWAMP_TAI_OFFSET_S 37LL  /* timestamps.DEFAULT_TAI_OFFSET_S */
    #define TWAMP_MAX_DATAGRAM 65536
    /* Receive buffers are this far apart: one cache line more than a datagram, so that the
       headers of a batch do not all fall into the same cache sets (a 64 KiB stride maps
       every buffer's first line to one L1 and one L2 set). */
    #define TWAMP_BUF_STRIDE (65536 + 64)
    #define TWAMP_SEND_BATCH 8
    #define TWAMP_REFLECTOR_SEND_BATCH 4
    #define TWAMP_SPIN_NS 200000LL
    #define TWAMP_MAX_SLEEP_NS 20000000LL
    #define TWAMP_BEHIND_NS 1000000LL
    #define TWAMP_LIGHT_IDLE_NS 60000000000LL
    #define TWAMP_EE_REFRESH_NS 1000000000LL  /* clock.REFRESH_NS */
    #define TWAMP_S_BIT 0x8000
    #define TWAMP_Z_BIT 0x4000
    static const unsigned char TWAMP_V4_PREFIX[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    """
    const int64_t NS "TWAMP_NS"
    const uint64_t NTP_UNIX_DELTA "TWAMP_NTP_UNIX_DELTA"
    const int64_t NEVER "TWAMP_NEVER"
    const int64_t TAI_OFFSET_S "TWAMP_TAI_OFFSET_S"
    const int MAX_DATAGRAM "TWAMP_MAX_DATAGRAM"
    const int BUF_STRIDE "TWAMP_BUF_STRIDE"
    const int SEND_BATCH "TWAMP_SEND_BATCH"
    const int REFLECTOR_SEND_BATCH "TWAMP_REFLECTOR_SEND_BATCH"
    const int64_t SPIN_NS "TWAMP_SPIN_NS"
    const int64_t MAX_SLEEP_NS "TWAMP_MAX_SLEEP_NS"
    const int64_t BEHIND_NS "TWAMP_BEHIND_NS"
    const int64_t LIGHT_IDLE_NS "TWAMP_LIGHT_IDLE_NS"
    const int64_t EE_REFRESH_NS "TWAMP_EE_REFRESH_NS"
    const int S_BIT "TWAMP_S_BIT"
    const int Z_BIT "TWAMP_Z_BIT"
    const uint8_t *V4_PREFIX "TWAMP_V4_PREFIX"
