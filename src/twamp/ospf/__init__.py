"""OSPFv2 for RFC 4061 benchmarks: codec (`wire`), emulated router (`router`), topologies.

Sans-I/O modules: `wire`, `events`, `lsdb`, `router`, `topology`. The raw-socket I/O, the lab
and the event log live beside them (`io`, `eventlog`) and are the only ones that touch the
network or the clock.
"""
