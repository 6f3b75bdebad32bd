"""The compiled Reflector's libcrypto path for modes 2 and 4, and its fallback to Python.

With `CRYPTO_BACKEND == "libcrypto"` the compiled twin protects test packets in C with OpenSSL
(dlopen), without calling `TestPacketCrypto`; with ``TWAMP_NO_LIBCRYPTO=1`` at import it must
use the batch helpers under the GIL as before. Replies are checked against the pure twin and
against AES/HMAC computed here with `cryptography` and `hmac`, independently of both twins.
"""

from __future__ import annotations

import ctypes
import hmac
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

import twamp
from twamp import dataplane
from twamp.constants import TestMode
from twamp.crypto import TestKeys, TestPacketCrypto, derive_test_keys
from twamp.dataplane import Twin
from twamp.dataplane.sockets import open_test_socket
from twamp.wire.packets import TestFormat, build_sender

PURE = dataplane.implementations()["python"]

REQUIRE = os.environ.get("TWAMP_REQUIRE_EXTENSION", "") not in ("", "0")
KEYS = derive_test_keys(bytes(range(0x30, 0x40)), bytes(range(16)), bytes(range(0x40, 0x60)))
RX_NS = 1_700_000_000_000_000_000
PEER = ("192.0.2.10", 5000)
S = 1_000_000_000
PROTECTED = [
    TestFormat(TestMode.AUTHENTICATED),
    TestFormat(TestMode.AUTHENTICATED, symmetrical=True, dscp_ecn=True),
    TestFormat(TestMode.ENCRYPTED),
    TestFormat(TestMode.ENCRYPTED, symmetrical=True, dscp_ecn=True),
]


def _fmt_id(fmt: TestFormat) -> str:
    flags = [f for f in ("symmetrical", "dscp_ecn", "stamp") if getattr(fmt, f)]
    return "-".join([fmt.test_mode.value, *flags])


def _libcrypto_loadable() -> bool:
    for name in ("libcrypto.so.3", "libcrypto.so.1.1"):
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False


@pytest.fixture
def compiled() -> Twin:
    twins = dataplane.implementations()
    if "cython" not in twins:
        if REQUIRE:
            pytest.fail("TWAMP_REQUIRE_EXTENSION=1 but the compiled data plane is not importable")
        pytest.skip("the compiled twin (twamp.dataplane) is not built")
    return twins["cython"]


@pytest.fixture
def libcrypto(compiled: Twin) -> Twin:
    if compiled.CRYPTO_BACKEND != "libcrypto":
        if _libcrypto_loadable() and os.environ.get("TWAMP_NO_LIBCRYPTO") != "1":
            pytest.fail("libcrypto is loadable here but the compiled twin does not use it")
        pytest.skip("no libcrypto: the compiled twin runs its Python crypto path")
    return compiled


class CountingCrypto(TestPacketCrypto):
    """A TestPacketCrypto that counts the batch calls of the Python (GIL) path."""

    __slots__ = ("calls",)

    def __init__(self, keys: TestKeys, test_mode: TestMode) -> None:
        super().__init__(keys, test_mode)
        self.calls = 0

    def unprotect_sender_batch(self, pkts: list[bytearray]) -> list[bool]:
        self.calls += 1
        return super().unprotect_sender_batch(pkts)

    def protect_reflector_batch(self, pkts: list[bytearray]) -> None:
        self.calls += 1
        super().protect_reflector_batch(pkts)

    def protect_sender_batch(self, pkts: list[bytearray]) -> None:
        self.calls += 1
        super().protect_sender_batch(pkts)

    def unprotect_reflector_batch(self, pkts: list[bytearray]) -> list[bool]:
        self.calls += 1
        return super().unprotect_reflector_batch(pkts)


def _cbc_decrypt(data: bytes) -> bytes:
    dec = Cipher(algorithms.AES(KEYS.aes_key), modes.CBC(bytes(16))).decryptor()
    return dec.update(data) + dec.finalize()


def open_reply(fmt: TestFormat, reply: bytes) -> bytes:
    """Decrypt a reflector packet and check its HMAC, with `cryptography` and `hmac` directly."""
    covered = 96 if fmt.test_mode is TestMode.ENCRYPTED else 16
    plain = _cbc_decrypt(reply[:covered])
    expected = hmac.digest(KEYS.hmac_key, plain, "sha1")[:16]
    assert reply[96:112] == expected, "reflector HMAC does not verify"
    return plain + reply[covered:]


def sender_packet(fmt: TestFormat, seq: int, pad: int) -> bytes:
    pkt = build_sender(
        fmt,
        seq,
        0x1234_5678_9ABC_DEF0,
        0x8001,
        bytes(i % 251 for i in range(pad)),
        ssid=0x0102 if fmt.stamp else 0,
    )
    TestPacketCrypto(KEYS, fmt.test_mode).protect_sender(pkt)
    return bytes(pkt)


def reflectors(compiled: Twin, fmt: TestFormat) -> tuple[Any, Any, CountingCrypto, Any]:
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    py = PURE.Reflector(a)
    c = compiled.Reflector(b)
    crypto = CountingCrypto(KEYS, fmt.test_mode)
    spec: dict[str, Any] = {"peer": PEER, "fmt": fmt, "stateful": True, "dscp": None}
    py.add_session(PURE.SessionSpec(**spec, crypto=TestPacketCrypto(KEYS, fmt.test_mode)))
    c.add_session(PURE.SessionSpec(**spec, crypto=crypto))
    return py, c, crypto, (a, b)


@pytest.mark.parametrize("fmt", PROTECTED, ids=_fmt_id)
def test_libcrypto_replies_match_the_pure_twin(libcrypto: Twin, fmt: TestFormat) -> None:
    py, c, crypto, socks = reflectors(libcrypto, fmt)
    try:
        ts = fmt.timestamp_offset
        for seq, pad in enumerate([0, 1, 16, 64, 200, 1400]):
            data = sender_packet(fmt, seq, pad)
            rx = RX_NS + seq * 1000
            out_py = py.process(data, PEER, rx, 61, 0xB8)
            out_c = c.process(data, PEER, rx, 61, 0xB8)
            assert out_py is not None and out_c is not None
            assert out_c[1] == out_py[1]
            plain_c = bytearray(open_reply(fmt, out_c[0]))
            plain_py = bytearray(open_reply(fmt, out_py[0]))
            # Only the transmit Timestamp (each twin reads its own clock) may differ.
            plain_c[ts : ts + 8] = plain_py[ts : ts + 8] = bytes(8)
            plain_c[96:112] = plain_py[96:112] = bytes(16)
            assert plain_c == plain_py
            assert int.from_bytes(plain_c[:4], "big") == seq  # the reflector's own counter
            if fmt.test_mode is TestMode.AUTHENTICATED:
                # Block 0 and the HMAC do not depend on the Timestamp: identical ciphertext.
                assert out_c[0][:16] == out_py[0][:16]
                assert out_c[0][96:112] == out_py[0][96:112]
                assert out_c[0][ts + 8 :] == out_py[0][ts + 8 :]
            else:
                # Same plaintext, same keys: re-protecting the C reply's plaintext in Python
                # gives back the C reply byte for byte (CBC IV 0 over 0-95, HMAC at 96-111).
                again = bytearray(open_reply(fmt, out_c[0]))
                TestPacketCrypto(KEYS, fmt.test_mode).protect_reflector(again)
                assert bytes(again) == out_c[0]
        assert c.counters() == py.counters()
        assert c.counters()["reflected"] == 6
        assert crypto.calls == 0  # all in C: the Python batch helpers were never called
    finally:
        for s in socks:
            s.close()


@pytest.mark.parametrize("fmt", PROTECTED, ids=_fmt_id)
def test_libcrypto_rejects_forgeries(libcrypto: Twin, fmt: TestFormat) -> None:
    py, c, crypto, socks = reflectors(libcrypto, fmt)
    try:
        good = sender_packet(fmt, 7, 32)
        # A flipped bit in block 0, block 1 (covered in mode 4 only) and the HMAC itself.
        positions = [0, 3, 15, 20, 31, 32, 40, 47]
        if fmt.test_mode is TestMode.ENCRYPTED:
            failing = positions
        else:
            failing = [pos for pos in positions if pos < 16 or pos >= 32]
        for pos in positions:
            forged = bytearray(good)
            forged[pos] ^= 0x10
            out_py = py.process(bytes(forged), PEER, RX_NS, 64, 0)
            out_c = c.process(bytes(forged), PEER, RX_NS, 64, 0)
            assert (out_c is None) == (out_py is None) == (pos in failing), pos
        assert c.counters()["auth_failed"] == len(failing)
        assert c.counters() == py.counters()
        assert c.process(good, PEER, RX_NS, 64, 0) is not None
        assert crypto.calls == 0
    finally:
        for s in socks:
            s.close()


def test_libcrypto_sessions_come_and_go(libcrypto: Twin) -> None:
    # Contexts are made in add_session and freed in remove_session (and with the Reflector).
    fmt = TestFormat(TestMode.ENCRYPTED)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        r = libcrypto.Reflector(sock)
        for i in range(200):
            crypto = TestPacketCrypto(KEYS, fmt.test_mode)
            slot = r.add_session(PURE.SessionSpec(PEER, fmt, crypto=crypto))
            assert r.process(sender_packet(fmt, i, 0), PEER, RX_NS, 64, 0) is not None
            if i % 2:
                assert r.remove_session(slot)["reflected"] == 1
            else:
                r.add_session(PURE.SessionSpec(("192.0.2.11", 1), fmt, crypto=crypto))
                r = libcrypto.Reflector(sock)  # the old one is freed with two sessions
        assert r.counters()["reflected"] == 1


def sender_round_trip(compiled: Twin, mode: TestMode, n: int) -> tuple[Any, Any, int]:
    """The compiled Sender (counting crypto) against the pure Reflector: (result, refl, calls)."""
    fmt = TestFormat(mode)
    with open_test_socket("127.0.0.1", 0) as rs, open_test_socket("127.0.0.1", 0) as ss:
        refl = PURE.Reflector(rs)
        spec = PURE.SessionSpec(ss.getsockname(), fmt, TestPacketCrypto(KEYS, mode))
        refl.add_session(spec)
        crypto = CountingCrypto(KEYS, mode)
        sender = compiled.Sender(ss, rs.getsockname(), fmt=fmt, crypto=crypto, padding=24)
        start = time.time_ns() + 20_000_000
        with refl:
            result = sender.run(start + np.arange(n, dtype=np.int64) * 1_000_000, wait_ns=2 * S)
        return result, refl, crypto.calls


@pytest.mark.parametrize("mode", [TestMode.AUTHENTICATED, TestMode.ENCRYPTED], ids=str)
def test_libcrypto_sender_round_trip(libcrypto: Twin, mode: TestMode) -> None:
    n = 40
    result, refl, calls = sender_round_trip(libcrypto, mode, n)
    # The pure Reflector (TestPacketCrypto) verified every request the C code protected, and
    # the Sender verified every reply TestPacketCrypto protected.
    assert refl.counters()["auth_failed"] == 0 and refl.counters()["reflected"] == n
    c = result.counters
    assert (c["sent"], c["received"], c["auth_failed"], c["malformed"]) == (n, n, 0, 0)
    assert sorted(result.received["sender_seq"].tolist()) == list(range(n))
    assert sorted(result.received["reflector_seq"].tolist()) == list(range(n))
    assert calls == 0  # no Python batch helper on the way


FALLBACK_SCRIPT = r"""
import json, socket, sys
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[2])
from test_fastpath_libcrypto import (
    KEYS, PEER, RX_NS, CountingCrypto, TestFormat, TestMode, PURE, open_reply,
    sender_packet, sender_round_trip,
)
from twamp import dataplane
compiled = dataplane.implementations()["cython"]
out = {
    "backend": compiled.CRYPTO_BACKEND,
    "sender_backend": compiled.sender_module.CRYPTO_BACKEND,
    "selected": dataplane.CRYPTO_BACKEND,
    "modes": {},
}
for mode in (TestMode.AUTHENTICATED, TestMode.ENCRYPTED):
    fmt = TestFormat(mode)
    with socket.socket() as sock:
        r = compiled.Reflector(sock)
        crypto = CountingCrypto(KEYS, mode)
        r.add_session(PURE.SessionSpec(PEER, fmt, crypto=crypto))
        good = sender_packet(fmt, 3, 8)
        reply = r.process(good, PEER, RX_NS, 64, 0)
        plain = open_reply(fmt, reply[0])
        forged = bytearray(good)
        forged[40] ^= 1
        result, refl, calls = sender_round_trip(compiled, mode, 10)
        out["modes"][mode.value] = {
            "sender": [result.counters["received"], result.counters["auth_failed"], calls],
            "sender_seq": int.from_bytes(plain[fmt.sender_seq_offset:][:4], "big"),
            "forged": r.process(bytes(forged), PEER, RX_NS, 64, 0),
            "auth_failed": r.counters()["auth_failed"],
            "calls": crypto.calls,
        }
print(json.dumps(out))
"""


def test_fallback_to_python_path_in_a_subprocess(compiled: Twin) -> None:
    src = str(Path(twamp.__file__).resolve().parents[1])
    here = str(Path(__file__).resolve().parent)
    env = dict(os.environ, TWAMP_NO_LIBCRYPTO="1")
    done = subprocess.run(
        [sys.executable, "-c", FALLBACK_SCRIPT, src, here],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["backend"] == result["sender_backend"] == result["selected"] == "python"
    for mode in ("authenticated", "encrypted"):
        got = result["modes"][mode]
        assert got["sender_seq"] == 3
        assert got["forged"] is None
        assert got["auth_failed"] == 1
        # One unprotect and one protect batch for the good packet, one unprotect for the forgery.
        assert got["calls"] == 3
        received, auth_failed, calls = got["sender"]
        assert (received, auth_failed) == (10, 0)
        assert calls >= 2  # the Sender used the Python batch helpers (protect and unprotect)


def test_fastpath_names_the_backend_in_use(compiled: Twin) -> None:
    assert PURE.CRYPTO_BACKEND == "python"
    assert compiled.CRYPTO_BACKEND in ("libcrypto", "python")
    if dataplane.IMPLEMENTATION == "cython":
        assert dataplane.CRYPTO_BACKEND == compiled.CRYPTO_BACKEND
    else:
        assert dataplane.CRYPTO_BACKEND == "python"
