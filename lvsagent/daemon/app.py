"""The daemon: wiring, signals, reload, and an ordered, bounded shutdown.

Startup order: read every interface the config names (and fail, changing
nothing, if one is missing), open every socket, engage the loop guard (the
box starts in the BACKUP kernel state: a restart after kill -9 must not
re-balance what the other box sends it), then start the health checks, the
IPVS reconciler and the VRRP instances (on a loop and thread of their own,
daemon/vrrploop.py).  READY=1 goes to systemd after the first IPVS pass.
Signal handlers only post events.
SIGHUP re-reads the config: an invalid one, or one with a change only a
restart can make (daemon/reload.py), is logged and the running one kept; a
valid one is applied as a difference, VRRP tunables in place.
Shutdown order on SIGTERM/SIGINT: a master with sync daemons hands its
connections over (daemon/stopping.py); each instance sends priority 0 if it is
master, engages the loop guard and removes its addresses; IPVS is left as it
is, so connections keep their entries, and the box stays a working real
server (``decommission_on_stop`` undoes the guard instead); each part of the
stop is bounded, so systemd (TimeoutStopSec=15) never has to SIGKILL us mid-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
from typing import Any

from lvsagent import memory
from lvsagent.config.schema import Config, VirtualServer
from lvsagent.daemon import kmod
from lvsagent.daemon.derive import guarded_instance, guarded_instances
from lvsagent.daemon.draining import DrainBook
from lvsagent.daemon.instance import InstanceRunner
from lvsagent.daemon.links import InstanceLinks, ReadLink
from lvsagent.daemon.observing import Observer
from lvsagent.daemon.pidlock import StateLock
from lvsagent.daemon.reload import instance_changes
from lvsagent.daemon.reread import Reloads
from lvsagent.daemon.scripting import Scripting
from lvsagent.daemon.stopping import Handoff, remove_services
from lvsagent.daemon.tracking import tracks_anything
from lvsagent.daemon.vrrploop import MainLink, VrrpLoop
from lvsagent.guard.driver import LoopGuard
from lvsagent.guard.peer import PeerAddress
from lvsagent.health.monitor import HealthMonitor
from lvsagent.health.verdicts import NO_VERDICTS, Verdicts
from lvsagent.ipvs.desired import desired_table, service_key, update_services
from lvsagent.ipvs.genl import Timeouts
from lvsagent.ipvs.kernel import IpvsKernel
from lvsagent.ipvs.model import ServiceKey, Table
from lvsagent.ipvs.reconciler import IpvsReconciler, Settings
from lvsagent.netfilter.spec import ipvs_sysctls
from lvsagent.observe.journal import NOTICE
from lvsagent.vrrp import addresses
from lvsagent.vrrp.ownaddr import own_addresses_at_start

log = logging.getLogger("lvsagent")

SHUTDOWN_TIMEOUT = 5.0  # the instances' half of a stop
SHUTDOWN_REST_TIMEOUT = 4.0  # the rest: with the handoff's 3 s, under TimeoutStopSec=15


class Agent:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.runners: list[InstanceRunner] = []
        self.reconciler: IpvsReconciler | None = None
        self.health: HealthMonitor | None = None
        self.guard: LoopGuard | None = None
        self.peer: PeerAddress | None = None  # the guard's view of the other box
        self.vrrp = VrrpLoop()  # the instances run there (daemon/vrrploop.py)
        # Real servers drained by `lvsagent drain`: weight 0, laid over the health verdicts.
        self.drains = DrainBook(config, self._drains_changed)
        self.observer = Observer(config, self.drains)
        # Hooks, track scripts/files/processes, sync groups, MISC_CHECK's runner.
        self.scripting = Scripting(config, self.observer.metrics.registry, self._tell_tracking)
        self.stopping = asyncio.Event()
        self.first_pass = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.links = InstanceLinks(config)  # their sockets and macvlans, on the VRRP loop
        self.handoff = Handoff()  # a master's stop quiesces its own servers first
        self.reloads = Reloads(
            lambda: self.config, self._apply, self.observer, self.first_pass, self.stopping
        )
        # Each service key of the config, for rebuilding one service on a verdict.
        self._services: dict[ServiceKey, VirtualServer] = {
            service_key(vs): vs for vs in config.virtual_servers
        }

    # ----- signals (handlers only post) -------------------------------------

    def on_stop_signal(self) -> None:
        # Posting to the instances straight away saves a master's priority-0
        # advert a few loop turns; the shutdown itself runs in their tasks.
        if not self.stopping.is_set():
            self.stopping.set()
            self.observer.notifier.stopping()
            own = {a.ip for r in self.runners for a in r.link.addresses}
            if not self.handoff.start(
                self.reconciler, self.guard, own, self._desired, self._stop_runners
            ):
                self._stop_runners()

    def _stop_runners(self) -> None:
        for r in self.runners:
            r.stop()

    # ----- reload -------------------------------------------------------------

    def _apply(self, new: Config) -> None:
        """A valid reload (daemon/reread.py checked it): each component takes ``new``."""
        old, self.config = self.config, new
        self._reconfigure_instances(old, new)
        self.drains.reconfigure(new)
        self.scripting.reconfigure(new)
        self.observer.reconfigure(new)
        if self.health is not None:
            self.health.reconfigure(new)
        if self.guard is not None:
            self.guard.reconfigure(new)
        if self.reconciler is not None:
            self.reconciler.reconfigure(ipvs_settings(new))
        self._health_changed("config changed")
        if self.first_pass.is_set():
            memory.settle()  # the new config's objects live as long as it does

    def _reconfigure_instances(self, old: Config, new: Config) -> None:
        """Tunables in place (restart_reasons has ruled out any other change)."""
        before = {i.name: i for i in old.vrrp_instances}
        for runner in self.runners:
            inst = next(i for i in new.vrrp_instances if i.name == runner.inst.name)
            changes = instance_changes(before[inst.name], inst)
            if changes:
                log.log(NOTICE, "reload: %s: %s", runner.tag, "; ".join(changes))
                runner.reconfigure(inst)

    def _desired(self) -> Table:
        """The config's table with the health verdicts and the drains laid over it."""
        v = self.health.verdicts() if self.health is not None else NO_VERDICTS
        weights = {**v.weights, **self.drains.weights(), **self.handoff.quiesced}
        return desired_table(self.config, weights, v.removed, v.sorry)

    def _verdicts_changed(self, verdicts: Verdicts) -> None:
        """The health monitor's callback: only the services it names are rebuilt."""
        self._rebuild(verdicts, "health")
        self._tell_trackers()

    def _rebuild(self, v: Verdicts, why: str) -> None:
        """The desired table with ``v``'s services rebuilt from their verdicts and drains."""
        rec, changed = self.reconciler, v.services
        if rec is None or changed is None:
            return
        quiet = {d: w for d, w in self.handoff.quiesced.items() if d[0] in changed}
        weights = {**v.weights, **self.drains.weights(changed), **quiet}
        table = update_services(rec.desired, self._services, changed, weights, v.removed, v.sorry)
        rec.set_desired(table, why, changed)

    def _drains_changed(self, changed: frozenset[ServiceKey]) -> None:
        """`lvsagent drain`/`undrain` was applied: re-plan that service, show it at once."""
        if self.health is not None:
            self._rebuild(self.health.verdicts(changed), "drain")
        self.observer.publish()

    def _health_changed(self, why: str = "health") -> None:
        """Everything may have changed (a reload): the whole table again."""
        self._services = {service_key(vs): vs for vs in self.config.virtual_servers}
        if self.reconciler is not None:
            self.reconciler.set_desired(self._desired(), why)
        self._tell_trackers()

    def _tell_trackers(self) -> None:
        for r in self.runners:
            if r.inst.track_real_servers:
                r.links_changed()

    def _tell_tracking(self) -> None:
        """A tracked script, file or process changed: the instances that track any re-weigh."""
        for r in self.runners:
            if tracks_anything(r.inst):
                r.links_changed()

    def _peer_lost(self, address: ipaddress.IPv4Address) -> None:
        if self.health is not None:
            self.health.recheck([address], silent=True)

    # ----- run ------------------------------------------------------------------

    async def serve(self) -> None:
        """Run until SIGTERM or SIGINT; raise AlreadyRunning, InterfaceError or OSError on a
        startup failure (each before anything on the host was changed, but the last)."""
        lock = StateLock(self.config.global_.state_dir)
        lock.acquire()  # first: a second agent must change nothing
        try:
            self.drains.load()  # before the first IPVS pass, which then keeps them
            self.vrrp.start()
            try:
                await self._serve()
            finally:
                self.vrrp.stop()
        finally:
            lock.release()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        # First, so that a signal during start-up is an orderly stop or a reload, never the
        # default action (death) half-way through engaging the loop guard.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, self.reloads.on_signal)
        self.scripting.check_host()  # every script's user: exit 78 or 77, nothing changed
        await kmod.ensure_modules(self.config)  # before the guard writes IPVS's sysctls
        try:
            await self._serve_with(MainLink(loop))
        finally:
            await self.vrrp.call(self.links.close())

    async def _serve_with(self, main: MainLink) -> None:
        loop = asyncio.get_running_loop()
        if self.config.virtual_servers:
            check = self.scripting.check
            self.health = HealthMonitor(self.config, self._verdicts_changed, check=check)
        try:
            read = await self.vrrp.call(self.links.open())
            self._make_guard(read)
            await self.vrrp.call(self._make_runners(read, main))
            if (group_hooks := self.scripting.sync.notify) is not None:  # runners call it
                self.scripting.sync.notify = main.soon(group_hooks)
            self.scripting.bind({r.inst.name: r for r in self.runners})
            own = own_addresses_at_start(
                self.config, [(r.inst, r.link, r.source) for r in self.runners]
            )
            if own:  # before anything changes: exit 78
                raise addresses.InterfaceError("\n".join(map(str, own)))
            if self.guard is not None:
                await self.guard.prepare()
        except BaseException:
            for r in self.runners:
                r.close()
            await self.vrrp.call(self.links.remove_vmacs())
            raise
        self.observer.runners = self.runners
        self.observer.health = self.health
        self.observer.guard = self.guard
        links = addresses.LinkEvents()
        loop.add_reader(links.fileno(), self._on_link_event, links)
        # The one full collection, while no advert is due yet: the config, the
        # trackers and the guard's set-up live on, the parse's garbage goes.
        memory.settle()
        ipvs = await self._start_ipvs()
        await self.observer.start(lambda: self.vrrp.call(asyncio.sleep(0)))
        await self.scripting.start()  # tracked scripts' first results, before VRRP
        try:
            await self._supervise()
        finally:
            loop.remove_reader(links.fileno())
            links.close()
            try:
                await asyncio.wait_for(self._after_instances(ipvs), SHUTDOWN_REST_TIMEOUT)
            except TimeoutError:
                log.error(
                    "stopping: loop guard, IPVS and observers not done within %.0f s; "
                    "exiting anyway (check `nft list table ip lvsagent` and ipvsadm -Ln)",
                    SHUTDOWN_REST_TIMEOUT,
                )
            finally:
                if ipvs is not None:
                    ipvs.close()

    def _make_guard(self, links: list[ReadLink]) -> None:
        """The guard, if services follow instances, told the peer by the one it follows."""
        primary = guarded_instance(self.config)
        if primary is not None:
            link = next(link for inst, link, _, _ in links if inst.name == primary.name)
            self.peer = PeerAddress(primary, (a.ip for a in link.addresses), self.config)
            self.guard = LoopGuard(self.config, primary, peer_address=self.peer)

    async def _make_runners(self, links: list[ReadLink], main: MainLink) -> None:
        """On the VRRP loop: each runner, with the guard's step for its transitions; what
        it calls on the daemon goes to the main loop (daemon/vrrploop.py)."""
        primary, peer = guarded_instance(self.config), self.peer
        followed, guard = guarded_instances(self.config), self.guard
        server_up = self.health.server_up if self.health is not None else None
        for inst, link, ipr, held in links:
            wiring = self.scripting.wiring(inst)
            wiring["notify"] = main.soon(wiring["notify"])
            step = guard.hook(inst.name) if guard is not None and inst.name in followed else None
            self.runners.append(InstanceRunner(
                inst, link, ipr, main.guard_step(step) if step is not None else None,
                server_up, main.soon(self._peer_lost), held,
                peer_heard=peer.heard if peer is not None and inst is primary else None,
                **wiring,
            ))  # fmt: skip

    async def _after_instances(self, ipvs: IpvsKernel | None) -> None:
        """The stop's second half, once every instance released its addresses: their
        notify_stop hooks get a moment, then the guard, IPVS and the observers."""
        await self.scripting.stop()
        await self.handoff.end(self.reconciler, self._desired)
        decommission = self.config.global_.decommission_on_stop
        await self.vrrp.call(self.links.remove_vmacs())  # the instances released their addresses
        if self.guard is not None:
            await self.guard.stop(decommission)
        if ipvs is not None and decommission:
            await remove_services(ipvs, self.config)
        await self.observer.stop()

    async def _start_ipvs(self) -> IpvsKernel | None:
        if self.health is not None:
            self._tasks.append(asyncio.create_task(self.health.run(), name="health"))
        if self.guard is not None:
            self._tasks.append(asyncio.create_task(self.guard.run_checks(), name="loop-guard"))
        if not self.config.virtual_servers:
            self.first_pass.set()
            return None
        kernel = IpvsKernel()
        g = self.config.global_
        s = ipvs_settings(self.config)
        self.reconciler = IpvsReconciler(
            kernel, self._desired(), s.foreign, s.resync_interval, s.timeouts, s.sysctls,
            f"{g.state_dir}/sysctl-saved.json",
        )  # fmt: skip
        self.observer.reconciler = reconciler = self.reconciler
        self.observer.known_table = lambda: reconciler.known
        self._tasks.append(asyncio.create_task(self.reconciler.run(self.first_pass), name="ipvs"))
        return kernel

    async def _supervise(self) -> None:
        # On the VRRP loop; here, futures of this loop that cancel them there.
        names = {self.vrrp.submit(r.run()): r.inst.name for r in self.runners}
        names.update((t, t.get_name()) for t in self._tasks)
        instance_tasks = [f for f in names if f not in self._tasks]
        log.info(
            "lvsagent started with %s: %d VRRP instance(s), %d virtual server(s)",
            self.config.path,
            len(self.runners),
            len(self.config.virtual_servers),
        )
        stopper = asyncio.create_task(self.stopping.wait())
        ready = asyncio.create_task(self._ready())
        crashed: BaseException | None = None
        try:
            waited: list[asyncio.Future[Any]] = [stopper, *names]
            done, _ = await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and not task.cancelled() and task.exception():
                    crashed = task.exception()
                    log.error(
                        "%s stopped unexpectedly: %r; shutting down",
                        names.get(task, "?"),
                        crashed,
                    )
            self.on_stop_signal()
            await self.handoff.released()
            log.info("stopping: releasing virtual addresses")
            live = [t for t in instance_tasks if not t.done()]
            if live:
                _, pending = await asyncio.wait(live, timeout=SHUTDOWN_TIMEOUT)
                for task in pending:
                    log.error("%s did not stop within %.0f s", names[task], SHUTDOWN_TIMEOUT)
                    task.cancel()
        finally:
            stopper.cancel()
            ready.cancel()
            for task in self._tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if crashed is not None:
            raise crashed

    async def _ready(self) -> None:
        """READY=1 once the kernel holds the configured IPVS table (or IPVS failed once)."""
        await self.first_pass.wait()
        # VRRP runs now: freeze what the first pass left without a full collection (one
        # held the loop 0.8 s at 10 000 checked servers on a loaded host; the pass's
        # garbage has no cycles, reference counting freed it), and hand the heap back.
        memory.freeze()
        self.observer.publish()
        self.observer.notifier.ready(self.observer.status_text())

    def _on_link_event(self, links: addresses.LinkEvents) -> None:
        links.drain()
        for r in self.runners:
            r.links_changed()


def ipvs_settings(config: Config) -> Settings:
    g = config.global_
    return Settings(
        g.foreign_services,
        g.ipvs_resync_interval,
        Timeouts(g.ipvs_timeout_tcp, g.ipvs_timeout_tcpfin, g.ipvs_timeout_udp),
        ipvs_sysctls(g.ipvs_expire_nodest_conn),
    )


async def serve(config: Config) -> None:
    await Agent(config).serve()
