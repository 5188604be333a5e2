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
The daemon starts at most one read at a time (:class:`Reloads` coalesces SIGHUPs),
so a stuck mount costs one thread, not one per signal.

:class:`Reloads` is the whole way from SIGHUP to a verdict: read, refuse (a bad file,
or a change only a restart can make: daemon/reload.py) or hand the new config to the
daemon's ``apply``, and always show the verdict in `lvsagent status` and /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from lvsagent.config import loader
from lvsagent.config.loader import ConfigError
from lvsagent.config.schema import Config
from lvsagent.daemon.reload import global_changes, restart_reasons
from lvsagent.observe.snapshot import ReloadStatus

if TYPE_CHECKING:
    from lvsagent.daemon.observing import Observer

__all__ = ["Reloads", "reread"]

log = logging.getLogger("lvsagent")
_REFUSED = {"journal": {"LVSAGENT_EVENT": "reload", "LVSAGENT_RELOAD": "refused"}}
_APPLIED = {"journal": {"LVSAGENT_EVENT": "reload", "LVSAGENT_RELOAD": "applied"}}


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


class Reloads:
    """SIGHUP to an applied or refused config, one read at a time.

    ``current()`` is the running config, ``apply(new)`` makes ``new`` the running one
    (every component's ``reconfigure``); ``started`` is set once the unit is READY and
    ``stopping`` once a stop began.
    """

    def __init__(
        self,
        current: Callable[[], Config],
        apply: Callable[[Config], None],
        observer: Observer,
        started: asyncio.Event,
        stopping: asyncio.Event,
    ) -> None:
        self._current = current
        self._apply = apply
        self.observer = observer
        self.started = started
        self.stopping = stopping
        # The reload in progress, and whether a SIGHUP came during it.
        self._rereading: asyncio.Task[None] | None = None
        self._again = False

    def on_signal(self) -> None:
        """SIGHUPs during a read ask for one more read after it.

        The file may have changed again since the running read opened it, so the
        last signal must be answered by a read that began after it; a read stuck
        on a hung mount must not collect one more stuck thread per signal.
        """
        if self._rereading is not None:
            self._again = True
            return
        self._rereading = asyncio.get_running_loop().create_task(
            self._until_current(), name="reload"
        )

    async def _until_current(self) -> None:
        try:
            while True:
                self._again = False
                await self.reload()
                if not self._again or self.stopping.is_set():
                    return
        finally:
            self._rereading = None

    async def reload(self) -> None:
        """One read, framed by RELOADING=1 ... READY=1 once the unit is READY.

        Before the first READY=1 the unit is still starting: such a pair then would
        tell systemd start-up was over before the first IPVS pass.
        """
        started = self.started.is_set()
        if started:
            self.observer.notifier.reloading()
        try:
            await self.read_and_apply()
        finally:
            if started:
                self.observer.notifier.ready()

    async def read_and_apply(self) -> None:
        """Read and parse off the loop; check and apply back on it."""
        old = self._current()
        path = old.path
        try:
            new = await reread(path)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload: %s", problem)
            detail = f"{exc.total} error(s) in the file: {exc.problems[0]}"
            self._refuse(path, detail, f"has {exc.total} error(s)")
            return
        except Exception as exc:  # a loader bug must still show as a refusal, not vanish
            log.error("reload: reading %s failed", path, exc_info=exc)
            self._refuse(path, f"reading the file failed: {exc!r}", f"could not be read ({exc!r})")
            return
        refused = restart_reasons(old, new)
        if refused:
            # Half of it applied would leave the daemon on two configs at once.
            for reason in refused:
                log.error("reload: %s: %s: that needs a restart", path, reason)
            log.error(
                "reload: %s not applied: %d change(s) need a restart (systemctl restart "
                "lvsagent); still running the previous config",
                path, len(refused), extra=_REFUSED,
            )  # fmt: skip
            self.reloaded(False, f"needs a restart: {'; '.join(refused)}")
            return
        self._apply(new)
        changed = global_changes(old.global_, new.global_)
        log.info(
            "reload: %s applied%s",
            path, f" ({'; '.join(changed)})" if changed else "", extra=_APPLIED,
        )  # fmt: skip
        self.reloaded(True, "applied")

    def _refuse(self, path: str, detail: str, why: str) -> None:
        log.error("reload: %s %s; still running the previous config", path, why, extra=_REFUSED)
        self.reloaded(False, detail)

    def reloaded(self, ok: bool, detail: str) -> None:
        """For `lvsagent status` and the metrics, at once: a refused reload must show."""
        self.observer.last_reload = ReloadStatus(time.time(), ok, detail)
        self.observer.publish()
