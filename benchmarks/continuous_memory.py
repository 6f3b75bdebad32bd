"""RSS of `twamp ping --continuous` over time, against a loopback `twamp server` it starts.

    python benchmarks/continuous_memory.py --minutes 3 --gap 0.001 --summary-interval 5

Starts `twamp server` on a free loopback port and `twamp ping --continuous` towards it, samples
the ping's VmRSS (from /proc) after each summary line, and prints one row per sample: elapsed
seconds, intervals done, packets sent so far, RSS in MiB. The last line says the growth between
the second sample and the last one. Bounded: it stops both processes (by PID) at the end.
A figure from a shared machine is a measurement beside other work, not a property of the code.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--gap", type=float, default=0.001, help="seconds between packets")
    parser.add_argument("--summary-interval", type=float, default=5.0)
    args = parser.parse_args()
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "twamp", "server", "--listen", f"127.0.0.1:{port}", "-q"],
        env=env,
    )
    with tempfile.TemporaryDirectory(prefix="twop14-mem-") as tmp:
        summaries = Path(tmp) / "s.jsonl"
        time.sleep(1.5)
        ping = subprocess.Popen(
            [
                sys.executable, "-m", "twamp", "ping", f"127.0.0.1:{port}", "--continuous",
                "--summary-interval", str(args.summary_interval), "-i", f"{args.gap}f",
                "-L", "0.5", "--summary-file", str(summaries), "-q",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        start = time.monotonic()
        rows: list[tuple[float, int, int, float]] = []
        seen = 0
        try:
            while time.monotonic() - start < args.minutes * 60 and ping.poll() is None:
                time.sleep(0.5)
                lines = summaries.read_text().splitlines() if summaries.exists() else []
                if len(lines) > seen:
                    seen = len(lines)
                    sent = sum(
                        json.loads(ln).get("summary", {}).get("counts", {}).get("sent", 0)
                        for ln in lines
                    )
                    row = (time.monotonic() - start, seen, sent, rss_mib(ping.pid))
                    rows.append(row)
                    print(f"{row[0]:7.1f} s  {row[1]:4d} intervals  {row[2]:9d} sent  "
                          f"RSS {row[3]:6.1f} MiB", flush=True)  # fmt: skip
        finally:
            for proc in (ping, server):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in (ping, server):
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    if len(rows) >= 3:
        grow = rows[-1][3] - rows[1][3]
        print(f"RSS from interval {rows[1][1]} to {rows[-1][1]}: {grow:+.1f} MiB "
              f"({rows[-1][2] - rows[1][2]} more packets)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
