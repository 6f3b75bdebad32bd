"""`twamp reflect`: a TWAMP Light / STAMP Session-Reflector without TWAMP-Control.

RFC 5357 Appendix I (TWAMP Light) and RFC 8762 (STAMP): no control protocol, every datagram from
an allowed peer is answered. Stateless by default (the reply carries the sender's sequence
number, which is what a STAMP sender expects); `--stateful` keeps a counter per sender
(RFC 5357 Appendix I), keyed by address, port and SSID (RFC 8972 §3), in a table of
`--max-senders` that evicts the least recently used sender when full (a warning line says so).
`--workers N` runs N processes on the same port with SO_REUSEPORT, so the kernel spreads senders
over them, each with one reflector loop (one thread) for all its sockets; the parent starts
them, stops them by PID and adds up their counters; with `--metrics` it serves the sum of the
counters each worker reports over its pipe every `_REPORT_S`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import ipaddress
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any, Protocol

import click

from .. import dataplane
from ..constants import TWAMP_TEST_PORT, TestMode
from ..dataplane.sockets import open_test_socket
from ..dataplane.types import T3_BOUNDS_NS, add_counts, t3_counts
from ..hostport import parse_hostport
from ..inet import check_dscp
from ..metrics_export import (
    MetricsEndpoint,
    ReflectorCollector,
    parse_metrics_address,
    start_metrics,
)
from ..wire.testformat import TestFormat
from .common import UserError, friendly_errors, setup_logging
from .config import config_options, dump_config, dump_requested
from .daemon import (
    PidFile,
    apply_log_format,
    daemon_options,
    daemon_settings,
    drop_privileges,
)

__all__ = ["ReflectConfig", "SignalStop", "parse_listen", "reflect", "serve"]

_COUNTER_ORDER = (
    "received",
    "reflected",
    "unknown_peer",
    "malformed",
    "auth_failed",
    "late",
    "send_errors",
    "light_evicted",
    "rate_limited",
)
_log = logging.getLogger("twamp.reflect")
_TICK_S = 0.2  # how often the main loop looks at its stop flag
_POLL_S = 0.05  # SignalStop.wait's sleep slice
_WORKER_START_S = 10.0
_WORKER_STOP_S = 5.0
# --workers N --metrics: each worker sends its counters to the parent this often, so a scrape of
# the parent's endpoint is at most this old (plus one tick).
_REPORT_S = 1.0


def parse_listen(text: str) -> tuple[str, int]:
    """'ADDR:PORT', '[V6]:PORT', ':PORT' (any address), 'ADDR' (port 862) -> (host, port)."""
    try:
        return parse_hostport(text, TWAMP_TEST_PORT, listen=True)
    except ValueError as exc:
        raise UserError(f"bad --listen {exc}") from None


@dataclass(frozen=True)
class ReflectConfig:
    """Plain values only: a worker process rebuilds its sockets and policy from them."""

    listen: tuple[tuple[str, int], ...]
    stateful: bool = False
    allow: tuple[str, ...] = ()
    stamp: bool = False
    dscp: int | None = None
    batch: int = 64
    busy_poll: bool = False
    stats_interval: float = 0.0
    reuse_port: bool = False
    max_senders: int = 4096
    symmetric_only: bool = False
    metrics: tuple[str, int] | None = None
    user: str | None = None
    group: str | None = None
    """Privileges to drop to once the sockets are bound (each worker drops its own)."""
    rate_pps: int = 0
    burst: int = 16
    t3_diagnostic: bool = False
    """Measure the T3 error: each reply's transmit Timestamp against the kernel's transmit
    stamp of the same reply (`Reflector(tx_timestamps=True).t3_error()`)."""


def _open(host: str, port: int, reuse_port: bool) -> socket.socket:
    if host:
        return open_test_socket(host, port, reuse_port=reuse_port)
    # No address: dual-stack IPv6 wildcard, or IPv4 where IPv6 is off.
    try:
        return open_test_socket("::", port, reuse_port=reuse_port)
    except OSError:
        return open_test_socket("0.0.0.0", port, reuse_port=reuse_port)


def _where(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _counters_text(counters: Mapping[str, int]) -> str:
    return ", ".join(f"{name.replace('_', ' ')} {counters.get(name, 0)}" for name in _COUNTER_ORDER)


_add = add_counts
_t3_counts = t3_counts


def t3_text(counters: Mapping[str, int]) -> str | None:
    """The T3 diagnostic in one line, µs; None without it. Percentiles are upper bounds (the
    histogram's power-of-two buckets)."""
    if "t3_samples" not in counters:
        return None
    n = counters["t3_samples"]
    if n == 0:
        return "T3 error: no transmit stamp from the kernel yet (no reply sent, or none reported)"

    def bound(q: float) -> str:
        for b in T3_BOUNDS_NS:
            if counters[f"t3_le_{b}_ns"] >= q * n:
                return f"<= {min(b, counters['t3_max_ns']) / 1e3:.1f}"
        return f"> {T3_BOUNDS_NS[-1] / 1e3:.1f}"

    return (
        f"T3 error (kernel transmit stamp - T3 written): {n} replies, "
        f"mean {counters['t3_sum_ns'] / n / 1e3:.1f} us, p50 {bound(0.5)} us, "
        f"p99 {bound(0.99)} us, max {counters['t3_max_ns'] / 1e3:.1f} us"
    )


class SignalStop:
    """A stop request that a signal handler may set: one plain attribute, no lock.

    Why not `threading.Event`: its ``set()`` takes the Event's lock, and a Python signal handler
    runs in the main thread between two bytecodes, possibly while that same thread holds the lock
    inside ``wait()`` or ``set()``; two signals close together then hang the process for good
    (issue 12: 2 hangs in 74 tries). `wait` here polls instead of blocking on a lock.
    """

    __slots__ = ("signum",)

    def __init__(self) -> None:
        self.signum = 0

    def set(self, signum: int = signal.SIGTERM) -> None:
        self.signum = int(signum)

    def is_set(self) -> bool:
        return self.signum != 0

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.signum:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, _POLL_S))
        return self.signum != 0


class _Stop(Protocol):
    """What `serve` needs of its `stop` argument: `SignalStop`, or a `threading.Event`."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float) -> bool: ...


@contextlib.contextmanager
def _stop_on_signals(stop: SignalStop) -> Iterator[None]:
    """SIGINT and SIGTERM set `stop` (and nothing else: see `SignalStop`); restored at exit,
    unless a signal stopped us: then further ones are ignored until the process ends."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.signum = signum

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            # Stopped by a signal: the process is on its way out, and a second signal arriving
            # now must not turn a clean exit into a KeyboardInterrupt traceback or exit -15.
            signal.signal(sig, signal.SIG_IGN if stop.signum else old)


def _wait(stop: _Stop, stats_interval: float, stats: Any, tick: Any = None) -> None:
    next_stats = time.monotonic() + stats_interval if stats_interval > 0 else None
    while not stop.wait(_TICK_S):
        if tick is not None:
            tick()
        if next_stats is not None and time.monotonic() >= next_stats:
            stats()
            next_stats += stats_interval


def serve(
    config: ReflectConfig,
    stop: _Stop,
    *,
    ready: Any = None,
    echo: Any = click.echo,
    report: Any = None,
) -> dict[str, int]:
    """Reflect on every `config.listen` address until `stop` is set; the summed counters.

    `ready(addresses)` is called once the sockets are bound and the reflectors run;
    `report(counters)` (a `--workers` worker's pipe to its parent) every `_REPORT_S` with the
    summed `counters()` and `residence()` of the reflectors.
    """
    fmt = TestFormat(TestMode.OPEN, stamp=config.stamp)
    policy = dataplane.LightPolicy(
        fmt,
        stateful=config.stateful,
        allow=tuple(ipaddress.ip_network(n, strict=False) for n in config.allow),
        dscp=config.dscp,
        max_peers=config.max_senders,
        symmetric_only=config.symmetric_only,
        rate_pps=config.rate_pps,
        burst=config.burst,
    )
    socks: list[socket.socket] = []
    reflectors: list[Any] = []
    endpoint: MetricsEndpoint | None = None
    # One loop (one thread, one epoll set) for every listening socket of this process; with
    # --workers N each worker process runs its own, so N loops in all.
    loop = dataplane.ReflectorLoop(batch=config.batch, busy_poll=config.busy_poll)
    try:
        for host, port in config.listen:
            try:
                socks.append(_open(host, port, config.reuse_port))
            except OSError as exc:
                shown = f"[{host}]:{port}" if ":" in host else f"{host or '*'}:{port}"
                hint = {
                    errno.EADDRINUSE: "another program uses that port: stop it or choose "
                    "another --listen",
                    errno.EACCES: "ports below 1024 need root or CAP_NET_BIND_SERVICE",
                    errno.EADDRNOTAVAIL: "that address is not on this host: check --listen",
                }.get(exc.errno or 0, "check --listen")
                raise UserError(
                    f"cannot listen on UDP {shown}: {exc.strerror or exc}; {hint}"
                ) from None
        for sock in socks:
            reflectors.append(
                dataplane.Reflector(
                    sock, loop=loop, light=policy, tx_timestamps=config.t3_diagnostic
                )
            )
        for reflector in reflectors:
            reflector.start()

        def counters() -> dict[str, int]:
            total: dict[str, int] = {}
            for reflector in reflectors:
                _add(total, reflector.counters())
                _add(total, reflector.residence())
                _add(total, _t3_counts(reflector.t3_error()))
            return total

        if config.metrics is not None:
            collector = ReflectorCollector(counters, dataplane.IMPLEMENTATION)
            endpoint = start_metrics(config.metrics, [collector])
            echo(f"twamp reflect: metrics on {endpoint.url}")
        drop_privileges(config.user, config.group)
        if ready is not None:
            ready([_where(s) for s in socks])

        def stats() -> None:
            total: dict[str, int] = {}
            for reflector in reflectors:
                _add(total, reflector.counters())
                _add(total, _t3_counts(reflector.t3_error()))
            echo(f"pid {os.getpid()}: {_counters_text(total)}")
            t3 = t3_text(total)
            if t3 is not None:
                echo(f"pid {os.getpid()}: {t3}")

        evicted = [0]

        def table_full() -> None:
            # The loop only counts (it never logs); the first eviction after a quiet spell is
            # one warning line, so a flood of new senders is one line per tick, not per sender.
            now = sum(r.counters().get("light_evicted", 0) for r in reflectors)
            if now > evicted[0]:
                _log.warning(
                    "stateful Light table full (%d senders): %d least recently used sender(s) "
                    "evicted, %d in all; raise --max-senders if they are all active",
                    config.max_senders,
                    now - evicted[0],
                    now,
                )
                evicted[0] = now

        next_report = [time.monotonic()]

        def tick() -> None:
            if config.stateful:
                table_full()
            if report is not None and time.monotonic() >= next_report[0]:
                next_report[0] += _REPORT_S
                report(counters())

        _wait(stop, config.stats_interval, stats, tick)
    finally:
        if endpoint is not None:
            endpoint.close()
        for reflector in reflectors:
            reflector.stop()
        loop.close()
        for sock in socks:
            sock.close()
    total: dict[str, int] = {}
    for reflector in reflectors:
        _add(total, reflector.counters())
        _add(total, _t3_counts(reflector.t3_error()))
    return total


def _worker(config: ReflectConfig, conn: Connection) -> None:
    """One worker process: report readiness, reflect until SIGINT/SIGTERM, report counters
    (with --metrics also every `_REPORT_S`, as "report" messages the parent serves)."""
    stop = SignalStop()
    metrics = config.metrics is not None
    with _stop_on_signals(stop):
        try:
            counters = serve(
                dataclasses.replace(config, metrics=None),  # the parent serves them
                stop,
                ready=lambda where: conn.send(("ready", where)),
                echo=lambda line: print(line, flush=True),
                report=(lambda counters: conn.send(("report", counters))) if metrics else None,
            )
        except Exception as exc:  # reported by the parent as one sentence
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            conn.close()
            return
        conn.send(("counters", counters))
        conn.close()


def _recv(conn: Connection, timeout: float) -> tuple[str, Any] | None:
    if not conn.poll(timeout):
        return None
    try:
        kind, value = conn.recv()
    except (EOFError, OSError):
        return None
    return str(kind), value


def _run_workers(
    config: ReflectConfig, workers: int, header: str, stop: SignalStop
) -> dict[str, int]:
    """Start the workers, wait for `stop` (set by the caller's signal handler), stop them."""
    ctx = multiprocessing.get_context("fork")
    procs: list[tuple[Any, Connection]] = []
    # --metrics: the latest counters of each worker (by index), replaced whole by each report,
    # so a scrape (the endpoint's thread) reads a consistent dict per worker; a worker that
    # died keeps its last report, so the exported counters never go backwards.
    latest: dict[int, dict[str, int]] = {}
    endpoint: MetricsEndpoint | None = None
    early: dict[int, tuple[str, Any]] = {}

    def summed() -> dict[str, int]:
        total: dict[str, int] = {}
        for counters in list(latest.values()):
            _add(total, counters)
        return total

    try:
        for _ in range(workers):
            receiver, sender = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker, args=(config, sender), daemon=True)
            proc.start()
            sender.close()
            procs.append((proc, receiver))
        where: list[str] = []
        for proc, receiver in procs:
            message = _recv(receiver, _WORKER_START_S)
            if message is None or message[0] != "ready":
                reason = message[1] if message else "no sign of life"
                raise UserError(f"worker {proc.pid} did not start: {reason}")
            where = message[1]
        pids = ", ".join(str(p.pid) for p, _ in procs)
        click.echo(f"{header} on {', '.join(where)}, {workers} workers (PIDs {pids})")
        if config.metrics is not None:
            # Started after the fork, so no worker inherits the listening socket.
            endpoint = start_metrics(
                config.metrics, [ReflectorCollector(summed, dataplane.IMPLEMENTATION)]
            )
            click.echo(
                f"twamp reflect: metrics on {endpoint.url} (the {workers} workers' counters, "
                f"reported every {_REPORT_S:g} s)"
            )
        # Every socket this process needs is bound (the workers bound theirs): the parent, which
        # only relays counters and signals, runs without root from here on, like the workers.
        # The workers run as the same user, so the SIGTERMs below still reach them.
        drop_privileges(config.user, config.group)
        sys.stdout.flush()
        while not stop.wait(_TICK_S):
            for index, (_, receiver) in enumerate(procs):
                while index not in early and (message := _recv(receiver, 0)) is not None:
                    if message[0] == "report":
                        latest[index] = message[1]
                    else:  # a worker that stopped on its own: its last word, kept for below
                        early[index] = message
            if not any(p.is_alive() for p, _ in procs):
                break
    finally:
        if endpoint is not None:
            endpoint.close()
        for proc, _ in procs:
            if proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        total: dict[str, int] = {}
        for index, (proc, receiver) in enumerate(procs):
            message = early.get(index) or _recv(receiver, _WORKER_STOP_S)
            while message is not None and message[0] == "report":
                message = _recv(receiver, _WORKER_STOP_S)
            if message is not None and message[0] == "counters":
                click.echo(f"worker {proc.pid}: {_counters_text(message[1])}")
                t3 = t3_text(message[1])
                if t3 is not None:
                    click.echo(f"worker {proc.pid}: {t3}")
                _add(total, message[1])
            proc.join(_WORKER_STOP_S)
            if proc.is_alive():
                proc.kill()
                proc.join(_WORKER_STOP_S)
            receiver.close()
    return total


@click.command()
@click.option(
    "-l",
    "--listen",
    multiple=True,
    metavar="ADDR:PORT",
    help="Address to reflect on (repeatable). Default: every address, UDP port 862.",
)
@click.option("--stateful", is_flag=True, help="Count sequence numbers per sender.")
@click.option(
    "--max-senders",
    type=int,
    default=4096,
    show_default=True,
    help="--stateful: senders kept; a new one then evicts the least recently used.",
)
@click.option("--allow", multiple=True, metavar="NET", help="Answer only these networks.")
@click.option(
    "--rate-limit",
    "rate_pps",
    type=int,
    default=0,
    help="Answer at most this many datagrams per second per source address (0: no limit).",
)
@click.option(
    "--burst",
    type=int,
    default=16,
    show_default=True,
    help="--rate-limit: datagrams a source may send back to back.",
)
@click.option(
    "--symmetric-only",
    is_flag=True,
    help="Drop requests shorter than their reply: never answer with more than was sent.",
)
@click.option("--stamp", is_flag=True, help="Reply with the 44-octet STAMP base packet.")
@click.option("--dscp", type=int, help="DSCP of replies (default: that of the request).")
@click.option("--workers", type=int, default=1, show_default=True, help="Processes on one port.")
@click.option("--batch", type=int, default=64, show_default=True, help="Datagrams per wake-up.")
@click.option("--busy-poll", is_flag=True, help="Spin instead of sleeping (a core per socket).")
@click.option(
    "--stats-interval", type=float, default=0.0, help="Print counters every N seconds (0: off)."
)
@click.option(
    "--t3-diagnostic",
    is_flag=True,
    help="Measure how early each reply's transmit Timestamp (T3) is against the kernel's "
    "transmit stamp of it (SO_TIMESTAMPING): in the statistics and the metrics.",
)
@click.option(
    "--metrics",
    metavar="HOST:PORT",
    help="Serve Prometheus metrics on http://HOST:PORT/metrics (e.g. :9863; with --workers the "
    "parent serves the workers' counters, reported every second).",
)
@daemon_options
@config_options("reflect")
@click.option("-v", "--verbose", count=True, help="More log output (-vv: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Less log output.")
@friendly_errors
def reflect(
    listen: tuple[str, ...],
    stateful: bool,
    max_senders: int,
    allow: tuple[str, ...],
    rate_pps: int,
    burst: int,
    symmetric_only: bool,
    stamp: bool,
    dscp: int | None,
    workers: int,
    batch: int,
    busy_poll: bool,
    stats_interval: float,
    t3_diagnostic: bool,
    metrics: str | None,
    verbose: int,
    quiet: bool,
) -> None:
    """TWAMP Light / STAMP reflector (no TWAMP-Control); runs until SIGINT or SIGTERM."""
    daemon = daemon_settings()
    if dump_requested():
        params = {**click.get_current_context().params, **dataclasses.asdict(daemon)}
        click.echo(dump_config("reflect", params), nl=False)
        return
    setup_logging(verbose, quiet)
    apply_log_format(daemon.log_format)
    daemon.check()
    addresses = tuple(parse_listen(x) for x in listen) or (("", TWAMP_TEST_PORT),)
    for net in allow:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise UserError(f"bad --allow {net!r}: not an IP network like 192.0.2.0/24") from None
    if dscp is not None:
        try:
            check_dscp(dscp)
        except ValueError:
            raise UserError(f"--dscp must be 0-63, not {dscp}") from None
    if workers < 1:
        raise UserError(f"--workers must be at least 1, not {workers}")
    if rate_pps < 0:
        raise UserError(f"--rate-limit cannot be negative, not {rate_pps}")
    if burst < 1:
        raise UserError(f"--burst must be at least 1, not {burst}")
    if max_senders < 1:
        raise UserError(f"--max-senders must be at least 1, not {max_senders}")
    if batch < 1:
        raise UserError(f"--batch must be at least 1, not {batch}")
    if not stats_interval >= 0:
        raise UserError("--stats-interval cannot be negative")
    if workers > 1 and any(port == 0 for _, port in addresses):
        raise UserError("--workers needs an explicit port: the workers must share it")
    config = ReflectConfig(
        listen=addresses,
        stateful=stateful,
        allow=allow,
        stamp=stamp,
        dscp=dscp,
        batch=batch,
        busy_poll=busy_poll,
        stats_interval=stats_interval,
        reuse_port=workers > 1,
        max_senders=max_senders,
        symmetric_only=symmetric_only,
        metrics=parse_metrics_address(metrics) if metrics is not None else None,
        user=daemon.user,
        group=daemon.group,
        rate_pps=rate_pps,
        burst=burst,
        t3_diagnostic=t3_diagnostic,
    )
    kind = "stateful" if stateful else "stateless"
    reply = "STAMP" if stamp else "TWAMP"
    header = (
        f"twamp reflect: {dataplane.IMPLEMENTATION} reflector, {kind} TWAMP Light, {reply} replies"
    )
    # The pid file is the parent's; privileges are dropped in serve(), by whoever bound.
    pid_file = PidFile(daemon.pid_file) if daemon.pid_file else None
    if pid_file is not None:
        pid_file.write()
    stop = SignalStop()
    try:
        # The handlers stay until the summary is out: a second signal must not interrupt it.
        with _stop_on_signals(stop):
            if workers > 1:
                total = _run_workers(config, workers, header, stop)
            else:
                total = serve(
                    config,
                    stop,
                    ready=lambda where: click.echo(f"{header} on {', '.join(where)}"),
                )
            click.echo(f"twamp reflect: stopped; {_counters_text(total)}")
            t3 = t3_text(total)
            if t3 is not None:
                click.echo(f"twamp reflect: {t3}")
    finally:
        if pid_file is not None:
            pid_file.remove()


if __name__ == "__main__":
    reflect(prog_name="twamp reflect")
