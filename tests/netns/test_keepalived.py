"""A real keepalived (Debian's, VRRP-only) as the peer: v2 with PASS auth, and v3.

A rolling migration from keepalived is a real use: each box swaps its daemon
in turn, so for a while one side is keepalived and the other lvsagent.
"""

from __future__ import annotations

import signal

import pytest

from tests.netns.conftest import Pair
from tests.netns.lab import agent_config, keepalived_config, start_agent, start_keepalived

VIP = "10.99.0.100"
KA_MASTER = r"Entering MASTER STATE"
KA_BACKUP = r"Entering BACKUP STATE"

VERSIONS = [
    pytest.param(2, 1.0, id="v2-pass-1s"),
    pytest.param(3, 0.1, id="v3-100ms"),
]


@pytest.mark.parametrize(("version", "interval"), VERSIONS)
def test_lvsagent_master_keepalived_backup_both_ways(
    pair: Pair, keepalived_bin: str, version: int, interval: float
) -> None:
    ca = agent_config(
        pair.tmp / "a.toml", interface="eth0", priority=100, version=version, advert_int=interval
    )
    kb = keepalived_config(
        pair.tmp / "kb.conf", interface="eth0", priority=50, version=version, advert_int=interval
    )
    da = pair.track(start_agent(pair.a, ca, "agent-a"))
    da.wait_for(r"-> MASTER", 10)
    kab = pair.track(start_keepalived(pair.b, kb, pair.tmp, "keepalived-b"))
    kab.wait_for(KA_BACKUP, 10)
    # keepalived hears us and stays backup for several of its down intervals.
    kab.assert_quiet(KA_MASTER, 4 * interval * 3)
    assert pair.a.has_address("eth0", VIP) and not pair.b.has_address("eth0", VIP)
    assert "discarding" not in "\n".join(da.lines)

    # lvsagent stops: priority 0, keepalived takes over.
    mark = kab.mark()
    da.signal(signal.SIGTERM)
    assert da.exited(5) == 0
    kab.wait_for(r"received priority 0 advertisement", 5, after=mark)
    kab.wait_for(KA_MASTER, 5, after=mark)
    pair.b.wait_address("eth0", VIP, present=True, timeout=3)

    # lvsagent returns with the higher priority: it preempts keepalived.
    mark = kab.mark()
    da2 = pair.track(start_agent(pair.a, ca, "agent-a2"))
    assert "preempting lower-priority master 10.99.0.2" in da2.wait_for(r"-> MASTER", 10)
    kab.wait_for(KA_BACKUP, 5, after=mark)
    pair.a.wait_address("eth0", VIP, present=True, timeout=3)
    pair.b.wait_address("eth0", VIP, present=False, timeout=3)


@pytest.mark.parametrize(("version", "interval"), VERSIONS)
def test_keepalived_master_lvsagent_backup_both_ways(
    pair: Pair, keepalived_bin: str, version: int, interval: float
) -> None:
    ka = keepalived_config(
        pair.tmp / "ka.conf",
        interface="eth0",
        priority=100,
        version=version,
        advert_int=interval,
        state="MASTER",
    )
    cb = agent_config(
        pair.tmp / "b.toml", interface="eth0", priority=50, version=version, advert_int=interval
    )
    kaa = pair.track(start_keepalived(pair.a, ka, pair.tmp, "keepalived-a"))
    kaa.wait_for(KA_MASTER, 10)
    db = pair.track(start_agent(pair.b, cb, "agent-b"))
    db.wait_for(r"INIT -> BACKUP", 5)
    db.assert_quiet(r"-> MASTER", 4 * interval * 3)
    assert "discarding" not in "\n".join(db.lines)

    # keepalived killed outright: we take over on the Master_Down_Timer.
    mark = db.mark()
    kaa.hard_kill()
    assert "master_down_interval" in db.wait_for(r"-> MASTER", 3 * interval + 3, after=mark)
    pair.b.wait_address("eth0", VIP, present=True, timeout=3)

    # keepalived returns with the higher priority and preempts us.
    mark = db.mark()
    kaa2 = pair.track(start_keepalived(pair.a, ka, pair.tmp, "keepalived-a2"))
    kaa2.wait_for(KA_MASTER, 10)
    assert "higher priority 100 from 10.99.0.1" in db.wait_for(r"-> BACKUP", 5, after=mark)
    pair.b.wait_address("eth0", VIP, present=False, timeout=3)

    # keepalived stops cleanly: its priority 0 makes us master within Skew_Time.
    mark = db.mark()
    kaa2.signal(signal.SIGTERM)
    assert "priority 0" in db.wait_for(r"-> MASTER", 3, after=mark)
