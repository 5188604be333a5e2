"""The loop guard's whole desired kernel state, per mode and role, from the config alone."""

from __future__ import annotations

import ipaddress

import pytest

from lvsagent.config.schema import Config
from lvsagent.guard.desired import desired_guard_state
from tests.unit.configs import GLOBAL, INSTANCE, REAL, SERVICE, load

VIP = ipaddress.IPv4Address("10.0.0.100")
ARP = {"net.ipv4.conf.eth0.arp_ignore": "1", "net.ipv4.conf.eth0.arp_announce": "2"}


def config(mode: str, extra: str = "") -> Config:
    fwmark = "fwmark = 3\n" if mode == "fwmark" else ""
    return load(f'{GLOBAL}loop_guard = "{mode}"\n{extra}{INSTANCE}{SERVICE}{fwmark}{REAL}')


@pytest.mark.parametrize("engaged", [True, False])
def test_bypass_wants_forwarding_only_and_no_sync_daemon(engaged: bool) -> None:
    c = config("bypass")
    state = desired_guard_state(c, c.vrrp_instances[0], {"VI_1": engaged}, ("02:00:00:00:00:0b",))
    assert state.engaged is engaged and state.spec.mode == "bypass"
    assert state.spec.peer_macs == ("02:00:00:00:00:0b",)
    assert dict(state.sysctls) == {"net.ipv4.ip_forward": "1"}
    assert state.lo_vips == () and state.sync_role is None


def test_fwmark_puts_the_vip_on_lo_and_stops_arp_for_it() -> None:
    c = config("fwmark")
    state = desired_guard_state(c, c.vrrp_instances[0], {"VI_1": False})
    assert dict(state.sysctls) == {"net.ipv4.ip_forward": "1", **ARP}
    assert state.lo_vips == (VIP,) and state.sync_role is None
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


def test_the_sync_daemon_in_another_mode_when_asked() -> None:
    c = config("bypass", "ipvs_sync_daemon = true\n")
    assert desired_guard_state(c, c.vrrp_instances[0], {"VI_1": True}).sync_role == "backup"
