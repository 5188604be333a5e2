"""Read the loop-guard and tracking keys, and the rules that tie them to the rest of the file.

These keys look at several sections at once: the loop guard decides how a
virtual server may be written (the fwmark scheme needs address, port *and* a
mark), which VRRP instance the guarded services follow, and a tracked real
server must be one that some virtual server health-checks.  Keeping them here
keeps loader.py and services.py about one section each.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from lvsagent.config.fields import Checker, given, toml_type
from lvsagent.config.schema import Config, TrackRealServer
from lvsagent.config.section import Section

__all__ = [
    "GUARD_KEYS",
    "abs_path",
    "check_guard_rules",
    "read_guard_globals",
    "read_track_real_servers",
    "read_tracked",
]

GUARD_KEYS = (
    "peer_mac", "decommission_on_stop", "state_dir", "ipvs_sync_daemon",
    "ipvs_sync_interface", "ipvs_sync_id",
)  # fmt: skip
H = TypeVar("H", bound=Hashable)

_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")


def read_guard_globals(s: Section) -> dict[str, Any]:
    """The ``[global]`` keys of the loop guard and the sync daemon, as Global keyword arguments."""
    check = s.check
    return given(
        {
            "peer_mac": s.read("peer_mac", lambda k, v: _mac(check, k, v)),
            "decommission_on_stop": s.boolean("decommission_on_stop"),
            "state_dir": s.read("state_dir", lambda k, v: abs_path(check, k, v)),
            "ipvs_sync_daemon": s.boolean("ipvs_sync_daemon"),
            "ipvs_sync_interface": s.read("ipvs_sync_interface", check.ifname),
            "ipvs_sync_id": s.integer("ipvs_sync_id", 0, 255),
        }
    )


def _mac(check: Checker, key: str, value: object) -> str | None:
    text = check.string(key, value)
    if text is not None and not _MAC.fullmatch(text):
        check.problem(key, f"expected a MAC address like 08:00:27:e1:3c:c5, got {text!r}")
        return None
    return None if text is None else text.lower()


def abs_path(check: Checker, key: str, value: object) -> str | None:
    text = check.string(key, value)
    if text is not None and not (text.startswith("/") and text.isprintable()):
        check.problem(key, f"expected an absolute path without control characters, got {text!r}")
        return None
    return text


def read_tracked(
    check: Checker,
    key: str,
    value: object,
    field: str,
    convert: Callable[[str, object], H | None],
    what: str,
    label: Callable[[H], str],
) -> list[tuple[H, int | None]] | None:
    """A tracking list: each element bare, or ``{ <field> = ..., weight = -254..254 }``.

    Interfaces and real servers are tracked alike; a thing tracked twice is a
    problem at its second place.  None unless every element was accepted.
    """
    elements = check.array(key, value)
    if elements is None:
        return None
    first: dict[H, str] = {}
    found: list[tuple[H, int | None]] = []
    for path, element in elements:
        weight: int | None = None
        if isinstance(element, dict):
            s = Section(check, path, element)
            s.unknown((field, "weight"))
            got = s.read(field, convert, required=True)
            weight = s.integer("weight", -254, 254)
            where = s.key(field)
            if s.rejected:
                continue
        elif isinstance(element, str):
            got, where = convert(path, element), path
        else:
            kind = toml_type(element)
            check.problem(path, f"expected {what} or {{ {field} = ..., weight = ... }}, got {kind}")
            continue
        if got is None:
            continue
        if got in first:
            check.problem(
                where, f"{label(got)} is tracked twice; first at {check.where(first[got])}"
            )
            continue
        first[got] = where
        found.append((got, weight))
    return found if len(found) == len(elements) else None


def read_track_real_servers(
    check: Checker, key: str, value: object
) -> tuple[TrackRealServer, ...] | None:
    """``["ip:port", { address = "ip:port", weight = -50 }]`` (weight 0, FAULT, by default)."""
    found = read_tracked(
        check, key, value, "address", check.endpoint, "'ip:port'", lambda e: f"{e[0]}:{e[1]}"
    )
    if found is None:
        return None
    return tuple(
        TrackRealServer(**given({"address": address, "port": port, "weight": weight}))
        for (address, port), weight in found
    )


def check_guard_rules(check: Checker, config: Config) -> None:
    """Rules across sections; each problem names the key the operator has to change."""
    g = config.global_
    followed = {vs.instance for vs in config.virtual_servers}
    # One sync daemon pair and one net.ipv4.vs.backup_only per box: they can follow
    # only one instance's state.  The nft guard follows each service's own.
    if len(followed) > 1 and (g.ipvs_sync_daemon or g.loop_guard == "backup_only"):  # as set
        why = "ipvs_sync_daemon = true" if g.ipvs_sync_daemon else 'loop_guard = "backup_only"'
        check.problem(
            "virtual_server",
            f"with {why} every virtual server must follow the same VRRP instance (the box "
            "has one IPVS sync daemon, switched by that instance's state); they follow "
            f"{', '.join(sorted(str(n) for n in followed))}",
        )
    if config.virtual_servers and not config.vrrp_instances:
        for key, on in (
            ("ipvs_sync_daemon", g.ipvs_sync_daemon),
            ("loop_guard", g.loop_guard == "backup_only"),
        ):
            if on:
                check.problem(
                    f"global.{key}",
                    "a single director (no vrrp_instance) has no VRRP state for the IPVS "
                    "sync daemon to follow; add the instances of the pair, or drop it",
                )
    if g.loop_guard == "fwmark":
        for i, vs in enumerate(config.virtual_servers):
            if vs.fwmark is None or vs.address is None:
                check.problem(
                    f"virtual_server[{i}]",
                    'loop_guard = "fwmark" marks address:port traffic for a fwmark service: '
                    "give address, port and fwmark (etc/box-a.toml uses fwmark = 3)",
                )
    if g.ipvs_sync_interface is not None and not config.sync_daemons_on():
        check.problem(
            "global.ipvs_sync_interface",
            "only meaningful with the IPVS sync daemons on (ipvs_sync_daemon = true, or the "
            "default with every virtual server following one VRRP instance)",
        )
    servers = {(rs.address, rs.port) for vs in config.virtual_servers for rs in vs.real_servers}
    for i, inst in enumerate(config.vrrp_instances):
        for j, t in enumerate(inst.track_real_servers):
            if (t.address, t.port) not in servers:
                check.problem(
                    f"vrrp_instance[{i}].track_real_servers[{j}]",
                    f"{t.address}:{t.port} is no virtual server's real server, so nothing "
                    "checks it; add it as a real_server or track another",
                )
