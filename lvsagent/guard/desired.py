"""The loop guard's desired kernel state, derived from the config alone (pure).

desired_guard_state() is the whole of it for one role of the instances: the nft table's
services and peer MACs, the sysctls, the VIPs on lo and the sync daemon's role.  The
driver (driver.py) writes each part through its adapter and reads it back.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from lvsagent.config.schema import Config, VrrpInstance
from lvsagent.netfilter.ruleset import GuardedService, GuardSpec
from lvsagent.netfilter.spec import CheckTarget, desired_sysctls


def check_targets(config: Config) -> frozenset[CheckTarget]:
    """Where this box's health checks connect, to be left out of conntrack (notrack.py): the
    port health/checks.py uses (the check's own, else the server's); ``none`` sends nothing."""
    found = set()
    for vs in config.virtual_servers:
        for rs in vs.real_servers:
            h = rs.health or vs.health
            port = (h.tcp if h.type == "tcp" else h.http).port or rs.port
            if h.type != "none":
                found.add(CheckTarget(rs.address, port))
    return frozenset(found)


def guard_spec(
    config: Config, peer_macs: tuple[str, ...] = (), engaged: Mapping[str, bool] | None = None
) -> GuardSpec:
    """``engaged``: each instance's state, when services follow several (else one state)."""
    states = engaged if engaged is not None and len(engaged) > 1 else {}
    services = tuple(
        GuardedService(
            protocol=vs.protocol,
            vip=vs.address,
            port=vs.port,
            fwmark=vs.fwmark if config.global_.loop_guard == "fwmark" else None,
            engaged=states.get(vs.instance) if vs.instance is not None else None,
        )
        for vs in config.virtual_servers
        if vs.address is not None and vs.instance is not None
    )
    return GuardSpec(mode=config.global_.loop_guard, services=services, peer_macs=peer_macs)


# Every mode keeps the VIPs on lo (with arp_ignore and arp_announce on the VRRP interfaces, as
# the seed's design does on both boxes), so that a box takes direct-routed packets for the VIP
# as local in every role: fwmark (the peer's packets are not marked and miss IPVS),
# backup_only (IPVS ignores everything on the backup) and bypass, whose redirect binds a
# connection's address at its first packet only: a connection this box served as master and
# the new master forwards it after the move (synced) still has the VIP as destination.


@dataclass(frozen=True)
class GuardState:
    """Everything the loop guard keeps in the kernel, for one role of the instances."""

    spec: GuardSpec  # the nft table's services (each with its own instance's state) and MACs
    engaged: bool  # the state of the instance the sysctl and the sync daemons follow
    sysctls: Mapping[str, str]
    lo_vips: tuple[ipaddress.IPv4Address, ...]
    sync_role: Literal["master", "backup"] | None  # None: no sync daemon in this config


def desired_guard_state(
    config: Config,
    primary: VrrpInstance,
    states: Mapping[str, bool],
    peer_macs: tuple[str, ...] = (),
) -> GuardState:
    """``states``: engaged or not, per followed instance; ``primary`` is the instance the
    sysctl and the sync daemons follow (config/guard.py makes every service follow it
    when those are in use)."""
    g = config.global_
    # The ARP sysctls go on the VRRP interfaces only; the kernel takes the larger of
    # "all" and the interface's value, so that is enough.
    interfaces = sorted({i.interface for i in config.vrrp_instances if i.name in states})
    engaged = states.get(primary.name, True)
    sync_on = config.sync_daemons_on()
    return GuardState(
        spec=guard_spec(config, peer_macs, states),
        engaged=engaged,
        sysctls=desired_sysctls(g.loop_guard, interfaces or [primary.interface], engaged),
        lo_vips=guard_vips(config),
        sync_role=("backup" if engaged else "master") if sync_on else None,
    )


def guard_vips(config: Config) -> tuple[ipaddress.IPv4Address, ...]:
    """The services' VIPs (on lo in every mode)."""
    return tuple(sorted({vs.address for vs in config.virtual_servers if vs.address is not None}))
