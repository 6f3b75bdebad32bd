"""twamp.crypto: known answers from the standards, control streams, test-packet protection.

Known answers are the published vectors (RFC 6070 PBKDF2, RFC 2202 / RFC 4231 HMAC, FIPS-197 and
NIST SP 800-38A AES), truncated where TWAMP truncates. Where TWAMP chains AES-CBC with IV 0 the
tests feed ``P_0 = SP 800-38A P_0 xor SP 800-38A IV`` so that the published CBC ciphertext applies
unchanged. Reference HMACs in the structural tests come from the stdlib, never from twamp.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twamp.constants import AcceptCode, TestMode
from twamp.crypto import (
    _ROUNDS_MIN_BATCH,
    ControlCipher,
    TestKeys,
    TestPacketCrypto,
    check_token,
    decrypt_token,
    derive_key,
    derive_test_keys,
    encrypt_token,
    hmac16,
    stamp_hmac,
)
from twamp.errors import DecodeError, IntegrityError

H = bytes.fromhex

# NIST SP 800-38A F.1.1 / F.2.1 (AES-128).
SP_KEY = H("2b7e151628aed2a6abf7158809cf4f3c")
SP_IV = H("000102030405060708090a0b0c0d0e0f")
SP_PLAIN = [
    H("6bc1bee22e409f96e93d7e117393172a"),
    H("ae2d8a571e03ac9c9eb76fac45af8e51"),
    H("30c81c46a35ce411e5fbc1191a0a52ef"),
    H("f69f2445df4f9b17ad2b417be66c3710"),
]
SP_CBC = [
    H("7649abac8119b246cee98e9b12e9197d"),
    H("5086cb9b507219ee95db113a917678b2"),
    H("73bed6b8e3c1743b7116e69e22229516"),
    H("3ff1caa1681fac09120eca307586e1a7"),
]
SP_ECB = [
    H("3ad77bb40d7a3660a89ecaf32466ef97"),
    H("f5d3d58503b9699de785895a96fdbaaf"),
    H("43b1cd7f598ece23881b00e3ed030688"),
    H("7b0c785e27e8ad3f8223207104725dd4"),
]
# SP 800-38A P_0 xor IV: CBC with IV 0 over this block gives SP_CBC[0].
SP_P0_IV0 = H("6bc0bce12a459991e134741a7f9e1925")


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def ref_hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha1).digest()[:16]


# -- PBKDF2, HMAC -------------------------------------------------------------------------------


# RFC 6070 §2 (PBKDF2-HMAC-SHA1), DK truncated to TWAMP's 16 octets. Truncation is exact because
# PBKDF2's first output block does not depend on dkLen. c = 16777216 is left out for time.
@pytest.mark.parametrize(
    ("password", "salt", "count", "dk16"),
    [
        (b"password", b"salt", 1, "0c60c80f961f0e71f3a9b524af601206"),
        (b"password", b"salt", 2, "ea6c014dc72d6f8ccd1ed92ace1d41f0"),
        (b"password", b"salt", 4096, "4b007901b765489abead49d926f721d0"),
        (
            b"passwordPASSWORDpassword",
            b"saltSALTsaltSALTsaltSALTsaltSALTsalt",
            4096,
            "3d2eec4fe41c849b80c8d83662c0e44a",
        ),
        (b"pass\0word", b"sa\0lt", 4096, "56fa6aa75548099dcc37d7f03425e0c3"),
    ],
)
def test_derive_key_rfc6070(password: bytes, salt: bytes, count: int, dk16: str) -> None:
    assert derive_key(password, salt, count) == H(dk16)


def test_derive_key_rejects_zero_count() -> None:
    with pytest.raises(ValueError, match="count"):
        derive_key(b"secret", bytes(16), 0)


# RFC 2202 §3 (HMAC-SHA1) test cases 1-7, truncated to 16 octets.
@pytest.mark.parametrize(
    ("key", "data", "digest"),
    [
        (b"\x0b" * 20, b"Hi There", "b617318655057264e28bc0b6fb378c8ef146be00"),
        (b"Jefe", b"what do ya want for nothing?", "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
        (b"\xaa" * 20, b"\xdd" * 50, "125d7342b9ac11cd91a39af48aa17b4f63f175d3"),
        (bytes(range(1, 26)), b"\xcd" * 50, "4c9007f4026250c6bc8414f9bf50c86c2d7235da"),
        (b"\x0c" * 20, b"Test With Truncation", "4c1a03424b55e07fe7f27be1d58bb9324a9a5a04"),
        (
            b"\xaa" * 80,
            b"Test Using Larger Than Block-Size Key - Hash Key First",
            "aa4ae5e15272d00e95705637ce8a3b55ed402112",
        ),
        (
            b"\xaa" * 80,
            b"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data",
            "e8e99d0f45237d786d6bbaa7965c7808bbff1a91",
        ),
    ],
)
def test_hmac16_rfc2202(key: bytes, data: bytes, digest: str) -> None:
    assert hmac16(key, data) == H(digest)[:16]


# RFC 4231 §4 (HMAC-SHA-256) test cases 1, 2, 3 and 6, truncated to 16 octets (RFC 8762 §4.4).
@pytest.mark.parametrize(
    ("key", "data", "digest"),
    [
        (
            b"\x0b" * 20,
            b"Hi There",
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        ),
        (
            b"Jefe",
            b"what do ya want for nothing?",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        ),
        (
            b"\xaa" * 20,
            b"\xdd" * 50,
            "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
        ),
        (
            b"\xaa" * 131,
            b"Test Using Larger Than Block-Size Key - Hash Key First",
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        ),
    ],
)
def test_stamp_hmac_rfc4231(key: bytes, data: bytes, digest: str) -> None:
    assert stamp_hmac(key, data) == H(digest)[:16]


# -- Token ------------------------------------------------------------------------------------


def test_token_first_block_is_fips197_aes() -> None:
    # FIPS-197 Appendix C.1: with IV 0 the first CBC block is plain AES.
    dk = H("000102030405060708090a0b0c0d0e0f")
    challenge = H("00112233445566778899aabbccddeeff")
    token = encrypt_token(dk, challenge, bytes(16), bytes(32))
    assert len(token) == 64
    assert token[:16] == H("69c4e0d86a7b0430d8cdb78070b4c55a")


def test_token_is_cbc_iv0_sp800_38a() -> None:
    token = encrypt_token(SP_KEY, SP_P0_IV0, SP_PLAIN[1], SP_PLAIN[2] + SP_PLAIN[3])
    assert token == b"".join(SP_CBC)
    assert decrypt_token(SP_KEY, token) == (SP_P0_IV0, SP_PLAIN[1], SP_PLAIN[2] + SP_PLAIN[3])


def test_token_round_trip_and_check() -> None:
    rng = random.Random(5357)
    dk = derive_key(b"anchorsecret", rng.randbytes(16), 1024)
    challenge, aes_key, hmac_key = rng.randbytes(16), rng.randbytes(16), rng.randbytes(32)
    token = encrypt_token(dk, challenge, aes_key, hmac_key)
    assert token[:16] != challenge
    assert decrypt_token(dk, token) == (challenge, aes_key, hmac_key)
    assert check_token(dk, token, challenge) == (aes_key, hmac_key)


def test_token_wrong_challenge_fails_with_accept_failure() -> None:
    dk = derive_key(b"anchorsecret", bytes(16), 1024)
    token = encrypt_token(dk, b"C" * 16, b"A" * 16, b"H" * 32)
    with pytest.raises(IntegrityError) as info:
        check_token(dk, token, b"D" * 16)
    assert info.value.accept == AcceptCode.FAILURE
    assert info.value.field == "Token"
    assert info.value.message_type == "Set-Up-Response"


def test_token_wrong_passphrase_fails() -> None:
    salt = bytes(range(16))
    token = encrypt_token(derive_key(b"right", salt, 1024), b"C" * 16, b"A" * 16, b"H" * 32)
    with pytest.raises(IntegrityError):
        check_token(derive_key(b"wrong", salt, 1024), token, b"C" * 16)


@pytest.mark.parametrize(
    ("dk", "challenge", "aes_key", "hmac_key"),
    [
        (bytes(15), bytes(16), bytes(16), bytes(32)),
        (bytes(16), bytes(17), bytes(16), bytes(32)),
        (bytes(16), bytes(16), bytes(32), bytes(32)),
        (bytes(16), bytes(16), bytes(16), bytes(16)),
    ],
)
def test_token_rejects_wrong_lengths(
    dk: bytes, challenge: bytes, aes_key: bytes, hmac_key: bytes
) -> None:
    with pytest.raises(ValueError):
        encrypt_token(dk, challenge, aes_key, hmac_key)


def test_decrypt_token_rejects_wrong_length() -> None:
    with pytest.raises(ValueError):
        decrypt_token(bytes(16), bytes(48))


# -- ControlCipher: CBC stream ----------------------------------------------------------------


def _control(encrypt: bool, key: bytes = SP_KEY, iv: bytes = SP_IV) -> ControlCipher:
    return ControlCipher(key, iv, bytes(range(32)), encrypt=encrypt)


def test_control_crypt_sp800_38a_one_call() -> None:
    assert _control(True).crypt(b"".join(SP_PLAIN)) == b"".join(SP_CBC)
    assert _control(False).crypt(b"".join(SP_CBC)) == b"".join(SP_PLAIN)


def test_control_crypt_chains_across_calls() -> None:
    # RFC 5357 §3.4: one CBC stream per direction, so per-message calls give the same bytes.
    tx, rx = _control(True), _control(False)
    assert [tx.crypt(p) for p in SP_PLAIN] == SP_CBC
    assert rx.crypt(SP_CBC[0]) == SP_PLAIN[0]
    assert rx.crypt(SP_CBC[1] + SP_CBC[2]) == SP_PLAIN[1] + SP_PLAIN[2]
    assert rx.crypt(SP_CBC[3]) == SP_PLAIN[3]


def test_control_two_messages_in_two_calls_equal_one_call() -> None:
    rng = random.Random(1)
    first, second = rng.randbytes(112), rng.randbytes(48)
    key, iv = rng.randbytes(16), rng.randbytes(16)
    whole = _control(True, key, iv).crypt(first + second)
    split = _control(True, key, iv)
    assert split.crypt(first) + split.crypt(second) == whole
    # A fresh context per message (the classic bug) would restart the chain at the IV:
    assert _control(True, key, iv).crypt(second) != whole[112:]
    rx = _control(False, key, iv)
    assert rx.crypt(whole[:112]) == first
    assert rx.crypt(whole[112:]) == second


def test_control_crypt_rejects_partial_block() -> None:
    with pytest.raises(ValueError):
        _control(True).crypt(bytes(15))
    with pytest.raises(ValueError):
        _control(False).crypt(bytes(33))


@pytest.mark.parametrize(
    ("aes_key", "iv", "hmac_key"),
    [(bytes(15), bytes(16), bytes(32)), (bytes(16), bytes(8), bytes(32)), (bytes(16),) * 3],
)
def test_control_rejects_wrong_key_lengths(aes_key: bytes, iv: bytes, hmac_key: bytes) -> None:
    with pytest.raises(ValueError):
        ControlCipher(aes_key, iv, hmac_key, encrypt=True)


# -- ControlCipher: running HMAC, seal, verify ----------------------------------------------------

AES_KEY = bytes(range(100, 116))
HMAC_KEY = bytes(range(200, 232))
IV = bytes(range(16))


def _pair() -> tuple[ControlCipher, ControlCipher]:
    return (
        ControlCipher(AES_KEY, IV, HMAC_KEY, encrypt=True),
        ControlCipher(AES_KEY, IV, HMAC_KEY, encrypt=False),
    )


def test_seal_matches_reference_construction() -> None:
    # RFC 5357 §3.4: HMAC over the plaintext before the HMAC field, written in, all encrypted.
    tx, _ = _pair()
    request = bytes([5, 4]) + bytes(range(94)) + b"\xee" * 16
    sealed = tx.seal(request)
    mac = ref_hmac(HMAC_KEY, request[:96])
    ref = ControlCipher(AES_KEY, IV, HMAC_KEY, encrypt=True).crypt(request[:96] + mac)
    assert sealed == ref
    assert len(sealed) == 112


def test_seal_verify_round_trip_over_several_messages() -> None:
    tx, rx = _pair()
    messages = [bytes([5, 4]) + bytes(110), bytes([2]) + bytes(31), bytes([3, 0, 0, 0, 0, 0, 0, 1])]
    messages[2] += bytes(32 - len(messages[2]))
    for msg in messages:
        wire = tx.seal(msg)
        assert wire[: len(msg) - 16] != msg[:-16]
        plain = rx.crypt(wire[:16]) + rx.crypt(wire[16:])  # first block alone, as a reader does
        assert plain[:-16] == msg[:-16]
        assert plain[-16:] == ref_hmac(HMAC_KEY, msg[:-16])  # each client HMAC covers one message
        rx.verify(plain)


def test_verify_rejects_tampered_ciphertext() -> None:
    tx, rx = _pair()
    wire = bytearray(tx.seal(bytes([2]) + bytes(31)))
    wire[3] ^= 0x01
    with pytest.raises(IntegrityError) as info:
        rx.verify(rx.crypt(bytes(wire)), message_type="Start-Sessions")
    assert info.value.message_type == "Start-Sessions"
    assert info.value.field == "HMAC"
    assert "Start-Sessions" in str(info.value)


def test_verify_rejects_tampered_hmac() -> None:
    tx, rx = _pair()
    plain = bytearray(rx.crypt(tx.seal(bytes([2]) + bytes(31))))
    plain[-1] ^= 0x80
    with pytest.raises(IntegrityError):
        rx.verify(bytes(plain))


def test_verify_rejects_replayed_message_once_chain_moved_on() -> None:
    # The running HMAC restarts per message but a replayed ciphertext decrypts to garbage in
    # block 0 because the CBC chain has moved on.
    tx, rx = _pair()
    first = tx.seal(bytes([2]) + bytes(31))
    rx.verify(rx.crypt(first))
    with pytest.raises(IntegrityError):
        rx.verify(rx.crypt(first))


def test_seal_needs_sending_direction_and_whole_blocks() -> None:
    tx, rx = _pair()
    with pytest.raises(ValueError):
        rx.seal(bytes(32))
    with pytest.raises(ValueError):
        tx.seal(bytes(31))
    with pytest.raises(ValueError):
        tx.seal(b"")
    with pytest.raises(ValueError):
        rx.verify(bytes(40))


def test_running_hmac_covers_server_start_block_and_first_accept_session() -> None:
    """Spec §4.4: the server's first HMAC covers Server-Start 32-47 + Accept-Session 0-31."""
    start_block = bytes.fromhex("eeae924017577100") + bytes(8)  # Start-Time + MBZ
    accept = bytes([0, 0, 0x49, 0x93]) + bytes(range(16)) + bytes(12) + bytes(16)
    start_ack = bytes(32)
    server, client = _pair()

    server.mac_update(start_block)
    wire = server.crypt(start_block) + server.seal(accept) + server.seal(start_ack)
    assert len(wire) == 16 + 48 + 32

    plain = client.crypt(wire)
    assert plain[:16] == start_block
    assert plain[16 + 32 : 16 + 48] == ref_hmac(HMAC_KEY, start_block + accept[:32])
    assert plain[16 + 32 : 16 + 48] != ref_hmac(HMAC_KEY, accept[:32])
    assert plain[-16:] == ref_hmac(HMAC_KEY, start_ack[:16])  # later HMACs: own message only

    client.mac_update(plain[:16])
    client.verify(plain[16:64], message_type="Accept-Session")
    client.verify(plain[64:], message_type="Start-Ack")


def test_running_hmac_fails_without_server_start_block() -> None:
    start_block = bytes(16)
    server, client = _pair()
    server.mac_update(start_block)
    plain = client.crypt(server.crypt(start_block) + server.seal(bytes(48)))
    with pytest.raises(IntegrityError):
        client.verify(plain[16:])  # the client forgot mac_update(Server-Start 32-47)


def test_mac_digest_restarts() -> None:
    tx, _ = _pair()
    tx.mac_update(b"abc")
    assert tx.mac_digest() == ref_hmac(HMAC_KEY, b"abc")
    assert tx.mac_digest() == ref_hmac(HMAC_KEY, b"")
    tx.mac_update(b"d")
    tx.mac_update(b"ef")
    assert tx.mac_digest() == ref_hmac(HMAC_KEY, b"def")


# -- test keys --------------------------------------------------------------------------------


def test_derive_test_keys_sp800_38a() -> None:
    # test aes = AES-ECB(SID, aes_key); test hmac = AES-CBC(SID, IV 0, hmac_key) (RFC 4656 §4.1.2)
    keys = derive_test_keys(SP_KEY, SP_PLAIN[0], SP_P0_IV0 + SP_PLAIN[1])
    assert keys.aes_key == SP_ECB[0]
    assert keys.hmac_key == SP_CBC[0] + SP_CBC[1]


def test_derive_test_keys_depend_on_sid() -> None:
    a = derive_test_keys(bytes(16), AES_KEY, HMAC_KEY)
    b = derive_test_keys(bytes(15) + b"\x01", AES_KEY, HMAC_KEY)
    assert a.aes_key != b.aes_key
    assert a.hmac_key != b.hmac_key
    assert len(a.aes_key) == 16
    assert len(a.hmac_key) == 32


def test_test_keys_repr_hides_keys() -> None:
    keys = TestKeys(aes_key=b"\x11" * 16, hmac_key=b"\x22" * 32)
    assert "11" not in repr(keys)
    assert "x11" not in repr(keys)


def test_derive_test_keys_rejects_wrong_lengths() -> None:
    with pytest.raises(ValueError):
        derive_test_keys(bytes(8), AES_KEY, HMAC_KEY)


# -- test packets: known answers ----------------------------------------------------------------

KAT_HMAC_KEY = bytes(range(32, 64))
KAT_KEYS = TestKeys(aes_key=SP_KEY, hmac_key=KAT_HMAC_KEY)


def test_authenticated_sender_kat() -> None:
    plain = SP_PLAIN[0] + bytes(range(16)) + b"\xaa" * 16 + b"PAD"
    pkt = bytearray(plain)
    TestPacketCrypto(KAT_KEYS, TestMode.AUTHENTICATED).protect_sender(pkt)
    assert pkt[:16] == SP_ECB[0]  # block 0 ECB
    assert pkt[16:32] == plain[16:32]  # timestamps clear
    assert pkt[32:48] == ref_hmac(KAT_HMAC_KEY, plain[:16])
    assert pkt[48:] == b"PAD"


def test_encrypted_sender_kat() -> None:
    plain = SP_P0_IV0 + SP_PLAIN[1] + bytes(16) + bytes(range(64))
    pkt = bytearray(plain)
    TestPacketCrypto(KAT_KEYS, TestMode.ENCRYPTED).protect_sender(pkt)
    assert pkt[:32] == SP_CBC[0] + SP_CBC[1]  # CBC, IV 0, fresh per packet
    assert pkt[32:48] == ref_hmac(KAT_HMAC_KEY, plain[:32])
    assert pkt[48:] == plain[48:]


def test_encrypted_reflector_kat() -> None:
    # Six CBC blocks with IV 0: SP 800-38A's four, then two chosen so E() sees SP_PLAIN[0..1].
    blocks = [SP_P0_IV0, *SP_PLAIN[1:], xor(SP_CBC[3], SP_PLAIN[0])]
    blocks.append(xor(SP_ECB[0], SP_PLAIN[1]))
    plain = b"".join(blocks) + bytes(16) + b"padding!"
    pkt = bytearray(plain)
    crypto = TestPacketCrypto(KAT_KEYS, TestMode.ENCRYPTED)
    crypto.protect_reflector(pkt)
    assert pkt[:96] == b"".join(SP_CBC) + SP_ECB[0] + SP_ECB[1]
    assert pkt[96:112] == ref_hmac(KAT_HMAC_KEY, plain[:96])
    assert pkt[112:] == b"padding!"
    crypto.unprotect_reflector(pkt)
    assert pkt == plain[:96] + ref_hmac(KAT_HMAC_KEY, plain[:96]) + b"padding!"


def test_authenticated_reflector_kat() -> None:
    plain = SP_PLAIN[1] + bytes(range(80)) + bytes(16)
    pkt = bytearray(plain)
    TestPacketCrypto(KAT_KEYS, TestMode.AUTHENTICATED).protect_reflector(pkt)
    assert pkt[:16] == SP_ECB[1]
    assert pkt[16:96] == plain[16:96]
    assert pkt[96:112] == ref_hmac(KAT_HMAC_KEY, plain[:16])


# -- test packets: round trips and tampering --------------------------------------------------

RNG_KEYS = derive_test_keys(bytes(range(16)), AES_KEY, HMAC_KEY)
BOTH_MODES = [TestMode.AUTHENTICATED, TestMode.ENCRYPTED]
COVERED = {
    ("sender", TestMode.AUTHENTICATED): 16,
    ("sender", TestMode.ENCRYPTED): 32,
    ("reflector", TestMode.AUTHENTICATED): 16,
    ("reflector", TestMode.ENCRYPTED): 96,
}
HMAC_AT = {"sender": 32, "reflector": 96}


def _packet(role: str, pad: int, seed: int) -> bytearray:
    rng = random.Random(seed)
    return bytearray(rng.randbytes(HMAC_AT[role]) + bytes(16) + rng.randbytes(pad))


Fn = Callable[[bytearray], None]


def _funcs(crypto: TestPacketCrypto, role: str) -> tuple[Fn, Fn]:
    if role == "sender":
        return crypto.protect_sender, crypto.unprotect_sender
    return crypto.protect_reflector, crypto.unprotect_reflector


@pytest.mark.parametrize("mode", BOTH_MODES)
@pytest.mark.parametrize("role", ["sender", "reflector"])
def test_round_trip_padding_untouched(mode: TestMode, role: str) -> None:
    crypto = TestPacketCrypto(RNG_KEYS, mode)
    protect, unprotect = _funcs(crypto, role)
    plain = _packet(role, 64, seed=7)
    covered, at = COVERED[role, mode], HMAC_AT[role]
    pkt = bytearray(plain)
    protect(pkt)
    assert len(pkt) == len(plain)
    assert pkt[:covered] != plain[:covered]
    assert pkt[covered:at] == plain[covered:at]  # outside the covered range: clear
    assert pkt[at : at + 16] == ref_hmac(RNG_KEYS.hmac_key, bytes(plain[:covered]))
    assert pkt[at + 16 :] == plain[at + 16 :]
    unprotect(pkt)
    assert pkt[:at] == plain[:at]
    assert pkt[at + 16 :] == plain[at + 16 :]


@pytest.mark.parametrize("mode", BOTH_MODES)
@pytest.mark.parametrize("role", ["sender", "reflector"])
@pytest.mark.parametrize("where", ["covered", "hmac"])
def test_tampering_detected_and_packet_left_alone(mode: TestMode, role: str, where: str) -> None:
    crypto = TestPacketCrypto(RNG_KEYS, mode)
    protect, unprotect = _funcs(crypto, role)
    pkt = _packet(role, 10, seed=8)
    protect(pkt)
    offset = COVERED[role, mode] - 1 if where == "covered" else HMAC_AT[role] + 5
    pkt[offset] ^= 0x04
    forged = bytes(pkt)
    with pytest.raises(IntegrityError) as info:
        unprotect(pkt)
    assert info.value.field == "HMAC"
    assert role in str(info.value)
    assert pkt == forged


@pytest.mark.parametrize("role", ["sender", "reflector"])
def test_padding_change_is_not_detected(role: str) -> None:
    # Padding is never authenticated (RFC 4656 §4.1.2; RFC 7820 hardware rewrites its last 2
    # octets).
    crypto = TestPacketCrypto(RNG_KEYS, TestMode.ENCRYPTED)
    protect, unprotect = _funcs(crypto, role)
    pkt = _packet(role, 8, seed=9)
    protect(pkt)
    pkt[-2:] = b"\xff\xff"
    unprotect(pkt)
    assert pkt[-2:] == b"\xff\xff"


def test_authenticated_mode_leaves_timestamps_unauthenticated() -> None:
    # Spec §4.6: in mode 2 only block 0 is covered, so a changed Timestamp still verifies ...
    auth = TestPacketCrypto(RNG_KEYS, TestMode.AUTHENTICATED)
    pkt = _packet("sender", 0, seed=10)
    auth.protect_sender(pkt)
    pkt[20] ^= 1
    auth.unprotect_sender(pkt)
    # ... while mode 4 covers it.
    enc = TestPacketCrypto(RNG_KEYS, TestMode.ENCRYPTED)
    pkt = _packet("sender", 0, seed=10)
    enc.protect_sender(pkt)
    pkt[20] ^= 1
    with pytest.raises(IntegrityError):
        enc.unprotect_sender(pkt)


def test_other_session_keys_fail() -> None:
    mine = TestPacketCrypto(RNG_KEYS, TestMode.ENCRYPTED)
    other = TestPacketCrypto(
        derive_test_keys(bytes(range(1, 17)), AES_KEY, HMAC_KEY), TestMode.ENCRYPTED
    )
    pkt = _packet("sender", 0, seed=11)
    mine.protect_sender(pkt)
    with pytest.raises(IntegrityError):
        other.unprotect_sender(pkt)


def test_short_packets() -> None:
    crypto = TestPacketCrypto(RNG_KEYS, TestMode.AUTHENTICATED)
    with pytest.raises(DecodeError) as info:
        crypto.unprotect_sender(bytearray(47))
    assert info.value.field == "length"
    with pytest.raises(DecodeError):
        crypto.unprotect_reflector(bytearray(111))
    with pytest.raises(ValueError):
        crypto.protect_sender(bytearray(47))
    with pytest.raises(ValueError):
        crypto.protect_reflector(bytearray(100))
    crypto.protect_sender(bytearray(48))  # the exact base size is enough


def test_open_mode_has_no_packet_crypto() -> None:
    # RFC 5618: mode 8 test packets are unauthenticated.
    with pytest.raises(ValueError):
        TestPacketCrypto(RNG_KEYS, TestMode.OPEN)


def test_packet_crypto_rejects_bad_keys() -> None:
    with pytest.raises(ValueError):
        TestPacketCrypto(TestKeys(aes_key=bytes(16), hmac_key=bytes(16)), TestMode.ENCRYPTED)


# -- batches == per packet --------------------------------------------------------------------


def _per_packet(fn: Fn, pkts: list[bytearray]) -> list[bool]:
    ok = []
    for pkt in pkts:
        try:
            fn(pkt)
        except (IntegrityError, DecodeError):
            ok.append(False)
        else:
            ok.append(True)
    return ok


packets = st.lists(st.tuples(st.integers(0, 80), st.integers(0, 2**32)), max_size=12)


@settings(max_examples=60, deadline=None)
@given(
    specs=packets, mode=st.sampled_from(BOTH_MODES), role=st.sampled_from(["sender", "reflector"])
)
def test_protect_batch_equals_per_packet(
    specs: list[tuple[int, int]], mode: TestMode, role: str
) -> None:
    crypto = TestPacketCrypto(RNG_KEYS, mode)
    batch = [_packet(role, pad, seed) for pad, seed in specs]
    single = [bytearray(p) for p in batch]
    protect = crypto.protect_sender if role == "sender" else crypto.protect_reflector
    for pkt in single:
        protect(pkt)
    if role == "sender":
        crypto.protect_sender_batch(batch)
    else:
        crypto.protect_reflector_batch(batch)
    assert batch == single


@settings(max_examples=60, deadline=None)
@given(
    specs=packets,
    mode=st.sampled_from(BOTH_MODES),
    role=st.sampled_from(["sender", "reflector"]),
    damage=st.lists(st.integers(0, 11), max_size=4),
    short=st.lists(st.tuples(st.integers(0, 11), st.integers(0, 111)), max_size=2),
)
def test_unprotect_batch_equals_per_packet(
    specs: list[tuple[int, int]],
    mode: TestMode,
    role: str,
    damage: list[int],
    short: list[tuple[int, int]],
) -> None:
    crypto = TestPacketCrypto(RNG_KEYS, mode)
    protect = crypto.protect_sender if role == "sender" else crypto.protect_reflector
    pkts = [_packet(role, pad, seed) for pad, seed in specs]
    for pkt in pkts:
        protect(pkt)
    for i in damage:
        if i < len(pkts):
            pkts[i][i % COVERED[role, mode]] ^= 0x10
    for i, length in short:
        if i < len(pkts):
            del pkts[i][min(length, HMAC_AT[role] + 15) :]  # down to nothing at all
    batch = [bytearray(p) for p in pkts]
    single = [bytearray(p) for p in pkts]
    if role == "sender":
        ok = crypto.unprotect_sender_batch(batch)
        ok_single = _per_packet(crypto.unprotect_sender, single)
    else:
        ok = crypto.unprotect_reflector_batch(batch)
        ok_single = _per_packet(crypto.unprotect_reflector, single)
    assert ok == ok_single
    assert batch == single
    for i, good in enumerate(ok):
        if not good:
            assert batch[i] == pkts[i]  # forged or short: left as received


@pytest.mark.parametrize("mode", BOTH_MODES)
def test_reflector_fast_path_round_trip(mode: TestMode) -> None:
    """Sender packets through the batch unprotect, replies through the batch protect."""
    crypto = TestPacketCrypto(RNG_KEYS, mode)
    senders = [_packet("sender", 64, seed) for seed in range(32)]
    plains = [bytes(p) for p in senders]
    crypto.protect_sender_batch(senders)
    assert crypto.unprotect_sender_batch(senders) == [True] * 32
    assert [bytes(p[:32]) for p in senders] == [p[:32] for p in plains]
    replies = [bytearray(p[:32] + bytes(64) + bytes(16) + p[48:]) for p in plains]
    expect = [bytearray(r) for r in replies]
    crypto.protect_reflector_batch(replies)
    for r in expect:
        crypto.protect_reflector(r)
    assert replies == expect
    assert crypto.unprotect_reflector_batch(replies) == [True] * 32


@pytest.mark.parametrize("mode", BOTH_MODES)
@pytest.mark.parametrize("role", ["sender", "reflector"])
@pytest.mark.parametrize("size", [1, _ROUNDS_MIN_BATCH - 1, _ROUNDS_MIN_BATCH, 65])
def test_protect_batch_both_strategies_equal_per_packet(
    mode: TestMode, role: str, size: int
) -> None:
    # Small batches chain packet by packet, large ones block index by block index.
    crypto = TestPacketCrypto(RNG_KEYS, mode)
    batch = [_packet(role, seed % 7, seed) for seed in range(size)]
    batch[size // 2] = bytearray(batch[0])  # the same plaintext twice in one batch
    single = [bytearray(p) for p in batch]
    protect, unprotect = _funcs(crypto, role)
    for pkt in single:
        protect(pkt)
    if role == "sender":
        crypto.protect_sender_batch(batch)
    else:
        crypto.protect_reflector_batch(batch)
    assert batch == single
    assert batch[size // 2] == batch[0]
    for pkt in batch:
        unprotect(pkt)


@pytest.mark.parametrize("role", ["sender", "reflector"])
def test_every_packet_restarts_the_cbc_chain(role: str) -> None:
    # RFC 4656 §4.1.2: IV 0 per packet, so equal plaintexts give equal packets whatever came
    # before, and a fresh TestPacketCrypto agrees with a long-used one.
    used = TestPacketCrypto(RNG_KEYS, TestMode.ENCRYPTED)
    protect = _funcs(used, role)[0]
    plain = _packet(role, 3, seed=12)
    first = bytearray(plain)
    protect(first)
    for seed in range(5):
        protect(_packet(role, 0, seed))
    again = bytearray(plain)
    protect(again)
    fresh = bytearray(plain)
    _funcs(TestPacketCrypto(RNG_KEYS, TestMode.ENCRYPTED), role)[0](fresh)
    assert first == again == fresh


def test_batch_empty() -> None:
    crypto = TestPacketCrypto(RNG_KEYS, TestMode.ENCRYPTED)
    crypto.protect_reflector_batch([])
    assert crypto.unprotect_sender_batch([]) == []
