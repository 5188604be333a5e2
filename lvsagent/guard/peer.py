"""The other box: its address as this box knows it, and its MAC in the neighbour table.

The guard needs the peer's MAC (fwmark leaves its packets unmarked; bypass and
backup_only redirect what it forwards).  Multicast adverts create no neighbour
entry, but the health checks of the peer's real server (the same address) do.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from lvsagent.config.schema import Config, VrrpInstance
from lvsagent.netlink.pyroute import AsyncIPRoute, os_errors

# Neighbour states with a usable link-layer address: REACHABLE, STALE, DELAY, PROBE, PERMANENT.
_NUD_VALID = 0x02 | 0x04 | 0x08 | 0x10 | 0x80


async def neighbour_mac(peer: ipaddress.IPv4Address) -> str | None:
    """``peer``'s MAC from this namespace's neighbour table, lower case; OSError if unreadable."""
    with os_errors():
        async with AsyncIPRoute() as ipr:
            found = [
                msg.get("NDA_LLADDR")
                async for msg in await ipr.neigh("dump", family=socket.AF_INET)
                if msg.get("NDA_DST") == str(peer) and msg["state"] & _NUD_VALID
            ]
    return str(found[0]).lower() if found and found[0] else None


class PeerAddress:
    """The other box's address, for learning its MAC: the instance's runner tells it
    every advert's source (:meth:`heard`), and the guard reads it (a call).

    The last advert's source when one has been heard; a master that started first
    never has, so then the unicast peer, or else the one real server that is not
    this box (the two-box design has exactly one).
    """

    def __init__(
        self, inst: VrrpInstance, own: Iterable[ipaddress.IPv4Address], config: Config
    ) -> None:
        others = {rs.address for vs in config.virtual_servers for rs in vs.real_servers}
        others -= set(own)
        fallback = inst.unicast_peers[0] if inst.unicast_peers else None
        if fallback is None and len(others) == 1:
            fallback = next(iter(others))
        self.fallback = fallback
        self.last: ipaddress.IPv4Address | None = None

    def heard(self, address: ipaddress.IPv4Address) -> None:
        self.last = address

    def __call__(self) -> ipaddress.IPv4Address | None:
        return self.last if self.last is not None else self.fallback
