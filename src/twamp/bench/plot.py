"""`--plot FILE`: latency CDFs and throughput against packet size, drawn from the JSON report.

matplotlib is the optional extra ``twamp[plot]``; without it `plot_report` raises
`PlotUnavailable` with a one-sentence message. The figure is drawn only from the report
document, so a saved ``--json`` file can be plotted again later.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

__all__ = ["MISSING", "PlotUnavailable", "available", "plot_report"]

MISSING = (
    "--plot needs matplotlib, which is not installed: pip install 'twamp[plot]' "
    "(or pip install matplotlib)"
)


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


def plot_report(document: dict[str, Any], path: str) -> None:
    """Two panels: RTT CDF per target, size and load; zero-loss rate against packet size."""
    plt = _require_matplotlib()
    fig, (ax_cdf, ax_tp) = plt.subplots(1, 2, figsize=(13, 5))
    percent = [float(p) for p in range(101)]
    for target in document["targets"]:
        for size in target.get("sizes") or []:
            for point in size["latency"]:
                q = point.get("rtt_quantiles_ns")
                if not q:
                    continue
                label = f"{target['name']} {size['size']} B @{point['fraction_pct']:g} %"
                ax_cdf.plot([v / 1e3 for v in q], percent, label=label)
    ax_cdf.set_xscale("log")
    ax_cdf.set_xlabel("round-trip time (µs)")
    ax_cdf.set_ylabel("percentile")
    ax_cdf.set_title("RTT distribution at fractions of the zero-loss rate")
    if ax_cdf.lines:
        ax_cdf.legend(fontsize="x-small")

    for i, target in enumerate(document["targets"]):
        color = f"C{i}"
        found: list[tuple[float, float, float, float]] = []
        bounds: list[tuple[float, float]] = []
        for size in target.get("sizes") or []:
            zero = size["throughput"].get("zero_loss") or {}
            x = size["mean_octets"]
            pps = zero.get("pps")
            if pps is not None:
                found.append(
                    (x, pps["median"], pps["median"] - pps["min"], pps["max"] - pps["median"])
                )
                if size["size"] == "imix":
                    ax_tp.plot([x], [pps["median"]], "*", color=color, markersize=12)
            elif zero.get("lower_bound_pps"):
                bounds.append((x, zero["lower_bound_pps"]))
        found.sort()
        if found:
            xs, med, low, high = (list(v) for v in zip(*found, strict=True))
            ax_tp.errorbar(
                xs, med, yerr=[low, high], marker="o", capsize=3, color=color, label=target["name"]
            )
        if bounds:
            bounds.sort()
            ax_tp.plot(
                [b[0] for b in bounds],
                [b[1] for b in bounds],
                "^",
                color=color,
                markerfacecolor="none",
                label=f"{target['name']}: at least (test setup's limit)",
            )
    ax_tp.set_xlabel("UDP payload (octets; IMIX, the star, at its mean)")
    ax_tp.set_ylabel("zero-loss rate (packets/s)")
    ax_tp.set_title("throughput: median, min-max over trials")
    if ax_tp.lines:
        ax_tp.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
