"""Which configured virtual addresses are in fact the box's own, and must never be removed.

An instance starts in BACKUP and removes its virtual addresses wherever it
finds them: an agent killed with -9 (or a keepalived before it) leaves its VIPs
on the interface, and a backup that kept one would answer for the master's
address.  But if the config names one of the box's own addresses as a VIP, that
removal deletes a host address, and when it is the primary of its subnet the
kernel deletes every secondary of that subnet with it (promote_secondaries off).

The kernel does not record who added an address, so the rule uses what it
does record, the order of addresses in a subnet (the first is the primary,
later ones are flagged secondary), and the agent's own source address.  A
configured VIP found on its interface is the box's own when:

1. it is the address VRRP sends from (``unicast_src``, or the interface's
   first address that is not a VIP): the agent could not advertise without it;
2. it is the primary of its subnet there, and a secondary of that subnet is
   an address the config does not name as a VIP: it was on the interface
   before that address, which an agent adding its VIP never is (a VIP joins a
   subnet the box has as a secondary, or stands alone in a subnet of its own),
   and removing it would delete that address too.

Anything else equal to a VIP is taken for a leftover and removed.  The limit:
an address alone in its subnet (a /32, or the only address of a subnet) looks
exactly like a VIP left there, and is taken for one; when it is the VRRP
interface's only address, the start fails anyway (VRRP has nothing to send
from).  The check runs at start, before anything changes (``lvsagent run``
exits 78), in ``lvsagent check`` on a host that has the interface, and for the
new VIPs of a reload.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lvsagent.config.errors import Problem
from lvsagent.config.locate import Locator
from lvsagent.config.schema import Config, VrrpInstance
from lvsagent.netlink.pyroute import AsyncIPRoute
from lvsagent.vrrp.addresses import InterfaceError, LinkInfo, read_link

Vip = ipaddress.IPv4Interface


@dataclass(frozen=True)
class OwnAddress:
    """A configured VIP that is one of the box's addresses; says why and what to do."""

    instance: str
    interface: str
    vip: Vip
    why: str

    def __str__(self) -> str:
        return (
            f"{self.instance}: virtual address {self.vip} is an address of this box on "
            f"{self.interface} ({self.why}); the agent would delete it in BACKUP. Take it out "
            f"of virtual_addresses and give the instance an address of its own (if "
            f"{self.vip.ip} is a VIP someone added by hand, `ip addr del {self.vip} dev "
            f"{self.interface}` first)"
        )


def own_addresses(
    inst: VrrpInstance,
    present: Iterable[Vip],
    secondaries: frozenset[ipaddress.IPv4Address],
    source: ipaddress.IPv4Address | None,
    vips: Iterable[Vip] | None = None,
    managed: frozenset[ipaddress.IPv4Address] | None = None,
) -> list[OwnAddress]:
    """The VIPs of ``inst`` (or ``vips``, a subset) that the rule above calls the box's own.

    ``present``: the interface's IPv4 addresses; ``secondaries``: those the kernel
    flags secondary; ``source``: the VRRP source address; ``managed``: every VIP
    configured on the interface (all instances), default those of ``inst``.
    """
    on_link = {a.ip: a for a in present}
    chosen = tuple(inst.virtual_addresses if vips is None else vips)
    ours = managed if managed is not None else frozenset(v.ip for v in inst.virtual_addresses)
    found = []
    for vip in chosen:
        have = on_link.get(vip.ip)
        if vip.ip == source:
            why = "VRRP sends from it"
        elif have is None or vip.ip in secondaries:
            continue
        else:
            dependent = sorted(
                str(a)
                for a in on_link.values()
                if a.ip in secondaries and a.ip in have.network and a.ip not in ours
            )
            if not dependent:
                continue
            why = (
                f"the primary address of {have.network}, on the interface before "
                f"{', '.join(dependent)}, which the kernel would delete with it"
            )
        found.append(OwnAddress(inst.name, inst.interface, vip, why))
    return found


def own_addresses_at_start(
    config: Config,
    instances: Iterable[tuple[VrrpInstance, LinkInfo, ipaddress.IPv4Address]],
) -> list[OwnAddress]:
    """Every instance's (instance, its link as read at start, its VRRP source) at once."""
    return [
        found
        for inst, link, source in instances
        for found in own_addresses(
            inst, link.addresses, link.secondaries, source,
            managed=managed_on(config, inst.interface),
        )
    ]  # fmt: skip


def managed_on(config: Config, ifname: str) -> frozenset[ipaddress.IPv4Address]:
    """Every VIP the config's instances put on ``ifname``."""
    return frozenset(
        v.ip for i in config.vrrp_instances if i.interface == ifname for v in i.virtual_addresses
    )


def check_problems(config: Config) -> list[Problem]:
    """For ``lvsagent check``: the rule on this host, for the interfaces it has.

    ``check`` may run on another machine than the one the config is for; an
    interface this host does not have is not a problem it can judge, so it is
    skipped.  The VRRP source is taken as ``run`` takes it.
    """

    async def read() -> list[tuple[int, OwnAddress]]:
        out = []
        async with AsyncIPRoute() as ipr:
            for n, inst in enumerate(config.vrrp_instances):
                try:
                    link = await read_link(ipr, inst.interface)
                except InterfaceError:
                    continue  # not on this host
                vips = {v.ip for v in inst.virtual_addresses}
                own = [a.ip for a in link.addresses if a.ip not in vips]
                source = inst.unicast_src or (own[0] if own else None)
                managed = managed_on(config, inst.interface)
                found_own = own_addresses(
                    inst, link.addresses, link.secondaries, source, managed=managed
                )
                out += [(n, o) for o in found_own]
        return out

    try:
        found = asyncio.run(read())
    except OSError:
        return []  # cannot read this host's interfaces: nothing it can judge
    try:
        locator: Locator | None = Locator(Path(config.path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        locator = None
    problems = []
    for n, own in found:
        k = config.vrrp_instances[n].virtual_addresses.index(own.vip)
        key = f"vrrp_instance[{n}].virtual_addresses[{k}]"
        line = locator.line_of(key) if locator is not None else None
        problems.append(Problem(config.path, line, key, str(own)))
    return problems
