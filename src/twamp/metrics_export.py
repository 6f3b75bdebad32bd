"""Prometheus / OpenMetrics metrics of the server, the reflector and continuous ping.

Every node exposes its own `/metrics` over HTTP (`--metrics HOST:PORT`) and an existing
Prometheus scrapes them: no collector of our own. The well-kept `prometheus_client` does the
exposition; this module only says what is exported.

Counters are read at scrape time from the objects that already keep them (`TwampServer.stats()`,
`Reflector.counters()`), through a callable given to the collector, so the data path gains no
work per packet. The reflector's residence histogram (`twamp_reflector_residence_seconds`) is
counted by the data plane itself in fixed buckets (`dataplane.types.RESIDENCE_BOUNDS_NS`, a few
integer comparisons per reflected datagram) and read from `Reflector.residence()` at scrape
time. Continuous ping feeds `PingMetrics` once per summary interval: its RTT and
residence histograms are filled from that interval's records with numpy (`np.histogram`), not
one `observe()` per packet.

Names follow Prometheus conventions: a `twamp_` prefix, `_total` for counters, seconds for
times. Drops carry a `reason` label (`unknown_peer`, `malformed`, `auth_failed`, `late`,
`send_errors`); refusals by a limit carry a `limit` label.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from .dataplane.types import RESIDENCE_BOUNDS_NS, RESIDENCE_KEYS, T3_BOUNDS_NS
from .hostport import parse_hostport

__all__ = [
    "DELAY_BUCKETS_S",
    "DROP_REASONS",
    "DelayHistogram",
    "MetricsEndpoint",
    "PingMetrics",
    "ReflectorCollector",
    "ServerCollector",
    "parse_metrics_address",
    "start_metrics",
]

DROP_REASONS = (
    "unknown_peer",
    "malformed",
    "auth_failed",
    "late",
    "send_errors",
    "light_evicted",
)
"""Reflector counters that count a datagram not reflected, by reason (`dataplane.Reflector`)."""

DELAY_BUCKETS_S: tuple[float, ...] = (
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2,
    2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
"""Upper bounds (s) of the delay histograms: 10 µs (loopback) to 5 s (a satellite hop)."""


def parse_metrics_address(text: str) -> tuple[str, int]:
    """'HOST:PORT', '[V6]:PORT' or ':PORT' (every address) for `--metrics`."""
    host, port = parse_hostport(text, 0, listen=True)
    if port == 0:
        raise ValueError(f"--metrics {text!r}: give the port to serve metrics on, e.g. :9862")
    return host, port


class MetricsEndpoint:
    """A running `/metrics` HTTP endpoint (prometheus_client's WSGI server in a thread)."""

    def __init__(self, server: Any, thread: Any, registry: CollectorRegistry):
        self._server = server
        self._thread = thread
        self.registry = registry

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def start_metrics(address: tuple[str, int], collectors: Iterable[Collector]) -> MetricsEndpoint:
    """Serve `collectors` on http://HOST:PORT/metrics; `OSError` names the address."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    host, port = address
    try:
        server, thread = start_http_server(port, addr=host or "::", registry=registry)
    except OSError as exc:
        shown = f"[{host}]:{port}" if ":" in host else f"{host or '[::]'}:{port}"
        raise OSError(
            exc.errno, f"cannot serve metrics on {shown}: {exc.strerror or exc}"
        ) from None
    return MetricsEndpoint(server, thread, registry)


def _counter(name: str, doc: str, value: float, **labels: str) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def _reflector_families(counters: Mapping[str, int], prefix: str) -> Iterator[Any]:
    yield _counter(
        f"{prefix}_packets_received",
        "Test packets received by the reflector.",
        counters.get("received", 0),
    )
    yield _counter(
        f"{prefix}_packets_reflected",
        "Test packets reflected.",
        counters.get("reflected", 0),
    )
    drops = CounterMetricFamily(
        f"{prefix}_packets_dropped",
        "Test packets not reflected, by reason.",
        labels=["reason"],
    )
    for reason in DROP_REASONS:
        drops.add_metric([reason], counters.get(reason, 0))
    yield drops
    yield _residence_family(counters, prefix)


def _residence_family(counts: Mapping[str, int], prefix: str) -> HistogramMetricFamily:
    """The reflectors' residence histogram from their `residence()` counts (per bucket, not
    cumulative; `dataplane.types.RESIDENCE_KEYS`): T3 - T2 of every reflected datagram, in the
    data plane's fixed buckets, 1 µs to 10 ms. Its `_count` is the reflected datagrams."""
    seen = 0
    buckets: list[tuple[str, float]] = []
    for bound, key in zip((*RESIDENCE_BOUNDS_NS, None), RESIDENCE_KEYS[:-1], strict=True):
        seen += counts.get(key, 0)
        buckets.append(("+Inf" if bound is None else repr(bound / 1e9), seen))
    family = HistogramMetricFamily(
        f"{prefix}_residence_seconds",
        "Reflector residence T3-T2 (receive time to the transmit Timestamp written) of every "
        "reflected test packet.",
    )
    family.add_metric([], buckets, sum_value=counts.get("residence_sum_ns", 0) / 1e9)
    return family


class ReflectorCollector(Collector):
    """`twamp reflect`: the reflectors' counters, read at scrape time from `counters()`.

    The mapping holds `Reflector.counters()` and `Reflector.residence()` summed over the
    reflectors (the residence keys are exported as a histogram)."""

    def __init__(self, counters: Callable[[], Mapping[str, int]], implementation: str):
        self._counters = counters
        self._implementation = implementation

    def collect(self) -> Iterator[Any]:
        info = GaugeMetricFamily(
            "twamp_reflector_info", "The reflector's implementation.", labels=["implementation"]
        )
        info.add_metric([self._implementation], 1)
        yield info
        counters = self._counters()
        yield from _reflector_families(counters, "twamp_reflector")
        if "t3_samples" in counters:
            yield from _t3_families(counters, "twamp_reflector")


def _t3_families(counts: Mapping[str, int], prefix: str) -> Iterator[Any]:
    """`twamp reflect --t3-diagnostic`: how early the transmit Timestamp (T3) written into each
    reply was against the kernel's transmit stamp of it, from the cumulative `t3_le_<bound>_ns`
    counts (`dataplane.types.T3_BOUNDS_NS`, powers of two of ns)."""
    buckets = [(repr(bound / 1e9), counts.get(f"t3_le_{bound}_ns", 0)) for bound in T3_BOUNDS_NS]
    buckets.append(("+Inf", counts.get("t3_samples", 0)))
    family = HistogramMetricFamily(
        f"{prefix}_t3_error_seconds",
        "Kernel transmit stamp minus the transmit Timestamp (T3) written into the reply, of "
        "every reply the kernel reported (reflect --t3-diagnostic).",
    )
    family.add_metric([], buckets, sum_value=counts.get("t3_sum_ns", 0) / 1e9)
    yield family
    yield GaugeMetricFamily(
        f"{prefix}_t3_error_max_seconds",
        "The largest T3 error seen (reflect --t3-diagnostic).",
        value=counts.get("t3_max_ns", 0) / 1e9,
    )


class ServerCollector(Collector):
    """`twamp server`: connections, sessions, limits hit and the reflector's counters.

    `stats` returns `TwampServer.stats()` (taken on the server's loop by the caller).
    """

    def __init__(self, stats: Callable[[], Mapping[str, Any]]):
        self._stats = stats

    def collect(self) -> Iterator[Any]:
        stats = self._stats()
        conns, sessions = stats["connections"], stats["sessions"]
        yield GaugeMetricFamily(
            "twamp_server_connections_open", "Open control connections.", value=conns["open"]
        )
        yield _counter("twamp_server_connections", "Control connections accepted.", conns["total"])
        running = GaugeMetricFamily(
            "twamp_server_sessions", "Test sessions by state.", labels=["state"]
        )
        for state in ("accepted", "running", "stopping"):
            running.add_metric([state], sessions[state])
        yield running
        yield _counter(
            "twamp_server_sessions_accepted", "Test sessions accepted.", sessions["total"]
        )
        yield GaugeMetricFamily(
            "twamp_server_test_ports", "UDP test ports open.", value=stats["test_ports"]
        )
        limits = CounterMetricFamily(
            "twamp_server_limit_refusals",
            "Clients or sessions refused or ended because a limit was hit, by limit.",
            labels=["limit"],
        )
        per_address = conns.get("refused_per_address", 0)
        for limit, value in (
            ("connections", conns.get("refused", 0) - per_address),
            ("connections_per_address", per_address),
            ("setup_timeout", conns.get("setup_timeouts", 0)),
            ("sessions", sessions.get("refused", 0)),
            ("refwait", sessions.get("refwait_expired", 0)),
            ("third_party_sender", sessions.get("third_party_refused", 0)),
            ("timeout_capped", sessions.get("timeouts_capped", 0)),
            ("key_derivation", stats.get("key_derivations", {}).get("refused", 0)),
        ):
            limits.add_metric([limit], value)
        yield limits
        reflector = {**stats.get("reflector", {}), **stats.get("residence", {})}
        yield from _reflector_families(reflector, "twamp_reflector")
        if stats.get("t3"):
            yield from _t3_families(stats["t3"], "twamp_reflector")


class DelayHistogram:
    """Cumulative Prometheus histogram filled from numpy arrays of ns in one call."""

    def __init__(self, buckets_s: tuple[float, ...] = DELAY_BUCKETS_S):
        self._edges_ns = np.array([b * 1e9 for b in buckets_s], dtype=np.float64)
        self._buckets = buckets_s
        self._counts = np.zeros(len(buckets_s) + 1, dtype=np.int64)  # last: +Inf only
        self._sum_s = 0.0

    def add(self, values_ns: npt.NDArray[np.int64]) -> None:
        if values_ns.size == 0:
            return
        # A value equal to an upper bound belongs to that bucket (`le`): side="left".
        index = np.searchsorted(self._edges_ns, values_ns.astype(np.float64), side="left")
        self._counts += np.bincount(index, minlength=self._counts.size)
        self._sum_s += float(values_ns.sum()) / 1e9

    def family(self, name: str, doc: str, labels: Mapping[str, str]) -> HistogramMetricFamily:
        cumulative = np.cumsum(self._counts)
        buckets = [(repr(b), int(c)) for b, c in zip(self._buckets, cumulative, strict=False)]
        buckets.append(("+Inf", int(cumulative[-1])))
        family = HistogramMetricFamily(name, doc, labels=list(labels))
        family.add_metric(list(labels.values()), buckets, sum_value=self._sum_s)
        return family


@dataclass(frozen=True)
class _PingState:
    totals: dict[str, int]
    rtt: DelayHistogram
    residence: DelayHistogram
    last: dict[str, float]


class PingMetrics(Collector):
    """Continuous ping: totals, loss, RTT and residence histograms, last interval's figures.

    `add` (the measuring thread) builds a new state and swaps it in with one assignment, and
    `collect` (the HTTP thread) reads the reference once: no lock, and a scrape never sees half
    an interval.
    """

    def __init__(self, target: str):
        self.target = target
        self._state = _PingState(
            dict.fromkeys(
                ("sent", "received", "lost", "duplicates", "unparsable", "sessions", "failures"),
                0,
            ),
            DelayHistogram(),
            DelayHistogram(),
            {},
        )

    def session_failed(self) -> None:
        old = self._state
        totals = {**old.totals, "failures": old.totals["failures"] + 1}
        self._state = _PingState(totals, old.rtt, old.residence, old.last)

    def add(
        self,
        summary: Mapping[str, Any],
        counters: Mapping[str, int],
        rtt_ns: npt.NDArray[np.int64],
        residence_ns: npt.NDArray[np.int64],
    ) -> None:
        """One summary interval (one test session) is over."""
        old = self._state
        counts = summary["counts"]
        totals = dict(old.totals)
        for key in ("sent", "received", "lost", "duplicates"):
            totals[key] += int(counts[key])
        totals["unparsable"] += int(counters.get("malformed", 0))
        totals["sessions"] += 1
        rtt, residence = copy.deepcopy(old.rtt), copy.deepcopy(old.residence)
        # Impossible delays (negative) are not put in a histogram of delays.
        rtt.add(rtt_ns[rtt_ns >= 0])
        residence.add(residence_ns[residence_ns >= 0])
        last = {"loss_ratio": (counts["loss_pct"] or 0.0) / 100.0}
        if summary["delay"]["rtt"]:
            last["rtt_median_seconds"] = summary["delay"]["rtt"]["median"] / 1e9
        self._state = _PingState(totals, rtt, residence, last)

    def collect(self) -> Iterator[Any]:
        state = self._state
        label = [self.target]
        docs = {
            "sent": "Test packets sent.",
            "received": "Test packets answered (first copy).",
            "lost": "Test packets without an answer.",
            "duplicates": "Extra copies of answers.",
            "unparsable": "Replies that could not be parsed (count as lost).",
            "sessions": "Test sessions (summary intervals) completed.",
            "failures": "Sessions that could not be set up (server down, refused, ...).",
        }
        for key, doc in docs.items():
            packets = key not in ("sessions", "failures")
            name = f"twamp_ping_{key}_packets" if packets else f"twamp_ping_{key}"
            yield _labelled_counter(name, doc, state.totals[key], label)
        yield state.rtt.family(
            "twamp_ping_rtt_seconds",
            "Round trip (T4-T1)-(T3-T2), excluding the reflector's residence.",
            {"target": self.target},
        )
        yield state.residence.family(
            "twamp_ping_residence_seconds", "Reflector residence T3-T2.", {"target": self.target}
        )
        for key, value in state.last.items():
            gauge = GaugeMetricFamily(
                f"twamp_ping_last_{key}", "Over the last summary interval.", labels=["target"]
            )
            gauge.add_metric(label, value)
            yield gauge


def _labelled_counter(name: str, doc: str, value: float, label: list[str]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=["target"])
    family.add_metric(label, value)
    return family
