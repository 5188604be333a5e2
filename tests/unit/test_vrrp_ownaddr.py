"""The rule that tells the box's own addresses from VIPs a killed agent left behind."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface

import pytest

from lvsagent.config.loader import parse_config
from lvsagent.config.schema import VrrpInstance
from lvsagent.vrrp.ownaddr import own_addresses


def instance(*vips: str, extra: str = "") -> VrrpInstance:
    listed = ", ".join(f'"{v}"' for v in vips)
    text = (
        f'[[vrrp_instance]]\nname = "VI_1"\ninterface = "eth0"\nvrid = 51\n'
        f"virtual_addresses = [{listed}]\n{extra}"
    )
    return parse_config(text, "t.toml").vrrp_instances[0]


def ifaces(*text: str) -> tuple[IPv4Interface, ...]:
    return tuple(IPv4Interface(t) for t in text)


SOURCE = IPv4Address("10.0.0.1")


@pytest.mark.parametrize(
    ("present", "secondary", "vip", "own"),
    [
        # A leftover VIP in the box's subnet: a secondary.
        (("10.0.0.1/24", "10.0.0.100/24"), {"10.0.0.100"}, "10.0.0.100/24", False),
        # A leftover /32 VIP: primary, but alone in its subnet.
        (("10.0.0.1/24", "192.0.2.10/32"), set(), "192.0.2.10/32", False),
        # Two leftover VIPs of a subnet the box has no address in: only VIPs depend.
        (("10.0.0.1/24", "192.0.2.10/24", "192.0.2.11/24"), {"192.0.2.11"},
         "192.0.2.10/24", False),
        # The primary of a subnet, a host address depending on it.
        (("10.0.0.5/24", "10.0.0.1/24"), {"10.0.0.1"}, "10.0.0.5/24", True),
        # Not on the interface at all.
        (("10.0.0.1/24",), set(), "10.0.0.100/24", False),
    ],
)  # fmt: skip
def test_primary_with_a_host_secondary_is_own(
    present: tuple[str, ...], secondary: set[str], vip: str, own: bool
) -> None:
    extra = "192.0.2.11/24" if "192.0.2.11/24" in present else None
    inst = instance(vip, *([extra] if extra else []))
    found = own_addresses(
        inst, ifaces(*present), frozenset(IPv4Address(s) for s in secondary), SOURCE
    )
    assert [str(f.vip) for f in found] == ([vip] if own else [])


def test_the_vrrp_source_is_own_present_or_not() -> None:
    inst = instance("10.0.0.1/24")
    (found,) = own_addresses(inst, ifaces("10.0.0.7/24"), frozenset(), SOURCE)
    assert found.why == "VRRP sends from it"
    text = str(found)
    for part in ("VI_1", "10.0.0.1/24", "eth0", "virtual_addresses", "ip addr del"):
        assert part in text


def test_the_message_names_what_would_be_deleted() -> None:
    inst = instance("10.0.0.5/24")
    present = ifaces("10.0.0.5/24", "10.0.0.1/24", "10.0.0.9/24")
    secondaries = frozenset({IPv4Address("10.0.0.1"), IPv4Address("10.0.0.9")})
    (found,) = own_addresses(inst, present, secondaries, IPv4Address("10.0.0.1"))
    assert "10.0.0.1/24, 10.0.0.9/24" in found.why and "10.0.0.0/24" in found.why
