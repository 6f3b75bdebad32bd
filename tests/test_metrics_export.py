"""Prometheus metrics: a real scrape over HTTP of `twamp server`, `twamp reflect` and continuous
`twamp ping`, parsed with prometheus_client's own text parser."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

from ops_helpers import free_port, scrape, stop, twamp, value, wait_listening
from twamp.dataplane.types import RESIDENCE_BOUNDS_NS
from twamp.metrics_export import (
    DELAY_BUCKETS_S,
    DelayHistogram,
    PingMetrics,
    parse_metrics_address,
    start_metrics,
)
from twamp.net.background import LightReflector
from twamp.ping import PingOptions, run_light_ping, run_ping


def test_server_metrics_scrape() -> None:
    port, mport = free_port(), free_port()
    server = twamp(
        "server", "--listen", f"127.0.0.1:{port}", "--metrics", f"127.0.0.1:{mport}",
        "--max-sessions-per-client", "1",
    )  # fmt: skip
    try:
        wait_listening(port)
        before = scrape(mport)
        assert value(before, "twamp_server_sessions_accepted_total") == 0
        result = run_ping(f"127.0.0.1:{port}", PingOptions(count=25, interval=0.002, wait=0.5))
        assert result.summary["counts"]["received"] == 25
        after = scrape(mport)
    finally:
        out, _ = stop(server)
    # wait_listening's probe connection and the ping's
    assert value(after, "twamp_server_connections_total") == 2
    assert value(after, "twamp_server_sessions_accepted_total") == 1
    assert value(after, "twamp_reflector_packets_reflected_total") == 25
    check_residence(after, 25)
    assert value(after, "twamp_reflector_packets_dropped_total", reason="malformed") == 0
    assert value(after, "twamp_server_limit_refusals_total", limit="sessions") == 0
    assert value(after, "twamp_server_limit_refusals_total", limit="connections_per_address") == 0
    assert value(after, "twamp_server_connections_open") in (0, 1)
    # the start-up line names modes instead of a bitmask
    assert "modes open" in out and "modes 3" not in out, out


def test_reflect_metrics_scrape() -> None:
    port, mport = free_port(socket.SOCK_DGRAM), free_port()
    proc = twamp("reflect", "--listen", f"127.0.0.1:{port}", "--metrics", f"127.0.0.1:{mport}")
    try:
        wait_listening(mport)
        result = run_light_ping(
            f"127.0.0.1:{port}", PingOptions(count=20, interval=0.002, wait=0.5)
        )
        assert result.summary["counts"]["received"] == 20
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk:
            junk.sendto(b"12345", ("127.0.0.1", port))  # too short to reflect
        time.sleep(0.3)
        samples = scrape(mport)
    finally:
        stop(proc)
    assert value(samples, "twamp_reflector_packets_reflected_total") == 20
    assert value(samples, "twamp_reflector_packets_received_total") == 21
    assert value(samples, "twamp_reflector_packets_dropped_total", reason="malformed") == 1
    assert value(samples, "twamp_reflector_info", implementation=value_impl(samples)) == 1
    check_residence(samples, 20)


def check_residence(samples: dict[str, list], reflected: int) -> None:  # type: ignore[type-arg]
    """The reflector's residence histogram: one observation per reflected packet, cumulative
    `le` buckets over the data plane's bounds, and a positive sum below count x 10 s."""
    name = "twamp_reflector_residence_seconds"
    assert value(samples, f"{name}_count") == reflected
    buckets = [s for s in samples[name] if s.name == f"{name}_bucket"]
    bounds = [s.labels["le"] for s in buckets]
    assert bounds == [repr(b / 1e9) for b in RESIDENCE_BOUNDS_NS] + ["+Inf"]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts) and counts[-1] == reflected
    assert 0 < value(samples, f"{name}_sum") < reflected * 10


def test_reflect_workers_metrics_sum_the_workers() -> None:
    """--workers 2 --metrics: the parent serves the sum of its workers' periodic reports."""
    port, mport = free_port(socket.SOCK_DGRAM), free_port()
    proc = twamp(
        "reflect", "--listen", f"127.0.0.1:{port}", "--workers", "2",
        "--metrics", f"127.0.0.1:{mport}",
    )  # fmt: skip
    try:
        wait_listening(mport)
        # Eight senders (eight source ports): SO_REUSEPORT spreads them over the workers.
        for _ in range(8):
            result = run_light_ping(
                f"127.0.0.1:{port}", PingOptions(count=5, interval=0.002, wait=0.5)
            )
            assert result.summary["counts"]["received"] == 5
        deadline = time.monotonic() + 10
        while True:  # the workers report every second
            samples = scrape(mport)
            done = value(samples, "twamp_reflector_packets_reflected_total") == 40
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        out, err = stop(proc)
    assert value(samples, "twamp_reflector_packets_reflected_total") == 40, (out, err)
    assert value(samples, "twamp_reflector_packets_received_total") == 40
    check_residence(samples, 40)
    # the parent's summary adds up the same workers
    assert "2 workers" in out and "metrics on http://127.0.0.1:" in out, out
    per_worker = [int(line.split("reflected ")[1].split(",")[0]) for line in
                  out.splitlines() if line.startswith("worker ")]  # fmt: skip
    assert len(per_worker) == 2 and sum(per_worker) == 40, out


def value_impl(samples: dict[str, list]) -> str:  # type: ignore[type-arg]
    return str(samples["twamp_reflector_info"][0].labels["implementation"])


def test_continuous_ping_metrics_scrape(tmp_path: object) -> None:
    mport = free_port()
    with LightReflector("127.0.0.1", 0) as reflector:
        target = f"127.0.0.1:{reflector.port}"
        proc = twamp(
            "ping", "--light", f"127.0.0.1:{reflector.port}", "--continuous",
            "--summary-interval", "0.5", "-i", "0.005f", "-L", "0.2",
            "--metrics", f"127.0.0.1:{mport}",
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                samples = scrape(mport)
                if (
                    value(
                        samples, "twamp_ping_sessions_total", target=f"127.0.0.1:{reflector.port}"
                    )
                    >= 2
                ):
                    break
                time.sleep(0.2)
        finally:
            out, _ = stop(proc)
    sent = value(samples, "twamp_ping_sent_packets_total", target=target)
    received = value(samples, "twamp_ping_received_packets_total", target=target)
    assert sent >= 2 * 100 * 0.8 and received == sent
    assert value(samples, "twamp_ping_rtt_seconds_count", target=target) == received
    assert value(samples, "twamp_ping_rtt_seconds_bucket", target=target, le="+Inf") == received
    assert value(samples, "twamp_ping_residence_seconds_count", target=target) == received
    assert value(samples, "twamp_ping_last_loss_ratio", target=target) == 0.0
    assert "#1:" in out


def test_delay_histogram_buckets_are_le_and_cumulative() -> None:
    hist = DelayHistogram()
    values = np.array([0, 10_000, 10_001, 4_000_000_000, 9_000_000_000], dtype=np.int64)
    hist.add(values)
    family = hist.family("x_seconds", "test", {"target": "t"})
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name == "x_seconds_bucket"}
    assert buckets[repr(DELAY_BUCKETS_S[0])] == 2  # 0 and exactly 10 µs
    assert buckets[repr(DELAY_BUCKETS_S[1])] == 3
    assert buckets["5.0"] == 4 and buckets["+Inf"] == 5
    total = next(s.value for s in family.samples if s.name == "x_seconds_sum")
    assert total == pytest.approx(13.000020001)


def test_ping_metrics_in_process_endpoint() -> None:
    metrics = PingMetrics("example")
    summary = {
        "counts": {"sent": 3, "received": 2, "lost": 1, "duplicates": 0, "loss_pct": 100 / 3},
        "delay": {"rtt": {"median": 1_000_000}},
    }
    rtt = np.array([1_000_000, -5], dtype=np.int64)  # the impossible one is left out
    metrics.add(summary, {"malformed": 1}, rtt, np.array([10], dtype=np.int64))
    endpoint = start_metrics(("127.0.0.1", 0), [metrics])
    try:
        samples = scrape(endpoint.address[1])
    finally:
        endpoint.close()
    assert value(samples, "twamp_ping_lost_packets_total", target="example") == 1
    assert value(samples, "twamp_ping_unparsable_packets_total", target="example") == 1
    assert value(samples, "twamp_ping_rtt_seconds_count", target="example") == 1
    assert value(samples, "twamp_ping_last_loss_ratio", target="example") == pytest.approx(1 / 3)


@pytest.mark.parametrize("text", ["127.0.0.1", "127.0.0.1:0", "localhost:9", "x"])
def test_bad_metrics_address(text: str) -> None:
    with pytest.raises(ValueError):
        parse_metrics_address(text)


def test_metrics_port_in_use_is_one_sentence() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError) as info:
            start_metrics(("127.0.0.1", port), [])
    assert f"127.0.0.1:{port}" in str(info.value) and "in use" in str(info.value)


def test_server_metrics_port_in_use_stops_cleanly() -> None:
    port = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        mport = busy.getsockname()[1]
        proc = twamp("server", "--listen", f"127.0.0.1:{port}", "--metrics", f"127.0.0.1:{mport}")
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2, (out, err)
    assert f"cannot serve metrics on 127.0.0.1:{mport}: Address already in use" in err
    assert "Traceback" not in err


def test_a_limit_hit_shows_in_the_metrics() -> None:
    port, mport = free_port(), free_port()
    server = twamp(
        "server", "--listen", f"127.0.0.1:{port}", "--metrics", f"127.0.0.1:{mport}",
        "--max-connections-per-address", "1",
    )  # fmt: skip
    try:
        wait_listening(mport)
        with socket.create_connection(("127.0.0.1", port), 5) as first:
            first.recv(64)  # our one connection is served (its greeting arrives)
            with socket.create_connection(("127.0.0.1", port), 5) as second:
                greeting = second.recv(64)  # the second from the same address is refused
                time.sleep(0.2)
            samples = scrape(mport)
    finally:
        stop(server)
    assert greeting[12:16] == b"\0\0\0\0" or greeting == b""  # Modes 0, or closed at once
    assert value(samples, "twamp_server_limit_refusals_total", limit="connections_per_address") >= 1
