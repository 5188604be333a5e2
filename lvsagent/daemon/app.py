"""The daemon: wiring, signals and an ordered, bounded shutdown.

Startup order: read every interface the config names (and fail, changing
nothing, if one is missing), open every socket, then start the instances.
Shutdown order on SIGTERM/SIGINT: each instance sends priority 0 if it is
master and removes its addresses; the whole stop is bounded by
SHUTDOWN_TIMEOUT so systemd never has to SIGKILL us mid-way.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from pyroute2 import AsyncIPRoute

from lvsagent.config.schema import Config
from lvsagent.daemon.instance import InstanceRunner
from lvsagent.vrrp import addresses

log = logging.getLogger("lvsagent")

SHUTDOWN_TIMEOUT = 5.0


async def serve(config: Config) -> None:
    """Run until SIGTERM or SIGINT; raise InterfaceError/OSError on a startup failure."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    async with AsyncIPRoute() as ipr:
        runners = []
        try:
            for inst in config.vrrp_instances:
                link = await addresses.read_link(ipr, inst.interface)
                runners.append(InstanceRunner(inst, link, ipr))
        except BaseException:
            for r in runners:
                r.close()
            raise

        # The handler only posts events; the shutdown itself runs in each instance's task.
        # Posting to the instances straight away saves a master's priority-0
        # advert a few loop turns.
        def on_signal() -> None:
            if not stopping.is_set():
                stopping.set()
                for r in runners:
                    r.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        links = addresses.LinkEvents()
        loop.add_reader(links.fileno(), _on_link_event, links, runners)
        tasks = [asyncio.create_task(r.run(), name=r.inst.name) for r in runners]
        log.info(
            "lvsagent started with %s: %d VRRP instance(s)",
            config.path,
            len(runners),
        )
        try:
            stopper = asyncio.create_task(stopping.wait())
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            log.info("stopping: releasing virtual addresses")
            on_signal()
            _, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_TIMEOUT)
            for task in pending:
                log.error("%s did not stop within %.0f s", task.get_name(), SHUTDOWN_TIMEOUT)
                task.cancel()
        finally:
            loop.remove_reader(links.fileno())
            links.close()
            stopper.cancel()


def _on_link_event(links: addresses.LinkEvents, runners: list[InstanceRunner]) -> None:
    links.drain()
    for r in runners:
        r.links_changed()
