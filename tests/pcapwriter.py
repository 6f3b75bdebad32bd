"""Write classic pcap files of IPv4 TCP/UDP frames, so tshark can dissect what our encoders wrote.

Test-only: frames are synthesised (no sockets), checksums are left at zero, which Wireshark does
not verify by default.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

_PCAP_HEADER = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
_ETH = b"\x00\x00\x00\x00\x00\x02" + b"\x00\x00\x00\x00\x00\x01" + b"\x08\x00"
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")
LINKTYPE_ETHERNET = 1


def _ipv4(proto: int, src: bytes, dst: bytes, payload: bytes, ttl: int, tos: int) -> bytes:
    return _IPV4.pack(0x45, tos, 20 + len(payload), 0, 0x4000, ttl, proto, 0, src, dst) + payload


@dataclass
class PcapWriter:
    frames: list[bytes] = field(default_factory=list)
    _seq: dict[tuple[int, int], int] = field(default_factory=dict)

    def tcp(self, src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> None:
        """One TCP segment; sequence numbers continue per direction so tshark reassembles."""
        key = (src[1], dst[1])
        seq = self._seq.get(key, 1000)
        ack = self._seq.get((dst[1], src[1]), 1000)
        self._seq[key] = seq + len(payload)
        tcp = _TCP.pack(src[1], dst[1], seq, ack, 5 << 4, 0x18, 65535, 0, 0) + payload
        self.frames.append(_ETH + _ipv4(6, _addr(src[0]), _addr(dst[0]), tcp, 64, 0))

    def handshake(self, client: tuple[str, int], server: tuple[str, int]) -> None:
        """SYN, SYN-ACK, ACK with ISN 999 both ways, so data starts at sequence 1000."""
        for a, b, seq, ack, flags in (
            (client, server, 999, 0, 0x02),
            (server, client, 999, 1000, 0x12),
            (client, server, 1000, 1000, 0x10),
        ):
            tcp = _TCP.pack(a[1], b[1], seq, ack, 5 << 4, flags, 65535, 0, 0)
            self.frames.append(_ETH + _ipv4(6, _addr(a[0]), _addr(b[0]), tcp, 64, 0))
        self._seq[(client[1], server[1])] = self._seq[(server[1], client[1])] = 1000

    def udp(
        self,
        src: tuple[str, int],
        dst: tuple[str, int],
        payload: bytes,
        ttl: int = 255,
        tos: int = 0,
    ) -> None:
        udp = _UDP.pack(src[1], dst[1], 8 + len(payload), 0) + payload
        self.frames.append(_ETH + _ipv4(17, _addr(src[0]), _addr(dst[0]), udp, ttl, tos))

    def write(self, path: Path) -> None:
        out = [_PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET)]
        for i, frame in enumerate(self.frames):
            out.append(_RECORD.pack(1_700_000_000 + i, 0, len(frame), len(frame)) + frame)
        path.write_bytes(b"".join(out))


def _addr(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))
