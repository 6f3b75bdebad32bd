/*
 * c_reflector: the reference TWAMP Light reflector of the benchmark (twamp.bench.cprogs).
 *
 * Minimal on purpose: stateless, unauthenticated, IPv4 or IPv6 on one UDP socket, as fast as the
 * kernel's UDP path allows. It is the yardstick our Reflector twins are measured against, so it
 * does everything they do per datagram and nothing more:
 *
 *   - recvmmsg, batch 64 (-B), MSG_WAITFORONE: sleep for the first datagram, then take whatever
 *     else is queued without sleeping again. With -b, MSG_DONTWAIT in a spin loop instead
 *     (busy poll: lowest latency, a whole core).
 *   - Receive Timestamp = the kernel's SO_TIMESTAMPNS stamp; Sender TTL from IP_RECVTTL, or
 *     IPV6_RECVHOPLIMIT over IPv6 (255 when absent, RFC 5357 §4.2.1).
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
#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "bench_common.h"

#define MAX_BATCH 1024
#define PKT_MAX 9000            /* larger datagrams are truncated and dropped as malformed */
#define SENDER_BASE 14          /* RFC 5357 §4.1.2 */
#define REFLECTOR_BASE 41       /* RFC 5357 §4.2.1 */
#define NTP_UNIX_DELTA 2208988800ULL
#define CMSG_LEN_MAX 256

/* RFC 5905 §6, RFC 4656 §4.1.2: fraction = ns * 2^32 / 1e9 (floored), never ns * 0xFFFFFFFF / 1e9. */
static inline uint64_t ntp_from_timespec(const struct timespec *ts) {
    uint64_t sec = ((uint64_t)ts->tv_sec + NTP_UNIX_DELTA) & 0xFFFFFFFFULL;
    uint64_t frac = ((uint64_t)ts->tv_nsec << 32) / 1000000000ULL;
    return (sec << 32) | frac;
}

static void usage(void) {
    fprintf(stderr,
            "usage: c_reflector [-b] [-a ADDR] [-B BATCH] [-r RCVBUF] [-m MAX_SECONDS] PORT CPU\n");
    exit(2);
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

    if (pin_cpu(cpu) != 0)
        return 1;
    catch_stop_signals();
    alarm((unsigned)max_seconds);

    struct sockaddr_storage local;
    socklen_t slen;
    if (parse_addr(addr, port, &local, &slen) != 0)
        return 2;
    /* RFC 5357 §4.2.1: reflections leave with TTL (Hop Limit) 255 */
    int fd = open_test_socket(local.ss_family, 255, 0, rcvbuf);
    if (fd < 0)
        return 1;
    if (bind(fd, (struct sockaddr *)&local, slen) != 0) {
        perror("bind");
        return 1;
    }
    slen = sizeof local;
    getsockname(fd, (struct sockaddr *)&local, &slen);
    int granted = 0;
    socklen_t glen = sizeof granted;
    getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &granted, &glen);

    static uint8_t rx[MAX_BATCH][PKT_MAX];
    static uint8_t tx[MAX_BATCH][PKT_MAX];
    static uint8_t ctl[MAX_BATCH][CMSG_LEN_MAX];
    static struct sockaddr_storage peers[MAX_BATCH];
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
           sockaddr_port(&local), granted, batch, busy ? "true" : "false");
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
                } else if (cmsg_ttl(c) >= 0) {
                    sender_ttl = cmsg_ttl(c);
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
