#!/usr/bin/env python3
"""Load and abuse suite for `twamp server` and `twamp reflect` (issue 12), on loopback only.

Each scenario starts a fresh `twamp server` as a child process on 127.0.0.1 (so its RSS, threads
and file descriptors can be read from /proc), runs a well-behaved session from 127.0.0.2 at
100 packets a second, attacks from 127.0.0.1 (and 127.0.0.3 as a stranger), and reports what the
abuser got, what the server held and whether the legitimate session lost anything. Every loop
is bounded in count and time. Two scenarios run `twamp reflect` instead: `signals`, and
`light_table` (a stateful Light peer-table flood beside a steady sender). ::

    python tools/abuse.py                   # the full run (a few minutes)
    python tools/abuse.py --quick           # the small sizes the test suite uses
    python tools/abuse.py --only connections,kdf --json out.json
    python tools/abuse.py --baseline        # a server without the hardening options

``--baseline`` passes none of the new server options, so the same scenarios can be run against an
older server: ``python tools/abuse.py --baseline --server-path /path/to/old/src`` (the clients
stay this checkout's).
Figures from a shared machine are not measurements of the code; say so where you quote them.
`tests/test_abuse.py` runs every scenario at `--quick` sizes and asserts the outcomes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import random
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twamp.constants import Mode
from twamp.net.client import ClientError, SessionRefused, TwampClient
from twamp.wire.control import RequestTWSession

SERVER_IP = "127.0.0.1"
LEGIT_IP = "127.0.0.2"
ABUSER_IP = "127.0.0.1"
STRANGER_IP = "127.0.0.3"
KEY_ID = b"abuse"
SECRET = b"abuse-suite-secret"
GREETING = 64
SERVER_START = 48
ACCEPT_SESSION = 48
_RUN = "import sys; from twamp.cli.main import main; sys.argv[0] = 'twamp'; main()"


@dataclass(frozen=True)
class Scale:
    connections: int = 1000
    sessions: int = 2048
    session_clients: int = 32
    garbage_each: int = 40
    slow: int = 100
    flood_s: float = 5.0
    kdf_s: float = 5.0
    handshake_s: float = 5.0
    sequential: int = 10_000
    signal_tries: int = 100
    ghost_cap_s: float = 30.0  # the server's default --max-timeout
    setup_timeout_s: float = 10.0  # the server's default --setup-timeout
    light_ports: int = 2000  # source ports of the stateful peer-table flood
    light_max_senders: int = 64  # `twamp reflect --max-senders` under that flood
    light_s: float = 5.0


FULL = Scale()
QUICK = Scale(
    connections=120,
    sessions=210,  # 70 from each of 3 addresses: 64 (the per-client limit) accepted
    session_clients=3,
    garbage_each=4,
    slow=20,
    flood_s=1.5,
    kdf_s=1.5,
    handshake_s=1.0,
    sequential=150,
    signal_tries=6,
    ghost_cap_s=1.0,
    setup_timeout_s=1.0,
    light_ports=256,
    light_s=1.5,
)


# -- the server under test ----------------------------------------------------------------------


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((SERVER_IP, 0))
        return int(s.getsockname()[1])


def proc_usage(pid: int) -> dict[str, int]:
    """RSS (KiB), threads and open file descriptors of a process, from /proc."""
    out = {"rss_kib": 0, "threads": 0, "fds": 0}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss_kib"] = int(line.split()[1])
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


class ServerProc:
    """`twamp server` in a child process, logging to a file."""

    def __init__(self, args: list[str], workdir: Path, pythonpath: str | None = None) -> None:
        self.port = free_port()
        lo = random.randrange(21000, 60000, 2000)
        self.keyfile = workdir / "keys.pfs"
        self.keyfile.write_text(f"{KEY_ID.decode()} {SECRET.hex()}\n")
        self.log_path = workdir / f"server-{self.port}.log"
        cmd = [sys.executable, "-c", _RUN, "server", "-l", f"{SERVER_IP}:{self.port}", "-v"]
        cmd += ["--keyfile", str(self.keyfile), "--port-range", f"{lo}-{lo + 1999}", *args]
        self._log = self.log_path.open("wb")
        env = dict(os.environ)
        if pythonpath:
            env["PYTHONPATH"] = pythonpath  # the server only: the clients stay this checkout's
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection((SERVER_IP, self.port), 1):
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not start listening within 20 s")

    def usage(self) -> dict[str, int]:
        return proc_usage(self.proc.pid)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                return None
        self._log.close()
        return self.proc.returncode


# -- raw control-protocol helpers ---------------------------------------------------------------


async def raw_open(
    port: int, local: str = ABUSER_IP
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection(SERVER_IP, port, local_addr=(local, 0)), 10
    )


async def read_greeting(reader: asyncio.StreamReader, timeout: float = 10) -> int | None:
    """The Modes of Server-Greeting, or None if none came."""
    try:
        data = await asyncio.wait_for(reader.readexactly(GREETING), timeout)
    except (asyncio.TimeoutError, asyncio.IncompleteReadError, OSError):
        return None
    return int(struct.unpack_from("!I", data, 12)[0])


def set_up_response(mode: int, key_id: bytes = b"", token: bytes | None = None) -> bytes:
    token = token if token is not None else bytes(64)
    return struct.pack("!I80s64s16s", mode, key_id, token, os.urandom(16))


async def closed_by_server(reader: asyncio.StreamReader, timeout: float) -> bool:
    try:
        while await asyncio.wait_for(reader.read(4096), timeout):
            pass
    except asyncio.TimeoutError:
        return False
    except OSError:
        return True
    return True


def close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.transport.abort()


# -- the well-behaved session -------------------------------------------------------------------


class Legit:
    """A TWAMP session from `LEGIT_IP` sending `rate` open-mode packets a second."""

    def __init__(self, port: int, rate: float = 100.0, local: str = LEGIT_IP) -> None:
        self.port, self.rate, self.local = port, rate, local
        self.sent = 0
        self.replied: set[int] = set()
        self.error = ""
        self._stop_sending = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((local, 0))
        self.udp.settimeout(0.2)
        self.client: Any = None
        self.test_port = 0

    async def __aenter__(self) -> Legit:
        self.client = await TwampClient.open(
            SERVER_IP, self.port, mode=Mode.UNAUTHENTICATED, local_address=self.local, timeout=10
        )
        accept = await self.client.request_session(
            sender_port=self.udp.getsockname()[1], timeout_ns=1_000_000_000
        )
        self.test_port = accept.port
        await self.client.start()
        self._threads = [
            threading.Thread(target=self._send, daemon=True),
            threading.Thread(target=self._receive, daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    def _send(self) -> None:
        period = 1.0 / self.rate
        next_t = time.monotonic()
        while not self._stop_sending.is_set() and self.sent < 10_000_000:
            packet = struct.pack("!IQH", self.sent, time.time_ns(), 0) + bytes(27)
            try:
                self.udp.sendto(packet, (SERVER_IP, self.test_port))
            except OSError as exc:
                self.error = str(exc)
            self.sent += 1
            next_t += period
            time.sleep(max(0.0, next_t - time.monotonic()))

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.udp.recv(2048)
            except TimeoutError:
                continue
            except OSError:
                continue
            if len(data) >= 28:
                self.replied.add(struct.unpack_from("!I", data, 24)[0])

    async def __aexit__(self, *exc: object) -> None:
        self._stop_sending.set()
        # Replies in flight: the last packet was sent just now, and the machine may be busy.
        deadline = time.monotonic() + 2.0
        while len(self.replied) < self.sent and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self._stop.set()
        for t in self._threads:
            await asyncio.to_thread(t.join, 5)
        with contextlib.suppress(Exception):
            await self.client.stop()
        with contextlib.suppress(Exception):
            await self.client.close()
        self.udp.close()

    def result(self) -> dict[str, Any]:
        lost = self.sent - len(self.replied)
        return {"sent": self.sent, "received": len(self.replied), "lost": lost}


async def handshake(port: int, local: str, mode: int = 1) -> tuple[float, int | None]:
    """One open (or authenticated) handshake: (seconds, Server-Start Accept or None)."""
    t0 = time.monotonic()
    try:
        kw: dict[str, Any] = {}
        if mode == 2:
            kw = {"mode": Mode.AUTHENTICATED, "key_id": KEY_ID, "passphrase": SECRET}
        else:
            kw = {"mode": Mode.UNAUTHENTICATED}
        client = await TwampClient.open(SERVER_IP, port, local_address=local, timeout=10, **kw)
    except ClientError:
        return time.monotonic() - t0, None
    await client.close()
    return time.monotonic() - t0, 0


# -- scenarios ----------------------------------------------------------------------------------


async def s_connections(port: int, scale: Scale) -> dict[str, Any]:
    """`scale.connections` silent control connections from one address; a stranger connects."""
    opened: list[asyncio.StreamWriter] = []
    modes: Counter[str] = Counter()

    async def one() -> None:
        try:
            reader, writer = await raw_open(port)
        except (OSError, asyncio.TimeoutError):
            modes["connect failed"] += 1
            return
        opened.append(writer)
        got = await read_greeting(reader, 30)
        modes["no greeting" if got is None else ("modes 0" if got == 0 else "served")] += 1

    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(scale.connections)))
    elapsed = time.monotonic() - t0
    seconds, accept = await handshake(port, LEGIT_IP)
    for w in opened:
        close(w)
    return {
        "abuser": dict(modes),
        "abuser_seconds": round(elapsed, 2),
        "other_client_served": accept == 0,
        "other_client_seconds": round(seconds, 3),
    }


async def s_slow(port: int, scale: Scale) -> dict[str, Any]:
    """Silent clients and a byte-a-second Set-Up-Response; how long they hold a slot."""
    conns = []
    for i in range(scale.slow):
        # Two per address, so that the per-address cap is not what sends them away.
        reader, writer = await raw_open(port, f"127.0.3.{i // 2 + 1}")
        if not await read_greeting(reader):
            close(writer)
            continue
        conns.append((reader, writer, i % 2 == 0))

    async def drip(writer: asyncio.StreamWriter) -> None:
        message = set_up_response(1)
        for octet in message:
            if writer.is_closing():
                return
            with contextlib.suppress(Exception):
                writer.write(bytes([octet]))
            await asyncio.sleep(1.0)

    drips = [asyncio.ensure_future(drip(w)) for _, w, slow in conns if slow]
    wait = scale.setup_timeout_s + 3
    closed = await asyncio.gather(*(closed_by_server(r, wait) for r, _, _ in conns))
    for d in drips:
        d.cancel()
    for _, w, _ in conns:
        close(w)
    return {
        "held": len(conns),
        "closed_by_server_within_s": wait,
        "closed": sum(closed),
        "still_open": len(conns) - sum(closed),
    }


async def s_sessions(port: int, scale: Scale) -> dict[str, Any]:
    """`scale.sessions` session requests over `scale.session_clients` addresses."""
    per = scale.sessions // scale.session_clients
    accepts: Counter[str] = Counter()
    clients = []
    for c in range(scale.session_clients):
        local = f"127.0.1.{c + 1}"
        try:
            client = await TwampClient.open(
                SERVER_IP, port, mode=Mode.UNAUTHENTICATED, local_address=local, timeout=10
            )
        except ClientError as exc:
            accepts[f"connection refused: {exc}"] += 1
            continue
        clients.append(client)
        for i in range(per):
            try:
                await client.request_session(sender_port=10000 + i, timeout_ns=1_000_000_000)
                accepts["accepted"] += 1
            except SessionRefused as exc:
                accepts[f"Accept {int(exc.accept or 1)}"] += 1
    return {"requests": per * scale.session_clients, "answers": dict(accepts), "_keep": clients}


async def s_garbage(port: int, scale: Scale) -> dict[str, Any]:
    """Random octets in every control state; the server must close each connection."""
    rng = random.Random(5357)
    closed: Counter[str] = Counter()
    for state in ("greeting", "setup", "ready", "accepted", "started"):
        for _ in range(scale.garbage_each):
            if state in ("greeting", "setup"):
                reader, writer = await raw_open(port)
                await read_greeting(reader)
                if state == "setup":
                    writer.write(set_up_response(1))
                    await reader.readexactly(SERVER_START)
            else:
                client = await TwampClient.open(
                    SERVER_IP, port, mode=Mode.UNAUTHENTICATED, local_address=ABUSER_IP
                )
                if state in ("accepted", "started"):
                    await client.request_session(sender_port=rng.randrange(1024, 65535))
                if state == "started":
                    await client.start()
                reader, writer = client._reader, client._writer
            for _ in range(rng.randrange(1, 6)):
                writer.write(rng.randbytes(rng.randrange(1, 300)))
            with contextlib.suppress(OSError):
                writer.write_eof()
            closed[state] += await closed_by_server(reader, 10)
            close(writer)
    return {"closed_by_server": dict(closed), "each": scale.garbage_each}


async def s_flood(port: int, scale: Scale, legit: Legit) -> dict[str, Any]:
    """A stranger floods the legitimate session's test port (UDP, as fast as it can)."""
    stop = time.monotonic() + scale.flood_s
    sent = 0

    def flood() -> None:
        nonlocal sent
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((STRANGER_IP, 0))
            packet = bytes(14)
            target = (SERVER_IP, legit.test_port)
            while time.monotonic() < stop and sent < 50_000_000:
                for _ in range(256):
                    with contextlib.suppress(OSError):
                        s.sendto(packet, target)
                sent += 256

    await asyncio.to_thread(flood)
    # The abuser's answer: nothing. A probe from the stranger after the flood gets no reply.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((STRANGER_IP, 0))
        s.settimeout(0.5)
        got = 0
        for seq in range(3):
            s.sendto(struct.pack("!IQH", seq, 0, 0) + bytes(27), (SERVER_IP, legit.test_port))
            with contextlib.suppress(OSError):
                got += bool(s.recv(2048))
    return {
        "stranger_packets": sent,
        "stranger_pps": round(sent / scale.flood_s),
        "stranger_replies": got,
    }


async def s_ghost(port: int, scale: Scale) -> dict[str, Any]:
    """Timeout 2^32-1 s, Start, leave: does the session go on reflecting after the cap?"""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((ABUSER_IP, 0))
    udp.settimeout(0.3)
    client = await TwampClient.open(
        SERVER_IP, port, mode=Mode.UNAUTHENTICATED, local_address=ABUSER_IP
    )
    req = RequestTWSession(
        sender_address=ipaddress.ip_address(ABUSER_IP),
        receiver_address=ipaddress.ip_address(SERVER_IP),
        sender_port=udp.getsockname()[1],
        receiver_port=0,
        padding_length=27,
        start_time=0,
        timeout=0xFFFFFFFF_FFFFFFFF,
        type_p=0,
    )
    accept = await client.request(req)
    await client.start()
    await client.close()  # no Stop-Sessions: the ghost

    def probe() -> bool:
        for seq in range(5):
            with contextlib.suppress(OSError):
                udp.sendto(struct.pack("!IQH", seq, 0, 0) + bytes(27), (SERVER_IP, accept.port))
            with contextlib.suppress(OSError):
                if udp.recv(2048):
                    return True
        return False

    at_once = await asyncio.to_thread(probe)
    wait = scale.ghost_cap_s + 2.5
    await asyncio.sleep(wait)
    later = await asyncio.to_thread(probe)
    udp.close()
    return {"reflecting_at_once": at_once, "after_s": wait, "reflecting_after": later}


async def s_third_party(port: int, scale: Scale) -> dict[str, Any]:
    """A session whose Sender Address is another host (the amplification victim)."""
    client = await TwampClient.open(
        SERVER_IP, port, mode=Mode.UNAUTHENTICATED, local_address=ABUSER_IP
    )
    try:
        await client.request_session(sender_port=40000, sender_address=STRANGER_IP)
        answer = "accepted"
    except SessionRefused as exc:
        answer = f"Accept {int(exc.accept or 1)}"
    await client.close()
    return {"third_party_request": answer}


async def s_kdf(port: int, scale: Scale) -> dict[str, Any]:
    """Set-Up-Responses with the known KeyID and random Tokens, 8 at a time from one address."""
    accepts: Counter[str] = Counter()
    stop = time.monotonic() + scale.kdf_s

    async def worker() -> None:
        while time.monotonic() < stop:
            try:
                reader, writer = await raw_open(port)
            except (OSError, asyncio.TimeoutError):
                accepts["connect failed"] += 1
                await asyncio.sleep(0.05)
                continue
            modes = await read_greeting(reader)
            if not modes:
                accepts["modes 0" if modes == 0 else "no greeting"] += 1
                close(writer)
                await asyncio.sleep(0.05)
                continue
            writer.write(set_up_response(2, KEY_ID, os.urandom(64)))
            try:
                start = await asyncio.wait_for(reader.readexactly(SERVER_START), 10)
                accepts[f"Accept {start[15]}"] += 1
            except (asyncio.TimeoutError, asyncio.IncompleteReadError, OSError):
                accepts["no Server-Start"] += 1
            close(writer)

    t0 = time.monotonic()
    results = asyncio.gather(*(worker() for _ in range(8)))
    await asyncio.sleep(scale.kdf_s / 2)
    seconds, accept = await handshake(port, LEGIT_IP, mode=2)
    await results
    total = sum(accepts.values())
    return {
        "abuser": dict(accepts),
        "abuser_set_ups_per_s": round(total / (time.monotonic() - t0)),
        "legit_authenticated_handshake_s": round(seconds, 3),
        "legit_handshake_ok": accept == 0,
    }


async def s_handshakes(port: int, scale: Scale) -> dict[str, Any]:
    """Open-mode handshakes a second, 4 clients from 4 addresses, each one after another."""
    done = 0
    stop = time.monotonic() + scale.handshake_s

    async def worker(i: int) -> None:
        nonlocal done
        while time.monotonic() < stop:
            _, accept = await handshake(port, f"127.0.2.{i + 1}")
            done += accept == 0

    t0 = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(4)))
    return {"handshakes_per_s": round(done / (time.monotonic() - t0))}


async def s_sequential(
    port: int, scale: Scale, usage: Callable[[], dict[str, int]]
) -> dict[str, Any]:
    """`scale.sequential` sessions one after another from one client: request, start, stop."""
    before = usage()
    refused = 0
    errors: Counter[str] = Counter()
    t0 = time.monotonic()
    for i in range(scale.sequential):
        try:
            client = await TwampClient.open(
                SERVER_IP, port, mode=Mode.UNAUTHENTICATED, local_address=ABUSER_IP, timeout=10
            )
            try:
                await client.request_session(sender_port=20000 + i % 40000, timeout_ns=0)
                await client.start()
                await client.stop()
            finally:
                await client.close()
        except ClientError as exc:
            refused += 1
            errors[str(exc)[:80]] += 1
    elapsed = time.monotonic() - t0
    await asyncio.sleep(2.5)  # stopped sessions are freed Timeout + 1 s after Stop
    after = usage()
    return {
        "sessions": scale.sequential,
        "refused": refused,
        "errors": dict(errors.most_common(3)),
        "sessions_per_s": round(scale.sequential / elapsed),
        "server_before": before,
        "server_after": after,
    }


def s_signals(scale: Scale, workers: int = 1) -> dict[str, Any]:
    """`twamp reflect`: SIGINT and SIGTERM close together; does it always exit?"""
    hangs = bad = 0
    examples: list[str] = []
    for _ in range(scale.signal_tries):
        port = free_port(socket.SOCK_DGRAM)
        cmd = [sys.executable, "-c", _RUN, "reflect", "-l", f"{SERVER_IP}:{port}", "-q"]
        cmd += ["--workers", str(workers)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        proc.stdout.readline()  # the header: running
        time.sleep(random.uniform(0, 0.3))
        proc.send_signal(signal.SIGINT)
        time.sleep(random.uniform(0, 0.002))
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            hangs += 1
            proc.kill()
            proc.communicate()
            continue
        if proc.returncode != 0 or "stopped" not in out:
            bad += 1
            examples.append(f"exit {proc.returncode}: {out[-300:]}")
    result: dict[str, Any] = {"tries": scale.signal_tries, "hangs": hangs, "bad_exits": bad}
    if examples:
        result["examples"] = examples[:3]
    return result


def s_server_signals(scale: Scale, workdir: Path) -> dict[str, Any]:
    """`twamp server`: SIGINT and SIGTERM close together; does it always exit 0?"""
    hangs = bad = 0
    tries = max(2, scale.signal_tries // 3)
    for _ in range(tries):
        srv = ServerProc([], workdir)
        time.sleep(random.uniform(0, 0.2))
        srv.proc.send_signal(signal.SIGINT)
        time.sleep(random.uniform(0, 0.002))
        with contextlib.suppress(ProcessLookupError):
            srv.proc.send_signal(signal.SIGTERM)
        code: int | None
        try:
            code = srv.proc.wait(20)
        except subprocess.TimeoutExpired:
            hangs += 1
            code = srv.stop()
        bad += code != 0
        srv.stop()
    return {"tries": tries, "hangs": hangs, "bad_exits": bad}


_LIGHT_TICK_S = 0.005  # the legitimate sender's gap: 200 packets a second
_LIGHT_FLOOD_PER_TICK = 10  # flood datagrams between two of its packets (2,000 a second)
_COUNTER = re.compile(r"([a-z ]+?) (\d+)(?:,|$)")


def s_light_table(scale: Scale) -> dict[str, Any]:
    """`twamp reflect --stateful --max-senders N` flooded with new senders from many ports.

    A well-behaved sender on 127.0.0.2 sends 200 packets a second; between two of its packets
    the flood sends `_LIGHT_FLOOD_PER_TICK` datagrams, each from the next of `scale.light_ports`
    source ports on 127.0.0.3 in turn, so every flood datagram is a sender the table does not
    hold (a port comes round again only after more than N others), and once the table is full
    each one evicts the least recently used sender. The interleaving is fixed by this loop, not
    by timing: fewer than N - 1 new senders arrive between two of the legitimate packets, so
    the legitimate sender is never the least recently used and keeps its state (its replies
    count 0, 1, 2... without a restart). That is the table's guarantee under LRU; a sender
    slower than the rate of new senders / N would be evicted and start again from 0.
    """
    port = free_port(socket.SOCK_DGRAM)
    n = scale.light_max_senders
    cmd = [sys.executable, "-c", _RUN, "reflect", "-l", f"{SERVER_IP}:{port}", "--stateful"]
    cmd += ["--max-senders", str(n)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()  # the header: running
    request = bytes(41)  # 14-octet open sender packet + 27 octets of padding (RFC 5357 §4.1.2)
    legit = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    legit.bind((LEGIT_IP, 0))
    legit.setblocking(False)
    flood: list[socket.socket] = []
    replies: list[tuple[int, int]] = []  # (reflector's sequence number, ours)
    sent = flood_sent = 0
    try:
        for _ in range(scale.light_ports):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((STRANGER_IP, 0))
            s.setblocking(False)
            flood.append(s)

        def drain() -> None:
            with contextlib.suppress(BlockingIOError):
                while True:
                    data = legit.recv(2048)
                    replies.append((struct.unpack_from("!I", data, 0)[0], _seq_at(data, 24)))

        deadline = time.monotonic() + scale.light_s
        next_tick = time.monotonic()
        while time.monotonic() < deadline:
            legit.sendto(struct.pack("!I", sent) + request[4:], (SERVER_IP, port))
            sent += 1
            for _ in range(_LIGHT_FLOOD_PER_TICK):
                with contextlib.suppress(BlockingIOError):
                    flood[flood_sent % len(flood)].sendto(request, (SERVER_IP, port))
                flood_sent += 1
            drain()
            next_tick += _LIGHT_TICK_S
            time.sleep(max(0.0, next_tick - time.monotonic()))
        time.sleep(0.5)
        drain()
        time.sleep(1.2)  # at least one tick of the reflector's table warning
    finally:
        for s in flood:
            s.close()
        legit.close()
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    summary = next((ln for ln in out.splitlines() if "twamp reflect: stopped;" in ln), "")
    counters = {
        k.strip().replace(" ", "_"): int(v) for k, v in _COUNTER.findall(summary.split(";", 1)[-1])
    }
    return {
        "max_senders": n,
        "flood_ports": len(flood),
        "flood_sent": flood_sent,
        "reflector": counters,
        "table_full_lines": sum("stateful Light table full" in ln for ln in out.splitlines()),
        "reflect_exit": proc.returncode,
        "legit": {
            "sent": sent,
            "lost": sent - len({ours for _, ours in replies}),
            "own_seqs_in_order": [r for r, _ in replies] == list(range(len(replies))),
        },
    }


def _seq_at(data: bytes, offset: int) -> int:
    value: int = struct.unpack_from("!I", data, offset)[0]
    return value


# -- running --------------------------------------------------------------------------------------


def server_args(name: str, scale: Scale, baseline: bool) -> list[str]:
    if baseline:
        return []
    if name == "slow":
        return ["--setup-timeout", str(scale.setup_timeout_s)]
    if name == "ghost":
        return ["--max-timeout", str(scale.ghost_cap_s)]
    return []


SCENARIOS = (
    "connections",
    "slow",
    "sessions",
    "garbage",
    "flood",
    "ghost",
    "third_party",
    "kdf",
    "handshakes",
    "sequential",
    "signals",
    "light_table",
)


async def _scenario(name: str, srv: ServerProc, scale: Scale) -> dict[str, Any]:
    port = srv.port
    table: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
        "connections": lambda: s_connections(port, scale),
        "slow": lambda: s_slow(port, scale),
        "sessions": lambda: s_sessions(port, scale),
        "garbage": lambda: s_garbage(port, scale),
        "ghost": lambda: s_ghost(port, scale),
        "third_party": lambda: s_third_party(port, scale),
        "kdf": lambda: s_kdf(port, scale),
        "handshakes": lambda: s_handshakes(port, scale),
        "sequential": lambda: s_sequential(port, scale, srv.usage),
    }
    peak: dict[str, int] = {}
    async with Legit(port) as legit:
        t0 = time.monotonic()
        if name == "flood":
            out = await s_flood(port, scale, legit)
        else:
            out = await table[name]()
        peak = srv.usage()
        for client in out.pop("_keep", []):
            await client.close()
        # At least a second of the bystander's packets, however short the abuse was.
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
    out["server_peak"] = peak
    out["legit"] = legit.result()
    return out


def run(
    names: tuple[str, ...],
    scale: Scale,
    *,
    baseline: bool = False,
    echo: bool = True,
    server_path: str | None = None,
) -> dict[str, dict[str, Any]]:
    with contextlib.suppress(ValueError, OSError):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="twhd-abuse-") as tmp:
        for name in names:
            if name == "light_table":
                results[name] = s_light_table(scale)
            elif name == "signals":
                results[name] = {
                    "reflect": s_signals(scale),
                    "reflect_workers": s_signals(scale, workers=2),
                    "server": s_server_signals(scale, Path(tmp)),
                }
            else:
                srv = ServerProc(server_args(name, scale, baseline), Path(tmp), server_path)
                try:
                    results[name] = asyncio.run(asyncio.wait_for(_scenario(name, srv, scale), 600))
                finally:
                    code = srv.stop()
                    log = srv.log()
                results[name]["server_exit"] = code
                results[name]["server_refusal_lines"] = sum(
                    "refused" in line and "served " not in line  # not the closing summary
                    for line in log.splitlines()
                )
            if echo:
                print(f"{name}: {json.dumps(results[name])}", flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the small sizes of the test suite")
    ap.add_argument("--only", default="", help="comma-separated scenarios: " + ",".join(SCENARIOS))
    ap.add_argument("--baseline", action="store_true", help="pass no hardening option")
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--server-path", help="PYTHONPATH of the server under test (e.g. old src)")
    args = ap.parse_args()
    names = tuple(n for n in args.only.split(",") if n) or SCENARIOS
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    scale = QUICK if args.quick else FULL
    results = run(names, scale, baseline=args.baseline, server_path=args.server_path)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
