"""Devices under test: FRR, BIRD and an external router behind one interface; timer profiles.

Every adapter does the same five things, so the RFC 4061 procedures never branch on the DUT:
`render` its config from a `TimerProfile`, `start` it (by pid file, in the lab's DUT namespace),
`wait_ready`, read `neighbors` / `state` / `fib_prefixes`, `stop` it (by pid file, SIGTERM then
SIGKILL), and describe its fixed timers in `quirks` (which reports quote next to every figure:
research §4.4, "record with every result").

Timer profiles (`PROFILES`; a field of None is not rendered, so the daemon's default applies):

``defaults``  the daemon's own defaults: FRR 8.4 hello 10 s, dead 40 s, retransmit 5 s, SPF
    throttle 0/50/5000 ms, LSA throttle 5000 ms, min-arrival 1000 ms, zebra work-queue 10 ms,
    kernel nexthop objects on; BIRD 2.0 hello 10 s, dead 40 s, retransmit 5 s, tick 1 s.
``rfc``  RFC 2328 Appendix C's suggested values: HelloInterval 10 s, RouterDeadInterval 40 s,
    RxmtInterval 5 s, InfTransDelay 1 s, MinLSInterval 5 s, MinLSArrival 1 s; RFC 2328 sets no
    SPF delay, so the daemon's stays.
``tuned``  the research note's profile (§2) for measuring the DUT rather than its timers:
    hello 1 s, dead 4 s (short Hello phase and §6.8 wait), retransmit 5 s (at 1 s BIRD's ~1 s
    delayed acks cause spurious retransmissions), SPF throttle 0/50/5000 ms (delay 0 as §5.3
    asks; a 50 ms hold remains), LSA throttle 0 and min-arrival 0 (else 5 s / 1 s rate limits),
    zebra work-queue 0 (the default 10 ms hold adds ~10 ms to every FIB update), no kernel
    nexthop objects (with them a lost route vanished without RTM_DELROUTE), BIRD tick 1 s
    (its minimum).

``profile.replace(hello_s=1, dead_s=4)`` derives a variant (the integration tests use
``defaults`` with hello 1/dead 4 to stay short).
"""

from __future__ import annotations

import contextlib
import dataclasses
import grp
import json
import os
import pwd
import re
import shutil
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from ..ospf.eventlog import EventLog
from .errors import LabError, need_program
from .topology import DUT_COSTS, FRR_ETC, FRR_RUN, Lab, Port, _pid_alive, _read_pid, kill_pidfile

__all__ = [
    "PROFILES",
    "BirdDut",
    "Dut",
    "DutPort",
    "ExternalDut",
    "FrrDut",
    "Quirk",
    "TimerProfile",
    "external_dut",
    "make_dut",
]

FRR_BIN = Path("/usr/lib/frr")
_LOG_STAMP = re.compile(r"^(\d{4}[/-]\d\d[/-]\d\d \d\d:\d\d:\d\d\.\d{6})")


@dataclasses.dataclass(frozen=True)
class TimerProfile:
    """The DUT's OSPF timers; None means "not configured: the daemon's default" (see module)."""

    name: str
    hello_s: int | None = None
    dead_s: int | None = None
    retransmit_s: int | None = None
    transmit_delay_s: int | None = None
    spf_delay_ms: int | None = None
    spf_hold_ms: int | None = None
    spf_max_ms: int | None = None
    lsa_throttle_ms: int | None = None
    min_arrival_ms: int | None = None
    zebra_work_queue_ms: int | None = None
    nexthop_kernel: bool | None = None
    bird_tick_s: int | None = None
    priority: int | None = None

    def replace(self, **changes: Any) -> TimerProfile:
        changes.setdefault(
            "name", f"{self.name}+" + ",".join(f"{k}={v}" for k, v in changes.items())
        )
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PROFILES: dict[str, TimerProfile] = {
    "defaults": TimerProfile("defaults"),
    "rfc": TimerProfile(
        "rfc",
        hello_s=10,
        dead_s=40,
        retransmit_s=5,
        transmit_delay_s=1,
        lsa_throttle_ms=5000,
        min_arrival_ms=1000,
    ),
    "tuned": TimerProfile(
        "tuned",
        hello_s=1,
        dead_s=4,
        retransmit_s=5,
        spf_delay_ms=0,
        spf_hold_ms=50,
        spf_max_ms=5000,
        lsa_throttle_ms=0,
        min_arrival_ms=0,
        zebra_work_queue_ms=0,
        nexthop_kernel=False,
        bird_tick_s=1,
    ),
}


@dataclasses.dataclass(frozen=True)
class Quirk:
    """A fixed or configured DUT timer that can dominate a result (reports quote these)."""

    name: str
    value_ms: float | None
    configurable: bool
    effect: str


@dataclasses.dataclass(frozen=True)
class DutPort:
    """A DUT interface in OSPF: device, address, network type."""

    ifname: str
    addr: str
    network: str = "point-to-point"  # or "broadcast"
    cost: int | None = None  # OSPF interface cost; None: the daemon's default (10)


class Dut(ABC):
    """The adapter interface (see module docstring)."""

    kind: str = "?"

    def __init__(
        self,
        *,
        router_id: str,
        ports: Sequence[DutPort],
        profile: TimerProfile,
        ns: str | None,
        state_dir: Path,
        log: EventLog | None = None,
        stubs: Sequence[str] = (),
    ) -> None:
        self.router_id = router_id
        self.ports = list(ports)
        self.profile = profile
        self.ns = ns
        self.state_dir = state_dir
        self.log = log
        self.stubs = list(stubs)  # extra prefixes in area 0 (the DUT's loopback /32)

    # ---- interface -----------------------------------------------------------------------
    @abstractmethod
    def render(self) -> str: ...

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> list[int]: ...

    @abstractmethod
    def alive(self) -> bool: ...

    @abstractmethod
    def neighbors(self) -> dict[str, str]:
        """``{neighbour RID: state}`` with RFC 2328 state names (``"Full"``, ``"ExStart"``...)."""

    @abstractmethod
    def state(self, what: str) -> Any:
        """A raw snapshot: ``"neighbors"``, ``"database"``, ``"routes"``, ``"spf"``."""

    @abstractmethod
    def quirks(self) -> list[Quirk]: ...

    @abstractmethod
    def version(self) -> str: ...

    def spf_report(self) -> dict[str, Any] | None:
        """The daemon's own account of its last SPF run (RFC 4061 §5.3's white-box variant):
        ``duration_us``, ``precision_us``, ``runs`` (SPF runs so far), ``ago_us`` (since the
        last one started), or None when the daemon exposes no SPF duration."""
        return None

    @property
    @abstractmethod
    def log_path(self) -> Path | None: ...

    # ---- shared --------------------------------------------------------------------------
    def log_tail(self, lines: int = 15) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return "(no log)"
        with contextlib.suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return "(log unreadable)"

    def import_log(self) -> int:
        """Copy the daemon's log into the event log as ``dut-log line`` events; returns the count.

        Each line's stamp is parsed from the daemon's own µs timestamp (FRR ``log timestamp
        precision 6``, BIRD ``timeformat log "%F %T.%6f"``; both local time, read as such), so
        the DUT's view lines up with ours; a line without a stamp takes the previous one's.
        """
        path = self.log_path
        if self.log is None or path is None or not path.exists():
            return 0
        t_prev = 0
        n = 0
        with contextlib.suppress(OSError), path.open(errors="replace") as fh:
            for raw in fh:
                line = raw.rstrip("\n")
                m = _LOG_STAMP.match(line)
                if m:
                    stamp = datetime.strptime(m.group(1).replace("/", "-"), "%Y-%m-%d %H:%M:%S.%f")
                    t_prev = int(stamp.timestamp()) * 1_000_000_000 + stamp.microsecond * 1000
                if line:
                    t_ns = t_prev or None
                    self.log.write("dut-log", "line", t_ns=t_ns, text=line, stamp="dut-log")
                    n += 1
        return n

    def check_alive(self) -> None:
        if not self.alive():
            tail = self.log_tail()
            if self.log is not None:
                self.log.write("dut", "died", kind=self.kind, log_tail=tail)
            raise LabError(f"the {self.kind} DUT died; the end of its log:\n{tail}")

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Until the daemon answers on its control socket; clear errors if it dies or not."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                self.state("neighbors")
                break
            except LabError:
                if time.monotonic() >= deadline:
                    raise LabError(
                        f"the {self.kind} DUT did not answer on its control socket within "
                        f"{timeout:.0f} s; the end of its log:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.1)
        if self.log is not None:
            self.log.write("dut", "ready", kind=self.kind)

    def wait_neighbor(self, rid: str, state: str = "Full", timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(LabError):
                if self.neighbors().get(rid) == state:
                    return True
            time.sleep(0.1)
        return False

    def record(self) -> None:
        """Log the config event: kind, version, profile, rendered config, quirks."""
        if self.log is not None:
            self.log.write(
                "dut",
                "config",
                kind=self.kind,
                version=self.version(),
                profile=self.profile.as_dict(),
                rendered=self.render(),
                quirks=[dataclasses.asdict(q) for q in self.quirks()],
                router_id=self.router_id,
            )

    def snapshot(self, what: str) -> Any:
        data = self.state(what)
        if self.log is not None:
            self.log.write("dut", "state", what=what, data=data)
        return data

    def _exec_ns(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv] if self.ns else argv

    def _run(self, argv: list[str], timeout: float = 10.0) -> str:
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise LabError(f"{argv[0]} did not answer within {timeout:.0f} s") from None
        if proc.returncode != 0:
            raise LabError(
                f"{' '.join(argv[:3])}... failed: {(proc.stderr or proc.stdout).strip()[:300]}"
            )
        return proc.stdout

    def _networks(self) -> list[str]:
        nets = [str(IPv4Interface(p.addr).network) for p in self.ports]
        return nets + [str(IPv4Network(s)) for s in self.stubs]


_FRR_VERSION = re.compile(r"\b(?:FRRouting|zebra|ospfd) (?:version )?(\d+\.\d+[\w.+~-]*)")
_BIRD_VERSION = re.compile(r"\bBIRD (?:version )?(\d+\.\d+[\w.+~-]*)")


def parse_frr_version(text: str) -> str | None:
    """ "frr 8.4.4" from ``show version`` ("FRRouting 8.4.4 (host) on Linux(...)") or from a
    daemon's ``--version`` ("ospfd version 8.4.4"); None if neither is there."""
    m = _FRR_VERSION.search(text)
    return f"frr {m.group(1)}" if m else None


def parse_bird_version(text: str) -> str | None:
    """ "bird 2.0.12" from ``birdc show status`` ("BIRD 2.0.12") or ``bird --version``
    ("BIRD version 2.0.12"); None if neither is there."""
    m = _BIRD_VERSION.search(text)
    return f"bird {m.group(1)}" if m else None


# FRR's `ospf_timeval_dump` (ospfd/ospf_dump.c): "N usecs" below 1 ms, "S.MMMs" below a minute,
# then "MmSSs", "HhMMmSSs", "DdHHhMMm", "WwDdHHh": the precision drops with the magnitude.
_FRR_TIMEVAL = (
    (re.compile(r"^(\d+) usecs$"), (1,), 1),
    (re.compile(r"^(\d+)\.(\d{3})s$"), (1_000_000, 1_000), 1_000),
    (re.compile(r"^(\d+)m(\d+)s$"), (60_000_000, 1_000_000), 1_000_000),
    (re.compile(r"^(\d+)h(\d+)m(\d+)s$"), (3_600_000_000, 60_000_000, 1_000_000), 1_000_000),
)


def parse_frr_timeval(text: str) -> tuple[int, int] | None:
    """FRR's printed duration as (microseconds, precision in microseconds), or None."""
    for pattern, scale, precision in _FRR_TIMEVAL:
        m = pattern.match(text.strip())
        if m:
            return sum(int(g) * k for g, k in zip(m.groups(), scale, strict=True)), precision
    return None


_FRR_SPF_AGO = re.compile(r"SPF algorithm last executed (.+?) ago")
_FRR_SPF_DURATION = re.compile(r"Last SPF duration (.+)")
_FRR_SPF_RUNS = re.compile(r"SPF algorithm executed (\d+) times")


def parse_frr_spf(text: str) -> dict[str, Any] | None:
    """FRR's ``show ip ospf``: the last SPF run's duration (µs when under 1 ms, as FRR prints
    it), how long ago it started, and the SPF runs so far (summed over the areas); None when
    SPF has not run or the text has no such lines."""
    dur = _FRR_SPF_DURATION.search(text)
    ago = _FRR_SPF_AGO.search(text)
    parsed = parse_frr_timeval(dur.group(1)) if dur else None
    if dur is None or parsed is None:
        return None
    since = parse_frr_timeval(ago.group(1)) if ago else None
    return {
        "duration_us": parsed[0],
        "precision_us": parsed[1],
        "text": dur.group(1).strip(),
        "ago_us": since[0] if since else None,
        "ago_precision_us": since[1] if since else None,
        "runs": sum(int(n) for n in _FRR_SPF_RUNS.findall(text)),
        "read_from": "vtysh show ip ospf: Last SPF duration",
    }


def _frr_state(raw: str) -> str:
    # "Full/-", "Full/DR", "2-Way/DROther", "ExStart/-": the part before the slash
    return raw.split("/")[0]


class FrrDut(Dut):
    """FRR (zebra + ospfd) with pathspace ``-N <ns>`` in the DUT namespace (research §2)."""

    kind = "frr"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        need_program(str(FRR_BIN / "ospfd"), "frr")
        need_program(str(FRR_BIN / "zebra"), "frr")
        need_program("vtysh", "frr")
        self.pathspace = self.ns or "twamp-external"
        self.etc = FRR_ETC / self.pathspace
        self.run_dir = FRR_RUN / self.pathspace
        self.conf = self.etc / "frr.conf"
        self._log = self.state_dir / "frr.log"

    @property
    def log_path(self) -> Path:
        return self._log

    def render(self) -> str:
        p = self.profile
        out = [
            "frr defaults traditional",
            "hostname dut",
            f"log file {self._log} debugging",
            "log timestamp precision 6",
        ]
        if p.nexthop_kernel is False:
            out.append("no zebra nexthop kernel enable")
        if p.zebra_work_queue_ms is not None:
            out.append(f"zebra work-queue {p.zebra_work_queue_ms}")
        for port in self.ports:
            out.append(f"interface {port.ifname}")
            out.append(f" ip ospf network {port.network}")
            for key, val in (
                ("hello-interval", p.hello_s),
                ("dead-interval", p.dead_s),
                ("retransmit-interval", p.retransmit_s),
                ("transmit-delay", p.transmit_delay_s),
                ("priority", p.priority),
            ):
                if val is not None:
                    out.append(f" ip ospf {key} {val}")
            if port.cost is not None:
                out.append(f" ip ospf cost {port.cost}")
        # the DUT's own view of every neighbour state change, µs-stamped, into dut-log lines
        out += ["router ospf", f" ospf router-id {self.router_id}", " log-adjacency-changes detail"]
        out += [f" network {n} area 0" for n in self._networks()]
        if p.spf_delay_ms is not None:
            hold = 50 if p.spf_hold_ms is None else p.spf_hold_ms
            top = 5000 if p.spf_max_ms is None else p.spf_max_ms
            out.append(f" timers throttle spf {p.spf_delay_ms} {hold} {top}")
        if p.lsa_throttle_ms is not None:
            out.append(f" timers throttle lsa all {p.lsa_throttle_ms}")
        if p.min_arrival_ms is not None:
            out.append(f" timers lsa min-arrival {p.min_arrival_ms}")
        return "\n".join(out) + "\n"

    def start(self) -> None:
        try:
            uid, gid = pwd.getpwnam("frr").pw_uid, grp.getgrnam("frr").gr_gid
        except KeyError:
            raise LabError(
                "the frr user does not exist: reinstall the Debian package frr"
            ) from None
        for d in (self.etc, self.run_dir, self.state_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, uid, gid)
        self.conf.write_text(self.render())
        os.chown(self.conf, uid, gid)
        os.chmod(self.conf, 0o640)
        (self.etc / "vtysh.conf").write_text("service integrated-vtysh-config\n")
        self._log.touch()
        os.chown(self._log, uid, gid)
        self.record()
        for daemon in ("zebra", "ospfd"):
            pidfile = self.run_dir / f"{daemon}.pid"
            argv = [str(FRR_BIN / daemon), "-d", "-N", self.pathspace, "-u", "frr", "-g", "frr"]
            argv += ["-f", str(self.conf), "-i", str(pidfile)]
            self._run(self._exec_ns(argv), timeout=15)
            if not self._wait_pidfile(pidfile, 10.0):
                raise LabError(
                    f"FRR {daemon} did not start (no pid file {pidfile}); the end of its log:\n"
                    f"{self.log_tail()}"
                )
            if daemon == "zebra":
                self._wait_socket(self.run_dir / "zserv.api", 10.0)
        if self.log is not None:
            self.log.write("dut", "start", kind=self.kind, pids=self.pids())

    def _wait_pidfile(self, path: Path, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = _read_pid(path)
            if pid is not None and _pid_alive(pid):
                return True
            time.sleep(0.05)
        return False

    def _wait_socket(self, path: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def pids(self) -> dict[str, int | None]:
        return {d: _read_pid(self.run_dir / f"{d}.pid") for d in ("zebra", "ospfd")}

    def alive(self) -> bool:
        pids = self.pids()
        return all(p is not None and _pid_alive(p) for p in pids.values())

    def stop(self) -> list[int]:
        self.import_log()
        killed = [
            pid
            for d in ("ospfd", "zebra")
            if (pid := kill_pidfile(self.run_dir / f"{d}.pid")) is not None
        ]
        shutil.rmtree(self.etc, ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        if self.log is not None:
            self.log.write("dut", "stop", kind=self.kind, pids=killed)
        return killed

    def vtysh(self, command: str, timeout: float = 10.0) -> str:
        return self._run(["vtysh", "-N", self.pathspace, "-c", command], timeout)

    def vtysh_json(self, command: str) -> Any:
        out = self.vtysh(command)
        try:
            return json.loads(out)
        except ValueError:
            raise LabError(
                f"FRR answered {command!r} with something that is not JSON: {out[:200]!r}"
            ) from None

    def neighbors(self) -> dict[str, str]:
        data = self.vtysh_json("show ip ospf neighbor json")
        nbrs = data.get("neighbors", data)
        out: dict[str, str] = {}
        for rid, entries in nbrs.items():
            for e in entries if isinstance(entries, list) else [entries]:
                raw = e.get("nbrState") or e.get("state") or ""
                out[rid] = _frr_state(raw)
        return out

    def state(self, what: str) -> Any:
        cmds = {
            "neighbors": "show ip ospf neighbor json",
            "database": "show ip ospf database json",
            "routes": "show ip ospf route json",
            "spf": "show ip ospf json",
        }
        if what not in cmds:
            raise ValueError(f"unknown state {what!r}")
        return self.vtysh_json(cmds[what])

    def version(self) -> str:
        """The running daemon's ``show version``, else the ospfd binary's ``--version``.

        (FRR 8.4's vtysh has no ``--version``; the running daemon is the one measured.)
        """
        with contextlib.suppress(LabError):
            found = parse_frr_version(self.vtysh("show version", timeout=5.0))
            if found:
                return found
        with contextlib.suppress(LabError):
            found = parse_frr_version(self._run([str(FRR_BIN / "ospfd"), "--version"], 5.0))
            if found:
                return found
        return "frr (unknown version)"

    def spf_report(self) -> dict[str, Any] | None:
        """``show ip ospf`` (text: its JSON has the duration in whole ms only, 0 for a run of
        tens of µs), parsed by `parse_frr_spf`; None when ospfd does not answer."""
        try:
            return parse_frr_spf(self.vtysh("show ip ospf", timeout=5.0))
        except LabError:
            return None

    def quirks(self) -> list[Quirk]:
        p = self.profile
        rxmt = p.retransmit_s if p.retransmit_s is not None else 5
        return [
            Quirk(
                "delayed-ack",
                1000.0,
                False,
                "FRR acks new LSAs from a fixed 1 s timer (oi->v_ls_ack, no CLI in 8.4); "
                "duplicates at once: new-LSA acks spread over 0-1 s (RFC 4061 §5.1, §5.3)",
            ),
            Quirk(
                "ase-timer",
                1000.0,
                False,
                "external routes are recomputed on a fixed 1 s timer (OSPF_ASE_CALC_INTERVAL) "
                "after a topology change: deleted externals leave the FIB ~1 s late",
            ),
            Quirk(
                "lsr-stall",
                rxmt * 1000.0,
                True,
                "after its first LSR FRR waits for the retransmit interval before the next: "
                "adjacency with a large database takes about one RxmtInterval longer (§6.3)",
            ),
            Quirk(
                "spf-throttle",
                float(p.spf_hold_ms if p.spf_hold_ms is not None else 50),
                True,
                f"SPF delay {p.spf_delay_ms if p.spf_delay_ms is not None else 0} ms, "
                f"hold {p.spf_hold_ms if p.spf_hold_ms is not None else 50} ms",
            ),
            Quirk(
                "zebra-work-queue",
                float(p.zebra_work_queue_ms if p.zebra_work_queue_ms is not None else 10),
                True,
                "zebra holds FIB updates this long before writing them to the kernel",
            ),
        ]


_BIRD_STATE = re.compile(r"^(\d+\.\d+\.\d+\.\d+)\s+\d+\s+([\w-]+)(?:/\S+)?\s")


class BirdDut(Dut):
    """BIRD 2 (``bird -c -s -P``) in the DUT namespace, read through ``birdc -s``."""

    kind = "bird"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        need_program("bird", "bird2")
        need_program("birdc", "bird2")
        self.conf = self.state_dir / "bird.conf"
        self.ctl = self.state_dir / "bird.ctl"
        self.pidfile = self.state_dir / "bird.pid"
        self._log = self.state_dir / "bird.log"

    @property
    def log_path(self) -> Path:
        return self._log

    def render(self) -> str:
        p = self.profile
        ifaces = []
        for port in self.ports:
            opts = ["type ptp" if port.network == "point-to-point" else "type broadcast"]
            for key, val in (
                ("hello", p.hello_s),
                ("dead", p.dead_s),
                ("retransmit", p.retransmit_s),
                ("transmit delay", p.transmit_delay_s),
                ("priority", p.priority),
            ):
                if val is not None:
                    opts.append(f"{key} {val}")
            if port.cost is not None:
                opts.append(f"cost {port.cost}")
            ifaces.append(f'    interface "{port.ifname}" {{ {"; ".join(opts)}; }};')
        tick = f"  tick {p.bird_tick_s};\n" if p.bird_tick_s is not None else ""
        return (
            f"router id {self.router_id};\n"
            f'log "{self._log}" all;\n'
            "timeformat base iso long;\n"
            'timeformat log "%F %T.%6f";\n'
            "protocol device { scan time 10; }\n"
            'protocol direct { ipv4; interface "lo"; }\n'
            "protocol kernel { ipv4 { export where source = RTS_OSPF || source = RTS_OSPF_EXT2 "
            "|| source = RTS_OSPF_EXT1; }; }\n"
            "protocol ospf v2 dut {\n"
            f"{tick}"
            "  ipv4 { import all; export none; };\n"
            "  area 0 {\n" + "\n".join(ifaces) + '\n    interface "lo" { stub yes; };\n  };\n}\n'
        )

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self.render())
        self.record()
        argv = ["bird", "-c", str(self.conf), "-s", str(self.ctl), "-P", str(self.pidfile)]
        self._run(self._exec_ns(argv), timeout=15)
        deadline = time.monotonic() + 10
        while not self.alive():
            if time.monotonic() > deadline:
                raise LabError(f"BIRD did not start; the end of its log:\n{self.log_tail()}")
            time.sleep(0.05)
        if self.log is not None:
            self.log.write("dut", "start", kind=self.kind, pids={"bird": _read_pid(self.pidfile)})

    def alive(self) -> bool:
        pid = _read_pid(self.pidfile)
        return pid is not None and _pid_alive(pid)

    def stop(self) -> list[int]:
        self.import_log()
        pid = kill_pidfile(self.pidfile)
        if self.log is not None:
            self.log.write("dut", "stop", kind=self.kind, pids=[pid] if pid else [])
        return [pid] if pid else []

    def birdc(self, command: str) -> str:
        return self._run(["birdc", "-s", str(self.ctl), *command.split()])

    def neighbors(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in self.birdc("show ospf neighbors").splitlines():
            m = _BIRD_STATE.match(line.strip())
            if m:
                out[m.group(1)] = m.group(2)
        return out

    def state(self, what: str) -> Any:
        cmds = {
            "neighbors": "show ospf neighbors",
            "database": "show ospf lsadb",
            "routes": "show route",
            "spf": "show ospf state",
        }
        if what not in cmds:
            raise ValueError(f"unknown state {what!r}")
        return self.birdc(cmds[what])

    def version(self) -> str:
        """The running daemon's ``birdc show status``, else the binary's ``bird --version``."""
        with contextlib.suppress(LabError):
            found = parse_bird_version(self.birdc("show status"))
            if found:
                return found
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            proc = subprocess.run(
                ["bird", "--version"], capture_output=True, text=True, check=False, timeout=5
            )
            found = parse_bird_version(proc.stdout + proc.stderr)
            if found:
                return found
        return "bird (unknown version)"

    def quirks(self) -> list[Quirk]:
        tick = self.profile.bird_tick_s if self.profile.bird_tick_s is not None else 1
        return [
            Quirk(
                "tick",
                tick * 1000.0,
                True,
                "BIRD runs route calculation on this periodic tick (minimum 1 s): FIB changes "
                "lag by up to one tick",
            ),
            Quirk(
                "min-ls-interval",
                5000.0,
                False,
                "BIRD's own router-LSA came ~4.6 s after the adjacency (MinLSInterval 5 s)",
            ),
            Quirk(
                "delayed-ack",
                1000.0,
                False,
                "new LSAs acked after ~1 s (351-1,050 ms measured): new-LSA ack timings are "
                "timer-dominated",
            ),
        ]


class ExternalDut(Dut):
    """A real router on interfaces the user names: nothing is created, started or configured.

    Its timers are whatever the user configured on it (record them with ``profile``); the
    adapter can read no state, so `neighbors` is empty and readiness is the user's promise.
    """

    kind = "external"

    @property
    def log_path(self) -> Path | None:
        return None

    def render(self) -> str:
        return "(external router: configured by the user, not by twamp)\n"

    def start(self) -> None:
        self.record()

    def stop(self) -> list[int]:
        return []

    def alive(self) -> bool:
        return True

    def wait_ready(self, timeout: float = 0.0) -> None:
        return None

    def neighbors(self) -> dict[str, str]:
        return {}

    def state(self, what: str) -> Any:
        return None

    def version(self) -> str:
        return "external (version not readable: no access to the router's CLI)"

    def quirks(self) -> list[Quirk]:
        return [
            Quirk(
                "unknown-timers",
                None,
                False,
                "an external DUT's delayed-ack, SPF and FIB timers are unknown to twamp: "
                "record them from the device's configuration",
            )
        ]


def make_dut(
    kind: str,
    lab: Lab,
    profile: TimerProfile,
    *,
    network: str = "point-to-point",
    log: EventLog | None = None,
) -> Dut:
    """An FRR or BIRD DUT for ``lab``'s DUT namespace, its ports and loopback; registers stop."""
    ports = [
        DutPort(
            p.ifname,
            _addr(p),
            network if p.ifname != "eth-lan" else "broadcast",
            DUT_COSTS.get(p.ifname),
        )
        for p in lab.dut_ports()
    ]
    kw: dict[str, Any] = {
        "router_id": lab.dut_rid,
        "ports": ports,
        "profile": profile,
        "ns": lab.ns("dut"),
        "state_dir": lab.state_dir / "dut",
        "log": log if log is not None else lab.log,
        "stubs": [f"{lab.dut_rid}/32"],
    }
    dut: Dut
    if kind == "frr":
        dut = FrrDut(**kw)
    elif kind == "bird":
        dut = BirdDut(**kw)
    else:
        raise LabError(f"unknown DUT kind {kind!r}: use frr, bird or external")
    lab.on_down(dut.stop)
    return dut


def _addr(p: Port) -> str:
    assert p.addr is not None
    return p.addr


def external_dut(
    router_id: str,
    ports: Sequence[DutPort],
    *,
    profile: TimerProfile | None = None,
    log: EventLog | None = None,
) -> ExternalDut:
    """An external DUT: a real router whose interfaces face ours (``ports`` name *our* devices
    and addresses toward it). Nothing is created; `profile` records the timers the user set
    on the device, for the reports."""
    return ExternalDut(
        router_id=router_id,
        ports=ports,
        profile=profile or TimerProfile("external (as configured on the device)"),
        ns=None,
        state_dir=Path("/nonexistent"),
        log=log,
    )
