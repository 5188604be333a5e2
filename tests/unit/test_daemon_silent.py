"""When a takeover counts as "the old master fell silent" (its real servers then re-checked
at once, held off and, failing, taken down without retries): the real state machine on a
hand-advanced clock, for each way a backup becomes MASTER."""

from __future__ import annotations

import ipaddress

import pytest

from lvsagent.daemon.events import fell_silent
from lvsagent.vrrp.machine import RouterParams, State, VirtualRouter
from lvsagent.vrrp.packet import Advert

PEER = ipaddress.IPv4Address("172.16.0.31")


def backup(priority: int, version: int = 2, advert_int: float = 1.0) -> VirtualRouter:
    r = VirtualRouter(RouterParams(
        version=version, vrid=51, priority=priority, advert_int=advert_int,
        primary_address=ipaddress.IPv4Address("172.16.0.32"),
    ))  # fmt: skip
    r.start(0.0)
    return r


def advert(priority: int, version: int = 2, interval: float = 1.0) -> Advert:
    return Advert(version, 51, priority, round(interval * 100), (ipaddress.IPv4Address("1.2.3.4"),))


def until_master(r: VirtualRouter, now: float, step: float, peer_priority: int | None) -> float:
    """Advance the clock by ``step``; the peer sends an advert each step (None: silent)."""
    while r.state != State.MASTER:
        now += step
        if peer_priority is not None:
            r.on_advert(advert(peer_priority, r.params.version, step), PEER, now)
        r.on_timer(now)
        assert now < 60.0, "never took over"
    return now


@pytest.mark.parametrize(("version", "interval"), [(2, 1.0), (3, 0.1)])
def test_a_master_that_stopped_sending_fell_silent(version: int, interval: float) -> None:
    r = backup(50, version, interval)
    r.on_advert(advert(100, version, interval), PEER, 1.0)
    now = until_master(r, 1.0, interval / 10, None)
    assert r.peer is not None and fell_silent(r.peer, now)


def test_a_preempted_master_did_not() -> None:
    r = backup(150)  # preempts the lower-priority master that keeps sending
    now = until_master(r, 0.0, 1.0, 100)
    assert r.peer is not None and r.peer.priority == 100
    assert not fell_silent(r.peer, now)


def test_a_master_that_resigned_did_not() -> None:
    r = backup(50)
    r.on_advert(advert(100), PEER, 1.0)
    r.on_advert(advert(0), PEER, 1.5)  # a clean stop: its box still serves
    now = until_master(r, 1.5, 0.01, None)
    assert r.peer is not None and not fell_silent(r.peer, now)
