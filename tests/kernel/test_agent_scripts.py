"""MISC_CHECK and the single director, driving the real kernel's IPVS inside the lab.

The check is a script the test writes: it exits with the number in a file named
after the real server it checks (LVSAGENT_RS_ADDRESS), so the test decides each
server's exit status.  keepalived's rules, read in ``ipvsadm -Ln``: exit 0 passes
and keeps the weight; with misc_dynamic exit 2..255 passes and sets the weight to
the status minus 2; exit 1 fails (drained: weight 0); back at 0, the server keeps
the weight the last dynamic status set.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest

from tests.kernel.agentlab import (
    REAL,
    START_TIMEOUT,
    VIP,
    Lab,
    ask_new,
    assert_table,
    dest_line,
    rs_line,
    wait_master,
    wait_programmed,
    write_config,
)
from tests.kernel.uml import lab_only

pytestmark = [lab_only(__file__), pytest.mark.timeout(120)]


def test_misc_dynamic_sets_the_weight_and_exit_1_drains(lab: Lab) -> None:
    status = lab.tmp / "status"
    status.mkdir()
    for address in REAL.values():
        (status / address).write_text("0\n")
    script = lab.tmp / "misc.sh"
    script.write_text(f'#!/bin/sh\nexit "$(cat {status}/"$LVSAGENT_RS_ADDRESS")"\n')
    script.chmod(0o755)
    health = f"""type = "misc"
interval = 0.5
alpha = false
on_failure = "drain"
[virtual_server.health.misc]
script = "{script}"
user = "root"
dynamic = true
"""
    config = write_config(lab.tmp / "director.toml", {"rs1": 1, "rs2": 1}, health=health)
    agent = lab.agent(config)
    wait_programmed(agent, "start")
    wait_master(agent)
    assert_table(lab.director, {"rs1": 1, "rs2": 1})

    mark = agent.mark()
    (status / REAL["rs1"]).write_text("7\n")  # misc_dynamic: weight 7 - 2
    agent.wait_for(dest_line("rs1", "~") + r" weight 1 -> 5$", START_TIMEOUT, after=mark)
    assert_table(lab.director, {"rs1": 5, "rs2": 1})

    mark = agent.mark()
    (status / REAL["rs1"]).write_text("1\n")  # failed
    line = agent.wait_for(rs_line("rs1", "DOWN"), START_TIMEOUT, after=mark)
    assert re.search(r"exit 1 after", line), line
    agent.wait_for(dest_line("rs1", "~") + r" weight 5 -> 0$", START_TIMEOUT, after=mark)
    assert_table(lab.director, {"rs1": 0, "rs2": 1})

    mark = agent.mark()
    (status / REAL["rs1"]).write_text("0\n")  # passes: the last dynamic weight again
    agent.wait_for(rs_line("rs1", "UP"), START_TIMEOUT, after=mark)
    agent.wait_for(dest_line("rs1", "~") + r" weight 0 -> 5$", START_TIMEOUT, after=mark)
    assert_table(lab.director, {"rs1": 5, "rs2": 1})


def test_a_single_director_balances_without_vrrp(lab: Lab) -> None:
    """No vrrp_instance: IPVS and the checks only; the VIP is the operator's (here: by hand)."""
    lab.director.run("ip", "addr", "add", f"{VIP}/24", "dev", "eth0")
    config = write_config(lab.tmp / "director.toml", {"rs1": 1, "rs2": 1})
    text = config.read_text()
    start, end = text.index("[[vrrp_instance]]"), text.index("[[virtual_server]]")
    config.write_text(text[:start] + text[end:])
    agent = lab.agent(config)
    agent.wait_for(r"0 VRRP instance\(s\), 1 virtual server\(s\)", START_TIMEOUT)
    wait_programmed(agent, "start")
    assert_table(lab.director, {"rs1": 1, "rs2": 1})
    assert ask_new(lab.client, 4) == Counter({"rs1": 2, "rs2": 2})
    assert "lvsagent" not in lab.director.run("nft", "list", "tables").stdout  # no guard
