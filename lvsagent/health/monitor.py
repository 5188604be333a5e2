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
and the daemon rebuilds and re-plans that service once or twice, not once per
server.  Measured (10 000 servers in 1000 services, one loopback listener, a
loaded host): all up in 40 s with a jitter per server, 12 s with one per
service, 5 s for the checks alone, without the daemon's reaction to them.

Pacing: the checks share the event loop with VRRP, and asyncio runs every
callback that is ready before it looks at a socket or a timer again, so one
loop turn that starts thousands of checks delays the next advert by all of
them.  The scheduler therefore starts due checks for at most PACE_SLICE of
its own time, then yields one loop turn, and goes on.  The checks' share of
a turn is bounded by time, not by a count sized from the whole turn's
length: a first version halved a batch whenever the turn was long, and in
the lab (10 000 TCP-checked servers, cold start, a loaded machine) turns
were long for other reasons (reconciler passes, the status publish), so the
batch sat at 4 starts a turn and the first checks of 10 000 servers took
over 3 minutes (keepalived: 4.7 s) while the adverts were late anyway.
With a slice, a slow turn costs the checks nothing more than the turn,
and a fast machine starts hundreds per slice.  Checks that are overdue
because of that wait their turn; an advert does not wait for them.

Concurrency: each check in flight holds one file descriptor.  The bound is
half the process's soft RLIMIT_NOFILE (the rest is left to the daemon),
at most MAX_CONCURRENCY.  Checks that would exceed it wait their turn (the
interval stretches, nothing breaks); thousands of servers at 1 s intervals
need the daemon to raise its soft limit to the hard one at start (systemd
gives 524288) when many of them may time out at once.

``on_change`` is called on the loop, once per loop iteration however many
verdicts changed in it, so a switch that takes out a thousand servers costs
the daemon one table recomputation, not a thousand.
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
from collections.abc import Awaitable, Callable, Collection, Iterable

from lvsagent.config.schema import Config, HealthCheck, RealServer, VirtualServer
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
from lvsagent.health.quorum import QuorumState, describe, quorum_state, service_name
from lvsagent.health.tracker import CheckResult, Tracker
from lvsagent.ipvs.desired import DestId, dest_key, service_key
from lvsagent.ipvs.model import ServiceKey
from lvsagent.observe.journal import NOTICE

__all__ = ["CheckSample", "HealthMonitor", "ServerHealth", "default_concurrency"]

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

    The daemon reads the verdicts as desired_table's arguments
    (:meth:`weights`, :meth:`removed`, :meth:`sorry`) and, for VRRP
    tracking, :meth:`server_up`; it is told of changes through ``on_change``.
    ``check`` and ``rng`` are for tests (a scripted check, no jitter).
    """

    def __init__(
        self,
        config: Config,
        on_change: Callable[[], None],
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
        self._entries: dict[DestId, Entry] = {}
        self._by_server: dict[tuple[ipaddress.IPv4Address, int], list[Entry]] = {}
        self._services: dict[ServiceKey, VirtualServer] = {}
        self._quorum: dict[ServiceKey, QuorumState] = {}
        self._heap: list[tuple[float, int, Entry]] = []
        self._seq = 0
        self._samples: deque[CheckSample] = deque(maxlen=MAX_SAMPLES)
        self._wakeup: asyncio.Future[None] | None = None
        self._sleep_until: float | None = None
        self._dirty: set[ServiceKey] = set()  # services with a verdict change not yet told
        # The services whose verdicts changed, as of the last ``on_change``: the daemon
        # rebuilds and re-plans only those (a whole 10 000-server table costs ~50 ms).
        self.changed: frozenset[ServiceKey] = frozenset()
        self._by_service: dict[ServiceKey, list[Entry]] = {}
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
                old = self._entries.get(ident)
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
                    # a whole delay_loop (30 s in the seed) to serve again.
                    spread = min(health.interval, FIRST_CHECK_SPREAD)
                    if grouped >= FIRST_CHECK_GROUP or jitter > spread:
                        grouped, jitter = 0, self._rng.uniform(0.0, spread)
                    grouped += 1
                    tracker = Tracker(name, policy_of(health), now, first_delay=jitter)
                entries[ident] = entry = Entry(ident, vs, rs, health, tracker)
                self._push(entry)
        for ident, entry in self._entries.items():
            if entries.get(ident) is not entry:
                entry.live = False
        self._entries = entries
        self._services = services
        self._by_server = {}
        self._by_service = {}
        for entry in entries.values():
            self._by_server.setdefault((entry.rs.address, entry.rs.port), []).append(entry)
            self._by_service.setdefault(entry.ident[0], []).append(entry)
        self._quorum = {k: v for k, v in self._quorum.items() if k in services}
        for key in services:
            self._update_quorum(key)
        self._poke()

    # ----- verdicts -------------------------------------------------------------

    def weights(self, services: Collection[ServiceKey] | None = None) -> dict[DestId, int]:
        """Weight overrides for desired_table: 0 for every drained server.

        Which are drained and which removed is :func:`disposition`'s rule (a
        failed server per ``on_failure``, an unreachable one removed, a suspect
        one drained; "replaced" while its service's sorry server serves).  One
        with no verdict yet (alpha) and not replaced is drained, not removed: it
        enters the table with the first pass at start, and its first passed check
        is then one weight edit that lets it serve at once, not an add that waits
        behind the start's other work.  ``services``: only theirs (default: all).
        """
        sorry = self.sorry()
        out: dict[DestId, int] = {}
        for e in self._of(services):
            what = e.disposition(e.ident[0] in sorry)
            if what == "drain":
                out[e.ident] = 0
            elif what == "serve" and e.dynamic is not None:  # misc_dynamic: the exit's weight
                out[e.ident] = e.dynamic
        return out

    def removed(self, services: Collection[ServiceKey] | None = None) -> frozenset[DestId]:
        """Servers to leave out of IPVS (see :meth:`weights`)."""
        sorry = self.sorry()
        return frozenset(
            e.ident for e in self._of(services) if e.disposition(e.ident[0] in sorry) == "remove"
        )

    def _of(self, services: Collection[ServiceKey] | None) -> Iterable[Entry]:
        if services is None:
            return self._entries.values()
        return (e for key in services for e in self._by_service.get(key, ()))

    def sorry(self) -> frozenset[ServiceKey]:
        """Services whose sorry server must be in IPVS now (desired_table's ``sorry``)."""
        return frozenset(
            key for key, q in self._quorum.items() if q.wants_sorry(self._services[key])
        )

    def quorum_lost(self) -> frozenset[ServiceKey]:
        """Services below their quorum now (with a sorry server or not), for status."""
        return frozenset(key for key, q in self._quorum.items() if q.lost)

    def server_up(self, address: ipaddress.IPv4Address, port: int) -> bool | None:
        """The verdict on a real server for VRRP tracking, across every service it is in.

        False if any of its checks says DOWN; None while any has no verdict
        (or nothing checks it); True when every check says UP.
        """
        verdicts = [e.up for e in self._by_server.get((address, port), ())]
        if False in verdicts:
            return False
        if not verdicts or None in verdicts:
            return None
        return True

    def recheck(self, addresses: Collection[ipaddress.IPv4Address], silent: bool = False) -> None:
        """Check these real servers now rather than at their next interval.

        ``silent``: their box stopped sending VRRP adverts (we took over from it).
        Until each re-check answers the server gets no new connections, and a
        failed re-check is a DOWN verdict at once (Tracker.recheck).
        """
        now = self._clock()
        wanted = set(addresses)
        for entry in self._entries.values():
            if entry.tracker is not None and entry.rs.address in wanted:
                before, was = entry.view(), entry.disposition(False)
                entry.tracker.recheck(now, silent)
                self._push(entry)
                if entry.view() != before:
                    log_disposition(entry, was, "its box fell silent; re-checking it")
                    self._changed(entry.ident[0])

    def snapshot(self) -> list[ServerHealth]:
        """Every checked server now, in config order, for status output and metrics."""
        return [health_of(e) for e in self._entries.values()]

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
            self._update_quorum(key)
        self.changed = frozenset(dirty)
        self.on_change()

    # ----- logging and quorum --------------------------------------------------------

    def _update_quorum(self, key: ServiceKey) -> None:
        vs = self._services.get(key)
        if vs is None:
            return
        before = self._quorum.get(key)
        was_lost = before is not None and before.lost
        state = quorum_state(vs, lambda rs: self._entry_up(key, rs), was_lost)
        if state is None:
            self._quorum.pop(key, None)
            return
        self._quorum[key] = state
        if (before is None and state.lost) or (before is not None and before.lost != state.lost):
            level = logging.WARNING if state.lost else NOTICE  # back is not trouble
            log.log(level, "%s", describe(vs, state), extra={"journal": {
                "LVSAGENT_EVENT": "quorum",
                "LVSAGENT_SERVICE": vs.label,
                "LVSAGENT_QUORUM": "LOST" if state.lost else "UP",
            }})  # fmt: skip

    def _entry_up(self, key: ServiceKey, rs: RealServer) -> bool:
        entry = self._entries.get((key, dest_key(rs)))
        return entry is not None and entry.up is True


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
