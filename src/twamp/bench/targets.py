"""What `twamp-bench` measures: reflectors it starts, or reaches, and the test sessions to them.

A `Target` knows where test packets go and in which format, and hands out `TestSession`s: a
UDP socket of ours with one `dataplane.Sender` per packet size, and the sequence number to
continue from. Kinds of target:

* `LocalReflector`: our reflector (`fast`: what `twamp.dataplane` selects, `pure`: the Python
  twin) started as ``python -m twamp.bench.reflector_proc`` in its own process, its loop thread
  (only it) pinned to a core apart from the sender's, and stopped by its PID.
* `CReflector`: the C reference reflector `csrc/c_reflector.c`, shipped in the package and
  built with the system compiler on first use (`cprogs`).
* `CommandReflector`: any command line with ``{port}`` in it, started with a free port.
* `LightTarget`: a TWAMP Light / STAMP reflector at an address (RFC 5357 Appendix I, RFC 8762).
  One socket serves the whole run; the reflector keeps no state for us.
* `ControlTarget`: a full TWAMP server (RFC 5357 §3): every session is negotiated over
  TWAMP-Control, either one per packet size or one per trial; in modes 2 and 4 the test packets
  are authenticated or encrypted with the session's keys (RFC 5357 §4.1.2).

Processes we start are stopped by their PID (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import clock, dataplane
from ..constants import TWAMP_TEST_PORT, Mode, TestMode
from ..crypto import TestKeys, TestPacketCrypto
from ..dataplane.sockets import (
    DEFAULT_BUFFER,
    SO_TIMESTAMPING,
    buffer_sizes,
    open_test_socket,
    read_tx_timestamps,
)
from ..inet import check_dscp, dscp_to_tos
from ..net.client import BlockingClient, ClientError, mode_name
from ..wire.packets import TestFormat
from . import cprogs
from .conditions import socket_stats
from .config import PacketSize
from .csender import CSender

__all__ = [
    "BenchError",
    "CReflector",
    "CommandReflector",
    "ControlTarget",
    "LightTarget",
    "LocalReflector",
    "SessionOptions",
    "Target",
    "TestSession",
    "free_udp_port",
    "hostport",
    "local_name",
    "resolve",
    "send_error",
    "throwaway_crypto",
]

_READY_TIMEOUT_S = 20.0
_STOP_GRACE_S = 5.0
_SEQ_MASK = 0xFFFFFFFF


class BenchError(Exception):
    """A target problem the user must fix, as one sentence (no reply, garbage, refused...)."""


def resolve(host: str, port: int) -> tuple[str, int]:
    """Host name or literal -> (IP literal, port), the first address getaddrinfo gives."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise BenchError(f"cannot resolve {host!r}: {exc.strerror}") from None
    ip, real_port = infos[0][4][:2]
    return str(ip), int(real_port)


def send_error(peer: tuple[str, int]) -> str | None:
    """Why sending to `peer` fails, as the kernel words it (a connect(2) only: nothing is sent)."""
    family = socket.AF_INET6 if ":" in peer[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect(peer)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def hostport(addr: tuple[str, int]) -> str:
    ip, port = addr
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _wildcard_for(ip: str) -> str:
    return "::" if isinstance(ipaddress.ip_address(ip), ipaddress.IPv6Address) else "0.0.0.0"


class TestSession:
    """Our side of one test session: socket, per-size Senders, the next sequence number."""

    __test__ = False  # not a pytest class

    def __init__(
        self,
        peer: tuple[str, int],
        fmt: TestFormat,
        *,
        crypto: TestPacketCrypto | None = None,
        local_ip: str | None = None,
        sock: socket.socket | None = None,
        dscp: int = 0,
        batch: int = 32,
        busy_poll: bool = False,
        rcvbuf: int = DEFAULT_BUFFER,
        sender: str = "ours",
    ) -> None:
        self.peer = peer
        self.fmt = fmt
        self.crypto = crypto
        self.sender_kind = sender
        self.rcvbuf = rcvbuf
        self.dscp = check_dscp(dscp)
        self.batch = batch
        self.busy_poll = busy_poll
        self.sock = sock or open_test_socket(
            local_ip or _wildcard_for(peer[0]), 0, rcvbuf=rcvbuf, sndbuf=rcvbuf
        )
        self.inode = os.fstat(self.sock.fileno()).st_ino
        self.next_seq = 0
        self._senders: dict[int, Any] = {}
        self._stamped: Any = None  # inside tx_stamps(): the one Sender with kernel stamps

    @property
    def local_port(self) -> int:
        return int(self.sock.getsockname()[1])

    def buffer_sizes(self) -> tuple[int, int]:
        return buffer_sizes(self.sock)

    def sender_for(self, octets: int) -> Any:
        """The Sender for payloads of `octets` (header + padding), made on first use."""
        sender = self._senders.get(octets)
        if sender is None:
            if self.sender_kind == "c":
                padding = octets - self.fmt.sender_header
                if padding < 0:
                    raise ValueError(
                        f"{octets} octets is shorter than the {self.fmt.sender_header}-octet header"
                    )
                sender = self._c_sender(padding)
            else:
                sender = self._new_sender(octets)
            self._senders[octets] = sender
        return sender

    @contextlib.contextmanager
    def tx_stamps(self, octets: Sequence[int]) -> Iterator[str | None]:
        """Kernel transmit stamps of what `stamped_sender` sends inside (a latency trial);
        yields None when they are on, else why not in words.

        SO_TIMESTAMPING numbers every datagram of the socket from the moment it is switched
        on (OPT_ID), and a Sender counts its own: so one Sender, made here, sends everything
        while they are on, and they are switched off again afterwards (an error queue nobody
        reads would fill the receive buffer during the throughput trials).
        """
        if self.sender_kind == "c":
            yield "the C sender records no kernel transmit stamps"
            return
        if len(set(octets)) != 1:
            yield "kernel transmit stamps need one packet size per trial (not with a mix)"
            return
        try:
            self._stamped = self._new_sender(octets[0], tx_timestamps=True)
        except OSError as exc:
            yield f"the kernel refused transmit stamps (SO_TIMESTAMPING: {exc.strerror or exc})"
            return
        try:
            yield None
        finally:
            self._stamped = None
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, 0)
                read_tx_timestamps(self.sock)  # what is left on the error queue

    def stamped_sender(self, octets: int) -> Any:
        """The Sender of `octets` inside `tx_stamps()` (the one with kernel stamps), else
        `sender_for(octets)`."""
        if self._stamped is not None:
            return self._stamped
        return self.sender_for(octets)

    def _new_sender(self, octets: int, *, tx_timestamps: bool = False) -> Any:
        padding = octets - self.fmt.sender_header
        if padding < 0:
            raise ValueError(
                f"{octets} octets is shorter than the {self.fmt.sender_header}-octet header"
            )
        return dataplane.Sender(
            self.sock,
            self.peer,
            fmt=self.fmt,
            crypto=self.crypto,
            padding=padding,
            tos=dscp_to_tos(self.dscp),  # the Sender sets the octet on its socket
            batch=self.batch,
            busy_poll=self.busy_poll,
            tx_timestamps=tx_timestamps,
        )

    def _c_sender(self, padding: int) -> Any:
        if self.fmt.test_mode is not TestMode.OPEN or self.fmt.stamp:
            raise BenchError("--sender c sends unauthenticated TWAMP Light only")
        try:
            return CSender(self.peer, padding=padding, rcvbuf=self.rcvbuf, dscp=self.dscp)
        except cprogs.BuildError as exc:
            raise BenchError(f"--sender c: {exc}") from None

    def advance(self, count: int) -> int:
        """Reserve `count` sequence numbers; returns the first."""
        first = self.next_seq
        self.next_seq = (first + count) & _SEQ_MASK
        return first

    def close(self) -> None:
        self._senders.clear()
        self.sock.close()


@dataclass(slots=True)
class SessionOptions:
    """How our test sessions are set up, the same for every target of a run."""

    dscp: int = 0
    """DSCP of the test packets (0-63); the TOS / Traffic Class octet is made at the socket."""
    batch: int = 32
    busy_poll: bool = False
    rcvbuf: int = DEFAULT_BUFFER
    sender: str = "ours"
    """"ours" (dataplane.Sender) or "c" (the C load generator, `csender`)."""


class Target:
    """Base class: a reflector to measure. Subclasses set `fmt`, `address`, `reflector`."""

    kind = "address"
    session_scope = "run"  # "run": one session for everything; "size"; "trial"

    def __init__(self, name: str, options: SessionOptions) -> None:
        self.name = name
        self.options = options
        self.fmt = TestFormat(TestMode.OPEN)
        self.mode = "open"
        self.address: tuple[str, int] = ("127.0.0.1", TWAMP_TEST_PORT)
        self.reflector: dict[str, Any] = {
            "implementation": None,
            "batch": None,
            "busy_poll": None,
            "rcvbuf": None,
            "sndbuf": None,
            "cpu": None,
            "pid": None,
            "command": None,
            "counters": None,
        }
        self.reflector_inode: int | None = None
        self._sessions: list[TestSession] = []

    @property
    def where(self) -> tuple[str, int]:
        """The address to name in reports: where test packets go, or the TWAMP server."""
        return self.address

    def prepare(self) -> None:
        """Check the prerequisites (build what must be built) before anything is measured."""

    def start(self) -> None:
        """Start (or reach) the reflector; raises BenchError."""

    def reflector_drops(self) -> int | None:
        """The reflector socket's kernel drop counter, when it is on this host and known."""
        if self.reflector_inode is not None:
            stats = socket_stats(inode=self.reflector_inode)
        elif self.kind in ("c", "command") or _is_local(self.address[0]):
            stats = socket_stats(port=self.address[1])
        else:
            return None
        return None if stats is None else stats.drops

    def open_session(self, size: PacketSize) -> TestSession:
        """A session for trials of `size`; with scope 'run' the same one every time."""
        return self.open_sessions(size, 1)[0]

    def open_sessions(self, size: PacketSize, n: int) -> list[TestSession]:
        """`n` sessions (one per sender core), kept for the whole run (scope 'run')."""
        o = self.options
        while len(self._sessions) < n:
            self._sessions.append(
                TestSession(
                    self.address,
                    self.fmt,
                    dscp=o.dscp,
                    batch=o.batch,
                    busy_poll=o.busy_poll,
                    rcvbuf=o.rcvbuf,
                    sender=o.sender,
                )
            )
        return self._sessions[:n]

    def close_session(self, session: TestSession) -> None:
        """Done with a session obtained from `open_session` (kept until `stop` for scope run)."""

    def stop(self) -> None:
        """Stop what `start` started; records the reflector's final counters if it has any."""
        for session in self._sessions:
            session.close()
        self._sessions = []

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "address": hostport(self.where),
            "mode": self.mode,
            "stamp": self.fmt.stamp,
            "session_scope": self.session_scope,
            "format": {
                "sender_header": self.fmt.sender_header,
                "reflector_header": self.fmt.reflector_header,
            },
            "reflector": dict(self.reflector),
            "sessions": getattr(self, "sessions", None),
        }


def _is_local(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


class LightTarget(Target):
    """A TWAMP Light or STAMP reflector at `HOST:PORT` (unauthenticated, no control)."""

    kind = "light"

    def __init__(
        self, name: str, host: str, port: int, options: SessionOptions, *, stamp: bool = False
    ) -> None:
        super().__init__(name, options)
        self._host = host
        self._port = port
        self.fmt = TestFormat(TestMode.OPEN, stamp=stamp)
        self.address = (host, port)

    def start(self) -> None:
        self.address = resolve(self._host, self._port)


# -- processes we start --------------------------------------------------------------------------


def _read_ready(proc: subprocess.Popen[str], what: str, timeout_s: float) -> dict[str, Any]:
    """Wait (bounded) for the child's ``ready {json}`` line."""
    assert proc.stdout is not None
    deadline = clock.monotonic_ns() + int(timeout_s * 1e9)
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            remaining = (deadline - clock.monotonic_ns()) / 1e9
            if remaining <= 0:
                raise BenchError(f"{what} did not report ready within {timeout_s:.0f} s")
            if not sel.select(remaining):
                continue
            line = proc.stdout.readline()
            if not line:
                err = proc.stderr.read().strip() if proc.stderr else ""
                detail = err.splitlines()[-1] if err else f"exit status {proc.wait()}"
                raise BenchError(f"{what} failed to start: {detail}")
            if line.startswith("ready "):
                info: dict[str, Any] = json.loads(line[6:])
                return info


def _stop_process(proc: subprocess.Popen[str], *, group: bool = False) -> str:
    """SIGTERM by PID (or its own process group), SIGKILL after a grace period; its stdout."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, signal.SIGTERM)
            else:
                os.kill(proc.pid, signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    return out or ""


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict):
                    return value
    return None


def local_name(spec: str) -> str:
    """`fast` or `pure` with the implementation it really is, e.g. "fast (cython)".

    `fast` is what `twamp.dataplane` selects here, so with TWAMP_PURE_PYTHON=1 (or without the
    compiled extension) it is the Python twin, and the name says so.
    """
    impl = dataplane.IMPLEMENTATION if spec == "fast" else "python"
    return f"{spec} ({impl})"


class LocalReflector(Target):
    """Our reflector (`fast` or `pure`) in a process of its own on loopback."""

    kind = "local"

    def __init__(
        self,
        name: str,
        options: SessionOptions,
        *,
        impl: str = "fast",
        cpu: int | None = None,
        batch: int = 64,
        busy_poll: bool = False,
        rcvbuf: int = DEFAULT_BUFFER,
        stamp: bool = False,
    ) -> None:
        super().__init__(name, options)
        self.fmt = TestFormat(TestMode.OPEN, stamp=stamp)
        self._argv = [
            sys.executable,
            "-m",
            "twamp.bench.reflector_proc",
            "--impl",
            impl,
            "--addr",
            "127.0.0.1",
            "--port",
            "0",
            "--cpu",
            str(-1 if cpu is None else cpu),
            "--batch",
            str(batch),
            "--rcvbuf",
            str(rcvbuf),
            "--max-seconds",
            "86400",
        ]
        if busy_poll:
            self._argv.append("--busy-poll")
        if stamp:
            self._argv.append("--stamp")
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        env = dict(os.environ)
        # The child must import this same twamp, wherever it comes from.
        src = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            self._argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        info = _read_ready(self._proc, f"the {self.name} reflector", _READY_TIMEOUT_S)
        self.address = ("127.0.0.1", int(info["port"]))
        self.reflector_inode = info.get("inode")
        self.reflector.update(
            implementation=info.get("implementation"),
            batch=info.get("batch"),
            busy_poll=info.get("busy_poll"),
            rcvbuf=info.get("rcvbuf"),
            sndbuf=info.get("sndbuf"),
            cpu=info.get("cpu"),
            pid=self._proc.pid,
            command=shlex.join(["python", *self._argv[1:]]),
        )

    def stop(self) -> None:
        super().stop()
        if self._proc is not None:
            out = _stop_process(self._proc)
            self.reflector["counters"] = _last_json(out)
            self._proc = None


class CReflector(Target):
    """The C reference reflector (`cprogs`: shipped as source, built on first use)."""

    kind = "c"

    def __init__(
        self,
        name: str,
        options: SessionOptions,
        *,
        cpu: int | None = None,
        batch: int = 64,
        busy_poll: bool = False,
        rcvbuf: int = DEFAULT_BUFFER,
    ) -> None:
        super().__init__(name, options)
        self._cpu = cpu
        self._batch = batch
        self._busy_poll = busy_poll
        self._rcvbuf = rcvbuf
        self._proc: subprocess.Popen[str] | None = None
        self._binary: Path | None = None

    def prepare(self) -> None:
        """Build the C reflector now (cached), before anything is measured."""
        try:
            self._binary = cprogs.build("c_reflector")
        except cprogs.BuildError as exc:
            raise BenchError(f"--reflector c: {exc}") from None

    def start(self) -> None:
        if self._binary is None:
            self.prepare()
        binary = self._binary
        assert binary is not None
        # -m: a backstop should twamp-bench be killed without stopping it.
        argv = [str(binary), "-B", str(self._batch), "-r", str(self._rcvbuf), "-m", "3600"]
        if self._busy_poll:
            argv.append("-b")
        argv += ["--", "0", str(-1 if self._cpu is None else self._cpu)]  # "-1": not an option
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        info = _read_ready(self._proc, "the C reflector", _READY_TIMEOUT_S)
        self.address = ("127.0.0.1", int(info["port"]))
        self.reflector.update(
            implementation="c",
            batch=info.get("batch"),
            busy_poll=info.get("busy_poll"),
            rcvbuf=info.get("rcvbuf"),
            cpu=self._cpu,
            pid=self._proc.pid,
            command=shlex.join(["c_reflector", *argv[1:]]),
        )

    def stop(self) -> None:
        super().stop()
        if self._proc is not None:
            out = _stop_process(self._proc)
            self.reflector["counters"] = _last_json(out)
            self._proc = None


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port free right now (another program may take it before we use it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class CommandReflector(Target):
    """Any reflector started by a command line; ``{port}`` is replaced by a free UDP port.

    Readiness is the first reply to a probe (the engine waits for it with `wait_ready`).
    """

    kind = "command"

    def __init__(
        self,
        name: str,
        command: str,
        options: SessionOptions,
        *,
        cpu: int | None = None,
        stamp: bool = False,
    ) -> None:
        super().__init__(name, options)
        if "{port}" not in command:
            raise ValueError(f"the command {command!r} has no {{port}} to put the port in")
        self._command = command
        self._cpu = cpu
        self.fmt = TestFormat(TestMode.OPEN, stamp=stamp)
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        port = free_udp_port()
        argv = shlex.split(self._command.replace("{port}", str(port)))
        taskset = shutil.which("taskset")
        pinned = self._cpu is not None and taskset is not None
        if pinned:
            argv = [str(taskset), "-c", str(self._cpu), *argv]
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                start_new_session=True,  # its own process group: children stop with it
            )
        except OSError as exc:
            raise BenchError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None
        self.address = ("127.0.0.1", port)
        self.reflector.update(
            cpu=self._cpu if pinned else None,
            pid=self._proc.pid,
            command=shlex.join(argv),
        )

    def exited(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def stop(self) -> None:
        super().stop()
        if self._proc is not None:
            out = _stop_process(self._proc, group=True)
            self.reflector["counters"] = _last_json(out)
            self._proc = None


# -- full TWAMP --------------------------------------------------------------------------------


class ControlTarget(Target):
    """A TWAMP server: sessions negotiated over TWAMP-Control (RFC 5357 §3.5-3.8).

    `scope` "size": one session per packet size, "trial": one per trial. `modes` are the
    security modes allowed, in preference order (twping's -A); the server's choice decides
    the test packet format and protection.
    """

    kind = "control"

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        options: SessionOptions,
        *,
        modes: Sequence[Mode] | None = None,
        key_id: str | None = None,
        passphrase: bytes | None = None,
        scope: str = "size",
        timeout_s: float = 10.0,
        session_timeout_ns: int = 1_000_000_000,
    ) -> None:
        super().__init__(name, options)
        if scope not in ("size", "trial"):
            raise ValueError(f"session scope {scope!r} is not 'size' or 'trial'")
        self.session_scope = scope
        self._host = host
        self._port = port
        self._modes = modes
        self._key_id = key_id
        self._passphrase = passphrase
        self._timeout_s = timeout_s
        self._session_timeout_ns = session_timeout_ns
        self._client: Any = None
        self._current: TestSession | None = None
        self.sessions = 0
        self._server: tuple[str, int] = (host, port)

    @property
    def where(self) -> tuple[str, int]:
        return self._server

    def start(self) -> None:
        try:
            self._client = BlockingClient.open(
                self._host,
                self._port,
                mode=self._modes,
                key_id=self._key_id,
                passphrase=self._passphrase,
                timeout=self._timeout_s,
            )
        except ClientError as exc:
            raise BenchError(str(exc)) from None
        client = self._client
        self.mode = mode_name(client.mode)
        self.fmt = TestFormat(client.test_mode)
        peer_ip, peer_port = client.peer_address[:2]
        self.address = self._server = (str(peer_ip), int(peer_port))
        self.reflector.update(implementation=None)

    def open_sessions(self, size: PacketSize, n: int) -> list[TestSession]:
        if n != 1:
            raise BenchError("a TWAMP server's sessions are measured from one sender core")
        return [self.open_session(size)]

    def open_session(self, size: PacketSize) -> TestSession:
        client = self._client
        if client is None:
            raise BenchError("the control connection is not open")
        o = self.options
        local_ip = client.local_address[0]
        sock = open_test_socket(local_ip, 0, rcvbuf=o.rcvbuf, sndbuf=o.rcvbuf)
        try:
            accept = client.request_session(
                sender_port=int(sock.getsockname()[1]),
                padding=max(size.octets) - self.fmt.sender_header,
                timeout_ns=self._session_timeout_ns,
                dscp=o.dscp,
            )
            crypto = client.test_crypto(accept.sid)
            client.start()
        except ClientError as exc:
            sock.close()
            raise BenchError(str(exc)) from None
        except BaseException:
            sock.close()
            raise
        self.sessions += 1
        self.address = (self.address[0], int(accept.port))
        session = TestSession(
            (self.address[0], int(accept.port)),
            self.fmt,
            crypto=crypto,
            sock=sock,
            dscp=o.dscp,
            batch=o.batch,
            busy_poll=o.busy_poll,
        )
        self._current = session
        return session

    def close_session(self, session: TestSession) -> None:
        try:
            if self._client is not None and not self._client.closed:
                self._client.stop()
        except ClientError as exc:
            raise BenchError(str(exc)) from None
        finally:
            session.close()
            self._current = None

    def stop(self) -> None:
        if self._current is not None:
            with contextlib.suppress(Exception):
                self.close_session(self._current)
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None


def throwaway_crypto(fmt: TestFormat) -> TestPacketCrypto | None:
    """Throw-away keys, so that measuring the sender costs what protecting packets costs."""
    if fmt.test_mode is TestMode.OPEN:
        return None
    return TestPacketCrypto(TestKeys(bytes(16), bytes(32)), fmt.test_mode)
