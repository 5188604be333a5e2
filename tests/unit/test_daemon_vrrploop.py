"""VRRP's own loop (daemon/vrrploop.py): it runs while the main loop is held, and the
runners' calls into the main loop keep their order.

Each test holds the main loop the way a long nftables transaction or IPVS pass does
(a synchronous call), and asserts what happened meanwhile, not how fast.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from lvsagent.daemon import events as ev
from lvsagent.daemon.vrrploop import MainLink, VrrpLoop

HOLD = 0.3  # s the main loop is held by a synchronous call
TICK = 0.01


@pytest.fixture
def vrrp() -> Iterator[VrrpLoop]:
    loop = VrrpLoop()
    loop.start()
    yield loop
    loop.stop()


async def _ticker(stamps: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        stamps.append(time.monotonic())
        await asyncio.sleep(TICK)


def test_the_vrrp_loop_runs_while_the_main_loop_is_held(vrrp: VrrpLoop) -> None:
    """An advert timer on the VRRP loop fires during a blocking call on the main loop
    (on one loop it could not: asyncio runs nothing else until the call returns)."""
    stamps: list[float] = []

    async def main() -> tuple[float, float]:
        stop = asyncio.Event()
        ticking = vrrp.submit(_ticker(stamps, stop))
        while not stamps:  # the ticker has started: the hold below is what it must outlast
            await asyncio.sleep(TICK)
        held_from = time.monotonic()
        time.sleep(HOLD)  # the main loop is held: nothing on it runs
        held_to = time.monotonic()
        vrrp.loop.call_soon_threadsafe(stop.set)
        await ticking
        return held_from, held_to

    held_from, held_to = asyncio.run(main())
    during = [t for t in stamps if held_from < t < held_to]
    assert during, f"no tick of the VRRP loop while the main loop was held ({len(stamps)} ticks)"


def test_the_runners_calls_are_waited_for_and_kept_in_order(vrrp: VrrpLoop) -> None:
    """A guard step is done on the main loop before the runner goes on; a notify made
    after it runs after it, and before a later step."""
    order: list[str] = []

    async def main() -> list[str]:
        main_link = MainLink(asyncio.get_running_loop())

        async def step(engaged: bool, why: str) -> None:
            order.append(f"step {engaged} begins")
            await asyncio.sleep(TICK)  # the main loop's own work in between
            order.append(f"step {engaged} ends")

        guard = main_link.guard_step(step)
        notify = main_link.soon(lambda word: order.append(f"notify {word}"))

        async def runner() -> None:
            await guard(False, "INIT -> MASTER")
            order.append("runner after release")
            notify("MASTER")
            await guard(True, "MASTER -> BACKUP")
            order.append("runner after engage")

        await vrrp.submit(runner())
        return order

    got = asyncio.run(main())
    assert got[:3] == ["step False begins", "step False ends", "runner after release"]
    assert len(got) == 7
    before = got.index
    assert before("step False ends") < before("notify MASTER") < before("step True begins")
    assert before("step True ends") < before("runner after engage")


def test_a_post_from_another_thread_wakes_the_runner(vrrp: VrrpLoop) -> None:
    """Link events, reloads and stops come from the main loop's thread."""

    async def make() -> ev.Inbox:
        return ev.Inbox()

    async def take(inbox: ev.Inbox) -> ev.Event:
        while not inbox.events:
            await inbox.wait()
        return inbox.events.popleft()

    async def main() -> ev.Event:
        inbox = await vrrp.call(make())
        taking = vrrp.submit(take(inbox))
        assert threading.current_thread() is threading.main_thread()
        inbox.post(ev.Stop())
        return await taking

    assert asyncio.run(main()) == ev.Stop()


def test_stop_cancels_what_still_runs_there() -> None:
    loop = VrrpLoop()
    loop.start()
    started, cancelled = threading.Event(), threading.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    asyncio.run_coroutine_threadsafe(forever(), loop.loop)
    assert started.wait(10)
    loop.stop()
    assert cancelled.is_set()
    assert loop.loop.is_closed()
