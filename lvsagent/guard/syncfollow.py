"""The IPVS sync daemons follow the loop guard's role in a task of their own.

A transition's action list must never wait for them: the kernel's answer to a
daemon request can go missing, and ipvs/kernel.py then waits DAEMON_REPLY_TIMEOUT
(2 s) before it reads the running daemons back.  Awaited inside the action list,
that held a VRRP instance mid-transition for 2 s.  So the guard's step applies its
nft table (the part that stops the loop) and only *asks* for the daemon role; this
task switches the daemons behind it.  Meanwhile the nft redirect of the peer's
forwards breaks the loop (backup_only mode) and a late backup daemon only delays
connection sync.

A switch starts the new role's daemon first and stops the old one SYNC_LINGER
later.  IPVS sends a partly filled sync buffer only once it is 2 s old (checked
every second), and a stopped master daemon drops what it had not sent: stopped at
once, the connections this box opened in its last 2-3 s as master reached the peer
never, and were reset after the VIP moved.  The lingering backup daemon likewise
takes those last entries from the peer's lingering master.  Both roles at once are
what the kernel allows; backup_only holds with the backup daemon running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from lvsagent.ipvs.genl import SyncState

log = logging.getLogger("lvsagent.guard")

# How long the old role's daemon runs on after a switch (see above).
SYNC_LINGER = 3.0


class SyncDaemons(Protocol):
    """The kernel surface the follower drives (ipvs/kernel.py's IpvsKernel)."""

    async def start_sync_daemon(self, state: SyncState, ifname: str, syncid: int) -> bool: ...

    async def stop_sync_daemon(self, state: SyncState) -> bool: ...

    def close(self) -> None: ...


def ipvs_sync_daemons() -> SyncDaemons:
    from lvsagent.ipvs.kernel import IpvsKernel  # its netlink socket only when a daemon runs

    return IpvsKernel()


class SyncFollower:
    """Backup daemon while the guard is engaged, master while released.

    ``want()`` never blocks; ``settle()`` waits until the last wish is carried out
    (start-up and stop, where nothing else is waiting).  A repeated wish re-applies
    it, which is how the guard's periodic check repairs `ipvsadm --stop-daemon`.
    """

    def __init__(
        self,
        ifname: str,
        syncid: int,
        daemons: Callable[[], SyncDaemons] = ipvs_sync_daemons,
        linger: float = SYNC_LINGER,
        switched: Callable[[], None] = lambda: None,
    ) -> None:
        self.ifname = ifname
        self.linger = linger
        self._switched = switched  # told when a switch has ended, failed or not
        self.syncid = syncid
        self._make = daemons
        self._daemons: SyncDaemons | None = None
        self.wanted: bool | None = None  # engaged?
        self.applied: bool | None = None  # the last role that was switched to without error
        self._pending = False
        self._task: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        """A switch is under way (the old role's daemon may still linger)."""
        return self._task is not None and not self._task.done()

    @property
    def role(self) -> SyncState | None:
        """The daemon that runs now, as far as the follower knows."""
        return None if self.applied is None else ("backup" if self.applied else "master")

    def want(self, engaged: bool) -> None:
        self.wanted = engaged
        self._pending = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._follow(), name="ipvs-sync-daemons"
            )
            self._task.add_done_callback(_log_failure)

    async def settle(self) -> None:
        """Wait for the daemons to follow the last wish (errors are logged, not raised)."""
        task = self._task
        if task is not None and not task.done():
            await asyncio.shield(task)

    async def _follow(self) -> None:
        while self._pending:
            self._pending = False
            engaged = self.wanted
            if engaged is not None:
                await self._switch(engaged)

    async def _switch(self, engaged: bool) -> None:
        daemons = self._kernel()
        stop: SyncState = "master" if engaged else "backup"
        start: SyncState = "backup" if engaged else "master"
        try:
            if await daemons.start_sync_daemon(start, self.ifname, self.syncid):
                log.info(
                    "loop guard: %s sync daemon started on %s (syncid %d)",
                    start, self.ifname, self.syncid,
                )  # fmt: skip
            if self.applied is not None and self.applied != engaged and self.linger > 0:
                await asyncio.sleep(self.linger)  # the old role's last entries go across
                if self._pending and self.wanted != engaged:
                    return  # the role changed back meanwhile: the next switch decides
            if await daemons.stop_sync_daemon(stop):
                log.info("loop guard: %s sync daemon stopped", stop)
        except OSError as exc:
            log.error(
                "loop guard: cannot switch the IPVS sync daemon to %s on %s: %s; retried at "
                "the next check (see `ipvsadm -L --daemon`)",
                start, self.ifname, exc,
            )  # fmt: skip
        else:
            self.applied = engaged
        self._switched()

    def _kernel(self) -> SyncDaemons:
        """The daemons' adapter, made at the first switch (a netlink socket only then)."""
        if self._daemons is None:
            self._daemons = self._make()
        return self._daemons

    async def stop_all(self) -> None:
        """Decommission: neither daemon runs afterwards (the follower's wish is dropped)."""
        await self.settle()  # a switch under way ends first: it must not start one after this
        daemons = self._kernel()
        states: tuple[SyncState, ...] = ("master", "backup")
        for state in states:
            await daemons.stop_sync_daemon(state)
        self.applied = None

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._daemons is not None:
            self._daemons.close()
            self._daemons = None


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("loop guard: the sync daemon task failed: %r; the next check retries", exc)
