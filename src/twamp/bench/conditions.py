"""The conditions a benchmark ran under, recorded with its results (RFC 2544 §26, RFC 8219 §4).

A number without its conditions cannot be compared or reproduced, so every report carries the
kernel, the CPU and the cores used, the implementations and versions, the command line, the
date, and what on the host is known to move the results: connection tracking on loopback costs
about 20 % (measured on a 2-vCPU VM), other load on the cores, a virtual CPU.

Also here: the per-socket drop counter of the kernel, which tells a sender whose own receive
buffer overflowed (its replies lost in its own socket, not by the reflector) from a lossy
reflector.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

from .. import clock

__all__ = [
    "CpuSampler",
    "SocketStats",
    "collect_conditions",
    "command_line",
    "cpu_plan",
    "finish_conditions",
    "package_versions",
    "process_cpu_s",
    "reflector_core",
    "sender_plan",
    "socket_stats",
]

_PACKAGES = ("twamp", "numpy", "cryptography", "click", "Cython", "matplotlib")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that matter (None: not installed), and Python's."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name.lower()] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name.lower()] = None
    return versions


def _cpu_model() -> str | None:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Processor", "cpu model"):
            return value.strip()
    return platform.processor() or None


def _virtualized() -> bool | None:
    text = _read("/proc/cpuinfo")
    if text is None:
        return None
    return any(line.startswith("flags") and " hypervisor" in line for line in text.splitlines())


def _conntrack() -> bool | None:
    """Is netfilter connection tracking loaded in this network namespace?"""
    if not Path("/proc/net").is_dir():
        return None
    return (
        Path("/proc/net/nf_conntrack").exists()
        or Path("/proc/sys/net/netfilter/nf_conntrack_count").exists()
    )


def _loadavg() -> list[float] | None:
    text = _read("/proc/loadavg")
    if text is None:
        return None
    try:
        return [float(x) for x in text.split()[:3]]
    except ValueError:
        return None


def _governor() -> str | None:
    text = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return None if text is None else text.strip()


def _net_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/net")
    except OSError:
        return None


def command_line(argv: list[str] | None = None) -> str:
    """The exact command line, shell-quoted, with the program's base name."""
    args = list(sys.argv if argv is None else argv)
    if args:
        args[0] = os.path.basename(args[0])
    return shlex.join(args)


def cpu_plan(pin: bool) -> tuple[int | None, int | None]:
    """(reflector core, sender core): the first two cores we may use, or None when not pinning.

    On two cores that is reflector 0, sender 1. With a single core, or `pin` False, nothing is
    pinned and the report says so.
    """
    if not pin or not hasattr(os, "sched_getaffinity"):
        return None, None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    return cores[0], cores[1]


def reflector_core(pin: bool) -> int | None:
    """The core a reflector started here is pinned to (`cpu_plan`)."""
    return cpu_plan(pin)[0]


def sender_plan(pin: bool, n: int) -> list[int | None]:
    """The cores of `n` sender threads: the cores after the reflector's, in order.

    When there are fewer than n + 1 cores the senders wrap around onto the reflector's core
    too (the report records the plan, and a shared core shows as a slower reflector): on a
    2-core machine `--sender-cores 2` puts one sender beside the reflector.
    """
    reflector, first = cpu_plan(pin)
    if first is None:
        return [None] * n
    cores = sorted(os.sched_getaffinity(0))
    order = [c for c in cores if c != reflector] + [reflector]
    return [order[k % len(order)] for k in range(n)]


def collect_conditions(
    *,
    argv: list[str] | None,
    sender: dict[str, Any],
    clock_synced: bool,
    started: datetime.datetime | None = None,
) -> dict[str, Any]:
    """The `conditions` object of the report (see schemas/bench.schema.json)."""
    uname = platform.uname()
    when = started or datetime.datetime.now(datetime.timezone.utc)
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return {
        "date": when.isoformat(timespec="seconds"),
        "command_line": command_line(argv),
        "hostname": uname.node,
        "os": uname.system,
        "kernel": uname.release,
        "kernel_version": uname.version,
        "machine": uname.machine,
        "cpu_model": _cpu_model(),
        "cpus_online": os.cpu_count(),
        "cpus_allowed": cores,
        "virtualized": _virtualized(),
        "cpu_governor": _governor(),
        "loadavg_start": _loadavg(),
        "loadavg_end": None,
        "net_namespace": _net_namespace(),
        "conntrack": _conntrack(),
        "conntrack_entries_start": conntrack_entries(),
        "conntrack_entries_end": None,
        "clock_synced": clock_synced,
        "packages": package_versions(),
        "sender": sender,
    }


def conntrack_entries() -> int | None:
    """Connections tracked in this network namespace now (None: conntrack not loaded).

    Loaded is not the same as used: the kernel tracks a namespace's packets only once a nat or
    filter rule there asks for it. Entries that appear during a run on loopback mean our own
    packets were tracked, about 20 % of a reflector's rate.
    """
    text = _read("/proc/sys/net/netfilter/nf_conntrack_count")
    try:
        return None if text is None else int(text.strip())
    except ValueError:
        return None


def finish_conditions(conditions: dict[str, Any]) -> None:
    """Fill in what is known only at the end of the run."""
    conditions["loadavg_end"] = _loadavg()
    conditions["conntrack_entries_end"] = conntrack_entries()


class SocketStats:
    """One UDP socket's line of /proc/net/udp[6]: queued octets and the kernel's drop counter.

    `drops` is the socket's `sk_drops`, the counter `SO_RXQ_OVFL` reports: datagrams the kernel
    discarded for this socket, nearly always because its receive buffer was full.
    """

    __slots__ = ("drops", "rx_queue")

    def __init__(self, rx_queue: int, drops: int) -> None:
        self.rx_queue = rx_queue
        self.drops = drops


def socket_stats(*, inode: int | None = None, port: int | None = None) -> SocketStats | None:
    """Find a UDP socket by inode (exact) or by local port (first match); None if not found."""
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        text = _read(name)
        if text is None:
            continue
        for line in text.splitlines()[1:]:
            fields = line.split()
            if len(fields) < 13:
                continue
            try:
                if inode is not None and int(fields[9]) != inode:
                    continue
                if port is not None and int(fields[1].rsplit(":", 1)[1], 16) != port:
                    continue
                rx_queue = int(fields[4].split(":")[1], 16)
                drops = int(fields[-1])
            except (ValueError, IndexError):
                continue
            return SocketStats(rx_queue, drops)
    return None


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_s(pid: int, *, children: bool = False) -> float | None:
    """User + system CPU seconds of process `pid` (all its threads), None if it is gone.

    `children`: plus what its children that ended and were waited for used (cutime, cstime):
    a `c_sender` run per trial is ours, not another process's load.
    """
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    try:
        fields = text.rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        if children:
            ticks += int(fields[13]) + int(fields[14])
        return ticks / _CLK_TCK
    except (IndexError, ValueError):
        return None


def _busy_cpu_s() -> float | None:
    """CPU seconds all processes of the host spent in user, system and steal time.

    Interrupt and softirq time are left out: on loopback they mostly carry our own packets.
    Steal is in: a hypervisor that takes the core from us disturbs a trial as much as a process.
    """
    text = _read("/proc/stat")
    if not text:
        return None
    fields = text.splitlines()[0].split()
    try:
        user, nice, system = (int(x) for x in fields[1:4])
        steal = int(fields[8]) if len(fields) > 8 else 0
    except ValueError:
        return None
    return (user + nice + system + steal) / _CLK_TCK


class CpuSampler:
    """How much CPU other processes took during a trial, and what the reflector used.

    `start()` and `stop()` bracket a trial. `foreign_cores`: CPU seconds spent by every process
    but ours (this one and `reflector_pid`) per second of wall time, so 1.0 is one core kept
    busy by someone else. It is what a busy machine costs a trial that is pinned to two cores,
    and it is how a figure measured beside other work is marked (`twamp-bench` reports it per
    trial). Kernel threads that deliver our packets (ksoftirqd) count as foreign, so a value of
    0.1-0.2 is normal under heavy load. `reflector_cpu_s`: the reflector process's CPU time.
    """

    __slots__ = ("_busy", "_ours", "_refl", "_t0", "reflector_pid")

    def __init__(self, reflector_pid: int | None) -> None:
        self.reflector_pid = reflector_pid
        self._busy: float | None = None
        self._ours: float | None = None
        self._refl: float | None = None
        self._t0 = 0.0

    def _own(self) -> tuple[float | None, float | None]:
        me = process_cpu_s(os.getpid(), children=True)
        refl = None if self.reflector_pid is None else process_cpu_s(self.reflector_pid)
        return me, refl

    def start(self) -> None:
        self._t0 = _monotonic_s()
        self._busy = _busy_cpu_s()
        self._ours, self._refl = self._own()

    def stop(self) -> tuple[float | None, float | None]:
        """(foreign cores, reflector CPU seconds) since `start`; None where unknown."""
        wall = _monotonic_s() - self._t0
        busy = _busy_cpu_s()
        me, refl = self._own()
        foreign = None
        if None not in (busy, self._busy, me, self._ours) and wall > 0:
            assert busy is not None and self._busy is not None
            assert me is not None and self._ours is not None
            used = (busy - self._busy) - (me - self._ours)
            if refl is not None and self._refl is not None:
                used -= refl - self._refl
            foreign = max(0.0, used / wall)
        refl_s = None if refl is None or self._refl is None else refl - self._refl
        return foreign, refl_s


def _monotonic_s() -> float:
    return clock.monotonic_ns() / 1e9
