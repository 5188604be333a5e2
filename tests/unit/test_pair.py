"""Two or three routers joined by a fake link with a hand-advanced clock.

The link delivers each advert to every other router after a delay, or drops
it.  The property: whatever loss and delay happened, once the link is quiet
(lossless, prompt) for a few intervals there is exactly one master, and it is
the one with the highest priority (addresses break ties).
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from lvsagent.vrrp.machine import RouterParams, SendAdvert, State, VirtualRouter
from lvsagent.vrrp.packet import Advert

A = ipaddress.IPv4Address


class FakeLink:
    def __init__(self, routers: list[VirtualRouter]) -> None:
        self.routers = routers
        self.now = 0.0
        self.queue: list[tuple[float, int, int, Advert]] = []  # (at, seq, dest, advert)
        self.seq = itertools.count()
        self.loss: list[bool] = []
        self.delays: list[float] = []

    def _emit(self, sender: int, actions: list[object]) -> None:
        for a in actions:
            if not isinstance(a, SendAdvert):
                continue
            r = self.routers[sender]
            adv = Advert(
                r.params.version, r.params.vrid, a.priority, round(r.params.advert_int * 100), ()
            )
            for dest in range(len(self.routers)):
                if dest == sender:
                    continue
                if self.loss and self.loss.pop():
                    continue
                delay = self.delays.pop() if self.delays else 0.001
                heapq.heappush(self.queue, (self.now + delay, next(self.seq), dest, (adv, sender)))  # type: ignore[arg-type]

    def start(self) -> None:
        for i, r in enumerate(self.routers):
            self._emit(i, r.start(self.now))

    def run_until(self, end: float) -> None:
        while True:
            deadlines = [(r.next_deadline(), i) for i, r in enumerate(self.routers)]
            timer = min(((d, i) for d, i in deadlines if d is not None), default=None)
            packet_at = self.queue[0][0] if self.queue else None
            nxt = min(x for x in (timer[0] if timer else None, packet_at) if x is not None)
            if nxt > end:
                self.now = end
                return
            self.now = nxt
            if packet_at is not None and packet_at <= self.now:
                _, _, dest, (adv, sender) = heapq.heappop(self.queue)  # type: ignore[misc]
                src = self.routers[sender].params.primary_address
                self._emit(dest, self.routers[dest].on_advert(adv, src, self.now))
            for i, r in enumerate(self.routers):
                self._emit(i, r.on_timer(self.now))

    def masters(self) -> list[int]:
        return [i for i, r in enumerate(self.routers) if r.state == State.MASTER]


def make(
    priorities: list[int], version: int = 2, interval: float = 1.0, preempt: bool = True
) -> FakeLink:
    routers = [
        VirtualRouter(RouterParams(version, 51, p, interval, A(f"10.0.0.{i + 1}"), preempt=preempt))
        for i, p in enumerate(priorities)
    ]
    return FakeLink(routers)


def test_pair_elects_the_higher_priority() -> None:
    link = make([100, 50])
    link.start()
    link.run_until(10.0)
    assert link.masters() == [0]


def test_equal_priorities_elect_the_higher_address() -> None:
    link = make([100, 100, 100])
    link.start()
    link.run_until(10.0)
    assert link.masters() == [2]


def test_master_death_hands_over_and_return_preempts() -> None:
    link = make([100, 50])
    link.start()
    link.run_until(10.0)
    dead = link.routers[0]
    link.routers[0] = VirtualRouter(dead.params)  # a fresh, not-yet-started router: silent
    link.run_until(15.0)
    assert link.masters() == [1]
    link._emit(0, link.routers[0].start(link.now))
    link.run_until(25.0)
    assert link.masters() == [0]


def test_return_without_preempt_keeps_the_current_master() -> None:
    link = make([100, 50], preempt=False)
    link.start()
    link.run_until(10.0)
    link.routers[0] = VirtualRouter(link.routers[0].params)
    link.run_until(15.0)
    link._emit(0, link.routers[0].start(link.now))
    link.run_until(25.0)
    assert link.masters() == [1]


@settings(max_examples=150, deadline=None)
@given(
    priorities=st.lists(st.integers(1, 254), min_size=2, max_size=3),
    version=st.sampled_from([2, 3]),
    loss=st.lists(st.booleans(), max_size=200),
    delays=st.lists(st.floats(0.0, 2.5), max_size=200),
)
def test_random_loss_and_delay_never_leave_two_masters_once_quiet(
    priorities: list[int], version: int, loss: list[bool], delays: list[float]
) -> None:
    interval = 1.0 if version == 2 else 0.5
    link = make(priorities, version=version, interval=interval)
    link.loss, link.delays = list(loss), list(delays)
    link.start()
    link.run_until(30.0)
    link.loss, link.delays = [], []  # the link becomes quiet and reliable
    link.run_until(60.0)
    best = max(range(len(priorities)), key=lambda i: (priorities[i], i))
    assert link.masters() == [best]
