"""Network namespaces for the lab: create, enter (per thread), list, remove; all by name.

Namespaces are the ``/run/netns/<name>`` bind mounts that ``ip netns`` also uses (so ``ip netns
list`` shows the lab), made here as iproute2 makes them: a short-lived thread ``unshare``s its
network namespace and bind-mounts it. pyroute2's own ``netns.create`` (and ``IPRoute(netns=)``)
fork a helper process and SIGTERM it; a forked copy of a Python process inherits the parent's
Python signal handlers, and a handler that raises ``SystemExit`` then unwinds the *parent's*
stack in the child (seen: a child tore down the parent's lab, and another ran the rest of a
pytest session inside a lab namespace). Nothing here forks. Sockets are opened
*inside* a namespace by `socket_in`: the calling thread `setns(2)`s into the namespace, creates
the socket and returns; a socket keeps the namespace it was created in for its whole life, so one
process (one event loop) can then serve sockets of several namespaces (research §3).

Python 3.11 has no ``os.setns`` (3.12 does), so libc's ``setns`` is called through ctypes.
``setns`` with CLONE_NEWNET changes only the calling thread's network namespace, which is what
makes the enter/create/leave sequence safe beside other threads; the original namespace is held
open as a descriptor and re-entered in a ``finally``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

__all__ = ["CLONE_NEWNET", "create", "entered", "exists", "list_names", "remove", "socket_in"]

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_T = TypeVar("_T")


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _errno_error(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def list_names() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_RUN_DIR, name))


def _share_run_dir() -> None:
    """Make /run/netns a shared mount point, as ``ip netns add`` does (so mounts propagate)."""
    os.makedirs(NETNS_RUN_DIR, exist_ok=True)
    run = NETNS_RUN_DIR.encode()
    if _libc.mount(b"none", run, b"none", MS_SHARED | MS_REC, None) == 0:
        return
    if _libc.mount(run, run, b"none", MS_BIND | MS_REC, None) != 0:
        raise _errno_error(f"bind-mounting {NETNS_RUN_DIR}")
    if _libc.mount(b"none", run, b"none", MS_SHARED | MS_REC, None) != 0:
        raise _errno_error(f"sharing {NETNS_RUN_DIR}")


def create(name: str) -> None:
    """Create the namespace ``name`` (its loopback is brought up by the caller); no fork."""
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"bad namespace name {name!r}")
    _share_run_dir()
    path = os.path.join(NETNS_RUN_DIR, name)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    failure: list[OSError] = []

    def make() -> None:
        # this thread alone moves into a fresh namespace, pins it with the bind mount and ends
        if _libc.unshare(CLONE_NEWNET) != 0:
            failure.append(_errno_error("unshare(CLONE_NEWNET)"))
            return
        src = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
        if _libc.mount(src, path.encode(), b"none", MS_BIND, None) != 0:
            failure.append(_errno_error(f"bind-mounting the namespace on {path}"))

    worker = threading.Thread(target=make, name=f"netns-{name}")
    worker.start()
    worker.join()
    if failure:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise failure[0]


def remove(name: str) -> bool:
    """Remove ``name`` if it exists; True if it did. Devices inside go when the kernel frees it."""
    path = os.path.join(NETNS_RUN_DIR, name)
    if not os.path.exists(path):
        return False
    _libc.umount2(path.encode(), MNT_DETACH)  # fails harmlessly on a file that is not mounted
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the body with this thread inside namespace ``name``; always leaves it again."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(os.path.join(NETNS_RUN_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def run_in(name: str, fn: Callable[[], _T]) -> _T:
    with entered(name):
        return fn()


def socket_in(name: str | None, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket created inside namespace ``name`` (None: the current one)."""
    if name is None:
        return socket.socket(family, kind, proto)
    with entered(name):
        return socket.socket(family, kind, proto)
