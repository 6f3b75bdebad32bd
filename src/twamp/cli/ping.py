"""`twamp ping HOST[:PORT]`: a TWAMP test session with twping's conventions, and its report."""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import FrameType
from typing import Any

import click

from ..inet import tos_to_dscp
from ..net.client import ClientError, parse_modes
from ..net.keyfile import load_keys, pick_key
from ..ping import PingOptions, PingResult, run_light_ping, run_ping
from .common import UserError, friendly_errors, setup_logging

# load_keys and pick_key live in twamp.net.keyfile; re-exported for cli/bench.py until it
# imports them from there.
__all__ = ["format_report", "load_keys", "pick_key", "ping"]

log = logging.getLogger(__name__)

_NS_PER_MS = 1e6


# -- report -------------------------------------------------------------------------------------


def _ms(ns: int | float) -> str:
    return f"{ns / _NS_PER_MS:.3f}"


def _dist(d: Mapping[str, Any] | None, keys: tuple[str, ...] = ("min", "median", "max")) -> str:
    if not d:
        return "no samples"
    return " / ".join(f"{k} {_ms(d[k])}" for k in keys) + " ms"


def _hops(h: Mapping[str, Any] | None) -> str:
    if not h:
        return "unknown"
    if h["min"] == h["max"]:
        return str(h["min"])
    return f"{h['min']}-{h['max']} (mostly {h['mode']})"


def format_report(result: PingResult, *, quiet: bool = False) -> str:
    """The human summary: counts, delays in ms, jitter, hops (twping's content, tidier)."""
    s = result.summary
    c = s["counts"]
    d = s["delay"]
    sess = result.session
    lines = []
    if not quiet:
        schedule = "Poisson mean" if result.schedule == "poisson" else "every"
        lines.append(
            f"TWAMP ping {result.target}: mode {result.mode}, {sess['count']} packets "
            f"{schedule} {sess['interval_ms']:g} ms, padding {sess['padding']}, "
            f"DSCP {sess['dscp']}, "
            f"ports {sess['sender_port']} -> {sess['reflector_port']} ({result.implementation})"
        )
    lines.append(
        f"--- {result.target} statistics"
        + (" (interrupted)" if result.interrupted else "")
        + " ---"
    )
    loss = "n/a" if c["loss_pct"] is None else f"{c['loss_pct']:.1f}%"
    split = ""
    if c["forward_lost"] is not None:
        split = f" (forward {c['forward_lost']}, backward {c['backward_lost']})"
    reordered = s["reordering"]["round_trip"]["reordered"]
    lines.append(
        f"packets     {c['sent']} sent, {c['received']} received, {loss} loss{split}, "
        f"{c['duplicates']} duplicates, {reordered} reordered"
    )
    lines.append(f"round trip  {_dist(d['rtt'], ('min', 'median', 'p95', 'p99', 'max'))}")
    unsynced = "" if s["clocks_synced"] else " (clocks not synchronised)"
    lines.append(f"forward     {_dist(d['forward'])}{unsynced}")
    lines.append(f"backward    {_dist(d['backward'])}{unsynced}")
    lines.append(f"reflector   residence {_dist(d['residence'])}")
    ipdv = s["ipdv"]["rtt"]
    if ipdv:
        lines.append(f"jitter      round-trip IPDV {_dist(ipdv)}, stddev {_ms(ipdv['stddev'])} ms")
    else:
        lines.append("jitter      round-trip IPDV: no consecutive replies")
    hops = s["hops"]
    lines.append(
        f"hops        forward {_hops(hops['forward'])}, backward {_hops(hops['backward'])}"
    )
    tos = s["reply_tos"]
    if tos and set(tos) != {"0"}:
        shown = ", ".join(
            f"DSCP {tos_to_dscp(int(k))} x{v}"
            for k, v in sorted(tos.items(), key=lambda kv: int(kv[0]))
        )
        lines.append(f"reply TOS   {shown}")
    return "\n".join(lines)


# -- command ------------------------------------------------------------------------------------


@contextmanager
def _sigint_stops(stop: threading.Event) -> Iterator[None]:
    """First Ctrl-C: stop sending, stop the session, report. Second: give up at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@click.command()
@click.argument("target", metavar="HOST[:PORT]")
@click.option("-c", "--count", type=int, default=100, show_default=True, help="Packets to send.")
@click.option(
    "-i", "--interval", type=float, default=0.1, show_default=True, help="Seconds between packets."
)
@click.option("-E", "--poisson", is_flag=True, help="Exponential (Poisson) gaps of mean -i.")
@click.option("--seed", type=int, help="Seed of the Poisson schedule, for a repeatable run.")
@click.option(
    "-A",
    "--modes",
    "mode_letters",
    metavar="LETTERS",
    help="Allowed modes in order of preference: O open, A authenticated, E encrypted, "
    "M mixed. Default: the strongest the server offers (EAMO) with a key, O without.",
)
@click.option("-u", "--key-id", metavar="KEYID", help="KeyID of the shared secret.")
@click.option("-k", "--key-file", metavar="FILE", help="Key file: 'KEYID HEX-PASSPHRASE' lines.")
@click.option("-D", "--dscp", type=int, default=0, show_default=True, help="DSCP to test with.")
@click.option("-s", "--padding", type=int, help="Padding octets (default 27, or 64 in A/E).")
@click.option("-S", "--source", metavar="ADDR", help="Local address to send from.")
@click.option(
    "-p", "--port", type=int, default=0, help="Test port to ask the reflector for (0: its choice)."
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
    help="Seconds to wait for replies after the last packet.",
)
@click.option("--light", is_flag=True, help="No control: a TWAMP Light/STAMP reflector (UDP 862).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--raw", metavar="FILE", help="Write one JSON line per packet to FILE.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only the summary.")
@friendly_errors
def ping(
    target: str,
    count: int,
    interval: float,
    poisson: bool,
    seed: int | None,
    mode_letters: str | None,
    key_id: str | None,
    key_file: str | None,
    dscp: int,
    padding: int | None,
    source: str | None,
    port: int,
    timeout: float,
    wait: float,
    light: bool,
    as_json: bool,
    raw: str | None,
    verbose: int,
    quiet: bool,
) -> None:
    """Measure round trip, one-way delays and loss to a TWAMP server at HOST[:PORT]."""
    setup_logging(verbose, quiet)
    modes = parse_modes(mode_letters) if mode_letters is not None else None
    if light and (key_id or key_file or (modes is not None and modes != parse_modes("O"))):
        raise UserError("--light is unauthenticated only: drop -A, -u and -k")
    kid, secret = pick_key(key_id, key_file)
    options = PingOptions(
        count=count,
        interval=interval,
        poisson=poisson,
        seed=seed,
        modes=modes,
        key_id=kid,
        passphrase=secret,
        dscp=dscp,
        padding=padding,
        source=source,
        port=port,
        timeout=timeout,
        wait=wait,
        raw=raw,
    )
    stop = threading.Event()
    try:
        with _sigint_stops(stop):
            runner = run_light_ping if light else run_ping
            result = runner(target, options, stop=stop)
    except ClientError as exc:
        raise UserError(str(exc)) from None
    except KeyboardInterrupt:
        raise UserError("interrupted before the test session started") from None
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        click.echo(format_report(result, quiet=quiet))
    if result.summary["counts"]["received"] == 0:
        # Like ping(8): no reply at all is a failure the caller's script should see.
        raise click.exceptions.Exit(1)
