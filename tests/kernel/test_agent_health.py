"""Health checks driving the real kernel's IPVS, INSIDE the lab (issue #4's kernel test).

Why: the netns tests prove the checker against real listeners, the unit tests the
tracker; this proves the chain an operator relies on: a real server dies, the
daemon's check notices, IPVS gets weight 0 (drain: established connections stay),
the client's new connections stop reaching it, and all of it comes back when the
server does.  Same topology as test_agent_traffic (client, director, rs1, rs2 on one
bridge, DR); waiting is on the daemon's log lines and on replies, never on sleeps.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest

from tests.kernel.test_agent_traffic import (
    PORT,
    REAL,
    START_TIMEOUT,
    Connection,
    Lab,
    LineServer,
    ask_new,
    assert_table,
    lab,
    wait_master,
    wait_programmed,
    write_config,
)
from tests.kernel.test_lab import Netns
from tests.kernel.uml import lab_only

pytestmark = [
    lab_only(__file__),
    pytest.mark.timeout(120),
]

__all__ = ["lab"]  # the fixture, imported for pytest

HEALTH = """type = "tcp"
interval = 0.5
alpha = false
[virtual_server.health.tcp]
connect_timeout = 0.5
"""


def rs_line(name: str, verdict: str) -> str:
    return rf"RS {re.escape(REAL[name])}:{PORT} of \S+ {verdict}"


def test_dead_real_server_is_drained_in_ipvs_and_comes_back(lab: Lab) -> None:
    config = write_config(lab.tmp / "director.toml", {"rs1": 1, "rs2": 1}, health=HEALTH)
    agent = lab.agent(config)
    wait_programmed(agent, "start")
    wait_master(agent)
    assert ask_new(lab.client, 4) == Counter({"rs1": 2, "rs2": 2})
    kept = Connection(lab.client)
    lab.stack.callback(kept.close)
    survivor = kept.ask()
    victim = "rs2" if survivor == "rs1" else "rs1"

    mark = agent.mark()
    namespace: Netns = lab.servers[victim].ns
    lab.servers[victim].stop()  # refused from now on
    agent.wait_for(rs_line(victim, "DOWN"), START_TIMEOUT, after=mark)
    agent.wait_for(
        rf"ipvs: ~ dest {re.escape(REAL[victim])}:{PORT} .* weight 1 -> 0",
        START_TIMEOUT,
        after=mark,
    )
    assert_table(lab.director, {victim: 0, survivor: 1})
    assert ask_new(lab.client, 6) == Counter({survivor: 6}), "new connections avoid the dead one"
    assert kept.ask() == survivor

    mark = agent.mark()
    revived = LineServer(namespace, victim)
    lab.stack.callback(revived.stop)
    lab.servers[victim] = revived
    agent.wait_for(rs_line(victim, "UP"), START_TIMEOUT, after=mark)
    agent.wait_for(
        rf"ipvs: ~ dest {re.escape(REAL[victim])}:{PORT} .* weight 0 -> 1",
        START_TIMEOUT,
        after=mark,
    )
    assert_table(lab.director, {"rs1": 1, "rs2": 1})
    assert ask_new(lab.client, 4) == Counter({"rs1": 2, "rs2": 2})
