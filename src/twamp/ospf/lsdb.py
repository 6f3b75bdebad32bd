"""The link-state database of one area (RFC 2328 §12, §13, §14), sans-I/O.

Entries keep the LSA as decoded, its octets as received or originated (flooded on unchanged but
for the LS age, which the checksum does not cover), and the time it was installed, so that the
current age is `stored age + whole seconds held` (RFC 2328 §13.2: age is not rewritten in the
database; we compute it on demand instead of ticking every second).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

from .wire import MAX_AGE, Lsa, LsaHeader, LsaKey, with_age

__all__ = ["Lsdb", "LsdbEntry", "current_header"]

_NS = 1_000_000_000
_DO_NOT_AGE = 0x8000


@dataclass(frozen=True, slots=True)
class LsdbEntry:
    """One database copy: the LSA, its octets, when it was installed and by whom."""

    lsa: Lsa
    raw: bytes
    installed_ns: int
    self_originated: bool
    key: LsaKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", self.lsa.header.key)

    def age(self, now_ns: int) -> int:
        """Current LS age in seconds, capped at MaxAge (DoNotAge LSAs keep theirs)."""
        stored = self.lsa.header.age
        if stored & _DO_NOT_AGE:
            return stored
        return min(MAX_AGE, stored + max(0, now_ns - self.installed_ns) // _NS)

    def header(self, now_ns: int) -> LsaHeader:
        """The header with the current age, as it goes into DBDs, acks and comparisons."""
        return current_header(self.lsa.header, self.age(now_ns))

    def wire(self, now_ns: int, inf_trans_delay_s: int) -> bytes:
        """The octets to flood: age advanced by InfTransDelay, capped at MaxAge (§13.3)."""
        age = self.age(now_ns)
        if not age & _DO_NOT_AGE:
            age = min(MAX_AGE, age + inf_trans_delay_s)
        return with_age(self.raw, age) if age != self.lsa.header.age else self.raw

    @property
    def is_maxage(self) -> bool:
        return self.lsa.header.age == MAX_AGE


def current_header(header: LsaHeader, age: int) -> LsaHeader:
    return header if header.age == age else replace(header, age=age)


class Lsdb(Mapping[LsaKey, LsdbEntry]):
    """A read-only mapping for callers; `install`/`remove` for the router."""

    def __init__(self) -> None:
        self._entries: dict[LsaKey, LsdbEntry] = {}

    def __getitem__(self, key: LsaKey) -> LsdbEntry:
        return self._entries[key]

    def __iter__(self) -> Iterator[LsaKey]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: LsaKey, default: None = None) -> LsdbEntry | None:  # type: ignore[override]
        return self._entries.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def install(self, entry: LsdbEntry) -> LsdbEntry | None:
        """Install `entry`, returning the copy it replaces (RFC 2328 §13.2)."""
        old = self._entries.get(entry.key)
        self._entries[entry.key] = entry
        return old

    def remove(self, key: LsaKey) -> LsdbEntry | None:
        return self._entries.pop(key, None)
