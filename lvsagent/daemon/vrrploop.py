"""VRRP's own event loop, in a thread of its own, and the way back to the main loop.

Why a thread: the main loop also runs the health checks, the IPVS reconciler,
the loop guard's nftables transactions, the status snapshots and the
garbage those leave; asyncio runs every ready callback before it looks at a
timer again, so any of them delayed the adverts by however long it held the
loop.  Measured in the lab at a cold start with 1000 services x 10 TCP-checked
real servers: a master's adverts up to 1.2 s late at advert_int 0.1, and the
single biggest item was the guard's own transaction (1000 bypass rules) in
the MASTER transition.  keepalived keeps VRRP in a process apart from its
checkers for the same reason.  A thread rather than a process: the instances
share memory with the daemon (tracking reads health verdicts, status reads the
routers), so nothing needs to be serialised, and the GIL costs a waking VRRP
thread at most one switch interval per wake-up, which :meth:`VrrpLoop.start`
lowers to SWITCH_INTERVAL (measured: a 100 ms ticker beside a CPU-bound
thread, p99 7.0 ms late at CPython's default 5 ms, 2.6 ms at 1 ms).

What runs where: each InstanceRunner (its sockets, timers, VIPs and netlink
socket) lives on the VRRP loop; everything else stays on the main loop.  The
runners' calls into the rest (the guard step, hooks, a silent peer's re-check)
go through :class:`MainLink`, in the order they were made (a runner goes on
sending adverts while its MASTER transition's guard release is done:
InstanceRunner.execute); calls into a runner (links changed, stop, reload) are
thread-safe posts (events.Inbox).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from lvsagent.daemon import events as ev

log = logging.getLogger("lvsagent")

T = TypeVar("T")
# The longest a runnable VRRP thread waits for the GIL held by a busy main thread.
SWITCH_INTERVAL = 0.001
JOIN_TIMEOUT = 5.0


class VrrpLoop:
    """An asyncio loop on a daemon thread; coroutines are handed to it from the main loop."""

    def __init__(self) -> None:
        # The loop is made in the thread by start(): an Agent that never serves (tests)
        # leaves no loop unclosed.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lvsagent-vrrp", daemon=True)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the VRRP loop is not started")
        return self._loop

    def start(self) -> None:
        sys.setswitchinterval(SWITCH_INTERVAL)
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        """Run ``coro`` on the VRRP loop; its result as a future of the calling loop.

        Cancelling the returned future cancels the task on the VRRP loop.
        """
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return await self.submit(coro)

    def stop(self) -> None:
        """Cancel what still runs there, close the loop, and wait for the thread (bounded)."""
        if not self._thread.is_alive():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(JOIN_TIMEOUT)
        if self._thread.is_alive():
            log.error("stopping: the VRRP thread did not end within %.0f s", JOIN_TIMEOUT)


class MainLink:
    """Calls from the VRRP loop into the main loop, carried out one at a time, in order.

    Order matters: an instance's notify hook must run after its loop-guard
    step, and a BACKUP transition's engage after the MASTER one's release.
    Each call becomes a task on the main loop that takes one lock; asyncio's
    lock wakes its waiters first come, first served.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock: asyncio.Lock | None = None  # made on the main loop, by the first call

    def _submit(self, fn: Callable[[], Awaitable[None] | None]) -> concurrent.futures.Future[None]:
        async def ordered() -> None:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                result = fn()
                if inspect.isawaitable(result):
                    await result

        return asyncio.run_coroutine_threadsafe(ordered(), self.loop)

    def guard_step(self, step: ev.GuardHook) -> ev.GuardHook:
        """The guard's step for a runner, done on the main loop and waited for (the runner
        does not wait for a MASTER's release: InstanceRunner.execute)."""

        async def bridged(engaged: bool, why: str) -> None:
            await asyncio.wrap_future(self._submit(lambda: step(engaged, why)))

        return bridged

    def soon(self, fn: Callable[..., None]) -> Callable[..., None]:
        """``fn`` called on the main loop, after every call made before it; not waited for."""

        def post(*args: Any) -> None:
            self._submit(lambda: fn(*args)).add_done_callback(_report)

        return post


def _report(done: concurrent.futures.Future[None]) -> None:
    if done.cancelled():
        return
    exc = done.exception()
    if exc is not None:
        log.error("a VRRP instance's call into the daemon failed: %r", exc, exc_info=exc)
