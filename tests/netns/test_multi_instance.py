"""Several VRRP instances in one agent: they start, elect, fail over and stop together.

Why: every instance reads and writes addresses over the agent's one rtnetlink socket at
the same moments (start, each transition, the periodic read-back); two dumps in flight
on one socket are refused by the kernel (EBUSY), which once crashed the agent at start.
"""

from __future__ import annotations

import re
import signal

import pytest

from tests.netns.conftest import Pair
from tests.netns.lab import Daemon, Netns, agent_config, start_agent

# VI_1 comes from agent_config (vrid 51, 10.99.0.100); the others are added here.
VIPS = {"VI_1": "10.99.0.100", "VI_2": "10.99.0.102", "VI_3": "10.99.0.103"}


def instances_config(pair: Pair, box: str, priority: int, count: int) -> None:
    """``count`` v3 instances at 0.1 s on eth0, the first as agent_config writes it."""
    extra = "".join(
        f"""
[[vrrp_instance]]
name = "VI_{n}"
interface = "eth0"
vrid = {50 + n}
priority = {priority}
advert_int = 0.1
version = 3
virtual_addresses = ["{VIPS[f"VI_{n}"]}/24"]
garp_master_delay = 1
"""
        for n in range(2, count + 1)
    )
    agent_config(
        pair.tmp / f"{box}.toml", interface="eth0", priority=priority, version=3,
        advert_int=0.1, extra=extra,
    )  # fmt: skip


def names(count: int) -> list[str]:
    return [f"VI_{n}" for n in range(1, count + 1)]


def wait_all(d: Daemon, state: str, count: int, after: int, timeout: float = 10) -> None:
    for name in names(count):
        d.wait_for(rf"{name} \(vrid .*-> {state}", timeout, after=after)


def holds(ns: Netns, count: int) -> set[str]:
    return {name for name in names(count) if ns.has_address("eth0", VIPS[name])}


@pytest.mark.parametrize("count", [2, 3])
def test_instances_elect_fail_over_and_stop_cleanly(pair: Pair, count: int) -> None:
    instances_config(pair, "a", 100, count)
    instances_config(pair, "b", 50, count)
    da = pair.track(start_agent(pair.a, pair.tmp / "a.toml", "agent-a"))
    wait_all(da, "MASTER", count, after=0)
    db = pair.track(start_agent(pair.b, pair.tmp / "b.toml", "agent-b"))
    wait_all(db, "BACKUP", count, after=0)
    for name in names(count):
        pair.a.wait_address("eth0", VIPS[name], present=True, timeout=2)
    # A few of B's Master_Down_Intervals (0.36 s): no takeover, nothing stopped.
    db.assert_quiet(r"-> MASTER|stopped unexpectedly", 1.5)
    assert holds(pair.b, count) == set()

    mark = db.mark()
    da.signal(signal.SIGTERM)
    assert da.exited(10) == 0
    wait_all(db, "MASTER", count, after=mark, timeout=5)
    for name in names(count):
        pair.b.wait_address("eth0", VIPS[name], present=True, timeout=2)
    assert holds(pair.a, count) == set()
    # The box's own address survives the instances' address work.
    assert "10.99.0.1/24" in pair.a.addresses("eth0")

    assert db.stop() == 0
    assert holds(pair.b, count) == set()
    assert "10.99.0.2/24" in pair.b.addresses("eth0")
    # Nothing refused on the way: no crash, and no address work to retry.
    trouble = r"stopped unexpectedly|cannot (update|add|remove) virtual addresses"
    assert not [line for line in da.lines + db.lines if re.search(trouble, line)]
