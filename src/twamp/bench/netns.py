"""`twamp-bench --netns`: run the whole benchmark in a fresh network namespace of its own.

Why: on loopback, netfilter is part of every packet's path as soon as any nat or filter table
exists in the namespace (a container runtime, a firewall): connection tracking then costs about
20 % of a reflector's rate. A fresh namespace has only `lo`, no tables and no conntrack, so the
figures describe the reflector and the kernel's UDP path, nothing else on the host.

As root, `clean_namespace` creates ``<prefix>-<pid>`` (prefix `twamp-bench`, or
$TWAMP_BENCH_NETNS_PREFIX), brings `lo` up in it with netlink (pyroute2), and moves the calling
thread into it with setns(2). It must be entered before any socket is opened or any thread or
process started: those inherit the namespace of the thread that creates them, which is the
point. On the way out the thread returns to its original namespace and the namespace is
deleted, also after an error, Ctrl-C or SIGTERM (all of which unwind through here).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
from collections.abc import Iterator
from typing import Any

__all__ = ["NetnsError", "clean_namespace"]


class NetnsError(Exception):
    """The namespace cannot be made; the message says why in one sentence."""


def _pyroute2() -> Any:
    try:
        # Imported by name: pyroute2 is optional (twamp[netns]) and only --netns needs it.
        return importlib.import_module("pyroute2")
    except ImportError:
        raise NetnsError("--netns needs pyroute2: pip install 'twamp[netns]'") from None


_CLONE_NEWNET = 0x40000000  # <sched.h>


def _setns(fd: int) -> None:
    """setns(2) into the network namespace `fd` (os.setns exists only from Python 3.12)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def clean_namespace(prefix: str | None = None) -> Iterator[str]:
    """Create, enter, and on exit leave and delete a fresh namespace; yields its name."""
    if os.geteuid() != 0:
        raise NetnsError("--netns needs root (it creates a network namespace)")
    pyroute2 = _pyroute2()
    name = f"{prefix or os.environ.get('TWAMP_BENCH_NETNS_PREFIX') or 'twamp-bench'}-{os.getpid()}"
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        try:
            pyroute2.netns.create(name)
        except OSError as exc:
            raise NetnsError(f"cannot create the network namespace {name}: {exc}") from None
        try:
            pyroute2.netns.setns(name)
            with pyroute2.IPRoute() as ipr:
                (lo,) = ipr.link_lookup(ifname="lo")
                ipr.link("set", index=lo, state="up")
            yield name
        finally:
            _setns(home)
            pyroute2.netns.remove(name)
    finally:
        os.close(home)
