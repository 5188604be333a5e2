"""What the agent knows of an interface, and the error for one it cannot use (pure).

Kept apart from addresses.py, which reads and changes the kernel, so that the pure
derivations of an instance (daemon/derive.py) can name these types without importing I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class LinkInfo:
    ifname: str
    index: int
    mac: str
    addresses: tuple[ipaddress.IPv4Interface, ...]
    # Those the kernel flags secondary: a later address in a subnet that already had one.
    secondaries: frozenset[ipaddress.IPv4Address] = frozenset()


class InterfaceError(Exception):
    """An interface the config names is missing or unusable; the message says what to do."""
