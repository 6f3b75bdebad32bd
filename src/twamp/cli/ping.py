"""`twamp ping HOST[:PORT]`: a TWAMP test session with twping's conventions, and its report."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import click

from ..metrics_export import PingMetrics, parse_metrics_address, start_metrics
from ..net.client import ClientError, parse_modes
from ..net.keyfile import load_keys, pick_key
from ..ping import (
    IntervalReport,
    PingOptions,
    PingResult,
    Slot,
    continuous_count,
    parse_schedule,
    run_continuous,
    run_light_ping,
    run_ping,
)
from .common import UserError, friendly_errors, setup_logging
from .ping_output import (
    UNITS,
    format_machine,
    format_packets,
    format_raw,
    format_report,
    parse_dscp,
    parse_percentiles,
    parse_port_range,
)

# load_keys and pick_key live in twamp.net.keyfile; re-exported for cli/bench.py until it
# imports them from there.
__all__ = ["StopRequest", "format_report", "load_keys", "pick_key", "ping"]

log = logging.getLogger(__name__)


# -- command ------------------------------------------------------------------------------------


class StopRequest:
    """A stop flag that signal handlers may set: a plain attribute, no lock.

    `threading.Event.set()` takes the Event's lock; called from a handler while the main thread
    holds it (in `wait`), it deadlocks (issue 12). Assigning an attribute cannot.
    """

    __slots__ = ("signal",)

    def __init__(self) -> None:
        self.signal: int | None = None

    def is_set(self) -> bool:
        return self.signal is not None

    def set(self, signum: int = signal.SIGINT) -> None:
        self.signal = signum


@contextmanager
def _signals_stop(stop: StopRequest) -> Iterator[None]:
    """First SIGINT or SIGTERM: stop sending, stop the session, report. Second: give up at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _can_prompt() -> bool:
    return sys.stdin.isatty()


def _passphrase(key_id: str | None, key_file: str | None) -> tuple[str | None, bytes | None]:
    """-u without -k asks for the passphrase on a terminal, as twping does."""
    if key_id is not None and key_file is None:
        if not _can_prompt():
            raise UserError(
                f"-u {key_id} needs its passphrase: give the key file with -k FILE "
                "(no terminal to ask on)"
            )
        secret = click.prompt(f"Passphrase for {key_id}", hide_input=True, err=True)
        return key_id, secret.encode()
    return pick_key(key_id, key_file)


def _schedule(interval: str, poisson: bool) -> tuple[Slot, ...]:
    slots = parse_schedule(interval)
    if poisson:
        slots = tuple(Slot(s.seconds, True) for s in slots)
    return slots


_EPILOG = """\b
twping users: the same flags work (-c -i -D -z -F -R -a -b -n -M -Q -v -4 -6 -P -S -u -k -A -s -L
-E). Differences: a bare -i 0.1 is exponential, as in twping; -F writes twping's -R text lines,
not an .owp file; -b is accepted and ignored (percentiles are exact); errors exit with status 2
(twping: 1); no reply at all, or a server that closed the control connection, exits 1.
"""


class _TwpingCommand(click.Command):
    """twping's `-vN` (getopt "v::": the count only attached) as `-v --packets-limit N`.

    A click option with an optional value would take the target of `-v HOST` as its value.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        for arg in args:
            if len(arg) > 2 and arg.startswith("-v") and arg[2:].isdigit():
                out += ["-v", "--packets-limit", arg[2:]]
            else:
                out.append(arg)
        return super().parse_args(ctx, out)


@click.command(cls=_TwpingCommand, epilog=_EPILOG)
@click.argument("target", metavar="HOST[:PORT]")
@click.option("-c", "--count", type=int, default=100, show_default=True, help="Packets to send.")
@click.option(
    "-i",
    "--interval",
    default="0.1e",
    show_default=True,
    metavar="SCHEDULE",
    help="Gaps in seconds, as twping: 0.1e exponential (Poisson, the default kind), 0.01f "
    "fixed, several comma-separated are used in turn (0.1f,0.5e).",
)
@click.option("--poisson", is_flag=True, help="Make every gap of -i exponential.")
@click.option("--seed", type=int, help="Seed of the exponential gaps, for a repeatable run.")
@click.option(
    "-A",
    "--modes",
    "mode_letters",
    metavar="LETTERS",
    help="Allowed modes in order of preference: O open, A authenticated, E encrypted, "
    "M mixed. Default: the strongest the server offers (EAMO) with a key, O without.",
)
@click.option("-u", "--key-id", metavar="KEYID", help="KeyID (twping: username) of the secret.")
@click.option(
    "-k",
    "--key-file",
    metavar="FILE",
    help="Key file of 'KEYID HEX-PASSPHRASE' lines; without it, -u asks on the terminal.",
)
@click.option(
    "-D",
    "--dscp",
    default="0",
    show_default=True,
    help="DSCP to test with: 0-63 in decimal, 0x hex or 0 octal, or a name (EF, AF41, CS5).",
)
@click.option("-s", "--padding", type=int, help="Padding octets (default 27, or 64 in A/E).")
@click.option("-S", "--source", metavar="ADDR", help="Local address to send from.")
@click.option(
    "-p", "--port", type=int, default=0, help="Test port to ask the reflector for (0: its choice)."
)
@click.option(
    "-P",
    "--port-range",
    metavar="LOW-HIGH",
    help="Our local test port from this range (twping -P; 0: any).",
)
@click.option("-4", "ipv4", is_flag=True, help="IPv4 addresses only.")
@click.option("-6", "ipv6", is_flag=True, help="IPv6 addresses only.")
@click.option(
    "-z",
    "--delay-start",
    type=float,
    default=0.0,
    show_default=True,
    help="Seconds between session set-up and the first packet (twping -z).",
)
@click.option(
    "--timeout", type=float, default=10.0, show_default=True, help="Control timeout, seconds."
)
@click.option(
    "-L",
    "--wait",
    type=float,
    default=2.0,
    show_default=True,
    help="Seconds to wait for replies after the last packet (then a packet counts as lost).",
)
@click.option(
    "-E",
    "--end-delay",
    type=float,
    default=0.0,
    help="Extra seconds to wait before Stop-Sessions (twping -E; added to -L).",
)
@click.option("--light", is_flag=True, help="No control: a TWAMP Light/STAMP reflector (UDP 862).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--kernel-stamps/--no-kernel-stamps",
    default=True,
    show_default=True,
    help="Ask the kernel for every packet's transmit stamp (SO_TIMESTAMPING) and report the "
    "send-time error and the RTT from kernel stamps at both ends.",
)
@click.option(
    "--hw-timestamps",
    metavar="IFACE",
    help="Use the NIC's hardware transmit stamps of IFACE where it offers them (needs root to "
    "switch them on; else software stamps, said in one sentence).",
)
@click.option("--raw", metavar="FILE", help="Write one JSON line per packet to FILE.")
@click.option(
    "-F", "raw_text", metavar="FILE", help="Write twping's -R lines (one per packet) to FILE."
)
@click.option(
    "-R", "raw_stdout", is_flag=True, help="Print 'SEQNO STIME SS SERR RTIME RS RERR TTL' lines."
)
@click.option(
    "-a", "--percentiles", metavar="LIST", help="More round-trip percentiles, e.g. 50,90,99.9."
)
@click.option("-b", "bucket_width", type=float, help="Ignored: percentiles here are exact.")
@click.option(
    "-n",
    "--units",
    type=click.Choice(sorted(UNITS)),
    default="m",
    show_default=True,
    help="Time unit of the summary and -v: n, u, m or s.",
)
@click.option("-M", "machine", is_flag=True, help="Machine-readable KEY VALUE summary (seconds).")
@click.option("-Q", "no_summary", is_flag=True, help="No summary (twping -Q).")
@click.option(
    "-v",
    "--packets",
    "per_packet",
    is_flag=True,
    help="Print each packet's delays, as twping -v (-vN: the first N only).",
)
@click.option(
    "--packets-limit",
    type=click.IntRange(min=1),
    metavar="N",
    help="With -v: only the first N packets (twping's -vN).",
)
@click.option(
    "--log-level",
    type=click.Choice(["warning", "info", "debug"]),
    default="info",
    show_default=True,
    help="Log messages on stderr from this level up.",
)
@click.option("-q", "--quiet", is_flag=True, help="Only the summary.")
@click.option(
    "--continuous",
    is_flag=True,
    help="Run until stopped (SIGINT/SIGTERM), one session and one summary per interval "
    "(-c is ignored); reconnects when the server restarts.",
)
@click.option(
    "--summary-interval",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds per summary with --continuous.",
)
@click.option(
    "--summary-file",
    metavar="FILE",
    help="With --continuous: append one JSON line per summary to FILE.",
)
@click.option(
    "--metrics",
    metavar="HOST:PORT",
    help="With --continuous: serve Prometheus metrics on http://HOST:PORT/metrics.",
)
@friendly_errors
def ping(target: str, **p: Any) -> None:
    """Measure round trip, one-way delays and loss to a TWAMP server at HOST[:PORT]."""
    verbose = {"warning": 0, "info": 1, "debug": 2}[p["log_level"]]
    setup_logging(verbose, p["quiet"] or p["log_level"] == "warning")
    if p["ipv4"] and p["ipv6"]:
        raise UserError("-4 and -6 exclude each other: give one of them")
    options, light = _options(p)
    stop = StopRequest()
    if p["continuous"]:
        _continuous(target, options, light, stop, p)
        return
    if p["summary_file"] or p["metrics"]:
        raise UserError("--summary-file and --metrics go with --continuous: add it, or drop them")
    try:
        with _signals_stop(stop):
            runner = run_light_ping if light else run_ping
            result = runner(target, options, stop=stop)
    except ClientError as exc:
        raise UserError(str(exc)) from None
    except KeyboardInterrupt:
        raise UserError("interrupted before the test session started") from None
    _print(result, p)
    if result.control_closed:
        click.echo(
            "twamp ping: the server closed the control connection during the test; "
            "the results above stop there",
            err=True,
        )
        raise click.exceptions.Exit(1)
    if result.summary["counts"]["received"] == 0:
        # Like ping(8): no reply at all is a failure the caller's script should see.
        raise click.exceptions.Exit(1)


def _options(p: dict[str, Any]) -> tuple[PingOptions, bool]:
    modes = parse_modes(p["mode_letters"]) if p["mode_letters"] is not None else None
    light = bool(p["light"])
    if light and (
        p["key_id"] or p["key_file"] or (modes is not None and modes != parse_modes("O"))
    ):
        raise UserError("--light is unauthenticated only: drop -A, -u and -k")
    kid, secret = _passphrase(p["key_id"], p["key_file"])
    options = PingOptions(
        count=p["count"],
        schedule=_schedule(p["interval"], p["poisson"]),
        seed=p["seed"],
        modes=modes,
        key_id=kid,
        passphrase=secret,
        dscp=parse_dscp(p["dscp"]),
        padding=p["padding"],
        source=p["source"],
        port=p["port"],
        local_ports=parse_port_range(p["port_range"]) if p["port_range"] else None,
        family=4 if p["ipv4"] else 6 if p["ipv6"] else 0,
        delay_start=p["delay_start"],
        timeout=p["timeout"],
        wait=p["wait"] + max(p["end_delay"], 0.0),
        raw=p["raw"],
        kernel_stamps=p["kernel_stamps"],
        hw_timestamps=p["hw_timestamps"],
    )
    return options, light


def _print(result: PingResult, p: dict[str, Any]) -> None:
    if p["raw_text"]:
        try:
            Path(p["raw_text"]).write_text(format_raw(result) + "\n", encoding="utf-8")
        except OSError as exc:
            raise UserError(
                f"cannot write {p['raw_text']}: {exc.strerror or exc}; give -F a writable path"
            ) from None
    if p["raw_stdout"]:
        click.echo(format_raw(result))
        return  # -R implies -Q, as in twping
    if p["as_json"]:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    if p["per_packet"]:
        click.echo(format_packets(result, unit=p["units"], limit=p["packets_limit"]))
    if p["no_summary"]:
        return
    if p["machine"]:
        click.echo(format_machine(result))
        return
    percentiles = parse_percentiles(p["percentiles"]) if p["percentiles"] else ()
    click.echo(format_report(result, quiet=p["quiet"], unit=p["units"], percentiles=percentiles))


# -- continuous ---------------------------------------------------------------------------------


def _interval_line(report: IntervalReport) -> str:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(report.start_ns / 1e9))
    head = f"{when} {report.target} #{report.index}:"
    result = report.result
    if result is None:
        return f"{head} no session: {report.error}; trying again"
    c = result.summary["counts"]
    loss = "n/a" if c["loss_pct"] is None else f"{c['loss_pct']:.1f}%"
    rtt = result.summary["delay"]["rtt"]
    res = result.summary["delay"]["residence"]
    delays = "no replies"
    if rtt:
        delays = (
            f"rtt median {rtt['median'] / 1e6:.3f} / p99 {rtt['p99'] / 1e6:.3f} ms "
            f"(residence excluded; residence median {res['median'] / 1e6:.3f} ms)"
        )
    tail = "; the server closed the control connection" if result.control_closed else ""
    if result.interrupted:
        tail += " (interrupted)"
    bad = result.counters.get("malformed", 0)
    unparsable = f", {bad} unparsable" if bad else ""
    stamps = result.kernel_stamps
    if stamps is not None and stamps["send_error"] is not None:
        err = stamps["send_error"]
        missing = f", {stamps['missing']} unstamped" if stamps["missing"] else ""
        delays += (
            f"; send error median {err['median'] / 1e3:.1f} / p99 {err['p99'] / 1e3:.1f} us"
            f"{missing}"
        )
    return f"{head} {c['sent']} sent, {c['lost']} lost ({loss}){unparsable}, {delays}{tail}"


def _continuous(
    target: str, options: PingOptions, light: bool, stop: StopRequest, p: dict[str, Any]
) -> None:
    if options.raw is not None:
        raise UserError("--raw grows without end with --continuous: use --summary-file instead")
    continuous_count(options, p["summary_interval"])  # a ValueError here is one sentence
    metrics = PingMetrics(target)
    endpoint = None
    if p["metrics"]:
        endpoint = start_metrics(parse_metrics_address(p["metrics"]), [metrics])
        log.info("metrics on %s", endpoint.url)
    try:
        summary_file = open(p["summary_file"], "a", encoding="utf-8") if p["summary_file"] else None  # noqa: SIM115
    except OSError as exc:
        raise UserError(
            f"cannot append to {p['summary_file']}: {exc.strerror or exc}; give --summary-file "
            "a writable path"
        ) from None

    def on_interval(report: IntervalReport) -> None:
        click.echo(_interval_line(report))
        sys.stdout.flush()
        if report.result is None:
            metrics.session_failed()
        else:
            d = report.result.delays()
            metrics.add(report.result.summary, report.result.counters, d["rtt"], d["residence"])
        if summary_file is not None:
            summary_file.write(json.dumps(report.to_json(), separators=(",", ":")) + "\n")
            summary_file.flush()

    try:
        with _signals_stop(stop):
            run_continuous(
                target,
                options,
                interval=p["summary_interval"],
                light=light,
                stop=stop,
                on_interval=on_interval,
            )
    finally:
        if summary_file is not None:
            summary_file.close()
        if endpoint is not None:
            endpoint.close()
