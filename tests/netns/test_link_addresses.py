"""The VIP check's address dump (vrrp/fastaddr.py): one link's addresses, whatever lo holds.

In bypass and fwmark modes every virtual service's VIP is on lo, so a dump of the whole
namespace is a thousand addresses; the instance's check every 2 s reads its own link's.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterator

import pytest

from lvsagent.netlink.pyroute import AsyncIPRoute
from lvsagent.vrrp import addresses
from lvsagent.vrrp.fastaddr import AddressFastPath
from tests.netns.lab import Netns, in_namespace

LO_VIPS = 1000


@pytest.fixture
def ns() -> Iterator[Netns]:
    n = Netns("dump")
    try:
        n.run("ip", "link", "add", "vd0", "type", "veth", "peer", "name", "vd1")
        n.run("ip", "link", "set", "vd0", "up")
        n.run("ip", "addr", "add", "192.0.2.1/24", "dev", "vd0")
        n.run("ip", "addr", "add", "192.0.2.100/24", "dev", "vd0")  # a secondary
        n.run("ip", "addr", "add", "198.51.100.7/32", "dev", "vd0")
        batch = "".join(
            f"address add 10.{i // 250}.{i % 250}.1/32 dev lo\n" for i in range(LO_VIPS)
        )
        n.popen(["ip", "-batch", "-"], stdin=-1).communicate(batch)
        yield n
    finally:
        n.delete()


def test_the_dump_is_the_links_addresses_with_their_secondary_flags(ns: Netns) -> None:
    async def both() -> tuple[list[object], list[object], int]:
        async with AsyncIPRoute() as ipr:
            index = socket.if_nametoindex("vd0")
            fast = AddressFastPath(index, frozenset())
            try:
                mine = await fast.dump()
            finally:
                fast.close()
            theirs = await addresses._dump(ipr, index)
            on_lo = await addresses.read_addresses(ipr, socket.if_nametoindex("lo"))
            return list(mine), list(theirs), len(on_lo)

    mine, theirs, on_lo = in_namespace(ns, lambda: asyncio.run(both()))
    assert on_lo == LO_VIPS + 1  # 127.0.0.1 too: the namespace really holds them
    assert mine == theirs == [  # the kernel's order: primaries, then secondaries
        (ipaddress.IPv4Interface("192.0.2.1/24"), False),
        (ipaddress.IPv4Interface("198.51.100.7/32"), False),
        (ipaddress.IPv4Interface("192.0.2.100/24"), True),
    ]
