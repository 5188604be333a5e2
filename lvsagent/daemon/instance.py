"""Runs one VRRP instance: wires the pure router to its sockets, addresses and clock.

One asyncio task per instance, on VRRP's own loop and thread (daemon/vrrploop.py:
no check, IPVS pass or nft transaction delays an advert), processes events
strictly one at a time, so the actions of one decision (advert, VIP, GARP) are
carried out in order and never interleave with the next decision.  Received
datagrams are validated in the reader callback (daemon/wire.py); only accepted
adverts enter the event queue, so a flood of invalid packets costs a counter
increment each and never delays our own adverts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import deque
from collections.abc import Callable

from lvsagent.config.schema import VrrpInstance
from lvsagent.config.scripts import TRACK_KEYS
from lvsagent.daemon import events as ev
from lvsagent.daemon.clock import DeadlineTimer
from lvsagent.daemon.derive import primary_address, router_params
from lvsagent.daemon.vips import VirtualAddresses
from lvsagent.daemon.wire import Counters, InstanceWire
from lvsagent.health.track import ServerUp, combine, evaluate_servers
from lvsagent.netlink.pyroute import AsyncIPRoute
from lvsagent.observe.journal import NOTICE, fields
from lvsagent.vrrp import addresses, syncgroup, track
from lvsagent.vrrp.machine import (
    Action,
    AddAddresses,
    RemoveAddresses,
    SendAdvert,
    SendGratuitousArp,
    SetLoopGuard,
    State,
    Transition,
    VirtualRouter,
)

log = logging.getLogger("lvsagent.vrrp")

# How often the VIP set is re-read and repaired (someone ran `ip addr del`).
ADDRESS_RECONCILE_INTERVAL = 2.0
# How many datagrams one reader callback takes before yielding to the loop.
RX_BURST = 64


class InstanceRunner:
    def __init__(
        self,
        inst: VrrpInstance,
        link: addresses.LinkInfo,
        ipr: AsyncIPRoute,
        guard: ev.GuardHook | None = None,
        server_up: ServerUp | None = None,
        peer_lost: Callable[[ipaddress.IPv4Address], None] | None = None,
        vmac: addresses.LinkInfo | None = None,
        tracked: ev.TrackedVerdict | None = None,
        notify: ev.Notify | None = None,
        sync: ev.SyncLink | None = None,
        peer_heard: Callable[[ipaddress.IPv4Address], None] | None = None,
    ) -> None:
        self.inst = inst
        # use_vmac's macvlan: it holds the VIPs and sends adverts and ARP (vrrp/vmac.py).
        self.vmac = vmac
        self.guard, self.server_up, self.tracked = guard, server_up, tracked
        self.notify, self.sync = notify, sync
        # This instance's own tracking (without its sync group's), for the group to read.
        self.own = track.TrackVerdict(False, 0, "not evaluated yet")
        # Called with the old master's address when we take over from it because it fell
        # silent: the health checker re-checks that box's real servers now, not at their
        # next interval (keepalived kept sending to a dead box until its delay_loop).
        self.peer_lost = peer_lost
        # Told every advert's source: the loop guard learns the peer's MAC by it.
        self.peer_heard = peer_heard
        self.link = link
        self.ipr = ipr
        self.tag = f"{inst.name} (vrid {inst.vrid} on {inst.interface})"
        self.source = inst.unicast_src or primary_address(inst, link)
        self.router = VirtualRouter(router_params(inst, self.source))
        self.counters = Counters()
        self.inbox = ev.Inbox()  # made on the loop it runs on; posted to from any thread
        self.timer = DeadlineTimer()
        holder = vmac or link
        self.vips = VirtualAddresses(
            self.tag, holder.ifname, holder.index, ipr, frozenset(inst.virtual_addresses),
            self.source,
        )  # fmt: skip
        self.wire = InstanceWire(
            self.tag, inst, link.index, link.mac, self.source, self.counters, vmac
        )
        self._reconcile_handle: asyncio.TimerHandle | None = None
        self._releasing: asyncio.Task[None] | None = None  # execute(): a MASTER's release
        self.master_seen: ipaddress.IPv4Address | None = None
        self.last_transition_at: float | None = None  # wall clock, for status

    # ----- inputs -----------------------------------------------------------

    def on_readable(self) -> None:
        for rx in self.wire.receive(RX_BURST):
            self._post(rx)

    def links_changed(self) -> None:
        """An interface or a tracked real server changed: re-evaluate tracking."""
        self._post(ev.Links())

    def stop(self) -> None:
        self._post(ev.Stop())

    def reconfigure(self, inst: VrrpInstance) -> None:
        """A reload changed this instance's tunables (daemon/reload.py): apply them in place."""
        self._post(ev.Reconfigure(inst))

    def member(self) -> syncgroup.Member:
        """This instance as its sync group sees it now."""
        r = self.router
        return syncgroup.Member(r.state, r.wants_master, self.own.fault, self.own.why)

    def follow(self, state: State, why: str) -> None:
        """Its sync group moved to ``state`` (MASTER or BACKUP): follow."""
        self._post(ev.Follow(state, why))

    # ----- the loop -----------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.wire.fileno(), self.on_readable)
        loop.add_reader(self.timer.fileno(), self._on_timer_fd)
        self._reconcile_handle = loop.call_later(ADDRESS_RECONCILE_INTERVAL, self._tick_reconcile)
        try:
            verdict = self._tracking()
            await self.execute(
                self.router.start(loop.time(), verdict.fault, verdict.adjustment, verdict.why)
            )
            while True:
                event = await self._next_event(loop)
                now = loop.time()
                if isinstance(event, ev.Stop):
                    await self.execute(self.router.shutdown(now))
                    return
                if isinstance(event, ev.Rx):
                    await self._advert(event, now)
                elif isinstance(event, ev.Links):
                    await self._apply_tracking(now)
                elif isinstance(event, ev.Reconcile):
                    await self.vips.reconcile(self.router.state == State.MASTER)
                elif isinstance(event, ev.Reconfigure):
                    await self._reconfigure(event.inst, now)
                elif isinstance(event, ev.Follow):
                    await self.execute(self.router.follow(event.state, now, event.why))
                # Timers are due regardless of how busy the queue is.
                await self._timers(loop)
                self._raise_a_failed_release()
        except Exception as exc:
            await self._give_up(exc)
            raise
        finally:
            if self._releasing is not None:
                self._releasing.cancel()
            if self._reconcile_handle is not None:
                self._reconcile_handle.cancel()
            loop.remove_reader(self.wire.fileno())
            loop.remove_reader(self.timer.fileno())
            self.close()

    async def _give_up(self, exc: Exception) -> None:
        """An exception escaped a decision: leave no VIP behind with no agent to hold it.

        What a stop does, each step on its own: a master says priority 0 (the peer
        takes over in Skew_Time), the guard is engaged, the addresses go.
        """
        log.error("%s: stopped by an internal error in state %s: %r; releasing its virtual "
                  "addresses on %s", self.tag, self.router.state.value, exc,
                  self.inst.interface)  # fmt: skip
        if self.router.state == State.MASTER:
            self.wire.send_advert(0)
        if self.guard is not None:
            try:
                await self.guard(True, f"{self.inst.name} stopped by an error")
            except Exception as guard_exc:
                log.error("%s: cannot engage the loop guard: %r", self.tag, guard_exc)
        try:
            await self.vips.transition(False)
        except Exception as vip_exc:
            log.error("%s: cannot remove its virtual addresses from %s: %r; remove them by "
                      "hand (ip addr del ... dev %s)", self.tag, self.inst.interface, vip_exc,
                      self.inst.interface)  # fmt: skip

    async def _advert(self, rx: ev.Rx, now: float) -> None:
        if self.peer_heard is not None:
            self.peer_heard(rx.src)
        actions = self.router.on_advert(rx.advert, rx.src, now)
        if self.router.state == State.MASTER and SendGratuitousArp in map(type, actions):
            log.log(NOTICE, "%s: lower-priority master %s (priority %d) heard: it may hold "
                    "clients (a split healed?); announcing the VIPs again", self.tag, rx.src,
                    rx.advert.priority)  # fmt: skip
        await self.execute(actions)
        self._note_master(rx)

    async def _timers(self, loop: asyncio.AbstractEventLoop) -> None:
        """The router's timers; a backup whose master-down timer ran out reads its socket first.

        A stall (a stopped process, a starved CPU, a long GC pause) can outlast
        Master_Down_Interval while the master's adverts wait on the socket, or
        in the queue behind events posted meanwhile.  The timer then says the
        master is silent when the socket says otherwise: every datagram waiting
        is checked and the accepted adverts applied, in order, before the timer
        is (keepalived's single thread reads its socket first too).
        """
        if self.router.master_down_expired(loop.time()):
            queued = self.inbox.events
            waiting = [e for e in queued if isinstance(e, ev.Rx)]
            if waiting:
                self.inbox.events = deque(e for e in queued if not isinstance(e, ev.Rx))
            waiting += self.wire.receive(None)
            for rx in waiting:
                await self._advert(rx, loop.time())
        now = loop.time()
        # A sync group lets a member take over alone only if the others would too.
        alone = self.sync is None or not self.router.master_down_expired(now) or (
            self.sync.may_take_over(self.inst.name)
        )
        await self.execute(self.router.on_timer(now, may_take_over=alone))

    def close(self) -> None:
        for resource in (self.wire, self.timer, self.vips):
            resource.close()

    async def _next_event(self, loop: asyncio.AbstractEventLoop) -> ev.Event | None:
        """The next queued event, or None once the router's next deadline has come.

        One future, woken by a producer or by the timerfd armed on the deadline
        (see :mod:`lvsagent.daemon.clock` for why not ``call_at``).
        """
        while not self.inbox.events:
            deadline = self.router.next_deadline()
            if deadline is not None and loop.time() >= deadline:
                return None
            self.timer.arm(deadline)
            await self.inbox.wait()
        return self.inbox.events.popleft()

    def _on_timer_fd(self) -> None:
        self.timer.consume()
        self.inbox.wake_up()

    def _post(self, event: ev.Event) -> None:
        self.inbox.post(event)

    def _note_master(self, rx: ev.Rx) -> None:
        """Log once whenever the master this backup follows changes: who holds the VIP."""
        if self.router.state != State.BACKUP or rx.advert.priority == 0:
            return
        if rx.src != self.master_seen:
            self.master_seen = rx.src
            log.info("%s: master is %s (priority %d, advert interval %.2f s)",
                     self.tag, rx.src, rx.advert.priority, rx.advert.interval)  # fmt: skip

    def _tick_reconcile(self) -> None:
        self._post(ev.Reconcile())
        loop = asyncio.get_running_loop()
        self._reconcile_handle = loop.call_later(ADDRESS_RECONCILE_INTERVAL, self._tick_reconcile)

    def _tracking(self) -> track.TrackVerdict:
        """Everything this instance tracks, and its sync group's members' faults."""
        names = [self.inst.interface, *(t.name for t in self.inst.track_interfaces)]
        up = {n: addresses.link_is_up(n) for n in names}
        verdicts = [track.evaluate(self.inst.interface, self.inst.track_interfaces, up)]
        if self.inst.track_real_servers and self.server_up is not None:
            verdicts.append(evaluate_servers(self.inst.track_real_servers, self.server_up))
        if self.tracked is not None:
            verdicts.append(self.tracked(self.inst))
        own = combine(*verdicts)
        was_fault, self.own = self.own.fault, own
        if self.sync is None:
            return own
        if own.fault != was_fault:
            self.sync.own_fault_changed(self.inst.name)
        group = self.sync.group_verdict(self.inst.name)
        return own if group is None else combine(own, group)

    async def _apply_tracking(self, now: float) -> None:
        verdict = self._tracking()
        before = self.router.priority
        await self.execute(self.router.set_tracking(verdict.fault, verdict.adjustment,
                                                    verdict.why, now))  # fmt: skip
        if self.router.priority != before:
            # keepalived says "Changing effective priority"; a silent change would leave an
            # operator guessing why the other box took over.  Lowered is trouble; back, not.
            lowered = self.router.priority < before
            log.log(
                logging.WARNING if lowered else NOTICE, "%s: effective priority %d -> %d (%s)",
                self.tag, before, self.router.priority, verdict.why,
                extra=fields(event="vrrp_priority", instance=self.inst.name,
                             priority=str(self.router.priority)),
            )  # fmt: skip

    # ----- outputs ------------------------------------------------------------

    def _took_over_from_silent(self, t: Transition) -> None:
        """To MASTER from a master that fell silent: its box's real servers are re-checked.

        Told before the addresses move; the health checker (on the main loop, a
        loop turn away) then holds new connections off that box.
        """
        peer = self.router.peer
        if t.new != State.MASTER or peer is None or self.peer_lost is None:
            return
        if ev.fell_silent(peer, asyncio.get_running_loop().time()):
            self.peer_lost(peer.address)

    async def execute(self, actions: list[Action]) -> None:
        """Carry out one decision's actions in order.

        The transition is logged after the packets, addresses and guard step of its
        decision (what a takeover waits for).  MASTER's guard release, a decision's
        last action, runs in a task of its own that announces the transition when it
        is done: adverts go on, and the next state or guard change waits for it.
        """
        if self._releasing is not None and any(
            isinstance(a, Transition | SetLoopGuard) for a in actions
        ):
            await self._releasing
        transitions = []
        for i, action in enumerate(actions):
            if isinstance(action, Transition):
                transitions.append(action)
                self._took_over_from_silent(action)
            elif isinstance(action, SetLoopGuard):
                if self.guard is not None:
                    t = transitions[-1] if transitions else None
                    why = f"{self.inst.name} " + (
                        f"{t.old.value} -> {t.new.value}" if t else self.router.state.value
                    )
                    if not action.engaged and i == len(actions) - 1:
                        self._releasing = asyncio.create_task(self._release(why, transitions))
                        return
                    await self.guard(action.engaged, why)
            elif isinstance(action, SendAdvert):
                self.wire.send_advert(action.priority)
            elif isinstance(action, AddAddresses | RemoveAddresses):
                await self.vips.transition(isinstance(action, AddAddresses))
                # Read back and repair (a VIP present with another prefix, say) right after.
                self._post(ev.Reconcile())
            elif isinstance(action, SendGratuitousArp):
                self.wire.announce(action.repeat)
        for t in transitions:
            self._announce(t)

    async def _release(self, why: str, transitions: list[Transition]) -> None:
        """What escapes the guard (it handles its own failures) is raised by run()."""
        assert self.guard is not None
        try:
            await self.guard(False, why)
        except Exception:
            self.inbox.wake_up()
            raise
        for t in transitions:
            self._announce(t)

    def _raise_a_failed_release(self) -> None:
        task = self._releasing
        exc = task.exception() if task and task.done() and not task.cancelled() else None
        if exc is not None:
            raise exc

    def _announce(self, t: Transition) -> None:
        """Log, count and tell the hooks and the sync group of one transition, in that order."""
        self.master_seen = None
        self.counters.transitions += 1
        self.counters.become_master += t.new == State.MASTER
        self.counters.release_master += t.old == State.MASTER
        self.last_transition_at = time.time()
        log.log(
            logging.WARNING if t.new == State.FAULT else NOTICE,  # FAULT is trouble
            "%s: %s -> %s (%s)", self.tag, t.old.value, t.new.value, t.reason,
            extra=fields(event="vrrp_transition", instance=self.inst.name, state=t.new.value,
                         old_state=t.old.value, vrid=str(self.inst.vrid)),
        )  # fmt: skip
        if self.notify is not None:
            self.notify(self.inst, t.new, self.router.priority)
        if self.sync is not None:
            self.sync.transitioned(self.inst.name, t.new)

    async def _reconfigure(self, inst: VrrpInstance, now: float) -> None:
        """New tunables, in the order a takeover would use them: VIPs, advert, ARP, tracking."""
        old, self.inst = self.inst, inst
        self.wire.reconfigure(inst)
        master = self.router.state == State.MASTER
        if await self.vips.replace(inst, master) and master:
            self.wire.announce(inst.garp_repeat)
        await self.execute(self.router.reconfigure(router_params(inst, self.source), now))
        tracking = ("track_interfaces", "track_real_servers", *TRACK_KEYS)
        if any(getattr(inst, key) != getattr(old, key) for key in tracking):
            await self._apply_tracking(now)

