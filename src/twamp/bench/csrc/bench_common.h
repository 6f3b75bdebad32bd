/*
 * bench_common.h: what c_reflector.c and c_sender.c share (twamp.bench.cprogs).
 *
 * Signals, the Error Estimate, the NTP octets, CPU pinning, and the socket setup of both: one
 * UDP socket of the address's family (IPv4 or IPv6), big buffers, kernel receive timestamps
 * (SO_TIMESTAMPNS), its own drop counter (SO_RXQ_OVFL), the received TTL / Hop Limit, and the
 * TTL / Hop Limit and DSCP it sends with. Everything is static: each program is one
 * translation unit. cprogs.build hashes this file with the program's source, so a change here
 * rebuilds both.
 */
#ifndef TWAMP_BENCH_COMMON_H
#define TWAMP_BENCH_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* CPU_SET, recvmmsg: before any system header */
#endif
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/timex.h>
#include <unistd.h>

#ifndef SO_RXQ_OVFL
#define SO_RXQ_OVFL 40
#endif

static volatile sig_atomic_t stop_flag = 0;

static void on_signal(int sig) {
    (void)sig;
    stop_flag = 1;
}

/* SIGTERM and SIGINT (and SIGALRM, for a time bound) set stop_flag. No SA_RESTART: a blocked
 * recvmmsg or ppoll returns EINTR, and the loop sees the flag. */
static void catch_stop_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);
}

static inline void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

/* RFC 4656 §4.1.2 (Error Estimate): the clock's own error bound, S only if the kernel says it
 * is synchronised. */
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

/* Pin to one CPU; -1 leaves the affinity alone. 0 on success. */
static int pin_cpu(int cpu) {
    if (cpu < 0)
        return 0;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        perror("sched_setaffinity");
        return -1;
    }
    return 0;
}

static int set_buffer(int fd, int force_opt, int opt, int size) {
    if (setsockopt(fd, SOL_SOCKET, force_opt, &size, sizeof size) == 0)
        return 0;
    return setsockopt(fd, SOL_SOCKET, opt, &size, sizeof size);
}

/* ADDR (IPv4 dotted quad or IPv6 text, e.g. ::1) and PORT -> *out; 0, or -1 if not an
 * address of either family. */
static int parse_addr(const char *addr, int port, struct sockaddr_storage *out, socklen_t *len) {
    memset(out, 0, sizeof *out);
    struct sockaddr_in *v4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, addr, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *len = sizeof *v4;
        return 0;
    }
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET6, addr, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        *len = sizeof *v6;
        return 0;
    }
    fprintf(stderr, "not an IPv4 or IPv6 address: %s\n", addr);
    return -1;
}

static int sockaddr_port(const struct sockaddr_storage *ss) {
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

/* The UDP socket both programs measure with (see the header comment). DSCP is converted to the
 * TOS / Traffic Class octet here, at the socket, and nowhere else (twamp.inet: DSCP << 2, ECN
 * Not-ECT). Returns the descriptor, or -1 after perror. */
static int open_test_socket(int family, int ttl, int dscp, int bufsize) {
    int fd = socket(family, SOCK_DGRAM, 0);
    if (fd < 0) {
        perror("socket");
        return -1;
    }
    int one = 1, tos = dscp << 2;
    set_buffer(fd, SO_RCVBUFFORCE, SO_RCVBUF, bufsize);
    set_buffer(fd, SO_SNDBUFFORCE, SO_SNDBUF, bufsize);
    int bad = setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one) ||
              setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one);
    if (family == AF_INET6) {
        /* RFC 5357 §4.2.1: the Hop Limit stands for the TTL over IPv6 */
        bad = bad || setsockopt(fd, IPPROTO_IPV6, IPV6_RECVHOPLIMIT, &one, sizeof one) ||
              setsockopt(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &ttl, sizeof ttl) ||
              setsockopt(fd, IPPROTO_IPV6, IPV6_TCLASS, &tos, sizeof tos);
    } else {
        bad = bad || setsockopt(fd, IPPROTO_IP, IP_RECVTTL, &one, sizeof one) ||
              setsockopt(fd, IPPROTO_IP, IP_TTL, &ttl, sizeof ttl) ||
              setsockopt(fd, IPPROTO_IP, IP_TOS, &tos, sizeof tos);
    }
    if (bad) {
        perror("setsockopt");
        close(fd);
        return -1;
    }
    return fd;
}

/* The received TTL (IPv4) or Hop Limit (IPv6) if this control message carries it, else -1. */
static inline int cmsg_ttl(const struct cmsghdr *c) {
    int v;
    if ((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TTL) ||
        (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_HOPLIMIT)) {
        memcpy(&v, CMSG_DATA(c), sizeof v);
        return v;
    }
    return -1;
}

#endif
