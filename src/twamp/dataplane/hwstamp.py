"""Hardware timestamping of a network interface: what it offers, switching it on, the fallback.

A NIC that stamps packets itself says so through ethtool (`ETHTOOL_GET_TS_INFO` over the
`SIOCETHTOOL` ioctl, <linux/ethtool.h>): which `SOF_TIMESTAMPING_*` flags it supports, its PTP
hardware clock, and the transmit types and receive filters it can do. Having it stamp is a
device setting (`SIOCSHWTSTAMP`, <linux/net_tstamp.h>, needs CAP_NET_ADMIN), then a socket
asks for the stamps (`sockets.enable_tx_timestamps(hardware=True)`), which arrive in the raw
hardware slot of `scm_timestamping` (`sockets.TS_SLOT_HARDWARE`).

A raw hardware stamp is on the NIC's clock (the PHC), not CLOCK_REALTIME: set against a
Timestamp the sender wrote, it means something only when the PHC is disciplined to the system
clock (phc2sys), which is the user's business and is said beside every such figure.

`choose_tx_stamps` is the one decision `twamp ping` makes: hardware when asked for and offered
and switched on, else software with one sentence why.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import socket
import struct
from dataclasses import dataclass

from .sockets import (
    SOF_TIMESTAMPING_RAW_HARDWARE,
    SOF_TIMESTAMPING_RX_HARDWARE,
    SOF_TIMESTAMPING_TX_HARDWARE,
)

__all__ = ["TsInfo", "choose_tx_stamps", "enable_device_stamping", "ts_info"]

log = logging.getLogger(__name__)

SIOCETHTOOL = 0x8946  # <linux/sockios.h>
SIOCSHWTSTAMP = 0x89B0
ETHTOOL_GET_TS_INFO = 0x41  # <linux/ethtool.h>
HWTSTAMP_TX_ON = 1  # <linux/net_tstamp.h> enum hwtstamp_tx_types
HWTSTAMP_FILTER_NONE = 0  # enum hwtstamp_rx_filters
HWTSTAMP_FILTER_ALL = 1
_IFNAMSIZ = 16
# struct ethtool_ts_info: cmd, so_timestamping, phc_index, tx_types, tx_reserved[3],
# rx_filters, rx_reserved[3]
_TS_INFO = struct.Struct("=IIiI3II3I")
_HWTSTAMP_CONFIG = struct.Struct("=iii")  # struct hwtstamp_config: flags, tx_type, rx_filter
_HW_FLAGS = SOF_TIMESTAMPING_TX_HARDWARE | SOF_TIMESTAMPING_RAW_HARDWARE


@dataclass(frozen=True, slots=True)
class TsInfo:
    """An interface's timestamping capabilities (struct ethtool_ts_info)."""

    interface: str
    so_timestamping: int
    """The SOF_TIMESTAMPING_* flags the device and its driver support."""
    phc_index: int
    """The PTP hardware clock (/dev/ptpN), -1 when there is none."""
    tx_types: int
    """Bit mask of enum hwtstamp_tx_types."""
    rx_filters: int
    """Bit mask of enum hwtstamp_rx_filters."""

    @property
    def hardware_tx(self) -> bool:
        """The NIC stamps transmitted packets and reports raw stamps, and can be switched on."""
        return (self.so_timestamping & _HW_FLAGS) == _HW_FLAGS and bool(
            self.tx_types & (1 << HWTSTAMP_TX_ON)
        )

    @property
    def hardware_rx(self) -> bool:
        return bool(self.so_timestamping & SOF_TIMESTAMPING_RX_HARDWARE)


def _ifreq(interface: str, data: ctypes.Array[ctypes.c_char]) -> bytes:
    """struct ifreq with ifr_data pointing at `data` (which must outlive the ioctl)."""
    name = interface.encode()
    if not 0 < len(name) < _IFNAMSIZ:
        raise ValueError(f"{interface!r} is not an interface name (1-15 characters)")
    return struct.pack(f"{_IFNAMSIZ}sP", name, ctypes.addressof(data)).ljust(40, b"\0")


def ts_info(interface: str) -> TsInfo:
    """The timestamping capabilities of `interface`; OSError (ENODEV) if there is none."""
    buf = ctypes.create_string_buffer(
        _TS_INFO.pack(ETHTOOL_GET_TS_INFO, 0, -1, 0, 0, 0, 0, 0, 0, 0, 0)
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, _ifreq(interface, buf))
    _, flags, phc, tx_types, _, _, _, rx_filters, *_ = _TS_INFO.unpack(buf.raw[: _TS_INFO.size])
    return TsInfo(interface, flags, phc, tx_types, rx_filters)


def enable_device_stamping(interface: str, *, rx_all: bool = False) -> None:
    """Switch on the NIC's transmit stamping (SIOCSHWTSTAMP), and its receive stamping of all
    packets with `rx_all`; OSError when the driver refuses or we lack CAP_NET_ADMIN (EPERM).

    The setting belongs to the device and stays after we exit (as with ptp4l); asking for a
    receive filter the NIC lacks would make the driver refuse the transmit part too, hence
    `rx_all` only where `TsInfo.rx_filters` offers it.
    """
    rx_filter = HWTSTAMP_FILTER_ALL if rx_all else HWTSTAMP_FILTER_NONE
    buf = ctypes.create_string_buffer(_HWTSTAMP_CONFIG.pack(0, HWTSTAMP_TX_ON, rx_filter))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), SIOCSHWTSTAMP, _ifreq(interface, buf))


def choose_tx_stamps(interface: str | None) -> tuple[bool, str | None]:
    """Whether to use the NIC's transmit stamps on `interface`, and if not, why in one sentence.

    None: hardware stamps were not asked for (software, no sentence). Otherwise the interface
    is queried and, when it offers hardware transmit stamps, switched on; any failure falls
    back to the kernel's software stamps with one log line, and the same sentence is returned
    for the output.
    """
    if interface is None:
        return False, None
    try:
        info = ts_info(interface)
    except (OSError, ValueError) as exc:
        cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        note = f"cannot query {interface}'s timestamping ({cause}): software stamps instead"
        log.warning("%s", note)
        return False, note
    if not info.hardware_tx:
        note = (
            f"{interface} offers no hardware transmit stamps (ethtool -T {interface}): "
            "software stamps instead"
        )
        log.warning("%s", note)
        return False, note
    try:
        enable_device_stamping(interface, rx_all=bool(info.rx_filters & (1 << HWTSTAMP_FILTER_ALL)))
    except OSError as exc:
        why = "it needs root: CAP_NET_ADMIN" if exc.errno == errno.EPERM else exc.strerror
        note = f"cannot switch on hardware stamping on {interface} ({why}): software stamps instead"
        log.warning("%s", note)
        return False, note
    log.info("hardware transmit stamps on %s (PHC /dev/ptp%d)", interface, info.phc_index)
    return True, None
