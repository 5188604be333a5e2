"""The RFC's virtual MAC (keepalived's use_vmac): a macvlan interface per instance.

RFC 5798 7.3: the virtual router's MAC is 00-00-5E-00-01-{VRID}, and the master
sends its adverts and answers ARP for the virtual addresses with it.  Switches
and neighbours then never have to learn a new MAC at a takeover: the address
stays where it was, only the port moves.  keepalived does it the same way: a
macvlan interface (``vrrp.VRID`` by default, mode private) on the VRRP
interface, with that MAC, holds the VIPs; adverts and gratuitous ARP leave
from it; adverts are still received on the parent, which sees the peer's
(a macvlan would take a frame from its own MAC for its own echo).

Both boxes have the interface, up; only the master holds addresses on it, so
only the master's answers ARP.  Three sysctls make that so:

* parent ``arp_ignore = 1``: the parent answers ARP only for its own addresses,
  never for a VIP on the macvlan (with the default 0 it would, with its own MAC);
* parent ``arp_filter = 1``: nor from the wrong interface;
* macvlan ``disable_ipv6 = 1``: no link-local address, hence no IPv6 traffic
  (DAD, router solicitations) from a MAC that both boxes share.

The parent's values are saved before the first write and restored when the
interface is removed at a stop.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass, field

from lvsagent.netlink.pyroute import AsyncIPRoute, NetlinkError, os_errors
from lvsagent.vrrp import addresses

__all__ = ["Vmac", "vmac_address"]

log = logging.getLogger("lvsagent.vrrp")

PROC = "/proc/sys/net"
PARENT_SYSCTLS = {"arp_ignore": "1", "arp_filter": "1"}


def vmac_address(vrid: int) -> str:
    """RFC 5798 7.3's virtual router MAC for ``vrid`` (IPv4)."""
    if not 1 <= vrid <= 255:
        raise ValueError(f"VRID {vrid} is not 1..255")
    return f"00:00:5e:00:01:{vrid:02x}"


def _conf(family: str, ifname: str, key: str) -> str:
    return os.path.join(PROC, family, "conf", ifname, key)


@dataclass
class Vmac:
    """One instance's macvlan: made (or adopted) by ``ensure``, removed by ``remove``."""

    parent: str
    name: str
    vrid: int
    saved: dict[str, str] = field(default_factory=dict)  # the parent's sysctls before us

    @property
    def mac(self) -> str:
        return vmac_address(self.vrid)

    async def ensure(self, ipr: AsyncIPRoute, parent_index: int) -> addresses.LinkInfo:
        """The interface, up, with the virtual MAC, on ``parent``; the sysctls set.

        One left by a killed predecessor is adopted if it is what we would make;
        a link of that name that is something else is an error naming it.
        """
        with os_errors():
            found = await ipr.link_lookup(ifname=self.name)
            if found:
                (info,) = await ipr.link("get", index=found[0])
                mac = info.get("IFLA_ADDRESS")
                kind = info.get(("IFLA_LINKINFO", "IFLA_INFO_KIND"))
                if mac != self.mac or kind != "macvlan" or info.get("IFLA_LINK") != parent_index:
                    raise addresses.InterfaceError(
                        f"{self.name} exists but is not the macvlan of {self.parent} with MAC "
                        f"{self.mac} that use_vmac needs (it is {kind or 'a link'} with {mac}): "
                        f"remove it (ip link del {self.name}) or set vmac_interface"
                    )
            else:
                try:
                    await ipr.link(
                        "add", ifname=self.name, kind="macvlan", link=parent_index,
                        macvlan_mode="private", address=self.mac,
                    )  # fmt: skip
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:
                        raise
                log.info("%s: made %s (macvlan, MAC %s) for VRID %d's addresses",
                         self.parent, self.name, self.mac, self.vrid)  # fmt: skip
            self._sysctls()
            index = (await ipr.link_lookup(ifname=self.name))[0]
            await ipr.link("set", index=index, state="up")
        return await addresses.read_link(ipr, self.name)

    def _sysctls(self) -> None:
        for key, value in PARENT_SYSCTLS.items():
            path = _conf("ipv4", self.parent, key)
            with open(path) as file:
                old = file.read().strip()
            self.saved.setdefault(key, old)
            if old != value:
                with open(path, "w") as file:
                    file.write(value)
        try:
            with open(_conf("ipv6", self.name, "disable_ipv6"), "w") as file:
                file.write("1")
        except FileNotFoundError:
            pass  # a kernel without IPv6: nothing to keep quiet

    async def remove(self, ipr: AsyncIPRoute) -> None:
        """The interface and its addresses go; the parent's sysctls are as they were."""
        with os_errors():
            found = await ipr.link_lookup(ifname=self.name)
            if found:
                try:
                    await ipr.link("del", index=found[0])
                except NetlinkError as exc:
                    if exc.code != errno.ENODEV:
                        raise
        for key, value in self.saved.items():
            try:
                with open(_conf("ipv4", self.parent, key), "w") as file:
                    file.write(value)
            except OSError as exc:
                log.error("%s: cannot restore %s = %s: %s", self.parent, key, value, exc)
        log.info("%s: removed %s", self.parent, self.name)
