"""`twamp server`: the TWAMP Server and Session-Reflector ("complete TWAMP", RFC 5357 §5.1).

Runs `net.server.TwampServer` until SIGINT or SIGTERM, then ends every session and exits 0.
Secure modes (authenticated, encrypted, mixed) need a perfSONAR pfs key file (`--keyfile`):
without one they are not offered, with a warning. Bad arguments end in one sentence and a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import ipaddress
import logging
import signal
from collections.abc import Callable
from ipaddress import IPv4Network, IPv6Network
from typing import Any

import click

from .. import dataplane
from ..constants import (
    DEFAULT_REFWAIT_NS,
    DEFAULT_SERVWAIT_NS,
    SECURE_CONTROL_MODES,
    TWAMP_CONTROL_PORT,
    Mode,
    mode_names,
)
from ..hostport import parse_hostport
from ..metrics_export import MetricsEndpoint, ServerCollector, parse_metrics_address, start_metrics
from ..net.keyfile import load_keyfile
from ..net.server import DEFAULT_PORT_RANGE, ServerConfig, TwampServer
from ..timestamps import NS
from .common import UserError, friendly_errors, setup_logging
from .config import config_options, dump_config, dump_requested
from .daemon import DaemonSettings, apply_log_format, daemon_options, daemon_settings
from .reflect import t3_text

__all__ = ["parse_listen", "parse_modes", "parse_port_range", "server"]

log = logging.getLogger("twamp.server")

_MODE_BY_NAME = {
    "open": Mode.UNAUTHENTICATED,
    "unauthenticated": Mode.UNAUTHENTICATED,
    "authenticated": Mode.AUTHENTICATED,
    "encrypted": Mode.ENCRYPTED,
    "mixed": Mode.MIXED,
}
_ALL_MODES = "open,authenticated,encrypted,mixed"
_DEFAULT_CONFIG = ServerConfig()
_METRICS_TIMEOUT_S = 5.0


def parse_listen(text: str) -> tuple[str, int]:
    """'ADDR:PORT', '[V6]:PORT', 'ADDR' or '[V6]' (port 862), bare 'V6' -> (address, port)."""
    host, port = parse_hostport(text, TWAMP_CONTROL_PORT, listen=True)
    if not host:
        raise ValueError(f"{text!r}: give the address to listen on, e.g. 0.0.0.0:862")
    return host, port


def parse_modes(text: str) -> Mode:
    """'open,authenticated,encrypted,mixed' (any of them, or 'all') -> the security Mode bits."""
    modes = Mode(0)
    for raw in text.split(","):
        name = raw.strip().lower()
        if name == "all":
            modes |= parse_modes(_ALL_MODES)
        elif name in _MODE_BY_NAME:
            modes |= _MODE_BY_NAME[name]
        else:
            raise ValueError(f"unknown mode {raw.strip()!r}; choose from {_ALL_MODES}")
    return modes


def parse_port_range(text: str) -> tuple[int, int]:
    """'LO-HI' -> (lo, hi), inclusive, 1 <= lo <= hi <= 65535."""
    lo_text, sep, hi_text = text.strip().partition("-")
    if not sep or not lo_text.strip().isdigit() or not hi_text.strip().isdigit():
        raise ValueError(f"{text!r} is not LO-HI, e.g. 20000-20999")
    lo, hi = int(lo_text), int(hi_text)
    if not 1 <= lo <= hi <= 0xFFFF:
        raise ValueError(f"{text!r}: ports must be 1-65535 with LO <= HI")
    return lo, hi


def _callback(parse: Callable[[str], object]) -> Callable[..., object]:
    """A click callback that turns the parser's ValueError into BadParameter."""

    def convert(ctx: click.Context, param: click.Parameter, value: Any) -> object:
        if value is None:
            return None
        try:
            if isinstance(value, tuple):
                return tuple(parse(v) for v in value)
            return parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None

    return convert


def _network(text: str) -> IPv4Network | IPv6Network:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a network such as 192.0.2.0/24 or 2001:db8::/32"
        ) from None


def _seconds(value: float, option: str) -> int | None:
    """Seconds -> ns; 0 disables the timer."""
    if value < 0:
        raise click.BadParameter(
            "must be 0 (off) or a positive number of seconds", param_hint=option
        )
    return None if value == 0 else int(value * NS)


@click.command("server")
@click.option(
    "--listen",
    "-l",
    "listen",
    multiple=True,
    callback=_callback(parse_listen),
    metavar="ADDR:PORT",
    help="TWAMP-Control address to listen on (repeatable; IPv6 as [ADDR]:PORT; port 862 if "
    "omitted). Default: [::]:862, dual-stack.",
)
@click.option(
    "--modes",
    default=_ALL_MODES,
    show_default=True,
    callback=_callback(parse_modes),
    help="Security modes to offer, comma-separated.",
)
@click.option(
    "--keyfile",
    type=click.Path(exists=True, dir_okay=False, readable=True),
    help="perfSONAR pfs file of 'KEYID HEXKEY' lines; needed for the secure modes.",
)
@click.option(
    "--port-range",
    default=f"{DEFAULT_PORT_RANGE[0]}-{DEFAULT_PORT_RANGE[1]}",
    show_default=True,
    callback=_callback(parse_port_range),
    metavar="LO-HI",
    help="UDP ports for test sessions.",
)
@click.option(
    "--servwait",
    type=float,
    default=DEFAULT_SERVWAIT_NS / NS,
    show_default=True,
    help="Seconds an idle control connection is kept (SERVWAIT); 0: forever.",
)
@click.option(
    "--refwait",
    type=float,
    default=DEFAULT_REFWAIT_NS / NS,
    show_default=True,
    help="Seconds a started session without test packets is kept (REFWAIT); 0: forever.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=0),
    default=_DEFAULT_CONFIG.max_connections,
    show_default=True,
)
@click.option(
    "--max-connections-per-address",
    type=click.IntRange(min=0),
    default=_DEFAULT_CONFIG.max_connections_per_address,
    show_default=True,
    help="Control connections from one client address; more get Modes 0.",
)
@click.option(
    "--setup-timeout",
    type=float,
    default=(_DEFAULT_CONFIG.setup_timeout_ns or 0) / NS,
    show_default=True,
    help="Seconds from connect to the first command (set-up); 0: no limit beyond SERVWAIT.",
)
@click.option(
    "--listen-backlog",
    type=click.IntRange(min=1),
    default=None,
    help="Pending TCP connections the kernel queues per listener. Default: "
    "net.core.somaxconn (the kernel caps any larger value to it).",
)
@click.option(
    "--max-sessions",
    type=click.IntRange(min=0),
    default=_DEFAULT_CONFIG.max_sessions,
    show_default=True,
)
@click.option(
    "--max-sessions-per-client",
    type=click.IntRange(min=0),
    default=_DEFAULT_CONFIG.max_sessions_per_client,
    show_default=True,
    help="Sessions of one client address not yet stopped.",
)
@click.option(
    "--max-timeout",
    type=click.FloatRange(min=0),
    default=_DEFAULT_CONFIG.max_timeout_ns / NS,
    show_default=True,
    help="Cap, in seconds, on a session's Timeout: how long it reflects after Stop or after "
    "its control connection ended.",
)
@click.option(
    "--allow-third-party-sender",
    is_flag=True,
    help="Accept a Sender Address other than the control client's own (replies then go to a "
    "host that did not ask for them: an amplification risk).",
)
@click.option(
    "--shared-test-ports",
    is_flag=True,
    help="Let sessions whose senders differ share a test port, instead of one socket per "
    "session connect()ed to its sender (then strangers' packets reach the session's queue).",
)
@click.option(
    "--kdf-rate",
    type=click.FloatRange(min=0, min_open=True),
    default=_DEFAULT_CONFIG.kdf_per_s,
    show_default=True,
    help="Key derivations (PBKDF2, secure modes) a second per client address, after a burst "
    f"of {_DEFAULT_CONFIG.kdf_burst}; more get Server-Start Accept 5.",
)
@click.option(
    "--allow",
    multiple=True,
    callback=_callback(_network),
    metavar="NET",
    help="Serve only clients in this network (repeatable). Default: everyone.",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=_DEFAULT_CONFIG.batch,
    show_default=True,
    help="Test packets the reflector drains per wake-up.",
)
@click.option(
    "--busy-poll",
    is_flag=True,
    help="Reflector threads spin instead of sleeping (lower latency, a core per test port).",
)
@click.option(
    "--t3-diagnostic",
    is_flag=True,
    help="Measure how early each reply's transmit Timestamp (T3) is against the kernel's "
    "transmit stamp of it (SO_TIMESTAMPING): in the exit statistics and the metrics.",
)
@click.option(
    "--metrics",
    metavar="HOST:PORT",
    callback=_callback(parse_metrics_address),
    help="Serve Prometheus metrics on http://HOST:PORT/metrics (e.g. :9862).",
)
@daemon_options
@config_options("server")
@click.option("-v", "--verbose", count=True, help="More logging (-vv: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only.")
@friendly_errors
def server(
    listen: tuple[tuple[str, int], ...],
    modes: Mode,
    keyfile: str | None,
    port_range: tuple[int, int],
    servwait: float,
    refwait: float,
    max_connections: int,
    max_connections_per_address: int,
    setup_timeout: float,
    listen_backlog: int | None,
    max_sessions: int,
    max_sessions_per_client: int,
    max_timeout: float,
    allow_third_party_sender: bool,
    shared_test_ports: bool,
    kdf_rate: float,
    allow: tuple[IPv4Network | IPv6Network, ...],
    batch: int,
    busy_poll: bool,
    t3_diagnostic: bool,
    metrics: tuple[str, int] | None,
    verbose: int,
    quiet: bool,
) -> None:
    """Run a TWAMP Server and Session-Reflector (RFC 5357) until SIGINT or SIGTERM."""
    daemon = daemon_settings()
    if dump_requested():
        params = {**click.get_current_context().params, **dataclasses.asdict(daemon)}
        click.echo(dump_config("server", params), nl=False)
        return
    setup_logging(verbose, quiet)
    apply_log_format(daemon.log_format)
    daemon.check()
    keys: dict[bytes, bytes] = {}
    if keyfile is not None:
        try:
            keys = load_keyfile(keyfile)
        except OSError as exc:
            raise UserError(f"cannot read the key file {keyfile}: {exc.strerror or exc}") from None
        if not keys and modes & SECURE_CONTROL_MODES:
            log.warning("the key file %s has no keys", keyfile)
    if modes & SECURE_CONTROL_MODES and not keys and not modes & ~SECURE_CONTROL_MODES:
        raise UserError("the authenticated, encrypted and mixed modes need --keyfile with keys")
    config = ServerConfig(
        listen=listen or _DEFAULT_CONFIG.listen,
        modes=modes,
        keys=keys,
        port_range=port_range,
        servwait_ns=_seconds(servwait, "--servwait"),
        refwait_ns=_seconds(refwait, "--refwait"),
        max_connections=max_connections,
        max_connections_per_address=max_connections_per_address,
        setup_timeout_ns=_seconds(setup_timeout, "--setup-timeout"),
        backlog=listen_backlog,
        max_sessions=max_sessions,
        max_sessions_per_client=max_sessions_per_client,
        max_timeout_ns=int(max_timeout * NS),
        allow_third_party_sender=allow_third_party_sender,
        connect_test_sockets=not shared_test_ports,
        kdf_per_s=kdf_rate,
        allow=allow,
        batch=batch,
        busy_poll=busy_poll,
        t3_diagnostic=t3_diagnostic,
    )
    asyncio.run(_serve(config, metrics, daemon))


def _start_metrics(twamp: TwampServer, address: tuple[str, int]) -> MetricsEndpoint:
    """Metrics read at scrape time: `stats()` runs on the server's loop, never beside it."""
    loop = asyncio.get_running_loop()

    async def read() -> dict[str, Any]:
        return twamp.stats()

    def stats() -> dict[str, Any]:
        return asyncio.run_coroutine_threadsafe(read(), loop).result(_METRICS_TIMEOUT_S)

    endpoint = start_metrics(address, [ServerCollector(stats)])
    log.info("metrics on %s", endpoint.url)
    return endpoint


async def _serve(
    config: ServerConfig,
    metrics: tuple[str, int] | None = None,
    daemon: DaemonSettings | None = None,
) -> None:
    twamp = TwampServer(config)
    try:
        await twamp.start()
    except OSError as exc:
        where = ", ".join(_show(h, p) for h, p in config.listen)
        hint = ""
        if isinstance(exc, PermissionError):
            hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        elif exc.errno == errno.EADDRINUSE:
            hint = "; another program listens there: stop it or choose another --listen"
        elif exc.errno == errno.EADDRNOTAVAIL:
            hint = "; that address is not on this host: check --listen"
        raise UserError(f"cannot listen on {where}: {exc.strerror or exc}{hint}") from None
    click.echo(
        f"twamp server: reflector {dataplane.IMPLEMENTATION} "
        f"(test crypto {dataplane.CRYPTO_BACKEND}), modes {mode_names(twamp.offered_modes)}, "
        f"listening on {', '.join(_show(h, p) for h, p in twamp.addresses)}",
        err=False,
    )
    endpoint = None
    # Bound: now metrics, the pid file (as root) and the privilege drop (nothing after needs
    # root: test sessions use unprivileged ports).
    try:
        endpoint = _start_metrics(twamp, metrics) if metrics is not None else None
        pid_file = daemon.started() if daemon is not None else None
    except BaseException:
        if endpoint is not None:
            endpoint.close()
        await twamp.stop()
        raise
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        # The handlers stay while sessions are ended: a second signal only sets the flag again.
        await twamp.stop()
        for sig in signals:
            loop.remove_signal_handler(sig)
            if stop.is_set():
                # On the way out: a late second signal must not become a traceback or exit -15.
                signal.signal(sig, signal.SIG_IGN)
        if endpoint is not None:
            endpoint.close()
        if pid_file is not None:
            pid_file.remove()
        stats = twamp.stats()
        conns, sessions = stats["connections"], stats["sessions"]
        log.info(
            "served %d connection(s), %d session(s); refused %d connection(s) (%d by the "
            "per-address cap), %d set-up timeout(s), %d session(s) (%d third-party), %d key "
            "derivation(s); %d Timeout(s) capped; reflector counters %s",
            conns["total"],
            sessions["total"],
            conns["refused"],
            conns["refused_per_address"],
            conns["setup_timeouts"],
            sessions["refused"],
            sessions["third_party_refused"],
            stats["key_derivations"]["refused"],
            sessions["timeouts_capped"],
            stats["reflector"],
        )
        t3 = t3_text(stats["t3"] or {"t3_samples": 0}) if config.t3_diagnostic else None
        if t3 is not None:
            log.info("%s", t3)


def _show(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


if __name__ == "__main__":
    server()
