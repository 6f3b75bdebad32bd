"""OSPFv2 for RFC 4061 benchmarks.

Sans-I/O (bytes and `now_ns` in, events and bytes out; no sockets, no clock):
  `wire`       the codec: packets, LSAs, Internet and Fletcher checksums, LSA comparison
  `events`     `InterfaceConfig`, `LsaSpec`, `Transmit` and the events the router reports
  `router`     `EmulatedRouter`: Hellos, DR election, neighbour machine, LSDB and flooding
  `interface`, `neighbor`, `lsdb`   its per-interface, per-neighbour and database state
  `topology`   router-LSA chains and grids, N externals, from documentation ranges only

I/O (the only modules here that touch the network or the clock): `io` (raw protocol-89
sockets, kernel stamps) and `eventlog` (the run's one event log).
"""
