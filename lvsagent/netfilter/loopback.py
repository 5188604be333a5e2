"""The VIPs as /32 on ``lo``, which the fwmark loop guard needs on both boxes.

Why: with fwmark marking (the first of the design's schemes) the master forwards
unmarked packets (its own balancing, direct routing) to the backup with the VIP as destination.  The
backup must accept them as local, without answering ARP for the VIP (the sysctls
in sysctl.py), so the VIP sits on ``lo``; the master holds it there too, beside
the VRRP copy on its interface, so that both boxes look the same and a
takeover changes nothing on ``lo``.

Reconciled like the VRRP addresses (vrrp/addresses.py, whose reconcile this
reuses): adding a present VIP or removing an absent one is a no-op (EEXIST and
EADDRNOTAVAIL mean converged), and addresses lvsagent does not manage, such
as 127.0.0.1, are never touched.

Two entry points.  ``reconcile_lo_vips`` is synchronous and safe inside the
daemon's event loop: pyroute2 0.9.7's synchronous IPRoute refuses to run there
("This event loop is already running"), so the work runs on AsyncIPRoute in a
helper thread with its own loop (a thread starts in its creator's network
namespace).  It blocks for a few milliseconds and is called only at start,
reload and decommission.  ``reconcile_lo_vips_async`` takes the caller's
AsyncIPRoute instead.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from lvsagent.netlink.pyroute import AsyncIPRoute
from lvsagent.vrrp.addresses import InterfaceError, reconcile_addresses

log = logging.getLogger("lvsagent.netfilter")

LOOPBACK = "lo"


def _host_routes(vips: Iterable[ipaddress.IPv4Address]) -> frozenset[ipaddress.IPv4Interface]:
    out = set()
    for vip in vips:
        if not isinstance(vip, ipaddress.IPv4Address):
            raise ValueError(f"VIP {vip!r} is not an IPv4 address")
        out.add(ipaddress.IPv4Interface(f"{vip}/32"))
    return frozenset(out)


async def _lo_index(ipr: AsyncIPRoute) -> int:
    found = await ipr.link_lookup(ifname=LOOPBACK)
    if not found:
        raise InterfaceError("this network namespace has no lo interface")
    return int(found[0])


async def reconcile_lo_vips_async(
    ipr: AsyncIPRoute,
    vips: Iterable[ipaddress.IPv4Address],
    managed: Iterable[ipaddress.IPv4Address] = (),
) -> bool:
    """Make the VIPs on ``lo`` equal ``vips``; True if anything changed.

    ``managed`` names VIPs lvsagent put there before (a reload that dropped a
    service): those not in ``vips`` are removed.  Everything else on lo stays.
    """
    desired = _host_routes(vips)
    index = await _lo_index(ipr)
    added, removed = await reconcile_addresses(ipr, index, desired, desired | _host_routes(managed))
    for iface in added:
        log.info(
            "VIP %s added on lo (loop guard fwmark: this box accepts the peer's forwards)",
            iface.ip, extra={"journal": {"LVSAGENT_EVENT": "loop_guard_lo",
                                         "LVSAGENT_VIP": str(iface.ip)}},
        )  # fmt: skip
    for iface in removed:
        log.info(
            "VIP %s removed from lo", iface.ip,
            extra={"journal": {"LVSAGENT_EVENT": "loop_guard_lo", "LVSAGENT_VIP": str(iface.ip)}},
        )  # fmt: skip
    return bool(added or removed)


def reconcile_lo_vips(
    vips: Iterable[ipaddress.IPv4Address], managed: Iterable[ipaddress.IPv4Address] = ()
) -> bool:
    """Synchronous :func:`reconcile_lo_vips_async` on a private netlink socket."""
    want, old = tuple(vips), tuple(managed)
    _host_routes((*want, *old))  # validate here, in the caller's thread

    async def run() -> bool:
        async with AsyncIPRoute() as ipr:
            return await reconcile_lo_vips_async(ipr, want, old)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lvsagent-lo") as pool:
        return pool.submit(asyncio.run, run()).result()


def remove_lo_vips(vips: Iterable[ipaddress.IPv4Address]) -> bool:
    """Decommission: take the VIPs off ``lo``; True if any was there."""
    return reconcile_lo_vips((), managed=vips)
