"""HealthMonitor with a scripted check: scheduling, verdicts to weights, reload, quorum, logs.

The checks here are a dict lookup, so these tests exercise the monitor's own
logic on a real event loop without touching the network; the real checks
against real listeners are tests/netns/test_health.py.  Every wait is for an
event (``on_change``) under a timeout, never a sleep.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest

from lvsagent.config.schema import Config, HealthCheck, RealServer, VirtualServer
from lvsagent.health.monitor import (
    FIRST_CHECK_GROUP,
    FIRST_CHECK_SPREAD,
    PACE_SLICE,
    HealthMonitor,
)
from lvsagent.health.tracker import CheckResult
from lvsagent.health.verdicts import Verdicts
from lvsagent.ipvs.desired import desired_table
from lvsagent.ipvs.model import DestKey, ServiceKey
from lvsagent.observe.journal import NOTICE

VIP = ipaddress.IPv4Address("172.16.0.30")
A = ipaddress.IPv4Address("172.16.0.31")
B = ipaddress.IPv4Address("172.16.0.32")
WEB = ServiceKey(protocol="tcp", address=VIP, port=80)
OK = CheckResult(True, "connected", 0.001)
REFUSED = CheckResult(False, "connection refused", 0.001)


class NoJitter(random.Random):
    """First checks at once, so a long interval cannot hide a test's first result."""

    def uniform(self, a: float, b: float) -> float:
        return a


def health(**kw: Any) -> HealthCheck:
    """Drain unless told (weights() shows a failed server; removed() is tested on its own)."""
    return HealthCheck(**{"interval": 3600.0, "retry": 0, "on_failure": "drain", **kw})


def config(*servers: RealServer, **vs_kw: Any) -> Config:
    vs_kw.setdefault("health", health())
    return Config(
        "t.toml", virtual_servers=(VirtualServer(VIP, 80, real_servers=servers, **vs_kw),)
    )


class Harness:
    """A monitor on the running loop, its scripted check results and its on_change events."""

    def __init__(self, cfg: Config, **kw: Any) -> None:
        self.results: dict[ipaddress.IPv4Address, CheckResult] = {}
        self.checked: list[ipaddress.IPv4Address] = []
        self.changes = 0
        self.last: Verdicts | None = None
        self._changed = asyncio.Event()
        kw.setdefault("check", self.check)
        self.monitor = HealthMonitor(cfg, self.on_change, rng=NoJitter(), **kw)

    async def check(self, h: HealthCheck, address: ipaddress.IPv4Address, port: int) -> CheckResult:
        self.checked.append(address)
        return self.results.get(address, OK)

    def on_change(self, verdicts: Verdicts) -> None:
        self.last = verdicts
        self.changes += 1
        self._changed.set()

    async def until(self, cond: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not cond():
                self._changed.clear()
                await self._changed.wait()


@asynccontextmanager
async def running(cfg: Config, **kw: Any) -> AsyncIterator[Harness]:
    h = Harness(cfg, **kw)
    task = asyncio.create_task(h.monitor.run())
    try:
        yield h
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


def test_alpha_servers_get_no_traffic_until_their_first_check_passes() -> None:
    async def body() -> None:
        cfg = config(RealServer(A, 80), RealServer(B, 80, weight=3))
        async with running(cfg) as h:
            m = h.monitor
            assert m.weights() == {(WEB, DestKey(A, 80)): 0, (WEB, DestKey(B, 80)): 0}
            assert m.server_up(A, 80) is None
            await h.until(lambda: not m.weights())
            assert m.server_up(A, 80) is True and m.server_up(B, 80) is True
            assert desired_table(cfg, m.weights(), m.removed()) == desired_table(cfg)

    run(body)


def test_a_failed_server_is_drained_or_removed_per_on_failure() -> None:
    async def body() -> None:
        cfg = config(RealServer(A, 80), RealServer(B, 80, health=health(on_failure="remove")))
        h = Harness(cfg)
        h.results = {A: REFUSED, B: REFUSED}
        task = asyncio.create_task(h.monitor.run())
        try:
            await h.until(lambda: h.monitor.server_up(B, 80) is False)
            await h.until(lambda: h.monitor.server_up(A, 80) is False)
            assert h.monitor.weights() == {(WEB, DestKey(A, 80)): 0}
            assert h.monitor.removed() == {(WEB, DestKey(B, 80))}
        finally:
            task.cancel()

    run(body)


def test_transitions_are_logged_with_journal_fields(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        cfg = config(RealServer(A, 80), health=health(alpha=False))
        async with running(cfg) as h:
            h.results[A] = REFUSED
            await h.until(lambda: h.monitor.server_up(A, 80) is False)

    caplog.set_level(logging.INFO, "lvsagent.health")
    run(body)
    (record,) = [r for r in caplog.records if "DOWN" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert (
        record.getMessage()
        == "RS 172.16.0.31:80 of 172.16.0.30:80 DOWN (connection refused, 1 of 1)"
    )
    assert record.journal == {  # type: ignore[attr-defined]
        "LVSAGENT_EVENT": "health",
        "LVSAGENT_RS": "172.16.0.31:80",
        "LVSAGENT_SERVICE": "172.16.0.30:80/tcp",
        "LVSAGENT_HEALTH": "DOWN",
    }


def test_many_changes_in_one_loop_turn_call_on_change_once() -> None:
    async def body() -> None:
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        servers = [RealServer(ipaddress.IPv4Address(f"10.0.0.{i}"), 80) for i in range(1, 21)]
        h: Harness

        async def held(hc: HealthCheck, address: ipaddress.IPv4Address, port: int) -> CheckResult:
            h.checked.append(address)
            await gate
            return OK

        h = Harness(config(*servers), check=held)
        task = asyncio.create_task(h.monitor.run())
        try:
            async with asyncio.timeout(5):
                while len(h.checked) < 20:
                    await asyncio.sleep(0)  # let the scheduler start every check
            gate.set_result(None)
            await h.until(lambda: not h.monitor.weights())
            assert h.changes == 1
        finally:
            task.cancel()

    run(body)


def test_recheck_checks_now_instead_of_an_hour_later() -> None:
    async def body() -> None:
        async with running(config(RealServer(A, 80), RealServer(B, 80))) as h:
            await h.until(lambda: h.monitor.server_up(A, 80) is True)
            await h.until(lambda: h.monitor.server_up(B, 80) is True)
            h.results[A] = REFUSED
            h.monitor.recheck([A])
            await h.until(lambda: h.monitor.server_up(A, 80) is False)
            assert h.checked.count(B) == 1, "only the named servers are rechecked"

    run(body)


def test_reload_keeps_known_servers_and_starts_new_ones_afresh() -> None:
    async def body() -> None:
        async with running(config(RealServer(A, 80), RealServer(B, 80))) as h:
            m = h.monitor
            await h.until(lambda: not m.weights())
            c = ipaddress.IPv4Address("172.16.0.33")
            h.results[c] = REFUSED
            m.reconfigure(config(RealServer(A, 80, weight=5), RealServer(c, 80)))
            assert m.server_up(A, 80) is True  # kept
            assert m.server_up(B, 80) is None  # forgotten
            assert m.server_up(c, 80) is None  # new, alpha
            assert m.weights() == {(WEB, DestKey(c, 80)): 0}
            assert [(s.address, s.weight) for s in m.snapshot()] == [(A, 5), (c, 1)]
            await h.until(lambda: m.server_up(c, 80) is False)
            assert h.checked.count(A) == 1, "a kept server keeps its schedule"

    run(body)


def test_sorry_server_while_quorum_is_lost(caplog: pytest.LogCaptureFixture) -> None:
    sorry = (ipaddress.IPv4Address("192.0.2.200"), 80)

    async def body() -> None:
        cfg = config(RealServer(A, 80), RealServer(B, 80), quorum=2, sorry_server=sorry)
        async with running(cfg) as h:
            m = h.monitor
            assert m.sorry() == {WEB}, "nothing has passed a check yet"
            await h.until(lambda: not m.sorry())
            h.results[B] = REFUSED
            m.recheck([B])
            await h.until(lambda: bool(m.sorry()))
            table = desired_table(cfg, m.weights(), m.removed(), m.sorry())
            # keepalived: the sorry server replaces the real servers, the live one (A) too;
            # they are drained (health() asks for drain), and still checked.
            assert [(d.key, d.weight) for d in table.services[0].dests] == [
                (DestKey(A, 80), 0),
                (DestKey(B, 80), 0),
                (DestKey(*sorry), 1),
            ]
            assert m.server_up(A, 80) is True
            h.results[B] = OK
            m.recheck([B])
            await h.until(lambda: not m.sorry())

    caplog.set_level(NOTICE, "lvsagent.health")  # quorum lost is WARNING, back is NOTICE
    run(body)
    quorum = [r.getMessage() for r in caplog.records if "quorum" in r.getMessage()]
    assert quorum == [
        "VS 172.16.0.30:80: lost quorum (live weight 0 < 2); "
        "sorry server 192.0.2.200:80 added in place of the real servers",
        "VS 172.16.0.30:80: quorum back (live weight 2 >= 2); "
        "sorry server 192.0.2.200:80 removed, real servers back",
        "VS 172.16.0.30:80: lost quorum (live weight 1 < 2); "
        "sorry server 192.0.2.200:80 added in place of the real servers",
        "VS 172.16.0.30:80: quorum back (live weight 2 >= 2); "
        "sorry server 192.0.2.200:80 removed, real servers back",
    ]


def test_type_none_is_always_up_and_never_checked() -> None:
    async def body() -> None:
        # B is checked (tcp, its own health): once its check has run, A's would have too.
        cfg = config(
            RealServer(A, 80), RealServer(B, 80, health=health(type="tcp")),
            health=health(type="none"),
        )  # fmt: skip
        async with running(cfg) as h:
            assert h.monitor.server_up(A, 80) is True
            assert h.monitor.weights() == {(WEB, DestKey(B, 80)): 0}  # alpha: B until checked
            await h.until(lambda: B in h.checked)
            assert A not in h.checked
            (s, _) = h.monitor.snapshot()
            assert s.up is True and s.reason == "not checked (type none)"

    run(body)


def test_concurrency_is_bounded() -> None:
    async def body() -> None:
        in_flight = peak = 0
        servers = [RealServer(ipaddress.IPv4Address(f"10.0.0.{i}"), 80) for i in range(1, 31)]
        h: Harness

        async def slow(hc: HealthCheck, address: ipaddress.IPv4Address, port: int) -> CheckResult:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            for _ in range(3):
                await asyncio.sleep(0)
            in_flight -= 1
            return OK

        h = Harness(config(*servers), check=slow, concurrency=4)
        task = asyncio.create_task(h.monitor.run())
        try:
            await h.until(lambda: not h.monitor.weights())
        finally:
            task.cancel()
        assert peak == 4

    run(body)


def test_samples_are_drained_once() -> None:
    async def body() -> None:
        async with running(config(RealServer(A, 80))) as h:
            await h.until(lambda: not h.monitor.weights())
            (sample,) = h.monitor.drain_samples()
            assert (sample.service, sample.ok, sample.latency) == (
                "172.16.0.30:80/tcp",
                True,
                0.001,
            )
            assert h.monitor.drain_samples() == []
            (s,) = h.monitor.snapshot()
            assert (s.up, s.reason, s.latency, s.transitions) == (True, "connected", 0.001, 1)

    run(body)


def test_reloading_the_same_config_queues_nothing_more() -> None:
    """A kept server is queued once; a reload that does not move its time adds nothing (the
    heap grew by every server at each reload before)."""
    cfg = config(RealServer(A, 80), RealServer(B, 80))
    m = HealthMonitor(cfg, lambda v: None, check=Harness(cfg).check, rng=NoJitter())
    queued = len(m._heap)
    for _ in range(3):
        m.reconfigure(cfg)
    assert len(m._heap) == queued == 2


def test_on_change_names_the_services_whose_verdicts_changed() -> None:
    tls = ServiceKey(protocol="tcp", address=VIP, port=443)

    async def body() -> None:
        web = VirtualServer(VIP, 80, health=health(), real_servers=(RealServer(A, 80),))
        https = VirtualServer(VIP, 443, health=health(), real_servers=(RealServer(B, 443),))
        async with running(Config("t.toml", virtual_servers=(web, https))) as h:
            m = h.monitor
            await h.until(lambda: not m.weights())  # both passed their first check
            h.results[B] = REFUSED
            m.recheck([B])
            await h.until(lambda: bool(m.weights()))
            assert h.last is not None and h.last.services == {tls}
            # Verdicts per service: what the daemon rebuilds for that change alone.
            assert m.weights([tls]) == {(tls, DestKey(B, 443)): 0}
            assert m.weights([WEB]) == {} and m.removed([tls]) == frozenset()

    run(body)


def test_first_checks_are_spread_over_the_first_second() -> None:
    # Jitter, so that a restart does not fire 200 checks in the same millisecond, but
    # within a second (not a whole 10 s interval): alpha servers get no traffic until then.
    servers = [RealServer(ipaddress.IPv4Address(f"10.1.0.{i + 1}"), 80) for i in range(200)]
    now = 1_000.0
    m = HealthMonitor(
        config(*servers, health=health(interval=10.0)), lambda v: None,
        clock=lambda: now, rng=random.Random(7),
    )  # fmt: skip
    firsts = sorted(
        e.tracker.due - now for e in m.book.entries.values() if e.tracker and e.tracker.due
    )
    assert len(firsts) == 200 and firsts[0] >= 0.0 and firsts[-1] < 1.0
    # No clump: at most a group of one service's servers at one moment.
    moments = {t: firsts.count(t) for t in firsts}
    assert max(moments.values()) == FIRST_CHECK_GROUP
    assert len(moments) == -(-200 // FIRST_CHECK_GROUP)


def test_the_servers_of_one_service_are_first_checked_together() -> None:
    """Their first verdicts then cost the daemon one rebuild of the service, not one each."""
    web = [RealServer(ipaddress.IPv4Address(f"10.1.0.{i + 1}"), 80) for i in range(10)]
    mail = [RealServer(ipaddress.IPv4Address(f"10.2.0.{i + 1}"), 25) for i in range(10)]
    hc = health(interval=10.0)
    cfg = Config(
        "t.toml",
        virtual_servers=(
            VirtualServer(VIP, 80, real_servers=tuple(web), health=hc),
            VirtualServer(VIP, 25, real_servers=tuple(mail), health=hc),
        ),
    )
    m = HealthMonitor(cfg, lambda v: None, clock=lambda: 1_000.0, rng=random.Random(7))
    firsts = {
        port: {e.tracker.due for e in m.book.entries.values() if e.tracker and e.rs.port == port}
        for port in (80, 25)
    }
    assert len(firsts[80]) == 1 and len(firsts[25]) == 1 and firsts[80] != firsts[25]


# ----- a box that fell silent; servers that answer and servers that do not ---------------------

UNREACHABLE = CheckResult(False, "connect timeout 3.0 s", 0.001, unreachable=True)


def test_the_default_is_keepalived_s_a_failed_server_leaves_ipvs() -> None:
    assert HealthCheck().on_failure == "remove"


def test_a_silent_box_s_server_gets_no_new_connection_until_its_recheck_answers() -> None:
    async def body() -> None:
        gate: asyncio.Future[CheckResult] = asyncio.get_running_loop().create_future()
        h: Harness

        async def held(hc: HealthCheck, address: ipaddress.IPv4Address, port: int) -> CheckResult:
            h.checked.append(address)
            if len(h.checked) > 2:  # the re-check of A waits for the gate
                return await gate
            return OK

        cfg = config(RealServer(A, 80), RealServer(B, 80), health=health(on_failure="remove"))
        h = Harness(cfg, check=held)
        task = asyncio.create_task(h.monitor.run())
        try:
            m = h.monitor
            await h.until(lambda: not m.weights() and not m.removed())
            changes = h.changes
            m.recheck([A], silent=True)
            # At once, before the check has run: weight 0 (not removed: a live server
            # keeps its connections), and the daemon is told.
            assert m.weights() == {(WEB, DestKey(A, 80)): 0} and m.removed() == frozenset()
            await h.until(lambda: h.changes > changes)
            assert m.server_up(A, 80) is True, "suspect is not a verdict"
            gate.set_result(OK)
            await h.until(lambda: not m.weights())
            assert m.server_up(A, 80) is True and m.removed() == frozenset()
        finally:
            task.cancel()

    run(body)


def test_a_silent_box_s_server_that_fails_its_recheck_is_removed_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> None:
        # retry 1 and fall 2: neither is waited for once the box fell silent.
        cfg = config(RealServer(A, 80), RealServer(B, 80), health=health(retry=1, fall=2))
        async with running(cfg) as h:
            m = h.monitor
            await h.until(lambda: not m.weights())
            h.results[A] = UNREACHABLE
            m.recheck([A], silent=True)
            await h.until(lambda: m.server_up(A, 80) is False)
            assert h.checked.count(A) == 2, "the first check and one re-check, no retry"
            # on_failure = "drain", but nothing that reaches A can finish: removed.
            assert m.removed() == {(WEB, DestKey(A, 80))} and m.weights() == {}

    caplog.set_level(logging.INFO, "lvsagent.health")
    run(body)
    down = [r.getMessage() for r in caplog.records if " DOWN " in r.getMessage()]
    assert down == [
        "RS 172.16.0.31:80 of 172.16.0.30:80 DOWN (connect timeout 3.0 s, re-checked after its "
        "box fell silent); unreachable: removed from IPVS, not drained"
    ]


def test_a_down_server_moves_between_drained_and_removed_as_it_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> None:
        async with running(config(RealServer(A, 80), RealServer(B, 80))) as h:
            m = h.monitor
            await h.until(lambda: not m.weights())
            h.results[A] = REFUSED  # it answers: drained, its connections may finish
            m.recheck([A])
            await h.until(lambda: m.server_up(A, 80) is False)
            assert m.weights() == {(WEB, DestKey(A, 80)): 0} and m.removed() == frozenset()
            changes = h.changes
            h.results[A] = UNREACHABLE  # gone: removed
            m.recheck([A])
            await h.until(lambda: h.changes > changes)
            assert m.removed() == {(WEB, DestKey(A, 80))} and m.weights() == {}
            assert h.last is not None and h.last.services == {WEB}
            changes = h.changes
            h.results[A] = REFUSED  # back, still failing: drained again
            m.recheck([A])
            await h.until(lambda: h.changes > changes)
            assert m.weights() == {(WEB, DestKey(A, 80)): 0} and m.removed() == frozenset()

    caplog.set_level(logging.INFO, "lvsagent.health")
    run(body)
    lines = [r.getMessage() for r in caplog.records if "172.16.0.31" in r.getMessage()]
    assert lines[-2:] == [
        "RS 172.16.0.31:80 of 172.16.0.30:80 DOWN (connect timeout 3.0 s): removed from IPVS",
        "RS 172.16.0.31:80 of 172.16.0.30:80 DOWN (connection refused): drained (weight 0)",
    ]


def _storm(step: float, n: int = 2000) -> tuple[list[int], HealthMonitor]:
    """``n`` checks due at once on a loop whose clock moves ``step`` s per reading; returns
    how many checks started between two turns of another callback (an advert's timer)."""
    servers = [
        RealServer(ipaddress.IPv4Address(f"10.{i // 250}.0.{i % 250 + 1}"), 80) for i in range(n)
    ]
    started_between: list[int] = []

    async def body() -> None:
        loop = asyncio.get_running_loop()
        ticks = [0.0]

        def clock() -> float:
            ticks[0] += step
            return ticks[0]

        started = 0

        async def check(hc: HealthCheck, address: ipaddress.IPv4Address, port: int) -> CheckResult:
            nonlocal started
            started += 1
            return OK

        def other() -> None:  # a callback that wants a turn whenever it can get one
            nonlocal started
            started_between.append(started)
            started = 0
            if not stop.done():
                loop.call_soon(other)

        stop: asyncio.Future[None] = loop.create_future()
        h = Harness(config(*servers), check=check, clock=clock)
        ticks[0] += 2 * FIRST_CHECK_SPREAD  # every first check is due: a storm
        task = asyncio.create_task(h.monitor.run())
        loop.call_soon(other)
        try:
            await h.until(lambda: not h.monitor.weights(), timeout=90.0)  # a bound, not a figure
        finally:
            stop.set_result(None)
            task.cancel()
        started_between.append(started)
        storm.append(h.monitor)

    storm: list[HealthMonitor] = []
    run(body)
    assert sum(started_between) == n
    return started_between, storm[0]


def test_a_storm_of_due_checks_on_a_slow_loop_still_starts_one_check_a_turn() -> None:
    """Every clock reading 0.1 s later (a loaded machine): each slice is used up by one
    start, so another callback gets a turn after every start, and the checks go on."""
    between, monitor = _storm(0.1)
    assert max(between) <= 1
    assert monitor.yields >= 1999


def test_a_storm_of_due_checks_on_a_fast_loop_is_paced_by_time_not_by_count() -> None:
    """A reading every PACE_SLICE / 8: a slice holds a few starts (then the loop gets a
    turn), neither one nor all of them; however long the other turns are."""
    between, monitor = _storm(PACE_SLICE / 8)
    busy = [k for k in between if k]
    assert max(busy) <= 8
    assert sorted(busy)[len(busy) // 2] >= 2
    assert monitor.yields >= 2000 // 8


def test_every_server_enters_the_table_at_start_and_serves_after_its_own_first_check() -> None:
    """Alpha at start: no traffic before its first check passes, but in IPVS from the first
    pass (at weight 0) whatever on_failure says; each server's weight comes with its own
    verdict, not when every server has one."""

    async def body() -> None:
        removing = health(on_failure="remove")
        cfg = config(RealServer(A, 80, health=removing), RealServer(B, 80, health=removing))
        gate: asyncio.Future[CheckResult] = asyncio.get_running_loop().create_future()

        async def check(hc: HealthCheck, address: ipaddress.IPv4Address, port: int) -> CheckResult:
            return OK if address == A else await gate  # B's first check hangs

        async with running(cfg, check=check) as h:
            m = h.monitor
            assert m.removed() == frozenset()
            assert m.weights() == {(WEB, DestKey(A, 80)): 0, (WEB, DestKey(B, 80)): 0}
            await h.until(lambda: m.server_up(A, 80) is True)
            assert m.weights() == {(WEB, DestKey(B, 80)): 0}  # A serves, B still waits
            gate.set_result(REFUSED)
            await h.until(lambda: m.server_up(B, 80) is False)
            assert m.removed() == {(WEB, DestKey(B, 80))} and m.weights() == {}

    run(body)
