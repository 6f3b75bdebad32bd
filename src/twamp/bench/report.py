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

from .aggregate import BOUNDED_STATUSES, headline_pps

__all__ = [
    "CSV_HEADER",
    "compare",
    "csv_rows",
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
    "disturbed",
)
"""One row per figure: `figure` names it (zero_loss_rate, tolerant_rate, rtt_median, ...),
`fraction_pct` is the load of a latency figure (empty for rates), `unit` is pps, ns or pct,
min/median/max/n its spread over trials, `status` found/partial/none/sender_limited/
at_max_rate/at_medium_max/unverifiable/disturbed/not_measured for rates (min/median/max are
empty unless found or partial; a sender_limited, at_max_rate or at_medium_max rate puts its
lower bound in min) and ok for latency figures; a found or partial rate's figure is its max
(the highest rate that passed verification, RFC 2544 §26.1), median and min the other runs';
`disturbed` is true when the figure or latency point was measured beside other work (the JSON
says why), else false."""

_BOUNDED = BOUNDED_STATUSES  # a rate passing at the cap: a lower bound only

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


def _flag(part: dict[str, Any]) -> str:
    return "true" if part.get("disturbed") else "false"


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
                yield [
                    *(name, label, mean, figure, "", "pps"),
                    *cells,
                    fig["status"],
                    _flag(fig),
                ]
            for point in size["latency"]:
                summary = point.get("summary") or {}
                frac = point["fraction_pct"]
                for figure, metric, stat in _LATENCY_ROWS:
                    dist = summary.get(metric)
                    if not dist:
                        continue
                    cells = _spread_cells(dist.get(stat))
                    yield [name, label, mean, figure, frac, "ns", *cells, "ok", _flag(point)]
                loss = point.get("loss_pct")
                if loss is not None:
                    cells = _spread_cells(loss)
                    yield [name, label, mean, "loss", frac, "pct", *cells, "ok", _flag(point)]


def write_csv(document: dict[str, Any], out: IO[str]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for row in csv_rows(document):
        writer.writerow(row)


# -- comparison ----------------------------------------------------------------------------------


def _headline(fig: dict[str, Any] | None) -> float | None:
    if not fig or fig.get("pps") is None:
        return None
    return headline_pps(fig)


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


def _value(fig: dict[str, Any] | None) -> tuple[float | None, bool]:
    """A figure's median, or its lower bound (True) when the setup bounded it."""
    if not fig:
        return None, False
    if fig.get("pps") is not None:
        return headline_pps(fig), False
    if fig.get("status") in _BOUNDED and fig.get("lower_bound_pps") is not None:
        return float(fig["lower_bound_pps"]), True
    return None, False


def _ratio_kind(value_bound: bool, base_bound: bool) -> str:
    """A ratio of a lower bound to a figure is itself a lower bound, and so on."""
    if value_bound and base_bound:
        return "unknown"
    if value_bound:
        return "at_least"
    if base_bound:
        return "at_most"
    return "exact"


def compare(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Per size, each target's medians and their ratios to the first target's."""
    targets = [t for t in document["targets"] if t.get("sizes")]
    if not targets:
        return []
    base = targets[0]
    out: list[dict[str, Any]] = []
    for base_size in base["sizes"]:
        label = base_size["size"]
        b_zero, b_bound = _value(base_size["throughput"].get("zero_loss"))
        b_tol = _headline(base_size["throughput"].get("tolerant"))
        b_rtt = _mid_latency(base_size)
        entries = []
        for t in targets:
            size = next((s for s in t["sizes"] if s["size"] == label), None)
            if size is None:
                continue
            zero = _headline(size["throughput"].get("zero_loss"))
            value, bound = _value(size["throughput"].get("zero_loss"))
            kind = _ratio_kind(bound, b_bound)
            tol = _headline(size["throughput"].get("tolerant"))
            rtt = _mid_latency(size)
            zero_fig = size["throughput"].get("zero_loss") or {}
            entries.append(
                {
                    "target": t["name"],
                    "zero_loss_status": zero_fig.get("status", "not_measured"),
                    "zero_loss_lower_bound_pps": zero_fig.get("lower_bound_pps"),
                    "zero_loss_pps": zero,
                    "zero_loss_ratio": None if kind == "unknown" else _ratio(value, b_zero),
                    "zero_loss_ratio_kind": kind,
                    "tolerant_pps": tol,
                    "tolerant_ratio": _ratio(tol, b_tol),
                    "rtt_median_ns": rtt,
                    "rtt_ratio": _ratio(rtt, b_rtt),
                }
            )
        out.append({"size": label, "baseline": base["name"], "entries": entries})
    return out


def to_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, allow_nan=False)


def csv_text(document: dict[str, Any]) -> str:
    buf = io.StringIO()
    write_csv(document, buf)
    return buf.getvalue()
