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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import clock

__all__ = [
    "CpuSample",
    "CpuSampler",
    "SocketStats",
    "collect_conditions",
    "command_line",
    "cpu_plan",
    "finish_conditions",
    "package_versions",
    "process_cpu_s",
    "reflector_core",
    "run_queue_wait_ns",
    "sender_plan",
    "socket_stats",
    "udp_owner_pid",
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


def udp_owner_pid(port: int) -> int | None:
    """The process that owns the UDP socket bound to local `port`, None if not found.

    A reflector on this host that we did not start (`--target 127.0.0.1:PORT`) is still the
    reflector, not other work: its CPU must not count as foreign, and its run-queue wait is as
    telling as our own reflector's. Found through the socket's inode in /proc/net/udp[6] and
    the `socket:[inode]` links in /proc/PID/fd (only processes we may inspect: as root, all).
    """
    inodes = set()
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        for line in (_read(name) or "").splitlines()[1:]:
            fields = line.split()
            try:
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{int(fields[9])}]")
            except (ValueError, IndexError):
                continue
    if not inodes:
        return None
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry}/fd/{fd}") in inodes:
                    return int(entry)
            except OSError:
                continue
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


def _busy_cpu_s(cores: frozenset[int] | None = None) -> float | None:
    """CPU seconds spent in user, system and steal time: on `cores`, or on the whole host.

    Interrupt and softirq time are left out: on loopback they mostly carry our own packets.
    Steal is in: a hypervisor that takes the core from us disturbs a trial as much as a process.
    """
    text = _read("/proc/stat")
    if not text:
        return None
    total = 0
    seen = 0
    for line in text.splitlines():
        if not line.startswith("cpu"):
            break
        fields = line.split()
        name = fields[0][3:]
        if cores is None:
            if name:
                continue
        elif not name.isdigit() or int(name) not in cores:
            continue
        try:
            user, nice, system = (int(x) for x in fields[1:4])
            steal = int(fields[8]) if len(fields) > 8 else 0
        except ValueError:
            return None
        total += user + nice + system + steal
        seen += 1
    if not seen or (cores is not None and seen != len(cores)):
        return None
    return total / _CLK_TCK


def _ksoftirqd_pids() -> dict[int, int]:
    """The softirq kernel thread of each core: {core: pid of `ksoftirqd/core`}."""
    pids: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return {}
    for entry in entries:
        if not entry.isdigit():
            continue
        comm = _read(f"/proc/{entry}/comm")
        if not comm or not comm.startswith("ksoftirqd/"):
            continue
        core = comm.strip().partition("/")[2]
        if core.isdigit():
            pids[int(core)] = int(entry)
    return pids


def _run_ns(pid: int | None) -> int | None:
    """Nanoseconds thread `pid` has run (the first field of its schedstat)."""
    if pid is None:
        return None
    try:
        return int((_read(f"/proc/{pid}/schedstat") or "").split()[0])
    except (IndexError, ValueError):
        return None


def run_queue_wait_ns(pid: int) -> dict[str, int] | None:
    """Per thread of process `pid`: nanoseconds it spent runnable but waiting for a core.

    The second field of /proc/PID/task/TID/schedstat (CONFIG_SCHED_INFO): time on a run queue,
    not running. For a thread pinned to one core it is exactly the time someone else had that
    core while this thread had work to do, whoever it was (a process, a kernel thread),
    measured by the scheduler in nanoseconds, not sampled at the clock tick. None if the
    process is gone or the kernel does not keep it.
    """
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    waits: dict[str, int] = {}
    for tid in tids:
        text = _read(f"/proc/{pid}/task/{tid}/schedstat")
        try:
            waits[tid] = int((text or "").split()[1])
        except (IndexError, ValueError):
            continue
    return waits or None


def _max_wait_s(after: dict[str, int] | None, before: dict[str, int] | None) -> float | None:
    """The longest run-queue wait of one thread between two `run_queue_wait_ns` readings.

    The longest, not the sum: the reflector's or sender's thread that does the work is the one
    that matters, and its wait is then a share of the wall time (at most 1.0).
    """
    if after is None or before is None:
        return None
    deltas = [after[t] - before[t] for t in after if t in before]
    return max(deltas) / 1e9 if deltas else None


def _delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


@dataclass(frozen=True, slots=True)
class CpuSample:
    """What `CpuSampler` saw over one trial (None: unknown here).

    `foreign_cores`: CPU other processes took on the cores of the trial, in cores (1.0: one
    core kept busy). `reflector_cpu_s`: the reflector's CPU time. `reflector_wait`,
    `sender_wait`: the share of the trial's wall time (0 to 1) the reflector's thread, and ours
    (the sender's), spent runnable but waiting for their core (`run_queue_wait_ns`; the
    thread that waited longest).
    """

    foreign_cores: float | None
    reflector_cpu_s: float | None
    reflector_wait: float | None = None
    sender_wait: float | None = None


class CpuSampler:
    """How much CPU other processes took during a trial, and what the reflector used.

    `start()` and `stop()` bracket a trial. Two views of a busy machine (`CpuSample`):

    * **foreign cores**: CPU time the kernel accounted (/proc/stat, user + nice + system +
      steal) on the trial's `cores` (the reflector's and the senders' when they are pinned;
      the whole host when not), minus what this process, the reflector process and the
      softirq threads of those cores (ksoftirqd/N: on loopback they carry our own packets)
      used, per second of wall time. It is counted at the clock tick (CLK_TCK, usually 100 Hz),
      so over a 0.2 s trial on two cores its resolution is about 0.05 cores.
    * **run-queue wait** of the reflector's threads and ours (`run_queue_wait_ns`): in
      nanoseconds, and exactly what matters: a hog on the reflector's core shows as the
      reflector waiting for it, whatever the hog is. The time the softirq thread of the
      reflector's core (`reflector_core`, when pinned) ran is taken off the reflector's wait:
      on loopback that thread delivers the reflector's own replies.

    `reflector_cpu_s`: the reflector process's CPU time, for its cost per packet.
    """

    __slots__ = (
        "_before",
        "_cores",
        "_refl_softirqd",
        "_softirqd",
        "_t0",
        "_waits",
        "reflector_pid",
    )

    def __init__(
        self,
        reflector_pid: int | None,
        cores: frozenset[int] | None = None,
        reflector_core: int | None = None,
    ) -> None:
        self.reflector_pid = reflector_pid
        self._cores = cores
        pids = _softirqd_cached()
        self._softirqd = [pid for core, pid in pids.items() if cores is None or core in cores]
        self._refl_softirqd = None if reflector_core is None else pids.get(reflector_core)
        self._before: tuple[float | None, ...] = ()
        self._waits: tuple[dict[str, int] | None, ...] = ()
        self._t0 = 0.0

    def _read(self) -> tuple[tuple[float | None, ...], tuple[dict[str, int] | None, ...]]:
        me = process_cpu_s(os.getpid(), children=True)
        refl = None if self.reflector_pid is None else process_cpu_s(self.reflector_pid)
        soft = [process_cpu_s(pid) for pid in self._softirqd]
        softirqd = sum(x for x in soft if x is not None)
        refl_wait = None if self.reflector_pid is None else run_queue_wait_ns(self.reflector_pid)
        soft_run = _run_ns(self._refl_softirqd)
        return (
            (_busy_cpu_s(self._cores), me, refl, softirqd, soft_run),
            (refl_wait, run_queue_wait_ns(os.getpid())),
        )

    def start(self) -> None:
        self._t0 = _monotonic_s()
        self._before, self._waits = self._read()

    def stop(self) -> CpuSample:
        """What happened since `start` (see `CpuSample`)."""
        wall = _monotonic_s() - self._t0
        after, waits = self._read()
        busy, me, refl, soft, soft_run = (
            _delta(a, b) for a, b in zip(after, self._before, strict=True)
        )
        refl_wait, own_wait = (_max_wait_s(a, b) for a, b in zip(waits, self._waits, strict=True))
        if refl_wait is not None and soft_run is not None:
            refl_wait -= soft_run / 1e9
        foreign = None
        if busy is not None and me is not None and wall > 0:
            used = busy - me - (refl or 0.0) - (soft or 0.0)
            foreign = max(0.0, used / wall)

        def share(x: float | None) -> float | None:
            # Clamped: the scheduler books a wait when it ends, so one that began just before
            # `start` can show a little over the wall time.
            return None if x is None or wall <= 0 else min(1.0, max(0.0, x / wall))

        return CpuSample(foreign, refl, share(refl_wait), share(own_wait))


_SOFTIRQD: dict[int, int] = {}


def _softirqd_cached() -> dict[int, int]:
    if not _SOFTIRQD:
        _SOFTIRQD.update(_ksoftirqd_pids())
    return _SOFTIRQD


def _monotonic_s() -> float:
    return clock.monotonic_ns() / 1e9
