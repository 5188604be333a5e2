"""What a stopped agent leaves in the kernel, INSIDE the lab: by default a working real
server (loop guard engaged, IPVS kept); with ``decommission_on_stop`` nothing of ours.

Why: a maintenance stop of the master must not break the box as a real server (the seed's
keepalived setup lost half the requests that way), while an operator retiring the box
must be able to get every trace of lvsagent out without hunting for nft tables and
sysctls.  Same topology as test_agent_traffic.
"""

from __future__ import annotations

import pytest

from tests.kernel.agentlab import (
    Lab,
    assert_table,
    ipvs_listing,
    wait_master,
    wait_programmed,
    write_config,
)
from tests.kernel.uml import lab_only
from tests.netns.lab import Daemon

pytestmark = [
    lab_only(__file__),
    pytest.mark.timeout(120),
]


def started(lab: Lab, decommission: bool) -> tuple[str, Daemon]:
    config = write_config(lab.tmp / "director.toml", {"rs1": 1, "rs2": 1})
    text = config.read_text().replace(
        "[global]\n",
        f'[global]\ndecommission_on_stop = {str(decommission).lower()}\nstate_dir = "{lab.tmp}"\n',
    )
    config.write_text(text)
    before = lab.director.run("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip()
    agent = lab.agent(config)
    wait_programmed(agent, "start")
    wait_master(agent)
    return before, agent


def nft_tables(lab: Lab) -> str:
    return lab.director.run("nft", "list", "tables").stdout


def test_clean_stop_leaves_a_working_real_server(lab: Lab) -> None:
    _, agent = started(lab, decommission=False)
    assert "table ip lvsagent" in nft_tables(lab)
    assert agent.stop() == 0
    # BACKUP kernel state: the bypass redirect in place, the service kept.
    ruleset = lab.director.run("nft", "list", "table", "ip", "lvsagent").stdout
    assert "redirect" in ruleset, ruleset
    assert_table(lab.director, {"rs1": 1, "rs2": 1})


def test_decommission_removes_everything_lvsagent_changed(lab: Lab) -> None:
    before, agent = started(lab, decommission=True)
    assert lab.director.run("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"
    assert agent.stop() == 0
    assert "lvsagent" not in nft_tables(lab)
    assert "TCP" not in ipvs_listing(lab.director), ipvs_listing(lab.director)
    assert lab.director.run("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == before
