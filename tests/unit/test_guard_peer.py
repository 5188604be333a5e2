"""The peer's address the loop guard learns its MAC by: heard, else what the config implies."""

from __future__ import annotations

import ipaddress

from lvsagent.guard.peer import PeerAddress
from tests.unit.configs import INSTANCE, REAL, SERVICE, load

A = ipaddress.IPv4Address
TEXT = INSTANCE + SERVICE + REAL + REAL.replace("10.0.0.1", "10.0.0.2")


def test_the_other_real_server_until_an_advert_is_heard_then_its_source() -> None:
    config = load(TEXT)
    peer = PeerAddress(config.vrrp_instances[0], [A("10.0.0.1")], config)
    assert peer() == A("10.0.0.2")  # a master that started first has heard nobody
    peer.heard(A("10.0.0.7"))
    assert peer() == A("10.0.0.7")


def test_the_unicast_peer_comes_before_the_real_servers() -> None:
    config = load(TEXT.replace("vrid = 51", 'vrid = 51\nunicast_peers = ["10.0.0.9"]'))
    assert PeerAddress(config.vrrp_instances[0], [A("10.0.0.1")], config)() == A("10.0.0.9")


def test_no_guess_when_the_real_servers_do_not_name_one_other_box() -> None:
    config = load(TEXT)
    assert PeerAddress(config.vrrp_instances[0], [A("10.0.0.5")], config)() is None
