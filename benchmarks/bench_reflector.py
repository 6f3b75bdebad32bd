"""Reflector benchmark: our fast path vs the pure twin vs a minimal C reflector, in one run.

    sudo python benchmarks/bench_reflector.py [--quick] [--json FILE]

Everything runs on loopback inside a network namespace of its own (`twamp-bench-<pid>`, only
`lo` up, no netfilter rules), which is always deleted at the end; without root it runs in the
current namespace and says so. One sender, `c_sender.c`, drives every reflector:

* `c`: `c_reflector.c`, recvmmsg/sendmmsg TWAMP Light, the reference (built here with gcc -O2);
* `cython`: our compiled `twamp.dataplane.reflector.compiled.Reflector`, when it imports;
* `python`: the pure twin `twamp.dataplane.reflector.pure.Reflector`.

For each: the highest rate with at most 0.1 % loss (search over fixed-duration trials, the
sender and the reflector pinned to different cores), then RTT and reflector residence time
(reflector Timestamp - Receive Timestamp, read from the reflected packets) at a fixed rate, with
the reflector blocking and busy-polling. The fast twin is also measured in authenticated and
encrypted mode (a TWAMP session with fixed test keys; TWAMP Light has none). The ratios are
printed next to the targets of the "Fast path" issue; they are not asserted. A trial in which
the sender fell behind its schedule or dropped reflections in its own receive buffer is marked
sender-limited and never taken as the reflector's limit. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import platform
import secrets
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# struct record of c_sender.c: packed, little-endian, 40 octets.
RECORD_DTYPE = np.dtype(
    [
        ("seq", "<u4"),
        ("sender_ttl", "u1"),
        ("reply_ttl", "u1"),
        ("length", "<u2"),
        ("t1", "<i8"),
        ("t2", "<i8"),
        ("t3", "<i8"),
        ("t4", "<i8"),
    ]
)
assert RECORD_DTYPE.itemsize == 40

MAX_LOSS = 0.001  # the "at most 0.1 % loss"
SENDER_TTL = 64
REFLECTOR_BATCH = 64
SENDER_BATCH = 16  # max-rate trials send bursts of this many; latency trials pace each packet
PERCENTILES = (50, 90, 99)

# A trial is sender-limited (never the reflector's fault) if any of these hold.
SENDER_MIN_RATE_FRACTION = 0.99  # achieved send rate below this fraction of the target
# More than 10 % of packets left over 1 ms behind schedule: chronically behind. Single stalls of
# a few ms are routine on these VMs (a spinning thread sees them too); they matter only through
# the catch-up burst they cause, which SENDER_MAX_BACKLOG catches.
SENDER_MAX_LATE_FRACTION = 0.10
SENDER_MAX_BACKLOG = 2000  # a catch-up burst this long can overflow a reflector on its own

TARGETS = {
    "fast/c": ">= 0.95",
    "fast/pure": ">= 2",
    "residence p50 blocking": "<= 15 µs",
    "residence p50 busy-poll": "<= 2 µs",
    "residence p99 busy-poll": "<= 10 µs",
    "auth/open": ">= 0.5",
    "enc/open": ">= 0.5",
}

Json = dict[str, Any]


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


# -- building the C programs ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Programs:
    reflector: Path
    sender: Path
    crypto: bool  # c_sender linked with OpenSSL: auth/enc modes available
    compiler: str
    flags: tuple[str, ...]


def build_programs(out_dir: Path, cc: str = "gcc") -> Programs:
    """Compile c_reflector and c_sender with -O2 (c_sender with OpenSSL when it links)."""
    gcc = shutil.which(cc)
    if gcc is None:
        raise FileNotFoundError(f"{cc} not found: the C reflector and sender cannot be built")
    flags = ("-O2", "-Wall", "-Wextra")
    out_dir.mkdir(parents=True, exist_ok=True)
    reflector = out_dir / "c_reflector"
    sender = out_dir / "c_sender"
    _compile([gcc, *flags, "-o", str(reflector), str(HERE / "c_reflector.c")])
    crypto = True
    try:
        src = str(HERE / "c_sender.c")
        _compile([gcc, *flags, "-DHAVE_OPENSSL", "-o", str(sender), src, "-lcrypto", "-lm"])
    except RuntimeError as exc:
        log(f"c_sender without OpenSSL (auth/enc modes unavailable): {exc}")
        crypto = False
        _compile([gcc, *flags, "-o", str(sender), str(HERE / "c_sender.c"), "-lm"])
    version = subprocess.run([gcc, "--version"], capture_output=True, text=True, check=True)
    return Programs(reflector, sender, crypto, version.stdout.splitlines()[0], flags)


def _compile(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{proc.stderr}")


# -- the network namespace -----------------------------------------------------------------------


class NetNamespace:
    """A fresh network namespace with only `lo` up, or the current one (`name` None)."""

    def __init__(self, name: str | None) -> None:
        self.name = name
        self._created = False

    @classmethod
    def create(cls, name: str) -> NetNamespace:
        ns = cls(name)
        subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
        ns._created = True
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=30)
        return ns

    def wrap(self, cmd: Sequence[str]) -> list[str]:
        if self.name is None:
            return list(cmd)
        # `ip netns exec` execs the command itself: its PID is the program's (stop by PID).
        return ["ip", "netns", "exec", self.name, *cmd]

    def read(self, *paths: str) -> list[str | None]:
        """Contents of /proc files as seen from inside the namespace (None if unreadable)."""
        script = 'for f in "$@"; do cat "$f" 2>/dev/null || echo "?"; echo "\x1e"; done'
        proc = subprocess.run(
            self.wrap(["sh", "-c", script, "sh", *paths]),
            capture_output=True,
            text=True,
            timeout=30,
        )
        parts = proc.stdout.split("\x1e\n")
        return [None if p.strip() == "?" else p.strip() for p in parts[: len(paths)]]

    def delete(self) -> None:
        if self._created and self.name is not None:
            self._created = False
            subprocess.run(["ip", "netns", "del", self.name], check=False, timeout=30)


# -- processes -------------------------------------------------------------------------------------


class ReflectorProcess:
    """A reflector under test, started in `ns`; `stop()` returns its final counters."""

    def __init__(self, name: str, cmd: list[str], ns: NetNamespace, *, ready_s: float = 30.0):
        self.name = name
        self.cmd = ns.wrap(cmd)
        self.proc = subprocess.Popen(
            self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        _LIVE.add(self)
        self.ready = self._wait_ready(ready_s)
        self.port: int = int(self.ready["port"])
        self.final: Json | None = None

    def _wait_ready(self, timeout_s: float) -> Json:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith("ready "):
                    result: Json = json.loads(line[6:])
                    return result
                if not line:
                    break
            elif self.proc.poll() is not None:
                break
        err = self.stop_raw()
        raise RuntimeError(f"reflector {self.name} did not become ready: {err.strip()[-2000:]}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop_raw(self, timeout_s: float = 10.0) -> str:
        """SIGTERM, then SIGKILL after `timeout_s`; returns stderr. Stdout goes to `final`."""
        _LIVE.discard(self)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=timeout_s)
        for line in reversed(out.splitlines()):
            if line.startswith("{"):
                self.final = json.loads(line)
                break
        return err

    def stop(self) -> Json:
        err = self.stop_raw()
        if self.final is None:
            raise RuntimeError(f"reflector {self.name} printed no counters: {err.strip()[-2000:]}")
        return self.final


_LIVE: set[ReflectorProcess] = set()
_NAMESPACES: list[NetNamespace] = []


def _cleanup() -> None:
    """Stop whatever is still running and delete the namespace (also run by atexit)."""
    for refl in list(_LIVE):
        with contextlib.suppress(Exception):
            refl.stop_raw(timeout_s=5.0)
    for ns in _NAMESPACES:
        with contextlib.suppress(Exception):
            ns.delete()


def reflector_command(
    programs: Programs,
    impl: str,
    *,
    cpu: int,
    busy_poll: bool = False,
    mode: str = "open",
    peer: tuple[str, int] | None = None,
    keys: tuple[bytes, bytes] | None = None,
) -> list[str]:
    if impl == "c":
        if mode != "open":
            raise ValueError("the C reference reflector is TWAMP Light, open mode only")
        return [str(programs.reflector), *(["-b"] if busy_poll else []), "--", "0", str(cpu)]
    cmd = [sys.executable, str(HERE / "run_reflector.py"), "--impl", impl, "--port", "0"]
    cmd += ["--cpu", str(cpu), "--batch", str(REFLECTOR_BATCH), "--mode", mode]
    if busy_poll:
        cmd.append("--busy-poll")
    if mode != "open":
        assert peer is not None and keys is not None
        cmd += ["--peer", f"{peer[0]}:{peer[1]}", "--aes-key", keys[0].hex()]
        cmd += ["--hmac-key", keys[1].hex()]
    return cmd


# -- one trial -------------------------------------------------------------------------------------


def udp_snmp(pid: int) -> dict[str, int]:
    """The Udp counters of /proc/net/snmp in the network namespace of process `pid`."""
    try:
        lines = Path(f"/proc/{pid}/net/snmp").read_text().splitlines()
    except OSError:
        return {}
    udp = [line.split()[1:] for line in lines if line.startswith("Udp:")]
    if len(udp) < 2:
        return {}
    return {k: int(v) for k, v in zip(udp[0], udp[1], strict=False)}


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_snapshot(pid: int | None) -> Json:
    """CPU seconds used so far by process `pid` (all threads) and busy seconds per core."""
    snap: Json = {"t": time.monotonic(), "proc_s": None, "cores": {}}
    if pid:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            snap["proc_s"] = (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            name, *vals = line.split()
            if name.startswith("cpu") and name != "cpu":
                v = [int(x) for x in vals]
                snap["cores"][name] = (sum(v) - v[3] - v[4]) / _TICK  # all but idle, iowait
    return snap


def cpu_delta(before: Json, after: Json, packets: int) -> Json:
    """Reflector CPU µs per reflected packet and per-core busy fraction over the trial."""
    wall = after["t"] - before["t"]
    out: Json = {"wall_s": round(wall, 3)}
    if before["proc_s"] is not None and after["proc_s"] is not None:
        used = after["proc_s"] - before["proc_s"]
        out["reflector_cpu_s"] = round(used, 3)
        out["reflector_cpu_us_per_pkt"] = round(used / packets * 1e6, 3) if packets else None
    out["core_busy"] = {
        k: round((after["cores"][k] - v) / wall, 3)
        for k, v in before["cores"].items()
        if k in after["cores"] and wall > 0
    }
    return out


def process_cpu() -> dict[int, tuple[str, float]]:
    """(name, CPU seconds so far) of every process, by PID."""
    out: dict[int, tuple[str, float]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                head, tail = Path(entry.path, "stat").read_text().rsplit(")", 1)
                fields = tail.split()
                used = (int(fields[11]) + int(fields[12])) / _TICK
            except (OSError, IndexError, ValueError):
                continue
            out[int(entry.name)] = (head.partition("(")[2], used)
    return out


def foreign_cpu(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], ours: set[int]
) -> Json:
    """CPU seconds other processes used during a trial (noise on a shared machine).

    A PID new since `before` counts in full; processes that ended during the trial are missed.
    `ksoftirqd` is reported apart: it mostly carries our own packets.
    """
    foreign = softirqd = 0.0
    top: list[tuple[float, str]] = []
    for pid, (name, used_after) in after.items():
        if pid in ours:
            continue
        used = used_after - before.get(pid, (name, 0.0))[1]
        if used <= 0:
            continue
        if name.startswith("ksoftirqd"):
            softirqd += used
        else:
            foreign += used
            top.append((used, f"{name}[{pid}]"))
    top.sort(reverse=True)
    return {
        "seconds": round(foreign, 3),
        "ksoftirqd_s": round(softirqd, 3),
        "top": [f"{who} {used:.2f}s" for used, who in top[:3]],
    }


def wait_quiet(max_cores: float, ours: set[int], limit_s: float, window_s: float = 0.5) -> float:
    """Wait (at most `limit_s`) for a window in which other processes use under `max_cores`.

    Returns the seconds waited. Other helpers' test runs share these two cores; a trial that
    starts in a quiet moment is less likely to be disturbed (the trial itself still checks).
    """
    start = time.monotonic()
    ours = ours | {os.getpid()}
    while True:
        before = process_cpu()
        time.sleep(window_s)
        used = foreign_cpu(before, process_cpu(), ours)["seconds"]
        waited = time.monotonic() - start
        if used <= max_cores * window_s or waited >= limit_s:
            return waited


def distribution(values_ns: np.ndarray) -> Json:
    """p50/p90/p99/max and min in µs of an int64 ns array (None-valued when empty)."""
    keys = [f"p{p}" for p in PERCENTILES] + ["max", "min"]
    if values_ns.size == 0:
        return dict.fromkeys(keys)
    q = np.percentile(values_ns, PERCENTILES)
    out = {k: round(float(v) / 1e3, 3) for k, v in zip(keys, q, strict=False)}
    out["max"] = round(float(values_ns.max()) / 1e3, 3)
    out["min"] = round(float(values_ns.min()) / 1e3, 3)
    return out


def latency_summary(records: np.ndarray) -> Json:
    """RTT (T4 - T1), residence (T3 - T2) and RTT without residence, in µs."""
    t1, t2, t3, t4 = (records[k].astype(np.int64) for k in ("t1", "t2", "t3", "t4"))
    rtt = t4 - t1
    residence = t3 - t2
    return {
        "records": int(records.size),
        "rtt_us": distribution(rtt),
        "residence_us": distribution(residence),
        "net_rtt_us": distribution(rtt - residence),
        "negative_residence": int(np.count_nonzero(residence < 0)),
        "sender_ttl_values": sorted({int(v) for v in np.unique(records["sender_ttl"])}),
        "reply_ttl_values": sorted({int(v) for v in np.unique(records["reply_ttl"])}),
    }


def sender_limits(s: Json) -> list[str]:
    """Why a trial says more about the sender than about the reflector (empty: it does not)."""
    reasons = []
    sent = max(int(s["sent"]), 1)
    if s["sent"] < s["planned"] or s.get("interrupted"):
        reasons.append(f"sent {s['sent']} of {s['planned']}")
    if s["send_errors"]:
        reasons.append(f"{s['send_errors']} send errors")
    if s["rx_overflow"]:
        reasons.append(f"{s['rx_overflow']} reflections dropped in the sender's receive buffer")
    if s["send_rate"] < SENDER_MIN_RATE_FRACTION * s["rate_target"]:
        reasons.append(f"sent at {s['send_rate']:.0f}/s of {s['rate_target']:.0f}/s")
    if s["late_1ms"] > SENDER_MAX_LATE_FRACTION * sent:
        reasons.append(f"{s['late_1ms']} packets left > 1 ms behind schedule")
    if s["max_backlog"] > SENDER_MAX_BACKLOG:
        reasons.append(f"fell {s['max_backlog']} packets behind (catch-up burst)")
    return reasons


def run_sender(
    programs: Programs,
    ns: NetNamespace,
    port: int,
    rate: float,
    seconds: float,
    *,
    cpu: int = -1,
    mode: str = "open",
    src_port: int = 0,
    keys: tuple[bytes, bytes] | None = None,
    padding: int | None = None,
    raw_dir: Path | None = None,
    wait_ms: int = 500,
    snmp_pid: int | None = None,
    ttl: int = SENDER_TTL,
    batch: int = 1,
) -> Json:
    """One c_sender run; its JSON plus `sender_limited` reasons, and latency if `raw_dir`."""
    cmd = [str(programs.sender), "-a", "127.0.0.1", "-p", str(port), "-r", f"{rate:.0f}"]
    cmd += ["-d", f"{seconds:g}", "-c", str(cpu), "-m", mode, "-t", str(ttl)]
    cmd += ["-B", str(batch), "-w", str(wait_ms), "-P", str(src_port)]
    if padding is not None:
        cmd += ["-s", str(padding)]
    if keys is not None:
        cmd += ["-K", keys[0].hex(), "-H", keys[1].hex()]
    raw_path = None
    if raw_dir is not None:
        raw_path = raw_dir / f"raw-{os.getpid()}-{time.monotonic_ns()}.bin"
        cmd += ["-o", str(raw_path)]
    before = udp_snmp(snmp_pid) if snmp_pid else {}
    cpu_before = cpu_snapshot(snmp_pid)
    procs_before = process_cpu()
    proc = subprocess.Popen(ns.wrap(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=seconds + wait_ms / 1e3 + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    procs_after = process_cpu()
    cpu_after = cpu_snapshot(snmp_pid)
    after = udp_snmp(snmp_pid) if snmp_pid else {}
    if proc.returncode != 0:
        raise RuntimeError(f"c_sender failed ({proc.returncode}): {err.strip()}")
    result: Json = json.loads(out.strip().splitlines()[-1])
    result["sender_limited"] = sender_limits(result)
    result["cpu"] = cpu_delta(cpu_before, cpu_after, int(result["received"]))
    ours = {os.getpid(), proc.pid, *([snmp_pid] if snmp_pid else [])}
    result["foreign_cpu"] = foreign_cpu(procs_before, procs_after, ours)
    if before and after:
        result["udp_snmp_delta"] = {k: after[k] - before[k] for k in after if k in before}
    if raw_path is not None:
        try:
            records = np.fromfile(raw_path, dtype=RECORD_DTYPE)
        finally:
            raw_path.unlink(missing_ok=True)
        result["latency"] = latency_summary(records)
    return result


# -- the search for the highest rate -------------------------------------------------------------


@dataclass(slots=True)
class SearchResult:
    max_rate: float  # highest rate that passed (0: none)
    limit: str  # "reflector", "sender", "ceiling" or "none"
    limit_rate: float | None  # the lowest rate that failed (or was sender-limited)
    steps: list[Json] = field(default_factory=list)


def trial_class(t: Json) -> str:
    """'pass', 'fail' or 'sender' (the trial says nothing about the reflector).

    A sender that did not produce the load on average proves nothing. One that did, but late
    and in bursts, made the reflector's job harder, not easier: with the loss still within
    bounds, the trial passes. Only a failure can be the sender's fault (bursts, its own receive
    buffer overflowing), so only a failure is set aside when the sender was limited.
    """
    if t["sent"] < t["planned"] or t["send_rate"] < SENDER_MIN_RATE_FRACTION * t["rate_target"]:
        return "sender"
    if t["loss"] <= MAX_LOSS:
        return "pass"
    return "sender" if t["sender_limited"] else "fail"


def step_outcome(trials: Sequence[Json]) -> str:
    """'pass' / 'fail' by majority of the trials that tell (a tie fails); 'sender' when most
    trials say nothing about the reflector."""
    classes = [trial_class(t) for t in trials]
    usable = [c for c in classes if c != "sender"]
    if not usable or 2 * len(usable) < len(classes):
        return "sender"
    return "pass" if 2 * usable.count("pass") > len(usable) else "fail"


def search_max_rate(
    trial: Callable[[float], Json],
    *,
    start: float,
    ceiling: float,
    resolution: float,
    trials_per_step: int,
    max_steps: int = 16,
    label: str = "",
) -> SearchResult:
    """Double from `start` until a step fails, then bisect (geometrically) to `resolution`."""
    good = 0.0
    bad: float | None = None
    bad_kind = "none"
    rate = start
    result = SearchResult(0.0, "none", None)
    for _ in range(max_steps):
        trials: list[Json] = []
        for i in range(trials_per_step):
            trials.append(trial(rate))
            if i == 1 and trials_per_step == 3 and len({trial_class(t) for t in trials}) == 1:
                break  # two agree: the third cannot change the majority
        outcome = step_outcome(trials)
        losses = ", ".join(
            f"{t['loss'] * 100:.3f}%"
            + (" (sender-limited)" if trial_class(t) == "sender" else "")
            + (" (disturbed)" if t.get("disturbed") else "")
            for t in trials
        )
        log(f"  {label} {rate:>10,.0f} pps: {outcome:6s} loss {losses}")
        result.steps.append({"rate": rate, "outcome": outcome, "trials": trials})
        if outcome == "pass":
            good = rate
        else:
            bad, bad_kind = rate, ("reflector" if outcome == "fail" else "sender")
        if bad is None:
            if rate >= ceiling:
                break
            rate = min(rate * 2, ceiling)
            continue
        if good == 0.0:
            if bad <= start / 16:
                break
            rate = bad / 2
            continue
        if bad / good <= 1 + resolution:
            break
        rate = math.sqrt(good * bad)
    result.max_rate = good
    result.limit_rate = bad
    result.limit = bad_kind if bad is not None else ("ceiling" if good else "none")
    return result


# -- the benchmark ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    trial_s: float
    trials_per_step: int
    resolution: float
    start_rate: float
    ceiling: float
    latency_rate: float
    latency_s: float
    reflector_cpu: int
    sender_cpu: int
    auth: bool
    busy_max_rate: bool
    max_foreign: float  # other processes' CPU, in cores, above which a trial is repeated
    retries: int
    quiet_wait_s: float  # before a repeat: wait this long at most for the others to calm down
    retry_budget_s: float  # no repeats after this many seconds of the run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="about 2 minutes instead of about 10")
    p.add_argument("--json", type=Path, help="write everything measured to this file")
    p.add_argument("--impls", help="comma-separated subset of c,cython,python")
    p.add_argument("--trial-seconds", type=float)
    p.add_argument("--trials-per-step", type=int)
    p.add_argument("--resolution", type=float, help="stop bisecting at this ratio - 1")
    p.add_argument("--start-rate", type=float, default=50_000)
    p.add_argument("--ceiling", type=float, default=1_600_000, help="highest rate tried")
    p.add_argument("--latency-rate", type=float, default=50_000)
    p.add_argument("--latency-seconds", type=float)
    p.add_argument("--reflector-cpu", type=int, default=0)
    p.add_argument("--sender-cpu", type=int, default=1)
    p.add_argument("--no-auth", action="store_true", help="skip the auth/enc measurements")
    p.add_argument("--busy-max-rate", action="store_true", help="also search busy-poll max rates")
    p.add_argument("--no-netns", action="store_true", help="stay in the current namespace")
    p.add_argument(
        "--max-foreign",
        type=float,
        default=0.05,
        help="repeat a trial in which other processes used more than this many cores",
    )
    p.add_argument("--retries", type=int, help="repeats of a disturbed trial (default 2)")
    p.add_argument(
        "--retry-budget",
        type=float,
        help="seconds into the run after which trials are no longer repeated (420; quick 120)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=10.0,
        help="before repeating a disturbed trial, wait at most this long for a quiet moment",
    )
    args = p.parse_args(argv)
    quick = args.quick
    args.settings = Settings(
        trial_s=args.trial_seconds or (1.0 if quick else 2.0),
        trials_per_step=args.trials_per_step or (1 if quick else 3),
        resolution=args.resolution or (0.10 if quick else 0.05),
        start_rate=args.start_rate,
        ceiling=args.ceiling,
        latency_rate=args.latency_rate,
        latency_s=args.latency_seconds or (2.0 if quick else 5.0),
        reflector_cpu=args.reflector_cpu,
        sender_cpu=args.sender_cpu,
        auth=not args.no_auth,
        busy_max_rate=args.busy_max_rate,
        max_foreign=args.max_foreign,
        retries=args.retries if args.retries is not None else (1 if quick else 2),
        quiet_wait_s=args.quiet_wait,
        retry_budget_s=args.retry_budget or (120.0 if quick else 420.0),
    )
    return args


def _read_first(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def conditions(
    programs: Programs, ns: NetNamespace, ns_note: str, impls: Sequence[str], s: Settings
) -> Json:
    sysctls = [
        "/proc/sys/net/core/rmem_default",
        "/proc/sys/net/core/rmem_max",
        "/proc/sys/net/core/wmem_default",
        "/proc/sys/net/core/wmem_max",
        "/proc/sys/net/core/busy_poll",
        "/proc/sys/net/netfilter/nf_conntrack_count",
    ]
    values = ns.read(*sysctls)
    links = subprocess.run(
        ns.wrap(["ip", "-o", "link", "show"]), capture_output=True, text=True, timeout=30
    ).stdout
    git = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    u = platform.uname()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "kernel": f"{u.system} {u.release} {u.version} {u.machine}",
        "cpu_model": _read_first("/proc/cpuinfo", "model name"),
        "cpu_count": os.cpu_count(),
        "reflector_cpu": s.reflector_cpu,
        "sender_cpu": s.sender_cpu,
        "load_average_start": os.getloadavg(),
        "namespace": ns.name,
        "namespace_note": ns_note,
        "links": [line.split(":")[1].strip() for line in links.splitlines() if ":" in line],
        "netfilter": {
            "tables": "none: a fresh namespace, and this script adds none",
            "nf_conntrack_count_at_start": values[5],
        },
        "sysctl": {Path(p).name: v for p, v in zip(sysctls[:5], values[:5], strict=True)},
        "reflector_batch": REFLECTOR_BATCH,
        "sender_batch": {"max-rate trials": SENDER_BATCH, "latency trials": 1},
        "sender_ttl": SENDER_TTL,
        "max_loss": MAX_LOSS,
        "sender_limited_rules": {
            "min_rate_fraction": SENDER_MIN_RATE_FRACTION,
            "max_late_1ms_fraction": SENDER_MAX_LATE_FRACTION,
            "max_backlog": SENDER_MAX_BACKLOG,
            "rx_overflow": "any",
        },
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "cython": _version("Cython"),
        "twamp": _version("twamp"),
        "git": git or None,
        "implementations": list(impls),
        "compiler": programs.compiler,
        "c_flags": list(programs.flags),
        "c_sender_crypto": programs.crypto,
        "settings": dataclasses.asdict(s),
    }


@contextlib.contextmanager
def started(name: str, cmd: list[str], ns: NetNamespace) -> Iterator[ReflectorProcess]:
    refl = ReflectorProcess(name, cmd, ns)
    try:
        yield refl
    finally:
        if refl.alive() or refl.final is None:
            refl.stop_raw()


def measure(args: argparse.Namespace, work: Path, ns: NetNamespace, ns_note: str) -> Json:
    s: Settings = args.settings
    programs = build_programs(work / "bin")
    from twamp.dataplane import implementations

    available = ["c", *(k for k in ("cython", "python") if k in implementations())]
    impls = available
    if args.impls:
        wanted = [x.strip() for x in args.impls.split(",") if x.strip()]
        impls = [x for x in wanted if x in available]
        for x in wanted:
            if x not in available:
                log(f"skipping {x}: not available here (available: {available})")
    fast = "cython" if "cython" in impls else ("python" if "python" in impls else None)
    report: Json = {
        "conditions": conditions(programs, ns, ns_note, impls, s),
        "max_rate": {},
        "latency": {},
        "reflector_counters": {},
    }
    if "cython" not in available:
        report["conditions"]["note"] = (
            "the compiled twin (twamp.dataplane) is not importable: 'fast' is the pure twin"
        )
    rcvbufs: dict[str, Any] = {}
    # Past this point trials are no longer repeated, which bounds the run on a busy machine.
    retry_deadline = time.monotonic() + s.retry_budget_s

    def guarded(refl: ReflectorProcess, seconds: float, strict: bool, **kw: Any) -> Json:
        """A sender run, repeated (at most `s.retries` times) while other processes took CPU or
        the trial says nothing about the reflector: `trial_class` 'sender', or with `strict`
        (latency: catch-up bursts queue in the reflector) any sender limit."""
        for attempt in range(1 + s.retries):
            t = run_sender(
                programs, ns, refl.port, seconds=seconds, cpu=s.sender_cpu, snmp_pid=refl.pid, **kw
            )
            if not refl.alive():
                raise RuntimeError(f"reflector {refl.name} died during a trial")
            foreign = t["foreign_cpu"]
            t["attempt"] = attempt + 1
            t["disturbed"] = foreign["seconds"] > s.max_foreign * t["cpu"]["wall_s"]
            limited = t["sender_limited"] if strict else trial_class(t) == "sender"
            if not t["disturbed"] and not limited:
                break
            if attempt == s.retries or time.monotonic() > retry_deadline:
                break
            if t["disturbed"]:
                log(f"    disturbed ({', '.join(foreign['top'])}): trial repeated")
            else:
                log(f"    sender-limited ({'; '.join(t['sender_limited'])}): trial repeated")
            wait_quiet(s.max_foreign, {refl.pid}, s.quiet_wait_s)
        return t

    def do_search(key: str, refl: ReflectorProcess, mode: str, **kw: Any) -> None:
        def trial(rate: float) -> Json:
            return guarded(refl, s.trial_s, False, rate=rate, mode=mode, batch=SENDER_BATCH, **kw)

        res = search_max_rate(
            trial,
            start=s.start_rate,
            ceiling=s.ceiling,
            resolution=s.resolution,
            trials_per_step=s.trials_per_step,
            label=key,
        )
        at_max = [
            t["cpu"].get("reflector_cpu_us_per_pkt")
            for step in res.steps
            if step["rate"] == res.max_rate
            for t in step["trials"]
        ]
        costs = [c for c in at_max if c is not None]
        report["max_rate"][key] = {
            "max_rate": res.max_rate,
            "limit": res.limit,
            "limit_rate": res.limit_rate,
            # the reflector process's CPU per reflected packet at that rate (median of trials)
            "cpu_us_per_pkt": float(np.median(costs)) if costs else None,
            "steps": res.steps,
        }
        log(f"{key}: max {res.max_rate:,.0f} pps (limit: {res.limit})")

    def do_latency(key: str, refl: ReflectorProcess, mode: str, **kw: Any) -> None:
        t = guarded(refl, s.latency_s, True, rate=s.latency_rate, mode=mode, raw_dir=work, **kw)
        report["latency"][key] = t
        lat = t["latency"]
        log(
            f"{key}: {s.latency_rate:,.0f} pps loss {t['loss'] * 100:.3f}% "
            f"rtt p50 {lat['rtt_us']['p50']} µs, residence p50 {lat['residence_us']['p50']} µs"
            + (" (sender-limited)" if t["sender_limited"] else "")
        )

    for impl in impls:
        for busy in (False, True):
            key = f"{impl} {'busy-poll' if busy else 'blocking'}"
            log(f"== {key}")
            cmd = reflector_command(programs, impl, cpu=s.reflector_cpu, busy_poll=busy)
            with started(key, cmd, ns) as refl:
                rcvbufs[key] = refl.ready.get("rcvbuf")
                wait_quiet(s.max_foreign, {refl.pid}, s.quiet_wait_s)
                do_latency(key, refl, "open")
                if not busy or s.busy_max_rate:
                    do_search(key, refl, "open")
                report["reflector_counters"][key] = refl.stop()

    if s.auth and fast is not None and fast != "c":
        if not programs.crypto:
            report["conditions"]["auth_note"] = "c_sender built without OpenSSL: no auth/enc"
        else:
            for mode in ("auth", "enc"):
                key = f"{fast} {mode} blocking"
                log(f"== {key}")
                keys = (secrets.token_bytes(16), secrets.token_bytes(32))
                src_port = _free_port_hint()
                cmd = reflector_command(
                    programs,
                    fast,
                    cpu=s.reflector_cpu,
                    mode=mode,
                    peer=("127.0.0.1", src_port),
                    keys=keys,
                )
                with started(key, cmd, ns) as refl:
                    rcvbufs[key] = refl.ready.get("rcvbuf")
                    wait_quiet(s.max_foreign, {refl.pid}, s.quiet_wait_s)
                    extra = {"src_port": src_port, "keys": keys}
                    do_latency(key, refl, mode, **extra)
                    do_search(key, refl, mode, **extra)
                    report["reflector_counters"][key] = refl.stop()

    cond = report["conditions"]
    cond["rcvbuf_granted"] = rcvbufs
    senders = [t for t in report["latency"].values()]
    cond["sender_rcvbuf_granted"] = senders[0]["rcvbuf"] if senders else None
    cond["load_average_end"] = os.getloadavg()
    cond["netfilter"]["nf_conntrack_count_at_end"] = ns.read(
        "/proc/sys/net/netfilter/nf_conntrack_count"
    )[0]
    report["fast"] = fast
    report["ratios"] = ratios(report, fast)
    return report


def _free_port_hint() -> int:
    """A source port for the auth/enc sender; the session admits exactly this (address, port).

    Free here, so almost surely free in a fresh namespace too (where nothing else runs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _rate(report: Json, key: str) -> float | None:
    entry = report["max_rate"].get(key)
    return None if entry is None or not entry["max_rate"] else float(entry["max_rate"])


def _lat(report: Json, key: str, what: str, p: str) -> float | None:
    entry = report["latency"].get(key)
    if entry is None:
        return None
    value = entry["latency"][what][p]
    return None if value is None else float(value)


def ratios(report: Json, fast: str | None) -> list[Json]:
    """The issue's comparisons: measured value next to the target (never asserted)."""

    def div(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or b == 0 else round(a / b, 3)

    def bound(num: str, den: str) -> str:
        """'=' when both rates are the reflectors' own limits; '>=' / '<=' when the numerator /
        denominator is only a lower bound (the search ended on the sender or the ceiling)."""
        lower = {k for k in (num, den) if report["max_rate"][k]["limit"] != "reflector"}
        if not lower:
            return "="
        if lower == {num}:
            return ">="
        return "<=" if lower == {den} else "?"

    f = fast or "cython"
    pairs = {
        "fast/c": (f"{f} blocking", "c blocking"),
        "fast/pure": (f"{f} blocking", "python blocking"),
        "auth/open": (f"{f} auth blocking", f"{f} blocking"),
        "enc/open": (f"{f} enc blocking", f"{f} blocking"),
    }
    latencies = {
        "residence p50 blocking": (f"{f} blocking", "p50"),
        "residence p50 busy-poll": (f"{f} busy-poll", "p50"),
        "residence p99 busy-poll": (f"{f} busy-poll", "p99"),
    }
    out = []
    for name in TARGETS:
        value: float | None
        relation = "="
        if name in pairs:
            num, den = pairs[name]
            value = div(_rate(report, num), _rate(report, den))
            if value is not None:
                relation = bound(num, den)
        else:
            key, p = latencies[name]
            value = _lat(report, key, "residence_us", p)
        target = TARGETS[name]
        met = None
        if value is not None and relation != "?":
            op, limit = target.split()[:2]
            ok = value >= float(limit) if op == ">=" else value <= float(limit)
            if relation == "=":
                met = ok
            elif relation == op:  # the true value is even further on the right side
                met = True if ok else None
            else:
                met = False if not ok else None
        out.append(
            {
                "ratio": name,
                "fast": f,
                "measured": value,
                "relation": relation,
                "target": target,
                "met": met,
            }
        )
    return out


# -- printing --------------------------------------------------------------------------------------


def _fmt(v: float | None, spec: str = ",.0f") -> str:
    return "-" if v is None else format(v, spec)


def _quantiles(d: Json) -> str:
    return "/".join(_fmt(d[k], ".1f") for k in ("p50", "p90", "p99", "max"))


def render(report: Json) -> str:
    c = report["conditions"]
    lines = [
        f"twamp reflector benchmark  {c['date']}  git {c['git']}",
        f"kernel {c['kernel']}",
        f"cpu {c['cpu_model']} x{c['cpu_count']}; reflector on cpu {c['reflector_cpu']}, "
        f"sender on cpu {c['sender_cpu']}; load {c['load_average_start']} -> "
        f"{c.get('load_average_end')}",
        f"namespace {c['namespace'] or '(current)'}: {c['namespace_note']}; "
        f"conntrack entries {c['netfilter']['nf_conntrack_count_at_start']} -> "
        f"{c['netfilter'].get('nf_conntrack_count_at_end')}",
        f"sysctl {c['sysctl']}; SO_RCVBUF granted {c.get('rcvbuf_granted')}, "
        f"sender {c.get('sender_rcvbuf_granted')}",
        f"batch reflector {c['reflector_batch']} / sender {c['sender_batch']}; python "
        f"{c['python']}, numpy {c['numpy']}, Cython {c['cython']}; {c['compiler']} "
        f"{' '.join(c['c_flags'])}; implementations {c['implementations']}",
        f"settings {c['settings']}",
        f"command {c['command']}",
    ]
    if c.get("note"):
        lines.append(f"NOTE: {c['note']}")
    if c.get("auth_note"):
        lines.append(f"NOTE: {c['auth_note']}")
    lines += [
        "",
        f"{'reflector':26s} {'max pps <=0.1% loss':>20s}  {'limited by':12s} {'next step':>10s}"
        f"  {'CPU µs/pkt':>10s}",
    ]
    for key, e in report["max_rate"].items():
        lines.append(
            f"{key:26s} {_fmt(e['max_rate']):>20s}  {e['limit']:12s} {_fmt(e['limit_rate']):>10s}"
            f"  {_fmt(e['cpu_us_per_pkt'], '.2f'):>10s}"
        )
    rate = c["settings"]["latency_rate"]
    lines += [
        "",
        f"at {rate:,.0f} pps{'':10s} {'RTT µs p50/p90/p99/max':>30s}  "
        f"{'residence µs p50/p90/p99/max':>30s}  {'loss %':>7s}  sender",
    ]
    for key, t in report["latency"].items():
        lat = t["latency"]
        lines.append(
            f"{key:26s} {_quantiles(lat['rtt_us']):>30s}  {_quantiles(lat['residence_us']):>30s}  "
            f"{t['loss'] * 100:7.3f}  {'LIMITED' if t['sender_limited'] else 'ok'}"
            + (" disturbed" if t.get("disturbed") else "")
        )
    lines += ["", f"{'ratio (fast = ' + str(report['fast']) + ')':28s} {'measured':>11s}  target"]
    for r in report["ratios"]:
        met = {True: "met", False: "NOT met", None: "n/a"}[r["met"]]
        rel = "" if r["relation"] == "=" else r["relation"] + " "
        value = rel + _fmt(r["measured"], ".3f")
        lines.append(f"{r['ratio']:28s} {value:>11s}  {r['target']} ({met})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    atexit.register(_cleanup)
    # SIGTERM/SIGHUP unwind like Ctrl-C, so the finally below always runs.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    work = Path(tempfile.mkdtemp(prefix="twamp-bench-"))
    ns: NetNamespace
    try:
        if args.no_netns:
            ns, note = NetNamespace(None), "current namespace (--no-netns)"
        elif os.geteuid() != 0:
            ns, note = NetNamespace(None), "current namespace: not root, no netns of its own"
            log(f"NOTE: {note}; rates may include netfilter costs of this namespace")
        elif shutil.which("ip") is None:
            ns, note = NetNamespace(None), "current namespace: iproute2 'ip' not found"
            log(f"NOTE: {note}")
        else:
            name = f"twamp-bench-{os.getpid()}"
            _NAMESPACES.append(NetNamespace(name))  # registered first: deleted even if half made
            ns = NetNamespace.create(name)
            _NAMESPACES[-1] = ns
            note = "fresh network namespace, only lo up, no netfilter rules"
        report = measure(args, work, ns, note)
    finally:
        _cleanup()
        shutil.rmtree(work, ignore_errors=True)
    text = render(report)
    print(text)
    if args.json:
        report["table"] = text
        args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
