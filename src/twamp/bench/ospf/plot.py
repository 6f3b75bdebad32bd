"""``--plot FILE``: every RFC 4061 figure's trials on one log-time axis, with the DUT's timers.

One row per procedure (and LSA count). Filled dots are the RFC's figure per valid trial, coloured
by verdict; hollow markers are the proxies (FIB change, flood to the collector, figure minus the
dead interval...); crosses are the data plane's restoration after the start event. Dashed
vertical lines are the DUT's timers (delayed ack, Hello, dead interval, SPF hold...). What the
table says in words the picture shows at a glance: figures that sit on a timer line measure the
timer, while the proxies sit where the DUT's work is. Drawn only from the report document, so a
saved ``--json`` can be plotted again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..plot import PlotUnavailable, _require_matplotlib, available

__all__ = ["PlotUnavailable", "available", "plot_report"]

_COLOURS = {
    "measured": "#1b7837",
    "below-precision": "#7fbf7b",
    "timer-dominated": "#d6604d",
    "includes-timer": "#f4a582",
    "meaningless": "#b2182b",
    "failed": "#999999",
}
# Proxies grouped by what they observe, one style per group (so the legend stays short).
_PROXY_GROUPS: tuple[tuple[tuple[str, ...], str, str, str], ...] = (
    (
        ("flood_to_collector", "first_at_collector", "dut_router_lsa_at_collector"),
        "^",
        "#1a9850",
        "proxy: LSA seen at the collector",
    ),
    (("fib", "fib_last"), "s", "#e08214", "proxy: FIB change (netlink)"),
    (("full_at_generator",), "v", "#35978f", "proxy: our neighbour Full"),
    (("minus_dead_interval",), "o", "#762a83", "proxy: figure minus the dead interval"),
    (("spf_whitebox",), "*", "#b2182b", "white-box: the DUT's own SPF duration"),
)
_OTHER_PROXY = ("D", "#878787", "proxy: an ack's own time (see the table)")


def _proxy_style(name: str) -> tuple[str, str, str]:
    for names, marker, colour, label in _PROXY_GROUPS:
        if name in names:
            return marker, colour, label
    return _OTHER_PROXY


_TIMER_STYLE = {
    "delayed-ack": "#b2182b",
    "hello": "#2166ac",
    "dead": "#762a83",
    "retransmit": "#8c510a",
    "spf-hold": "#01665e",
    "tick": "#c51b7d",
    "ase": "#e08214",
    "min-ls-interval": "#4d4d4d",
}
_FLOOR_MS = 0.005


def _clip(v_ms: float) -> float:
    # Log axis: a figure at or below zero (noise around a subtraction) is drawn at the floor.
    return max(v_ms, _FLOOR_MS)


def _row_label(e: Mapping[str, Any]) -> str:
    n = f" ({e['lsas']:,} LSAs)" if e["lsas"] and e["lsas"] > 1 else ""
    return f"§{e['id']} {e['title']}{n}"


def plot_report(doc: Mapping[str, Any], path: str) -> None:
    """Write the figure to `path` (PNG, SVG or PDF by extension)."""
    plt = _require_matplotlib()
    entries = list(doc["procedures"])
    fig, ax = plt.subplots(figsize=(13, 1.0 + 0.55 * max(len(entries), 1)))
    labels: dict[str, Any] = {}
    lo, hi = math.inf, 0.0
    for row, e in enumerate(entries):
        y = len(entries) - 1 - row
        kind = e["verdict"]["kind"]
        vals = [
            t["value_ns"] / 1e6 for t in e["trials"] if t["valid"] and t["value_ns"] is not None
        ]
        any_valid = bool(vals)
        if any(v <= 0 for v in vals):
            # A log axis has no room for zero or less: such trials sit at the left edge as
            # arrows, and the table gives their values.
            ax.text(
                _FLOOR_MS * 1.4,
                y + 0.12,
                "≤ 0 (see table)",
                fontsize=7,
                color="#555555",
                va="bottom",
            )
            ax.scatter(
                [_FLOOR_MS] * sum(1 for v in vals if v <= 0),
                [y] * sum(1 for v in vals if v <= 0),
                marker="<",
                s=60,
                color=_COLOURS.get(kind, "black"),
                zorder=3,
            )
            vals = [v for v in vals if v > 0]
        if vals:
            h = ax.scatter(
                [_clip(v) for v in vals],
                [y] * len(vals),
                s=42,
                color=_COLOURS.get(kind, "black"),
                zorder=3,
                edgecolor="black",
                linewidth=0.4,
            )
            labels.setdefault(f"RFC figure: {kind}", h)
            lo, hi = min(lo, *map(_clip, vals)), max(hi, *vals)
        for name in sorted({k for t in e["trials"] if t["valid"] for k in t["proxies_ns"]}):
            marker, colour, label = _proxy_style(name)
            pv = [
                t["proxies_ns"][name] / 1e6
                for t in e["trials"]
                if t["valid"] and name in t["proxies_ns"]
            ]
            h = ax.scatter(
                [_clip(v) for v in pv],
                [y - 0.22] * len(pv),
                s=26,
                marker=marker,
                facecolor="none",
                edgecolor=colour,
                zorder=2,
            )
            labels.setdefault(label, h)
            if pv:
                lo, hi = min(lo, *map(_clip, pv)), max(hi, *pv)
        dp = [
            t["dataplane"]["restored_after_ns"] / 1e6
            for t in e["trials"]
            if t["valid"] and t.get("dataplane") and t["dataplane"].get("restored_after_ns")
        ]
        if dp:
            h = ax.scatter(dp, [y + 0.22] * len(dp), marker="x", color="black", s=30, zorder=2)
            labels.setdefault("data plane restored after the start event", h)
            lo, hi = min(lo, *dp), max(hi, *dp)
        if kind == "failed" or not any_valid:
            ax.text(
                1.0,
                y,
                "  no valid trial: " + e["verdict"]["text"][:70],
                va="center",
                fontsize=7,
                color="#555555",
            )
    _timers(ax, doc.get("timers") or {})
    if hi <= 0:
        lo, hi = 0.01, 10_000.0
    ax.set_xscale("log")
    ax.set_xlim(max(min(lo, 0.05) / 2, _FLOOR_MS / 2), max(hi * 2, 5_000.0))
    ax.set_yticks(range(len(entries)))
    ax.set_yticklabels([_row_label(e) for e in reversed(entries)], fontsize=8)
    ax.set_ylim(-0.7, len(entries) - 0.3)
    ax.set_xlabel("milliseconds (log scale)")
    ax.grid(axis="x", which="major", alpha=0.3)
    ax.set_title(_title(doc), fontsize=10)
    order = sorted(labels, key=lambda k: (not k.startswith("RFC"), k.startswith("data"), k))
    ax.legend(
        [labels[k] for k in order],
        order,
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _timers(ax: Any, timers: Mapping[str, Mapping[str, Any]]) -> None:
    by_value: dict[float, list[str]] = {}
    for name, t in timers.items():
        ms = float(t["seconds"]) * 1e3
        if ms > 0 and name in _TIMER_STYLE:
            by_value.setdefault(ms, []).append(name)
    for ms, names in sorted(by_value.items()):
        colour = _TIMER_STYLE[names[0]]
        ax.axvline(ms, color=colour, linestyle="--", linewidth=1, alpha=0.7, zorder=1)
        secs = ms / 1e3
        when = f"{secs:g} s" if secs >= 1 else f"{ms:g} ms"
        # Inside the axes, written along the line: timers that share a value share a label.
        ax.text(
            ms * 1.04,
            0.995,
            f"{' / '.join(names)} {when}",
            rotation=90,
            fontsize=7,
            color=colour,
            va="top",
            ha="left",
            transform=ax.get_xaxis_transform(),
        )


def _title(doc: Mapping[str, Any]) -> str:
    c = doc.get("conditions") or {}
    dut = c.get("dut") or {}
    profile = dut.get("profile") if isinstance(dut.get("profile"), Mapping) else {}
    name = (profile or {}).get("name")
    kind, version = str(dut.get("kind") or "?"), str(dut.get("version") or "")
    if version.lower().startswith(kind.lower()):
        version = version[len(kind) :].strip().removeprefix("version ").strip()
    return (
        f"RFC 4061 against {kind} {version}"
        f"{f' (timers: {name})' if name else ''}: each dot one trial; dashed lines: DUT timers"
    )
