"""`lvsagent drain` in the lab: weight 0 in IPVS, kept through drift repair, reload, restart.

The daemon runs in a namespace of the lab kernel (IPVS); the test drives it
with the CLI over the control socket, edits IPVS by hand as an operator would
(``ipvsadm -e -w``), and reads the table back with ipvsadm.  The daemon's log
lines are the events waited on.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kernel.uml import lab_only
from tests.netns.lab import Netns, namespaces, start_agent, veth

pytestmark = [lab_only(__file__), pytest.mark.timeout(180)]

CONFIG = """
[global]
ipvs_resync_interval = 1
state_dir = "{state}"
control_socket = "{state}/control.sock"

[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
vrid = 51
priority = 255
virtual_addresses = ["10.50.0.100/24"]

[[virtual_server]]
address = "10.50.0.100"
port = 80
scheduler = "wrr"
[virtual_server.health]
type = "none"
[[virtual_server.real_server]]
address = "10.50.0.11"
port = 80
[[virtual_server.real_server]]
address = "10.50.0.12"
port = 80
weight = 2
"""
RS = "-a -t 10.50.0.100:80 -r 10.50.0.12:80 -g -w"


def weight_of_12(ns: Netns) -> str:
    rules = ns.run("ipvsadm", "-S", "-n").stdout.splitlines()
    (line,) = [r for r in rules if r.startswith(RS)]
    return line[len(RS) :].strip()


def cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "lvsagent.cli", *args, "--config", str(cfg)]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_drain_holds_through_drift_repair_reload_and_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cfg = tmp_path / "a.toml"
    cfg.write_text(CONFIG.format(state=state))
    with namespaces("director", "peer") as (ns, peer):
        veth(ns, "eth0", "10.50.0.1/24", peer, "eth0", "10.50.0.2/24")
        agent = start_agent(ns, cfg, "agent")
        try:
            agent.wait_for(r"ipvs: start: done", 30)
            assert weight_of_12(ns) == "2"
            unknown = cli(cfg, "drain", "10.50.0.100:80", "10.50.0.13:80")
            assert unknown.returncode == 64, unknown
            assert "has no real server 10.50.0.13:80" in unknown.stderr
            mark = agent.mark()
            done = cli(cfg, "drain", "10.50.0.100:80/tcp", "10.50.0.12:80")
            assert done.returncode == 0, done
            assert "drained (weight 0 in IPVS" in done.stdout
            agent.wait_for(r"ipvs: drain: done, 1 change\(s\) applied", 10, after=mark)
            assert weight_of_12(ns) == "0"
            status = cli(cfg, "status")
            assert "DRAINED by an operator since" in status.stdout, status.stdout
            # An operator's ipvsadm is drift: the resync puts the drain back.
            mark = agent.mark()
            ns.run("ipvsadm", "-e", "-t", "10.50.0.100:80", "-r", "10.50.0.12:80", "-g", "-w", "5")
            agent.wait_for(r"ipvs: resync: done, 1 change\(s\) applied", 10, after=mark)
            assert weight_of_12(ns) == "0"
            # A reload keeps it.
            mark = agent.mark()
            agent.signal(signal.SIGHUP)
            agent.wait_for(r"reload: .* applied", 10, after=mark)
            assert weight_of_12(ns) == "0"
        finally:
            assert agent.stop() == 0
        # A restart keeps it: the kernel already matches, drained server included.
        again = start_agent(ns, cfg, "agent-again")
        try:
            again.wait_for(r"drain: RS 10\.50\.0\.12:80 of 10\.50\.0\.100:80/tcp stays drained", 30)
            again.wait_for(r"ipvs: start: kernel already matches", 30)
            assert weight_of_12(ns) == "0"
            mark = again.mark()
            back = cli(cfg, "undrain", "10.50.0.100:80", "10.50.0.12")
            assert back.returncode == 0 and "undrained" in back.stdout, back
            again.wait_for(r"ipvs: drain: done, 1 change\(s\) applied", 10, after=mark)
            assert weight_of_12(ns) == "2"
        finally:
            again.stop()
