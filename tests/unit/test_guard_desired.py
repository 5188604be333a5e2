"""The loop guard's whole desired kernel state, per mode and role, from the config alone."""

from __future__ import annotations

import ipaddress

import pytest

from lvsagent.config.schema import Config
from lvsagent.guard.desired import desired_guard_state
from tests.unit.configs import GLOBAL, INSTANCE, REAL, SECOND, SERVICE, load

VIP = ipaddress.IPv4Address("10.0.0.100")
ARP = {"net.ipv4.conf.eth0.arp_ignore": "1", "net.ipv4.conf.eth0.arp_announce": "2"}


def config(mode: str, extra: str = "") -> Config:
    fwmark = "fwmark = 3\n" if mode == "fwmark" else ""
    return load(f'{GLOBAL}loop_guard = "{mode}"\n{extra}{INSTANCE}{SERVICE}{fwmark}{REAL}')


@pytest.mark.parametrize(("engaged", "role"), [(True, "backup"), (False, "master")])
def test_bypass_puts_the_vip_on_lo_and_the_sync_daemon_follows_the_role(
    engaged: bool, role: str
) -> None:
    """A connection this box served as master reaches its socket when the new master
    forwards it after the move: the VIP is local (lo) and the peer's IPVS knows it (sync)."""
    c = config("bypass")
    state = desired_guard_state(c, c.vrrp_instances[0], {"VI_1": engaged}, ("02:00:00:00:00:0b",))
    assert state.engaged is engaged and state.spec.mode == "bypass"
    assert state.spec.peer_macs == ("02:00:00:00:00:0b",)
    assert dict(state.sysctls) == {"net.ipv4.ip_forward": "1", **ARP}
    assert state.lo_vips == (VIP,) and state.sync_role == role


def test_fwmark_puts_the_vip_on_lo_and_stops_arp_for_it() -> None:
    c = config("fwmark")
    state = desired_guard_state(c, c.vrrp_instances[0], {"VI_1": False})
    assert dict(state.sysctls) == {"net.ipv4.ip_forward": "1", **ARP}
    assert state.lo_vips == (VIP,) and state.sync_role == "master"
    assert [s.fwmark for s in state.spec.services] == [3]


@pytest.mark.parametrize(("engaged", "role"), [(True, "backup"), (False, "master")])
def test_backup_only_adds_its_sysctl_and_the_sync_daemon_follows_the_role(
    engaged: bool, role: str
) -> None:
    c = config("backup_only")
    state = desired_guard_state(c, c.vrrp_instances[0], {"VI_1": engaged})
    backup_only = "1" if engaged else "0"  # a new master's IPVS balances at once
    assert dict(state.sysctls) == {
        "net.ipv4.ip_forward": "1", "net.ipv4.vs.backup_only": backup_only, **ARP
    }  # fmt: skip
    assert state.lo_vips == (VIP,) and state.sync_role == role


def test_no_sync_daemon_when_turned_off_but_in_backup_only() -> None:
    c = config("bypass", "ipvs_sync_daemon = false\n")
    assert desired_guard_state(c, c.vrrp_instances[0], {"VI_1": True}).sync_role is None
    c = config("backup_only", "ipvs_sync_daemon = false\n")
    assert desired_guard_state(c, c.vrrp_instances[0], {"VI_1": True}).sync_role == "backup"


def test_sync_daemons_by_default_only_for_one_followed_instance() -> None:
    one = config("bypass")
    assert one.sync_daemons_on()
    two = load(
        GLOBAL + INSTANCE + SECOND
        + SERVICE.replace("80\n", '80\ninstance = "VI_1"\n', 1) + REAL
        + SERVICE.replace("10.0.0.100", "10.0.0.101").replace("80\n", '80\ninstance = "VI_2"\n', 1)
        + REAL
    )  # fmt: skip
    assert {vs.instance for vs in two.virtual_servers} == {"VI_1", "VI_2"}
    assert not two.sync_daemons_on()
