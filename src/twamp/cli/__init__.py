"""Command-line interfaces: `twamp` (server, ping, reflect) and `twamp-bench`."""
