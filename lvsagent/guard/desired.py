"""The loop guard's desired kernel state, derived from the config alone (pure)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from lvsagent.config.schema import Config
from lvsagent.netfilter.ruleset import GuardedService, GuardSpec
from lvsagent.netfilter.spec import CheckTarget


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


def guard_vips(config: Config) -> tuple[ipaddress.IPv4Address, ...]:
    """The services' VIPs: on lo in the modes that need them there (driver.LO_VIP_MODES)."""
    return tuple(sorted({vs.address for vs in config.virtual_servers if vs.address is not None}))
