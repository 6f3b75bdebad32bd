"""twamp.crypto against real perfSONAR twping/twampd exchanges (tests/vectors, modes 2, 4, 8).

Every byte here was written by an independent implementation (owamp 5.2.3), so each passing test
is interoperability evidence:

* the Token decrypts with PBKDF2(shared_secret, Salt, Count) to the Server-Greeting's Challenge,
  and a wrong passphrase fails;
* the client->server CBC stream decrypts with Client-IV and every command's HMAC verifies;
  sealing the decrypted commands again reproduces the captured stream;
* the server->client stream decrypts with Server-IV from Server-Start 32-47 on and every HMAC
  verifies, the first one covering Server-Start 32-47 + Accept-Session 0-31 (neither Accept-Session
  alone nor all 48 octets of Server-Start); sealing again reproduces the captured stream;
* Request-TW-Session and Accept-Session carry the negotiated test ports;
* modes 2 and 4: every test packet decrypts with the per-SID keys and its HMAC verifies, singly
  and in batches; the reflections carry the sender's fields and Sender TTL 255; protecting the
  plaintext again reproduces the captured bytes;
* mode 8: test packets are in clear and the reflections copy the sender's fields.

The control stream is split into messages here with the command sizes of RFC 5357 §3 and RFC 5938
§3, independently of twamp.wire.control (one test cross-checks that module's framing when it is
importable).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from twamp.constants import Mode, TestMode
from twamp.crypto import (
    ControlCipher,
    TestPacketCrypto,
    check_token,
    derive_key,
    derive_test_keys,
)
from twamp.errors import IntegrityError

SECURE = ["authenticated", "encrypted", "mixed"]
PROTECTED = ["authenticated", "encrypted"]


def _client_command_length(first_block: bytes) -> int:
    """Spec §3.6: 5 -> 112, 2/3 -> 32, 7/9 -> 32 + 16 N (N at 12-15)."""
    command = first_block[0]
    if command == 5:
        return 112
    if command in (2, 3):
        return 32
    if command in (7, 9):
        return 32 + 16 * int.from_bytes(first_block[12:16], "big")
    raise AssertionError(f"unexpected client command {command}")


@dataclass(frozen=True)
class Exchange:
    raw: dict[str, Any]
    greeting: bytes  # Server-Greeting, 64
    setup: bytes  # Set-Up-Response, 164
    start: bytes  # Server-Start, 48
    client_wire: bytes  # client stream after Set-Up-Response (ciphertext)
    server_wire: bytes  # server stream after Server-Start (ciphertext)
    aes_key: bytes
    hmac_key: bytes
    client_plain: list[bytes]  # decrypted client commands
    start_block: bytes  # decrypted Server-Start 32-47
    server_plain: list[bytes]  # decrypted server messages after Server-Start

    @property
    def client_iv(self) -> bytes:
        return self.setup[148:164]

    @property
    def server_iv(self) -> bytes:
        return self.start[16:32]

    @property
    def accept_session(self) -> bytes:
        return self.server_plain[0]

    @property
    def request(self) -> bytes:
        return self.client_plain[0]

    def test_frames(self, origin: str) -> list[bytes]:
        return [
            bytes.fromhex(f["payload_hex"])
            for f in self.raw["frames"]
            if f["transport"] == "udp" and f["from"] == origin
        ]


def _stream(raw: dict[str, Any], origin: str) -> bytes:
    return b"".join(
        bytes.fromhex(f["payload_hex"])
        for f in raw["frames"]
        if f["transport"] == "tcp" and f["from"] == origin
    )


@cache
def _load(path: Path) -> Exchange:
    raw = json.loads(path.read_text())
    client, server = _stream(raw, "client"), _stream(raw, "server")
    greeting, setup, start = server[:64], client[:164], server[64:112]
    salt, count = greeting[32:48], int.from_bytes(greeting[48:52], "big")
    dk = derive_key(raw["shared_secret"].encode("ascii"), salt, count)
    aes_key, hmac_key = check_token(dk, setup[84:148], greeting[16:32])

    client_wire = client[164:]
    rx = ControlCipher(aes_key, setup[148:164], hmac_key, encrypt=False)
    client_plain: list[bytes] = []
    at = 0
    while at < len(client_wire):
        first = rx.crypt(client_wire[at : at + 16])  # the first block tells the length
        size = _client_command_length(first)
        client_plain.append(first + rx.crypt(client_wire[at + 16 : at + size]))
        at += size
    assert at == len(client_wire), "client stream does not split into whole commands"

    # The server stream follows the protocol state, not octet 0: Accept-Session answers a
    # Request-TW-Session, Start-Ack a Start-Sessions, nothing a Stop-Sessions.
    server_wire = server[112:]
    sx = ControlCipher(aes_key, start[16:32], hmac_key, encrypt=False)
    start_block = sx.crypt(start[32:48])
    server_plain: list[bytes] = []
    at = 0
    for command in client_plain:
        size = {5: 48, 2: 32, 3: 0}[command[0]]
        if size and at < len(server_wire):
            server_plain.append(sx.crypt(server_wire[at : at + size]))
            at += size
    assert at == len(server_wire), "server stream has octets no client command explains"
    return Exchange(
        raw,
        greeting,
        setup,
        start,
        client_wire,
        server_wire,
        aes_key,
        hmac_key,
        client_plain,
        start_block,
        server_plain,
    )


@pytest.fixture
def vectors(vectors_dir: Path) -> Path:
    return vectors_dir


def load(vectors: Path, name: str) -> Exchange:
    return _load(vectors / f"owamp-twping-{name}.json")


def ref_hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha1).digest()[:16]


# -- setup and Token ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", SECURE)
def test_token_decrypts_to_challenge(vectors: Path, name: str) -> None:
    ex = load(vectors, name)
    assert int.from_bytes(ex.greeting[12:16], "big") == 15  # the server offered 1|2|4|8
    assert int.from_bytes(ex.setup[:4], "big") == ex.raw["mode"]
    assert ex.setup[4:84].rstrip(b"\0").decode() == ex.raw["key_id"]
    assert int.from_bytes(ex.greeting[48:52], "big") == 2048
    assert ex.start[15] == 0  # Server-Start Accept OK: twampd accepted the same Token
    assert len(ex.aes_key) == 16
    assert len(ex.hmac_key) == 32


@pytest.mark.parametrize("name", SECURE)
def test_wrong_passphrase_fails_token_check(vectors: Path, name: str) -> None:
    ex = load(vectors, name)
    dk = derive_key(b"not" + ex.raw["shared_secret"].encode(), ex.greeting[32:48], 2048)
    with pytest.raises(IntegrityError):
        check_token(dk, ex.setup[84:148], ex.greeting[16:32])


# -- client -> server stream --------------------------------------------------------------------


@pytest.mark.parametrize("name", SECURE)
def test_client_stream_decrypts_into_known_commands(vectors: Path, name: str) -> None:
    ex = load(vectors, name)
    assert [m[0] for m in ex.client_plain] == [5, 2, 3]
    assert ex.request[1] == 4  # IPVN 4
    assert ex.request[48:64] == bytes(16)  # SID MUST be 0 in the request
    assert ex.client_plain[2][4:8] == (1).to_bytes(4, "big")  # Stop-Sessions: one session


@pytest.mark.parametrize("name", SECURE)
def test_client_command_hmacs_verify(vectors: Path, name: str) -> None:
    ex = load(vectors, name)
    rx = ControlCipher(ex.aes_key, ex.client_iv, ex.hmac_key, encrypt=False)
    for msg in ex.client_plain:
        rx.verify(msg, message_type=f"command {msg[0]}")
        assert msg[-16:] == ref_hmac(ex.hmac_key, msg[:-16])  # each covers exactly one command


@pytest.mark.parametrize("name", SECURE)
def test_client_stream_reseals_byte_exact(vectors: Path, name: str) -> None:
    ex = load(vectors, name)
    tx = ControlCipher(ex.aes_key, ex.client_iv, ex.hmac_key, encrypt=True)
    assert b"".join(tx.seal(m[:-16] + bytes(16)) for m in ex.client_plain) == ex.client_wire


@pytest.mark.parametrize("name", SECURE)
def test_client_framing_agrees_with_wire_control(vectors: Path, name: str) -> None:
    control = pytest.importorskip("twamp.wire.control")
    ex = load(vectors, name)
    for msg in ex.client_plain:
        assert control.client_command_length(msg[:16]) == len(msg)


# -- server -> client stream --------------------------------------------------------------------


@pytest.mark.parametrize("name", SECURE)
def test_server_hmacs_verify(vectors: Path, name: str) -> None:
    ex = load(vectors, name)
    rx = ControlCipher(ex.aes_key, ex.server_iv, ex.hmac_key, encrypt=False)
    rx.mac_update(ex.start_block)
    assert [len(m) for m in ex.server_plain] == [48, 32]
    rx.verify(ex.server_plain[0], message_type="Accept-Session")
    rx.verify(ex.server_plain[1], message_type="Start-Ack")
    assert ex.server_plain[1][0] == 0  # Start-Ack Accept OK


@pytest.mark.parametrize("name", SECURE)
def test_first_server_hmac_covers_server_start_block_and_accept_session(
    vectors: Path, name: str
) -> None:
    ex = load(vectors, name)
    acc = ex.accept_session
    assert acc[32:48] == ref_hmac(ex.hmac_key, ex.start_block + acc[:32])
    # Spec §12: not Accept-Session alone, and not all 48 octets of Server-Start.
    assert acc[32:48] != ref_hmac(ex.hmac_key, acc[:32])
    assert acc[32:48] != ref_hmac(ex.hmac_key, ex.start[:32] + ex.start_block + acc[:32])
    assert ex.start_block[8:16] == bytes(8)  # Start-Time then 8 MBZ octets: decrypted right


@pytest.mark.parametrize("name", SECURE)
def test_server_stream_reseals_byte_exact(vectors: Path, name: str) -> None:
    ex = load(vectors, name)
    tx = ControlCipher(ex.aes_key, ex.server_iv, ex.hmac_key, encrypt=True)
    tx.mac_update(ex.start_block)
    assert tx.crypt(ex.start_block) == ex.start[32:48]
    assert b"".join(tx.seal(m) for m in ex.server_plain) == ex.server_wire


@pytest.mark.parametrize("name", SECURE)
def test_session_messages_carry_test_ports(vectors: Path, name: str) -> None:
    ex = load(vectors, name)
    ports = ex.raw["test_ports"]
    assert int.from_bytes(ex.request[12:14], "big") == ports["sender"]
    acc = ex.accept_session
    assert acc[0] == 0  # Accept OK
    assert int.from_bytes(acc[2:4], "big") == ports["reflector"]
    # twampd gave another port than the requested Receiver Port (RFC 5357 §3.5 allows it).
    requested = int.from_bytes(ex.request[14:16], "big")
    assert requested != 0
    udp = [(f["src_port"], f["dst_port"]) for f in ex.raw["frames"] if f["transport"] == "udp"]
    assert udp
    assert set(udp) == {
        (ports["sender"], ports["reflector"]),
        (ports["reflector"], ports["sender"]),
    }
    assert acc[4:8] == bytes([127, 0, 0, 1])  # owamp's SID starts with the server's IPv4


# -- TWAMP-Test, modes 2 and 4 ----------------------------------------------------------------


def _packet_crypto(ex: Exchange) -> TestPacketCrypto:
    keys = derive_test_keys(ex.accept_session[4:20], ex.aes_key, ex.hmac_key)
    return TestPacketCrypto(keys, TestMode.for_mode(Mode(ex.raw["mode"])))


def _decrypted(ex: Exchange) -> tuple[list[bytearray], list[bytearray]]:
    crypto = _packet_crypto(ex)
    senders = [bytearray(p) for p in ex.test_frames("sender")]
    reflected = [bytearray(p) for p in ex.test_frames("reflector")]
    for pkt in senders:
        crypto.unprotect_sender(pkt)
    for pkt in reflected:
        crypto.unprotect_reflector(pkt)
    return senders, reflected


@pytest.mark.parametrize("name", PROTECTED)
def test_test_packets_decrypt_and_hmacs_verify(vectors: Path, name: str) -> None:
    ex = load(vectors, name)
    senders, reflected = _decrypted(ex)  # raises IntegrityError if any HMAC fails
    assert len(senders) == len(reflected) == 5
    assert [int.from_bytes(p[:4], "big") for p in senders] == list(range(5))
    assert [int.from_bytes(p[:4], "big") for p in reflected] == list(range(5))
    for pkt in senders:
        assert pkt[4:16] == bytes(12)  # MBZ after the Sequence Number
    for pkt in reflected:
        assert pkt[4:16] == bytes(12)


@pytest.mark.parametrize("name", PROTECTED)
def test_test_packets_batch_decrypt_matches(vectors: Path, name: str) -> None:
    ex = load(vectors, name)
    senders, reflected = _decrypted(ex)
    crypto = _packet_crypto(ex)
    batch_s = [bytearray(p) for p in ex.test_frames("sender")]
    batch_r = [bytearray(p) for p in ex.test_frames("reflector")]
    assert crypto.unprotect_sender_batch(batch_s) == [True] * 5
    assert crypto.unprotect_reflector_batch(batch_r) == [True] * 5
    assert batch_s == senders
    assert batch_r == reflected


@pytest.mark.parametrize("name", PROTECTED)
def test_reflected_packets_carry_sender_fields(vectors: Path, name: str) -> None:
    ex = load(vectors, name)
    senders, reflected = _decrypted(ex)
    by_seq = {bytes(p[:4]): p for p in senders}
    for r in reflected:
        s = by_seq[bytes(r[48:52])]  # Sender Sequence Number
        assert r[64:72] == s[16:24]  # Sender Timestamp
        assert r[72:74] == s[24:26]  # Sender Error Estimate
        assert r[80] == 255  # Sender TTL
        assert r[81:96] == bytes(15)


@pytest.mark.parametrize("name", PROTECTED)
def test_reprotecting_reproduces_captured_packets(vectors: Path, name: str) -> None:
    ex = load(vectors, name)
    senders, reflected = _decrypted(ex)
    crypto = _packet_crypto(ex)
    for plain, wire in zip(senders, ex.test_frames("sender"), strict=True):
        pkt = bytearray(plain)
        crypto.protect_sender(pkt)
        assert pkt == wire
    for plain, wire in zip(reflected, ex.test_frames("reflector"), strict=True):
        pkt = bytearray(plain)
        crypto.protect_reflector(pkt)
        assert pkt == wire
    batch = [bytearray(p) for p in reflected]
    crypto.protect_reflector_batch(batch)
    assert batch == ex.test_frames("reflector")
    batch = [bytearray(p) for p in senders]
    crypto.protect_sender_batch(batch)
    assert batch == ex.test_frames("sender")


@pytest.mark.parametrize("name", PROTECTED)
def test_tampered_captured_packet_fails(vectors: Path, name: str) -> None:
    ex = load(vectors, name)
    crypto = _packet_crypto(ex)
    pkt = bytearray(ex.test_frames("reflector")[0])
    pkt[2] ^= 0x01
    with pytest.raises(IntegrityError):
        crypto.unprotect_reflector(pkt)


# -- TWAMP-Test, mode 8 -------------------------------------------------------------------------


def test_mixed_test_packets_are_clear_and_reflect_sender_fields(vectors: Path) -> None:
    ex = load(vectors, "mixed")
    assert TestMode.for_mode(Mode(ex.raw["mode"])) is TestMode.OPEN
    with pytest.raises(ValueError):
        _packet_crypto(ex)  # RFC 5618: no test keys, no HMAC
    senders, reflected = ex.test_frames("sender"), ex.test_frames("reflector")
    assert senders
    assert len(senders) == len(reflected)
    assert [int.from_bytes(p[:4], "big") for p in senders] == list(range(len(senders)))
    by_seq = {p[:4]: p for p in senders}
    for r in reflected:
        s = by_seq[r[24:28]]  # Sender Sequence Number, in clear
        assert r[28:36] == s[4:12]  # Sender Timestamp
        assert r[36:38] == s[12:14]  # Sender Error Estimate
        assert r[40] == 255  # Sender TTL
        assert len(r) == len(s)  # owamp keeps the sender's size
