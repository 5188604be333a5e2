"""Real TCP through a DR service that the real ``lvsagent run`` daemon programs, INSIDE the lab.

Why: the unit tests prove the planner and the kernel tests prove the adapter; this proves the
daemon as an operator runs it — VRRP master adding the VIP, the IPVS reconciler programming the
service, SIGHUP applying only the difference, resync repairing ``ipvsadm -C`` and a restart
adopting the table — by the traffic a client actually sees.  On the host (no IPVS) it skips; run

    python -m tests.kernel.uml --timeout 600 -- "$PWD/.venv/bin/python" -m pytest \
        -q tests/kernel/test_agent_traffic.py

Topology (192.0.2.0/24, a documentation range, inside namespaces made here, inside our guest):
client .1, director .10 (runs lvsagent: VRRP priority 255, VIP .100), rs1 .11 and rs2 .12 (VIP
on lo, arp_ignore=1, arp_announce=2), all on one bridge.  The real servers are line servers:
every line received on a connection is answered with the server's name, so one connection can
stay open across a reload or a restart and still say where it goes.

Sockets are made in their namespace by a short-lived thread that setns()es into it (a socket
belongs to the namespace it was created in), so client and servers run in this process and no
interpreter is started per connection.  Waiting is on the daemon's log lines and on the
servers' replies, never on sleeps.
"""

from __future__ import annotations

import re
import signal
from collections import Counter

import pytest

from tests.kernel.agentlab import (
    CLIENT,
    PORT,
    REAL,
    START_TIMEOUT,
    VIP,
    Connection,
    Lab,
    ask_new,
    assert_table,
    connection_entries,
    dest_line,
    other,
    wait_master,
    wait_programmed,
    write_config,
)
from tests.kernel.uml import lab_only

pytestmark = [
    lab_only(__file__),
    # Boot-free but netlink-heavy: a wedged daemon must fail one test, not the lab's deadline.
    pytest.mark.timeout(120),
]

# ----- the tests -----------------------------------------------------------------------------


def test_round_robin_spreads_new_connections(lab: Lab) -> None:
    config = write_config(lab.tmp / "director.toml", {"rs1": 1, "rs2": 1})
    agent = lab.agent(config)
    wait_programmed(agent, "start")
    wait_master(agent)
    assert_table(lab.director, {"rs1": 1, "rs2": 1})

    answers = ask_new(lab.client, 20)

    assert answers == Counter({"rs1": 10, "rs2": 10}), answers
    # Each server saw exactly the connections the client counted: nothing bypassed IPVS.
    assert {name: s.accepted for name, s in lab.servers.items()} == {"rs1": 10, "rs2": 10}


def test_drain_by_reload_keeps_the_connection_and_moves_new_ones(lab: Lab) -> None:
    config = write_config(lab.tmp / "director.toml", {"rs1": 1, "rs2": 1})
    agent = lab.agent(config)
    wait_programmed(agent, "start")
    wait_master(agent)
    kept = Connection(lab.client)
    lab.stack.callback(kept.close)
    drained = kept.ask()
    assert drained in REAL

    write_config(config, {drained: 0, other(drained): 1})
    mark = agent.mark()
    agent.signal(signal.SIGHUP)
    agent.wait_for(r"ipvs: config changed: applying 1 change\(s\)$", START_TIMEOUT, after=mark)
    agent.wait_for(dest_line(drained, "~") + r" weight 1 -> 0$", START_TIMEOUT, after=mark)
    assert_table(lab.director, {drained: 0, other(drained): 1})

    assert kept.ask() == drained, "the established connection must stay on the drained server"
    assert ask_new(lab.client, 10) == Counter({other(drained): 10})
    assert kept.ask() == drained
    # Exactly one change: nothing else was re-sent.
    ops = [line for line in agent.lines[mark:] if re.search(r"ipvs: [+~-] ", line)]
    assert len(ops) == 1, ops


def test_resync_repairs_a_flush_and_restart_adopts_the_table(lab: Lab) -> None:
    weights = {"rs1": 1, "rs2": 1}
    config = write_config(lab.tmp / "director.toml", weights, resync=1.0)
    first = lab.agent(config, "director-1")
    wait_programmed(first, "start")
    wait_master(first)

    # Drift: somebody flushes the table behind the daemon's back.
    mark = first.mark()
    lab.director.run("ipvsadm", "-C")
    wait_programmed(first, "resync", after=mark)
    assert_table(lab.director, weights)
    assert ask_new(lab.client, 4) == Counter({"rs1": 2, "rs2": 2})

    kept = Connection(lab.client)
    lab.stack.callback(kept.close)
    landed = kept.ask()
    entry = rf"ESTABLISHED\s+{re.escape(CLIENT)}:\d+\s+{re.escape(VIP)}:{PORT}\s+"
    entry += rf"{re.escape(REAL[landed])}:{PORT}"
    assert re.search(entry, connection_entries(lab.director)), connection_entries(lab.director)

    # SIGTERM: VRRP gives the VIP up, IPVS is left as it is (table and connection entries).
    assert first.stop() == 0, "\n".join(first.lines[-20:])
    assert_table(lab.director, weights)
    assert re.search(entry, connection_entries(lab.director)), connection_entries(lab.director)

    # A restart adopts the table: nothing is re-sent, so the connection keeps its server.
    second = lab.agent(config, "director-2")
    second.wait_for(r"ipvs: start: kernel already matches \(1 services\)$", START_TIMEOUT)
    wait_master(second)
    assert kept.ask() == landed, "the established connection must survive the restart"
    assert_table(lab.director, weights)
    assert ask_new(lab.client, 4) == Counter({"rs1": 2, "rs2": 2})
    ops = [line for line in second.lines if re.search(r"ipvs: [+~-] ", line)]
    assert ops == [], ops
