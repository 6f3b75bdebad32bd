/*
 * c_sender: the ONE load generator of the reflector benchmark (twamp.bench.cprogs).
 *
 * Every reflector under test (C reference, compiled twin, pure twin) is driven by this program,
 * so the sender is never part of what differs between them. It sends TWAMP-Test Session-Sender
 * packets at a fixed rate for a fixed time, receives the reflections on the same socket
 * (single thread, interleaved: it owns one pinned core), and prints a JSON summary on stdout.
 *
 * Packets (RFC 5357 §4.1.2): open mode 14 octets + padding (default 27: 41 in all, the size of
 * the reply); with -m auth|enc the 48-octet authenticated layout + padding (default 64), HMAC
 * over the covered plaintext then AES-CBC with IV 0 (RFC 4656 §4.1.2, RFC 5357 §4.1.2), keys given in hex. Padding is
 * pseudo-random (one pattern for the run), so the reflector's truncation can be checked.
 *
 * Pacing: packet i is due at t0 + i / rate (CLOCK_MONOTONIC). Packets leave in bursts of -B
 * (default 8; 1 = every packet on its own schedule, as latency trials need): one sendmmsg as soon
 * as the last packet of the burst is due, each packet's Timestamp read from CLOCK_REALTIME just
 * before it is filled. Bursts exist because on loopback the sending CPU carries the whole kernel
 * delivery path, so a sender costs as much per packet as a reflector, and only fewer syscalls
 * let one sender saturate a C reflector. After each burst the loop drains reflections with
 * recvmmsg(MSG_DONTWAIT); with nothing to do it spins on the clock (draining every 20 µs), or
 * sleeps in ppoll when the next burst is more than 200 µs away. How late each burst left against
 * its due time is recorded, so that a trial the sender could not keep up with is detectable
 * (lag_*, late_*, max_backlog in the JSON), as are its own receive-buffer drops (SO_RXQ_OVFL,
 * rx_overflow).
 *
 * Per reflection: kernel receive timestamp (SO_TIMESTAMPNS) = T4; T1 = Sender Timestamp echoed,
 * T2 = Receive Timestamp, T3 = reflector Timestamp (all NTP, converted exactly back to ns).
 * With -o FILE the records (seq, Sender TTL, reply TTL, length, T1, T2, T3, T4) are written as
 * packed little-endian 40-octet records for numpy; statistics are computed there, not here.
 *
 * Usage: c_sender -p PORT -r RATE -d SECONDS [-a ADDR] [-P SRCPORT] [-c CPU] [-s PADDING]
 *                 [-m open|auth|enc -K AESHEX -H HMACHEX] [-B BATCH] [-w WAIT_MS] [-t TTL]
 *                 [-R RCVBUF] [-o RAWFILE] [-D DSCP]
 * ADDR is IPv4 or IPv6 (default 127.0.0.1). DSCP is set on the socket (TOS / Traffic Class).
 * Bounded: SECONDS <= 3600, RATE x SECONDS <= 200 M packets, WAIT_MS <= 10000. Memory does not
 * grow with the trial: one bit per planned packet (25 MB at most) for duplicates, and the -o
 * records stream to the file as they arrive.
 *
 * Build: gcc -O2 -Wall -o c_sender c_sender.c            (open mode only)
 *        gcc -O2 -Wall -DHAVE_OPENSSL -o c_sender c_sender.c -lcrypto   (all modes)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>

#include "bench_common.h"

#ifdef HAVE_OPENSSL
#include <openssl/core_names.h>
#include <openssl/evp.h>
#endif

#define MAX_DURATION_S 3600.0      /* a bound on the run, not on memory (see MAX_PACKETS) */
#define MAX_WAIT_MS 10000
#define MAX_PACKETS 200000000ULL       /* the seen-bitmap stays below 25 MB */
#define RAW_CHUNK 8192                 /* records buffered before they are written to -o */
#define MAX_SEND_BATCH 64
#define RX_BATCH 64
#define PKT_MAX 9000
#define CMSG_LEN_MAX 256
#define NTP_UNIX_DELTA 2208988800LL
#define NS 1000000000LL
#define SLEEP_THRESHOLD_NS 200000LL     /* farther than this: sleep in ppoll, else spin */
#define SLEEP_EARLY_NS 60000LL          /* wake this much early: timer slack and wake-up */
#define DRAIN_EVERY_NS 20000LL          /* idle loop: look for reflections this often */

enum { MODE_OPEN = 1, MODE_AUTH = 2, MODE_ENC = 4 };

/* One reflection, as written to the raw file (little-endian, packed, 40 octets). */
struct __attribute__((packed)) record {
    uint32_t seq;        /* Sender Sequence Number echoed */
    uint8_t sender_ttl;  /* the reflector's Sender TTL field */
    uint8_t reply_ttl;   /* TTL the reflection arrived with (255 expected) */
    uint16_t length;     /* UDP payload octets of the reflection */
    int64_t t1, t2, t3, t4;
};

struct layout {          /* where the fields are: RFC 5357 §4.1.2, §4.2.1 */
    int sender_base, reflector_base, covered_tx, covered_rx;
    int r_ts, r_rx_ts, r_sseq, r_sts, r_ttl, r_hmac, s_ts, s_hmac;
};

static const struct layout OPEN = {14, 41, 0, 0, 4, 16, 24, 28, 40, -1, 4, -1};
static const struct layout AUTH = {48, 112, 16, 16, 16, 32, 48, 64, 80, 96, 16, 32};
static const struct layout ENC = {48, 112, 32, 96, 16, 32, 48, 64, 80, 96, 16, 32};

static inline int64_t now_ns(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * NS + ts.tv_nsec;
}

/* RFC 5905 §6: fraction = ns * 2^32 / 1e9, floored */
static inline uint64_t ntp_from_ns(int64_t ns) {
    uint64_t sec = (uint64_t)(ns / NS + NTP_UNIX_DELTA) & 0xFFFFFFFFULL;
    uint64_t sub = (uint64_t)(ns % NS);
    return (sec << 32) | ((sub << 32) / (uint64_t)NS);
}

/* the exact inverse (ceil), era by the RFC 4330 §3 rule as twamp.timestamps.ns_from_ntp */
static inline int64_t ns_from_ntp(uint64_t raw) {
    int64_t sec = (int64_t)(raw >> 32);
    uint64_t frac = raw & 0xFFFFFFFFULL;
    int64_t sub = (int64_t)((frac * (uint64_t)NS + 0xFFFFFFFFULL) >> 32);
    if (!(sec & 0x80000000LL))
        sec += 1LL << 32;
    return (sec - NTP_UNIX_DELTA) * NS + sub;
}

static inline uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}
static inline uint32_t get_u32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

#ifdef HAVE_OPENSSL
static int parse_hex(const char *hex, uint8_t *out, size_t n) {
    if (!hex || strlen(hex) != 2 * n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            return -1;
        out[i] = (uint8_t)v;
    }
    return 0;
}

/* RFC 4656 §4.1.2, RFC 5357 §4.1.2: HMAC-SHA1 truncated to 16 over the covered plaintext, AES-128-CBC with IV 0 per
 * packet. The key schedule and the keyed HMAC are set up once; each packet only re-inits. */
static EVP_CIPHER_CTX *enc_ctx, *dec_ctx;
static EVP_MAC_CTX *mac_ctx;
static const uint8_t zero_iv[16];

static int crypto_init(const uint8_t *aes_key, const uint8_t *hmac_key) {
    enc_ctx = EVP_CIPHER_CTX_new();
    dec_ctx = EVP_CIPHER_CTX_new();
    if (!enc_ctx || !dec_ctx ||
        !EVP_EncryptInit_ex(enc_ctx, EVP_aes_128_cbc(), NULL, aes_key, zero_iv) ||
        !EVP_DecryptInit_ex(dec_ctx, EVP_aes_128_cbc(), NULL, aes_key, zero_iv))
        return -1;
    EVP_CIPHER_CTX_set_padding(enc_ctx, 0);
    EVP_CIPHER_CTX_set_padding(dec_ctx, 0);
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!mac)
        return -1;
    mac_ctx = EVP_MAC_CTX_new(mac);
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA1", 0),
        OSSL_PARAM_construct_end(),
    };
    return mac_ctx && EVP_MAC_init(mac_ctx, hmac_key, 32, params) ? 0 : -1;
}

static void hmac16(const uint8_t *data, int len, uint8_t *out) {
    uint8_t full[EVP_MAX_MD_SIZE];
    size_t n = 0;
    EVP_MAC_init(mac_ctx, NULL, 0, NULL); /* same key: no re-keying */
    EVP_MAC_update(mac_ctx, data, (size_t)len);
    EVP_MAC_final(mac_ctx, full, &n, sizeof full);
    memcpy(out, full, 16);
}

static void protect(uint8_t *pkt, int covered, int hmac_at) {
    int outl = 0;
    hmac16(pkt, covered, pkt + hmac_at);
    EVP_EncryptInit_ex(enc_ctx, NULL, NULL, NULL, zero_iv);
    EVP_EncryptUpdate(enc_ctx, pkt, &outl, pkt, covered);
}

static int unprotect(uint8_t *pkt, int covered, int hmac_at) {
    uint8_t plain[128], mac[16];
    int outl = 0;
    EVP_DecryptInit_ex(dec_ctx, NULL, NULL, NULL, zero_iv);
    EVP_DecryptUpdate(dec_ctx, plain, &outl, pkt, covered);
    hmac16(plain, covered, mac);
    if (memcmp(mac, pkt + hmac_at, 16) != 0)
        return -1;
    memcpy(pkt, plain, (size_t)covered);
    return 0;
}
#endif

static void usage(void) {
    fprintf(stderr,
            "usage: c_sender -p PORT -r RATE -d SECONDS [-a ADDR] [-P SRCPORT] [-c CPU]\n"
            "       [-s PADDING] [-m open|auth|enc -K AESHEX -H HMACHEX] [-B BATCH]\n"
            "       [-w WAIT_MS] [-t TTL] [-R RCVBUF] [-o RAWFILE] [-D DSCP]\n");
    exit(2);
}

/* State the receive path updates. */
static struct {
    uint64_t received, duplicates, unexpected, malformed, auth_failed, padding_mismatch;
    uint64_t sender_ttl_mismatch, reply_ttl_not_255, no_timestamp, negative_residence;
    uint32_t rx_overflow;
    uint64_t raw_count;
    int raw_error;             /* errno of a failed write to -o, 0 if none */
} st;

static uint8_t *seen;          /* one bit per planned packet */
/* -o: records stream to the file in chunks as they arrive, so memory does not grow with the
 * trial's length (the bound used to be 30 s: 16 M records, 640 MB, held until the end). */
static FILE *raw_f;            /* NULL unless -o */
static struct record raw_buf[RAW_CHUNK];
static int raw_fill;

static void raw_flush(void) {
    if (raw_fill && !st.raw_error && fwrite(raw_buf, sizeof *raw_buf, (size_t)raw_fill, raw_f) !=
                                         (size_t)raw_fill)
        st.raw_error = errno ? errno : EIO;
    raw_fill = 0;
}
static uint64_t n_planned;
static const struct layout *L;
static int mode, sent_len, send_ttl;
static uint8_t padding[PKT_MAX];

static uint8_t rx_buf[RX_BATCH][PKT_MAX];
static uint8_t rx_ctl[RX_BATCH][CMSG_LEN_MAX];
static struct iovec rx_iov[RX_BATCH];
static struct mmsghdr rx_msgs[RX_BATCH];

static int drain(int fd) {
    for (int i = 0; i < RX_BATCH; i++) {
        struct msghdr *h = &rx_msgs[i].msg_hdr;
        memset(h, 0, sizeof *h);
        rx_iov[i].iov_base = rx_buf[i];
        rx_iov[i].iov_len = PKT_MAX;
        h->msg_iov = &rx_iov[i];
        h->msg_iovlen = 1;
        h->msg_control = rx_ctl[i];
        h->msg_controllen = CMSG_LEN_MAX;
    }
    int n = recvmmsg(fd, rx_msgs, RX_BATCH, MSG_DONTWAIT, NULL);
    if (n <= 0)
        return 0;
    int expect_len = sent_len > L->reflector_base ? sent_len : L->reflector_base;
    for (int i = 0; i < n; i++) {
        struct msghdr *h = &rx_msgs[i].msg_hdr;
        uint8_t *p = rx_buf[i];
        int len = (int)rx_msgs[i].msg_len;
        int64_t t4 = -1;
        int reply_ttl = -1;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                struct timespec ts;
                memcpy(&ts, CMSG_DATA(c), sizeof ts);
                t4 = (int64_t)ts.tv_sec * NS + ts.tv_nsec;
            } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL) {
                memcpy(&st.rx_overflow, CMSG_DATA(c), sizeof st.rx_overflow);
            } else if (cmsg_ttl(c) >= 0) {
                reply_ttl = cmsg_ttl(c);
            }
        }
        if (len < L->reflector_base || (h->msg_flags & MSG_TRUNC)) {
            st.malformed++;
            continue;
        }
#ifdef HAVE_OPENSSL
        if (mode != MODE_OPEN && unprotect(p, L->covered_rx, L->r_hmac) != 0) {
            st.auth_failed++;
            continue;
        }
#endif
        uint32_t seq = get_u32(p + L->r_sseq);
        if (seq >= n_planned) {
            st.unexpected++;
            continue;
        }
        if (seen[seq >> 3] & (1u << (seq & 7))) {
            st.duplicates++;
            continue;
        }
        seen[seq >> 3] |= (uint8_t)(1u << (seq & 7));
        st.received++;
        if (t4 < 0) {
            st.no_timestamp++;
            t4 = now_ns(CLOCK_REALTIME);
        }
        if (len != expect_len ||
            memcmp(p + L->reflector_base, padding, (size_t)(len - L->reflector_base)) != 0)
            st.padding_mismatch++;
        int sender_ttl = p[L->r_ttl];
        if (sender_ttl != send_ttl)
            st.sender_ttl_mismatch++;
        if (reply_ttl != 255)
            st.reply_ttl_not_255++;
        int64_t t2 = ns_from_ntp(get_u64(p + L->r_rx_ts));
        int64_t t3 = ns_from_ntp(get_u64(p + L->r_ts));
        if (t3 < t2)
            st.negative_residence++;
        if (raw_f) {
            struct record *r = &raw_buf[raw_fill++];
            r->seq = seq;
            r->sender_ttl = (uint8_t)sender_ttl;
            r->reply_ttl = (uint8_t)(reply_ttl < 0 ? 0 : reply_ttl);
            r->length = (uint16_t)len;
            r->t1 = ns_from_ntp(get_u64(p + L->r_sts));
            r->t2 = t2;
            r->t3 = t3;
            r->t4 = t4;
            st.raw_count++;
            if (raw_fill == RAW_CHUNK)
                raw_flush();
        }
    }
    return n;
}

int main(int argc, char **argv) {
    const char *addr = "127.0.0.1", *rawfile = NULL, *aes_hex = NULL, *hmac_hex = NULL;
    const char *mode_name = "open";
    int port = -1, src_port = 0, cpu = -1, pad = -1, batch = 8, wait_ms = 500, dscp = 0;
    int rcvbuf = 4 << 20;
    double rate = 0, duration = 0;
    send_ttl = 64;
    int opt;
    while ((opt = getopt(argc, argv, "a:p:P:r:d:c:s:m:K:H:B:w:t:R:o:D:")) != -1) {
        switch (opt) {
        case 'a': addr = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'P': src_port = atoi(optarg); break;
        case 'r': rate = atof(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'c': cpu = atoi(optarg); break;
        case 's': pad = atoi(optarg); break;
        case 'm': mode_name = optarg; break;
        case 'K': aes_hex = optarg; break;
        case 'H': hmac_hex = optarg; break;
        case 'B': batch = atoi(optarg); break;
        case 'w': wait_ms = atoi(optarg); break;
        case 't': send_ttl = atoi(optarg); break;
        case 'R': rcvbuf = atoi(optarg); break;
        case 'o': rawfile = optarg; break;
        case 'D': dscp = atoi(optarg); break;
        default: usage();
        }
    }
    if (port <= 0 || port > 65535 || !(rate > 0) || !(duration > 0) ||
        duration > MAX_DURATION_S || batch < 1 || batch > MAX_SEND_BATCH || wait_ms < 0 ||
        wait_ms > MAX_WAIT_MS || send_ttl < 1 || send_ttl > 255 || src_port < 0 ||
        src_port > 65535 || dscp < 0 || dscp > 63)
        usage();
    if (strcmp(mode_name, "open") == 0) {
        mode = MODE_OPEN;
        L = &OPEN;
    } else if (strcmp(mode_name, "auth") == 0) {
        mode = MODE_AUTH;
        L = &AUTH;
    } else if (strcmp(mode_name, "enc") == 0) {
        mode = MODE_ENC;
        L = &ENC;
    } else {
        usage();
    }
    if (pad < 0)
        pad = L->reflector_base - L->sender_base; /* 27 / 64: equal sizes both ways (§5.5) */
    sent_len = L->sender_base + pad;
    if (sent_len > PKT_MAX) {
        fprintf(stderr, "padding too large\n");
        return 2;
    }
    if (mode != MODE_OPEN) {
#ifdef HAVE_OPENSSL
        uint8_t aes_key[16], hmac_key[32];
        if (parse_hex(aes_hex, aes_key, 16) || parse_hex(hmac_hex, hmac_key, 32)) {
            fprintf(stderr, "-m %s needs -K (16 octets hex) and -H (32 octets hex)\n",
                    mode_name);
            return 2;
        }
        if (crypto_init(aes_key, hmac_key) != 0) {
            fprintf(stderr, "OpenSSL initialisation failed\n");
            return 1;
        }
#else
        (void)aes_hex;
        (void)hmac_hex;
        fprintf(stderr, "built without OpenSSL: only -m open is available\n");
        return 3;
#endif
    }
    n_planned = (uint64_t)llround(rate * duration);
    if (n_planned < 1 || n_planned > MAX_PACKETS) {
        fprintf(stderr, "rate x duration must give 1..%llu packets\n", MAX_PACKETS);
        return 2;
    }
    seen = calloc((size_t)(n_planned + 7) / 8, 1);
    if (!seen) {
        perror("calloc");
        return 1;
    }
    if (rawfile) {
        raw_f = fopen(rawfile, "wb");
        if (!raw_f) {
            perror(rawfile);
            return 1;
        }
    }
    if (pin_cpu(cpu) != 0)
        return 1;
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* the default 50 µs slack would blur the pacing */
    catch_stop_signals();

    struct sockaddr_storage src, dst;
    socklen_t dlen;
    if (parse_addr(addr, port, &dst, &dlen) != 0)
        return 2;
    int fd = open_test_socket(dst.ss_family, send_ttl, dscp, rcvbuf);
    if (fd < 0)
        return 1;
    /* bound to the peer's own address (loopback talks to loopback), connected: only the
     * reflector's datagrams reach this socket */
    memcpy(&src, &dst, sizeof src);
    if (src.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&src)->sin6_port = htons((uint16_t)src_port);
    else
        ((struct sockaddr_in *)&src)->sin_port = htons((uint16_t)src_port);
    if (bind(fd, (struct sockaddr *)&src, dlen) != 0 ||
        connect(fd, (struct sockaddr *)&dst, dlen) != 0) {
        perror("bind/connect");
        return 1;
    }
    socklen_t slen = sizeof src;
    getsockname(fd, (struct sockaddr *)&src, &slen);
    int granted = 0;
    socklen_t glen = sizeof granted;
    getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &granted, &glen);

    /* RFC 5357 §4.1.2: padding SHOULD be pseudo-random (xorshift64, fixed seed: reproducible) */
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    for (int i = 0; i < PKT_MAX; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        padding[i] = (uint8_t)(x >> 32);
    }
    static uint8_t tx_buf[MAX_SEND_BATCH][PKT_MAX];
    static struct iovec tx_iov[MAX_SEND_BATCH];
    static struct mmsghdr tx_msgs[MAX_SEND_BATCH];
    for (int i = 0; i < batch; i++) {
        memset(tx_buf[i], 0, (size_t)L->sender_base);
        memcpy(tx_buf[i] + L->sender_base, padding, (size_t)pad);
        tx_iov[i].iov_base = tx_buf[i];
        tx_iov[i].iov_len = (size_t)sent_len;
        memset(&tx_msgs[i], 0, sizeof tx_msgs[i]);
        tx_msgs[i].msg_hdr.msg_iov = &tx_iov[i];
        tx_msgs[i].msg_hdr.msg_iovlen = 1;
    }
    uint16_t ee = error_estimate();

    const double period_ns = 1e9 / rate;
    uint64_t sent = 0, send_errors = 0, late_100us = 0, late_1ms = 0, max_backlog = 0;
    uint64_t send_calls = 0, sleeps = 0;
    int64_t lag_max = 0;
    double lag_sum = 0;
    int64_t t0 = now_ns(CLOCK_MONOTONIC) + 10 * 1000000LL;
    int64_t first_send = 0, last_send = 0, last_drain = 0;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};

    while (sent < n_planned && !stop_flag) {
        int64_t now = now_ns(CLOCK_MONOTONIC);
        uint64_t due = 0;
        if (now >= t0) {
            due = (uint64_t)((double)(now - t0) / period_ns) + 1;
            if (due > n_planned)
                due = n_planned;
        }
        uint64_t left = n_planned - sent;
        uint64_t burst = left < (uint64_t)batch ? left : (uint64_t)batch;
        if (due >= sent + burst) {
            uint64_t backlog = due - sent;
            if (backlog > max_backlog)
                max_backlog = backlog;
            int k = (int)burst;
            /* Lag against the burst's own due time (its last packet's): the wait for a burst to
             * fill is by design, only falling behind that is the sender's failure. */
            int64_t burst_due = t0 + (int64_t)((double)(sent + burst - 1) * period_ns);
            for (int j = 0; j < k; j++) {
                uint64_t seq = sent + (uint64_t)j;
                uint8_t *p = tx_buf[j];
                int64_t lag = now_ns(CLOCK_MONOTONIC) - burst_due;
                if (lag > lag_max)
                    lag_max = lag;
                lag_sum += (double)lag;
                late_100us += lag > 100000;
                late_1ms += lag > 1000000;
                memset(p, 0, (size_t)L->sender_base);
                p[0] = (uint8_t)(seq >> 24);
                p[1] = (uint8_t)(seq >> 16);
                p[2] = (uint8_t)(seq >> 8);
                p[3] = (uint8_t)seq;
                put_u64(p + L->s_ts, ntp_from_ns(now_ns(CLOCK_REALTIME)));
                p[L->s_ts + 8] = (uint8_t)(ee >> 8);
                p[L->s_ts + 9] = (uint8_t)ee;
#ifdef HAVE_OPENSSL
                if (mode != MODE_OPEN)
                    protect(p, L->covered_tx, L->s_hmac);
#endif
            }
            int done = 0;
            while (done < k) {
                int s = sendmmsg(fd, tx_msgs + done, (unsigned)(k - done), 0);
                if (s < 0) {
                    if (errno == EINTR && !stop_flag)
                        continue;
                    send_errors++;
                    done++;
                    continue;
                }
                done += s;
            }
            send_calls++;
            last_send = now_ns(CLOCK_MONOTONIC);
            if (sent == 0)
                first_send = now;
            sent += (uint64_t)k;
            drain(fd);
            last_drain = now_ns(CLOCK_MONOTONIC);
            continue;
        }
        /* Idle: spin on the clock in user space, draining only every DRAIN_EVERY_NS. T4 is the
         * kernel's arrival stamp, so a reflection waiting in the queue loses no accuracy, and
         * empty recvmmsg calls would only take CPU from the sender's share of the delivery. */
        if (now - last_drain >= DRAIN_EVERY_NS) {
            last_drain = now;
            if (drain(fd) > 0)
                continue;
        }
        int64_t next = t0 + (int64_t)((double)(sent + burst - 1) * period_ns);
        int64_t ahead = next - now_ns(CLOCK_MONOTONIC);
        if (ahead > SLEEP_THRESHOLD_NS) {
            struct timespec to = {0, 0};
            int64_t s = ahead - SLEEP_EARLY_NS;
            to.tv_sec = s / NS;
            to.tv_nsec = s % NS;
            ppoll(&pfd, 1, &to, NULL);
            sleeps++;
        }
    }
    /* collect the stragglers: until all are back or WAIT_MS after the last send */
    int64_t deadline = now_ns(CLOCK_MONOTONIC) + (int64_t)wait_ms * 1000000LL;
    while (st.received + st.malformed + st.auth_failed < sent && !stop_flag) {
        int64_t left = deadline - now_ns(CLOCK_MONOTONIC);
        if (left <= 0)
            break;
        if (drain(fd) > 0)
            continue;
        struct timespec to = {left / NS, left % NS};
        ppoll(&pfd, 1, &to, NULL);
    }

    if (raw_f) {
        raw_flush();
        if (fclose(raw_f) != 0 && !st.raw_error)
            st.raw_error = errno ? errno : EIO;
        if (st.raw_error) {
            fprintf(stderr, "%s: %s\n", rawfile, strerror(st.raw_error));
            return 1;
        }
    }
    double elapsed = (double)(last_send - first_send) / 1e9;
    /* sent - 1 intervals elapse between the first and the last send */
    double send_rate = sent > 1 && elapsed > 0 ? (double)(sent - 1) / elapsed : 0.0;
    double loss = sent ? (double)(sent - st.received) / (double)sent : 0.0;
    printf("{\"impl\": \"c_sender\", \"mode\": \"%s\", \"rate_target\": %.1f, "
           "\"duration_s\": %.3f, \"planned\": %llu, \"sent\": %llu, \"send_errors\": %llu, "
           "\"received\": %llu, \"loss\": %.6g, \"duplicates\": %llu, \"unexpected\": %llu, "
           "\"malformed\": %llu, \"auth_failed\": %llu, \"padding_mismatch\": %llu, "
           "\"sender_ttl\": %d, \"sender_ttl_mismatch\": %llu, \"reply_ttl_not_255\": %llu, "
           "\"negative_residence\": %llu, \"no_timestamp\": %llu, "
           "\"send_rate\": %.1f, \"send_elapsed_s\": %.6f, \"lag_max_ns\": %lld, "
           "\"lag_mean_ns\": %.0f, \"late_100us\": %llu, \"late_1ms\": %llu, "
           "\"max_backlog\": %llu, \"send_calls\": %llu, \"sleeps\": %llu, "
           "\"rx_overflow\": %u, \"rcvbuf\": %d, \"batch\": %d, \"length\": %d, "
           "\"src_port\": %d, \"raw_records\": %llu, \"interrupted\": %s}\n",
           mode_name, rate, duration, (unsigned long long)n_planned, (unsigned long long)sent,
           (unsigned long long)send_errors, (unsigned long long)st.received, loss,
           (unsigned long long)st.duplicates, (unsigned long long)st.unexpected,
           (unsigned long long)st.malformed, (unsigned long long)st.auth_failed,
           (unsigned long long)st.padding_mismatch, send_ttl,
           (unsigned long long)st.sender_ttl_mismatch, (unsigned long long)st.reply_ttl_not_255,
           (unsigned long long)st.negative_residence, (unsigned long long)st.no_timestamp,
           send_rate, elapsed, (long long)lag_max, sent ? lag_sum / (double)sent : 0.0,
           (unsigned long long)late_100us, (unsigned long long)late_1ms,
           (unsigned long long)max_backlog, (unsigned long long)send_calls,
           (unsigned long long)sleeps, st.rx_overflow, granted, batch, sent_len,
           sockaddr_port(&src), (unsigned long long)st.raw_count,
           stop_flag ? "true" : "false");
    fflush(stdout);
    close(fd);
    return 0;
}
