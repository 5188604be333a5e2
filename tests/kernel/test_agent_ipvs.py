"""The real daemon programs IPVS in the lab: create, plan, foreign services, reload.

Runs inside the kernel lab (user-mode Linux with IPVS); skips on the host,
where the kernel has none.  Each test makes its own namespaces; the daemon's
log lines are the events waited on.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from tests.kernel.uml import lab_only
from tests.netns.lab import Netns, namespaces, start_agent, veth

pytestmark = [
    lab_only(__file__),
    pytest.mark.timeout(120),
]

VRRP = """
[global]
ipvs_resync_interval = 1
ipvs_timeout_tcp = 600

[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
vrid = 51
priority = 255
virtual_addresses = ["10.50.0.100/24"]
"""


def service(head: str, sched: str, dests: list[tuple[str, int]]) -> str:
    text = f'\n[[virtual_server]]\n{head}\nscheduler = "{sched}"\n'
    text += '[virtual_server.health]\ntype = "none"\n'
    for addr, weight in dests:
        text += f'[[virtual_server.real_server]]\naddress = "{addr}"\nport = 80\n'
        text += f"weight = {weight}\n"
    return text


WEB = 'address = "10.50.0.100"\nport = 80\nprotocol = "tcp"'
MARK = "fwmark = 3"
DNS = 'address = "10.50.0.100"\nport = 53\nprotocol = "udp"'


def write(path: Path, *services: str) -> Path:
    path.write_text(VRRP + "".join(services))
    return path


def ipvs_rules(ns: Netns) -> list[str]:
    return sorted(ns.run("ipvsadm", "-S", "-n").stdout.splitlines())


def test_creates_every_service_then_plan_reports_nothing(tmp_path: Path) -> None:
    with namespaces("director", "peer") as (ns, peer):
        veth(ns, "eth0", "10.50.0.1/24", peer, "eth0", "10.50.0.2/24")
        cfg = write(
            tmp_path / "a.toml",
            service(WEB, "rr", [("10.50.0.11", 1), ("10.50.0.12", 2)]),
            service(MARK, "wlc", [("10.50.0.11", 1), ("10.50.0.12", 1)]),
            service(DNS, "sh", [("10.50.0.11", 1)]),
        )
        agent = start_agent(ns, cfg, "agent")
        try:
            agent.wait_for(r"ipvs: start: done, 8 change\(s\) applied", 30)
            rules = ipvs_rules(ns)
            assert "-A -t 10.50.0.100:80 -s rr" in rules
            assert "-a -t 10.50.0.100:80 -r 10.50.0.12:80 -g -w 2" in rules
            assert "-A -f 3 -s wlc" in rules
            assert "-A -u 10.50.0.100:53 -s sh" in rules
            assert len(rules) == 8
            timeouts = ns.run("ipvsadm", "-L", "--timeout").stdout
            assert "Timeout (tcp tcpfin udp): 600 120 300" in timeouts
            # `plan` reads the same kernel and finds nothing to do.
            out = ns.run(sys.executable, "-m", "lvsagent.cli", "plan", str(cfg)).stdout
            assert "nothing to change" in out
            # A changed file: plan prints the one change and does not make it.
            cfg2 = write(
                tmp_path / "b.toml",
                service(WEB, "rr", [("10.50.0.11", 1), ("10.50.0.12", 0)]),
                service(MARK, "wlc", [("10.50.0.11", 1), ("10.50.0.12", 1)]),
                service(DNS, "sh", [("10.50.0.11", 1)]),
            )
            out = ns.run(sys.executable, "-m", "lvsagent.cli", "plan", str(cfg2)).stdout
            assert out.strip() == "~ dest 10.50.0.12:80 of TCP 10.50.0.100:80 weight 2 -> 0"
            assert ipvs_rules(ns) == rules
        finally:
            agent.stop()


def test_foreign_service_is_reported_and_left_alone(tmp_path: Path) -> None:
    with namespaces("director", "peer") as (ns, peer):
        veth(ns, "eth0", "10.50.0.1/24", peer, "eth0", "10.50.0.2/24")
        cfg = write(tmp_path / "a.toml", service(WEB, "rr", [("10.50.0.11", 1)]))
        agent = start_agent(ns, cfg, "agent")
        try:
            agent.wait_for(r"ipvs: start: done", 30)
            ns.run("ipvsadm", "-A", "-t", "10.50.0.200:443", "-s", "wlc")
            agent.wait_for(r"service TCP 10\.50\.0\.200:443 is in the kernel but not in the", 10)
            assert "-A -t 10.50.0.200:443 -s wlc" in ipvs_rules(ns)
        finally:
            agent.stop()


def test_reload_applies_only_the_difference_and_refuses_a_bad_file(tmp_path: Path) -> None:
    with namespaces("director", "peer") as (ns, peer):
        veth(ns, "eth0", "10.50.0.1/24", peer, "eth0", "10.50.0.2/24")
        cfg = write(
            tmp_path / "a.toml",
            service(WEB, "rr", [("10.50.0.11", 1), ("10.50.0.12", 1)]),
            service(MARK, "wlc", [("10.50.0.11", 1)]),
        )
        agent = start_agent(ns, cfg, "agent")
        try:
            agent.wait_for(r"ipvs: start: done, 5 change\(s\) applied", 30)
            agent.wait_for(r"-> MASTER", 10)
            before = ipvs_rules(ns)
            # A broken file: errors logged with line numbers, nothing changes.
            good = cfg.read_text()
            cfg.write_text(good.replace("vrid = 51", "vrid = 999"))
            mark = agent.mark()
            agent.signal(signal.SIGHUP)
            agent.wait_for(r"reload: .*a\.toml:\d+: vrrp_instance\[0\]\.vrid", 10, after=mark)
            agent.wait_for(r"still running the previous config", 10, after=mark)
            assert ipvs_rules(ns) == before
            # A good file: one dest out, one service in with its dest; nothing else.
            write(
                cfg,
                service(WEB, "rr", [("10.50.0.11", 1)]),
                service(MARK, "wlc", [("10.50.0.11", 1)]),
                service(DNS, "rr", [("10.50.0.12", 1)]),
            )
            mark = agent.mark()
            agent.signal(signal.SIGHUP)
            agent.wait_for(r"ipvs: config changed: done, 3 change\(s\) applied", 10, after=mark)
            ops = [
                line.split("ipvs: ", 1)[1]
                for line in agent.lines[mark:]
                if "ipvs: " in line and ("+ " in line or "- " in line or "~ " in line)
            ]
            assert ops == [
                "+ service UDP 10.50.0.100:53 rr",
                "- dest 10.50.0.12:80 of TCP 10.50.0.100:80",
                "+ dest 10.50.0.12:80 of UDP 10.50.0.100:53 dr weight 1",
            ], ops
            # VRRP was not disturbed.
            assert not any("->" in line for line in agent.lines[mark:])
            assert ns.has_address("eth0", "10.50.0.100")
        finally:
            agent.stop()


def test_a_clean_stop_leaves_ipvs_in_place(tmp_path: Path) -> None:
    with namespaces("director", "peer") as (ns, peer):
        veth(ns, "eth0", "10.50.0.1/24", peer, "eth0", "10.50.0.2/24")
        cfg = write(tmp_path / "a.toml", service(WEB, "rr", [("10.50.0.11", 1)]))
        agent = start_agent(ns, cfg, "agent")
        agent.wait_for(r"ipvs: start: done", 30)
        rules = ipvs_rules(ns)
        assert agent.stop() == 0
        assert ipvs_rules(ns) == rules
        again = start_agent(ns, cfg, "agent-again")
        try:
            again.wait_for(r"ipvs: start: kernel already matches \(1 services\)", 30)
        finally:
            again.stop()
