"""HealthMonitor: runs every real server's checks and holds their verdicts.

The verdict logic is the Tracker's (and what IPVS does with a verdict, its
module's ``disposition``), the quorum rule quorum's (all pure); the checks
are :mod:`.checks`, a checked server and its log lines :mod:`.entry`.  This
module schedules, bounds and records.

Scheduling: one task keeps a heap of (due, server) and starts the checks
that are due, each as its own task under a semaphore, so a silent server's
timeout never delays another server's check nor the VRRP timers on the same
loop.  Heap entries are never removed in place: an entry that no longer
matches its tracker's ``due`` (rescheduled, reloaded, forgotten) is skipped
when it comes up.  First checks are spread uniformly over each server's
interval, so a start or a reload does not send every check at once, but the
new servers of one service share their first moment (FIRST_CHECK_GROUP at a
time): their first verdicts then come within a few loop turns of each other,
and the daemon re-plans that service once or twice, not once per server.

Pacing: the checks share the event loop with VRRP, and asyncio runs every
ready callback before it looks at a socket or a timer again, so one turn that
starts thousands of checks delays the next advert by all of them.  The
scheduler starts due checks for at most PACE_SLICE of its own time, then
yields a turn.  The slice is time, not a count sized from the turn's length:
turns are long for other reasons too (reconciler passes, the status publish),
and a count shrank to a few starts a turn (README, "Health checks", has the
figures).

Concurrency: each check in flight holds one file descriptor.  The bound is
half the process's soft RLIMIT_NOFILE (the rest is left to the daemon),
at most MAX_CONCURRENCY.  Checks that would exceed it wait their turn (the
interval stretches, nothing breaks); thousands of servers at 1 s intervals
need the daemon to raise its soft limit to the hard one at start (systemd
gives 524288) when many of them may time out at once.

``on_change`` is called on the loop, once per loop iteration however many
verdicts changed in it, with the verdicts of the services that changed, so a
switch that takes out a thousand servers costs the daemon one recomputation of
those services, not a thousand.
"""

from __future__ import annotations

import asyncio
import heapq
import ipaddress
import logging
import random
import resource
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection

from lvsagent.config.schema import Config, HealthCheck, VirtualServer
from lvsagent.health.checks import run_check
from lvsagent.health.entry import (
    CheckSample,
    Entry,
    ServerHealth,
    health_of,
    log_disposition,
    log_transition,
    policy_of,
)
from lvsagent.health.quorum import QuorumState, describe, service_name
from lvsagent.health.tracker import CheckResult, Tracker
from lvsagent.health.verdicts import VerdictBook, Verdicts
from lvsagent.ipvs.desired import DestId, dest_key, service_key
from lvsagent.ipvs.model import ServiceKey
from lvsagent.observe.journal import NOTICE

__all__ = ["CheckSample", "HealthMonitor", "ServerHealth", "Verdicts", "default_concurrency"]

log = logging.getLogger("lvsagent.health")

MAX_CONCURRENCY = 8192
# Checks due this close together start in one scheduler pass: a few ms early
# is harmless, and it keeps wake-ups far below one per check at scale.
SLACK = 0.002
MAX_SAMPLES = 65536  # latencies kept for the metrics code between two drains


# One attempt of a server's check; tests pass a scripted one.
Check = Callable[[HealthCheck, ipaddress.IPv4Address, int], Awaitable[CheckResult]]


def default_concurrency() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONCURRENCY
    return max(16, min(MAX_CONCURRENCY, soft // 2))


# The first checks of new servers are spread over at most this many seconds.
FIRST_CHECK_SPREAD = 1.0
# New servers of one service checked first at the same moment, at most this many.
FIRST_CHECK_GROUP = 16
# Pacing: the scheduler's own time in one loop turn before it yields (see Pacing
# above).  Small against the 10 ms an advert may be late, large against one start.
PACE_SLICE = 0.002


class HealthMonitor:
    """Every real server's check, schedule and verdict, for one config at a time.

    Each change reaches the daemon as a Verdicts value through ``on_change`` (the
    changed services only); :meth:`verdicts` gives them all (start, reload), and
    :meth:`server_up` a server's verdict for VRRP tracking.
    ``check`` and ``rng`` are for tests (a scripted check, no jitter).
    """

    def __init__(
        self,
        config: Config,
        on_change: Callable[[Verdicts], None],
        *,
        concurrency: int | None = None,
        check: Check = run_check,
        clock: Callable[[], float] = time.monotonic,  # the default loop's clock
        rng: random.Random | None = None,
    ) -> None:
        self.on_change = on_change
        self.concurrency = concurrency or default_concurrency()
        self._check_one = check
        self._clock = clock
        self._rng = rng or random.Random()
        self.book = VerdictBook()  # the verdicts, as IPVS and tracking read them (pure)
        self._heap: list[tuple[float, int, Entry]] = []
        self._seq = 0
        self._samples: deque[CheckSample] = deque(maxlen=MAX_SAMPLES)
        self._wakeup: asyncio.Future[None] | None = None
        self._sleep_until: float | None = None
        # Services with a verdict change not yet told: ``on_change`` gets only theirs,
        # and the daemon re-plans only those (a whole 10 000-server table costs ~50 ms).
        self._dirty: set[ServiceKey] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Loop turns the scheduler has yielded to pace a storm of due checks.
        self.yields = 0
        self.reconfigure(config)

    # ----- configuration ------------------------------------------------------

    def reconfigure(self, config: Config) -> None:
        """Adopt a (re)loaded config.  Takes effect at once; ``on_change`` is not called.

        A server the old config had keeps its verdict, counters and schedule
        (a new check, interval or policy applies from its next round; a
        shorter interval at once).  A new server, or one whose check type
        changed to or from "none", starts as new: alpha, jittered first check.  Removed
        servers are forgotten; a check of theirs still in flight is ignored.
        """
        now = self._clock()
        entries: dict[DestId, Entry] = {}
        services: dict[ServiceKey, VirtualServer] = {}
        for vs in config.virtual_servers:
            key = service_key(vs)
            services[key] = vs
            grouped, jitter = FIRST_CHECK_GROUP, 0.0  # see the module's docstring
            for rs in vs.real_servers:
                ident = (key, dest_key(rs))
                health = rs.health or vs.health
                name = f"RS {rs.address}:{rs.port} of {service_name(vs)}"
                old = self.book.entries.get(ident)
                if old is not None and (old.tracker is None) == (health.type == "none"):
                    old.vs, old.rs, old.health = vs, rs, health
                    # Queued once already: again only if the reload moved its time.
                    if old.tracker is not None and old.tracker.reconfigure(
                        name, policy_of(health), now
                    ):
                        self._push(old)
                    entries[ident] = old
                    continue
                tracker = None
                if health.type != "none":
                    # Spread, but within a second: under alpha a server gets no
                    # traffic until its first check, so a restart must not wait
                    # a whole delay_loop (30 s in etc/box-a.toml) to serve again.
                    spread = min(health.interval, FIRST_CHECK_SPREAD)
                    if grouped >= FIRST_CHECK_GROUP or jitter > spread:
                        grouped, jitter = 0, self._rng.uniform(0.0, spread)
                    grouped += 1
                    tracker = Tracker(name, policy_of(health), now, first_delay=jitter)
                entries[ident] = entry = Entry(ident, vs, rs, health, tracker)
                self._push(entry)
        for vs, state in self.book.adopt(entries, services):
            _log_quorum(vs, state)
        self._poke()

    # ----- verdicts (the book's, for the daemon) ---------------------------------

    def verdicts(self, services: Collection[ServiceKey] | None = None) -> Verdicts:
        return self.book.verdicts(services)

    def weights(self, services: Collection[ServiceKey] | None = None) -> dict[DestId, int]:
        return self.book.weights(services)

    def removed(self, services: Collection[ServiceKey] | None = None) -> frozenset[DestId]:
        return self.book.removed(services)

    def sorry(self) -> frozenset[ServiceKey]:
        return self.book.sorry()

    def quorum_lost(self) -> frozenset[ServiceKey]:
        return self.book.quorum_lost()

    def server_up(self, address: ipaddress.IPv4Address, port: int) -> bool | None:
        return self.book.server_up(address, port)

    def recheck(self, addresses: Collection[ipaddress.IPv4Address], silent: bool = False) -> None:
        """Check these real servers now rather than at their next interval.

        ``silent``: their box stopped sending VRRP adverts (we took over from it).
        Until each re-check answers the server gets no new connections, and a
        failed re-check is a DOWN verdict at once (Tracker.recheck).
        """
        now = self._clock()
        wanted = set(addresses)
        for entry in self.book.entries.values():
            if entry.tracker is not None and entry.rs.address in wanted:
                before, was = entry.view(), entry.disposition(False)
                entry.tracker.recheck(now, silent)
                self._push(entry)
                if entry.view() != before:
                    log_disposition(entry, was, "its box fell silent; re-checking it")
                    self._changed(entry.ident[0])

    def snapshot(self) -> list[ServerHealth]:
        """Every checked server now, in config order, for status output and metrics."""
        return [health_of(e) for e in self.book.entries.values()]

    def drain_samples(self) -> list[CheckSample]:
        """Every attempt finished since the last drain (the oldest dropped past MAX_SAMPLES)."""
        out = list(self._samples)
        self._samples.clear()
        return out

    # ----- running ----------------------------------------------------------------

    async def run(self) -> None:
        """Check forever.  Cancel to stop: checks in flight are cancelled with it."""
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self.concurrency)
        try:
            while True:
                horizon = self._clock() + SLACK
                slice_end, started = self._clock() + PACE_SLICE, 0
                while self._heap and self._heap[0][0] <= horizon:
                    # At least one start per slice: a clock that jumps (a preempted
                    # process) must not turn pacing into a loop that starts nothing.
                    if started and self._clock() >= slice_end:
                        self.yields += 1
                        await asyncio.sleep(0)  # one loop turn for VRRP and the rest
                        slice_end, started = self._clock() + PACE_SLICE, 0
                        continue
                    due, _, entry = heapq.heappop(self._heap)
                    started += 1
                    if not self._current(entry, due):
                        continue
                    await slots.acquire()
                    if not self._current(entry, due):  # changed while we waited
                        slots.release()
                        continue
                    assert entry.tracker is not None
                    entry.tracker.begin(self._clock())
                    task = loop.create_task(self._check(entry, slots))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                await self._sleep(loop)
        finally:
            for task in list(self._tasks):
                task.cancel()

    def _current(self, entry: Entry, due: float) -> bool:
        return entry.live and entry.tracker is not None and entry.tracker.due == due

    async def _sleep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._wakeup = fut = loop.create_future()
        self._sleep_until = self._heap[0][0] if self._heap else None
        timer = None
        if self._sleep_until is not None:
            timer = loop.call_at(self._sleep_until, _settle, fut)
        try:
            await fut
        finally:
            self._wakeup = self._sleep_until = None
            if timer is not None:
                timer.cancel()

    async def _check(self, entry: Entry, slots: asyncio.Semaphore) -> None:
        try:
            result = await self._check_one(entry.health, entry.rs.address, entry.rs.port)
        except Exception as exc:  # a bug in one check must not stop the others
            log.exception("health check of %s failed unexpectedly", entry.ident[1])
            result = CheckResult(False, f"check error: {exc!r}", 0.0)
        finally:
            slots.release()
        self._record(entry, result)

    def _record(self, entry: Entry, result: CheckResult) -> None:
        if not entry.live or entry.tracker is None:
            return  # forgotten by a reload while in flight
        if entry.labels is None:
            entry.labels = (entry.vs.label, f"{entry.rs.address}:{entry.rs.port}")
        self._samples.append(CheckSample(*entry.labels, result.ok, result.latency))
        before, was = entry.view(), entry.disposition(False)
        transition = entry.tracker.finish(result, self._clock())
        self._push(entry)
        if result.weight is not None and result.weight != entry.dynamic:
            entry.dynamic = result.weight
            if transition is None and entry.up is True:
                self._changed(entry.ident[0])  # a new weight for IPVS, and no verdict change
        if transition is not None:
            log_transition(entry, transition)
            self._changed(entry.ident[0])
        elif entry.view() != before:  # the same verdict: suspect no more, or reachability
            log_disposition(entry, was, result.reason)
            self._changed(entry.ident[0])

    def _push(self, entry: Entry) -> None:
        due = entry.tracker.due if entry.tracker is not None else None
        if due is None:
            return
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, entry))
        if self._sleep_until is None or due < self._sleep_until:
            self._poke()  # the scheduler sleeps past this one (or with nothing queued)

    def _poke(self) -> None:
        if self._wakeup is not None:
            _settle(self._wakeup)

    def _changed(self, key: ServiceKey) -> None:
        """A verdict in ``key`` changed: at the end of this loop turn, redo its quorum, tell.

        Once per turn, not per server: an alpha start of thousands of servers stays linear.
        """
        if not self._dirty:
            asyncio.get_running_loop().call_soon(self._fire)
        self._dirty.add(key)

    def _fire(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for key in dirty:
            if (state := self.book.update_quorum(key)) is not None:
                _log_quorum(self.book.services[key], state)
        self.on_change(self.book.verdicts(dirty))


def _log_quorum(vs: VirtualServer, state: QuorumState) -> None:
    level = logging.WARNING if state.lost else NOTICE  # back is not trouble
    log.log(level, "%s", describe(vs, state), extra={"journal": {
        "LVSAGENT_EVENT": "quorum",
        "LVSAGENT_SERVICE": vs.label,
        "LVSAGENT_QUORUM": "LOST" if state.lost else "UP",
    }})  # fmt: skip


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
