"""What an instance runner takes in: its queued events, and the hooks the daemon wires in.

The runner (daemon/instance.py) processes one event at a time from one queue; the
event types and the callables it is given are declared here so that the wiring
(daemon/app.py) and the tests name them without reaching into the runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from lvsagent.config.schema import VrrpInstance
from lvsagent.daemon.wire import Received
from lvsagent.vrrp import track
from lvsagent.vrrp.machine import PeerSeen, State

# An accepted advert (checked in the reader callback, by the wire).
Rx = Received


@dataclass(frozen=True)
class Links:
    pass


@dataclass(frozen=True)
class Reconcile:
    pass


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class Reconfigure:
    inst: VrrpInstance


@dataclass(frozen=True)
class Follow:
    """The instance's sync group moved to ``state``: follow it (daemon/sync.py)."""

    state: State
    why: str


Event = Rx | Links | Reconcile | Stop | Reconfigure | Follow


# Engage (True) or release (False) the loop guard, with the transition's reason.
GuardHook = Callable[[bool, str], Awaitable[None]]
# The verdict of the scripts, processes and files an instance tracks (daemon/tracking.py).
TrackedVerdict = Callable[[VrrpInstance], track.TrackVerdict]
# A state change, told once its actions are done: (instance, state entered, priority).
Notify = Callable[[VrrpInstance, State, int], None]


class SyncLink(Protocol):
    """What an instance in a vrrp_sync_group asks its group and tells it (daemon/sync.py)."""

    def group_verdict(self, name: str) -> track.TrackVerdict | None: ...

    def may_take_over(self, name: str) -> bool: ...

    def transitioned(self, name: str, state: State) -> None: ...

    def own_fault_changed(self, name: str) -> None: ...


class Inbox:
    """One runner's queue: posted to from any thread, taken in order on the runner's loop.

    The runner is made on the loop it runs on (the VRRP loop, daemon/vrrploop.py);
    a post from another thread (the main loop's link events, reloads, stops) is
    handed over to that loop, never appended under the runner's feet.
    """

    def __init__(self) -> None:
        self.events: deque[Event] = deque()
        self._wake: asyncio.Future[None] | None = None
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._thread = threading.get_ident()

    def post(self, event: Event) -> None:
        if self._loop is not None and threading.get_ident() != self._thread:
            with contextlib.suppress(RuntimeError):  # its loop is closed: the runner is gone
                self._loop.call_soon_threadsafe(self._append, event)
        else:
            self._append(event)

    def _append(self, event: Event) -> None:
        self.events.append(event)
        self.wake_up()

    def wake_up(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def wait(self) -> None:
        """Until the next post or wake_up."""
        self._wake = asyncio.get_running_loop().create_future()
        try:
            await self._wake
        finally:
            self._wake = None


def fell_silent(peer: PeerSeen, now: float) -> bool:
    """The master we take over from stopped sending (its box may be gone).

    Its last advert is older than two of its intervals (a master being preempted
    still sends them; a backup takes over after at least three) and was not a
    priority 0 (a clean stop: its box still serves).
    """
    return peer.priority != 0 and now - peer.at > 2 * peer.interval
