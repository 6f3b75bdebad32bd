"""`twamp ping --continuous`: runs until stopped, a summary per interval to stdout and to a
JSON-lines file, reconnects when the server restarts, and keeps its memory flat."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ops_helpers import free_port, stop, twamp, wait_listening
from twamp.net.background import LightReflector
from twamp.ping import IntervalReport, PingOptions, continuous_count, run_continuous


def read_lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(path: Path, predicate: object, deadline_s: float) -> list[dict[str, object]]:
    end = time.monotonic() + deadline_s
    lines: list[dict[str, object]] = []
    while time.monotonic() < end:
        lines = read_lines(path)
        if predicate(lines):  # type: ignore[operator]
            return lines
        time.sleep(0.1)
    raise AssertionError(f"timed out; lines so far: {[ln.get('error') for ln in lines]}")


def ok(line: dict[str, object]) -> bool:
    return (
        line["error"] is None
        and not line.get("control_closed")
        and bool(
            line["summary"]["counts"]["received"]  # type: ignore[index]
        )
    )


def test_continuous_survives_a_server_restart(tmp_path: Path) -> None:
    port = free_port()
    summaries = tmp_path / "summaries.jsonl"
    server = twamp("server", "--listen", f"127.0.0.1:{port}")
    ping = None
    try:
        wait_listening(port)
        ping = twamp(
            "ping", f"127.0.0.1:{port}", "--continuous", "--summary-interval", "0.5",
            "-i", "0.01f", "-L", "0.2", "--summary-file", str(summaries),
        )  # fmt: skip
        wait_for(summaries, lambda ls: sum(map(ok, ls)) >= 2, 20)
        stop(server, 9)  # gone without a word
        time.sleep(2.0)
        server = twamp("server", "--listen", f"127.0.0.1:{port}")
        wait_listening(port)
        before = len(read_lines(summaries))
        lines = wait_for(summaries, lambda ls: sum(map(ok, ls[before:])) >= 2, 30)
    finally:
        stop(server)
        out, err = stop(ping) if ping is not None else ("", "")
    down = [ln for ln in lines if not ok(ln)]
    assert down, "the outage left no trace in the summaries"
    assert all(ln["error"] or ln.get("control_closed") for ln in down)
    assert "no session:" in out or "closed the control connection" in out
    assert [ln["interval"] for ln in lines] == list(range(len(lines)))
    assert ping is not None and ping.returncode == 0, err


def test_continuous_memory_stays_flat(tmp_path: Path) -> None:
    """RSS after 4 and after 16 intervals of 500 packets each differ by less than 8 MB."""
    summaries = tmp_path / "s.jsonl"
    with LightReflector("127.0.0.1", 0) as reflector:
        ping = twamp(
            "ping", "--light", f"127.0.0.1:{reflector.port}", "--continuous",
            "--summary-interval", "0.5", "-i", "0.001f", "-L", "0.1",
            "--summary-file", str(summaries),
        )  # fmt: skip
        rss = []
        try:
            for intervals in (4, 16):
                wait_for(summaries, lambda ls, n=intervals: len(ls) >= n, 60)
                status = Path(f"/proc/{ping.pid}/status").read_text()
                rss.append(
                    int(next(ln for ln in status.splitlines() if ln.startswith("VmRSS")).split()[1])
                )
        finally:
            stop(ping)
    lines = read_lines(summaries)
    assert sum(ln["summary"]["counts"]["sent"] for ln in lines) >= 16 * 400  # type: ignore[index]
    assert rss[1] - rss[0] < 8_000, f"RSS grew from {rss[0]} kB to {rss[1]} kB"
    assert ping.returncode == 0


def test_run_continuous_reports_failures_and_stops() -> None:
    class Stop:
        def __init__(self) -> None:
            self.flag = False

        def is_set(self) -> bool:
            return self.flag

    stop_after = Stop()
    reports: list[IntervalReport] = []

    def on_interval(report: IntervalReport) -> None:
        reports.append(report)
        if len(reports) == 2:
            stop_after.flag = True

    port = free_port()  # nothing listens
    n = run_continuous(
        f"127.0.0.1:{port}",
        PingOptions(interval=0.01, timeout=1),
        interval=0.2,
        stop=stop_after,
        on_interval=on_interval,
    )
    assert n == 2 and all(r.result is None for r in reports)
    assert all("connection refused" in (r.error or "") for r in reports)
    assert reports[0].to_json()["error"] == reports[0].error


def test_continuous_count() -> None:
    assert continuous_count(PingOptions(interval=0.1), 60) == 600
    with pytest.raises(ValueError, match="gap above 0"):
        continuous_count(PingOptions(interval=0), 60)
