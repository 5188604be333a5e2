"""use_vmac: the VIP, adverts and gratuitous ARP on a macvlan with the RFC's virtual MAC.

Box a runs the agent with ``use_vmac = true``; box b runs none and plays the
neighbour: it captures what a sends and asks for the VIP as a client would.
RFC 5798 7.3: the master's frames come from 00:00:5e:00:01:VRID (VRID 51:
...:33), so b's neighbour entry for the VIP names that MAC, not a's own.
"""

from __future__ import annotations

from pathlib import Path

from tests.netns.conftest import Pair
from tests.netns.lab import capture, fields, start_agent

VMAC = "00:00:5e:00:01:33"
VIP = "10.99.0.100"


def sysctl(pair: Pair, key: str) -> str:
    return pair.a.run("cat", f"/proc/sys/net/ipv4/conf/eth0/{key}").stdout.strip()


def test_master_holds_the_vip_on_the_vmac_and_speaks_from_it(pair: Pair, tmp_path: Path) -> None:
    config, _ = pair.configs(a_extra="use_vmac = true\n")
    before = (sysctl(pair, "arp_ignore"), sysctl(pair, "arp_filter"))
    adverts, arps = tmp_path / "adverts.pcap", tmp_path / "arps.pcap"
    with capture(pair.b, "arp", 1, arps), capture(pair.b, "ip proto 112", 2, adverts):
        agent = pair.track(start_agent(pair.a, config, "agent-a"))
        agent.wait_for(r"-> MASTER", 10)
    link = pair.a.run("ip", "-d", "link", "show", "vrrp.51").stdout
    assert f"link/ether {VMAC}" in link and "macvlan mode private" in link, link
    assert pair.a.has_address("vrrp.51", VIP) and not pair.a.has_address("eth0", VIP)
    assert (sysctl(pair, "arp_ignore"), sysctl(pair, "arp_filter")) == ("1", "1")
    # What b saw: adverts and the gratuitous ARP from the virtual MAC, a's own address
    # as the adverts' source.
    assert {tuple(row) for row in fields(adverts, ["eth.src", "ip.src"])} == {(VMAC, "10.99.0.1")}
    assert fields(arps, ["eth.src", "arp.src.proto_ipv4"]) == [[VMAC, VIP]]
    # A client's ARP is answered by the vmac alone, not by eth0 (arp_ignore on the parent).
    asked = pair.b.run("arping", "-c", "2", "-w", "5", "-I", "eth0", VIP).stdout
    replies = [line for line in asked.splitlines() if line.endswith(" usec") or " from " in line]
    assert replies and all(f"from {VMAC} ({VIP})" in line for line in replies), asked
    # A clean stop takes the interface away and puts the parent's sysctls back.
    assert agent.stop() == 0
    assert pair.a.run("ip", "link", "show", "vrrp.51", check=False).returncode != 0
    assert (sysctl(pair, "arp_ignore"), sysctl(pair, "arp_filter")) == before


def test_a_restart_adopts_the_vmac_a_killed_agent_left(pair: Pair) -> None:
    config, _ = pair.configs(a_extra="use_vmac = true\nvmac_interface = \"vip51\"\n")
    first = pair.track(start_agent(pair.a, config, "agent-a"))
    first.wait_for(r"-> MASTER", 10)
    first.hard_kill()
    assert pair.a.has_address("vip51", VIP)  # left behind, as after any kill -9
    again = pair.track(start_agent(pair.a, config, "agent-a2"))
    again.wait_for(r"-> MASTER", 10)
    assert pair.a.has_address("vip51", VIP)
    assert not any("made vip51" in line for line in again.lines)  # adopted, not remade
