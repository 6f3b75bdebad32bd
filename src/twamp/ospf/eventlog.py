"""The OSPF lab's one event log: the writer and the file reader.

The format and its vocabulary (every source, event and field, the clocks and stamps) are
documented in `twamp.ospf.logformat`, which holds the I/O-free parts (`Event`, `parse_lines`,
`lsa_key`); they are re-exported here so ``from twamp.ospf.eventlog import Event`` keeps working.

API
---
``EventLog(path)`` opens a log for appending (context manager; also usable as a callable
``log(source, event, t_ns=None, **fields)``); ``EventLog.memory()`` keeps events in a list
(tests, sans-I/O drivers). ``read_events(path, sort=False)`` yields `Event` objects; a
truncated final line (a run killed mid-write) is skipped, any other bad line raises
`EventLogError` naming the line.

Why ``os.write`` on an ``O_APPEND`` descriptor instead of a buffered file: each event is one
``write(2)`` of one complete line, so there is no user-space buffer to flush on Ctrl-C or
SIGTERM, concurrent writers (the FIB watcher thread, the probe thread, the event loop) never
interleave within a line, and a crash loses at most the event being formatted.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from .logformat import (
    LOG_VERSION,
    SOURCES,
    VOCABULARY,
    Event,
    EventLogError,
    lsa_key,
    parse_lines,
    parse_lsa_key,
)

__all__ = [
    "LOG_VERSION",
    "SOURCES",
    "VOCABULARY",
    "Event",
    "EventLog",
    "EventLogError",
    "lsa_key",
    "parse_lines",
    "parse_lsa_key",
    "read_events",
]


class EventLog:
    """Append-only writer; thread-safe; every event is one ``write(2)`` (see module docstring).

    ``EventLog(path)`` appends to a file (created 0644); ``EventLog.memory()`` keeps `Event`
    objects in ``self.events`` instead, for tests and in-process analysis. Both keep
    ``self.events`` when ``keep=True``.
    """

    def __init__(self, path: str | os.PathLike[str] | None, *, keep: bool = False) -> None:
        self.path = Path(path) if path is not None else None
        self.keep = keep or path is None
        self.events: list[Event] = []
        self._lock = threading.Lock()
        self._fd: int | None = None
        if self.path is not None:
            self._fd = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644
            )
        uname = platform.uname()
        self.write(
            "lab",
            "log-start",
            version=LOG_VERSION,
            host=uname.node,
            kernel=uname.release,
            nproc=os.cpu_count() or 0,
            clock="CLOCK_REALTIME",
        )

    @classmethod
    def memory(cls) -> EventLog:
        return cls(None)

    def write(self, source: str, event: str, t_ns: int | None = None, **fields: Any) -> Event:
        """Append one event; ``t_ns`` defaults to now (``time.time_ns()``, stamp ``"user"``)."""
        ev = Event(time.time_ns() if t_ns is None else int(t_ns), source, event, fields)
        line = (ev.to_json() + "\n").encode()
        with self._lock:
            if self._fd is not None:
                # A regular file takes the whole line in one write (no partial writes short of
                # ENOSPC); the loop is for that corner, not for the normal case.
                view = memoryview(line)
                while view:
                    view = view[os.write(self._fd, view) :]
            if self.keep:
                self.events.append(ev)
        return ev

    __call__ = write

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    @property
    def closed(self) -> bool:
        return self.path is not None and self._fd is None

    def __enter__(self) -> EventLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def select(self, source: str | None = None, event: str | None = None) -> list[Event]:
        """Kept events matching ``source`` and ``event`` (None matches all)."""
        with self._lock:
            return [
                e
                for e in self.events
                if (source is None or e.source == source) and (event is None or e.event == event)
            ]


def read_events(path: str | os.PathLike[str], *, sort: bool = False) -> Iterator[Event]:
    """Events of a saved log, in file order or (``sort=True``) stably sorted by ``t_ns``."""
    with open(path, encoding="utf-8") as fh:
        events = parse_lines(fh, name=str(path))
        if sort:
            yield from sorted(events, key=lambda e: e.t_ns)
        else:
            yield from events
