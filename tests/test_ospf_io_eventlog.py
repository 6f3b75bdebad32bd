"""The OSPF lab's event log: writer, reader, truncation, concurrency (no root needed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from twamp.ospf.eventlog import (
    LOG_VERSION,
    Event,
    EventLog,
    EventLogError,
    lsa_key,
    parse_lsa_key,
    read_events,
)


def test_round_trip_and_header(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with EventLog(path) as log:
        log.write(
            "gen",
            "tx",
            t_ns=2_000,
            type="lsu",
            lsas=[{"key": lsa_key(5, "198.18.0.0", "192.0.2.2"), "seq": -2147483647, "age": 1}],
        )
        log(
            "link",
            "down",
            t_ns=1_000,
            ns="twol-1-gen",
            ifname="veth0",
            how="carrier",
            t_done_ns=1_500,
        )
    assert log.closed
    events = list(read_events(path))
    assert events[0].source == "lab" and events[0].event == "log-start"
    assert events[0]["version"] == LOG_VERSION and events[0]["clock"] == "CLOCK_REALTIME"
    assert [(e.source, e.event, e.t_ns) for e in events[1:]] == [
        ("gen", "tx", 2_000),
        ("link", "down", 1_000),
    ]
    assert events[1]["lsas"][0]["seq"] == -2147483647
    assert parse_lsa_key(events[1]["lsas"][0]["key"]) == (5, "198.18.0.0", "192.0.2.2")
    ordered = list(read_events(path, sort=True))
    assert [e.event for e in ordered] == ["down", "tx", "log-start"]
    # every line is standalone JSON with the three mandatory keys first
    for line in path.read_text().splitlines():
        obj = json.loads(line)
        assert list(obj)[:3] == ["t_ns", "source", "event"]


def test_bytes_and_sets_are_serialised() -> None:
    ev = Event(1, "gen", "rx-malformed", {"head": b"\x02\x01", "nbrs": {"b", "a"}})
    obj = json.loads(ev.to_json())
    assert obj["head"] == "0201" and obj["nbrs"] == ["a", "b"]


def test_truncated_last_line_is_dropped_but_corruption_is_not(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl"
    with EventLog(path) as log:
        log.write("probe", "sent", seq=1)
    with open(path, "a") as fh:
        fh.write('{"t_ns": 5, "source": "pro')
    assert [e.event for e in read_events(path)] == ["log-start", "sent"]
    with open(path, "a") as fh:
        fh.write('\n{"t_ns": 6, "source": "probe", "event": "sent", "seq": 2}\n')
    with pytest.raises(EventLogError, match=r"cut\.jsonl:3"):
        list(read_events(path))


def test_missing_keys_raise(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"t_ns": 1, "event": "x"}\n{"t_ns": 1, "source": "a", "event": "b"}\n')
    with pytest.raises(EventLogError, match=r"bad\.jsonl:1"):
        list(read_events(path))


def test_threads_never_interleave_lines(tmp_path: Path) -> None:
    path = tmp_path / "mt.jsonl"
    log = EventLog(path)
    pad = "x" * 3000  # longer than PIPE_BUF: atomicity comes from one write per line + lock

    def worker(n: int) -> None:
        for i in range(300):
            log.write(f"w{n}", "mark", label=pad, i=i)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    events = list(read_events(path))
    assert len(events) == 1 + 4 * 300
    for n in range(4):
        assert [e["i"] for e in events if e.source == f"w{n}"] == list(range(300))


def test_memory_log_selects() -> None:
    log = EventLog.memory()
    log.write("fib", "route-add", prefix="198.18.0.0/24")
    log.write("fib", "route-del", prefix="198.18.0.0/24")
    log.write("gen", "rx", type="ack")
    assert [e.event for e in log.select("fib")] == ["route-add", "route-del"]
    assert [e.source for e in log.select(event="rx")] == ["gen"]


def test_sigterm_keeps_every_written_event(tmp_path: Path) -> None:
    """A writer killed by SIGTERM mid-run leaves a readable log of everything it wrote."""
    path = tmp_path / "killed.jsonl"
    code = (
        "import sys, time\n"
        "from twamp.ospf.eventlog import EventLog\n"
        f"log = EventLog({str(path)!r})\n"
        "for i in range(10**9):\n"
        "    log.write('probe', 'sent', seq=i)\n"
        "    if i == 50: print('ready', flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=10)
    events = list(read_events(path))
    seqs = [e["seq"] for e in events if e.event == "sent"]
    assert len(seqs) > 50 and seqs == list(range(len(seqs)))
