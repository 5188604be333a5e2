"""The VIPs as /32 on ``lo``, which the fwmark loop guard needs on both boxes.

Why: with fwmark marking (the first of the design's schemes) the master forwards
unmarked packets (its own balancing, direct routing) to the backup with the VIP as destination.  The
backup must accept them as local, without answering ARP for the VIP (the sysctls
in sysctl.py), so the VIP sits on ``lo``; the master holds it there too, beside
the VRRP copy on its interface, so that both boxes look the same and a
takeover changes nothing on ``lo``.

Reconciled like the VRRP addresses (vrrp/addresses.py, whose address_changes
this reuses): adding a present VIP or removing an absent one is a no-op (EEXIST and
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
from lvsagent.vrrp.addresses import InterfaceError, address_changes
from lvsagent.vrrp.fastaddr import AddressFastPath

log = logging.getLogger("lvsagent.netfilter")

LOOPBACK = "lo"
LOG_EACH = 10  # more VIPs than this added or removed at once: one log line


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
    A VIP per virtual service is a thousand at scale: they are read, added and
    removed as hand-built requests a window at a time (vrrp/fastaddr.py), which
    took a cold start in the lab from about 3 s of pyroute2 requests to a few
    hundred ms, and more than LOG_EACH of them are logged as one line.
    """
    desired = _host_routes(vips)
    index = await _lo_index(ipr)
    probe = AddressFastPath(index, frozenset())
    try:
        present = [a for a, _ in await probe.dump()]
    finally:
        probe.close()
    add, remove = address_changes(present, desired, desired | _host_routes(managed))
    added = await _apply(index, add, True)
    removed = await _apply(index, remove, False)
    _log(added, "added on lo (loop guard fwmark: this box accepts the peer's forwards)")
    _log(removed, "removed from lo")
    return bool(added or removed)


async def _apply(
    index: int, ifaces: list[ipaddress.IPv4Interface], add: bool
) -> list[ipaddress.IPv4Interface]:
    if not ifaces:
        return []
    fast = AddressFastPath(index, frozenset(ifaces))
    try:
        return await fast.apply(add)
    finally:
        fast.close()


def _log(ifaces: list[ipaddress.IPv4Interface], what: str) -> None:
    if len(ifaces) > LOG_EACH:
        shown = f"{ifaces[0].ip} ... {ifaces[-1].ip}"
        log.info("%d VIPs %s: %s", len(ifaces), what, shown,
                 extra={"journal": {"LVSAGENT_EVENT": "loop_guard_lo",
                                    "LVSAGENT_VIPS": str(len(ifaces))}})  # fmt: skip
        return
    for iface in ifaces:
        log.info("VIP %s %s", iface.ip, what,
                 extra={"journal": {"LVSAGENT_EVENT": "loop_guard_lo",
                                    "LVSAGENT_VIP": str(iface.ip)}})  # fmt: skip


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
