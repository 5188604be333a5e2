"""One keepalived.conf to one lvsagent TOML: read, check, map, write, verify.

The result is either TOML that ``lvsagent check`` accepts, with every setting
that did not make it listed, or no TOML and the errors that stopped it.  The
TOML is parsed with the config loader before it is returned: should the mapper
ever write something the loader refuses, the conversion is refused with the
loader's problems instead of handing the operator a file that cannot start.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from lvsagent.config.loader import ConfigError, parse_config
from lvsagent.convert import advice
from lvsagent.convert.common import Mapper
from lvsagent.convert.findings import Finding, Findings
from lvsagent.convert.global_defs import Defaults, map_globals
from lvsagent.convert.lexer import LIMITS, Limits, Source, read_lines
from lvsagent.convert.lvs import ServiceOut, map_services
from lvsagent.convert.output import Table, render
from lvsagent.convert.scripts import map_groups, map_tracked
from lvsagent.convert.tree import Node, build_tree
from lvsagent.convert.vrrp import InstanceOut, map_instances

__all__ = ["Conversion", "convert"]

_MAPPED_TOP = (
    "global_defs", "vrrp_instance", "vrrp_sync_group", "virtual_server", "vrrp_script",
    "vrrp_track_file", "track_file", "vrrp_track_process",
)  # fmt: skip


@dataclass(frozen=True)
class Conversion:
    """The TOML (None when refused) and everything the operator must know about it."""

    toml: str | None
    findings: Findings

    @property
    def exit_status(self) -> int:
        return self.findings.exit_status


def convert(
    path: str, source: Source, config_id: str | None, limits: Limits = LIMITS
) -> Conversion:
    """Convert ``path`` (and its includes, read through ``source``) for the box ``config_id``."""
    findings = Findings()
    lines = read_lines(path, source, config_id, findings, limits)
    if not lines and not findings.of("error"):
        findings.add(Finding("error", path, None, "", "no keepalived configuration in it"))
    if findings.of("error"):
        return Conversion(None, findings)
    root = build_tree(lines, findings)
    if findings.of("error"):
        return Conversion(None, findings)
    m = Mapper(findings)
    tables = _map(m, root, path)
    if findings.of("error") or tables is None:
        return Conversion(None, findings)
    text = render(_header(path, config_id, findings), tables)
    try:
        parse_config(text, "converted.toml")
    except ConfigError as exc:
        for problem in exc.problems:
            findings.add(Finding("error", path, None, "",
                                 f"the converted TOML fails lvsagent check ({problem}); "
                                 "this is a converter bug: please report it"))
        return Conversion(None, findings)
    return Conversion(text, findings)


def _map(m: Mapper, root: Node, path: str) -> list[Table] | None:
    glob = Table("global", origin="global_defs")
    defaults = map_globals(m, root, glob)
    tracked = map_tracked(m, root)
    defined = {
        keyword: {str(t.get("name")) for t in tracked if t.name == section}
        for keyword, section in (("track_script", "vrrp_script"), ("track_file", "track_file"),
                                 ("track_process", "track_process"))
    }  # fmt: skip
    instances = map_instances(m, root, defaults, defined)
    groups = map_groups(m, root, {i.node.args[0]: (i.name, i.table, i.node) for i in instances
                                  if i.node.args}, defined)  # fmt: skip
    services = map_services(m, root)
    for node in root.children():
        if node.word not in _MAPPED_TOP:
            kind, text = advice.TOP.get(
                node.word, ("omitted", f"lvsagent has no equivalent of {node.word}")
            )
            m.report(kind, node, text)
    if not instances and not services:
        m.findings.add(Finding(
            "error", path, None, "",
            "neither a vrrp_instance nor a virtual_server lvsagent can run: nothing to "
            "convert (an instance needs interface, virtual_router_id and an IPv4 "
            "virtual_ipaddress)",
        ))
        return None
    if not instances:
        m.findings.add(Finding(
            "note", path, None, "",
            "no vrrp_instance: a single director (IPVS and health checks, no VRRP and no "
            "loop guard); the virtual addresses are the system's to configure",
        ))
        if defaults.sync is not None:
            m.omit(defaults.sync[2], "a single director has no VRRP state for the IPVS sync "
                   "daemon to follow; left out")  # fmt: skip
            defaults.sync = None
        for service in services:
            service.table.drop("instance")  # lvs.py's placeholder: none to follow
    else:
        services = _follow(m, instances, services, one=defaults.sync is not None)
    _sync(m, glob, defaults)
    tables = [glob, *tracked]
    for instance in instances:
        tables.append(instance.table)
    tables.extend(groups)
    for service in services:
        tables.extend(service.tables)
    return tables


def _follow(
    m: Mapper, instances: list[InstanceOut], services: list[ServiceOut], one: bool
) -> list[ServiceOut]:
    """Each service follows the instance holding its VIP; with the IPVS sync daemon (one
    per box, switched by one instance) all follow the one holding most of them."""
    owners: dict[int, InstanceOut] = {}
    for service in services:
        owner = _owner(instances, service.address)
        if owner is not None:
            owners[id(service)] = owner
    counts: dict[str, int] = {}
    for owner in owners.values():
        counts[owner.name] = counts.get(owner.name, 0) + 1
    chosen = max(instances, key=lambda i: counts.get(i.name, 0))
    kept: list[ServiceOut] = []
    for service in services:
        owner = owners.get(id(service))
        if one and owner is not None and owner is not chosen:
            m.omit(service.node, f"its VIP is held by {owner.name}, but with the IPVS sync "
                   f"daemon every virtual server follows one instance ({chosen.name}, which "
                   "holds most of them); run this service on a pair of its own")
            continue
        if owner is None and len(instances) > 1:
            m.note(service.node, f"no instance holds this service's address; it follows "
                   f"{chosen.name}, which holds most services' addresses")
        service.table.set("instance", (owner or chosen).name if not one else chosen.name)
        kept.append(service)
    return kept


def _owner(
    instances: list[InstanceOut], address: ipaddress.IPv4Address | None
) -> InstanceOut | None:
    for instance in instances:
        if address is not None and address in instance.vips:
            return instance
    return None


def _sync(m: Mapper, glob: Table, defaults: Defaults) -> None:
    if defaults.sync is None:
        return
    interface, sync_id, node = defaults.sync
    if not 1 <= len(interface.encode()) <= 15 or any(c in "/: \t" for c in interface):
        m.error(node, f"{interface!r} is not a Linux interface name")
        return
    glob.set("ipvs_sync_daemon", True, f"{node.word} ({node.where})")
    glob.set("ipvs_sync_interface", interface, f"{node.word} ({node.where})")
    if sync_id is not None:
        glob.set("ipvs_sync_id", sync_id, f"{node.word} ({node.where})")


def _header(path: str, config_id: str | None, findings: Findings) -> list[str]:
    said = f" for config-id {config_id!r}" if config_id is not None else ""
    lines = [
        f"lvsagent configuration converted by `lvsagent convert` from {path}{said}.",
        "Each table and key names the keepalived line it came from.  Check it with",
        "`lvsagent check` and read every setting before you run it: lvsagent balances",
        "with the loop guard of the two-box design (loop_guard, default \"bypass\").",
    ]
    omitted = findings.of("omitted")
    if omitted:
        lines.append("")
        lines.append(f"NOT CONVERTED ({len(omitted)}): what keepalived does and lvsagent will not:")
        lines.extend(f"  {finding}" for finding in omitted)
    return lines
