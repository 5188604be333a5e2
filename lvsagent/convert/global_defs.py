"""global_defs to ``[global]``, and the defaults it gives every vrrp_instance.

vrrp_version and the gratuitous-ARP settings of global_defs are defaults of the
instances; lvs_sync_daemon (or an instance's deprecated
lvs_sync_daemon_interface) becomes lvsagent's sync daemon, which follows the
instance of the virtual servers.
"""

from __future__ import annotations

from dataclasses import dataclass

from lvsagent.convert import advice
from lvsagent.convert.common import Mapper, origin
from lvsagent.convert.output import Table
from lvsagent.convert.scripts import global_word
from lvsagent.convert.tree import Node

__all__ = ["Defaults", "map_globals"]


@dataclass
class Defaults:
    """What global_defs sets for every instance, and the sync daemon it asks for."""

    version: int = 2
    garp_delay: float | None = None
    garp_repeat: int | None = None
    garp_lower_prio_repeat: int | None = None
    sync: tuple[str, int | None, Node] | None = None  # interface, sync id, origin



def map_globals(m: Mapper, root: Node, table: Table) -> Defaults:
    """``global_defs`` into ``[global]``; returns the defaults the instances inherit."""
    defaults = Defaults()
    for block in root.children("global_defs"):
        for node in block.children():
            _global(m, node, table, defaults)
    return defaults


def _global(m: Mapper, node: Node, table: Table, defaults: Defaults) -> None:
    word = node.word
    if word == "router_id":
        if m.words(node, 1):
            table.set("router_id", node.args[0], origin(node))
    elif word == "vrrp_version":
        version = m.integer(node, 2, 3)
        if version is not None:
            defaults.version = version
    elif word == "vrrp_garp_master_delay":
        delay = m.integer(node, 0, 1000)
        if delay is not None:
            defaults.garp_delay = float(delay)
    elif word == "vrrp_garp_master_repeat":
        defaults.garp_repeat = m.integer(node, 0, 100)
    elif word == "vrrp_garp_lower_prio_repeat":
        defaults.garp_lower_prio_repeat = m.integer(node, 0, 100)
    elif word in ("vrrp_garp_interval", "vrrp_gna_interval"):
        gap = m.timer(node)
        if gap:
            m.omit(node, "lvsagent sends its gratuitous ARPs back to back; it has no spacing")
    elif word == "lvs_timeouts":
        _timeouts(m, node, table)
    elif word == "lvs_sync_daemon":
        _sync_daemon(m, node, defaults)
    elif global_word(m, node, table):
        pass
    elif word in advice.GLOBAL:
        kind, text = advice.GLOBAL[word]
        m.report(kind, node, text)
    else:
        m.omit(node, f"lvsagent has no equivalent of global_defs {word}")


def _timeouts(m: Mapper, node: Node, table: Table) -> None:
    args = list(node.args)
    names = {"tcp": "ipvs_timeout_tcp", "tcpfin": "ipvs_timeout_tcpfin", "udp": "ipvs_timeout_udp"}
    while args:
        word = args.pop(0)
        if word not in names or not args or not args[0].isdigit():
            m.omit(node, f"lvsagent sets only tcp, tcpfin and udp timeouts; {word!r} is not "
                   "converted")
            continue
        seconds = int(args.pop(0))
        if seconds <= 2**31 - 1:
            table.set(names[word], seconds, origin(node))


def _sync_daemon(m: Mapper, node: Node, defaults: Defaults) -> None:
    """``lvs_sync_daemon IFACE [INSTANCE] [id N] [maxlen N] [port N] [ttl N] [group IP]``."""
    if not node.args:
        m.error(node, "needs an interface")
        return
    args = list(node.args[1:])
    sync_id: int | None = None
    if args and args[0] not in ("id", "maxlen", "port", "ttl", "group"):
        args.pop(0)  # the instance it follows: lvsagent's follows the services' instance
        m.note(node, "lvsagent's sync daemon follows the instance its virtual servers follow")
    while args:
        word = args.pop(0)
        value = args.pop(0) if args else ""
        if word == "id" and value.isdigit() and int(value) <= 255:
            sync_id = int(value)
        else:
            m.omit(node, f"lvsagent sets only the sync daemon's interface and id; "
                   f"{word} {value} is not converted")
    defaults.sync = (node.args[0], sync_id, node)
