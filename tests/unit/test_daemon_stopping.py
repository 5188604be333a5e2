"""A master's stop hands its connections over (lvsagent/daemon/stopping.py): its own real
servers quiesced, the VIPs released one sync round later, the weights put back at the end."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from lvsagent.daemon.stopping import Handoff, own_quiesced
from lvsagent.ipvs.model import Dest, DestKey, Service, ServiceKey, Table

A, B = ipaddress.IPv4Address("10.0.0.31"), ipaddress.IPv4Address("10.0.0.32")
WEB = ServiceKey(address=ipaddress.IPv4Address("10.0.0.30"), port=80)
DNS = ServiceKey(address=ipaddress.IPv4Address("10.0.0.30"), port=53, protocol="udp")


def table(web: dict[ipaddress.IPv4Address, int], dns: dict[ipaddress.IPv4Address, int]) -> Table:
    def service(key: ServiceKey, weights: dict[ipaddress.IPv4Address, int]) -> Service:
        dests = tuple(Dest(DestKey(ip, key.port), w) for ip, w in weights.items())
        return Service(key, dests=dests)

    return Table(services=(service(WEB, web), service(DNS, dns)))


def test_own_servers_are_quiesced_where_another_box_takes_connections() -> None:
    assert own_quiesced(table({A: 1, B: 3}, {A: 2, B: 1}), {A}) == {
        (WEB, DestKey(A, 80)): 0,
        (DNS, DestKey(A, 53)): 0,
    }


def test_a_service_whose_only_live_server_is_ours_keeps_it() -> None:
    # B's server is down (weight 0) in DNS: quiescing A there would refuse every client.
    assert own_quiesced(table({A: 1, B: 1}, {A: 1, B: 0}), {A}) == {(WEB, DestKey(A, 80)): 0}
    assert own_quiesced(table({A: 1}, {A: 1}), {A}) == {}
    # Already at weight 0 (drained): nothing to do for it.
    assert own_quiesced(table({A: 0, B: 1}, {B: 1}), {A}) == {}


class FakeReconciler:
    def __init__(self, desired: Table, up: bool = True) -> None:
        self.desired, self.up = desired, up
        self.calls: list[tuple[str, Any]] = []

    def set_desired(self, desired: Table, why: str) -> None:
        self.desired = desired
        self.calls.append(("set", why))

    async def reconcile(self, why: str, fresh: bool = True) -> bool:
        self.calls.append(("reconcile", (why, fresh)))
        return True


class FakeGuard:
    def __init__(self, engaged: bool | None, sync_on: bool = True) -> None:
        self.engaged, self.sync_on = engaged, sync_on


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_master_quiesces_then_releases_and_puts_the_weights_back() -> None:
    async def scenario() -> tuple[list[str], FakeReconciler, dict[Any, int]]:
        events: list[str] = []
        rec = FakeReconciler(table({A: 1, B: 1}, {A: 1, B: 1}))
        handoff = Handoff(wait=0.05)
        started = handoff.start(
            rec, FakeGuard(engaged=False), {A},  # type: ignore[arg-type]
            lambda: table({A: 0, B: 1}, {A: 0, B: 1}), lambda: events.append("released"),
        )  # fmt: skip
        assert started and events == []  # not released at once: the sync round first
        quiesced = dict(handoff.quiesced)
        await handoff.released()
        await handoff.end(rec, lambda: table({A: 1, B: 1}, {A: 1, B: 1}))  # type: ignore[arg-type]
        assert handoff.quiesced == {}
        return events, rec, quiesced

    events, rec, quiesced = run(scenario())
    assert events == ["released"]
    assert set(quiesced) == {(WEB, DestKey(A, 80)), (DNS, DestKey(A, 53))}
    assert rec.calls == [
        ("set", "stopping: handoff"),
        ("set", "stopping: handoff over"),
        ("reconcile", ("stopping: handoff over", False)),
    ]


def test_no_handoff_for_a_backup_without_sync_or_without_ipvs() -> None:
    async def attempt(rec: FakeReconciler, guard: FakeGuard) -> tuple[bool, list[Any]]:
        handoff = Handoff(wait=0.0)
        started = handoff.start(rec, guard, {A}, lambda: rec.desired, lambda: None)  # type: ignore[arg-type]
        await handoff.released()
        await handoff.end(rec, lambda: rec.desired)  # type: ignore[arg-type]
        return started, rec.calls

    both = table({A: 1, B: 1}, {A: 1, B: 1})
    for rec, guard in [
        (FakeReconciler(both), FakeGuard(engaged=True)),  # BACKUP: the guard is engaged
        (FakeReconciler(both), FakeGuard(engaged=None)),  # no transition yet
        (FakeReconciler(both), FakeGuard(engaged=False, sync_on=False)),
        (FakeReconciler(both, up=False), FakeGuard(engaged=False)),  # IPVS not answering
        (FakeReconciler(table({A: 1}, {A: 1})), FakeGuard(engaged=False)),  # no peer server
    ]:
        assert run(attempt(rec, guard)) == (False, [])
