"""twamp: TWAMP (RFC 5357) in full, with a line-rate reflector and a benchmark tool.

The Python API (README "Python API"): measure with `run_ping` / `run_light_ping` and
`PingOptions` (results in `PingResult`), serve with `ServerThread(ServerConfig(...))` (or the
asyncio `TwampServer`), reflect TWAMP Light / STAMP with `LightReflector`. They are imported on
first use (PEP 562 `__getattr__`), so `import twamp` stays light and this core module imports
nothing from the layers above it (tests/test_sourcecode.py) until one of them is asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

from .constants import AcceptCode, Command, Mode, TestMode
from .errors import (
    DecodeError,
    IntegrityError,
    ProtocolError,
    ResourceLimitError,
    StateError,
    UnsupportedError,
)
from .timestamps import ErrorEstimate

# The one place the version is written: pyproject.toml reads it (tool.setuptools.dynamic).
__version__ = "0.1.0"

# name -> module that defines it (PEP 562 lazy attributes)
_LAZY = {
    "PingOptions": ".ping",
    "PingResult": ".ping",
    "Slot": ".ping",
    "parse_schedule": ".ping",
    "run_ping": ".ping",
    "run_light_ping": ".ping",
    "ClientError": ".net.client",
    "ServerConfig": ".net.server",
    "TwampServer": ".net.server",
    "ServerThread": ".net.background",
    "LightReflector": ".net.background",
}

__all__ = [
    "AcceptCode",
    "ClientError",
    "Command",
    "DecodeError",
    "ErrorEstimate",
    "IntegrityError",
    "LightReflector",
    "Mode",
    "PingOptions",
    "PingResult",
    "ProtocolError",
    "ResourceLimitError",
    "ServerConfig",
    "ServerThread",
    "Slot",
    "StateError",
    "TestMode",
    "TwampServer",
    "UnsupportedError",
    "__version__",
    "parse_schedule",
    "run_light_ping",
    "run_ping",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'twamp' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
