"""The VRRP state machine against a fake link and a hand-advanced clock.

Each RFC rule has a case where it applies and a case where it must not.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from lvsagent.vrrp.machine import (
    AddAddresses,
    RemoveAddresses,
    RouterParams,
    SendAdvert,
    SendGratuitousArp,
    SetLoopGuard,
    State,
    Transition,
    VirtualRouter,
)
from lvsagent.vrrp.packet import Advert
from lvsagent.vrrp.timers import master_down_interval, skew_time

A = ipaddress.IPv4Address
LOW, HIGH = A("10.0.0.1"), A("10.0.0.2")


def router(
    priority: int = 100, version: int = 2, advert_int: float = 1.0, **kw: object
) -> VirtualRouter:
    params = RouterParams(
        version=version,
        vrid=51,
        priority=priority,
        advert_int=advert_int,
        primary_address=kw.pop("address", LOW),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )
    return VirtualRouter(params)


def advert(priority: int, version: int = 2, interval_cs: int = 100) -> Advert:
    return Advert(version, 51, priority, interval_cs, (A("10.0.0.100"),))


def started_backup(**kw: object) -> VirtualRouter:
    r = router(**kw)  # type: ignore[arg-type]
    r.start(0.0)
    assert r.state == State.BACKUP
    return r


def started_master(**kw: object) -> VirtualRouter:
    r = started_backup(**kw)
    r.on_timer(r.master_down_timer or 0.0)
    assert r.state == State.MASTER
    return r


# ----- timers ------------------------------------------------------------------


def test_timer_formulas_match_the_rfcs() -> None:
    assert skew_time(2, 100, 1.0) == pytest.approx(156 / 256)
    assert master_down_interval(2, 100, 1.0) == pytest.approx(3 + 156 / 256)
    # v3: skew scales with the interval
    assert skew_time(3, 200, 0.1) == pytest.approx(56 * 0.1 / 256)
    assert master_down_interval(3, 200, 0.1) == pytest.approx(0.3 + 56 * 0.1 / 256)
    # v2 skew does not depend on the interval
    assert skew_time(2, 200, 5.0) == skew_time(2, 200, 1.0)


# ----- startup ----------------------------------------------------------------


def test_startup_non_owner_becomes_backup_and_clears_addresses() -> None:
    r = router(priority=100)
    actions = r.start(0.0)
    assert isinstance(actions[0], Transition) and actions[0].new == State.BACKUP
    assert RemoveAddresses() in actions
    assert not any(isinstance(a, SendAdvert | AddAddresses) for a in actions)
    assert r.master_down_timer == pytest.approx(master_down_interval(2, 100, 1.0))


def test_startup_owner_becomes_master_at_once() -> None:
    r = router(priority=255)
    actions = r.start(0.0)
    assert r.state == State.MASTER
    assert actions[1:] == [
        AddAddresses(),
        SendAdvert(255),
        SendGratuitousArp(5),
        SetLoopGuard(False),
    ]


# ----- Master_Down_Timer ---------------------------------------------------------


def test_backup_becomes_master_exactly_when_master_down_timer_expires() -> None:
    r = started_backup()
    mdi = master_down_interval(2, 100, 1.0)
    assert r.on_timer(mdi - 0.001) == []
    assert r.state == State.BACKUP
    actions = r.on_timer(mdi)
    assert r.state == State.MASTER
    assert actions[1:] == [
        AddAddresses(),
        SendAdvert(100),
        SendGratuitousArp(5),
        SetLoopGuard(False),
    ]


def test_adverts_from_higher_master_keep_backup_down() -> None:
    r = started_backup()
    for t in range(1, 20):
        r.on_advert(advert(200), HIGH, float(t))
        assert r.on_timer(float(t)) == []
    assert r.state == State.BACKUP
    assert r.master_down_timer == pytest.approx(19 + master_down_interval(2, 100, 1.0))


# ----- priority 0 ------------------------------------------------------------------


def test_priority_zero_makes_backup_take_over_after_skew_time() -> None:
    r = started_backup(priority=100)
    r.on_advert(advert(200), HIGH, 1.0)
    r.on_advert(advert(0), HIGH, 1.5)
    skew = skew_time(2, 100, 1.0)
    assert r.on_timer(1.5 + skew - 0.001) == []
    r.on_timer(1.5 + skew)
    assert r.state == State.MASTER
    assert r.last_transition is not None and "priority 0" in r.last_transition.reason


def test_master_answers_priority_zero_with_an_advert() -> None:
    r = started_master()
    assert r.on_advert(advert(0), HIGH, 10.0) == [SendAdvert(100)]
    assert r.state == State.MASTER
    assert r.adver_timer == pytest.approx(11.0)


def test_shutdown_master_sends_priority_zero_then_releases() -> None:
    r = started_master()
    actions = r.shutdown(20.0)
    assert actions[0] == SendAdvert(0)
    assert actions[-1] == RemoveAddresses()
    assert r.state == State.INITIALIZE and r.next_deadline() is None


def test_shutdown_backup_sends_nothing() -> None:
    r = started_backup()
    actions = r.shutdown(1.0)
    assert not any(isinstance(a, SendAdvert) for a in actions)
    assert actions[-1] == RemoveAddresses()


# ----- preemption ------------------------------------------------------------------


def test_preempt_backup_ignores_lower_master_and_takes_over() -> None:
    r = started_backup(priority=150)
    t = 0.0
    while r.state == State.BACKUP and t < 10:
        t += 1.0
        r.on_advert(advert(100), HIGH, t)
        r.on_timer(t)
    assert r.state == State.MASTER
    assert t == pytest.approx(4.0)  # first whole second after the 3.41 s Master_Down_Interval
    assert r.last_transition is not None and "preempting" in r.last_transition.reason


def test_nopreempt_backup_tolerates_lower_master() -> None:
    r = started_backup(priority=150, preempt=False)
    for t in range(1, 30):
        r.on_advert(advert(100), HIGH, float(t))
        r.on_timer(float(t))
    assert r.state == State.BACKUP


def test_preempt_delay_holds_then_preempts() -> None:
    r = started_backup(priority=150, preempt_delay=10.0)
    t = 0.0
    while r.state == State.BACKUP and t < 30:
        t += 1.0
        r.on_advert(advert(100), HIGH, t)
        r.on_timer(t)
    assert r.state == State.MASTER
    # First lower advert at t=1, tolerated until 11; the last one accepted (t=10)
    # starts a 3.41 s Master_Down_Interval, so the first tick after it is t=14.
    assert t == 14.0


def test_preempt_delay_does_not_delay_a_dead_master() -> None:
    r = started_backup(priority=150, preempt_delay=10.0)
    r.on_timer(master_down_interval(2, 150, 1.0))
    assert r.state == State.MASTER


# ----- master receive -----------------------------------------------------------------


def test_master_yields_to_higher_priority() -> None:
    r = started_master()
    actions = r.on_advert(advert(200), HIGH, 10.0)
    assert r.state == State.BACKUP
    assert actions[-1] == RemoveAddresses()
    assert r.next_deadline() == pytest.approx(10.0 + master_down_interval(2, 100, 1.0))


def test_equal_priority_tie_break_on_primary_address() -> None:
    low = started_master(address=LOW)
    low.on_advert(advert(100), HIGH, 10.0)
    assert low.state == State.BACKUP
    high = started_master(address=HIGH)
    assert high.on_advert(advert(100), LOW, 10.0) == [SendAdvert(100), SendGratuitousArp(5)]
    assert high.state == State.MASTER


def test_master_answers_lower_priority_at_once_rfc9568() -> None:
    r = started_master(priority=200)
    r.on_timer(4.0)
    assert r.on_advert(advert(100), HIGH, 4.3)[0] == SendAdvert(200)
    assert r.adver_timer == pytest.approx(5.3)
    assert r.state == State.MASTER


def test_master_hearing_a_lower_master_announces_the_vip_once_per_interval() -> None:
    """A healed split: the other master's gratuitous ARP moved clients to its MAC. Ours
    moves them back (keepalived's garp_lower_prio_repeat); a stream of lower adverts
    gets one burst per advert interval, not one per advert."""
    r = started_master(priority=200, garp_lower_prio_repeat=3)
    assert r.on_advert(advert(100), HIGH, 10.0) == [SendAdvert(200), SendGratuitousArp(3)]
    assert r.on_advert(advert(100), HIGH, 10.5) == [SendAdvert(200)]
    assert r.on_advert(advert(100), HIGH, 10.99) == [SendAdvert(200)]
    assert r.on_advert(advert(100), HIGH, 11.0) == [SendAdvert(200), SendGratuitousArp(3)]


def test_no_burst_for_a_lower_master_when_disabled_or_for_our_own_advert() -> None:
    off = started_master(priority=200, garp_lower_prio_repeat=0)
    assert off.on_advert(advert(100), HIGH, 10.0) == [SendAdvert(200)]
    own = started_master(priority=200, address=LOW)
    assert own.on_advert(advert(200), LOW, 10.0) == []


def test_master_sends_on_its_interval_and_repeats_garp_later() -> None:
    r = started_master(garp_master_delay=5.0, garp_master_repeat=3)
    start = r.adver_timer or 0.0
    sends = 0
    garps = []
    t = start
    while t < start + 10:
        acts = r.on_timer(t)
        sends += sum(isinstance(a, SendAdvert) for a in acts)
        garps += [a for a in acts if isinstance(a, SendGratuitousArp)]
        t += 0.25
    assert sends == 10
    assert garps == [SendGratuitousArp(3)]


def test_no_second_garp_burst_when_disabled() -> None:
    r = started_master(garp_master_delay=0.0)
    assert r.garp_timer is None


# ----- v3 interval adoption ---------------------------------------------------------------


def test_v3_backup_adopts_master_interval() -> None:
    r = started_backup(version=3, priority=100, advert_int=1.0)
    r.on_advert(advert(200, version=3, interval_cs=10), HIGH, 5.0)
    assert r.master_adver_interval == pytest.approx(0.1)
    assert r.master_down_timer == pytest.approx(5.0 + master_down_interval(3, 100, 0.1))


def test_v2_backup_keeps_its_own_interval() -> None:
    r = started_backup(version=2, advert_int=1.0)
    r.on_advert(advert(200, version=2, interval_cs=300), HIGH, 5.0)
    assert r.master_adver_interval == 1.0


def test_v3_backup_ignores_interval_of_discarded_lower_advert() -> None:
    r = started_backup(version=3, priority=150, advert_int=1.0)
    r.on_advert(advert(100, version=3, interval_cs=10), HIGH, 5.0)
    assert r.master_adver_interval == 1.0


# ----- fault and tracking ---------------------------------------------------------------------


def test_fault_from_master_sends_priority_zero_and_releases() -> None:
    r = started_master()
    actions = r.set_tracking(True, 0, "interface eth1 down", 7.0)
    assert actions[0] == SendAdvert(0)
    assert r.state == State.FAULT and actions[-1] == RemoveAddresses()
    assert r.next_deadline() is None
    # Adverts in FAULT change nothing.
    assert r.on_advert(advert(1), HIGH, 8.0) == [] and r.state == State.FAULT
    actions = r.set_tracking(False, 0, "tracked interfaces up", 9.0)
    assert r.state == State.BACKUP


def test_tracking_without_fault_changes_only_priority() -> None:
    r = started_master(priority=100)
    assert r.set_tracking(False, -30, "eth1 down", 3.0) == []
    assert r.state == State.MASTER and r.priority == 70
    assert r.on_advert(advert(80), HIGH, 4.0)[-1] == RemoveAddresses()


def test_start_while_faulted_goes_to_fault() -> None:
    r = router()
    r.start(0.0, fault=True)
    assert r.state == State.FAULT


def test_owner_keeps_255_only_untracked() -> None:
    r = router(priority=255)
    assert r.priority == 255
    r.adjustment = -10
    assert r.priority == 245


# ----- the loop guard's place in each transition ---------------------------------


def kinds(actions: list[object]) -> list[str]:
    return [type(a).__name__ for a in actions if not isinstance(a, Transition)]


def test_loop_guard_engaged_before_addresses_go_and_released_after_they_come() -> None:
    """To BACKUP/FAULT/stop the guard is in place before the VIP goes; to MASTER it goes last."""
    r = router(priority=100)
    assert kinds(r.start(0.0)) == ["SetLoopGuard", "RemoveAddresses"]
    assert r.start(0.0)[-2] == SetLoopGuard(True)
    to_master = r.on_timer(r.master_down_timer or 0.0)
    assert kinds(to_master) == [
        "AddAddresses", "SendAdvert", "SendGratuitousArp", "SetLoopGuard"
    ]  # fmt: skip
    assert to_master[-1] == SetLoopGuard(False)
    higher = r.on_advert(advert(200), HIGH, 10.0)
    assert kinds(higher) == ["SetLoopGuard", "RemoveAddresses"] and SetLoopGuard(True) in higher
    r2 = router(priority=255)
    r2.start(0.0)
    fault = r2.set_tracking(True, 0, "eth0 down", 1.0)
    assert kinds(fault) == ["SendAdvert", "SetLoopGuard", "RemoveAddresses"]
    r3 = router(priority=255)
    r3.start(0.0)
    stop = r3.shutdown(2.0)
    assert kinds(stop) == ["SendAdvert", "SetLoopGuard", "RemoveAddresses"]
    assert SetLoopGuard(True) in stop


# ----- reload: tunables in place ------------------------------------------------------


def test_reload_master_announces_a_new_priority_at_once() -> None:
    r = started_master()
    assert r.reconfigure(replace(r.params, priority=30), 10.4) == [SendAdvert(30)]
    assert r.state == State.MASTER and r.adver_timer == pytest.approx(11.4)
    # A backup at 50 with preempt now outranks it: the master yields to its advert.
    actions = r.on_advert(advert(50), HIGH, 10.5)
    assert [a.new for a in actions if isinstance(a, Transition)] == [State.BACKUP]


def test_reload_master_with_unchanged_priority_and_interval_sends_nothing() -> None:
    r = started_master()
    timer = r.adver_timer
    assert r.reconfigure(replace(r.params, preempt=False, garp_repeat=1), 10.4) == []
    assert r.adver_timer == timer


def test_reload_backup_with_a_higher_priority_preempts_a_lower_master() -> None:
    r = started_backup(priority=50)
    r.on_advert(advert(100), HIGH, 1.0)
    assert r.reconfigure(replace(r.params, priority=150), 1.5) == []
    assert r.state == State.BACKUP  # no election on the spot: the next advert decides
    r.on_advert(advert(100), HIGH, 2.0)  # lower now, with preempt: discarded
    assert r.on_timer(2.0 + r.master_down_interval()) and r.state == State.MASTER


def test_reload_v2_backup_takes_the_new_interval() -> None:
    r = started_backup(advert_int=1.0)
    r.reconfigure(replace(r.params, advert_int=2.0), 1.0)
    assert r.master_adver_interval == 2.0
