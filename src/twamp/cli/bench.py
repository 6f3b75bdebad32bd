"""`twamp-bench`: qualify a TWAMP reflector, ours or anyone's (RFC 2544 §26 methodology).

With no arguments it starts our fast-path reflector in a process of its own on loopback, on a
core apart from the sender's, runs a short default suite (about two minutes on a busy 2-core
machine) and prints a table.
`--target` measures any TWAMP Light / STAMP reflector, `--control` the reflector behind a full
TWAMP server, and `twamp-bench compare` several reflectors side by side under the same sender.
The library behind it is `twamp.bench`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click

from .. import __version__
from ..bench import cprogs
from ..bench.conditions import reflector_core, sender_plan
from ..bench.config import MEDIA, BenchSettings, parse_medium, parse_sizes, rfc2544_settings
from ..bench.engine import new_document, run_benchmark, run_fixed_rate
from ..bench.netns import NetnsError, clean_namespace
from ..bench.outputs import OutputError, Outputs, check_outputs, write_files
from ..bench.plot import MISSING as PLOT_MISSING
from ..bench.plot import PlotUnavailable, plot_report
from ..bench.plot import available as plot_available
from ..bench.report import compare, validate
from ..bench.tables import format_tables
from ..bench.targets import (
    BenchError,
    CommandReflector,
    ControlTarget,
    CReflector,
    LightTarget,
    LocalReflector,
    SessionOptions,
    Target,
    local_name,
)
from ..constants import TWAMP_CONTROL_PORT, TWAMP_TEST_PORT
from ..dataplane.sockets import DEFAULT_BUFFER
from ..hostport import parse_hostport
from ..net.client import parse_modes
from .common import UserError, friendly_errors, setup_logging
from .ping import pick_key

__all__ = ["bench", "main"]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

_ARGV_KEY = "twamp.bench.argv"

_SIZES_HELP = (
    "Comma-separated packet sizes in UDP payload octets (the TWAMP-Test packet: header plus "
    "padding; add 28 for IPv4 and UDP headers), 'min' for the smallest symmetric size of the "
    "mode (41 open, 112 authenticated/encrypted, 44 STAMP) and 'imix' for a 7:4:1 mix of "
    "64/576/1472 clipped to the mode's minimum."
)


def _float_list(text: str, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of numbers") from None
    if not values:
        raise click.BadParameter(f"give at least one {what}")
    return values


def _sizes(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    try:
        return parse_sizes(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _fractions(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    values = _float_list(value, "fraction")
    for v in values:
        if not 0 < v <= 100:
            raise click.BadParameter(f"{v:g} is not a percentage in (0, 100]")
    return values


# The measurement and output options, shared by `twamp-bench` and `compare` (declarations: one
# list, applied by `_measure_options`).
_MEASURE_OPTIONS = [
    click.option(
        "--sizes",
        default="min,128,512,1024,1472,imix",
        show_default=True,
        callback=_sizes,
        help=_SIZES_HELP,
    ),
    click.option(
        "--trials",
        type=click.IntRange(1, 100),
        default=3,
        show_default=True,
        help="Repetitions of every figure (reported as min / median / max).",
    ),
    click.option(
        "--trial-duration",
        type=click.FloatRange(0.01, 3600),
        default=0.2,
        show_default=True,
        help="Seconds per throughput trial.",
    ),
    click.option(
        "--latency-duration",
        type=click.FloatRange(0.01, 3600),
        help="Seconds per latency trial (default: the trial duration).",
    ),
    click.option(
        "--loss-tolerance",
        type=click.FloatRange(0, 100, max_open=True),
        default=0.1,
        show_default=True,
        help="Loss (%) allowed for the second throughput figure.",
    ),
    click.option(
        "--latency-fractions",
        default="10,50,90",
        show_default=True,
        callback=_fractions,
        help="Loads for the latency trials, % of the zero-loss rate found.",
    ),
    click.option(
        "--resolution",
        type=click.FloatRange(0.1, 100),
        default=5.0,
        show_default=True,
        help="Stop the rate search within this many %.",
    ),
    click.option(
        "--attempts",
        type=click.IntRange(1, 20),
        default=4,
        show_default=True,
        help="Trials at one rate that our sender could not hold (a stall, a shortfall) "
        "before that rate is given up as beyond this setup; such trials never count "
        "against the reflector.",
    ),
    click.option(
        "--min-rate",
        type=click.FloatRange(1, min_open=False),
        default=1000.0,
        show_default=True,
        help="Lowest rate to search (packets/s).",
    ),
    click.option(
        "--max-rate",
        type=click.FloatRange(1),
        help="Highest rate to search (packets/s); default: what the sender can offer.",
    ),
    click.option(
        "--max-delay",
        type=click.FloatRange(0.001),
        help="Loss threshold in ms: "
        "later replies count as lost (default 20 ms + twice the probe's RTT).",
    ),
    click.option(
        "--wait",
        type=click.FloatRange(0),
        help="Seconds to wait for late "
        "replies after each trial (default 1.5 x the loss threshold).",
    ),
    click.option(
        "--batch",
        type=click.IntRange(1, 1024),
        default=32,
        show_default=True,
        help="Sender receive batch.",
    ),
    click.option(
        "--reflector-batch",
        type=click.IntRange(1, 1024),
        default=64,
        show_default=True,
        help="Batch of the reflectors started here.",
    ),
    click.option(
        "--busy-poll",
        is_flag=True,
        help="Sender and the reflectors started here spin instead of sleeping.",
    ),
    click.option(
        "--rcvbuf",
        type=click.IntRange(4096),
        default=DEFAULT_BUFFER,
        show_default=True,
        help="Socket buffer sizes to ask for (octets).",
    ),
    click.option(
        "--netns",
        is_flag=True,
        help="As root: run everything in a fresh network namespace of its own (only lo, no "
        "netfilter, no connection tracking), deleted at the end (needs pyroute2).",
    ),
    click.option(
        "--no-pin",
        is_flag=True,
        help="Do not pin the sender and the reflector to separate cores.",
    ),
    click.option(
        "-D",
        "--dscp",
        type=click.IntRange(0, 63),
        default=0,
        show_default=True,
        help="DSCP of the test packets.",
    ),
    click.option(
        "--stamp", is_flag=True, help="STAMP packets (RFC 8762) instead of TWAMP Light ones."
    ),
    click.option(
        "--rfc2544",
        is_flag=True,
        help="RFC 2544's trial rules: its frame sizes, 60 s trials, 2 s waits, latency at "
        "the throughput rate for 120 s, 20 times (hours, not minutes).",
    ),
    click.option(
        "--medium",
        metavar="ETHERNET",
        help="Cap each size's search at the theoretical maximum frame rate of this Ethernet "
        f"({', '.join(MEDIA)}; RFC 2544 Appendix A), as --rfc2544 asks for LAN tests; a "
        "figure at the cap is reported as the medium's, not the reflector's. Default: no "
        "cap (loopback has no medium).",
    ),
    click.option(
        "--rate",
        type=click.FloatRange(1),
        help="Fixed-rate mode: offer this many packets/s (no search), with a report every "
        "--interval; the first of --sizes is sent.",
    ),
    click.option(
        "--duration",
        type=click.FloatRange(0.1, 86400),
        default=10.0,
        show_default=True,
        help="Fixed-rate mode: seconds to run.",
    ),
    click.option(
        "--interval",
        type=click.FloatRange(0.1, 3600),
        default=1.0,
        show_default=True,
        help="Fixed-rate mode: seconds per interval report.",
    ),
    click.option(
        "--sender-cores",
        type=click.IntRange(1, 64),
        default=1,
        show_default=True,
        help="Send from this many threads, each on a core of its own (when there are "
        "enough), so that a machine with more cores measures the reflector, not the sender.",
    ),
    click.option(
        "--sender",
        "sender_kind",
        type=click.Choice(["ours", "c"]),
        default="ours",
        show_default=True,
        help="ours: twamp's Sender (the compiled fast path when built); c: the C load "
        "generator shipped with twamp (built with the system C compiler on first use; "
        "unauthenticated TWAMP Light over IPv4 or IPv6, trials up to an hour), to tell a "
        "sender limit from a reflector's.",
    ),
    click.option(
        "--json",
        "json_out",
        metavar="FILE|-",
        help="Write the full report as JSON (schemas/bench.schema.json).",
    ),
    click.option("--csv", "csv_out", metavar="FILE|-", help="Write one row per figure."),
    click.option(
        "--raw",
        "raw_out",
        metavar="FILE|-",
        help="Write one JSON line per trial (every trial, in the order run).",
    ),
    click.option(
        "--plot",
        "plot_out",
        metavar="FILE",
        help="Draw throughput against size, RTT CDFs and loss over time (needs matplotlib; "
        "'twamp-bench plot REPORT.json' redraws from a saved report).",
    ),
    click.option("-v", "--verbose", count=True, help="More log output (-vv: debug)."),
    click.option("-q", "--quiet", is_flag=True, help="No table, no progress."),
]


def _measure_options(func: F) -> F:
    """Apply the shared measurement and output options."""
    for option in reversed(_MEASURE_OPTIONS):
        func = option(func)
    return func


def _settings(p: dict[str, Any]) -> BenchSettings:
    try:
        settings = BenchSettings(
            sizes=p["sizes"],
            trials=p["trials"],
            trial_duration_s=p["trial_duration"],
            latency_duration_s=p["latency_duration"],
            loss_tolerance_pct=p["loss_tolerance"],
            latency_fractions_pct=p["latency_fractions"],
            resolution_pct=p["resolution"],
            min_rate_pps=p["min_rate"],
            max_rate_pps=p["max_rate"],
            max_delay_ms=p["max_delay"],
            wait_s=p["wait"],
            sender_batch=p["batch"],
            busy_poll=p["busy_poll"],
            pin=not p["no_pin"],
            dscp=p["dscp"],
            sender_cores=p["sender_cores"],
            sender=p["sender_kind"],
            attempts=p["attempts"],
            medium=None if p["medium"] is None else parse_medium(p["medium"]),
        )
        if p["rfc2544"]:
            sizes = settings.sizes
            settings = rfc2544_settings(settings)
            if _given("sizes"):
                settings = replace(settings, sizes=sizes)
        return settings
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _given(name: str) -> bool:
    """Was this option given on the command line (not left at its default)?"""
    ctx = click.get_current_context()
    source = ctx.get_parameter_source(name)
    return source is not None and source is not click.core.ParameterSource.DEFAULT


def _session_options(p: dict[str, Any]) -> SessionOptions:
    return SessionOptions(
        dscp=p["dscp"],
        batch=p["batch"],
        busy_poll=p["busy_poll"],
        rcvbuf=p["rcvbuf"],
        sender=p["sender_kind"],
    )


class _Progress:
    """One self-overwriting stderr line, only when stderr is a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._width = 0

    def __call__(self, text: str) -> None:
        if not self.enabled:
            return
        text = text[:119]
        sys.stderr.write("\r" + text.ljust(self._width))
        sys.stderr.flush()
        self._width = len(text)

    def clear(self) -> None:
        if self.enabled and self._width:
            sys.stderr.write("\r" + " " * self._width + "\r")
            sys.stderr.flush()
            self._width = 0


def _outputs(p: dict[str, Any]) -> Outputs:
    return Outputs(json=p["json_out"], csv=p["csv_out"], raw=p["raw_out"], plot=p["plot_out"])


def _prerequisites(targets: list[Target], p: dict[str, Any], outputs: Outputs) -> None:
    """Everything that can fail before the first packet, checked before it (one sentence)."""
    try:
        check_outputs(outputs)
    except OutputError as exc:
        raise UserError(str(exc)) from None
    if outputs.plot is not None and not plot_available():
        raise UserError(PLOT_MISSING)
    if p["rate"] is not None and len(targets) != 1:
        raise click.UsageError("--rate measures one reflector: use it without compare")
    if p["sender_cores"] > 1 and any(isinstance(t, ControlTarget) for t in targets):
        raise click.UsageError("--sender-cores applies to TWAMP Light targets, not --control")
    if p["netns"] and any(isinstance(t, LightTarget | ControlTarget) for t in targets):
        raise click.UsageError(
            "--netns measures reflectors started here (fast, pure, c, cmd:), "
            "not --target, --control or addr:"
        )
    if p["sender_kind"] == "c":
        if any(isinstance(t, ControlTarget) or t.fmt.stamp for t in targets):
            raise click.UsageError("--sender c sends TWAMP Light only: not --control, not --stamp")
        try:
            cprogs.build("c_sender")
        except cprogs.BuildError as exc:
            raise UserError(f"--sender c: {exc}") from None
    for target in targets:
        try:
            target.prepare()
        except BenchError as exc:
            raise UserError(str(exc)) from None


def _emit(doc: dict[str, Any], outputs: Outputs, quiet: bool, progress: _Progress) -> None:
    """The table first, then every file asked for; also after Ctrl-C or SIGTERM."""
    progress.clear()
    if not outputs.to_stdout and not quiet:
        click.echo(format_tables(doc))
    try:
        write_files(doc, outputs, sys.stdout)
    except OSError as exc:
        raise UserError(f"cannot write the results: {exc.strerror or exc}") from None
    try:
        validate(doc)
    except Exception as exc:  # a bug of ours; the results are written already
        log.warning("the report does not match its schema: %s", exc)
    if outputs.plot is not None:
        try:
            plot_report(doc, outputs.plot)
        except PlotUnavailable as exc:
            raise UserError(str(exc)) from None


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so that it saves what Ctrl-C saves."""


@contextlib.contextmanager
def _sigterm_like_sigint() -> Iterator[list[int]]:
    """SIGTERM stops the run the way SIGINT does: results so far are printed and written.

    The handler raises in the main thread, exactly as Python's own SIGINT handler does; the
    Sender's loop polls for signals every few milliseconds and returns with the exception.
    """

    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def _measure(
    targets: list[Target],
    p: dict[str, Any],
    command: str,
    settings: BenchSettings,
    doc: dict[str, Any],
    progress: _Progress,
    cpus: list[int | None],
) -> None:
    argv = click.get_current_context().meta.get(_ARGV_KEY, sys.argv)
    if p["rate"] is not None:
        run_fixed_rate(
            targets[0],
            settings,
            doc,
            argv=argv,
            progress=progress,
            sender_cpus=cpus,
            rate=p["rate"],
            duration_s=p["duration"],
            interval_s=p["interval"],
            report=(lambda line: None) if p["quiet"] else _interval_printer(progress),
        )
        return
    run_benchmark(
        targets,
        settings,
        command=command,
        argv=argv,
        progress=progress,
        sender_cpus=cpus,
        document=doc,
    )


def _interval_printer(progress: _Progress) -> Callable[[str], None]:
    def report(line: str) -> None:
        progress.clear()
        click.echo(line, err=True)

    return report


def _run(targets: list[Target], p: dict[str, Any], command: str) -> None:
    settings = _settings(p)
    outputs = _outputs(p)
    _prerequisites(targets, p, outputs)
    cpus = sender_plan(not p["no_pin"], p["sender_cores"])
    progress = _Progress(not p["quiet"])
    doc = new_document(command, settings)
    status = 0
    with _sigterm_like_sigint() as terminated:
        try:
            with clean_namespace() if p["netns"] else contextlib.nullcontext():
                _measure(targets, p, command, settings, doc, progress, cpus)
        except NetnsError as exc:
            raise UserError(str(exc)) from None
        except BenchError as exc:
            progress.clear()
            raise UserError(str(exc)) from None
        except _Terminated:
            doc["interrupted"] = True
        if doc["interrupted"]:
            status = 143 if terminated else 130
        if command == "compare":
            doc["comparison"] = compare(doc)
        _emit(doc, outputs, p["quiet"], progress)
    if status:
        raise click.exceptions.Exit(status)
    failed = [t for t in doc["targets"] if t.get("error")]
    if failed:
        first = failed[0]
        raise UserError(
            f"{len(failed)} of {len(doc['targets'])} reflectors could not be measured "
            f"({first['name']}: {first['error']})"
        )


class _BenchGroup(click.Group):
    """Keeps the exact arguments, for the report's command line (however click was invoked)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[_ARGV_KEY] = [ctx.info_name or "twamp-bench", *args]
        return super().parse_args(ctx, args)


@click.group(
    cls=_BenchGroup,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="twamp-bench")
@click.option(
    "--target",
    metavar="HOST[:PORT]",
    help="Benchmark this TWAMP Light / STAMP reflector (UDP, default port 862).",
)
@click.option(
    "--control",
    metavar="HOST[:PORT]",
    help="Benchmark the reflector behind this TWAMP server (TCP, default port 862).",
)
@click.option(
    "-A",
    "--modes",
    "mode_letters",
    metavar="LETTERS",
    help="--control: allowed modes in order of preference, as in twamp ping: "
    "O open, A authenticated, E encrypted, M mixed.",
)
@click.option("-u", "--key-id", metavar="KEYID", help="--control: KeyID of the shared secret.")
@click.option(
    "-k", "--key-file", metavar="FILE", help="--control: key file of 'KEYID HEX-PASSPHRASE' lines."
)
@click.option(
    "--session",
    "session_scope",
    type=click.Choice(["size", "trial"]),
    default="size",
    show_default=True,
    help="--control: one test session per packet size and search run (the runs go round-robin "
    "over the sizes) and one for its latency trials, or one per trial.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.1),
    default=10.0,
    show_default=True,
    help="--control: seconds to wait for the server.",
)
@click.option(
    "--reflector-impl",
    type=click.Choice(["fast", "pure"]),
    default="fast",
    show_default=True,
    help="Which of our reflectors to start when no target is given.",
)
@_measure_options
@click.pass_context
@friendly_errors
def bench(ctx: click.Context, /, **p: Any) -> None:
    """Measure a reflector's throughput and latency: RFC 2544 §26 trials, repeated, honest.

    Throughput is the highest offered rate with zero loss, and with at most --loss-tolerance
    loss, found by binary search over fixed-length trials; latency is measured at fractions of
    that rate. Every figure is measured --trials times and reported as min / median / max,
    with the conditions (kernel, CPU, cores, implementations, versions, command line). Trials
    our own sender could not hold are marked sender-limited and never reported as the
    reflector's result.
    """
    if ctx.invoked_subcommand is not None:
        given = [
            name
            for name in p
            if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
        ]
        if given:
            raise click.UsageError(
                f"options before '{ctx.invoked_subcommand}' do not apply to it: "
                f"put them after it ({', '.join('--' + g.replace('_', '-') for g in given)})"
            )
        return
    setup_logging(p["verbose"], p["quiet"])
    if p["target"] and p["control"]:
        raise click.UsageError("give --target or --control, not both")
    secure = p["mode_letters"] or p["key_id"] or p["key_file"]
    if secure and not p["control"]:
        raise click.UsageError("-A, -u and -k apply to --control only")
    if p["session_scope"] != "size" and not p["control"]:
        raise click.UsageError("--session applies to --control only")
    if p["stamp"] and p["control"]:
        raise click.UsageError("--stamp applies to TWAMP Light targets, not --control")
    options = _session_options(p)
    reflector_cpu = reflector_core(not p["no_pin"])
    target: Target
    if p["control"]:
        try:
            host, port = parse_hostport(p["control"], TWAMP_CONTROL_PORT)
            modes = parse_modes(p["mode_letters"]) if p["mode_letters"] else None
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--control/-A") from None
        key_id, secret = pick_key(p["key_id"], p["key_file"])
        target = ControlTarget(
            f"control {p['control']}",
            host,
            port,
            options,
            modes=modes,
            key_id=key_id,
            passphrase=secret,
            scope=p["session_scope"],
            timeout_s=p["timeout"],
        )
    elif p["target"]:
        try:
            host, port = parse_hostport(p["target"], TWAMP_TEST_PORT)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--target") from None
        target = LightTarget(p["target"], host, port, options, stamp=p["stamp"])
    else:
        target = LocalReflector(
            local_name(p["reflector_impl"]),
            options,
            impl=p["reflector_impl"],
            cpu=reflector_cpu,
            batch=p["reflector_batch"],
            busy_poll=p["busy_poll"],
            rcvbuf=p["rcvbuf"],
            stamp=p["stamp"],
        )
    _run([target], p, "bench")


def _reflector_target(
    spec: str, p: dict[str, Any], options: SessionOptions, cpu: int | None
) -> Target:
    """--reflector fast | pure | c | cmd:"COMMAND {port}" | addr:HOST:PORT."""
    if spec in ("fast", "pure"):
        return LocalReflector(
            local_name(spec),
            options,
            impl=spec,
            cpu=cpu,
            batch=p["reflector_batch"],
            busy_poll=p["busy_poll"],
            rcvbuf=p["rcvbuf"],
            stamp=p["stamp"],
        )
    if spec == "c":
        if p["stamp"]:
            raise click.BadParameter(
                "the C reflector answers TWAMP Light only, not STAMP", param_hint="--reflector"
            )
        return CReflector(
            "c",
            options,
            cpu=cpu,
            batch=p["reflector_batch"],
            busy_poll=p["busy_poll"],
            rcvbuf=p["rcvbuf"],
        )
    kind, sep, rest = spec.partition(":")
    if sep and kind == "cmd":
        try:
            return CommandReflector(spec, rest, options, cpu=cpu, stamp=p["stamp"])
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--reflector") from None
    if sep and kind == "addr":
        try:
            host, port = parse_hostport(rest, TWAMP_TEST_PORT)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--reflector") from None
        return LightTarget(spec, host, port, options, stamp=p["stamp"])
    raise click.BadParameter(
        f'{spec!r} is not fast, pure, c, cmd:"COMMAND {{port}}" or addr:HOST:PORT',
        param_hint="--reflector",
    )


@bench.command("compare")
@click.option(
    "-r",
    "--reflector",
    "reflectors",
    metavar="SPEC",
    multiple=True,
    required=True,
    help="A reflector to measure (repeat; ratios are against the first): fast, pure, "
    "c (the C reference reflector shipped with twamp, built with the system C compiler on "
    'first use), cmd:"COMMAND {port}", addr:HOST:PORT.',
)
@_measure_options
@friendly_errors
def compare_cmd(reflectors: tuple[str, ...], **p: Any) -> None:
    """Several reflectors side by side, one after another under the same sender."""
    setup_logging(p["verbose"], p["quiet"])
    options = _session_options(p)
    reflector_cpu = reflector_core(not p["no_pin"])
    targets = [_reflector_target(spec, p, options, reflector_cpu) for spec in reflectors]
    seen: dict[str, int] = {}
    for t in targets:
        seen[t.name] = seen.get(t.name, 0) + 1
        if seen[t.name] > 1:
            t.name = f"{t.name}#{seen[t.name]}"
    _run(targets, p, "compare")


@bench.command("plot")
@click.argument("report", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    metavar="FILE",
    help="Image to write (PNG, SVG, PDF by its suffix); default: REPORT with .png.",
)
@friendly_errors
def plot_cmd(report: str, output: str | None) -> None:
    """Redraw the plots of a saved report (twamp-bench --json REPORT.json)."""
    try:
        doc = json.loads(Path(report).read_text())
        validate(doc)
    except (ValueError, KeyError) as exc:
        raise UserError(f"{report} is not a twamp-bench report: {exc}") from None
    except Exception as exc:  # jsonschema's ValidationError: a report of another version
        raise UserError(f"{report} does not match the report schema: {exc}") from None
    out = output or str(Path(report).with_suffix(".png"))
    try:
        check_outputs(Outputs(plot=out))
    except OutputError as exc:
        raise UserError(str(exc)) from None
    try:
        plot_report(doc, out)
    except PlotUnavailable as exc:
        raise UserError(str(exc)) from None
    click.echo(f"wrote {out}")


from .bench_ospf import ospf as _ospf  # noqa: E402  (twamp-bench ospf: RFC 4061)

bench.add_command(_ospf)


def main() -> None:
    bench(prog_name="twamp-bench")


if __name__ == "__main__":
    main()
