"""Virtual addresses on an interface, reconciled through pyroute2.

Desired state in, kernel read, difference applied: adding twice or removing
an absent address is a no-op, and a VIP someone deleted by hand comes back on
the next reconcile.  EEXIST and EADDRNOTAVAIL mean "already converged".  Any
other refusal is raised as OSError (never as pyroute2's own exception type).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections.abc import Sequence
from fcntl import ioctl

from lvsagent.netlink.pyroute import AsyncIPRoute, NetlinkError, os_errors

# Their home is link.py (pure); callers that do I/O import them from here as well.
from lvsagent.vrrp.link import InterfaceError as InterfaceError
from lvsagent.vrrp.link import LinkInfo as LinkInfo

SIOCGIFFLAGS = 0x8913
IFF_UP = 0x1
IFF_RUNNING = 0x40
_CONVERGED = {errno.EEXIST, errno.EADDRNOTAVAIL, errno.ENOENT, errno.ESRCH}


IFA_F_SECONDARY = 0x01


async def read_link(ipr: AsyncIPRoute, ifname: str) -> LinkInfo:
    with os_errors():
        found = await ipr.link_lookup(ifname=ifname)
        if not found:
            raise InterfaceError(
                f"interface {ifname} does not exist: fix `interface` in the config"
            )
        index = found[0]
        links = await ipr.link("get", index=index)
    mac = links[0].get("IFLA_ADDRESS") or "00:00:00:00:00:00"
    found = await _dump(ipr, index)
    secondaries = frozenset(a.ip for a, secondary in found if secondary)
    return LinkInfo(ifname, index, mac, tuple(a for a, _ in found), secondaries)


async def read_addresses(ipr: AsyncIPRoute, index: int) -> tuple[ipaddress.IPv4Interface, ...]:
    return tuple(a for a, _ in await _dump(ipr, index))


async def _dump(ipr: AsyncIPRoute, index: int) -> list[tuple[ipaddress.IPv4Interface, bool]]:
    """The link's IPv4 addresses in the kernel's order, each with its secondary flag."""
    found = []
    with os_errors():
        async for msg in await ipr.addr("dump", index=index, family=socket.AF_INET):
            iface = ipaddress.IPv4Interface(f"{msg.get('IFA_ADDRESS')}/{msg['prefixlen']}")
            found.append((iface, bool(msg["flags"] & IFA_F_SECONDARY)))
    return found


Interfaces = list[ipaddress.IPv4Interface]


def address_changes(
    present: Sequence[ipaddress.IPv4Interface],
    desired: frozenset[ipaddress.IPv4Interface],
    managed: frozenset[ipaddress.IPv4Interface],
) -> tuple[Interfaces, Interfaces]:
    """(to add, to remove) so that the ``managed`` addresses on a link equal ``desired``.

    Addresses we do not manage (the box's own) are never touched.  A managed
    address present with another prefix length counts as present: the IP is
    what clients reach.
    """
    actual = {a.ip: a for a in present}
    managed_ips = {a.ip for a in managed}
    desired_ips = {a.ip for a in desired}
    add = [want for want in sorted(desired) if want.ip not in actual]
    remove = [
        have for ip, have in sorted(actual.items()) if ip in managed_ips and ip not in desired_ips
    ]
    return add, remove


async def reconcile_addresses(
    ipr: AsyncIPRoute,
    index: int,
    desired: frozenset[ipaddress.IPv4Interface],
    managed: frozenset[ipaddress.IPv4Interface],
    present: Sequence[ipaddress.IPv4Interface] | None = None,
) -> tuple[Interfaces, Interfaces]:
    """Make the ``managed`` addresses on the link equal ``desired`` (address_changes);
    return (added, removed).  ``present``: the link's addresses, if the caller just read them.
    """
    if present is None:
        present = await read_addresses(ipr, index)
    add, remove = address_changes(present, desired, managed)
    for want in add:
        await _call(ipr, "add", index, want)
    for have in remove:
        await _call(ipr, "del", index, have)
    return add, remove


async def _call(ipr: AsyncIPRoute, cmd: str, index: int, iface: ipaddress.IPv4Interface) -> None:
    with os_errors():
        try:
            await ipr.addr(
                cmd, index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen
            )
        except NetlinkError as exc:
            if exc.code not in _CONVERGED:
                raise


def link_is_up(ifname: str) -> bool | None:
    """Administratively up and with carrier, from SIOCGIFFLAGS (no sysfs needed in a netns).

    None when no interface has that name (ENODEV), so that it can be reported as missing.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            res = ioctl(s.fileno(), SIOCGIFFLAGS, struct.pack("16sH14x", ifname.encode()[:15], 0))
        except OSError as exc:
            return None if exc.errno == errno.ENODEV else False
    (flags,) = struct.unpack("16sH14x", res)[1:]
    return bool(flags & IFF_UP) and bool(flags & IFF_RUNNING)


class LinkEvents:
    """A socket that becomes readable whenever any link changes (RTMGRP_LINK).

    We only need to know *that* something changed; the tracked interfaces are
    then re-read with :func:`link_is_up`, which keeps this free of parsing.
    """

    RTMGRP_LINK = 1

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, self.RTMGRP_LINK))
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> None:
        while True:
            try:
                self.sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ENOBUFS: we lost some, which is fine: we re-read everything
                continue

    def close(self) -> None:
        self.sock.close()
