"""Each virtual server follows its own VRRP instance; a file with none is a single director.

Two instances, one service each, with the masters split between the boxes (A
masters VI_1, B masters VI_2): the loop guard on each box redirects only the
service whose instance is BACKUP there, and releases each service when its own
instance becomes MASTER.  Without instances the agent runs the health checks
(and IPVS, which the host kernel lacks: the lab proves that part) with no VRRP
and no loop guard at all.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.netns.conftest import Pair
from tests.netns.lab import Netns, start_agent, web_server

VIPS = {"VI_1": "10.99.0.100", "VI_2": "10.99.0.102"}


def config(pair: Pair, box: str, priorities: dict[str, int]) -> Path:
    path = pair.tmp / f"{box}.toml"
    text = f"""[global]
router_id = "{box}"
control_socket = "{pair.tmp / box}.sock"
state_dir = "{pair.tmp / box}-state"
metrics_listen = ""
"""
    for n, (name, vip) in enumerate(VIPS.items()):
        text += f"""
[[vrrp_instance]]
name = "{name}"
interface = "eth0"
vrid = {51 + n}
priority = {priorities[name]}
advert_int = 0.1
version = 3
virtual_addresses = ["{vip}/24"]
garp_master_delay = 0
"""
    for name, vip in VIPS.items():
        text += f"""
[[virtual_server]]
address = "{vip}"
port = 80
instance = "{name}"
[virtual_server.health]
type = "none"
[[virtual_server.real_server]]
address = "10.99.0.1"
port = 80
"""
    path.write_text(text)
    return path


def engaged(ns: Netns) -> set[str]:
    """The VIPs whose traffic the guard redirects to the local server now (BACKUP/FAULT)."""
    out = ns.run("nft", "-j", "list", "table", "ip", "lvsagent").stdout
    comments = [i["rule"].get("comment", "") for i in json.loads(out)["nftables"] if "rule" in i]
    return {vip for vip in VIPS.values() if f"bypass {vip}:80/tcp" in comments}


def test_each_service_is_guarded_by_its_own_instance(pair: Pair) -> None:
    da = pair.track(start_agent(pair.a, config(pair, "a", {"VI_1": 100, "VI_2": 50}), "agent-a"))
    db = pair.track(start_agent(pair.b, config(pair, "b", {"VI_1": 50, "VI_2": 100}), "agent-b"))
    da.wait_for(r"VI_1 \(vrid 51 on eth0\): \w+ -> MASTER", 10)
    db.wait_for(r"VI_2 \(vrid 52 on eth0\): \w+ -> MASTER", 10)
    da.wait_for(r"VI_2 \(vrid 52 on eth0\): .*-> BACKUP", 10)
    db.wait_for(r"VI_1 \(vrid 51 on eth0\): .*-> BACKUP", 10)
    assert engaged(pair.a) == {VIPS["VI_2"]}
    assert engaged(pair.b) == {VIPS["VI_1"]}

    mark = da.mark()
    assert db.stop() == 0
    da.wait_for(r"VI_2 \(vrid 52 on eth0\): BACKUP -> MASTER", 5, after=mark)
    pair.a.wait_address("eth0", VIPS["VI_2"], present=True, timeout=2)
    assert engaged(pair.a) == set()


def test_a_single_director_checks_without_vrrp_or_loop_guard(pair: Pair) -> None:
    path = pair.tmp / "director.toml"
    path.write_text(f"""[global]
control_socket = "{pair.tmp}/d.sock"
state_dir = "{pair.tmp}/d-state"
metrics_listen = ""

[[virtual_server]]
address = "10.99.0.100"
port = 80
[virtual_server.health]
type = "tcp"
interval = 0.5
[[virtual_server.real_server]]
address = "10.99.0.2"
port = 8080
""")
    server = web_server(pair.b, "10.99.0.2")
    try:
        agent = pair.track(start_agent(pair.a, path, "director"))
        agent.wait_for(r"started with .*: 0 VRRP instance\(s\), 1 virtual server\(s\)", 10)
        agent.wait_for(r"RS 10\.99\.0\.2:8080 of \S+ UP", 10)
        listing = pair.a.run("nft", "list", "tables", check=False).stdout
        assert "lvsagent" not in listing  # no guard: a single director always balances
        assert not [line for line in agent.lines if "vrrp" in line.split()[1:2]]
    finally:
        server.kill()
        server.wait()
