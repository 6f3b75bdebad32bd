"""TWAMP cryptography for modes 2, 4 and 8 (RFC 4656 §3.1-3.4 and §4.1.2, RFC 5357 §3-4, RFC 5618).

The key hierarchy, top to bottom (RFC 4656 §3.1, §4.1.2; RFC 5357 §3.1, §4.1.2):

1. **dk.** The shared secret (an ASCII passphrase looked up by KeyID) goes through
   PBKDF2-HMAC-SHA1 with the Server-Greeting's Salt and Count. dkLen is 16: dk is an AES-128 key and
   is used for one thing only, the Token (RFC 4656 §3.1; no RFC states dkLen in words: 16
   follows from AES-128, and owamp derives exactly 16).
2. **Token.** The client picks two random session keys, a 16-octet AES key and a 32-octet HMAC key,
   and sends ``AES-CBC(dk, IV 0, Challenge || aes_key || hmac_key)`` in Set-Up-Response. The Server
   proves the client knows the secret by finding its own Challenge in octets 0-15.
3. **TWAMP-Control.** Both directions use the same two session keys; only the IVs differ
   (Client-IV from Set-Up-Response, Server-IV from Server-Start). Each direction is ONE CBC stream
   for the life of the connection: the chain runs across message boundaries, so a direction needs
   one long-lived cipher context, never one per message (RFC 5357 §3.4). Each direction also keeps
   a running HMAC-SHA1 (truncated to 16) over every plaintext octet sent since the previous HMAC
   field; the field is filled in (or checked) and the running HMAC restarts. The server's first
   HMAC therefore covers Server-Start 32-47, the first encrypted block, as well as the first
   Accept-Session 0-31 (RFC 5357 §3.2 says "the Server-Start message"; owamp and slogr feed only
   the encrypted block 32-47, and so do we). Clear-text setup octets are never covered.
   `ControlCipher` is one such direction.
4. **TWAMP-Test.** Per session, the SID (which the Server chose at random) keys AES to wrap the
   session keys: ``test_aes = AES-ECB(SID, aes_key)``, ``test_hmac = AES-CBC(SID, IV 0, hmac_key)``
   (RFC 5357 §4.1.2 via RFC 4656 §4.1.2). Both ends use the same test keys in both directions.
   `TestPacketCrypto` holds them with the AES key schedule built once.

Test packet protection (RFC 4656 §4.1.2, RFC 5357 §4.1.2 and §4.2.1). Each packet starts a fresh
CBC chain with IV 0, so block 0 is plain ECB and later blocks are ``E(P_i xor C_(i-1))``. No packet
creates a cipher context (that would cost a key schedule per packet): a session keeps an ECB
encryptor, an ECB decryptor and one CBC encryptor, see `TestPacketCrypto._cbc_encrypt`. Decryption
needs no sequential chaining at all: ``P_i = D(C_i) xor C_(i-1)``, so all blocks, even of a whole
batch, go through one ECB call and one XOR. The HMAC sits after the covered range and is itself not
encrypted.

============  =====================  ==========================  ==========
packet        authenticated (2)      encrypted (4)               HMAC at
============  =====================  ==========================  ==========
sender        0-15 ECB, HMAC 0-15    0-31 CBC IV 0, HMAC 0-31    32-47
reflector     0-15 ECB, HMAC 0-15    0-95 CBC IV 0, HMAC 0-95    96-111
============  =====================  ==========================  ==========

Padding is never encrypted, authenticated or touched. Mixed mode (8, RFC 5618) protects control
exactly like modes 2 and 4 but sends open test packets, so it has no `TestPacketCrypto`.

STAMP (RFC 8762 §4.4) has no encryption and no key hierarchy: `stamp_hmac` is HMAC-SHA-256
truncated to 16 octets with an out-of-band key.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .constants import AES_BLOCK, HMAC_LEN, REFLECTOR_BASE_AUTH, SENDER_BASE_AUTH, SID_LEN, TestMode
from .errors import DecodeError, IntegrityError

__all__ = [
    "AES_KEY_LEN",
    "DK_LEN",
    "HMAC_KEY_LEN",
    "TOKEN_LEN",
    "ControlCipher",
    "TestKeys",
    "TestPacketCrypto",
    "check_token",
    "decrypt_token",
    "derive_key",
    "derive_test_keys",
    "encrypt_token",
    "hmac16",
    "stamp_hmac",
]

Buffer = bytes | bytearray | memoryview

DK_LEN = 16  # RFC 4656 §3.1: dk keys AES-128
AES_KEY_LEN = 16
HMAC_KEY_LEN = 32  # RFC 4656 §3.1: the HMAC Session-key is 32 octets
CHALLENGE_LEN = 16
IV_LEN = 16
TOKEN_LEN = CHALLENGE_LEN + AES_KEY_LEN + HMAC_KEY_LEN  # 64

_ZERO_IV = bytes(AES_BLOCK)

# Test-packet HMAC positions and covered ranges (RFC 5357 §4.1.2, §4.2.1).
_SENDER_HMAC_AT = SENDER_BASE_AUTH - HMAC_LEN  # 32
_REFLECTOR_HMAC_AT = REFLECTOR_BASE_AUTH - HMAC_LEN  # 96
# Below this many packets a batch is encrypted packet by packet; from here on one ECB call per
# block index wins (measured, 6-block reflector packets: about even at 16, 2.4x faster at 256).
_ROUNDS_MIN_BATCH = 16
_SENDER_PACKET = "TWAMP-Test sender packet"
_REFLECTOR_PACKET = "TWAMP-Test reflector packet"


def _require_len(name: str, value: Buffer, length: int) -> None:
    if len(value) != length:
        raise ValueError(f"{name} must be {length} octets, got {len(value)}")


def _require_blocks(name: str, data: Buffer) -> None:
    if len(data) % AES_BLOCK:
        raise ValueError(f"{name} must be a multiple of {AES_BLOCK} octets, got {len(data)}")


def derive_key(passphrase: bytes, salt: bytes, count: int) -> bytes:
    """PBKDF2-HMAC-SHA1(passphrase, salt, count) -> 16-octet dk (RFC 4656 §3.1)."""
    if count < 1:
        raise ValueError(f"PBKDF2 count must be at least 1, got {count}")
    return hashlib.pbkdf2_hmac("sha1", passphrase, salt, count, dklen=DK_LEN)


def encrypt_token(dk: bytes, challenge: bytes, aes_key: bytes, hmac_key: bytes) -> bytes:
    """The 64-octet Token of Set-Up-Response (RFC 4656 §3.1).

    ``AES-128-CBC(key = dk, IV = 0, Challenge || AES Session-key || HMAC Session-key)``.
    """
    _require_len("dk", dk, DK_LEN)
    _require_len("challenge", challenge, CHALLENGE_LEN)
    _require_len("aes_key", aes_key, AES_KEY_LEN)
    _require_len("hmac_key", hmac_key, HMAC_KEY_LEN)
    enc = Cipher(algorithms.AES(bytes(dk)), modes.CBC(_ZERO_IV)).encryptor()
    return enc.update(bytes(challenge) + bytes(aes_key) + bytes(hmac_key)) + enc.finalize()


def decrypt_token(dk: bytes, token: bytes) -> tuple[bytes, bytes, bytes]:
    """Token -> (challenge 16, aes_key 16, hmac_key 32). Does not check the challenge."""
    _require_len("dk", dk, DK_LEN)
    _require_len("token", token, TOKEN_LEN)
    dec = Cipher(algorithms.AES(bytes(dk)), modes.CBC(_ZERO_IV)).decryptor()
    plain = dec.update(bytes(token)) + dec.finalize()
    return plain[:16], plain[16:32], plain[32:]


def check_token(dk: bytes, token: bytes, challenge: bytes) -> tuple[bytes, bytes]:
    """Decrypt the Token and return (aes_key, hmac_key) if it carries `challenge`.

    Raises `IntegrityError` (Accept 1, which Server-Start then carries) when octets 0-15 differ
    from the Challenge the Server sent: the client used another secret (RFC 4656 §3.1).
    """
    got, aes_key, hmac_key = decrypt_token(dk, token)
    if not hmac.compare_digest(got, bytes(challenge)):
        raise IntegrityError(
            "Token does not decrypt to the Challenge (wrong shared secret for this KeyID?)",
            message_type="Set-Up-Response",
            field="Token",
        )
    return aes_key, hmac_key


def hmac16(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA1 truncated to its first 16 octets (RFC 4656 §3.2)."""
    return hmac.digest(key, data, "sha1")[:HMAC_LEN]


def stamp_hmac(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA-256 truncated to its first 16 octets (RFC 8762 §4.4)."""
    return hmac.digest(key, data, "sha256")[:HMAC_LEN]


class ControlCipher:
    """One direction of TWAMP-Control in modes 2, 4 and 8 (RFC 4656 §3.2, RFC 5357 §3.2).

    Holds the CBC context for the whole connection, so chaining continues across messages, and
    the running HMAC over every plaintext octet since the last HMAC field. A sender seals each
    message; a receiver `crypt`s (decrypts) as octets arrive, e.g. the first block alone to learn
    the length, then the rest, and `verify`s the whole plaintext message before acting on it.

    The Server, after sending Server-Start octets 0-31 in clear::

        tx = ControlCipher(aes_key, server_iv, hmac_key, encrypt=True)
        tx.mac_update(start[32:48])            # covered by the first Accept-Session's HMAC
        wire = start[:32] + tx.crypt(start[32:48])
        wire = tx.seal(encode_accept_session(...))
    """

    __slots__ = ("_ctx", "_encrypt", "_mac", "_mac_fresh")

    def __init__(self, aes_key: bytes, iv: bytes, hmac_key: bytes, *, encrypt: bool) -> None:
        _require_len("aes_key", aes_key, AES_KEY_LEN)
        _require_len("iv", iv, IV_LEN)
        _require_len("hmac_key", hmac_key, HMAC_KEY_LEN)
        cipher = Cipher(algorithms.AES(bytes(aes_key)), modes.CBC(bytes(iv)))
        self._ctx = cipher.encryptor() if encrypt else cipher.decryptor()
        self._encrypt = encrypt
        # Keyed once; every restart copies this instead of re-keying.
        self._mac_fresh = hmac.new(bytes(hmac_key), digestmod=hashlib.sha1)
        self._mac = self._mac_fresh.copy()

    @property
    def encrypting(self) -> bool:
        return self._encrypt

    def crypt(self, data: Buffer) -> bytes:
        """Encrypt or decrypt whole blocks, continuing the CBC chain of earlier calls."""
        _require_blocks("TWAMP-Control data", data)
        return self._ctx.update(data)

    def mac_update(self, plaintext: Buffer) -> None:
        """Add plaintext octets to what the next HMAC field covers."""
        self._mac.update(plaintext)

    def mac_digest(self) -> bytes:
        """The 16-octet HMAC of everything added since the last digest; restarts the HMAC."""
        digest = self._mac.digest()[:HMAC_LEN]
        self._mac = self._mac_fresh.copy()
        return digest

    def seal(self, message: Buffer) -> bytes:
        """Sender side: fill the last 16 octets with the HMAC, then encrypt the whole message.

        The HMAC covers whatever `mac_update` added since the last HMAC plus ``message[:-16]``;
        the message's own last 16 octets are ignored (RFC 5357 §3.4: HMAC first, then encrypt,
        HMAC included).
        """
        if not self._encrypt:
            raise ValueError("seal() needs the sending direction (encrypt=True)")
        _check_message(message)
        body = bytes(message[:-HMAC_LEN])
        self._mac.update(body)
        return self._ctx.update(body + self.mac_digest())

    def verify(self, message: Buffer, *, message_type: str = "TWAMP-Control message") -> None:
        """Receiver side, on the decrypted plaintext: check its HMAC (the last 16 octets).

        Raises `IntegrityError` naming `message_type`; the connection must then be closed,
        since the running HMAC and the CBC chain can no longer be trusted.
        """
        _check_message(message)
        view = memoryview(message)
        self._mac.update(view[:-HMAC_LEN])
        expected = self.mac_digest()
        if not hmac.compare_digest(expected, bytes(view[-HMAC_LEN:])):
            raise IntegrityError("HMAC does not verify", message_type=message_type, field="HMAC")


def _check_message(message: Buffer) -> None:
    if not message or len(message) % AES_BLOCK:
        raise ValueError(
            f"a TWAMP-Control message is a non-zero multiple of {AES_BLOCK} octets, "
            f"got {len(message)}"
        )


@dataclass(frozen=True, slots=True)
class TestKeys:
    """The keys of one TWAMP-Test session (RFC 4656 §4.1.2 as used by RFC 5357 §4.1.2)."""

    __test__ = False  # not a pytest class

    aes_key: bytes = field(repr=False)  # 16
    hmac_key: bytes = field(repr=False)  # 32


def derive_test_keys(sid: bytes, aes_key: bytes, hmac_key: bytes) -> TestKeys:
    """Per-SID test keys from the control session keys (RFC 4656 §4.1.2, RFC 5357 §4.1.2).

    Derive once per session.

    ``aes = AES-ECB(key = SID, aes_key)``, ``hmac = AES-CBC(key = SID, IV = 0, hmac_key)``.
    """
    _require_len("sid", sid, SID_LEN)
    _require_len("aes_key", aes_key, AES_KEY_LEN)
    _require_len("hmac_key", hmac_key, HMAC_KEY_LEN)
    sid_aes = algorithms.AES(bytes(sid))
    ecb = Cipher(sid_aes, modes.ECB()).encryptor()
    test_aes = ecb.update(bytes(aes_key)) + ecb.finalize()
    cbc = Cipher(sid_aes, modes.CBC(_ZERO_IV)).encryptor()
    test_hmac = cbc.update(bytes(hmac_key)) + cbc.finalize()
    return TestKeys(aes_key=test_aes, hmac_key=test_hmac)


def _xor(a: bytes, b: bytes) -> bytes:
    """a xor b right-aligned; b may be shorter (its missing leading octets count as zero)."""
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


class TestPacketCrypto:
    """Protects and unprotects the TWAMP-Test packets of one session in mode 2 or 4.

    The AES key schedule is built once here: one ECB encryptor and one ECB decryptor live as long
    as the session (ECB contexts keep no state between calls). Every function works in place on
    a bytearray and never touches the padding. On an HMAC failure the packet is left as received.

    The batch functions do the same for many packets with one ECB call per AES block index
    (for the reflector fast path); their results equal the per-packet functions'.
    """

    __test__ = False  # not a pytest class

    __slots__ = (
        "_cbc",
        "_cbc_last",
        "_dec",
        "_enc",
        "_keys",
        "_mac",
        "_reflector_covered",
        "_sender_covered",
        "test_mode",
    )

    def __init__(self, keys: TestKeys, test_mode: TestMode) -> None:
        if not isinstance(test_mode, TestMode):
            raise ValueError(f"not a TestMode: {test_mode!r}")
        if test_mode is TestMode.OPEN:
            # RFC 5618: mode 8 sends the open formats; nothing to protect
            raise ValueError("open test packets (modes 1 and 8) have no TestPacketCrypto")
        _require_len("test aes_key", keys.aes_key, AES_KEY_LEN)
        _require_len("test hmac_key", keys.hmac_key, HMAC_KEY_LEN)
        self._keys = keys
        aes = algorithms.AES(bytes(keys.aes_key))
        ecb = Cipher(aes, modes.ECB())
        self._enc = ecb.encryptor()
        self._dec = ecb.decryptor()
        # One CBC context for the session's life; see _cbc_encrypt for how each packet still
        # starts from IV 0. _cbc_last is the chaining value the context holds (its IV at first).
        self._cbc = Cipher(aes, modes.CBC(_ZERO_IV)).encryptor()
        self._cbc_last = _ZERO_IV
        # Keyed once; each packet copies it (cheaper than hmac.digest re-keying every time).
        self._mac = hmac.new(bytes(keys.hmac_key), digestmod=hashlib.sha1)
        self.test_mode = test_mode
        if test_mode is TestMode.ENCRYPTED:
            # RFC 4656 §4.1.2: sender 0-31; RFC 5357 §4.2.1: reflector 0-95. The "96 octets" that
            # RFC 5357 §4.2 says the reflector decrypts on receive is its own packet's size: owamp
            # decrypts two blocks of the sender's packet, as here.
            self._sender_covered = 2 * AES_BLOCK
            self._reflector_covered = 6 * AES_BLOCK
        else:
            # Only block 0 (Sequence Number + MBZ); the timestamps stay clear (RFC 4656 §4.1.2).
            self._sender_covered = AES_BLOCK
            self._reflector_covered = AES_BLOCK

    @property
    def keys(self) -> TestKeys:
        """The session's test keys, read-only (the compiled reflector keys libcrypto with them)."""
        return self._keys

    # -- one packet -------------------------------------------------------------------------

    def protect_sender(self, pkt: bytearray) -> None:
        """HMAC the plaintext into 32-47, then encrypt 0-15 (mode 2) or 0-31 (mode 4)."""
        self._protect(pkt, self._sender_covered, _SENDER_HMAC_AT)

    def unprotect_sender(self, pkt: bytearray) -> None:
        """Decrypt in place and verify; `IntegrityError` on a bad HMAC, `DecodeError` if short."""
        self._unprotect(pkt, self._sender_covered, _SENDER_HMAC_AT, _SENDER_PACKET)

    def protect_reflector(self, pkt: bytearray) -> None:
        """HMAC the plaintext into 96-111, then encrypt 0-15 (mode 2) or 0-95 (mode 4)."""
        self._protect(pkt, self._reflector_covered, _REFLECTOR_HMAC_AT)

    def unprotect_reflector(self, pkt: bytearray) -> None:
        self._unprotect(pkt, self._reflector_covered, _REFLECTOR_HMAC_AT, _REFLECTOR_PACKET)

    def _mac16(self, plain: bytes) -> bytes:
        mac = self._mac.copy()
        mac.update(plain)
        return mac.digest()[:HMAC_LEN]

    def _cbc_encrypt(self, plain: bytes) -> bytes:
        """AES-CBC with IV 0 (a fresh chain per packet, RFC 4656 §4.1.2).

        For one block that is ECB. For more, the long-lived CBC context still chains from the
        previous packet's last ciphertext block C: feeding ``P_0 xor C`` makes it compute
        ``E(P_0 xor C xor C) = E(P_0)``, exactly the IV-0 start, and the later blocks chain as
        they should. One `update()` per packet, no new context or key schedule (measured: 6
        blocks in about a quarter of the time of a fresh context or of block-by-block ECB).
        """
        if len(plain) == AES_BLOCK:
            return self._enc.update(plain)
        out = self._cbc.update(_xor(plain[:AES_BLOCK], self._cbc_last) + plain[AES_BLOCK:])
        self._cbc_last = out[-AES_BLOCK:]
        return out

    def _cbc_decrypt(self, cipher: bytes) -> bytes:
        # P = D(C) xor (IV || C without its last block); with IV 0 the xor operand is just C[:-16]
        return _xor(self._dec.update(cipher), cipher[:-AES_BLOCK])

    def _protect(self, pkt: bytearray, covered: int, hmac_at: int) -> None:
        if len(pkt) < hmac_at + HMAC_LEN:
            raise ValueError(f"test packet of {len(pkt)} octets is shorter than {hmac_at + 16}")
        plain = bytes(pkt[:covered])
        pkt[hmac_at : hmac_at + HMAC_LEN] = self._mac16(plain)
        pkt[:covered] = self._cbc_encrypt(plain)

    def _unprotect(self, pkt: bytearray, covered: int, hmac_at: int, what: str) -> None:
        if len(pkt) < hmac_at + HMAC_LEN:
            raise DecodeError(
                f"{len(pkt)} octets, fewer than {hmac_at + HMAC_LEN}",
                message_type=what,
                field="length",
            )
        plain = self._cbc_decrypt(bytes(pkt[:covered]))
        mac = self._mac16(plain)
        if not hmac.compare_digest(mac, bytes(pkt[hmac_at : hmac_at + HMAC_LEN])):
            raise IntegrityError("HMAC does not verify", message_type=what, field="HMAC")
        pkt[:covered] = plain

    # -- batches (fast path) ----------------------------------------------------------------

    def protect_sender_batch(self, pkts: list[bytearray]) -> None:
        self._protect_batch(pkts, self._sender_covered, _SENDER_HMAC_AT)

    def unprotect_sender_batch(self, pkts: list[bytearray]) -> list[bool]:
        """Per packet: True if it verified (now plaintext), False if short or forged (untouched)."""
        return self._unprotect_batch(pkts, self._sender_covered, _SENDER_HMAC_AT)

    def protect_reflector_batch(self, pkts: list[bytearray]) -> None:
        self._protect_batch(pkts, self._reflector_covered, _REFLECTOR_HMAC_AT)

    def unprotect_reflector_batch(self, pkts: list[bytearray]) -> list[bool]:
        return self._unprotect_batch(pkts, self._reflector_covered, _REFLECTOR_HMAC_AT)

    def _protect_batch(self, pkts: list[bytearray], covered: int, hmac_at: int) -> None:
        for pkt in pkts:
            if len(pkt) < hmac_at + HMAC_LEN:
                raise ValueError(f"test packet of {len(pkt)} octets is shorter than {hmac_at + 16}")
        if not pkts:
            return
        mac16 = self._mac16
        plains = [bytes(pkt[:covered]) for pkt in pkts]
        for pkt, plain in zip(pkts, plains, strict=True):
            pkt[hmac_at : hmac_at + HMAC_LEN] = mac16(plain)
        n = len(pkts)
        update = self._enc.update
        if covered == AES_BLOCK:
            out = update(b"".join(plains))
        elif n < _ROUNDS_MIN_BATCH:
            out = b"".join([self._cbc_encrypt(plain) for plain in plains])
        else:
            # CBC round by round: round i encrypts block i of every packet in one ECB call,
            # after XORing in each packet's block i-1 ciphertext (numpy: one XOR per round).
            blocks = covered // AES_BLOCK
            words = np.frombuffer(b"".join(plains), dtype=np.uint64).reshape(n, blocks, 2)
            cipher = np.empty_like(words)
            for i in range(blocks):
                column = words[:, i] if i == 0 else words[:, i] ^ cipher[:, i - 1]
                done = update(column.tobytes())
                cipher[:, i] = np.frombuffer(done, dtype=np.uint64).reshape(n, 2)
            out = cipher.tobytes()
        for j, pkt in enumerate(pkts):
            pkt[:covered] = out[j * covered : (j + 1) * covered]

    def _unprotect_batch(self, pkts: list[bytearray], covered: int, hmac_at: int) -> list[bool]:
        ok = [len(pkt) >= hmac_at + HMAC_LEN for pkt in pkts]
        todo = [pkt for pkt, good in zip(pkts, ok, strict=True) if good]
        if not todo:
            return ok
        ciphers = [bytes(pkt[:covered]) for pkt in todo]
        # Decryption of every block of every packet in one ECB call (see the module docstring).
        plain = self._dec.update(b"".join(ciphers))
        if covered > AES_BLOCK:
            chain = b"".join([_ZERO_IV + c[:-AES_BLOCK] for c in ciphers])
            plain = _xor(plain, chain)
        mac16 = self._mac16
        k = 0
        for j, good in enumerate(ok):
            if not good:
                continue
            pkt = pkts[j]
            mine = plain[k * covered : (k + 1) * covered]
            k += 1
            if hmac.compare_digest(mac16(mine), bytes(pkt[hmac_at : hmac_at + HMAC_LEN])):
                pkt[:covered] = mine
            else:
                ok[j] = False
        return ok
