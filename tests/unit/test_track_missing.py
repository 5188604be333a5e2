"""A tracked interface that does not exist is reported as missing, not as down.

Why: "tracked interface down" sends an operator to the cables; the fix for a name
that does not exist is the config (a typo) or the interface's creation.
"""

from __future__ import annotations

import ipaddress

from lvsagent.config.schema import TrackInterface
from lvsagent.vrrp import addresses
from lvsagent.vrrp.machine import RouterParams, State, VirtualRouter
from lvsagent.vrrp.track import evaluate


def test_a_name_no_interface_has_reads_as_missing() -> None:
    assert addresses.link_is_up("lvsnosuch0") is None
    assert addresses.link_is_up("lo") is not None


def test_the_verdict_names_missing_and_down_interfaces_apart() -> None:
    tracked = (TrackInterface("up0"), TrackInterface("nosuch0"), TrackInterface("w0", -20))
    up = {"eth0": True, "up0": False, "nosuch0": None, "w0": None}
    verdict = evaluate("eth0", tracked, up)
    assert verdict.fault
    assert verdict.why == "interface up0 down; interface nosuch0 does not exist"
    weighted = evaluate("eth0", (TrackInterface("w0", -20),), up)
    assert (weighted.fault, weighted.adjustment) == (False, -20)
    assert weighted.why == "tracked w0 does not exist (weight -20)"


def test_an_instance_starting_in_fault_says_why() -> None:
    params = RouterParams(
        version=3, vrid=51, priority=100, advert_int=1.0,
        primary_address=ipaddress.IPv4Address("10.0.0.1"),
    )  # fmt: skip
    router = VirtualRouter(params)
    router.start(0.0, True, 0, "interface nosuch0 does not exist")
    assert router.state == State.FAULT
    assert router.last_transition is not None
    assert router.last_transition.reason == "starting with interface nosuch0 does not exist"
