"""`twamp-bench ospf`: RFC 4061 OSPF convergence of a DUT, and `twamp-bench ospf report LOG`.

With no argument (as root) it builds the lab in network namespaces with FRR as the DUT, runs the
eleven RFC 4061 procedures a few times each, prints one table with a verdict per figure, tears
the lab down and exits 0. Everything it measured is in the event log (``--log``); ``report LOG``
recomputes the same table (and JSON, CSV, plot) from a saved log, without root.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from ..bench.conditions import command_line
from ..bench.ospf.plot import PlotUnavailable, plot_report
from ..bench.ospf.procedures import PROCEDURES, analyse
from ..bench.ospf.report import csv_text, format_report
from ..ospf.eventlog import EventLogError, read_events
from .common import UserError, friendly_errors, setup_logging

__all__ = ["ospf"]

_PROFILES = ("tuned", "defaults", "rfc")


def _tests(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    if not value:
        return tuple(PROCEDURES)
    wanted = tuple(dict.fromkeys(v.strip().lstrip("§") for v in value.split(",") if v.strip()))
    unknown = [w for w in wanted if w not in PROCEDURES]
    if unknown:
        raise click.BadParameter(
            f"{', '.join(unknown)}: not an RFC 4061 procedure (choose from {', '.join(PROCEDURES)})"
        )
    return wanted


def _lsas(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(v.replace("_", "")) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of counts") from None
    if not counts or any(not 1 <= c <= 20_000 for c in counts):
        raise click.BadParameter("LSA counts must be between 1 and 20,000")
    return counts


def _write_text(target: str, text: str, what: str) -> None:
    if target == "-":
        click.echo(text, nl=not text.endswith("\n"))
        return
    try:
        Path(target).write_text(text)
    except OSError as exc:
        raise UserError(f"cannot write the {what} to {target}: {exc.strerror or exc}") from None


def emit(
    doc: dict[str, Any],
    *,
    json_out: str | None,
    csv_out: str | None,
    plot_out: str | None,
    quiet_table: bool = False,
) -> None:
    """Print the table (to stdout, unless JSON or CSV go there) and write the other outputs."""
    to_stdout = "-" in (json_out, csv_out)
    if not to_stdout and not quiet_table:
        click.echo(format_report(doc))
    elif not quiet_table:
        click.echo(format_report(doc), err=True)
    if json_out:
        _write_text(json_out, json.dumps(doc, indent=1, sort_keys=False) + "\n", "JSON report")
    if csv_out:
        _write_text(csv_out, csv_text(doc), "CSV report")
    if plot_out:
        try:
            plot_report(doc, plot_out)
        except PlotUnavailable as exc:
            raise UserError(str(exc)) from None
        except OSError as exc:
            raise UserError(f"cannot write the plot to {plot_out}: {exc.strerror or exc}") from None


_OUTPUT_OPTIONS = [
    click.option(
        "--json",
        "json_out",
        metavar="FILE|-",
        help="Write the report as JSON (schema twamp-bench-ospf/1, documented in the README).",
    ),
    click.option("--csv", "csv_out", metavar="FILE|-", help="Write one CSV row per figure."),
    click.option(
        "--plot",
        "plot_out",
        metavar="FILE",
        help="Draw every trial of every figure "
        "with the DUT's timers (PNG/SVG/PDF; needs matplotlib).",
    ),
]


def _outputs(func: Any) -> Any:
    for opt in reversed(_OUTPUT_OPTIONS):
        func = opt(func)
    return func


@click.group(
    "ospf",
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--dut",
    type=click.Choice(["frr", "bird", "external"]),
    default="frr",
    show_default=True,
    help="The device under test: FRR or BIRD started in the lab's "
    "namespace, or an external router on --interface (external: 5.1, 5.3, 6.1 and 6.2, and "
    "with a second --interface 5.2, 6.7 and 6.8; 6.3-6.6 are reported as not run, with the "
    "reason).",
)
@click.option(
    "--interface",
    "interfaces",
    metavar="IFNAME",
    multiple=True,
    help="--dut external: our port towards the router, in this namespace, with its IPv4 "
    "address already on it (the generator); repeat once for the collector's port. The tool "
    "speaks OSPF there (area 0, point-to-point, with the hello and dead intervals heard in the "
    "router's own Hellos), sends test packets, and for 6.1 and 6.7 sets its own port down and "
    "up again; every port is left as it was found.",
)
@click.option(
    "--tests",
    callback=_tests,
    metavar="LIST",
    help="Comma-separated procedures, e.g. 5.1,6.8 (default: all eleven).",
)
@click.option(
    "--trials",
    type=click.IntRange(1, 100),
    default=None,
    help="Valid trials per figure (invalid ones are repeated: at most twice as many "
    "attempts, and at least four more). Default: 5, and 3 for 6.4, 6.5/6.6 and 6.8, whose "
    "every trial waits out the DUT's dead interval or restarts it.",
)
@click.option(
    "--lsas",
    default="100",
    show_default=True,
    callback=_lsas,
    metavar="N[,N...]",
    help="LSAs in the emulated topology for the LSA procedures (5.2, 6.1-6.3); "
    "several counts show the scaling, e.g. 100,1000,10000.",
)
@click.option(
    "--timers",
    "profile",
    type=click.Choice(_PROFILES),
    default="tuned",
    show_default=True,
    help="DUT timer profile: 'tuned' (hello 1 s, dead 4 s, SPF "
    "delay 0: measures the DUT, not its timers), 'defaults' (the daemon's own), "
    "'rfc' (RFC 2328 Appendix C values). With hello 10 s and dead 40 s the "
    "dead-interval procedures take about a minute per trial.",
)
@click.option(
    "--log",
    "log_path",
    metavar="FILE",
    help="The event log (JSON lines) to write; "
    "default: a new file in the temporary directory, named at the end.",
)
@click.option(
    "--rate",
    type=click.FloatRange(10, 100_000),
    default=1000.0,
    show_default=True,
    help="Packets per second of the TWAMP data-plane probe through the DUT.",
)
@click.option(
    "--tag",
    default="twamp",
    show_default=True,
    metavar="NAME",
    help="Prefix of the lab's namespaces and state directory (runs side by side need two).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress line.")
@click.option("-v", "--verbose", count=True)
@_outputs
@click.pass_context
@friendly_errors
def ospf(ctx: click.Context, /, **p: Any) -> None:
    """RFC 4061 OSPF convergence of a router: all eleven procedures, with honest verdicts.

    Builds a lab of network namespaces (needs root), runs §5.1 LSA processing, §5.2 flooding,
    §5.3 SPF, §6.1-6.3 adjacency, §6.4 DR election, §6.5-6.6 initial convergence on a
    broadcast network and §6.7-6.8 link down, and prints one table: each figure as RFC 4061
    defines it (median and min/p90/max over --trials), whether it measures the DUT or one of
    its timers (and which), the best proxy beside it, and the data-plane loss window of a
    TWAMP stream through the DUT. `twamp-bench ospf report LOG` recomputes it from the log.
    """
    if ctx.invoked_subcommand is not None:
        return
    setup_logging(p["verbose"], quiet=not p["verbose"])
    if p["dut"] == "external" and not p["interfaces"]:
        raise UserError("--dut external needs --interface IFNAME (our port towards the router)")
    if p["dut"] != "external" and p["interfaces"]:
        raise UserError("--interface is only for --dut external")
    if os.geteuid() != 0:
        raise UserError(
            "twamp-bench ospf needs root (network namespaces and raw OSPF sockets): run it "
            "with sudo, or recompute a saved run with 'twamp-bench ospf report LOG'"
        )
    # The drivers pull in the lab (pyroute2) and the speaker; `report`, `--help` and the
    # users' mistakes above must not pay for that, nor fail where pyroute2 is missing.
    from ..bench.ospf import drivers  # why: only a real run needs the lab (see above)

    argv = ctx.meta.get("twamp.bench.argv") or sys.argv
    log_path = p["log_path"] or _default_log()
    settings = drivers.RunSettings(
        dut=p["dut"],
        interfaces=tuple(p["interfaces"]),
        tests=p["tests"],
        trials=p["trials"],
        lsas=p["lsas"],
        profile=p["profile"],
        rate_pps=p["rate"],
        command_line=command_line(list(argv)),
        tag=p["tag"],
    )
    progress = drivers.Progress(enabled=not p["quiet"] and sys.stderr.isatty())
    try:
        drivers.run(settings, log_path, progress)
    except drivers.BenchAborted as exc:
        raise UserError(str(exc)) from None
    except KeyboardInterrupt:
        progress.done()
        click.echo(
            f"interrupted: the lab is torn down; the event log so far is {log_path}", err=True
        )
        raise SystemExit(130) from None
    finally:
        progress.done()
    doc = analyse(read_events(log_path))
    emit(doc, json_out=p["json_out"], csv_out=p["csv_out"], plot_out=p["plot_out"])
    click.echo(f"event log: {log_path} (twamp-bench ospf report {log_path})", err=True)


def _default_log() -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    fd, path = tempfile.mkstemp(prefix=f"twamp-bench-ospf-{stamp}-", suffix=".jsonl")
    os.close(fd)
    return path


@ospf.command("report")
@click.argument("log", metavar="LOG", type=click.Path(dir_okay=False))
@_outputs
@friendly_errors
def report_cmd(log: str, json_out: str | None, csv_out: str | None, plot_out: str | None) -> None:
    """Recompute every figure, verdict and proxy from a saved event log (no root needed)."""
    try:
        events = list(read_events(log))
    except FileNotFoundError:
        raise UserError(f"{log}: no such event log") from None
    except IsADirectoryError:
        raise UserError(f"{log} is a directory, not an event log") from None
    except (EventLogError, UnicodeDecodeError) as exc:
        raise UserError(f"{log} is not a twamp-bench ospf event log: {exc}") from None
    doc = analyse(events)
    if not doc["procedures"]:
        raise UserError(f"{log} holds no RFC 4061 trial (was it written by twamp-bench ospf?)")
    emit(doc, json_out=json_out, csv_out=csv_out, plot_out=plot_out)
