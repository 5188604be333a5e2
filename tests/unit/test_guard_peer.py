"""The peer's address the loop guard learns its MAC by: heard, else what the config implies."""

from __future__ import annotations

import ipaddress

from lvsagent.config.loader import parse_config
from lvsagent.guard.peer import PeerAddress

A = ipaddress.IPv4Address
INSTANCE = """
[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
vrid = 51
virtual_addresses = ["10.0.0.100/24"]
"""
SERVICE = """
[[virtual_server]]
address = "10.0.0.100"
port = 80
[[virtual_server.real_server]]
address = "10.0.0.1"
port = 80
[[virtual_server.real_server]]
address = "10.0.0.2"
port = 80
"""


def test_the_other_real_server_until_an_advert_is_heard_then_its_source() -> None:
    config = parse_config(INSTANCE + SERVICE, "t.toml")
    peer = PeerAddress(config.vrrp_instances[0], [A("10.0.0.1")], config)
    assert peer() == A("10.0.0.2")  # a master that started first has heard nobody
    peer.heard(A("10.0.0.7"))
    assert peer() == A("10.0.0.7")


def test_the_unicast_peer_comes_before_the_real_servers() -> None:
    text = INSTANCE.replace('vrid = 51', 'vrid = 51\nunicast_peers = ["10.0.0.9"]') + SERVICE
    config = parse_config(text, "t.toml")
    assert PeerAddress(config.vrrp_instances[0], [A("10.0.0.1")], config)() == A("10.0.0.9")


def test_no_guess_when_the_real_servers_do_not_name_one_other_box() -> None:
    config = parse_config(INSTANCE + SERVICE, "t.toml")
    assert PeerAddress(config.vrrp_instances[0], [A("10.0.0.5")], config)() is None
