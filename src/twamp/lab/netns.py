"""Network namespaces for the lab: create, enter (per thread), list, remove; all by name.

Namespaces are made and removed through pyroute2 (``pyroute2.netns``: the ``/run/netns/<name>``
bind mounts that ``ip netns`` also uses, so ``ip netns list`` shows the lab). Sockets are opened
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
import errno
import os
import socket
from collections.abc import Callable, Iterator
from typing import TypeVar

from pyroute2 import netns as _netns

__all__ = ["CLONE_NEWNET", "create", "entered", "exists", "list_names", "remove", "socket_in"]

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_T = TypeVar("_T")


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def list_names() -> list[str]:
    return sorted(_netns.listnetns())


def exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_RUN_DIR, name))


def create(name: str) -> None:
    """Create the namespace ``name`` (its loopback is brought up by the caller)."""
    _netns.create(name)


def remove(name: str) -> bool:
    """Remove ``name`` if it exists; True if it did. Devices inside go when the kernel frees it."""
    if not exists(name):
        return False
    try:
        _netns.remove(name)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
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
