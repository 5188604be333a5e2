"""Quorum and the sorry server: live weight against the threshold, and the log lines."""

from __future__ import annotations

import ipaddress

from lvsagent.config.schema import RealServer, VirtualServer
from lvsagent.health.quorum import QuorumState, describe, quorum_state, service_name

VIP = ipaddress.IPv4Address("172.16.0.30")
A = RealServer(ipaddress.IPv4Address("172.16.0.31"), 80, weight=2)
B = RealServer(ipaddress.IPv4Address("172.16.0.32"), 80, weight=3)
SORRY = (ipaddress.IPv4Address("192.0.2.200"), 80)


def vs(quorum: int = 0, sorry: bool = False, hysteresis: int = 0) -> VirtualServer:
    return VirtualServer(
        address=VIP, port=80, quorum=quorum, sorry_server=SORRY if sorry else None,
        quorum_hysteresis=hysteresis, real_servers=(A, B),
    )  # fmt: skip


def up(*servers: RealServer) -> set[RealServer]:
    return set(servers)


def test_no_quorum_and_no_sorry_server_means_no_rule() -> None:
    assert quorum_state(vs(), lambda rs: False) is None


def test_live_weight_sums_the_configured_weights_of_up_servers() -> None:
    live = up(B)
    state = quorum_state(vs(quorum=4), lambda rs: rs in live)
    assert state == QuorumState(lost=True, live=3, threshold=4)
    live = up(A, B)
    assert quorum_state(vs(quorum=4), lambda rs: rs in live) == QuorumState(False, 5, 4)


def test_quorum_is_reached_at_exactly_the_threshold() -> None:
    live = up(B)
    assert quorum_state(vs(quorum=3), lambda rs: rs in live) == QuorumState(False, 3, 3)


def test_sorry_server_without_quorum_waits_for_nothing_alive() -> None:
    # "gets traffic when nothing is alive": keepalived's default quorum of 1.
    live = up(A)
    assert quorum_state(vs(sorry=True), lambda rs: rs in live) == QuorumState(False, 2, 1)
    state = quorum_state(vs(sorry=True), lambda rs: False)
    assert state == QuorumState(True, 0, 1)
    assert state.wants_sorry(vs(sorry=True))


def test_lost_quorum_without_sorry_server_wants_none() -> None:
    state = quorum_state(vs(quorum=10), lambda rs: True)
    assert state is not None and state.lost and not state.wants_sorry(vs(quorum=10))


def test_hysteresis_loses_below_quorum_minus_it_and_regains_at_quorum_plus_it() -> None:
    # quorum 4 +- 1: with A (2) and B (3) up the live weight is 5, with B alone 3.
    service = vs(quorum=4, hysteresis=1)
    only_b, both = up(B), up(A, B)
    assert quorum_state(service, lambda rs: rs in only_b) == QuorumState(False, 3, 3)
    assert quorum_state(service, lambda rs: False) == QuorumState(True, 0, 3)
    # Once lost, 3 (and 4) are not enough: 5 is.
    assert quorum_state(service, lambda rs: rs in only_b, was_lost=True) == QuorumState(True, 3, 5)
    assert quorum_state(service, lambda rs: rs in both, was_lost=True) == QuorumState(False, 5, 5)


def test_messages() -> None:
    assert describe(vs(quorum=4, sorry=True), QuorumState(True, 3, 4)) == (
        "VS 172.16.0.30:80: lost quorum (live weight 3 < 4); "
        "sorry server 192.0.2.200:80 added in place of the real servers"
    )
    assert describe(vs(quorum=4, sorry=True), QuorumState(False, 5, 4)) == (
        "VS 172.16.0.30:80: quorum back (live weight 5 >= 4); "
        "sorry server 192.0.2.200:80 removed, real servers back"
    )
    assert describe(vs(quorum=4), QuorumState(True, 0, 4)) == (
        "VS 172.16.0.30:80: lost quorum (live weight 0 < 4)"
    )
    assert describe(vs(sorry=True), QuorumState(True, 0, 1)) == (
        "VS 172.16.0.30:80: no live real server; "
        "sorry server 192.0.2.200:80 added in place of the real servers"
    )
    assert describe(vs(sorry=True), QuorumState(False, 2, 1)) == (
        "VS 172.16.0.30:80: real servers live again (live weight 2); "
        "sorry server 192.0.2.200:80 removed, real servers back"
    )


def test_service_names() -> None:
    assert service_name(vs()) == "172.16.0.30:80"
    assert service_name(VirtualServer(address=VIP, port=53, protocol="udp")) == "172.16.0.30:53/udp"
    assert service_name(VirtualServer(fwmark=7)) == "fwmark 7"
