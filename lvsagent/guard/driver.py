"""The loop guard as the daemon drives it: one object, called in order from the VRRP task.

The two-box design loops when the backup's IPVS balances again what the master
already balanced to it.  Which kernel state prevents that depends on the mode
(see README, "Loop guard"):

- bypass: an nft redirect of each service's new connections to the local real
  server, in force while BACKUP, FAULT or stopped;
- fwmark: permanent nft marking of client packets (not the peer's) and IPVS
  services built on the mark; nothing toggles;
- backup_only: the sysctl, with the IPVS sync daemons following the state.

Every mode keeps the VIPs on lo and has the sync daemons follow the role.
``set(engaged)`` is awaited inside the instance's action list (before the VIP
goes, after it comes), never an asynchronous script racing the addresses.  Only
the nft apply is on that path: the sync daemons follow in a task of their own
(guard/syncfollow.py).  Everything is reconciled: the nft table is compared with
the kernel's before anything is sent, and ``check()`` repairs drift on a timer.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lvsagent import memory
from lvsagent.config.schema import Config, VrrpInstance
from lvsagent.daemon.derive import guarded_instances
from lvsagent.guard.desired import (
    GuardState,
    check_targets,
    desired_guard_state,
    guard_spec,
    guard_vips,
)
from lvsagent.guard.peer import neighbour_mac
from lvsagent.guard.syncfollow import SYNC_LINGER, SyncDaemons, SyncFollower, ipvs_sync_daemons
from lvsagent.netfilter import loopback, sysctl
from lvsagent.netfilter.nft import NftGuard
from lvsagent.netfilter.notrack import Untracked
from lvsagent.netfilter.ruleset import GuardSpec
from lvsagent.netfilter.spec import BACKUP_ONLY, CheckTarget, desired_sysctls
from lvsagent.netlink.pyroute import AsyncIPRoute, os_errors
from lvsagent.observe.snapshot import GuardStatus

log = logging.getLogger("lvsagent.guard")

# How often the guard's kernel state is re-read and repaired.
CHECK_INTERVAL = 5.0


@dataclass(frozen=True)
class GuardSurfaces:
    """The kernel surfaces the guard writes, each made by a factory so tests inject fakes."""

    nft: Callable[[GuardSpec], NftGuard]
    untracked: Callable[[frozenset[CheckTarget]], Untracked]
    sync_daemons: Callable[[], SyncDaemons]
    # The peer's MAC in the neighbour table (None: not there); raises OSError.
    neighbour_mac: Callable[[ipaddress.IPv4Address], Awaitable[str | None]] = neighbour_mac
    # Set what differs (sysctl.apply_sysctls: desired, saved-originals file); raises OSError.
    sysctls: Callable[[Mapping[str, str], str], object] = sysctl.apply_sysctls


def kernel_surfaces() -> GuardSurfaces:
    """libnftables and IPVS netlink, looked up when the guard is made."""
    return GuardSurfaces(NftGuard, Untracked, ipvs_sync_daemons)


class LoopGuard:
    """The guard of every service; ``inst`` is the instance the sync daemon follows.

    Services may follow several instances: each instance's state is kept, and a
    service's bypass follows its own instance's (:meth:`hook`).  The sysctl and the
    sync daemons follow ``inst`` (config/guard.py makes every service follow one
    instance when those are in use).
    """

    def __init__(
        self,
        config: Config,
        inst: VrrpInstance,
        surfaces: GuardSurfaces | None = None,
        peer_address: Callable[[], ipaddress.IPv4Address | None] = lambda: None,
        sync_linger: float = SYNC_LINGER,
    ) -> None:
        g = config.global_
        made = surfaces or kernel_surfaces()
        self._neighbour_mac = made.neighbour_mac
        self._write_sysctls = made.sysctls
        self.mode = g.loop_guard
        self.inst = inst
        # Each followed instance's state; all engaged at start (prepare).
        followed = guarded_instances(config) or (inst.name,)
        self.states: dict[str, bool] = dict.fromkeys(followed, True)
        self.state_dir = g.state_dir
        self.peer_macs: tuple[str, ...] = (g.peer_mac,) if g.peer_mac else ()
        # Configured, or seen in the neighbour table: no more learning.  MACs only
        # recalled from an old table may be a replaced box's, so learning goes on.
        self._peer_confirmed = bool(g.peer_mac)
        self.config = config
        for vs in config.virtual_servers if self.mode == "bypass" else ():
            if vs.address is None:
                log.warning(
                    "loop guard bypass: %s has no address:port to redirect, so the bypass "
                    "does not cover it; if this box is also its real server, that traffic "
                    'can loop: use loop_guard = "fwmark" or "backup_only"', vs.label,
                )  # fmt: skip
        # libnftables stays in the namespace of the thread that made the context: this one.
        self.nft = made.nft(self._spec())
        self.untracked = made.untracked(check_targets(config))
        self.vips = guard_vips(config)
        self.sync_on = config.sync_daemons_on()
        self.sync = SyncFollower(
            g.ipvs_sync_interface or inst.interface, g.ipvs_sync_id or inst.vrid,
            made.sync_daemons, sync_linger, lambda: self._role_sysctl(switched=True),
        )  # fmt: skip
        self.engaged: bool | None = None
        # The VRRP peer's address as last heard (guard/peer.py), for learning its MAC.
        self.peer_address = peer_address
        self._lock = asyncio.Lock()
        self._reloads: set[asyncio.Task[None]] = set()
        self._unapplied = False  # set() failed; check() applies self.engaged

    async def _lo_vips(
        self, vips: tuple[ipaddress.IPv4Address, ...], managed: tuple[ipaddress.IPv4Address, ...]
    ) -> None:
        """The VIPs on lo, on the loop's own netlink socket (the sync helper blocks a thread)."""
        with os_errors():  # callers catch OSError
            async with AsyncIPRoute() as ipr:
                await loopback.reconcile_lo_vips_async(ipr, vips, managed)

    def _spec(self) -> GuardSpec:
        return guard_spec(self.config, self.peer_macs, self.states)

    def desired(self) -> GuardState:
        """The whole kernel state the guard wants now (guard/desired.py)."""
        return desired_guard_state(self.config, self.inst, self.states, self.peer_macs)

    def hook(self, name: str) -> Callable[[bool, str], Awaitable[None]]:
        """The guard step of instance ``name``'s transitions (its runner's SetLoopGuard)."""

        async def step(engaged: bool, why: str) -> None:
            await self.set(engaged, why, name)

        return step

    @property
    def saved_sysctls(self) -> str:
        return f"{self.state_dir}/sysctl-saved.json"

    # ----- start, transitions, drift ------------------------------------------------

    async def prepare(self) -> None:
        """Before anything else at start: the box in the BACKUP kernel state.

        A killed agent may have left its VIP and IPVS services with no guard;
        the restarted one engages the guard before the reconciler or VRRP runs.
        """
        state = self.desired()
        self._write_sysctls(state.sysctls, self.saved_sysctls)  # logs each change itself
        if state.lo_vips:
            await self._lo_vips(state.lo_vips, ())
        await self._recall_peer_macs()
        await self._untrack()
        await self._set(engaged=True, why="startup")  # a failure here stops the start
        await self.sync.settle()  # the backup daemon runs before VRRP starts

    async def _untrack(self) -> None:
        """VRRP and the checks out of conntrack (a failure costs entries: logged), in a thread:
        libnftables reads the whole set (0.14 s at 10,000 checks) and leaves the GIL free."""
        try:
            await asyncio.to_thread(self.untracked.check)
        except OSError as exc:
            log.error(
                "cannot keep VRRP and the health checks out of conntrack: %s; they use "
                "conntrack entries until this works (retried every %.0f s)",
                exc, CHECK_INTERVAL,
            )  # fmt: skip

    async def _recall_peer_macs(self) -> None:
        """The peer's MAC before the first write, so that a restart keeps its redirect.

        A killed agent's table still redirects what the peer sends; written without
        the MAC, the restarted agent's first table would drop that until the MAC is
        learned again.  The neighbour table usually still has it; else the MACs the
        old table names are kept (they change only when the peer box is replaced).
        """
        if self.peer_macs:
            return
        await self._learn_peer_mac()
        if self.peer_macs:
            return
        try:
            left = self.nft.peer_macs_in_kernel()
        except OSError as exc:
            log.warning("loop guard %s: cannot read the old table: %s", self.mode, exc)
            return
        for mac in left:
            await self.learn_peer_mac(mac, recalled=True)

    async def set(self, engaged: bool, why: str, instance: str | None = None) -> None:
        """At a transition of ``instance`` (None: the one the sync daemon follows): a failure
        is logged and left to check() to retry.

        Raising here would stop the VRRP instance mid-transition; a guard that
        could not be released only costs the spread (the box serves locally),
        and one that could not be engaged is retried within CHECK_INTERVAL.
        """
        name = instance or self.inst.name
        self.states[name] = engaged
        if name != self.inst.name:
            engaged = self.states.get(self.inst.name, engaged)  # the sync daemon's instance
        try:
            await self._set(engaged, why)
        except OSError as exc:
            self.engaged = engaged  # what check() must converge to
            self._unapplied = True
            log.error(
                "loop guard %s: cannot %s it (%s): %s; retrying every %.0f s",
                self.mode,
                "engage" if engaged else "release",
                why,
                exc,
                CHECK_INTERVAL,
            )

    async def _set(self, engaged: bool, why: str) -> None:
        async with self._lock:
            if len(self.states) > 1:  # services carry their own instance's state
                changed = self.nft.apply(engaged, self._spec())
            else:
                changed = self.nft.apply(engaged)
            if changed:
                memory.trim()
            if self.sync_on:
                self.sync.want(engaged)  # never awaited here: see guard/syncfollow.py
            self._role_sysctl()
            if changed or engaged != self.engaged:
                word = "engaged" if engaged else "released"
                log.info(
                    "loop guard %s %s (%s)",
                    self.mode,
                    word,
                    why,
                    extra={
                        "journal": {
                            "LVSAGENT_EVENT": "loop_guard",
                            "LVSAGENT_LOOP_GUARD": self.mode,
                            "LVSAGENT_INSTANCE": self.inst.name,
                            "LVSAGENT_BYPASS": "on" if engaged else "off",
                        }
                    },
                )
            self.engaged = engaged

    def _role_sysctl(self, switched: bool = False) -> None:
        """backup_only's sysctl for the role.  Released: 0 in the transition (a /proc write),
        so a new master's IPVS balances at once.  Engaged: 1 once the daemons' switch has
        ended (``switched``): meanwhile packets of connections this box balanced still reach
        it (clients whose ARP entry has not moved yet), and its IPVS must go on forwarding
        them (written at once, 2 short requests were reset at a planned stop in the lab)."""
        if self.mode == "backup_only":
            engaged = self.states.get(self.inst.name, True)
            if engaged and not switched and self.sync.busy:
                return  # the switch writes it when it ends
            # Only this key: desired() would rebuild the whole spec on the transition's path.
            wanted = desired_sysctls(self.mode, (), engaged)[BACKUP_ONLY]
            self._write_sysctls({BACKUP_ONLY: wanted}, self.saved_sysctls)

    async def check(self) -> None:
        """Re-read and repair (someone ran `nft flush ruleset` or `ipvsadm --stop-daemon`)."""
        if self.engaged is None:
            return
        async with self._lock:
            try:
                if self._unapplied:  # a transition's apply failed: converge to its role
                    self.nft.apply(self.engaged)
                    self._unapplied = False
                else:
                    self.nft.check()  # repairs drift, and says what it repaired
                memory.trim()
                if self.sync_on:
                    self.sync.want(self.engaged)  # re-applied: repairs a stopped daemon
                self._role_sysctl()
            except OSError as exc:
                log.error("loop guard %s: cannot repair: %s; retrying", self.mode, exc)
            await self._untrack()

    async def run_checks(self) -> None:
        """Check every CHECK_INTERVAL; until the peer's MAC is confirmed, look for it every
        second (a neighbour dump is cheap, a full check of a big table is not)."""
        loop = asyncio.get_running_loop()
        next_check = loop.time() + CHECK_INTERVAL
        while True:
            learning = not self._peer_confirmed
            await asyncio.sleep(1.0 if learning else max(0.0, next_check - loop.time()))
            if loop.time() >= next_check:
                await self.check()
                next_check = loop.time() + CHECK_INTERVAL
            if learning:
                await self._learn_peer_mac()

    async def _learn_peer_mac(self) -> None:
        """The peer's MAC from the neighbour table, once the peer has been heard.

        Multicast adverts create no neighbour entry, but the health checks of the
        peer's real server (the same address) do.  Until it is known, fwmark marks
        nothing (every packet is served locally, which cannot loop), bypass has
        only its role-driven rules and backup_only only its sysctl and sync daemons.
        """
        peer = self.peer_address()
        if peer is None:
            return
        try:
            mac = await self._neighbour_mac(peer)
        except OSError as exc:
            log.warning("loop guard %s: cannot read the neighbour table: %s", self.mode, exc)
            return
        if mac:
            await self.learn_peer_mac(mac)

    async def learn_peer_mac(self, mac: str, recalled: bool = False) -> None:
        """The peer's MAC: fwmark does not mark its packets, and every mode serves them locally.

        ``recalled``: read from the table a previous run left, not seen live.
        """
        if not recalled:
            self._peer_confirmed = True
        if mac in self.peer_macs:
            return
        async with self._lock:
            self.peer_macs = (*self.peer_macs, mac)
            self.nft.reconfigure(self._spec())
        source = "the table the last run left" if recalled else "the neighbour table"
        log.info("loop guard %s: peer MAC %s learned from %s", self.mode, mac, source)

    def reconfigure(self, config: Config) -> None:
        """A reload: new services mean new rules (the daemon refuses a change of mode).

        Applied in a task of the guard's own, under its lock: never on the reload's path."""
        task = asyncio.get_running_loop().create_task(self._reconfigure(config))
        self._reloads.add(task)  # referenced until done: an unreferenced task may vanish
        task.add_done_callback(self._reloads.discard)

    async def _reconfigure(self, config: Config) -> None:
        async with self._lock:
            self.config = config
            vips = guard_vips(self.config)
            try:
                if vips != self.vips:
                    await self._lo_vips(vips, self.vips)
                self.vips = vips
                self.nft.reconfigure(self._spec())
                self.untracked.reconfigure(check_targets(config))
            except OSError as exc:  # the next check retries the nft part
                log.error("loop guard %s: reload not applied in full: %s", self.mode, exc)

    # ----- stop -------------------------------------------------------------------------

    async def stop(self, decommission: bool) -> None:
        """Default: leave the engaged state (a working real server).  Decommission: undo all.
        Either way the sync daemons' last switch ends first (the old master daemon's last
        entries go across, and backup_only's sysctl is written at its end)."""
        if not decommission:
            if self.sync_on:
                await self.sync.settle()
            self.sync.close()
            return
        async with self._lock:
            try:
                self.nft.remove()
                self.untracked.remove()
                await self._lo_vips((), self.vips)
                sysctl.restore_sysctls(self.saved_sysctls)
                if self.sync_on:
                    await self.sync.stop_all()
            except OSError as exc:
                log.error("loop guard: decommission incomplete: %s", exc)
            else:
                log.info("loop guard: decommissioned: nft table removed, sysctls restored")
            self.sync.close()

    def status(self) -> GuardStatus:
        detail: dict[str, Any] = {"services": len(self.vips), "peer_macs": list(self.peer_macs)}
        if len(self.states) > 1:
            detail["instances"] = " ".join(
                f"{n}={'engaged' if on else 'released'}" for n, on in self.states.items()
            )
        if self.sync_on:
            role = self.sync.role or "none yet"
            detail["sync"] = f"{self.sync.ifname} syncid {self.sync.syncid} ({role} daemon)"
        text = ", ".join(f"{k} {v}" for k, v in detail.items())
        return GuardStatus(mode=self.mode, active=self.engaged, detail=text)
