"""The daemon: wiring, signals, reload, and an ordered, bounded shutdown.

Startup order: read every interface the config names (and fail, changing
nothing, if one is missing), open every socket, then start the IPVS
reconciler and the VRRP instances.  Signal handlers only post events.
SIGHUP re-reads the config: an invalid one is logged and the running one
kept; a valid one is applied as a difference.
Shutdown order on SIGTERM/SIGINT: each instance sends priority 0 if it is
master and removes its addresses; IPVS is left as it is, so connections
keep their entries; the whole stop is bounded by SHUTDOWN_TIMEOUT so systemd
never has to SIGKILL us mid-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from pyroute2 import AsyncIPRoute

from lvsagent.config.loader import ConfigError, load_config
from lvsagent.config.schema import Config
from lvsagent.daemon.instance import InstanceRunner
from lvsagent.ipvs.desired import desired_table
from lvsagent.ipvs.genl import Timeouts
from lvsagent.ipvs.kernel import IpvsKernel
from lvsagent.ipvs.reconciler import IpvsReconciler
from lvsagent.vrrp import addresses

log = logging.getLogger("lvsagent")

SHUTDOWN_TIMEOUT = 5.0


class Agent:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.runners: list[InstanceRunner] = []
        self.reconciler: IpvsReconciler | None = None
        self.stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # ----- signals (handlers only post) -------------------------------------

    def on_stop_signal(self) -> None:
        # Posting to the instances straight away saves a master's priority-0
        # advert a few loop turns; the shutdown itself runs in their tasks.
        if not self.stopping.is_set():
            self.stopping.set()
            for r in self.runners:
                r.stop()

    def on_reload_signal(self) -> None:
        asyncio.get_running_loop().call_soon(self.reload)

    # ----- reload -------------------------------------------------------------

    def reload(self) -> None:
        """Re-read the config file; apply a valid one as a difference, keep the old otherwise."""
        path = self.config.path
        try:
            new = load_config(path)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload: %s", problem)
            log.error(
                "reload: %s has %d error(s); still running the previous config",
                path,
                len(exc.problems),
            )
            return
        if new.vrrp_instances != self.config.vrrp_instances:
            log.warning(
                "reload: VRRP instance settings changed in %s; they take effect at the "
                "next restart (VIPs and VRRP state are left as they are)",
                path,
            )
            new = Config(new.path, new.global_, self.config.vrrp_instances, new.virtual_servers)
        self.config = new
        if self.reconciler is not None:
            g = new.global_
            self.reconciler.timeouts = Timeouts(
                g.ipvs_timeout_tcp, g.ipvs_timeout_tcpfin, g.ipvs_timeout_udp
            )
            self.reconciler.set_desired(desired_table(new))
        elif new.virtual_servers:
            log.warning("reload: virtual servers were added; IPVS starts at the next restart")
        log.info("reload: %s applied", path)

    # ----- run ------------------------------------------------------------------

    async def serve(self) -> None:
        """Run until SIGTERM or SIGINT; raise InterfaceError/OSError on a startup failure."""
        loop = asyncio.get_running_loop()
        async with AsyncIPRoute() as ipr:
            try:
                for inst in self.config.vrrp_instances:
                    link = await addresses.read_link(ipr, inst.interface)
                    self.runners.append(InstanceRunner(inst, link, ipr))
            except BaseException:
                for r in self.runners:
                    r.close()
                raise
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.on_stop_signal)
            loop.add_signal_handler(signal.SIGHUP, self.on_reload_signal)
            links = addresses.LinkEvents()
            loop.add_reader(links.fileno(), self._on_link_event, links)
            ipvs = await self._start_ipvs()
            try:
                await self._supervise()
            finally:
                loop.remove_reader(links.fileno())
                links.close()
                if ipvs is not None:
                    ipvs.close()

    async def _start_ipvs(self) -> IpvsKernel | None:
        if not self.config.virtual_servers:
            return None
        kernel = IpvsKernel()
        g = self.config.global_
        self.reconciler = IpvsReconciler(
            kernel,
            desired_table(self.config),
            g.foreign_services,
            g.ipvs_resync_interval,
            Timeouts(g.ipvs_timeout_tcp, g.ipvs_timeout_tcpfin, g.ipvs_timeout_udp),
        )
        self._tasks.append(asyncio.create_task(self.reconciler.run(), name="ipvs"))
        return kernel

    async def _supervise(self) -> None:
        instance_tasks = [asyncio.create_task(r.run(), name=r.inst.name) for r in self.runners]
        log.info(
            "lvsagent started with %s: %d VRRP instance(s), %d virtual server(s)",
            self.config.path,
            len(self.runners),
            len(self.config.virtual_servers),
        )
        stopper = asyncio.create_task(self.stopping.wait())
        crashed: BaseException | None = None
        try:
            done, _ = await asyncio.wait(
                [stopper, *instance_tasks, *self._tasks], return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task is not stopper and not task.cancelled() and task.exception():
                    crashed = task.exception()
                    log.error(
                        "%s stopped unexpectedly: %r; shutting down", task.get_name(), crashed
                    )
            log.info("stopping: releasing virtual addresses")
            self.on_stop_signal()
            live = [t for t in instance_tasks if not t.done()]
            if live:
                _, pending = await asyncio.wait(live, timeout=SHUTDOWN_TIMEOUT)
                for task in pending:
                    log.error("%s did not stop within %.0f s", task.get_name(), SHUTDOWN_TIMEOUT)
                    task.cancel()
        finally:
            stopper.cancel()
            for task in self._tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if crashed is not None:
            raise crashed

    def _on_link_event(self, links: addresses.LinkEvents) -> None:
        links.drain()
        for r in self.runners:
            r.links_changed()


async def serve(config: Config) -> None:
    await Agent(config).serve()
