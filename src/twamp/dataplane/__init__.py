"""The TWAMP-Test data plane's I/O edge: socket options and ancillary data (Linux).

The reflector loops themselves are `twamp._fastpath_py` and the compiled `twamp._fastpath`,
selected by `twamp.fastpath`.
"""

from .sockets import (
    ANCBUF_SIZE,
    buffer_sizes,
    is_v4_peer,
    open_test_socket,
    parse_ancillary,
    set_send_ttl,
    tos_ancillary,
)

__all__ = [
    "ANCBUF_SIZE",
    "buffer_sizes",
    "is_v4_peer",
    "open_test_socket",
    "parse_ancillary",
    "set_send_ttl",
    "tos_ancillary",
]
