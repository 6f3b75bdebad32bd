"""The report of a run: the human tables, CSV rows, the comparison, and schema validation.

The JSON document built by `engine.run_benchmark` is the single source: the table, the CSV and
the plots are all views of it, so they always agree. It validates against
``schemas/bench.schema.json`` (JSON Schema draft 2020-12, no property it does not name).
"""

from __future__ import annotations

import csv
import importlib
import io
import json
from collections.abc import Iterable
from importlib import resources
from typing import IO, Any

__all__ = [
    "CSV_HEADER",
    "compare",
    "csv_rows",
    "format_tables",
    "load_schema",
    "validate",
    "write_csv",
]

CSV_HEADER = (
    "target",
    "size",
    "mean_octets",
    "figure",
    "fraction_pct",
    "unit",
    "min",
    "median",
    "max",
    "n",
    "status",
)
"""One row per figure: `figure` names it (zero_loss_rate, tolerant_rate, rtt_median, ...),
`fraction_pct` is the load of a latency figure (empty for rates), `unit` is pps, ns or pct,
min/median/max/n its spread over trials, `status` found/partial/none/sender_limited/
at_max_rate/not_measured for rates (min/median/max are empty unless found or partial; a
sender_limited or at_max_rate rate puts its lower bound in min) and ok for latency figures."""

_BOUNDED = ("sender_limited", "at_max_rate")  # a rate passing at the cap: a lower bound only
_BOUND_WHY = {"sender_limited": "sender-limited", "at_max_rate": "--max-rate"}

# (figure, metric, statistic) rows of each latency point.
_LATENCY_ROWS = (
    ("rtt_min", "rtt", "min"),
    ("rtt_median", "rtt", "median"),
    ("rtt_p99", "rtt", "p99"),
    ("rtt_max", "rtt", "max"),
    ("forward_median", "forward", "median"),
    ("backward_median", "backward", "median"),
    ("residence_median", "residence", "median"),
    ("residence_p99", "residence", "p99"),
    ("ipdv_p99", "ipdv", "p99"),
)


def load_schema() -> dict[str, Any]:
    text = resources.files("twamp").joinpath("schemas/bench.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate(document: dict[str, Any]) -> None:
    """Raise `jsonschema.ValidationError` if `document` breaks the schema.

    jsonschema is a test dependency; without it nothing is checked (ImportError is swallowed
    on purpose: a user's run must not fail for want of a validator).
    """
    try:
        jsonschema: Any = importlib.import_module("jsonschema")
    except ImportError:
        return
    jsonschema.Draft202012Validator(load_schema()).validate(document)


# -- CSV -----------------------------------------------------------------------------------------


def _spread_cells(s: dict[str, Any] | None) -> list[Any]:
    if s is None:
        return ["", "", "", 0]
    return [s["min"], s["median"], s["max"], s["n"]]


def csv_rows(document: dict[str, Any]) -> Iterable[list[Any]]:
    """The rows after `CSV_HEADER`."""
    for target in document["targets"]:
        name = target["name"]
        for size in target.get("sizes") or []:
            label, mean = size["size"], round(size["mean_octets"], 1)
            tp = size["throughput"]
            for figure, key in (("zero_loss_rate", "zero_loss"), ("tolerant_rate", "tolerant")):
                fig = tp.get(key)
                if fig is None:
                    continue
                cells = _spread_cells(fig["pps"])
                if fig["status"] in _BOUNDED and fig["lower_bound_pps"] is not None:
                    cells = [fig["lower_bound_pps"], "", "", fig["runs"]]
                yield [name, label, mean, figure, "", "pps", *cells, fig["status"]]
            for point in size["latency"]:
                summary = point.get("summary") or {}
                frac = point["fraction_pct"]
                for figure, metric, stat in _LATENCY_ROWS:
                    dist = summary.get(metric)
                    if not dist:
                        continue
                    cells = _spread_cells(dist.get(stat))
                    yield [name, label, mean, figure, frac, "ns", *cells, "ok"]
                loss = point.get("loss_pct")
                if loss is not None:
                    yield [name, label, mean, "loss", frac, "pct", *_spread_cells(loss), "ok"]


def write_csv(document: dict[str, Any], out: IO[str]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for row in csv_rows(document):
        writer.writerow(row)


# -- comparison ----------------------------------------------------------------------------------


def _median(fig: dict[str, Any] | None) -> float | None:
    if not fig or fig.get("pps") is None:
        return None
    return float(fig["pps"]["median"])


def _mid_latency(size: dict[str, Any]) -> float | None:
    """Median RTT median at the middle latency fraction (50 % by default)."""
    points = size["latency"]
    if not points:
        return None
    point = points[len(points) // 2]
    rtt = (point.get("summary") or {}).get("rtt")
    if not rtt or rtt.get("median") is None:
        return None
    return float(rtt["median"]["median"])


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return value / base


def compare(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Per size, each target's medians and their ratios to the first target's."""
    targets = [t for t in document["targets"] if t.get("sizes")]
    if not targets:
        return []
    base = targets[0]
    out: list[dict[str, Any]] = []
    for base_size in base["sizes"]:
        label = base_size["size"]
        b_zero = _median(base_size["throughput"].get("zero_loss"))
        b_tol = _median(base_size["throughput"].get("tolerant"))
        b_rtt = _mid_latency(base_size)
        entries = []
        for t in targets:
            size = next((s for s in t["sizes"] if s["size"] == label), None)
            if size is None:
                continue
            zero = _median(size["throughput"].get("zero_loss"))
            tol = _median(size["throughput"].get("tolerant"))
            rtt = _mid_latency(size)
            zero_fig = size["throughput"].get("zero_loss") or {}
            entries.append(
                {
                    "target": t["name"],
                    "zero_loss_status": zero_fig.get("status", "not_measured"),
                    "zero_loss_lower_bound_pps": zero_fig.get("lower_bound_pps"),
                    "zero_loss_pps": zero,
                    "zero_loss_ratio": _ratio(zero, b_zero),
                    "tolerant_pps": tol,
                    "tolerant_ratio": _ratio(tol, b_tol),
                    "rtt_median_ns": rtt,
                    "rtt_ratio": _ratio(rtt, b_rtt),
                }
            )
        out.append({"size": label, "baseline": base["name"], "entries": entries})
    return out


# -- human tables --------------------------------------------------------------------------------


def _pps(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def _rate_cell(fig: dict[str, Any] | None) -> str:
    if fig is None:
        return "-"
    status = fig["status"]
    if status in _BOUNDED:
        why = _BOUND_WHY[status]
        bound = fig["lower_bound_pps"]
        return f">= {_pps(bound)} ({why})" if bound is not None else why
    if status == "none":
        return "none"
    if fig["pps"] is None:
        return "-" if status == "not_measured" else status
    s = fig["pps"]
    cell = f"{_pps(s['min'])} / {_pps(s['median'])} / {_pps(s['max'])}"
    if status == "partial":
        cell += f" ({fig['runs_found']} of {fig['runs']})"
    return cell


def _us(ns: float | None) -> str:
    if ns is None:
        return "-"
    return f"{ns / 1e3:.1f}"


def _stat(summary: dict[str, Any], metric: str, stat: str) -> float | None:
    dist = summary.get(metric)
    if not dist or not dist.get(stat):
        return None
    return float(dist[stat]["median"])


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _target_header(t: dict[str, Any], doc: dict[str, Any]) -> str:
    refl = t.get("reflector") or {}
    impl = refl.get("implementation") or "unknown implementation"
    where = t.get("address") or "?"
    mode = t.get("mode") or "?"
    fmt = "STAMP" if t.get("stamp") else "TWAMP"
    sender = (doc.get("conditions") or {}).get("sender") or {}
    cpu = refl.get("cpu")
    pin = f", reflector on cpu {cpu}" if cpu is not None else ""
    scpu = sender.get("cpu")
    spin = f" on cpu {scpu}" if scpu is not None else ""
    return (
        f"== {t['name']}: {t.get('kind', '?')} reflector ({impl}) at {where}, {fmt} {mode}{pin}; "
        f"sender {sender.get('implementation', '?')}{spin}"
    )


def format_tables(doc: dict[str, Any]) -> str:
    """The human report: per target a throughput table and a latency table."""
    s = doc["settings"]
    out: list[str] = []
    out.append(
        f"twamp-bench {doc['version']}: {s['trials']} trial{'s' if s['trials'] != 1 else ''} "
        "per figure (min / median / max), "
        f"{s['trial_duration_s']:g} s per throughput trial, loss tolerance "
        f"{s['loss_tolerance_pct']:g} %; sizes are UDP payload octets"
    )
    for t in doc["targets"]:
        out.append("")
        out.append(_target_header(t, doc))
        if t.get("error"):
            out.append(f"   error: {t['error']}")
        sizes = t.get("sizes") or []
        if not sizes:
            continue
        rows = []
        for size in sizes:
            tp = size["throughput"]
            rows.append(
                [
                    size["size"],
                    _pps(size.get("sender_capacity_pps")),
                    _rate_cell(tp.get("zero_loss")),
                    _rate_cell(tp.get("tolerant")),
                ]
            )
        tol = s["loss_tolerance_pct"]
        out.append(
            _table(
                ["size", "sender max", "zero-loss pps", f"<= {tol:g} % loss pps"],
                rows,
            )
        )
        lrows = []
        for size in sizes:
            for point in size["latency"]:
                summary = point.get("summary") or {}
                loss = point.get("loss_pct")
                synced = point.get("clocks_synced")
                fwd = _stat(summary, "forward", "median")
                bwd = _stat(summary, "backward", "median")
                lrows.append(
                    [
                        size["size"],
                        f"{point['fraction_pct']:g} %",
                        _pps(point["offered_pps"]),
                        _us(_stat(summary, "rtt", "median")),
                        _us(_stat(summary, "rtt", "p99")),
                        _us(_stat(summary, "rtt", "max")),
                        (f"{_us(fwd)}/{_us(bwd)}" if synced else "unsynced"),
                        _us(_stat(summary, "residence", "median")),
                        _us(_stat(summary, "residence", "p99")),
                        _us(_stat(summary, "ipdv", "p99")),
                        "-" if loss is None else f"{loss['median']:.2f}",
                        str(point.get("trials_used", 0)),
                    ]
                )
        if lrows:
            out.append("")
            out.append("latency in µs, medians over trials:")
            out.append(
                _table(
                    [
                        "size",
                        "load",
                        "offered",
                        "RTT p50",
                        "p99",
                        "max",
                        "fwd/bwd p50",
                        "resid p50",
                        "p99",
                        "IPDV p99",
                        "loss %",
                        "trials",
                    ],
                    lrows,
                )
            )
        limited = sum(
            1
            for size in sizes
            for run in size["throughput"]["runs"]
            for trial in run["trials"]
            if trial["sender_limited"]
        )
        if limited:
            out.append(
                f"note: {limited} trial(s) were sender-limited and are not counted as the "
                "reflector's results (see the JSON report for reasons)"
            )
    comparison = doc.get("comparison")
    if comparison:
        out.append("")
        out.append(f"comparison against {comparison[0]['baseline']} (median zero-loss rate):")
        names = [e["target"] for e in comparison[0]["entries"]]
        rows = []
        for c in comparison:
            row = [c["size"]]
            by_name = {e["target"]: e for e in c["entries"]}
            for n in names:
                e = by_name.get(n)
                if e is None:
                    row.append("-")
                    continue
                if e["zero_loss_pps"] is None:
                    bound = e["zero_loss_lower_bound_pps"]
                    if e["zero_loss_status"] in _BOUNDED and bound is not None:
                        why = _BOUND_WHY[e["zero_loss_status"]]
                        row.append(f">= {_pps(bound)} ({why})")
                    else:
                        row.append(e["zero_loss_status"])
                    continue
                ratio = e["zero_loss_ratio"]
                r = "" if ratio is None else f" ({ratio:.2f}x)"
                row.append(f"{_pps(e['zero_loss_pps'])}{r}")
            rows.append(row)
        out.append(_table(["size", *names], rows))
    if doc.get("interrupted"):
        out.append("")
        out.append("interrupted: the results above are partial")
    return "\n".join(out)


def to_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, allow_nan=False)


def csv_text(document: dict[str, Any]) -> str:
    buf = io.StringIO()
    write_csv(document, buf)
    return buf.getvalue()
