"""What an instance runner derives from its configuration: pure functions of the config.

Kept apart from the runner (instance.py) because both the start and a reload
(``InstanceRunner._reconfigure``) build the same router parameters, receive
policy and advert from a VrrpInstance, and these are easier to read and test
without sockets around them.
"""

from __future__ import annotations

import ipaddress

from lvsagent.config.schema import Config, VrrpInstance
from lvsagent.vrrp.link import InterfaceError, LinkInfo
from lvsagent.vrrp.machine import RouterParams
from lvsagent.vrrp.packet import Advert
from lvsagent.vrrp.receive import RxPolicy

# (auth_type, auth_data) as vrrp.packet.pass_auth_data returns them.
Auth = tuple[int, bytes]


def router_params(inst: VrrpInstance, source: ipaddress.IPv4Address) -> RouterParams:
    """The state machine's tunables; ``source`` (our address) breaks priority ties."""
    return RouterParams(
        version=inst.version,
        vrid=inst.vrid,
        priority=inst.priority,
        advert_int=inst.advert_int,
        primary_address=source,
        preempt=inst.preempt,
        preempt_delay=inst.preempt_delay,
        garp_repeat=inst.garp_repeat,
        garp_master_delay=inst.garp_master_delay,
        garp_master_repeat=inst.garp_master_repeat,
        garp_lower_prio_repeat=inst.garp_lower_prio_repeat,
    )


def rx_policy(inst: VrrpInstance, source: ipaddress.IPv4Address, auth: Auth) -> RxPolicy:
    """What a received advert must match to be accepted (vrrp.receive)."""
    return RxPolicy(
        version=inst.version,
        vrid=inst.vrid,
        adver_int_cs=round(inst.advert_int * 100),
        auth_type=auth[0],
        auth_data=auth[1],
        require_ttl_255=inst.check_ttl,
        own_addresses=frozenset({source}),
        unicast_peers=frozenset(inst.unicast_peers),
        addresses=frozenset(a.ip for a in inst.virtual_addresses),
    )


def advert(inst: VrrpInstance, priority: int, auth: Auth) -> Advert:
    """Our advert at ``priority`` (the effective one, or 0 when we step down)."""
    return Advert(
        version=inst.version,
        vrid=inst.vrid,
        priority=priority,
        max_adver_int=round(inst.advert_int * 100),
        addresses=tuple(a.ip for a in inst.virtual_addresses),
        auth_type=auth[0],
        auth_data=auth[1],
        checksum_mode=inst.v3_checksum,
    )


def primary_address(inst: VrrpInstance, link: LinkInfo) -> ipaddress.IPv4Address:
    """The interface's own first IPv4 address: the advert source and tie-break key."""
    vips = {a.ip for a in inst.virtual_addresses}
    for a in link.addresses:
        if a.ip not in vips:
            return a.ip
    raise InterfaceError(
        f"{inst.name}: interface {inst.interface} has no IPv4 address of its own; "
        "VRRP sends from it. Add one, or set unicast_src"
    )


def guarded_instance(config: Config) -> VrrpInstance | None:
    """The VRRP instance whose state the services follow (config/guard.py makes it one)."""
    if not config.virtual_servers or not config.vrrp_instances:
        return None
    name = config.virtual_servers[0].instance or config.vrrp_instances[0].name
    return config.instance(name)


def guarded_instances(config: Config) -> tuple[str, ...]:
    """Every instance some service follows, in file order: the guard follows each."""
    followed = {vs.instance for vs in config.virtual_servers}
    return tuple(i.name for i in config.vrrp_instances if i.name in followed)
