"""What a stop does besides releasing the VIPs: a master's handoff first, a
decommission's removal of the services last.

A planned stop of a master hands its connections over before the VIP moves.

Why: the new master learns the old one's connections from the IPVS sync daemons,
and the kernel sends a partly filled sync buffer only once it is 2 s old (checked
every second).  A connection the old master had given to its own real server in
its last 2-3 s was unknown to the new master when the VIP moved: the client's next
packet was delivered locally there, where no socket had it, and reset.  A
connection given to the peer's real server does not care: it lives on the peer
box, which now receives its packets directly.

So a master that is asked to stop, with the sync daemons on, first quiesces its
own real servers (weight 0: new connections go to the peer's server), lets one
sync round (HANDOFF) carry the rest of its connections across, and only then
releases the VIP; its weights are put back before it exits, so the table it leaves
is the configured one.  A service whose only server taking connections is this
box's keeps it: a quiesced last server would turn every new client away for the
handoff's seconds.  keepalived has no such step; its stop costs those connections.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Collection

from lvsagent.config.schema import Config
from lvsagent.guard.driver import LoopGuard
from lvsagent.guard.syncfollow import SYNC_LINGER
from lvsagent.ipvs.desired import DestId, desired_table
from lvsagent.ipvs.kernel import IpvsKernel
from lvsagent.ipvs.model import Table
from lvsagent.ipvs.plan import DelService
from lvsagent.ipvs.reconciler import IpvsReconciler

log = logging.getLogger("lvsagent")

# One sync round (the kernel's 2 s buffer age, checked every second): the same wait as an
# old role's daemon lingers after a switch, for the same reason.
HANDOFF = SYNC_LINGER


def own_quiesced(table: Table, own: Collection[ipaddress.IPv4Address]) -> dict[DestId, int]:
    """Weight 0 for each of this box's real servers (an address in ``own``) that takes
    connections, in every service where a server of another box takes them too."""
    quiet: dict[DestId, int] = {}
    for service in table.services:
        mine = [d for d in service.dests if d.key.address in own and d.weight > 0]
        others = [d for d in service.dests if d.key.address not in own and d.weight > 0]
        if mine and others:
            quiet.update({(service.key, d.key): 0 for d in mine})
    return quiet


class Handoff:
    """The stop's first step for a master; ``quiesced`` is laid over every other weight."""

    def __init__(self, wait: float = HANDOFF) -> None:
        self.wait = wait
        self.quiesced: dict[DestId, int] = {}
        self.task: asyncio.Task[None] | None = None

    def start(
        self,
        rec: IpvsReconciler | None,
        guard: LoopGuard | None,
        own: Collection[ipaddress.IPv4Address],
        desired: Callable[[], Table],
        release: Callable[[], None],
    ) -> bool:
        """Quiesce and call ``release`` ``wait`` s later; False (nothing done) unless this
        box is master with the sync daemons on and has servers to quiesce."""
        if rec is None or not rec.up or guard is None or not guard.sync_on:
            return False
        if guard.engaged is not False:  # not master (None: no transition yet)
            return False
        self.quiesced = own_quiesced(rec.desired, own)
        if not self.quiesced:
            return False
        rec.set_desired(desired(), "stopping: handoff")
        log.info("stopping: %d real server(s) of this box quiesced; the VIPs move in %.0f s, "
                 "once the sync daemon has sent their connections to the peer",
                 len(self.quiesced), self.wait)  # fmt: skip

        async def later() -> None:
            try:
                await asyncio.sleep(self.wait)
            finally:
                release()

        self.task = asyncio.get_running_loop().create_task(later(), name="handoff")
        return True

    async def released(self) -> None:
        """Until the VIPs are released (at once when there was no handoff)."""
        if self.task is not None:
            await asyncio.wait([self.task], timeout=self.wait + 1.0)

    async def end(self, rec: IpvsReconciler | None, desired: Callable[[], Table]) -> None:
        """The weights back once the reconciler's task has ended, so that the table left
        behind is the configured one."""
        self.quiesced = {}
        if rec is not None and self.task is not None:
            rec.set_desired(desired(), "stopping: handoff over")
            await rec.reconcile("stopping: handoff over", fresh=False)


async def remove_services(kernel: IpvsKernel, config: Config) -> None:
    """Decommission: the services this config owns go, with their connections."""
    ops = [DelService(service.key) for service in desired_table(config).services]
    try:
        results = await kernel.apply_many(ops)
    except OSError as exc:
        log.error("decommission: cannot remove the IPVS services: %s", exc)
        return
    failed = [r for r in results if isinstance(r, OSError)]
    for error in failed:
        log.error("decommission: %s", error)
    log.info("decommission: %d IPVS service(s) removed", len(ops) - len(failed))
