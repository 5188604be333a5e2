"""The runner's config-derived values: advert source, router tunables, receive policy, advert.

Pure, so tested here rather than through a socket; the netns tests send and receive them.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface

import pytest

from lvsagent.config.schema import VrrpInstance
from lvsagent.daemon.derive import advert, primary_address, router_params, rx_policy
from lvsagent.vrrp.addresses import InterfaceError, LinkInfo
from lvsagent.vrrp.packet import Discard, pass_auth_data
from lvsagent.vrrp.receive import accept
from tests.unit.vrrpwire import datagram

VIP = IPv4Interface("172.16.0.30/24")
OWN = IPv4Interface("172.16.0.31/24")
INST = VrrpInstance(
    name="VI_1", interface="eth0", vrid=51, priority=150, advert_int=1.0,
    auth_pass="secret", virtual_addresses=(VIP,),
)  # fmt: skip


def link(*addresses: IPv4Interface) -> LinkInfo:
    return LinkInfo("eth0", 2, "52:54:00:00:00:01", addresses)


def test_primary_address_is_the_interfaces_own_not_a_vip() -> None:
    """On the master the VIP may come first on the interface: it is never the source."""
    assert primary_address(INST, link(VIP, OWN)) == OWN.ip


def test_an_interface_with_only_the_vip_is_an_error_that_says_what_to_do() -> None:
    with pytest.raises(InterfaceError, match=r"VI_1: interface eth0 has no IPv4.*unicast_src"):
        primary_address(INST, link(VIP))


def test_router_params_carry_the_tunables_and_the_tie_break_source() -> None:
    params = router_params(INST, OWN.ip)
    assert (params.vrid, params.priority, params.advert_int) == (51, 150, 1.0)
    assert params.primary_address == OWN.ip


def test_our_advert_passes_our_own_receive_policy_from_the_peers_side() -> None:
    """What one box sends, the other (same config, other source) accepts: VIPs and password."""
    auth = pass_auth_data(INST.auth_pass)
    sent = advert(INST, 150, auth)
    assert (sent.priority, sent.addresses, sent.max_adver_int) == (150, (VIP.ip,), 100)
    peer = rx_policy(INST, IPv4Address("172.16.0.32"), auth)
    got, ip = accept(datagram(sent, src=OWN.ip), peer)
    assert (got, ip.src) == (sent, OWN.ip)
    # ...and our own policy discards it: a box does not follow its own adverts.
    with pytest.raises(Discard, match="own address"):
        accept(datagram(sent, src=OWN.ip), rx_policy(INST, OWN.ip, auth))
    # Another password is not accepted.
    other = rx_policy(INST, IPv4Address("172.16.0.32"), pass_auth_data("other"))
    with pytest.raises(Discard):
        accept(datagram(sent, src=OWN.ip), other)
