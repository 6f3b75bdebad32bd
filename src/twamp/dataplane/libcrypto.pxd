# The libcrypto shim (`_libcrypto.h`): mode 2/4 test-packet protection in C without the GIL.

from libc.stdint cimport uint8_t, uint32_t


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

