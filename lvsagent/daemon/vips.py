"""One VRRP instance's virtual addresses on its interface.

Two ways to the same end, on purpose.  A transition uses the pre-built
requests of vrrp/fastaddr.py: a takeover counts until the VIP is there, and
pyroute2 costs half a millisecond of Python per request.  Everything else
(the read-back right after a transition, the periodic repair of drift such as
an `ip addr del` by hand, a reload that changes the set) reads the link's
addresses and applies the difference, through vrrp/addresses.py.
"""

from __future__ import annotations

import ipaddress
import logging

from lvsagent.config.schema import VrrpInstance
from lvsagent.netlink.pyroute import AsyncIPRoute
from lvsagent.vrrp import addresses
from lvsagent.vrrp.fastaddr import AddressFastPath
from lvsagent.vrrp.ownaddr import own_addresses

log = logging.getLogger("lvsagent.vrrp")

Vips = frozenset[ipaddress.IPv4Interface]


class VirtualAddresses:
    """``source``: the address VRRP sends from, never managed here (never removed)."""

    def __init__(
        self,
        tag: str,
        ifname: str,
        index: int,
        ipr: AsyncIPRoute,
        vips: Vips,
        source: ipaddress.IPv4Address,
    ) -> None:
        self.tag, self.ifname, self.index, self.ipr = tag, ifname, index, ipr
        self.source = source
        self.vips = self._managed(vips)
        self.fast = AddressFastPath(index, self.vips)

    def _managed(self, vips: Vips) -> Vips:
        """The VIPs but the VRRP source: without it the agent could not advertise at all.

        The start refuses such a config (vrrp/ownaddr.py); this holds the line for any
        later path (a reload) whatever the config says.
        """
        kept = frozenset(v for v in vips if v.ip != self.source)
        for vip in vips - kept:
            log.error(
                "%s: virtual address %s is the address VRRP sends from on %s: not managing "
                "it (never removed); take it out of virtual_addresses",
                self.tag,
                vip,
                self.ifname,
            )
        return kept

    async def transition(self, add: bool) -> None:
        """All of them added (MASTER) or removed, at once; the caller reconciles after."""
        try:
            changed = await self.fast.apply(add)
        except OSError as exc:
            log.error(
                "%s: cannot %s virtual addresses on %s: %s; will retry",
                self.tag,
                "add" if add else "remove",
                self.ifname,
                exc,
            )
            return
        for vip in changed:
            log.info("%s: %s virtual address %s", self.tag, "added" if add else "removed", vip)

    async def reconcile(self, master: bool, also_remove: Vips = frozenset()) -> None:
        """Present in MASTER, absent otherwise; ``also_remove``: VIPs no longer ours."""
        desired = self.vips if master else frozenset()
        try:
            present = [a for a, _ in await self.fast.dump()]  # this link's only
            added, removed = await addresses.reconcile_addresses(
                self.ipr, self.index, desired, self.vips | also_remove, present
            )
        except OSError as exc:  # the adapters raise pyroute2's refusals as OSError
            log.error(
                "%s: cannot update virtual addresses on %s: %s; will retry",
                self.tag,
                self.ifname,
                exc,
            )
            return
        for a in added:
            log.info("%s: added virtual address %s", self.tag, a)
        for a in removed:
            log.info("%s: removed virtual address %s", self.tag, a)

    async def replace(self, inst: VrrpInstance, master: bool) -> bool:
        """A reload's new set, applied now; True if it differed (a master then announces it).

        A new VIP that is one of the box's own addresses (vrrp/ownaddr.py) is refused:
        logged, and left alone.
        """
        vips = self._managed(frozenset(inst.virtual_addresses))
        new = vips - self.vips
        if new:
            try:
                link = await addresses.read_link(self.ipr, self.ifname)
            except (OSError, addresses.InterfaceError) as exc:
                log.error(
                    "%s: cannot read %s to check the new virtual addresses: %s; "
                    "not adding %s this time (reload again)",
                    self.tag, self.ifname, exc, ", ".join(map(str, sorted(new))),
                )  # fmt: skip
                vips -= new
            else:
                for own in own_addresses(inst, link.addresses, link.secondaries, self.source, new):
                    log.error("reload: %s; not managing it", own)
                    vips -= {own.vip}
        if vips == self.vips:
            return False
        gone, self.vips = self.vips - vips, vips
        self.fast.close()
        self.fast = AddressFastPath(self.index, vips)
        await self.reconcile(master, also_remove=gone)
        return True

    def close(self) -> None:
        self.fast.close()
