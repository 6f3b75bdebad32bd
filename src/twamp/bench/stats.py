"""Repeated measurements as distributions: min/median/max over trials, and RTT quantiles.

RFC 2544 §26 and RFC 8219 §4 ask for every figure to be measured several times and reported with
its spread, not as one number; `spread` is that summary. Pure functions over plain numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "DIST_STATS",
    "LATENCY_METRICS",
    "quantiles",
    "spread",
    "spread_of_summaries",
]

DIST_STATS = ("min", "median", "p95", "p99", "max", "mean", "stddev")
"""The statistics of a metrics distribution that are aggregated over trials."""

LATENCY_METRICS = ("rtt", "forward", "backward", "residence", "ipdv")
"""Per-trial latency distributions (ns): round trip, one-way each way, reflector residence
(T3 - T2), and RFC 5481 IPDV of the round trip."""

QUANTILE_POINTS = 101  # 0 %, 1 %, ..., 100 %


def spread(values: Iterable[float | int | None]) -> dict[str, Any] | None:
    """{min, median, max, n} of the values that are not None; None when there are none.

    Integers stay integers where they can (min, max; the median of an odd count).
    """
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    arr = np.asarray(vals, dtype=np.float64)
    median = float(np.median(arr))
    as_int = all(isinstance(v, int) for v in vals)
    return {
        "min": min(vals),
        "median": round(median) if as_int else median,
        "max": max(vals),
        "n": len(vals),
    }


def spread_of_summaries(
    summaries: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] = LATENCY_METRICS,
    stats: Sequence[str] = DIST_STATS,
) -> dict[str, dict[str, Any] | None]:
    """For each metric, the spread over trials of each of its statistics.

    `summaries` are per-trial dicts mapping a metric to a distribution (or None): the result
    maps metric -> {stat: spread} (None when no trial has that metric).
    """
    out: dict[str, dict[str, Any] | None] = {}
    for metric in metrics:
        dists = [s.get(metric) for s in summaries]
        present = [d for d in dists if d]
        if not present:
            out[metric] = None
            continue
        out[metric] = {stat: spread(d.get(stat) for d in present) for stat in stats}
    return out


def quantiles(samples: npt.NDArray[np.int64]) -> list[int] | None:
    """The 0th..100th percentiles of integer samples (ns), for a CDF; None when empty."""
    if samples.size == 0:
        return None
    points = np.linspace(0.0, 100.0, QUANTILE_POINTS)
    values = np.rint(np.percentile(samples.astype(np.float64), points)).astype(np.int64)
    # Percentiles of sorted data are monotonic; keep them so after rounding, for a valid CDF.
    values = np.maximum.accumulate(values)
    return [int(v) for v in values]
