"""A TWAMP server and a TWAMP Light reflector that run in the background of a Python program.

`twamp server` and `twamp reflect` are processes; these two classes are the same services for a
program that wants one beside its own work (a test suite, a monitoring agent, a notebook):

* `ServerThread(config)`: `TwampServer` on its own event loop in a daemon thread. `start()`
  returns once the listeners are bound (so `port` is known) and raises what binding raised;
  `stop()` ends every connection and session. `stats()` is `TwampServer.stats()`, read safely
  from any thread.
* `LightReflector(listen)`: the data-plane `Reflector` with a `LightPolicy` on one UDP socket
  (what `twamp reflect` runs per address). `counters()` are the reflector's counters.

Both are context managers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import socket
import threading
from types import TracebackType
from typing import Any

from .. import dataplane
from ..constants import TestMode
from ..dataplane.sockets import open_test_socket
from ..wire.packets import TestFormat
from .server import ServerConfig, TwampServer

__all__ = ["LightReflector", "ServerThread"]

_START_TIMEOUT_S = 30.0


class ServerThread:
    """`TwampServer(config)` served from a background thread with its own event loop."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config if config is not None else ServerConfig()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: TwampServer | None = None

    @property
    def server(self) -> TwampServer:
        if self._server is None:
            raise RuntimeError("the server is not running: call start() first")
        return self._server

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """(address, TCP port) of each listener."""
        return self.server.addresses

    @property
    def port(self) -> int:
        """The TCP port of the first listener (useful with port 0 in `config.listen`)."""
        return self.addresses[0][1]

    def start(self) -> ServerThread:
        if self._thread is not None:
            raise RuntimeError("the server is already running")
        loop = asyncio.new_event_loop()
        started: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start(started))
                loop.run_forever()
            finally:
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="twamp-server", daemon=True)
        self._thread.start()
        try:
            started.result(_START_TIMEOUT_S)
        except BaseException:
            self._thread.join(_START_TIMEOUT_S)
            self._thread = None
            raise
        return self

    async def _start(self, started: concurrent.futures.Future[None]) -> None:
        try:
            server = TwampServer(self.config)
            await server.start()
        except BaseException as exc:
            started.set_exception(exc)
            asyncio.get_running_loop().stop()
            return
        self._server = server
        started.set_result(None)

    def stats(self) -> dict[str, Any]:
        """`TwampServer.stats()`, taken on the server's own loop."""
        loop = self._loop
        if loop is None or self._server is None:
            raise RuntimeError("the server is not running")
        server = self._server

        async def read() -> dict[str, Any]:
            return server.stats()

        return asyncio.run_coroutine_threadsafe(read(), loop).result(_START_TIMEOUT_S)

    def stop(self) -> None:
        loop, thread, server = self._loop, self._thread, self._server
        if loop is None or thread is None:
            return
        if server is not None:
            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(server.stop(), loop).result(_START_TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_START_TIMEOUT_S)
        self._thread = None
        self._loop = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class LightReflector:
    """A TWAMP Light / STAMP reflector on one UDP address, reflecting in a background thread."""

    def __init__(
        self,
        host: str = "::",
        port: int = 862,
        *,
        stateful: bool = False,
        stamp: bool = False,
        allow: tuple[str, ...] = (),
        dscp: int | None = None,
    ) -> None:
        self.policy = dataplane.LightPolicy(
            TestFormat(TestMode.OPEN, stamp=stamp),
            stateful=stateful,
            allow=tuple(ipaddress.ip_network(n, strict=False) for n in allow),
            dscp=dscp,
        )
        self._where = (host, port)
        self._sock: socket.socket | None = None
        self._reflector: Any = None
        self._final: dict[str, int] | None = None

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("the reflector is not running: call start() first")
        return int(self._sock.getsockname()[1])

    @property
    def implementation(self) -> str:
        return str(dataplane.IMPLEMENTATION)

    def start(self) -> LightReflector:
        if self._sock is not None:
            raise RuntimeError("the reflector is already running")
        sock = open_test_socket(*self._where)
        try:
            reflector = dataplane.Reflector(sock, light=self.policy)
            reflector.start()
        except BaseException:
            sock.close()
            raise
        self._sock, self._reflector = sock, reflector
        return self

    def counters(self) -> dict[str, int]:
        """The reflector's counters; final once stopped.

        While it runs they are read beside the reflecting thread, which counts a packet just
        after sending its reply: a sender may hold a reply the count does not show yet.
        """
        if self._reflector is None:
            if self._final is None:
                raise RuntimeError("the reflector was never started")
            return dict(self._final)
        return dict(self._reflector.counters())

    def stop(self) -> None:
        if self._reflector is not None:
            self._reflector.stop()
            self._final = dict(self._reflector.counters())
            self._reflector = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> LightReflector:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
