"""Read and parse the config for a reload on a thread of its own, never on the event loop.

The event loop sends the adverts: anything that blocks it for longer than the
peer's Master_Down_Interval (3.6 s at advert_int 1) is a needless failover, and a
read that never returns (a config on a hung network mount) stops VRRP for good
until the watchdog kills the daemon.  Parsing a large or hostile file is seconds
of CPU too.  So the file is opened, read and parsed on a thread, and only the
finished Config (or the ConfigError) comes back to the loop, which applies it.

Why a daemon thread of our own and not ``asyncio.to_thread``: the default
executor's threads are joined when the loop closes and again at interpreter exit,
so a read stuck in the kernel would also hang the daemon's stop, past systemd's
TimeoutStopSec.  A daemon thread is simply left behind when the process exits.
The daemon starts at most one read at a time (app.py coalesces SIGHUPs), so a
stuck mount costs one thread, not one per signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

from lvsagent.config import loader
from lvsagent.config.schema import Config

__all__ = ["reread"]


async def reread(path: str, load: Callable[[str], Config] | None = None) -> Config:
    """``load(path)`` (the loader's load_config) on a daemon thread, result back on the loop."""
    read = loader.load_config if load is None else load
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Config] = loop.create_future()

    def deliver(config: Config | None, error: BaseException | None) -> None:
        if done.cancelled():  # the daemon stopped while the file was being read
            return
        if error is not None:
            done.set_exception(error)
        else:
            assert config is not None
            done.set_result(config)

    def work() -> None:
        try:
            config, error = read(path), None
        except Exception as exc:  # every failure is the reload's to report, on the loop
            config, error = None, exc
        # The loop may be closed if the daemon stopped meanwhile: nobody waits any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(deliver, config, error)

    threading.Thread(target=work, name="config-reread", daemon=True).start()
    return await done
