"""What a reload may change in place, and what only a restart can (pure).

An operator moving off keepalived expects `systemctl reload` to apply a new
priority, new virtual addresses or new tracking without a failover, as
keepalived's reload does for the instances it keeps.  So a VRRP instance is
reconfigured in place when only its *tunables* changed: the settings below
that are not part of its identity.  Its identity (interface, VRID, version,
authentication, source address, multicast or unicast, unicast TTL) is what its sockets
and its peer know it by; changing that is a new instance, and so is adding or
removing one: both need a restart.  A few global settings are read once at
start (listening sockets, the state directory, the loop guard and its sync
daemons); a change there needs a restart too.

A reload that needs a restart is refused whole, with the reasons: applying
the rest would leave the running daemon half on each config (e.g. services
that follow an instance the running daemon does not have).
"""

from __future__ import annotations

from dataclasses import fields

from lvsagent.config.schema import Config, Global, VrrpInstance
from lvsagent.daemon.derive import guarded_instance, guarded_instances

__all__ = ["IDENTITY", "global_changes", "instance_changes", "restart_reasons"]

# An instance's identity, and what its sockets are made with: a change is a
# different instance (new sockets, and its peer knows it by these).
IDENTITY = (
    "interface", "vrid", "version", "auth_pass", "unicast_src", "unicast_ttl", "use_vmac",
    "vmac_interface",
)  # fmt: skip

# Global settings read once at start.
_RESTART_GLOBALS = (
    "loop_guard", "metrics_listen", "control_socket", "state_dir", "peer_mac",
    "ipvs_sync_daemon", "ipvs_sync_interface", "ipvs_sync_id",
)  # fmt: skip


def restart_reasons(old: Config, new: Config) -> list[str]:
    """Why ``new`` cannot be applied to a daemon running ``old`` (empty: it can)."""
    reasons = [
        f"{name} changed ({getattr(old.global_, name)} -> {getattr(new.global_, name)})"
        for name in _RESTART_GLOBALS
        if getattr(old.global_, name) != getattr(new.global_, name)
    ]
    before = {i.name: i for i in old.vrrp_instances}
    after = {i.name: i for i in new.vrrp_instances}
    reasons += [f"VRRP instance {n} added" for n in after if n not in before]
    reasons += [f"VRRP instance {n} removed" for n in before if n not in after]
    for name in before.keys() & after.keys():
        a, b = before[name], after[name]
        reasons += [
            f"VRRP instance {name}: {key} changed"
            + ("" if key == "auth_pass" else f" ({getattr(a, key)} -> {getattr(b, key)})")
            for key in IDENTITY
            if getattr(a, key) != getattr(b, key)
        ]
        if a.is_unicast != b.is_unicast:
            reasons.append(f"VRRP instance {name}: multicast/unicast changed")
    if not old.virtual_servers and new.virtual_servers:
        reasons.append("virtual servers added to a config that had none (IPVS, health checks "
                       "and the loop guard start with the daemon)")  # fmt: skip
    followed, following = guarded_instance(old), guarded_instance(new)
    if followed is not None and following is not None and followed.name != following.name:
        reasons.append(
            f"the virtual servers follow another instance ({followed.name} -> "
            f"{following.name}), and so does the loop guard"
        )
    else:
        before_vs = {vs.label: vs.instance for vs in old.virtual_servers}
        moved = [
            f"{vs.label} ({before_vs[vs.label]} -> {vs.instance})"
            for vs in new.virtual_servers
            if vs.label in before_vs and before_vs[vs.label] != vs.instance
        ]
        both = followed is not None and following is not None
        if moved or (both and set(guarded_instances(old)) != set(guarded_instances(new))):
            reasons.append(
                "virtual servers follow other instances "
                f"({', '.join(moved) or 'a new set of instances'}), and so does the loop guard"
            )
    if _groups(old) != _groups(new):
        reasons.append("vrrp_sync_group changed (the instances that move together)")
    return reasons


def _groups(config: Config) -> set[tuple[str, tuple[str, ...]]]:
    return {(g.name, g.instances) for g in config.sync_groups}


def instance_changes(old: VrrpInstance, new: VrrpInstance) -> list[str]:
    """The tunables that differ, as ``key old -> new`` for the reload's log line."""
    out = []
    for f in fields(VrrpInstance):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a == b or f.name in IDENTITY:
            continue
        if f.name == "virtual_addresses":
            gone = sorted(str(x) for x in set(a) - set(b))
            added = sorted(str(x) for x in set(b) - set(a))
            out.append(
                "virtual_addresses"
                + (f" +{','.join(added)}" if added else "")
                + (f" -{','.join(gone)}" if gone else "")
            )
        elif isinstance(a, tuple):
            out.append(f.name)
        else:
            out.append(f"{f.name} {a} -> {b}")
    return out


def global_changes(old: Global, new: Global) -> list[str]:
    """Global settings applied in place, for the log line."""
    return [
        f"{f.name} {getattr(old, f.name)} -> {getattr(new, f.name)}"
        for f in fields(Global)
        if f.name not in _RESTART_GLOBALS and getattr(old, f.name) != getattr(new, f.name)
    ]
