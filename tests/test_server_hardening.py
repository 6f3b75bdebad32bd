"""Hardening of `twamp server` (issue 12) that the abuse suite does not show from outside:
counters and log lines of each limit, PBKDF2 off the event loop, the listen backlog, RFC 7717.

The policies themselves are tested without sockets in `tests/test_sessions.py`; what a hostile
client sees, with a well-behaved session running beside it, in `tests/test_abuse.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import struct
import subprocess
import threading
from collections.abc import AsyncIterator, Awaitable
from ipaddress import IPv4Address
from typing import Any, TypeVar

import pytest

from conftest import require
from twamp import crypto
from twamp.constants import AcceptCode, Mode
from twamp.control import (
    ClientConnection,
    ConnectionClosed,
    GreetingReceived,
    KeyDerivationRequested,
    ServerConnection,
    ServerStarted,
    SetupComplete,
)
from twamp.net import server as server_module
from twamp.net.client import TwampClient
from twamp.net.server import ServerConfig, TwampServer, listen_backlog

S = 1_000_000_000
T = 10.0
KEY_ID = b"hardening"
SECRET = b"not a real secret"
R = TypeVar("R")


def run(coro: Awaitable[R], limit: float = 60.0) -> R:
    async def bounded() -> R:
        return await asyncio.wait_for(coro, limit)

    return asyncio.run(bounded())


@contextlib.asynccontextmanager
async def serving(**overrides: Any) -> AsyncIterator[TwampServer]:
    lo = random.randrange(21000, 30000)
    values: dict[str, Any] = {
        "listen": (("127.0.0.1", 0),),
        "keys": {KEY_ID: SECRET},
        "count": 1024,
        "port_range": (lo, lo + 63),
        "housekeeping_ns": 50_000_000,
        "sid_address": IPv4Address("192.0.2.7"),
    }
    values.update(overrides)
    server = TwampServer(ServerConfig(**values))
    await server.start()
    try:
        yield server
    finally:
        await asyncio.wait_for(server.stop(), T)


def port_of(server: TwampServer) -> int:
    return server.addresses[0][1]


async def greeting(port: int, local: str = "127.0.0.1") -> tuple[Any, Any, int]:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, local_addr=(local, 0)), T
    )
    data = await asyncio.wait_for(reader.readexactly(64), T)
    return reader, writer, struct.unpack_from("!I", data, 12)[0]


# -- key derivation -------------------------------------------------------------------------------


def test_key_derivation_is_deferred_to_the_application() -> None:
    """Sans-I/O: nothing is answered until `key_derived`; a refusal is Server-Start Accept 5."""
    keys = {KEY_ID: SECRET}
    for refuse in (False, True):
        server = ServerConnection(
            modes=Mode.AUTHENTICATED, keys=keys, count=1024, start_time_ns=0, now_ns=0,
            defer_key_derivation=True,
        )  # fmt: skip
        client = ClientConnection(now_ns=0)
        client.receive_data(server.data_to_send(), 0)
        assert isinstance(client.next_event(), GreetingReceived)
        client.setup(Mode.AUTHENTICATED, key_id=KEY_ID, passphrase=SECRET)
        server.receive_data(client.data_to_send(), 0)
        event = server.next_event()
        assert isinstance(event, KeyDerivationRequested) and event.key_id == KEY_ID
        assert SECRET not in repr(event).encode()
        assert server.next_event() is None and server.data_to_send() == b""
        if refuse:
            server.refuse_key_derivation(AcceptCode.TEMPORARY_RESOURCE_LIMIT, "busy")
            assert isinstance(server.next_event(), ConnectionClosed)
            assert server.data_to_send()[15] == AcceptCode.TEMPORARY_RESOURCE_LIMIT
        else:
            server.key_derived(crypto.derive_key(event.passphrase, event.salt, event.count))
            assert isinstance(server.next_event(), SetupComplete)
            client.receive_data(server.data_to_send(), 0)
            assert isinstance(client.next_event(), ServerStarted)


def test_pbkdf2_runs_in_the_thread_pool_not_on_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Landed code: PBKDF2 ran on the asyncio loop, 1.1 ms per Set-Up-Response."""
    threads: list[str] = []
    real = crypto.derive_key

    def spy(passphrase: bytes, salt: bytes, count: int) -> bytes:
        threads.append(threading.current_thread().name)
        return real(passphrase, salt, count)

    monkeypatch.setattr(server_module, "derive_key", spy)

    async def main() -> None:
        async with serving() as server:
            client = await TwampClient.open(
                "127.0.0.1", port_of(server), mode=Mode.AUTHENTICATED, key_id=KEY_ID,
                passphrase=SECRET, timeout=T,
            )  # fmt: skip
            await client.close()
            assert server.stats()["key_derivations"]["done"] == 1

    run(main())
    assert len(threads) == 1 and threads[0].startswith("twamp-kdf")


def test_key_derivation_rate_refusal_is_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        async with serving(kdf_per_s=0.001, kdf_burst=2) as server:
            port = port_of(server)
            answers = []
            for _ in range(4):
                reader, writer, modes = await greeting(port)
                assert modes & Mode.AUTHENTICATED
                token = bytes(64)  # wrong: Accept 1 once derived
                writer.write(struct.pack("!I80s64s16s", 2, KEY_ID, token, bytes(16)))
                answers.append((await asyncio.wait_for(reader.readexactly(48), T))[15])
                writer.close()
            assert answers == [1, 1, 5, 5]
            assert server.stats()["key_derivations"] == {"done": 2, "refused": 2}
            # Another address is not affected.
            reader, writer, _ = await greeting(port, "127.0.0.2")
            writer.write(struct.pack("!I80s64s16s", 2, KEY_ID, bytes(64), bytes(16)))
            assert (await asyncio.wait_for(reader.readexactly(48), T))[15] == 1
            writer.close()

    with caplog.at_level(logging.INFO, logger="twamp.server"):
        run(main())
    assert sum("key derivation refused" in r.message for r in caplog.records) == 2


# -- connection slots ---------------------------------------------------------------------------


def test_per_address_cap_and_setup_deadline_are_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        async with serving(max_connections_per_address=2, setup_timeout_ns=S // 2) as server:
            port = port_of(server)
            held = [await greeting(port) for _ in range(2)]
            assert all(modes for _, _, modes in held)
            reader, writer, modes = await greeting(port)
            assert modes == 0  # refused: Modes 0 (RFC 4656 §3.1)
            assert await asyncio.wait_for(reader.read(), T) == b""
            writer.close()
            # Another address is served while this one is at its cap.
            other = await TwampClient.open(
                "127.0.0.1", port, mode=Mode.UNAUTHENTICATED, local_address="127.0.0.2"
            )
            await other.request_session(sender_port=40000)
            # The two silent ones are closed at the set-up deadline; the one that sent its
            # first command stays.
            for r, w, _ in held:
                assert await asyncio.wait_for(r.read(), T) == b""
                w.close()
            await other.start()
            await other.stop()
            await other.close()
            stats = server.stats()["connections"]
            assert stats["refused_per_address"] == 1 and stats["setup_timeouts"] == 2

    with caplog.at_level(logging.INFO, logger="twamp.server"):
        run(main())
    messages = [r.getMessage() for r in caplog.records]
    assert any("control connections from 127.0.0.1 are open already" in m for m in messages)
    assert sum("set-up not completed within 0.5 s" in m for m in messages) >= 2


def test_listen_backlog_is_somaxconn() -> None:
    """Landed code: a fixed backlog of 128 (1,006 of 5,000 connects waited 30 s)."""
    ss = shutil.which("ss")
    require(ss is not None, "ss (iproute2) is not installed")
    assert ss is not None
    expected = listen_backlog()
    with open("/proc/sys/net/core/somaxconn") as f:
        assert expected == int(f.read())

    async def main() -> None:
        async with serving() as server:
            port = port_of(server)
            out = await asyncio.to_thread(
                subprocess.run,
                [ss, "-Hltn", f"sport = :{port}"],
                capture_output=True,
                text=True,
                check=True,
            )
            # A listening socket's Send-Q column is its backlog.
            assert int(out.stdout.split()[2]) == expected, out.stdout

    run(main())


# -- RFC 7717 -------------------------------------------------------------------------------------


def test_rfc7717_ikev2_derived_mode_is_not_offered_and_gets_accept_3() -> None:
    """RFC 7717 is not supported: bit 128 is never offered, and choosing it is Accept 3 (a
    mode not offered, RFC 4656 §3.1), not Accept 6, which means "no such IKEv2 SA"."""

    async def main() -> None:
        async with serving() as server:
            reader, writer, modes = await greeting(port_of(server))
            assert not modes & Mode.IKEV2_DERIVED
            key_id = bytes(4) + bytes(range(1, 9)) + bytes(range(9, 17))  # SPIi, SPIr
            writer.write(struct.pack("!I80s64s16s", 2 | 128, key_id, bytes(64), bytes(16)))
            start = await asyncio.wait_for(reader.readexactly(48), T)
            assert start[15] == AcceptCode.NOT_SUPPORTED
            assert await asyncio.wait_for(reader.read(), T) == b""
            writer.close()

    run(main())
