"""The VRRP instances' interfaces, as the VRRP loop holds them: netlink sockets and macvlans.

Everything here runs on the VRRP loop (daemon/vrrploop.py), because each
instance's rtnetlink socket is used by its runner there: pyroute2's asyncio
sockets belong to the loop they were opened on.
"""

from __future__ import annotations

import contextlib
import logging

from lvsagent.config.schema import Config, VrrpInstance
from lvsagent.netlink.pyroute import AsyncIPRoute
from lvsagent.vrrp import addresses
from lvsagent.vrrp.vmac import Vmac

log = logging.getLogger("lvsagent")

# An instance's interface as read at start: (instance, link, its netlink socket, vmac).
ReadLink = tuple[VrrpInstance, addresses.LinkInfo, AsyncIPRoute, addresses.LinkInfo | None]


class InstanceLinks:
    """Each instance's netlink socket and interface; use_vmac's macvlans, made and removed."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._sockets = contextlib.AsyncExitStack()
        self._vmacs: list[tuple[Vmac, AsyncIPRoute]] = []  # removed at the stop

    async def open(self) -> list[ReadLink]:
        """Each instance's interface read (InterfaceError if one is missing), its macvlan made."""
        read: list[ReadLink] = []
        for inst in self.config.vrrp_instances:
            # One rtnetlink socket per instance: the kernel runs one dump at a time
            # on a socket (EBUSY for a second), and instances read their addresses
            # at the same moments; a lock on a shared one would make each wait.
            ipr = await self._sockets.enter_async_context(AsyncIPRoute())
            link = await addresses.read_link(ipr, inst.interface)
            held = None
            if inst.use_vmac:
                vmac = Vmac(inst.interface, inst.vmac_name, inst.vrid)
                self._vmacs.append((vmac, ipr))
                held = await vmac.ensure(ipr, link.index)
            read.append((inst, link, ipr, held))
        return read

    async def remove_vmacs(self) -> None:
        """use_vmac's interfaces go at a stop, as keepalived's do; the parents' sysctls back."""
        for vmac, ipr in self._vmacs:
            try:
                await vmac.remove(ipr)
            except OSError as exc:
                log.error("stopping: cannot remove %s: %s; remove it by hand (ip link del %s)",
                          vmac.name, exc, vmac.name)  # fmt: skip
        self._vmacs.clear()

    async def close(self) -> None:
        await self._sockets.aclose()
