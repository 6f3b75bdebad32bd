"""`--plot FILE` and `twamp-bench plot REPORT.json`: the figures of a report, for reading.

Drawn only from the JSON document, so a saved report can be drawn again. One figure:

* **Throughput against size**, twice: packets/s (log scale) and bit rates (L1 Ethernet solid,
  UDP payload dashed). A marker is the figure, the highest verified pass over runs, its bar down
  to the lowest run (a report saved before: the median, bar min-max). A size whose figure
  was bounded by our sender is drawn as a hollow triangle at the bound, "at least", never as a
  measured point. Colour is the reflector. With `--medium`, its maximum frame rate per size and
  its line rate are dotted grey lines (RFC 2544 Appendix A).
* **RTT CDFs, one small panel per size**: colour is the load (light to dark: 10 % to 90 % of the
  rate found); with several reflectors (`compare`) colour is the reflector and only the middle
  load is drawn, so three reflectors stay three lines per panel.
* **Over time**: every trial in the order it ran: the offered rate, coloured by what the trial
  proved (passed, failed, unverified because our sender did not hold it), and the loss (trials
  that lost nothing on a row of their own, labelled "0 (no loss)": a log axis has no 0); the
  latency trials' median RTT. Fixed-rate mode draws its intervals: rate, loss, RTT p50 and p99.

matplotlib is the optional extra ``twamp[plot]``; without it `plot_report` raises
`PlotUnavailable` with a one-sentence message.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from typing import Any

from .aggregate import bits_at_headline, headline_pps, lost_to_a_disturbance
from .config import MEDIA

__all__ = ["MISSING", "PlotUnavailable", "available", "plot_report"]

MISSING = (
    "--plot needs matplotlib, which is not installed: pip install 'twamp[plot]' "
    "(or pip install matplotlib)"
)

_TARGET_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
_VERDICT_COLOURS = {
    "pass": "#2ca02c",
    "fail": "#d62728",
    "disturbed": "#ff7f0e",
    "unverified": "#999999",
}


class PlotUnavailable(RuntimeError):
    """matplotlib is missing."""


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _require_matplotlib() -> Any:
    try:
        # Imported by name: matplotlib is optional and mypy need not know it.
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        raise PlotUnavailable(MISSING) from None
    matplotlib.use("Agg")  # files only: no display needed
    return importlib.import_module("matplotlib.pyplot")


def _targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in doc["targets"] if t.get("sizes")]


def _colour(i: int) -> str:
    return _TARGET_COLOURS[i % len(_TARGET_COLOURS)]


def _size_x(size: dict[str, Any]) -> float:
    return float(size["mean_octets"])


def _size_points(
    target: dict[str, Any],
) -> tuple[list[tuple[float, dict[str, Any]]], list[tuple[float, dict[str, Any]]], list[Any]]:
    """(single sizes, IMIX, bounds) of a target's zero-loss figures, sorted by size."""
    pts: list[tuple[float, dict[str, Any]]] = []
    mix: list[tuple[float, dict[str, Any]]] = []
    bounds: list[Any] = []
    for size in target["sizes"]:
        fig = size["throughput"].get("zero_loss") or {}
        x = _size_x(size)
        if fig.get("pps"):
            (mix if len(size["pattern"]) > 1 else pts).append((x, fig))
        elif fig.get("lower_bound_pps"):
            l1 = fig["lower_bound_pps"] * size["l1_octets"] * 8 / 1e6
            bounds.append((x, fig["lower_bound_pps"], l1, bool(fig.get("disturbed"))))
    return sorted(pts, key=lambda p: p[0]), mix, sorted(bounds)


def _draw_target(ax_pps: Any, ax_bits: Any, target: dict[str, Any], colour: str) -> None:
    pts, mix, bounds = _size_points(target)
    for group, style in ((pts, "o-"), (mix, "*")):
        if not group:
            continue
        xs = [p[0] for p in group]
        # the figure (the highest verified pass) with the runs' min-max as its bar
        med = [headline_pps(p[1]) or 0.0 for p in group]
        low = [max(0.0, m - p[1]["pps"]["min"]) for m, p in zip(med, group, strict=True)]
        high = [max(0.0, p[1]["pps"]["max"] - m) for m, p in zip(med, group, strict=True)]
        label = target["name"] if group is pts or not pts else None
        size = 12 if style == "*" else 6
        ax_pps.errorbar(
            xs,
            med,
            yerr=[low, high],
            fmt=style,
            capsize=3,
            color=colour,
            markersize=size,
            label=label,
        )
        ax_bits.plot(
            xs,
            [bits_at_headline(p[1], "l1_mbps") for p in group],
            style,
            color=colour,
            markersize=size,
            label=label,
        )
        ax_bits.plot(
            xs,
            [bits_at_headline(p[1], "mbps") for p in group],
            "s--" if group is pts else "*",
            color=colour,
            alpha=0.45,
            markersize=size,
        )
    marked = [(x, headline_pps(fig)) for x, fig in (*pts, *mix) if fig.get("disturbed")]
    marked += [(b[0], b[1]) for b in bounds if b[3]]  # a lower bound beside other work too
    for x, y in marked:
        ax_pps.annotate(
            "*",
            (x, y),
            textcoords="offset points",
            xytext=(5, 2),
            color=colour,
            fontsize="large",
            fontweight="bold",
        )
    for ax, k in ((ax_pps, 1), (ax_bits, 2)):
        if bounds:
            ax.plot(
                [b[0] for b in bounds],
                [b[k] for b in bounds],
                "^",
                color=colour,
                markerfacecolor="none",
                markersize=9,
                # the reflector still needs its legend entry when no size has a figure
                label=None if pts or mix else target["name"],
            )


def _style_key(ax: Any, plt: Any, bits: bool) -> None:
    """The legend: one entry per reflector (colour), then what the marker styles mean."""
    handles, names = ax.get_legend_handles_labels()
    line = importlib.import_module("matplotlib.lines").Line2D
    key = [
        (line([], [], marker="*", ls="", color="grey", markersize=10), "IMIX, at its mean size"),
        (
            line([], [], marker="^", ls="", color="grey", markerfacecolor="none", markersize=8),
            "at least: the setup's limit (our sender, --max-rate or --medium), not the reflector's",
        ),
    ]
    if bits:
        key.insert(0, (line([], [], ls="--", color="grey", alpha=0.6), "dashed: UDP payload"))
        key.insert(0, (line([], [], ls="-", color="grey"), "solid: L1 Ethernet line rate"))
    ax.legend(
        handles + [k[0] for k in key], names + [k[1] for k in key], fontsize="small", loc="best"
    )


def _medium(ax_pps: Any, ax_bits: Any, doc: dict[str, Any]) -> None:
    """--medium: its maximum frame rate per size, and its line rate (RFC 2544 Appendix A)."""
    medium = doc["settings"].get("medium")
    if not medium or not _targets(doc):
        return
    words, line_bps = MEDIA[medium]
    caps = sorted(
        (_size_x(size), size["medium_max_pps"])
        for size in _targets(doc)[0]["sizes"]
        if size.get("medium_max_pps") and len(size["pattern"]) == 1
    )
    if caps:
        ax_pps.plot(
            [c[0] for c in caps],
            [c[1] for c in caps],
            ":",
            color="grey",
            lw=1.5,
            label=f"{words}: maximum frame rate",
        )
    ax_bits.axhline(line_bps / 1e6, ls=":", color="grey", lw=1.5, label=f"{words}: line rate")


def _throughput(ax_pps: Any, ax_bits: Any, doc: dict[str, Any], plt: Any) -> None:
    for i, target in enumerate(_targets(doc)):
        _draw_target(ax_pps, ax_bits, target, _colour(i))
    _medium(ax_pps, ax_bits, doc)
    ax_pps.set_yscale("log")
    ax_pps.set_xlabel("UDP payload (octets)")
    ax_pps.set_ylabel("zero-loss rate (packets/s, log)")
    disturbed = any(
        (size["throughput"].get("zero_loss") or {}).get("disturbed")
        for t in _targets(doc)
        for size in t["sizes"]
    )
    note = "\n* measured beside other work (see the report): may be low" if disturbed else ""
    ax_pps.set_title("throughput: highest verified pass, bars down to the lowest run" + note)
    ax_bits.set_xlabel("UDP payload (octets)")
    ax_bits.set_ylabel("Mbit/s at the zero-loss rate")
    ax_bits.set_title("bit rate: L1 = Ethernet frames + preamble + gap; payload = UDP data")
    for ax, bits in ((ax_pps, False), (ax_bits, True)):
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            _style_key(ax, plt, bits)
        else:
            ax.text(
                0.5,
                0.5,
                "no throughput figure measured",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )


def _cdf_lines(target: dict[str, Any], size: dict[str, Any], many: bool) -> list[Any]:
    points = [p for p in size["latency"] if p.get("rtt_quantiles_ns")]
    if many and points:
        points = [points[len(points) // 2]]
    return points


def _cdfs(axes: list[Any], doc: dict[str, Any], plt: Any) -> None:
    targets = _targets(doc)
    many = len(targets) > 1
    labels = [s["size"] for s in targets[0]["sizes"]] if targets else []
    percent = [float(p) for p in range(101)]
    fractions = sorted(
        {p["fraction_pct"] for t in targets for s in t["sizes"] for p in s["latency"]}
    )
    cmap = plt.get_cmap("viridis_r")
    for ax, label in zip(axes, labels, strict=False):
        for i, target in enumerate(targets):
            size = next((s for s in target["sizes"] if s["size"] == label), None)
            if size is None:
                continue
            for point in _cdf_lines(target, size, many):
                if many:
                    colour, name = _colour(i), target["name"]
                else:
                    k = fractions.index(point["fraction_pct"])
                    colour = cmap(0.15 + 0.7 * k / max(len(fractions) - 1, 1))
                    name = f"{point['fraction_pct']:g} % load"
                dubious = point.get("lossy") or not point.get("sender_clean", True)
                style = ":" if dubious else "-"
                q = [v / 1e3 for v in point["rtt_quantiles_ns"]]
                ax.plot(q, percent, style, color=colour, label=name)
        ax.set_xscale("log")
        ax.set_title(f"RTT CDF, size {label}", fontsize="medium")
        ax.set_xlabel("round trip (µs)")
        ax.grid(True, which="both", alpha=0.3)
        if not ax.lines:
            ax.text(
                0.5,
                0.5,
                "no latency measured",
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize="small",
            )
    if axes:
        axes[0].set_ylabel("percentile")
        handles, names = [], []
        for ax in axes:
            for h, n in zip(*ax.get_legend_handles_labels(), strict=True):
                if n not in names:
                    handles.append(h)
                    names.append(n)
        if handles:
            axes[-1].legend(handles, names, fontsize="small", loc="lower right")


def _trials_in_time(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any], int]]:
    out = []
    for i, target in enumerate(_targets(doc)):
        tol = doc["settings"]["loss_tolerance_pct"]
        for size in target["sizes"]:
            for run in size["throughput"]["runs"]:
                for t in run["trials"]:
                    out.append(("throughput", {**t, "_tol": tol}, i))
            for point in size["latency"]:
                for t in point["trials"]:
                    out.append(("latency", t, i))
    return [o for o in out if o[1].get("start_ns") is not None]


def _verdict(t: dict[str, Any]) -> str:
    if t["offered"] and t["loss_pct"] <= 0.0:
        return "pass"
    if not t["sender_limited"] and t["loss_pct"] > 0.0:
        return "disturbed" if lost_to_a_disturbance(t) else "fail"
    return "unverified"


def _timeline(ax_rate: Any, ax_loss: Any, doc: dict[str, Any]) -> None:
    trials = _trials_in_time(doc)
    if not trials:
        ax_rate.text(
            0.5, 0.5, "no trial recorded", ha="center", va="center", transform=ax_rate.transAxes
        )
        return
    t0 = min(t["start_ns"] for _, t, _ in trials)
    for verdict, colour in _VERDICT_COLOURS.items():
        sel = [t for kind, t, _ in trials if kind == "throughput" and _verdict(t) == verdict]
        ax_rate.scatter(
            [(t["start_ns"] - t0) / 1e9 for t in sel],
            [t["offered_pps"] for t in sel],
            s=14,
            color=colour,
            label=f"throughput trial: {verdict} (zero loss)",
        )
    lat = [t for kind, t, _ in trials if kind == "latency"]
    ax_rate.scatter(
        [(t["start_ns"] - t0) / 1e9 for t in lat],
        [t["offered_pps"] for t in lat],
        s=14,
        marker="x",
        color="#1f77b4",
        label="latency trial",
    )
    if len(_targets(doc)) > 1:
        for i, target in enumerate(_targets(doc)):
            starts = [t["start_ns"] for _, t, k in trials if k == i]
            if starts:
                x = (min(starts) - t0) / 1e9
                for ax in (ax_rate, ax_loss):
                    ax.axvline(x, color=_colour(i), lw=1.5, alpha=0.7)
                ax_rate.annotate(
                    target["name"],
                    (x, 1.0),
                    xycoords=("data", "axes fraction"),
                    xytext=(3, -12),
                    textcoords="offset points",
                    color=_colour(i),
                    fontsize="small",
                )
    ax_rate.set_yscale("log")
    ax_rate.set_ylabel("offered rate (packets/s)")
    ax_rate.set_title("every trial in the order it ran")
    ax_rate.legend(fontsize="small", loc="lower left")
    xs = [(t["start_ns"] - t0) / 1e9 for _, t, _ in trials]
    _loss_panel(ax_loss, xs, [t["loss_pct"] for _, t, _ in trials])
    ax_loss.set_xlabel("time since the first trial (s)")
    rtt_ax = ax_loss.twinx()
    rtt = [
        (x, t["rtt"]["median"] / 1e3)
        for x, (kind, t, _) in zip(xs, trials, strict=True)
        if kind == "latency" and t.get("rtt")
    ]
    if rtt:
        rtt_ax.plot([r[0] for r in rtt], [r[1] for r in rtt], "o", color="#1f77b4", ms=4)
    rtt_ax.set_ylabel("latency trial RTT p50 (µs)", color="#1f77b4")
    ax_loss.set_title(
        "loss of every trial (red; hollow green on the '0' row: lost nothing), "
        "RTT p50 of the latency trials (blue)",
        fontsize="medium",
    )
    for ax in (ax_rate, ax_loss):
        ax.grid(True, alpha=0.3)


def _loss_panel(ax: Any, xs: list[float], losses: list[float]) -> None:
    """Loss on a log axis, with the trials that lost nothing on a row of their own.

    A log axis has no 0, so zero-loss trials are drawn as hollow markers on a row one decade
    below the smallest loss drawn (or at 0.001 % when none lost anything), a dotted line
    separates that row, and its tick reads "0 (no loss)": the row is a label, not a value.
    """
    lossy = [(x, v) for x, v in zip(xs, losses, strict=True) if v > 0.0]
    clean = [x for x, v in zip(xs, losses, strict=True) if v <= 0.0]
    low = min((v for _, v in lossy), default=1e-2)
    floor = 10.0 ** (math.floor(math.log10(low)) - 1)
    high = max((v for _, v in lossy), default=floor * 10)
    top = min(2, math.ceil(math.log10(high)))  # the decade above the highest loss, 100 % at most
    if lossy:
        ax.scatter(
            [x for x, _ in lossy],
            [v for _, v in lossy],
            s=12,
            color="#d62728",
            label="trial that lost packets",
            zorder=3,
        )
    if clean:
        ax.scatter(
            clean,
            [floor] * len(clean),
            s=16,
            facecolors="none",
            edgecolors="#2ca02c",
            label="trial with no loss (the '0' row)",
        )
    ax.set_yscale("log")
    ax.set_ylim(floor / 2.5, 10.0**top * 1.6)
    ax.axhline(floor * 2.2, color="grey", lw=0.8, ls=":")
    ticks = [floor, *(10.0**d for d in range(round(math.log10(floor)) + 1, top + 1))]
    ax.set_yticks(ticks)
    ax.set_yticklabels(["0 (no loss)", *(f"{t:g}" for t in ticks[1:])])
    ax.minorticks_off()
    ax.set_ylabel("loss (%)", color="#d62728")


def _fixed(fig: Any, doc: dict[str, Any]) -> None:
    target = next(t for t in doc["targets"] if t.get("fixed_rate"))
    f = target["fixed_rate"]
    ivs = f["intervals"]
    ax_rate, ax_loss, ax_rtt = fig.subplots(3, 1, sharex=True)
    mid = [(i["start_s"] + i["end_s"]) / 2 for i in ivs]
    ax_rate.plot(mid, [i["achieved_pps"] or 0 for i in ivs], "o-", label="achieved")
    ax_rate.axhline(f["rate_pps"], color="grey", ls="--", label="offered")
    top = max([f["rate_pps"], *(i["achieved_pps"] or 0 for i in ivs)])
    ax_rate.set_ylim(0, top * 1.15)
    ax_rate.ticklabel_format(axis="y", style="plain", useOffset=False)
    ax_rate.set_ylabel("packets/s")
    ax_rate.legend(fontsize="small", loc="lower right")
    ax_loss.plot(mid, [i["loss_pct"] for i in ivs], "o-", color="#d62728")
    ax_loss.set_ylim(0, max([1.0, *(i["loss_pct"] * 1.2 for i in ivs)]))
    ax_loss.set_ylabel("loss (%)")
    for metric, colour in (("rtt", "#1f77b4"), ("residence", "#ff7f0e")):
        for key, style in (("median", "o-"), ("p99", "s--")):
            values = [(i[metric] or {}).get(key, float("nan")) / 1e3 for i in ivs]
            name = "RTT" if metric == "rtt" else "reflector residence"
            ax_rtt.plot(mid, values, style, color=colour, label=f"{name} {key}")
    ax_rtt.set_yscale("log")
    ax_rtt.set_ylabel("µs (log)")
    ax_rtt.set_xlabel("time (s)")
    ax_rtt.legend(fontsize="small")
    fig.suptitle(f"{target['name']}: fixed rate {f['rate_pps']:,.0f} packets/s, size {f['size']}")
    for ax in (ax_rate, ax_loss, ax_rtt):
        ax.grid(True, alpha=0.3)


def plot_report(document: dict[str, Any], path: str) -> None:
    """Draw the report's figure (see the module docstring) into `path`."""
    plt = _require_matplotlib()
    if any(t.get("fixed_rate") for t in document["targets"]):
        fig = plt.figure(figsize=(11, 9), layout="constrained")
        _fixed(fig, document)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return
    targets = _targets(document)
    n_sizes = max((len(t["sizes"]) for t in targets), default=1) or 1
    cols = min(n_sizes, 4)
    cdf_rows = -(-n_sizes // cols)
    fig = plt.figure(figsize=(15, 5 + 3.2 * cdf_rows + 4), layout="constrained")
    sub = fig.subfigures(3, 1, height_ratios=[5, 3.2 * cdf_rows, 4])
    ax_pps, ax_bits = sub[0].subplots(1, 2)
    _throughput(ax_pps, ax_bits, document, plt)
    grid = sub[1].subplots(cdf_rows, cols, sharey=True, squeeze=False)
    axes = [a for row in grid for a in row]
    for extra in axes[n_sizes:]:
        extra.set_visible(False)
    _cdfs(axes[:n_sizes], document, plt)
    many = len(targets) > 1
    sub[1].suptitle(
        "round-trip time per size"
        + (", at the middle load, colour: reflector" if many else ", colour: load")
        + " (dotted: over 1 % loss, or no trial our sender held cleanly)",
        fontsize="medium",
    )
    ax_rate, ax_loss = sub[2].subplots(1, 2)
    _timeline(ax_rate, ax_loss, document)
    names = ", ".join(t["name"] for t in targets) or "no reflector measured"
    date = (document.get("conditions") or {}).get("date", "")
    fig.suptitle(f"twamp-bench {document['command']}: {names} ({date})")
    fig.savefig(path, dpi=100)
    plt.close(fig)
