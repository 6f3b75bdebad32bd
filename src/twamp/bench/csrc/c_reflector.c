/*
 * c_reflector: the reference TWAMP Light reflector of the benchmark (twamp.bench.cprogs).
 *
 * Minimal on purpose: stateless, unauthenticated, IPv4 on one UDP socket, as fast as the
 * kernel's UDP path allows. It is the yardstick our Reflector twins are measured against, so it
 * does everything they do per datagram and nothing more:
 *
 *   - recvmmsg, batch 64 (-B), MSG_WAITFORONE: sleep for the first datagram, then take whatever
 *     else is queued without sleeping again. With -b, MSG_DONTWAIT in a spin loop instead
 *     (busy poll: lowest latency, a whole core).
 *   - Receive Timestamp = the kernel's SO_TIMESTAMPNS stamp; Sender TTL from IP_RECVTTL
 *     (255 when absent, RFC 5357 §4.2.1).
 *   - Reply in the 41-octet Session-Reflector layout (RFC 5357 §4.2.1):
 *     length max(received, 41), the sender's padding truncated from the end (RFC 5357 §4.2.1),
 *     Sequence Number copied from the sender (stateless TWAMP Light, RFC 5357 Appendix I).
 *   - transmit Timestamp from clock_gettime(CLOCK_REALTIME) per packet, written just before the
 *     batch goes out with sendmmsg; sent with TTL 255 (RFC 5357 §4.2.1).
 *
 * Usage: c_reflector [-b] [-a ADDR] [-B BATCH] [-r RCVBUF] [-m MAX_SECONDS] PORT CPU
 *   PORT 0 picks a free port. CPU -1 does not pin. Prints one line `ready {json}` on stdout
 *   once bound, and on SIGTERM/SIGINT (or after MAX_SECONDS, default 3600) its counters as JSON.
 *
 * Build: gcc -O2 -Wall -o c_reflector c_reflector.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/timex.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_RXQ_OVFL
#define SO_RXQ_OVFL 40
#endif

#define MAX_BATCH 1024
#define PKT_MAX 9000            /* larger datagrams are truncated and dropped as malformed */
#define SENDER_BASE 14          /* RFC 5357 §4.1.2 */
#define REFLECTOR_BASE 41       /* RFC 5357 §4.2.1 */
#define NTP_UNIX_DELTA 2208988800ULL
#define CMSG_LEN_MAX 256

static volatile sig_atomic_t stop_flag = 0;

static void on_signal(int sig) {
    (void)sig;
    stop_flag = 1;
}

/* RFC 5905 §6, RFC 4656 §4.1.2: fraction = ns * 2^32 / 1e9 (floored), never ns * 0xFFFFFFFF / 1e9. */
static inline uint64_t ntp_from_timespec(const struct timespec *ts) {
    uint64_t sec = ((uint64_t)ts->tv_sec + NTP_UNIX_DELTA) & 0xFFFFFFFFULL;
    uint64_t frac = ((uint64_t)ts->tv_nsec << 32) / 1000000000ULL;
    return (sec << 32) | frac;
}

static inline void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

/* RFC 4656 §4.1.2 (Error Estimate): the clock's own error bound, S only if the kernel says it is synchronised. */
static uint16_t error_estimate(void) {
    struct timex tx;
    memset(&tx, 0, sizeof tx);
    int state = adjtimex(&tx);
    if (state < 0)
        return 0x3FFF;
    int sync = !(tx.status & STA_UNSYNC) && state != TIME_ERROR;
    long err_us = (sync && tx.esterror > 0) ? tx.esterror : tx.maxerror;
    if (err_us < 0)
        err_us = 0;
    /* units of 2^-32 s, rounded up; then the smallest scale with multiplier <= 255 */
    unsigned __int128 units = (((unsigned __int128)err_us << 32) + 999999) / 1000000;
    unsigned scale = 0;
    while (scale < 63 && ((units + ((unsigned __int128)1 << scale) - 1) >> scale) > 255)
        scale++;
    uint64_t mult = (uint64_t)((units + ((unsigned __int128)1 << scale) - 1) >> scale);
    if (mult > 255)
        mult = 255;
    if (mult == 0)
        mult = 1;
    return (uint16_t)((sync ? 0x8000 : 0) | (scale << 8) | mult);
}

static void usage(void) {
    fprintf(stderr,
            "usage: c_reflector [-b] [-a ADDR] [-B BATCH] [-r RCVBUF] [-m MAX_SECONDS] PORT CPU\n");
    exit(2);
}

static int set_buffer(int fd, int force_opt, int opt, int size) {
    if (setsockopt(fd, SOL_SOCKET, force_opt, &size, sizeof size) == 0)
        return 0;
    return setsockopt(fd, SOL_SOCKET, opt, &size, sizeof size);
}

int main(int argc, char **argv) {
    int busy = 0, batch = 64, rcvbuf = 4 << 20;
    long max_seconds = 3600;
    const char *addr = "127.0.0.1";
    int opt;
    while ((opt = getopt(argc, argv, "ba:B:r:m:")) != -1) {
        switch (opt) {
        case 'b': busy = 1; break;
        case 'a': addr = optarg; break;
        case 'B': batch = atoi(optarg); break;
        case 'r': rcvbuf = atoi(optarg); break;
        case 'm': max_seconds = atol(optarg); break;
        default: usage();
        }
    }
    if (argc - optind != 2 || batch < 1 || batch > MAX_BATCH || max_seconds < 1)
        usage();
    int port = atoi(argv[optind]);
    int cpu = atoi(argv[optind + 1]);

    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        if (sched_setaffinity(0, sizeof set, &set) != 0) {
            perror("sched_setaffinity");
            return 1;
        }
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: a blocked recvmmsg returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);
    alarm((unsigned)max_seconds);

    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) {
        perror("socket");
        return 1;
    }
    int one = 1, ttl = 255;
    set_buffer(fd, SO_RCVBUFFORCE, SO_RCVBUF, rcvbuf);
    set_buffer(fd, SO_SNDBUFFORCE, SO_SNDBUF, rcvbuf);
    if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one) ||
        setsockopt(fd, IPPROTO_IP, IP_RECVTTL, &one, sizeof one) ||
        setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one) ||
        setsockopt(fd, IPPROTO_IP, IP_TTL, &ttl, sizeof ttl)) {
        perror("setsockopt");
        return 1;
    }
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, addr, &sin.sin_addr) != 1) {
        fprintf(stderr, "not an IPv4 address: %s\n", addr);
        return 2;
    }
    if (bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
        perror("bind");
        return 1;
    }
    socklen_t slen = sizeof sin;
    getsockname(fd, (struct sockaddr *)&sin, &slen);
    int granted = 0;
    socklen_t glen = sizeof granted;
    getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &granted, &glen);

    static uint8_t rx[MAX_BATCH][PKT_MAX];
    static uint8_t tx[MAX_BATCH][PKT_MAX];
    static uint8_t ctl[MAX_BATCH][CMSG_LEN_MAX];
    static struct sockaddr_in peers[MAX_BATCH];
    static struct iovec rx_iov[MAX_BATCH], tx_iov[MAX_BATCH];
    static struct mmsghdr rx_msgs[MAX_BATCH], tx_msgs[MAX_BATCH];
    for (int i = 0; i < batch; i++) {
        rx_iov[i].iov_base = rx[i];
        rx_iov[i].iov_len = PKT_MAX;
        tx_iov[i].iov_base = tx[i];
    }

    uint16_t ee = error_estimate();
    struct timespec ee_at;
    clock_gettime(CLOCK_MONOTONIC, &ee_at);

    printf("ready {\"port\": %d, \"rcvbuf\": %d, \"batch\": %d, \"busy_poll\": %s}\n",
           ntohs(sin.sin_port), granted, batch, busy ? "true" : "false");
    fflush(stdout);

    uint64_t received = 0, reflected = 0, malformed = 0, send_errors = 0, calls = 0;
    uint64_t no_timestamp = 0, no_ttl = 0;
    uint32_t rx_dropped = 0;
    int flags = busy ? MSG_DONTWAIT : MSG_WAITFORONE;

    while (!stop_flag) {
        for (int i = 0; i < batch; i++) {
            memset(&rx_msgs[i].msg_hdr, 0, sizeof rx_msgs[i].msg_hdr);
            rx_msgs[i].msg_hdr.msg_name = &peers[i];
            rx_msgs[i].msg_hdr.msg_namelen = sizeof peers[i];
            rx_msgs[i].msg_hdr.msg_iov = &rx_iov[i];
            rx_msgs[i].msg_hdr.msg_iovlen = 1;
            rx_msgs[i].msg_hdr.msg_control = ctl[i];
            rx_msgs[i].msg_hdr.msg_controllen = CMSG_LEN_MAX;
        }
        int n = recvmmsg(fd, rx_msgs, (unsigned)batch, flags, NULL);
        if (n <= 0) {
            if (n < 0 && errno != EAGAIN && errno != EINTR) {
                perror("recvmmsg");
                break;
            }
            continue;
        }
        calls++;
        received += (uint64_t)n;
        /* refresh the Error Estimate about once a second, outside the per-packet work */
        if ((calls & 1023) == 0) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec > ee_at.tv_sec) {
                ee = error_estimate();
                ee_at = now;
            }
        }
        int out = 0;
        for (int i = 0; i < n; i++) {
            struct msghdr *h = &rx_msgs[i].msg_hdr;
            unsigned len = rx_msgs[i].msg_len;
            if (len < SENDER_BASE || (h->msg_flags & MSG_TRUNC)) {
                malformed++;
                continue;
            }
            struct timespec rx_ts = {0, 0};
            int have_ts = 0, sender_ttl = -1;
            for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                    memcpy(&rx_ts, CMSG_DATA(c), sizeof rx_ts);
                    have_ts = 1;
                } else if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TTL) {
                    int v;
                    memcpy(&v, CMSG_DATA(c), sizeof v);
                    sender_ttl = v;
                } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL) {
                    memcpy(&rx_dropped, CMSG_DATA(c), sizeof rx_dropped);
                }
            }
            if (!have_ts) {
                no_timestamp++;
                clock_gettime(CLOCK_REALTIME, &rx_ts);
            }
            if (sender_ttl < 0) {
                no_ttl++;
                sender_ttl = 255; /* RFC 5357 §4.2.1: unknown TTL is reported as 255 */
            }
            const uint8_t *q = rx[i];
            uint8_t *r = tx[out];
            unsigned reply_len = len > REFLECTOR_BASE ? len : REFLECTOR_BASE;
            memcpy(r, q, 4);                       /* stateless: the sender's Sequence Number */
            r[12] = (uint8_t)(ee >> 8);
            r[13] = (uint8_t)ee;
            r[14] = r[15] = 0;
            put_u64(r + 16, ntp_from_timespec(&rx_ts));
            memcpy(r + 24, q, 14);                 /* Sender Sequence Number, Timestamp, EE */
            r[38] = r[39] = 0;
            r[40] = (uint8_t)sender_ttl;
            /* RFC 5357 §4.2.1: keep the lowest-numbered padding octets, drop the highest */
            if (reply_len > REFLECTOR_BASE)
                memcpy(r + REFLECTOR_BASE, q + SENDER_BASE, reply_len - REFLECTOR_BASE);
            tx_iov[out].iov_len = reply_len;
            memset(&tx_msgs[out].msg_hdr, 0, sizeof tx_msgs[out].msg_hdr);
            tx_msgs[out].msg_hdr.msg_name = &peers[i];
            tx_msgs[out].msg_hdr.msg_namelen = sizeof peers[i];
            tx_msgs[out].msg_hdr.msg_iov = &tx_iov[out];
            tx_msgs[out].msg_hdr.msg_iovlen = 1;
            /* the transmit Timestamp last, one clock read per packet (reflector-performance.md) */
            struct timespec now;
            clock_gettime(CLOCK_REALTIME, &now);
            put_u64(r + 4, ntp_from_timespec(&now));
            out++;
        }
        int done = 0;
        while (done < out) {
            int s = sendmmsg(fd, tx_msgs + done, (unsigned)(out - done), 0);
            if (s < 0) {
                if (errno == EINTR)
                    continue;
                send_errors++; /* skip the datagram that failed, keep the rest */
                done++;
                continue;
            }
            reflected += (uint64_t)s;
            done += s;
        }
    }

    printf("{\"impl\": \"c\", \"received\": %llu, \"reflected\": %llu, \"malformed\": %llu, "
           "\"send_errors\": %llu, \"no_timestamp\": %llu, \"no_ttl\": %llu, "
           "\"rx_dropped\": %u, \"recv_calls\": %llu, \"rcvbuf\": %d}\n",
           (unsigned long long)received, (unsigned long long)reflected,
           (unsigned long long)malformed, (unsigned long long)send_errors,
           (unsigned long long)no_timestamp, (unsigned long long)no_ttl, rx_dropped,
           (unsigned long long)calls, granted);
    fflush(stdout);
    close(fd);
    return 0;
}
