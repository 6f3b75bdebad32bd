"""The TWAMP-Test data plane: every per-packet loop of twamp, and the one place that picks them.

Layout (a reader looking for the reflector's loop opens `reflector/`)::

    dataplane/
      __init__.py        this selector: the public names below, compiled twins when built
      types.py           plain types and constants both twins share (SessionSpec, LightPolicy,
                         SenderResult, counter names, MAX_DATAGRAM, SEND_BATCH, pacing)
      sockets.py         UDP socket set-up, control messages in and out
      reflector/         the Session-Reflector: pure.py (Python), compiled.pyx + .pxd (Cython)
      sender/            the Session-Sender:    pure.py (Python), compiled.pyx + .pxd (Cython)
      system.pxd         C library / Linux declarations and the C literals of the constants
      wire.pxd           inline wire helpers and per-datagram structs of both compiled twins
      libcrypto.pxd      the libcrypto shim (`_libcrypto.h`: OpenSSL by dlopen, no GIL)

Selection follows yarl's `_quoting.py` (aio-libs: a compiled module with a pure twin):

* `TWAMP_PURE_PYTHON=1` selects the pure twins at run time; set at build time it also skips
  compiling them (setup.py). It is the only "pure Python" switch.
* otherwise the compiled twins are used when they import, the pure ones when they do not;
* `TWAMP_REQUIRE_EXTENSION=1` (set by cibuildwheel and CI) turns a missing compiled twin into an
  ImportError, so that a wheel which silently fell back to pure Python fails its tests.

Nothing outside this package imports a twin module (tests/test_dataplane_layout.py fails if
something does); tests reach both through `implementations()`. mypy always sees the pure twins,
so the compiled modules need no stub.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .types import LightPolicy, SenderResult, SessionSpec, StopFlag, normalize_ip

__all__ = [
    "CRYPTO_BACKEND",
    "IMPLEMENTATION",
    "LightPolicy",
    "Reflector",
    "ReflectorLoop",
    "Sender",
    "SenderResult",
    "SessionSpec",
    "StopFlag",
    "Twin",
    "default_loop",
    "implementations",
    "normalize_ip",
]

PURE_PYTHON = os.environ.get("TWAMP_PURE_PYTHON", "") not in ("", "0")
REQUIRE_EXTENSION = os.environ.get("TWAMP_REQUIRE_EXTENSION", "") not in ("", "0")

_PURE = ("twamp.dataplane.reflector.pure", "twamp.dataplane.sender.pure")
_COMPILED = ("twamp.dataplane.reflector.compiled", "twamp.dataplane.sender.compiled")


@dataclass(frozen=True)
class Twin:
    """One implementation of the data plane: its reflector and sender and what they run on.

    The shared types are the same objects for every twin (`SessionSpec` etc. are here so that a
    test written against a twin needs nothing else).
    """

    IMPLEMENTATION: str  # "python" or "cython"
    CRYPTO_BACKEND: str  # who protects mode 2/4 test packets: "python" or "libcrypto"
    Reflector: Any
    ReflectorLoop: Any
    default_loop: Any
    Sender: Any
    reflector_module: ModuleType
    sender_module: ModuleType
    SessionSpec: type[SessionSpec] = SessionSpec
    LightPolicy: type[LightPolicy] = LightPolicy
    SenderResult: type[SenderResult] = SenderResult


def _twin(reflector: ModuleType, sender: ModuleType) -> Twin:
    return Twin(
        IMPLEMENTATION=reflector.IMPLEMENTATION,
        CRYPTO_BACKEND=reflector.CRYPTO_BACKEND,
        Reflector=reflector.Reflector,
        ReflectorLoop=reflector.ReflectorLoop,
        default_loop=reflector.default_loop,
        Sender=sender.Sender,
        reflector_module=reflector,
        sender_module=sender,
    )


def _compiled() -> Twin | None:
    try:
        modules = [importlib.import_module(name) for name in _COMPILED]
    except ImportError as exc:
        if REQUIRE_EXTENSION:
            raise ImportError(
                "TWAMP_REQUIRE_EXTENSION=1: the compiled data plane (twamp.dataplane.reflector"
                f".compiled, twamp.dataplane.sender.compiled) is required but missing or broken "
                f"({exc}); build it with Cython or unset the variable"
            ) from exc
        return None
    return _twin(*modules)


def _pure() -> Twin:
    return _twin(*(importlib.import_module(name) for name in _PURE))


def implementations() -> dict[str, Twin]:
    """The importable twins by their IMPLEMENTATION name ("cython", "python")."""
    found: dict[str, Twin] = {}
    compiled = _compiled()
    if compiled is not None:
        found[compiled.IMPLEMENTATION] = compiled
    pure = _pure()
    found[pure.IMPLEMENTATION] = pure
    return found


if TYPE_CHECKING:
    from .reflector.pure import (
        CRYPTO_BACKEND,
        IMPLEMENTATION,
        Reflector,
        ReflectorLoop,
        default_loop,
    )
    from .sender.pure import Sender
else:
    _selected = None if PURE_PYTHON else _compiled()
    if _selected is None:
        _selected = _pure()
    IMPLEMENTATION = _selected.IMPLEMENTATION
    # Who protects mode 2/4 test packets in the Reflector: "libcrypto" (C, no GIL) or "python".
    CRYPTO_BACKEND = _selected.CRYPTO_BACKEND
    Reflector = _selected.Reflector
    # One thread for every Reflector started on it (the default: one per process and batch).
    ReflectorLoop = _selected.ReflectorLoop
    default_loop = _selected.default_loop
    Sender = _selected.Sender
