"""Replay real twping <-> twampd TWAMP-Control exchanges through our state machines.

The captures (tests/vectors, perfSONAR owamp 5.2.3) fix every random value an endpoint
chose. Handing the same values to our endpoints through `random_bytes`, and feeding each the
peer's captured bytes, must reproduce the endpoint's captured bytes exactly: this proves the
greeting, setup, Token, both CBC streams, every HMAC and every command layout interoperate with
owamp in modes 1, 2, 4 and 8.

The secrets needed to rebuild the client's choices (session keys, Client-IV) and the server's
Start-Time are recovered here with `cryptography` directly, from the shared secret in the
capture, independently of `twamp.crypto`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from twamp.constants import AcceptCode, Mode
from twamp.control import (
    ClientConnection,
    ConnectionClosed,
    Event,
    GreetingReceived,
    ServerConnection,
    ServerStarted,
    SessionAccepted,
    SessionRequested,
    SessionsStarted,
    SetupComplete,
    StartRequested,
    StopRequested,
)
from twamp.timestamps import ns_from_ntp
from twamp.wire.control import decode_request_tw_session

MODES = ["open", "authenticated", "encrypted", "mixed"]


@dataclass
class Capture:
    mode: Mode
    key_id: bytes
    secret: bytes
    client: bytes  # the client -> server TCP stream
    server: bytes  # the server -> client TCP stream
    reflector_port: int


def load(vectors_dir: Path, name: str) -> Capture:
    doc = json.loads((vectors_dir / f"owamp-twping-{name}.json").read_text())
    tcp = [f for f in doc["frames"] if f["transport"] == "tcp"]
    return Capture(
        mode=Mode(doc["mode"]),
        key_id=(doc["key_id"] or "").encode(),
        secret=(doc["shared_secret"] or "").encode(),
        client=b"".join(bytes.fromhex(f["payload_hex"]) for f in tcp if f["from"] == "client"),
        server=b"".join(bytes.fromhex(f["payload_hex"]) for f in tcp if f["from"] == "server"),
        reflector_port=doc["test_ports"]["reflector"],
    )


@dataclass
class Secrets:
    """What the captured endpoints chose at random, plus the decrypted control streams."""

    challenge: bytes
    salt: bytes
    server_iv: bytes
    aes_key: bytes
    hmac_key: bytes
    client_iv: bytes
    client_plain: bytes  # client commands after Set-Up-Response, decrypted
    server_plain: bytes  # server messages after Server-Start 0-31, decrypted


def _cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return dec.update(data) + dec.finalize()


def recover(cap: Capture) -> Secrets:
    greeting, setup = cap.server[:64], cap.client[:164]
    challenge, salt = greeting[16:32], greeting[32:48]
    count = int.from_bytes(greeting[48:52], "big")
    server_iv = cap.server[64 + 16 : 64 + 32]
    client_iv = setup[148:164]
    if cap.mode == Mode.UNAUTHENTICATED:
        return Secrets(
            challenge, salt, server_iv, b"", b"", client_iv, cap.client[164:], cap.server[96:]
        )
    dk = hashlib.pbkdf2_hmac("sha1", cap.secret, salt, count, dklen=16)
    token = _cbc_decrypt(dk, bytes(16), setup[84:148])
    assert token[:16] == challenge, "the capture's Token must carry the Challenge"
    aes_key, hmac_key = token[16:32], token[32:64]
    return Secrets(
        challenge,
        salt,
        server_iv,
        aes_key,
        hmac_key,
        client_iv,
        _cbc_decrypt(aes_key, client_iv, cap.client[164:]),
        _cbc_decrypt(aes_key, server_iv, cap.server[96:]),
    )


def scripted(*chunks: bytes) -> Callable[[int], bytes]:
    """A random_bytes that hands out `chunks` in order and checks the requested sizes."""
    it: Iterator[bytes] = iter(chunks)

    def random_bytes(n: int) -> bytes:
        chunk = next(it)
        assert len(chunk) == n, f"asked for {n} random octets, the capture has {len(chunk)}"
        return chunk

    return random_bytes


def drain(conn: ServerConnection | ClientConnection) -> list[Event]:
    events = []
    while (event := conn.next_event()) is not None:
        events.append(event)
    return events


@pytest.fixture(params=MODES)
def capture(request: pytest.FixtureRequest, vectors_dir: Path) -> Capture:
    return load(vectors_dir, request.param)


def test_capture_has_the_expected_shape(capture: Capture) -> None:
    # 164 + Request 112 + Start 32 + Stop 32; 64 + 48 + Accept 48 + Start-Ack 32.
    assert len(capture.client) == 340
    assert len(capture.server) == 192


def test_server_replay_is_byte_exact(capture: Capture) -> None:
    s = recover(capture)
    secure = capture.mode != Mode.UNAUTHENTICATED
    # Start-Time sits in Server-Start 32-39, encrypted in the secure modes.
    start_raw = int.from_bytes(s.server_plain[:8] if secure else capture.server[96:104], "big")
    accept_plain = s.server_plain[16:64] if secure else capture.server[112:160]
    sid = accept_plain[4:20]
    assert int.from_bytes(accept_plain[2:4], "big") == capture.reflector_port

    randoms = [s.challenge, s.salt] + ([s.server_iv] if secure else [])
    server = ServerConnection(
        modes=Mode(15),  # what twampd offered (vectors/README.md)
        keys={capture.key_id: capture.secret} if secure else {},
        count=2048,
        start_time_ns=ns_from_ntp(start_raw),
        now_ns=0,
        random_bytes=scripted(*randoms),
    )
    out = server.data_to_send()
    events: list[Event] = []
    # Whole, then octet by octet: both must give the same stream.
    for at, octet in enumerate(capture.client):
        server.receive_data(bytes([octet]), at)
        for event in drain(server):
            events.append(event)
            if isinstance(event, SessionRequested):
                server.accept_session(capture.reflector_port, sid)
            elif isinstance(event, StartRequested):
                server.start_ack(AcceptCode.OK)
        out += server.data_to_send()

    assert out == capture.server
    assert [type(e) for e in events] == [
        SetupComplete,
        SessionRequested,
        StartRequested,
        StopRequested,
    ]
    setup = events[0]
    assert isinstance(setup, SetupComplete)
    assert setup.mode == capture.mode
    assert setup.key_id == capture.key_id
    stop = events[3]
    assert isinstance(stop, StopRequested)
    assert stop.sids == (sid,)
    assert not server.closed
    if secure:
        # Both ends derive the test keys from the same session keys.
        assert server.test_keys(sid).aes_key == _ecb(sid, s.aes_key)


def _ecb(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


@pytest.mark.parametrize("octet_by_octet", [False, True])
def test_client_replay_is_byte_exact(capture: Capture, octet_by_octet: bool) -> None:
    s = recover(capture)
    secure = capture.mode != Mode.UNAUTHENTICATED
    request = decode_request_tw_session(s.client_plain[:112])
    client = ClientConnection(
        now_ns=0,
        random_bytes=scripted(s.aes_key, s.hmac_key, s.client_iv) if secure else scripted(),
    )
    chunks = ([bytes([b]) for b in capture.server] if octet_by_octet else [capture.server[:64]]) + (
        [] if octet_by_octet else [capture.server[64:112], capture.server[112:160]]
    )
    if not octet_by_octet:
        chunks.append(capture.server[160:])
    out = b""
    events: list[Event] = []
    for at, chunk in enumerate(chunks):
        client.receive_data(chunk, at)
        for event in drain(client):
            events.append(event)
            if isinstance(event, GreetingReceived):
                client.setup(capture.mode, capture.key_id, capture.secret)
            elif isinstance(event, ServerStarted):
                client.request_session(request)
            elif isinstance(event, SessionAccepted):
                client.start_sessions()
            elif isinstance(event, SessionsStarted):
                client.stop_sessions()
        out += client.data_to_send()

    assert out == capture.client
    assert [type(e) for e in events] == [
        GreetingReceived,
        ServerStarted,
        SessionAccepted,
        SessionsStarted,
    ]
    greeting = events[0]
    assert isinstance(greeting, GreetingReceived)
    assert greeting.modes == Mode(15) and greeting.count == 2048
    accepted = events[2]
    assert isinstance(accepted, SessionAccepted)
    assert accepted.accept_session.accept is AcceptCode.OK
    assert accepted.accept_session.port == capture.reflector_port
    assert client.running_sessions == 0
    client.receive_data(b"", len(chunks))
    closed = client.next_event()
    assert isinstance(closed, ConnectionClosed) and closed.accept is None


def test_tampered_capture_fails_hmac(vectors_dir: Path) -> None:
    """One flipped ciphertext bit in Request-TW-Session: the server closes, Accept 1."""
    cap = load(vectors_dir, "authenticated")
    s = recover(cap)
    server = ServerConnection(
        modes=Mode(15),
        keys={cap.key_id: cap.secret},
        start_time_ns=0,
        now_ns=0,
        random_bytes=scripted(s.challenge, s.salt, s.server_iv),
    )
    stream = bytearray(cap.client)
    stream[164 + 40] ^= 0x01  # inside the Sender Address block, third ciphertext block
    server.receive_data(bytes(stream), 1)
    events = drain(server)
    assert [type(e) for e in events] == [SetupComplete, ConnectionClosed]
    closed = events[1]
    assert isinstance(closed, ConnectionClosed)
    assert closed.accept is AcceptCode.FAILURE
    assert "HMAC" in closed.reason
    # Nothing but the greeting and Server-Start went out: no Accept-Session for a forgery.
    assert len(server.data_to_send()) == 64 + 48
