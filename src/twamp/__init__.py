"""twamp: TWAMP (RFC 5357) in full, with a line-rate reflector and a benchmark tool."""

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

__all__ = [
    "AcceptCode",
    "Command",
    "DecodeError",
    "ErrorEstimate",
    "IntegrityError",
    "Mode",
    "ProtocolError",
    "ResourceLimitError",
    "StateError",
    "TestMode",
    "UnsupportedError",
    "__version__",
]
