"""End to end: our Control-Client and Session-Sender (`twamp.ping`) against TWAMP servers.

Two servers answer: `twamp.net.server.TwampServer` (the real one, when importable) and a stub
built here directly on the sans-I/O `ServerConnection` and the pure Reflector, which can also
misbehave on purpose (Modes 0, refusals, a corrupted HMAC, silence) to exercise the client's
error paths. Light pings go to an in-process Reflector with a `LightPolicy`, as `twamp reflect`
runs it. Loopback only, IPv4 and IPv6; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import twamp
from twamp import clock, dataplane
from twamp.constants import AcceptCode, Mode, TestMode
from twamp.control import (
    ConnectionClosed,
    ServerConnection,
    SessionRequested,
    StartRequested,
    StopRequested,
    make_sid,
)
from twamp.crypto import TestPacketCrypto
from twamp.dataplane.sockets import open_test_socket
from twamp.net.client import (
    BlockingClient,
    ClientError,
    ClientTimeoutError,
    ConnectionRefused,
    SessionRefused,
    SetupError,
    TwampClient,
    choose_mode,
    parse_modes,
)
from twamp.ping import PingOptions, make_schedule, parse_target, run_light_ping, run_ping
from twamp.wire.packets import TestFormat

PURE = dataplane.implementations()["python"]

jsonschema = pytest.importorskip("jsonschema")

SCHEMA = json.loads((Path(twamp.__file__).parent / "schemas" / "ping.schema.json").read_text())
KEY_ID = "alice"
SECRET = b"correct horse battery staple"
ALL_MODES = Mode.UNAUTHENTICATED | Mode.AUTHENTICATED | Mode.ENCRYPTED | Mode.MIXED
FAMILIES = ["127.0.0.1", "::1"]
MODE_CASES = [
    (Mode.UNAUTHENTICATED, "open", 27),
    (Mode.AUTHENTICATED, "authenticated", 64),
    (Mode.ENCRYPTED, "encrypted", 64),
    (Mode.MIXED, "mixed", 27),
]


def validate(document: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(json.loads(json.dumps(document)))


def target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- a stub server ------------------------------------------------------------------------------


class StubServer:
    """TWAMP-Control on `ServerConnection`, test sessions on the pure Reflector, in a thread."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        modes: Mode = ALL_MODES,
        keys: dict[bytes, bytes] | None = None,
        refuse: AcceptCode | None = None,
        corrupt_accept: bool = False,
        silent: bool = False,
    ) -> None:
        self.host = host
        self.modes = modes
        self.keys = {KEY_ID.encode(): SECRET} if keys is None else keys
        self.refuse = refuse
        self.corrupt_accept = corrupt_accept
        self.silent = silent
        self.port = 0
        self.stops: list[StopRequested] = []
        self.requests: list[Any] = []
        self.reflector_counters: list[dict[str, int]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None

    def __enter__(self) -> StubServer:
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        assert self._ready.wait(5), "stub server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None:
            loop.call_soon_threadsafe(stopped.set)
        if self._thread is not None:
            self._thread.join(5)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stopped.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.silent:
            await asyncio.sleep(5)
            writer.close()
            return
        conn = ServerConnection(
            modes=self.modes,
            keys=self.keys,
            count=1024,
            start_time_ns=clock.realtime_ns(),
            now_ns=clock.monotonic_ns(),
        )
        sessions: list[tuple[Any, socket.socket, int]] = []
        local_ip = writer.get_extra_info("sockname")[0]
        try:
            writer.write(conn.data_to_send())
            while not conn.closed:
                data = await asyncio.wait_for(reader.read(65536), 10)
                conn.receive_data(data, clock.monotonic_ns())
                while (event := conn.next_event()) is not None:
                    if isinstance(event, SessionRequested):
                        self.requests.append(event.request)
                        if self.refuse is not None:
                            conn.reject_session(self.refuse)
                            continue
                        sessions.append(self._accept(conn, event, local_ip))
                        out = conn.data_to_send()
                        if self.corrupt_accept:
                            out = out[:-1] + bytes([out[-1] ^ 0x01])
                        writer.write(out)
                    elif isinstance(event, StartRequested):
                        for reflector, _, _ in sessions:
                            reflector.start()
                        conn.start_ack(AcceptCode.OK)
                    elif isinstance(event, StopRequested):
                        self.stops.append(event)
                    elif isinstance(event, ConnectionClosed):
                        break
                writer.write(conn.data_to_send())
                await writer.drain()
                if not data:
                    break
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            for reflector, sock, slot in sessions:
                reflector.stop()
                self.reflector_counters.append(reflector.session_counters(slot))
                sock.close()
            writer.close()

    def _accept(
        self, conn: ServerConnection, event: SessionRequested, local_ip: str
    ) -> tuple[Any, socket.socket, int]:
        req = event.request
        sock = open_test_socket(local_ip, req.receiver_port)
        sid = make_sid(bytes([127, 0, 0, 1]), clock.realtime_ns(), bytes(4))
        test_mode = TestMode.for_mode(conn.mode)
        crypto = None
        if test_mode is not TestMode.OPEN:
            crypto = TestPacketCrypto(conn.test_keys(sid), test_mode)
        reflector = PURE.Reflector(sock)
        slot = reflector.add_session(
            PURE.SessionSpec(
                (str(req.sender_address), req.sender_port),
                TestFormat(test_mode),
                crypto,
                dscp=req.dscp,
            )
        )
        conn.accept_session(sock.getsockname()[1], sid)
        return reflector, sock, slot


# -- the real server, when it exists --------------------------------------------------------------


class RealServer:
    """`twamp.net.server.TwampServer` on an ephemeral port, in its own thread and event loop."""

    def __init__(self, host: str, modes: Mode = ALL_MODES) -> None:
        from twamp.net.server import ServerConfig, TwampServer

        config = ServerConfig(
            listen=((host, 0),), modes=modes, keys={KEY_ID.encode(): SECRET}, count=1024
        )
        self.server = TwampServer(config)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._error: BaseException | None = None

    def _main(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.server.start())
            self.port = self.server.addresses[0][1]
        except BaseException as exc:  # raised in the test's thread by __enter__
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self.server.stop())
        loop.close()

    def __enter__(self) -> RealServer:
        self._thread.start()
        assert self._ready.wait(10), "TwampServer did not start"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(params=["stub", "twamp"])
def server_factory(request: pytest.FixtureRequest) -> Callable[..., Any]:
    if request.param == "stub":
        return lambda host, modes=ALL_MODES: StubServer(host, modes=modes)
    return RealServer


# -- end to end -----------------------------------------------------------------------------------


def options(**kw: Any) -> PingOptions:
    base: dict[str, Any] = {"count": 20, "interval": 0.005, "timeout": 5.0, "wait": 2.0}
    base.update(kw)
    return PingOptions(**base)


def check_clean_result(result: Any, count: int) -> None:
    counts = result.summary["counts"]
    assert (counts["sent"], counts["received"], counts["lost"]) == (count, count, 0)
    assert counts["duplicates"] == 0 and counts["unexpected"] == 0
    assert (counts["forward_lost"], counts["backward_lost"]) == (0, 0)  # a stateful reflector
    rtt = result.summary["delay"]["rtt"]
    assert rtt["count"] == count
    assert 0 < rtt["min"] <= rtt["median"] <= rtt["max"] < 1_000_000_000
    residence = result.summary["delay"]["residence"]
    assert residence["min"] >= 0
    hops = result.summary["hops"]
    assert (hops["forward"]["min"], hops["forward"]["max"]) == (0, 0)  # loopback: no router
    assert (hops["backward"]["min"], hops["backward"]["max"]) == (0, 0)
    assert result.counters["auth_failed"] == 0 and result.counters["malformed"] == 0
    assert result.interrupted is False
    validate(result.to_json())


@pytest.mark.parametrize("host", FAMILIES)
@pytest.mark.parametrize(("mode", "name", "padding"), MODE_CASES, ids=[c[1] for c in MODE_CASES])
def test_ping_every_mode(
    server_factory: Callable[..., Any], host: str, mode: Mode, name: str, padding: int
) -> None:
    with server_factory(host) as server:
        result = run_ping(
            target(host, server.port),
            options(modes=(mode,), key_id=KEY_ID, passphrase=SECRET),
        )
    assert result.mode == name
    assert result.session["padding"] == padding  # twping's defaults (RFC 5357 §4.1.2, owamp #32)
    check_clean_result(result, 20)
    # The packets really were as long as the padding says: replies mirror their size, and the
    # per-packet T1s are those we recorded when sending.
    assert result.received["t1"].tolist() == sorted(result.sent["t1"].tolist())
    if isinstance(server, StubServer):
        assert len(server.stops) == 1 and server.stops[0].accept is AcceptCode.OK
        req = server.requests[0]
        assert req.padding_length == padding
        assert req.sender_port == result.session["sender_port"]


def test_dscp_goes_both_ways() -> None:
    with StubServer() as server:
        result = run_ping(target("127.0.0.1", server.port), options(count=5, dscp=46))
    assert server.requests[0].type_p == 46 << 24  # Type-P: octet 84 is the DSCP (RFC 4656 §3.5)
    assert result.summary["reply_tos"] == {str(46 << 2): 5}


def test_poisson_schedule_runs() -> None:
    with StubServer() as server:
        result = run_ping(target("127.0.0.1", server.port), options(count=30, poisson=True, seed=7))
    check_clean_result(result, 30)
    assert result.schedule == "poisson"


# -- mode choice and errors -------------------------------------------------------------------


def test_default_mode_is_open_without_key_and_strongest_with(
    server_factory: Callable[..., Any],
) -> None:
    with server_factory("127.0.0.1") as server:
        with BlockingClient.open("127.0.0.1", server.port, timeout=5) as client:
            assert client.mode & Mode.UNAUTHENTICATED
        with BlockingClient.open(
            "127.0.0.1", server.port, key_id=KEY_ID, passphrase=SECRET, timeout=5
        ) as client:
            assert client.mode & Mode.ENCRYPTED
            assert client.server_start_time > 0
        with BlockingClient.open(
            "127.0.0.1", server.port, mode=parse_modes("AO"), key_id=KEY_ID, passphrase=SECRET
        ) as client:
            assert client.mode & Mode.AUTHENTICATED


def test_choose_mode_rules() -> None:
    strongest = (Mode.ENCRYPTED, Mode.AUTHENTICATED, Mode.MIXED, Mode.UNAUTHENTICATED)
    offered = Mode.UNAUTHENTICATED | Mode.AUTHENTICATED
    assert choose_mode(offered, strongest, have_key=True) == Mode.AUTHENTICATED
    assert choose_mode(offered, strongest, have_key=False) == Mode.UNAUTHENTICATED
    # Mixed mode (RFC 5618) is optional, so only when Modes offer it: fall to the next preference.
    assert choose_mode(offered, (Mode.MIXED, Mode.AUTHENTICATED), have_key=True) == (
        Mode.AUTHENTICATED
    )
    assert choose_mode(Mode.UNAUTHENTICATED, (Mode.ENCRYPTED,), have_key=True) is None
    assert parse_modes("eaO") == (Mode.ENCRYPTED, Mode.AUTHENTICATED, Mode.UNAUTHENTICATED)
    with pytest.raises(ValueError, match="unknown mode letter 'X'"):
        parse_modes("AX")


def test_no_common_mode(server_factory: Callable[..., Any]) -> None:
    with (
        server_factory("127.0.0.1", Mode.UNAUTHENTICATED | Mode.AUTHENTICATED) as server,
        pytest.raises(SetupError, match=r"no common mode.*offers authenticated, open"),
    ):
        BlockingClient.open(
            "127.0.0.1", server.port, mode=(Mode.MIXED,), key_id=KEY_ID, passphrase=SECRET
        )


def test_secure_only_server_without_key(server_factory: Callable[..., Any]) -> None:
    with (
        server_factory("127.0.0.1", Mode.ENCRYPTED) as server,
        pytest.raises(SetupError, match="KeyID and key file"),
    ):
        BlockingClient.open("127.0.0.1", server.port, timeout=5)


def test_modes_zero_is_a_refusal() -> None:
    with StubServer(modes=Mode(0)) as server, pytest.raises(SetupError, match="server refused us"):
        BlockingClient.open("127.0.0.1", server.port, timeout=5)


@pytest.mark.parametrize(
    ("key_id", "secret"), [(KEY_ID, b"wrong"), ("mallory", SECRET)], ids=["passphrase", "keyid"]
)
def test_wrong_key(server_factory: Callable[..., Any], key_id: str, secret: bytes) -> None:
    with (
        server_factory("127.0.0.1") as server,
        pytest.raises(SetupError, match=r"Accept 1.*wrong key or passphrase\?") as info,
    ):
        BlockingClient.open(
            "127.0.0.1",
            server.port,
            mode=(Mode.ENCRYPTED,),
            key_id=key_id,
            passphrase=secret,
            timeout=5,
        )
    assert info.value.accept is AcceptCode.FAILURE


def test_session_refused_names_the_accept_value() -> None:
    with (
        StubServer(refuse=AcceptCode.TEMPORARY_RESOURCE_LIMIT) as server,
        pytest.raises(SessionRefused, match="Accept 5: temporary resource") as info,
    ):
        run_ping(target("127.0.0.1", server.port), options(count=2))
    assert info.value.accept is AcceptCode.TEMPORARY_RESOURCE_LIMIT


def test_hmac_failure_is_reported() -> None:
    with (
        StubServer(corrupt_accept=True) as server,
        pytest.raises(ClientError, match="integrity check"),
    ):
        run_ping(
            target("127.0.0.1", server.port),
            options(count=2, modes=(Mode.AUTHENTICATED,), key_id=KEY_ID, passphrase=SECRET),
        )


def test_connection_refused() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    with pytest.raises(ConnectionRefused, match="connection refused"):
        BlockingClient.open("127.0.0.1", port, timeout=5)


def test_silent_server_times_out() -> None:
    with StubServer(silent=True) as server:
        started = time.monotonic()
        with pytest.raises(ClientTimeoutError, match="no Server-Greeting"):
            BlockingClient.open("127.0.0.1", server.port, timeout=0.3)
        assert time.monotonic() - started < 3


def test_async_context_manager() -> None:
    async def main(port: int) -> tuple[Mode, int]:
        async with TwampClient.connect("127.0.0.1", port, timeout=5) as client:
            accept = await client.request_session(sender_port=40000, padding=27)
            await client.start()
            await client.stop()
            return client.mode, accept.port

    with StubServer() as server:
        mode, port = asyncio.run(main(server.port))
    assert mode & Mode.UNAUTHENTICATED and port > 0
    assert len(server.stops) == 1


# -- raw output and interruption ------------------------------------------------------------------


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_raw_file_has_one_line_per_packet(
    server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    raw = tmp_path / "raw.jsonl"
    with server_factory("127.0.0.1") as server:
        result = run_ping(target("127.0.0.1", server.port), options(count=25, raw=raw))
    lines = read_lines(raw)
    assert len(lines) == 25
    assert sorted(line["seq"] for line in lines) == list(range(25))
    assert not any(line["lost"] for line in lines)
    by_seq = {int(r["sender_seq"]): r for r in result.received}
    for line in lines:
        rec = by_seq[line["seq"]]
        assert line["t4"] == int(rec["t4"])
        assert line["rtt_ns"] == (line["t4"] - line["t1"]) - (line["t3"] - line["t2"]) > 0


def test_interrupt_leaves_complete_raw_file_and_stops(tmp_path: Path) -> None:
    raw = tmp_path / "raw.jsonl"
    slices = []

    def on_slice(result: Any) -> None:
        slices.append(result)
        if len(slices) == 2:
            raise KeyboardInterrupt

    with StubServer() as server:
        started = time.monotonic()
        result = run_ping(
            target("127.0.0.1", server.port),
            options(count=200, interval=0.01, raw=raw),
            on_slice=on_slice,
        )
        assert time.monotonic() - started < 5
    assert result.interrupted is True
    sent = result.summary["counts"]["sent"]
    assert 0 < sent < 200
    lines = read_lines(raw)  # every line parses: the file was flushed and closed
    assert len(lines) == sent
    assert len(server.stops) == 1  # Stop-Sessions went out despite the interrupt
    validate(result.to_json())
    assert result.to_json()["interrupted"] is True


def test_stop_event_ends_the_session() -> None:
    stop = threading.Event()
    with StubServer() as server:
        result = run_ping(
            target("127.0.0.1", server.port),
            options(count=500, interval=0.01),
            stop=stop,
            on_slice=lambda _: stop.set(),
        )
    assert result.interrupted is True
    assert 0 < result.summary["counts"]["sent"] < 500
    assert len(server.stops) == 1


# -- TWAMP Light -------------------------------------------------------------------------------


@contextlib.contextmanager
def light_reflector(host: str, **policy: Any) -> Iterator[tuple[Any, int]]:
    fmt = TestFormat(TestMode.OPEN, stamp=policy.pop("stamp", False))
    sock = open_test_socket(host, 0)
    reflector = PURE.Reflector(sock, light=PURE.LightPolicy(fmt, **policy))
    try:
        with reflector:
            yield reflector, sock.getsockname()[1]
    finally:
        sock.close()


@pytest.mark.parametrize("host", FAMILIES)
@pytest.mark.parametrize("stateful", [False, True], ids=["stateless", "stateful"])
def test_light_ping(host: str, stateful: bool) -> None:
    with light_reflector(host, stateful=stateful) as (reflector, port):
        result = run_light_ping(
            target(host, port), options(count=20, stateful=True if stateful else None)
        )
    counts = result.summary["counts"]
    assert (counts["sent"], counts["received"], counts["lost"]) == (20, 20, 0)
    assert result.mode == "light"
    assert result.summary["stateful_reflector"] is stateful
    # Loss can be split only with a reflector that counts for itself: a stateless one copies
    # the sender's sequence number (RFC 5357 Appendix I).
    assert (counts["forward_lost"] is None) is (not stateful)
    assert reflector.counters()["reflected"] == 20
    assert result.summary["hops"]["forward"]["max"] == 0
    validate(result.to_json())


def test_light_ping_to_a_stamp_reflector() -> None:
    """A STAMP reflector answers 41 octets with 44 (RFC 8762 §4.6); the sender accepts that."""
    with light_reflector("127.0.0.1", stateful=False, stamp=True) as (_, port):
        result = run_light_ping(target("127.0.0.1", port), options(count=10))
    assert result.summary["counts"]["received"] == 10
    assert result.counters["malformed"] == 0


def test_light_ping_with_nobody_there() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    try:  # bound but never read: the packets vanish
        result = run_light_ping(
            target("127.0.0.1", port), options(count=3, interval=0.01, wait=0.2)
        )
    finally:
        probe.close()
    counts = result.summary["counts"]
    assert (counts["sent"], counts["received"], counts["lost"]) == (3, 0, 3)
    assert counts["loss_pct"] == 100.0
    validate(result.to_json())


# -- pure helpers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.net", ("example.net", 862)),
        ("192.0.2.1:4000", ("192.0.2.1", 4000)),
        ("[2001:db8::1]:4000", ("2001:db8::1", 4000)),
        ("[2001:db8::1]", ("2001:db8::1", 862)),
        ("2001:db8::1", ("2001:db8::1", 862)),
    ],
)
def test_parse_target(text: str, expected: tuple[str, int]) -> None:
    assert parse_target(text, 862) == expected


@pytest.mark.parametrize("text", ["", "host:", "host:0", "host:70000", "[::1", "[::1]x", ":5"])
def test_parse_target_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_target(text, 862)


def test_periodic_schedule() -> None:
    assert make_schedule(4, 250).tolist() == [0, 250, 500, 750]


def test_poisson_schedule_is_seeded_and_exponential() -> None:
    a = make_schedule(20_000, 1_000_000, poisson=True, seed=1)
    b = make_schedule(20_000, 1_000_000, poisson=True, seed=1)
    c = make_schedule(20_000, 1_000_000, poisson=True, seed=2)
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()
    assert a[0] == 0 and np.all(np.diff(a) >= 0)
    gaps = np.diff(a)
    assert abs(gaps.mean() - 1_000_000) < 30_000  # mean of 19 999 exponentials: sd ~0.7 %
    assert abs(np.median(gaps) - 1_000_000 * np.log(2)) < 30_000  # exponential, not uniform


def test_individual_session_control_with_the_real_server() -> None:
    """RFC 5938 Start-N/Stop-N through the client, and test packets in between."""
    from twamp.dataplane import Sender

    with (
        RealServer("127.0.0.1") as server,
        BlockingClient.open(
            "127.0.0.1",
            server.port,
            mode=(Mode.AUTHENTICATED,),
            key_id=KEY_ID,
            passphrase=SECRET,
            features=Mode.INDIVIDUAL_SESSION_CONTROL,
            timeout=5,
        ) as client,
    ):
        assert client.mode & Mode.INDIVIDUAL_SESSION_CONTROL
        socks = [open_test_socket("127.0.0.1", 0) for _ in range(2)]
        try:
            accepts = [
                client.request_session(sender_port=s.getsockname()[1], padding=64) for s in socks
            ]
            sids = [a.sid for a in accepts]
            assert client.start_n(sids) == dict.fromkeys(sids, AcceptCode.OK)
            sender = Sender(
                socks[1],
                ("127.0.0.1", accepts[1].port),
                fmt=TestFormat(TestMode.AUTHENTICATED),
                crypto=client.test_crypto(sids[1]),
                padding=64,
            )
            plan = clock.realtime_ns() + 10_000_000 + np.arange(5, dtype=np.int64) * 1_000_000
            result = sender.run(plan, wait_ns=3_000_000_000)
            assert result.counters["received"] == 5
            assert client.stop_n(sids[:1]) == {sids[0]: AcceptCode.OK}
            assert client.stop_n(sids[1:]) == {sids[1]: AcceptCode.OK}
        finally:
            for s in socks:
                s.close()
