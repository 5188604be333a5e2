"""RFC 3768 7.1's address-list check of VRRPv2 adverts, counted as keepalived's addr_list_err."""

from __future__ import annotations

import ipaddress

import pytest

from lvsagent.vrrp.packet import Advert, Discard, Reason, encode
from lvsagent.vrrp.receive import RxPolicy, accept

A = ipaddress.IPv4Address
SRC, GROUP = A("10.0.0.2"), A("224.0.0.18")
OURS = frozenset({A("10.0.0.100"), A("10.0.0.101")})


def datagram(message: bytes) -> bytes:
    """An IPv4 header (TTL 255, protocol 112) in front of ``message``; its checksum unchecked."""
    head = bytes([0x45, 0, 0, 20 + len(message), 0, 0, 0, 0, 255, 112, 0, 0])
    return head + SRC.packed + GROUP.packed + message


def advert(priority: int, *addresses: str, version: int = 2) -> bytes:
    adv = Advert(version, 51, priority, 100, tuple(A(a) for a in addresses))
    return datagram(encode(adv, SRC, GROUP))


POLICY = RxPolicy(version=2, vrid=51, adver_int_cs=100, addresses=OURS)


def test_the_same_list_in_another_order_is_accepted() -> None:
    adv, _ = accept(advert(100, "10.0.0.101", "10.0.0.100"), POLICY)
    assert adv.priority == 100


@pytest.mark.parametrize(
    ("addresses", "detail"),
    [
        (("10.0.0.100",), "lacks 10.0.0.101"),
        (("10.0.0.100", "10.0.0.101", "10.0.0.102"), "adds 10.0.0.102"),
        (("10.0.0.100", "10.0.0.102"), "lacks 10.0.0.101, adds 10.0.0.102"),
    ],
)
def test_another_list_is_dropped_as_addr_list_err(addresses: tuple[str, ...], detail: str) -> None:
    with pytest.raises(Discard) as info:
        accept(advert(100, *addresses), POLICY)
    assert info.value.reason == Reason.ADDR_LIST == "addr_list_err"
    assert f"differs from ours ({detail})" in info.value.detail


def test_the_address_owner_and_v3_are_not_checked() -> None:
    assert accept(advert(255, "10.0.0.100"), POLICY)[0].priority == 255  # "continue processing"
    v3 = RxPolicy(version=3, vrid=51, adver_int_cs=100, addresses=OURS)
    assert accept(advert(100, "10.0.0.1", version=3), v3)[0].version == 3
    unchecked = RxPolicy(version=2, vrid=51, adver_int_cs=100)
    assert accept(advert(100, "10.0.0.1"), unchecked)[0].priority == 100
