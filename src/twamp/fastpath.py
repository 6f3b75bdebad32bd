"""The reflector data plane: the compiled `twamp._fastpath` if built, else its pure-Python twin.

Selection follows yarl's `_quoting.py` (research/model-codebases.md §1, aio-libs):

* `TWAMP_PURE_PYTHON=1` forces the pure twin `twamp._fastpath_py`;
* otherwise the compiled module is used when it imports, the pure twin when it does not;
* `TWAMP_REQUIRE_EXTENSION=1` (set by cibuildwheel) turns a missing compiled module into an
  ImportError, so that a wheel which silently fell back to pure Python fails its tests.

mypy always sees the pure twin, so the compiled module needs no stub. Both twins have the same
API; `implementations()` lists those importable here so that tests can run over each.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import TYPE_CHECKING

__all__ = [
    "CRYPTO_BACKEND",
    "IMPLEMENTATION",
    "LightPolicy",
    "Reflector",
    "Sender",
    "SenderResult",
    "SessionSpec",
    "implementations",
]


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


PURE_PYTHON = _flag("TWAMP_PURE_PYTHON")
REQUIRE_EXTENSION = _flag("TWAMP_REQUIRE_EXTENSION")


def _compiled() -> ModuleType | None:
    try:
        return importlib.import_module("twamp._fastpath")
    except ImportError as exc:
        if REQUIRE_EXTENSION:
            raise ImportError(
                "TWAMP_REQUIRE_EXTENSION=1: the compiled fast path twamp._fastpath is required "
                f"but missing or broken ({exc}); build it with Cython or unset the variable"
            ) from exc
        return None


def implementations() -> dict[str, ModuleType]:
    """The importable twins by their IMPLEMENTATION name ("cython", "python")."""
    from . import _fastpath_py

    found: dict[str, ModuleType] = {}
    compiled = _compiled()
    if compiled is not None:
        found[getattr(compiled, "IMPLEMENTATION", "cython")] = compiled
    found[_fastpath_py.IMPLEMENTATION] = _fastpath_py
    return found


if TYPE_CHECKING:
    from ._fastpath_py import (
        CRYPTO_BACKEND,
        IMPLEMENTATION,
        LightPolicy,
        Reflector,
        Sender,
        SenderResult,
        SessionSpec,
    )
else:
    from . import _fastpath_py

    _module = _compiled()
    if PURE_PYTHON or _module is None:
        _module = _fastpath_py
    IMPLEMENTATION = _module.IMPLEMENTATION
    # Who protects mode 2/4 test packets in the Reflector: "libcrypto" (C, no GIL) or "python".
    CRYPTO_BACKEND = _module.CRYPTO_BACKEND
    Reflector = _module.Reflector
    # The compiled twin re-exports the pure twin's plain data classes.
    SessionSpec = _module.SessionSpec
    LightPolicy = _module.LightPolicy
    Sender = _module.Sender
    SenderResult = _module.SenderResult
