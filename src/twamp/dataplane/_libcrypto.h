/* TWAMP-Test packet protection (modes 2 and 4) with OpenSSL's libcrypto, loaded at run time.
 *
 * No OpenSSL headers and no link-time dependency: libcrypto is dlopen()ed once (CPython's own
 * _hashlib already maps libcrypto.so.3, so this normally finds the copy already in memory) and
 * the few functions below are resolved with dlsym(). If anything is missing, twamp_tc_load()
 * fails and the caller keeps its Python path. The AES and HMAC are OpenSSL's; this file only
 * chains ECB blocks into CBC with IV 0 and places the fields (RFC 5357 §4.1.2 and §4.2.1, RFC 4656 §4.1.2; crypto.py).
 *
 * A TwampTC belongs to one session and is used by one thread at a time (the Reflector's session
 * mutex), so its contexts need no locking of their own.
 */
#ifndef TWAMP_LIBCRYPTO_H
#define TWAMP_LIBCRYPTO_H

#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* glibc 2.34 moved dlopen/dlsym from libdl into libc under a new symbol version; binding the
 * old versions (and linking libdl, see setup.py) keeps the wheel's manylinux tag at 2_17
 * instead of 2_34, so it still installs on older distributions. */
#if defined(__GLIBC__) && defined(__x86_64__)
__asm__(".symver dlopen,dlopen@GLIBC_2.2.5");
__asm__(".symver dlsym,dlsym@GLIBC_2.2.5");
#elif defined(__GLIBC__) && defined(__aarch64__)
__asm__(".symver dlopen,dlopen@GLIBC_2.17");
__asm__(".symver dlsym,dlsym@GLIBC_2.17");
#endif

typedef const void *(*tc_md_fn)(void);
typedef const void *(*tc_cipher_fn)(void);
typedef void *(*tc_new_fn)(void);
typedef void (*tc_free_fn)(void *);
typedef int (*tc_cinit_fn)(void *, const void *, void *, const unsigned char *,
                           const unsigned char *);
typedef int (*tc_padding_fn)(void *, int);
typedef int (*tc_update_fn)(void *, unsigned char *, int *, const unsigned char *, int);
typedef int (*tc_hinit_fn)(void *, const void *, int, const void *, void *);
typedef int (*tc_hupdate_fn)(void *, const unsigned char *, size_t);
typedef int (*tc_hfinal_fn)(void *, unsigned char *, unsigned int *);
typedef int (*tc_memcmp_fn)(const void *, const void *, size_t);

static struct {
    int loaded;
    tc_md_fn sha1;
    tc_cipher_fn aes_128_ecb;
    tc_new_fn cipher_new;
    tc_free_fn cipher_free;
    tc_cinit_fn encrypt_init;
    tc_cinit_fn decrypt_init;
    tc_padding_fn set_padding;
    tc_update_fn encrypt_update;
    tc_update_fn decrypt_update;
    tc_new_fn hmac_new;
    tc_free_fn hmac_free;
    tc_hinit_fn hmac_init;
    tc_hupdate_fn hmac_update;
    tc_hfinal_fn hmac_final;
    tc_memcmp_fn memcmp_ct;
} twamp_tc_lib;

typedef struct TwampTC {
    void *enc;  /* EVP_CIPHER_CTX, AES-128-ECB encrypt, no padding */
    void *dec;  /* EVP_CIPHER_CTX, AES-128-ECB decrypt, no padding */
    void *mac;  /* HMAC_CTX keyed once with the HMAC key; each packet restarts from it */
    int sender_covered;     /* 16 (mode 2) or 32 (mode 4) */
    int reflector_covered;  /* 16 (mode 2) or 96 (mode 4) */
} TwampTC;

#define TWAMP_TC_SENDER_HMAC_AT 32
#define TWAMP_TC_REFLECTOR_HMAC_AT 96
#define TWAMP_TC_MAX_COVERED 96

/* 1 if libcrypto and every symbol were found, 0 otherwise (then nothing may be called). */
static int twamp_tc_load(void) {
    static const char *names[] = {"libcrypto.so.3", "libcrypto.so.1.1", NULL};
    void *h = NULL;
    int i;
    if (twamp_tc_lib.loaded)
        return twamp_tc_lib.loaded > 0;
    for (i = 0; names[i] != NULL && h == NULL; i++)
        h = dlopen(names[i], RTLD_NOW | RTLD_GLOBAL);
    twamp_tc_lib.loaded = -1;
    if (h == NULL)
        return 0;
#define TC_SYM(field, type, name)                                  \
    do {                                                           \
        *(void **)(&twamp_tc_lib.field) = dlsym(h, name);          \
        if (twamp_tc_lib.field == NULL)                            \
            return 0;                                              \
    } while (0)
    TC_SYM(sha1, tc_md_fn, "EVP_sha1");
    TC_SYM(aes_128_ecb, tc_cipher_fn, "EVP_aes_128_ecb");
    TC_SYM(cipher_new, tc_new_fn, "EVP_CIPHER_CTX_new");
    TC_SYM(cipher_free, tc_free_fn, "EVP_CIPHER_CTX_free");
    TC_SYM(encrypt_init, tc_cinit_fn, "EVP_EncryptInit_ex");
    TC_SYM(decrypt_init, tc_cinit_fn, "EVP_DecryptInit_ex");
    TC_SYM(set_padding, tc_padding_fn, "EVP_CIPHER_CTX_set_padding");
    TC_SYM(encrypt_update, tc_update_fn, "EVP_EncryptUpdate");
    TC_SYM(decrypt_update, tc_update_fn, "EVP_DecryptUpdate");
    TC_SYM(hmac_new, tc_new_fn, "HMAC_CTX_new");
    TC_SYM(hmac_free, tc_free_fn, "HMAC_CTX_free");
    TC_SYM(hmac_init, tc_hinit_fn, "HMAC_Init_ex");
    TC_SYM(hmac_update, tc_hupdate_fn, "HMAC_Update");
    TC_SYM(hmac_final, tc_hfinal_fn, "HMAC_Final");
    TC_SYM(memcmp_ct, tc_memcmp_fn, "CRYPTO_memcmp");
#undef TC_SYM
    twamp_tc_lib.loaded = 1;
    return 1;
}

static void twamp_tc_free(TwampTC *tc) {
    if (tc == NULL)
        return;
    if (tc->enc != NULL)
        twamp_tc_lib.cipher_free(tc->enc);
    if (tc->dec != NULL)
        twamp_tc_lib.cipher_free(tc->dec);
    if (tc->mac != NULL)
        twamp_tc_lib.hmac_free(tc->mac);
    free(tc);
}

/* The contexts of one session (keys of TestKeys: 16-octet AES, 32-octet HMAC); NULL on error. */
static TwampTC *twamp_tc_new(const unsigned char *aes_key, const unsigned char *hmac_key,
                             int hmac_len, int encrypted) {
    TwampTC *tc;
    if (twamp_tc_lib.loaded <= 0)
        return NULL;
    tc = (TwampTC *)calloc(1, sizeof(TwampTC));
    if (tc == NULL)
        return NULL;
    tc->sender_covered = encrypted ? 32 : 16;
    tc->reflector_covered = encrypted ? 96 : 16;
    tc->enc = twamp_tc_lib.cipher_new();
    tc->dec = twamp_tc_lib.cipher_new();
    tc->mac = twamp_tc_lib.hmac_new();
    if (tc->enc == NULL || tc->dec == NULL || tc->mac == NULL
        || twamp_tc_lib.encrypt_init(tc->enc, twamp_tc_lib.aes_128_ecb(), NULL, aes_key, NULL) != 1
        || twamp_tc_lib.decrypt_init(tc->dec, twamp_tc_lib.aes_128_ecb(), NULL, aes_key, NULL) != 1
        || twamp_tc_lib.set_padding(tc->enc, 0) != 1
        || twamp_tc_lib.set_padding(tc->dec, 0) != 1
        || twamp_tc_lib.hmac_init(tc->mac, hmac_key, hmac_len, twamp_tc_lib.sha1(), NULL) != 1) {
        twamp_tc_free(tc);
        return NULL;
    }
    return tc;
}

/* HMAC-SHA1 of data[0:n] truncated to 16 octets (RFC 4656 §3.2); 0 on error. */
static int twamp_tc_mac16(TwampTC *tc, const unsigned char *data, int n, unsigned char *out16) {
    unsigned char full[64];
    unsigned int len = 0;
    /* NULL key and digest: restart from the keyed state (no new key schedule). */
    if (twamp_tc_lib.hmac_init(tc->mac, NULL, 0, NULL, NULL) != 1
        || twamp_tc_lib.hmac_update(tc->mac, data, (size_t)n) != 1
        || twamp_tc_lib.hmac_final(tc->mac, full, &len) != 1 || len < 16)
        return 0;
    memcpy(out16, full, 16);
    return 1;
}

/* In place: decrypt octets 0..covered-1 (CBC, IV 0), check the HMAC at hmac_at over that
 * plaintext. 1 if it verified (covered octets now plaintext), 0 if short, forged or on error
 * (packet untouched), as TestPacketCrypto's unprotect batch helpers. */
static int twamp_tc_unprotect(TwampTC *tc, unsigned char *pkt, uint32_t size, int covered,
                              int hmac_at) {
    unsigned char plain[TWAMP_TC_MAX_COVERED];
    unsigned char mac[16];
    int outl = 0;
    int i;
    if (size < (uint32_t)hmac_at + 16)
        return 0;
    /* CBC decryption needs no chaining order: P_i = D(C_i) xor C_(i-1), C_(-1) = IV = 0. */
    if (twamp_tc_lib.decrypt_update(tc->dec, plain, &outl, pkt, covered) != 1 || outl != covered)
        return 0;
    for (i = 16; i < covered; i++)
        plain[i] ^= pkt[i - 16];
    if (!twamp_tc_mac16(tc, plain, covered, mac))
        return 0;
    if (twamp_tc_lib.memcmp_ct(mac, pkt + hmac_at, 16) != 0)
        return 0;
    memcpy(pkt, plain, (size_t)covered);
    return 1;
}

/* In place: HMAC over plaintext 0..covered-1 into hmac_at..hmac_at+15, then encrypt the covered
 * octets (CBC, IV 0). 1 on success. */
static int twamp_tc_protect(TwampTC *tc, unsigned char *pkt, int covered, int hmac_at) {
    unsigned char block[16];
    int outl = 0;
    int off;
    int i;
    if (!twamp_tc_mac16(tc, pkt, covered, pkt + hmac_at))
        return 0;
    for (off = 0; off < covered; off += 16) {
        /* CBC with IV 0 as chained ECB: C_i = E(P_i xor C_(i-1)). */
        memcpy(block, pkt + off, 16);
        if (off)
            for (i = 0; i < 16; i++)
                block[i] ^= pkt[off - 16 + i];
        if (twamp_tc_lib.encrypt_update(tc->enc, pkt + off, &outl, block, 16) != 1 || outl != 16)
            return 0;
    }
    return 1;
}

/* Sender packet (RFC 5357 §4.1.2): mode 2 block 0, mode 4 blocks 0-1; HMAC at 32-47. */
static int twamp_tc_unprotect_sender(TwampTC *tc, unsigned char *pkt, uint32_t size) {
    return twamp_tc_unprotect(tc, pkt, size, tc->sender_covered, TWAMP_TC_SENDER_HMAC_AT);
}

static int twamp_tc_protect_sender(TwampTC *tc, unsigned char *pkt) {
    return twamp_tc_protect(tc, pkt, tc->sender_covered, TWAMP_TC_SENDER_HMAC_AT);
}

/* Reflector packet (at least 112 octets): mode 2 block 0, mode 4 blocks 0-5; HMAC at 96-111. */
static int twamp_tc_unprotect_reflector(TwampTC *tc, unsigned char *pkt, uint32_t size) {
    return twamp_tc_unprotect(tc, pkt, size, tc->reflector_covered, TWAMP_TC_REFLECTOR_HMAC_AT);
}

static int twamp_tc_protect_reflector(TwampTC *tc, unsigned char *pkt) {
    return twamp_tc_protect(tc, pkt, tc->reflector_covered, TWAMP_TC_REFLECTOR_HMAC_AT);
}

#endif
