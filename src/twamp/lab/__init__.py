"""The RFC 4061 convergence lab: namespaces, links, DUT adapters and observers (I/O glue layer).

See `topology` (namespaces, veths, bridge, link events, teardown), `dut` (FRR, BIRD, external
adapters and timer profiles), `observers` (FIB watcher, TWAMP data-plane probe) and `errors`.
"""

from __future__ import annotations

from .errors import LabError
from .topology import DUT_RID, PROBE_TARGET, TOPOLOGIES, Lab, cleanup_stale, lab_objects

__all__ = [
    "DUT_RID",
    "PROBE_TARGET",
    "TOPOLOGIES",
    "Lab",
    "LabError",
    "cleanup_stale",
    "lab_objects",
]
