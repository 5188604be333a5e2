"""Two real `lvsagent run` processes on a veth pair: election, takeover, preemption."""

from __future__ import annotations

import signal

from tests.netns.conftest import Pair
from tests.netns.lab import Daemon, start_agent

VIP = "10.99.0.100"
MASTER = r"-> MASTER"
BACKUP = r"-> BACKUP"


def start_pair(pair: Pair) -> tuple[Daemon, Daemon]:
    """Both agents at once: whoever is up first may claim mastership for a moment."""
    ca, cb = pair.configs()
    da = pair.track(start_agent(pair.a, ca, "agent-a"))
    db = pair.track(start_agent(pair.b, cb, "agent-b"))
    return da, db


def test_two_agents_elect_exactly_one_master(pair: Pair) -> None:
    da, db = start_pair(pair)
    da.wait_for(MASTER, 10)
    db.wait_for(r"INIT -> BACKUP", 10)
    assert pair.a.has_address("eth0", VIP)
    assert not pair.b.has_address("eth0", VIP)
    # B keeps hearing A: two of its Master_Down_Intervals pass with no takeover.
    mark = db.mark()
    da.wait_for(r"added virtual address", 1)
    db.assert_quiet(MASTER, 2 * 3.8, after=mark)
    assert not pair.b.has_address("eth0", VIP)


def test_kill9_master_backup_takes_over_on_master_down_timer(pair: Pair) -> None:
    da, db = pair.settled_pair(*pair.configs())
    mark = db.mark()
    da.signal(signal.SIGKILL)
    line = db.wait_for(MASTER, 3.9 + 2, after=mark)
    assert "no advert from master 10.99.0.1 for master_down_interval 3.805 s" in line
    pair.b.wait_address("eth0", VIP, present=True, timeout=2)


def test_sigterm_master_sends_priority_zero_and_backup_takes_over_in_skew_time(
    pair: Pair,
) -> None:
    da, db = pair.settled_pair(*pair.configs())
    mark = db.mark()
    da.signal(signal.SIGTERM)
    line = db.wait_for(MASTER, 0.81 + 2, after=mark)
    assert "released (priority 0), skew_time elapsed" in line
    assert da.exited(5) == 0
    assert not pair.a.has_address("eth0", VIP)
    pair.b.wait_address("eth0", VIP, present=True, timeout=2)


def test_higher_priority_returns_and_preempts(pair: Pair) -> None:
    da, db = pair.settled_pair(*pair.configs(advert_int=0.1, version=3))
    da.signal(signal.SIGKILL)
    db.wait_for(MASTER, 5)
    ca = pair.tmp / "a.toml"
    mark_b = db.mark()
    da2 = pair.track(start_agent(pair.a, ca, "agent-a2"))
    line = da2.wait_for(MASTER, 5)
    assert "preempting lower-priority master 10.99.0.2 (50 < 100)" in line
    assert "higher priority 100 from 10.99.0.1" in db.wait_for(BACKUP, 5, after=mark_b)
    pair.a.wait_address("eth0", VIP, present=True, timeout=2)
    pair.b.wait_address("eth0", VIP, present=False, timeout=2)


def test_nopreempt_higher_priority_returns_as_backup(pair: Pair) -> None:
    # Without preemption the first to claim mastership keeps it, so A starts alone.
    ca, cb = pair.configs(advert_int=0.1, version=3, extra="preempt = false")
    da = pair.track(start_agent(pair.a, ca, "agent-a"))
    da.wait_for(MASTER, 5)
    db = pair.track(start_agent(pair.b, cb, "agent-b"))
    db.wait_for(r"INIT -> BACKUP", 5)
    da.signal(signal.SIGKILL)
    db.wait_for(MASTER, 5)
    da2 = pair.track(start_agent(pair.a, ca, "agent-a2"))
    da2.wait_for(r"INIT -> BACKUP", 5)
    # Many of A's Master_Down_Intervals (0.36 s) pass: it never preempts.
    da2.assert_quiet(MASTER, 3.0)
    assert pair.b.has_address("eth0", VIP) and not pair.a.has_address("eth0", VIP)


def test_unicast_peers_elect_and_fail_over(pair: Pair) -> None:
    ca, cb = pair.configs(
        version=3,
        advert_int=0.1,
        a_extra='unicast_src = "10.99.0.1"\nunicast_peers = ["10.99.0.2"]',
        b_extra='unicast_src = "10.99.0.2"\nunicast_peers = ["10.99.0.1"]',
    )
    da, db = pair.settled_pair(ca, cb)
    mark = db.mark()
    db.assert_quiet(MASTER, 1.0, after=mark)
    da.signal(signal.SIGTERM)
    assert "priority 0" in db.wait_for(MASTER, 3, after=mark)
