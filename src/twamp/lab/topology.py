"""The lab's namespaces, veth pairs, bridge, addresses and routes (RFC 4061 §3 topologies T1-T4).

Everything is made through rtnetlink from Python (pyroute2), never by running ``ip``: a link
trigger through a subprocess costs 4-15 ms (research §4.1 item 7), through netlink ~0.3 ms. Every
veth is created *inside* a lab namespace with its peer moved into the other at once, so no lab
device ever appears in the host namespace (two labs, or two helpers, never collide on a device
name; interface names can be short and fixed per namespace).

Names: every namespace is ``<prefix>-<role>`` with ``prefix = "<tag>-<pid>-<n>"`` (e.g.
``twamp-4711-1-dut``; ``n`` counts labs within the process); the DUT's FRR pathspace and the
lab's state directory ``/run/twamp-lab/<prefix>/`` use the same prefix. `cleanup_stale` removes
the objects of a *dead* earlier run by that prefix only (its pid no longer exists), so a second
run never trips over a first run's leftovers and never touches a live run's lab.

Addressing (documentation ranges only, RFC 5737; DUT router ID 192.0.2.129 on its loopback)::

    link        DUT side          far side          topologies
    gen         192.0.2.1/30      192.0.2.2/30      T1 T2 T4 (T4: link 1)
    col         198.51.100.1/30   198.51.100.2/30   T2 (and T1 with collector=True)
    gen2        192.0.2.5/30      192.0.2.6/30      T4 (link 2; DUT cost 100, `DUT_COSTS`)
    gencol      (gen) 192.0.2.9/30 (col) 192.0.2.10/30   T2 (collector - generator)
    lan         192.0.2.65/27 DUT, .66 r1, .67 r2 on bridge ``br0`` in ``<prefix>-sw``   T3

The data-plane probe goes gen → DUT → 203.0.113.77 (on the collector's loopback): static
routes 203.0.113.0/24 via the DUT in gen and 192.0.2.0/24 via the DUT in col; the DUT forwards
(``net.ipv4.ip_forward=1``) and learns 203.0.113.77/32 through OSPF when the collector announces
it. A veth going down flushes the static routes through it (research §4.1 item 6): `link_up`
re-adds them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Interface
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from pyroute2 import IPRoute

from ..ospf.eventlog import EventLog
from . import netns
from .errors import LabError, check_root

__all__ = [
    "DUT_COSTS",
    "DUT_RID",
    "PROBE_TARGET",
    "STATE_ROOT",
    "TOPOLOGIES",
    "Lab",
    "LinkPlan",
    "Port",
    "cleanup_stale",
    "lab_objects",
]

DUT_RID = "192.0.2.129"
BLACKHOLE_MAC = "02:00:5e:10:00:01"  # locally administered, on no lab device
#: OSPF costs of the DUT's interfaces where not the default (10). T4's link 2 is the backup:
#: the DUT reaches the generator (the probe's source) over link 1 until it fails, so 6.7/6.8's
#: loss window measures the reroute (with equal costs ECMP could carry the probe on link 2).
DUT_COSTS: dict[str, int] = {"eth-gen2": 100}
NETLINK_ROUTE = 0
_LAB_SEQ = itertools.count(1)
PROBE_TARGET = "203.0.113.77"
STATE_ROOT = Path("/run/twamp-lab")
FRR_RUN = Path("/var/run/frr")
FRR_ETC = Path("/etc/frr")


@dataclass(frozen=True)
class Port:
    """One end of a link: a device in a namespace (``ns`` is the role; `Lab.ns` names it)."""

    role: str
    ifname: str
    addr: str | None  # "a.b.c.d/len", None for a bridge port

    @property
    def ip(self) -> str:
        assert self.addr is not None
        return str(IPv4Interface(self.addr).ip)


@dataclass(frozen=True)
class LinkPlan:
    """A veth pair between two roles; ``b`` is the bridge port when ``bridge`` is set."""

    name: str
    a: Port
    b: Port
    bridge: str | None = None


def _p(role: str, ifname: str, addr: str | None) -> Port:
    return Port(role, ifname, addr)


_GEN = LinkPlan("gen", _p("dut", "eth-gen", "192.0.2.1/30"), _p("gen", "eth-dut", "192.0.2.2/30"))
_COL = LinkPlan(
    "col", _p("dut", "eth-col", "198.51.100.1/30"), _p("col", "eth-dut", "198.51.100.2/30")
)
_GEN2 = LinkPlan(
    "gen2", _p("dut", "eth-gen2", "192.0.2.5/30"), _p("gen", "eth-dut2", "192.0.2.6/30")
)
_GENCOL = LinkPlan(
    "gencol", _p("gen", "eth-col", "192.0.2.9/30"), _p("col", "eth-gen", "192.0.2.10/30")
)
_LAN = tuple(
    LinkPlan(
        f"lan-{role}",
        _p(role, "eth-lan", f"192.0.2.{65 + i}/27"),
        _p("sw", f"p-{role}", None),
        "br0",
    )
    for i, role in enumerate(("dut", "r1", "r2"))
)

#: RFC 4061 §3 topologies: the roles (namespaces) and links of each.
TOPOLOGIES: dict[str, tuple[LinkPlan, ...]] = {
    "T1": (_GEN, _COL),  # T1 plus the collector, which observers and the probe need
    "T1-bare": (_GEN,),
    "T2": (_GEN, _COL, _GENCOL),
    "T3": _LAN,
    "T4": (_GEN, _GEN2, _COL),
}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def kill_pidfile(path: Path, timeout: float = 5.0) -> int | None:
    """SIGTERM the pid in ``path``, wait up to ``timeout`` s, then SIGKILL; remove the file."""
    pid = _read_pid(path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    if pid is None or pid <= 1 or not _pid_alive(pid):
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                break
        time.sleep(0.02)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pid


def _prefix_re(tag: str) -> re.Pattern[str]:
    return re.compile(rf"^({re.escape(tag)}-(\d+)-\d+)-[a-z0-9]+$")


def lab_objects(tag: str) -> dict[str, list[str]]:
    """What exists of labs tagged ``tag``: namespaces, state dirs, FRR run dirs, live daemons."""
    pat = _prefix_re(tag)
    found: dict[str, list[str]] = {"namespaces": [], "state": [], "frr": [], "pids": []}
    found["namespaces"] = [n for n in netns.list_names() if pat.match(n)]
    for root, key in ((STATE_ROOT, "state"), (FRR_RUN, "frr")):
        if root.is_dir():
            for d in sorted(root.iterdir()):
                if re.match(rf"^{re.escape(tag)}-\d+-\d+$", d.name):
                    found[key].append(str(d))
                    for pf in d.glob("*.pid"):
                        pid = _read_pid(pf)
                        if pid is not None and _pid_alive(pid):
                            found["pids"].append(f"{pf}:{pid}")
    return found


def cleanup_stale(tag: str, log: EventLog | None = None) -> list[str]:
    """Remove every ``<tag>-<pid>-*`` lab object whose creating process is dead; return names.

    Daemons first (by their pid files: a process inside a namespace keeps it alive after the
    name is gone), then namespaces, then the state, FRR run and FRR config directories.
    """
    removed: list[str] = []
    stale: set[str] = set()
    pat = _prefix_re(tag)
    for name in netns.list_names():
        m = pat.match(name)
        if m and not _pid_alive(int(m.group(2))):
            stale.add(m.group(1))
    for root in (STATE_ROOT, FRR_RUN, FRR_ETC):
        if root.is_dir():
            for d in root.iterdir():
                m = re.match(rf"^({re.escape(tag)}-(\d+)-\d+)$", d.name)
                if m and d.is_dir() and not _pid_alive(int(m.group(2))):
                    stale.add(m.group(1))
    for prefix in sorted(stale):
        for root in (STATE_ROOT, FRR_RUN):
            for d in [root / prefix, *root.glob(f"{prefix}-*")] if root.is_dir() else ():
                for pf in d.glob("*.pid"):
                    pid = kill_pidfile(pf)
                    if pid is not None:
                        removed.append(f"pid {pid}")
        for name in netns.list_names():
            if name.startswith(prefix + "-") and netns.remove(name):
                removed.append(name)
        for root in (STATE_ROOT, FRR_RUN, FRR_ETC):
            for d in [root / prefix, *root.glob(f"{prefix}-*")] if root.is_dir() else ():
                if not d.exists():
                    continue
                shutil.rmtree(d, ignore_errors=True)
                removed.append(str(d))
    if removed and log is not None:
        log.write("lab", "teardown", removed=removed, killed=[], stale=True)
    return removed


@dataclass
class Lab:
    """Namespaces and links of one topology; a context manager that always tears down.

    ``Lab("T2", tag="twamp", log=log)`` plans names; `up` builds (after `cleanup_stale`), `down`
    removes everything it made and is idempotent; ``with Lab(...) as lab`` does both and also
    turns SIGTERM into ``SystemExit`` while active (main thread only), so Ctrl-C, SIGTERM and
    errors all reach the teardown.
    """

    topology: str = "T1"
    tag: str = "twamp"
    log: EventLog | None = None
    prefix: str = ""
    mtu: int = 1500
    probe_routes: bool = True
    dut_rid: str = DUT_RID
    links: tuple[LinkPlan, ...] = field(init=False)
    _ipr: dict[str, IPRoute] = field(default_factory=dict, init=False, repr=False)
    _made: list[str] = field(default_factory=list, init=False, repr=False)
    _cleanups: list[Any] = field(default_factory=list, init=False, repr=False)
    _old_sigterm: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.topology not in TOPOLOGIES:
            raise LabError(
                f"unknown topology {self.topology!r}; choose one of {', '.join(TOPOLOGIES)}"
            )
        self.links = TOPOLOGIES[self.topology]
        if not self.prefix:
            # a fresh prefix per Lab: names are never reused within a process, so a namespace
            # the kernel (or pyroute2's helper) is still releasing can never hit a new lab's
            self.prefix = f"{self.tag}-{os.getpid()}-{next(_LAB_SEQ)}"
        self.state_dir = STATE_ROOT / self.prefix
        self._owner_pid = os.getpid()

    # ---- names ---------------------------------------------------------------------------
    @property
    def roles(self) -> list[str]:
        seen: list[str] = []
        for lk in self.links:
            for r in (lk.a.role, lk.b.role):
                if r not in seen:
                    seen.append(r)
        return seen

    def ns(self, role: str) -> str:
        """The namespace name of ``role`` (``dut``, ``gen``, ``col``, ``r1``, ``r2``, ``sw``)."""
        return f"{self.prefix}-{role}"

    def link(self, name: str) -> LinkPlan:
        for lk in self.links:
            if lk.name == name:
                return lk
        raise LabError(f"topology {self.topology} has no link {name!r}")

    def port(self, link: str, role: str) -> Port:
        lk = self.link(link)
        for p in (lk.a, lk.b):
            if p.role == role:
                return p
        raise LabError(f"link {link!r} has no {role!r} side")

    def dut_ports(self) -> list[Port]:
        return [p for lk in self.links for p in (lk.a, lk.b) if p.role == "dut"]

    def ipr(self, role: str) -> IPRoute:
        """A persistent rtnetlink socket in ``role``'s namespace (kept open: triggers are fast)."""
        name = self.ns(role)
        if name not in self._ipr:
            # our own socket, opened in the namespace: IPRoute(netns=) would fork (see netns)
            sock = netns.socket_in(name, socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
            self._ipr[name] = IPRoute(use_socket=sock)
        return self._ipr[name]

    def ifindex(self, role: str, ifname: str) -> int:
        found = self.ipr(role).link_lookup(ifname=ifname)
        if not found:
            raise LabError(f"no device {ifname} in {self.ns(role)}")
        return int(found[0])

    # ---- build ---------------------------------------------------------------------------
    def up(self) -> Lab:
        check_root()
        cleanup_stale(self.tag, self.log)
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _build(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._made.append(str(self.state_dir))
        for role in self.roles:
            name = self.ns(role)
            if netns.exists(name):
                raise LabError(f"namespace {name} already exists (a live run with this prefix?)")
            netns.create(name)
            self._made.append(name)
            ipr = self.ipr(role)
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        for lk in self.links:
            self._veth(lk)
        dut = self.ipr("dut")
        dut.addr("add", index=dut.link_lookup(ifname="lo")[0], address=self.dut_rid, prefixlen=32)
        self._sysctl("dut", "net/ipv4/ip_forward", "1")
        if self.probe_routes and "col" in self.roles and "gen" in self.roles:
            col = self.ipr("col")
            col.addr(
                "add", index=col.link_lookup(ifname="lo")[0], address=PROBE_TARGET, prefixlen=32
            )
            self._static_routes()
        if self.log is not None:
            self.log.write(
                "lab",
                "topology",
                name=self.topology,
                namespaces=[self.ns(r) for r in self.roles],
                links=[
                    {
                        "name": lk.name,
                        "a": lk.a.ifname,
                        "b": lk.b.ifname,
                        "ns_a": self.ns(lk.a.role),
                        "ns_b": self.ns(lk.b.role),
                        "addr_a": lk.a.addr,
                        "addr_b": lk.b.addr,
                    }
                    for lk in self.links
                ],
                dut_rid=self.dut_rid,
            )

    def _sysctl(self, role: str, key: str, value: str) -> None:
        with netns.entered(self.ns(role)), open(f"/proc/sys/{key}", "w") as fh:
            fh.write(value)

    def _veth(self, lk: LinkPlan) -> None:
        a_ipr = self.ipr(lk.a.role)
        # The peer's namespace as a descriptor opened here, not a name: pyroute2 resolves a name
        # in its own helper, which may not see /run/netns mounts made after it started.
        peer_fd = os.open(os.path.join(netns.NETNS_RUN_DIR, self.ns(lk.b.role)), os.O_RDONLY)
        try:
            a_ipr.link(
                "add",
                ifname=lk.a.ifname,
                kind="veth",
                peer={"ifname": lk.b.ifname, "net_ns_fd": peer_fd},
            )
        finally:
            os.close(peer_fd)
        if lk.bridge is not None:
            b_ipr = self.ipr(lk.b.role)
            if not b_ipr.link_lookup(ifname=lk.bridge):
                b_ipr.link("add", ifname=lk.bridge, kind="bridge")
                # forward at once: no STP listening/learning delay on a lab bridge
                b_ipr.link("set", index=b_ipr.link_lookup(ifname=lk.bridge)[0], state="up")
            b_ipr.link(
                "set",
                index=b_ipr.link_lookup(ifname=lk.b.ifname)[0],
                master=b_ipr.link_lookup(ifname=lk.bridge)[0],
            )
        for p in (lk.a, lk.b):
            ipr = self.ipr(p.role)
            idx = self.ifindex(p.role, p.ifname)
            ipr.link("set", index=idx, mtu=self.mtu, state="up")
            if p.addr is not None:
                iface = IPv4Interface(p.addr)
                ipr.addr("add", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen)

    def _static_routes(self, role: str | None = None) -> None:
        """The probe path's static routes (again after a flap flushed them)."""
        plan = [
            ("gen", "203.0.113.0/24", self.port("gen", "dut").ip),
            ("col", "192.0.2.0/24", self.port("col", "dut").ip),
        ]
        for r, dst, gw in plan:
            if role is not None and r != role:
                continue
            with contextlib.suppress(Exception):  # exists already, or the link is down now
                self.ipr(r).route("replace", dst=dst, gateway=gw)

    # ---- link events ---------------------------------------------------------------------
    def set_link(self, link: str, role: str, up: bool) -> int:
        """Carrier down/up of ``role``'s end of ``link`` through rtnetlink; returns t_ns.

        The event's ``t_ns`` is taken right before the netlink request and ``t_done_ns`` when
        the kernel acknowledged it; a veth's peer loses carrier inside that request.
        """
        p = self.port(link, role)
        ipr = self.ipr(role)
        idx = self.ifindex(role, p.ifname)
        t0 = time.time_ns()
        ipr.link("set", index=idx, state="up" if up else "down")
        t1 = time.time_ns()
        if self.log is not None:
            self.log.write(
                "link",
                "up" if up else "down",
                t_ns=t0,
                ns=self.ns(role),
                ifname=p.ifname,
                link=link,
                how="carrier",
                t_done_ns=t1,
            )
        if up and self.probe_routes and "col" in self.roles:
            self._static_routes()
        return t0

    def link_down(self, link: str, role: str = "gen") -> int:
        return self.set_link(link, role, False)

    def route_get(self, role: str, dst: str, log: bool = True) -> dict[str, Any]:
        """``ip route get dst`` in ``role``'s namespace, logged (``lab route-get``) unless
        ``log`` is false (a poll): the device and gateway the kernel would use now, or the
        error (no route)."""
        ipr = self.ipr(role)
        out: dict[str, Any] = {"ns": self.ns(role), "dst": dst}
        try:
            msg = ipr.route("get", dst=dst)[0]
            oif = msg.get_attr("RTA_OIF")
            links = ipr.get_links(oif) if oif else []
            out["dev"] = links[0].get_attr("IFLA_IFNAME") if links else None
            out["gw"] = msg.get_attr("RTA_GATEWAY")
        except Exception as exc:  # ENETUNREACH and the like: the answer, not a failure
            out["error"] = str(exc)
        if log and self.log is not None:
            self.log.write("lab", "route-get", **out)
        return out

    def blackhole(self, link: str, on: bool) -> int:
        """Link ``link`` stops carrying the DUT's packets to the far side, carrier kept up: a
        failure beyond a switch, which only OSPF's dead interval detects (RFC 4061 §6.8).

        The DUT's neighbour entry for the far side is pinned to an unused, locally administered
        MAC: unicast frames (the data plane) reach no one, multicast (OSPF) still flows, so
        the generator's own Hello stop is what OSPF sees. Our side withdraws its static probe
        route over the link (as a carrier loss would, research §4.1 item 6), so the loss window
        is the DUT's reroute alone. ``on=False`` undoes both. Logged as ``lab blackhole``."""
        lk = self.link(link)
        dut, far = (lk.a, lk.b) if lk.a.role == "dut" else (lk.b, lk.a)
        idx = self.ifindex("dut", dut.ifname)
        t0 = time.time_ns()
        if on:
            self.ipr("dut").neigh(
                "replace", dst=far.ip, lladdr=BLACKHOLE_MAC, ifindex=idx, state=0x80
            )  # NUD_PERMANENT
            with contextlib.suppress(Exception):
                self.ipr(far.role).route("del", dst="203.0.113.0/24", gateway=dut.ip)
        else:
            with contextlib.suppress(Exception):
                self.ipr("dut").neigh("del", dst=far.ip, ifindex=idx)
            if self.probe_routes and "col" in self.roles:
                self._static_routes(far.role)
        if self.log is not None:
            self.log.write(
                "lab", "blackhole", t_ns=t0, link=link, on=on, ns=self.ns("dut"),
                ifname=dut.ifname, neighbour=far.ip,
            )  # fmt: skip
        return t0

    def link_up(self, link: str, role: str = "gen") -> int:
        return self.set_link(link, role, True)

    # ---- teardown ------------------------------------------------------------------------
    def on_down(self, fn: Any) -> None:
        """Register a callable run (last registered first) by `down`, before namespaces go."""
        self._cleanups.append(fn)

    def down(self) -> list[str]:
        """Remove everything this lab made (idempotent); returns what was removed."""
        removed: list[str] = []
        errors: list[str] = []
        if os.getpid() != self._owner_pid:
            return removed  # a forked child (see `_sigterm`) never tears down the parent's lab
        while self._cleanups:
            fn = self._cleanups.pop()
            try:
                fn()
            except Exception as exc:  # keep tearing down: the rest must still go
                errors.append(f"{fn!r}: {exc}")
        for ipr in self._ipr.values():
            with contextlib.suppress(Exception):
                ipr.close()
        self._ipr.clear()
        for name in reversed(self._made):
            if name.startswith("/"):
                shutil.rmtree(name, ignore_errors=True)
                removed.append(name)
            elif netns.remove(name):
                removed.append(name)
        self._made.clear()
        if self.log is not None and (removed or errors):
            self.log.write("lab", "teardown", removed=removed, killed=[], errors=errors)
        return removed

    def _sigterm(self, signum: int, frame: FrameType | None) -> None:
        # pyroute2 forks helpers (netns.create) that inherit this handler and get SIGTERM'd:
        # a forked child must die quietly, never unwind the parent's stack into `down`.
        if os.getpid() != self._owner_pid:
            os._exit(128 + signum)
        raise SystemExit(128 + signum)

    def __enter__(self) -> Lab:
        with contextlib.suppress(ValueError):  # not the main thread: the caller handles signals
            self._old_sigterm = signal.signal(signal.SIGTERM, self._sigterm)
        return self.up()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.down()
        finally:
            if self._old_sigterm is not None:
                with contextlib.suppress(ValueError):
                    signal.signal(signal.SIGTERM, self._old_sigterm)
                self._old_sigterm = None


def wait_gone(names: list[str], timeout: float = 5.0) -> list[str]:
    """Namespaces of ``names`` still listed after ``timeout`` s (the kernel frees them lazily)."""
    deadline = time.monotonic() + timeout
    left = [n for n in names if netns.exists(n)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [n for n in left if netns.exists(n)]
    return left


def iter_lab_links(lab: Lab) -> Iterator[tuple[str, str]]:
    for lk in lab.links:
        for p in (lk.a, lk.b):
            yield lab.ns(p.role), p.ifname
