"""virtual_server blocks to ``[[virtual_server]]`` tables with their real servers.

keepalived's defaults are written out where lvsagent's differ: forwarding NAT
(lvsagent: DR), protocol UDP when none is given (keepalived 2.2.7 says "no
protocol set - defaulting to UDP"), the checker timings in checks.py.  A service
lvsagent cannot run as keepalived would (IPv6, a scheduler it lacks, a virtual
server group) is left out whole, with the reason, rather than run differently.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from lvsagent.convert import advice
from lvsagent.convert.checks import INHERITED, health_of, inherited
from lvsagent.convert.common import Mapper, origin
from lvsagent.convert.keywords import CHECKERS
from lvsagent.convert.output import Table
from lvsagent.convert.tree import Node

__all__ = ["ServiceOut", "map_services"]

_SCHEDULERS = (
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos"
)  # fmt: skip
_METHODS = {"NAT": "nat", "DR": "dr", "TUN": "tun"}
_FLAGS = {"sh-port", "sh-fallback", "mh-port", "mh-fallback"}
_FLAG_N = {"flag-1": "fallback", "flag-2": "port"}
_PERSISTENCE_MAX = 2678400  # keepalived's upper bound, 31 days


class ServiceOut:
    """One converted service: its tables in TOML order and the VIP it is reached on."""

    def __init__(self, node: Node, table: Table, address: ipaddress.IPv4Address | None) -> None:
        self.node = node
        self.table = table
        self.address = address
        self.tables: list[Table] = [table]


def map_services(m: Mapper, root: Node) -> list[ServiceOut]:
    services: list[ServiceOut] = []
    seen: dict[tuple[object, ...], Node] = {}
    for node in root.children("virtual_server"):
        service = _service(m, node)
        if service is None:
            continue
        t = service.table
        key = (t.get("fwmark"),) if t.get("fwmark") is not None else (
            t.get("address"), t.get("port"), t.get("protocol"))
        if key in seen:
            m.error(node, f"the same service as at {seen[key].where}; keepalived refuses a "
                    "duplicate virtual server")
            continue
        seen[key] = node
        services.append(service)
    return services


def _service(m: Mapper, node: Node) -> ServiceOut | None:
    table = Table("virtual_server", array=True, origin=origin(node))
    address: ipaddress.IPv4Address | None = None
    args = node.args
    if len(args) >= 2 and args[0] == "fwmark":
        mark = m.integer(node, 1, 2**32 - 1, index=1)
        if mark is None:
            return None
        table.set("fwmark", mark)
    elif len(args) >= 2 and args[0] == "group":
        m.omit(node, "lvsagent has no virtual server groups: write one virtual_server per "
               "address and port")
        return None
    elif len(args) >= 2:
        address = m.ipv4(node, args[0], "virtual server")
        port = m.integer(node, 0, 65535, index=1)
        if address is None or port is None:
            return None
        if port == 0:
            m.omit(node, "a service on every port (port 0) is not in lvsagent; write one per port")
            return None
        table.set("address", str(address))
        table.set("port", port)
    else:
        m.error(node, "needs an address and a port, 'fwmark N' or 'group NAME'")
        return None
    if len(args) > 2:
        m.omit(node, f"lvsagent does not take {' '.join(args[2:])!r} after the service")
    out = ServiceOut(node, table, address)
    if not _settings(m, node, table):
        return None
    _real_servers(m, node, out)
    return out


def _settings(m: Mapper, node: Node, table: Table) -> bool:
    """The service's own keys; False when the service cannot run in lvsagent."""
    runnable = True
    protocol = "udp"
    scheduler = "wlc"
    flags: list[str] = []
    flag_at = ""
    forwarding = "nat"
    for child in node.children():
        word = child.word
        if word in ("lb_algo", "lvs_sched"):
            if m.words(child, 1):
                if child.args[0] in _SCHEDULERS:
                    scheduler = child.args[0]
                    table.set("scheduler", scheduler, origin(child))
                else:
                    m.omit(node, f"lvsagent schedules with {', '.join(_SCHEDULERS)}, not "
                           f"{child.args[0]!r}: choose one of them; the service is left out")
                    runnable = False
        elif word in ("lb_kind", "lvs_method"):
            method = _METHODS.get(child.args[0]) if child.args else None
            if method is None:
                m.error(child, f"keepalived knows NAT, DR or TUN (in capitals), not "
                        f"{' '.join(child.args)!r}, and falls back to NAT: write what you "
                        "meant in capitals")
            else:
                forwarding = method
                if method == "tun" and len(child.args) > 1:
                    m.omit(child, "lvsagent's tunnels are ipip without options")
                else:
                    m.extra(child, 1)
        elif word == "protocol":
            text = child.args[0].upper() if child.args else ""
            m.extra(child, 1)
            if text in ("TCP", "UDP", "SCTP"):
                protocol = text.lower()
            else:
                m.omit(node, f"lvsagent balances TCP, UDP and SCTP, not {text or 'nothing'}; "
                       "the service is left out")
                runnable = False
        elif word == "persistence_timeout":
            seconds = m.integer(child, 0, 2**31 - 1) if child.args else 360
            if seconds == 0:
                m.note(child, "keepalived 2.2.7 refuses 0 (its range is 1..2678400) and keeps "
                       "no persistence; so does the conversion")
            elif seconds is not None and seconds > _PERSISTENCE_MAX:
                m.error(child, f"keepalived 2.2.7 refuses {seconds} (its range is "
                        f"1..{_PERSISTENCE_MAX}) and keeps no persistence: write what you mean")
            elif seconds is not None:
                table.set("persistence_timeout", seconds, origin(child))
        elif word == "persistence_granularity":
            _granularity(m, child, table)
        elif word == "quorum":
            quorum = m.integer(child, 0, 2**32 - 1)
            if quorum is not None:
                table.set("quorum", quorum, origin(child))
        elif word == "hysteresis":
            slack = m.integer(child, 0, 2**32 - 1)
            if slack is not None:
                table.set("quorum_hysteresis", slack, origin(child))
        elif word == "sorry_server":
            _sorry(m, child, table)
        elif word == "sorry_server_lvs_method":
            if child.args and _METHODS.get(child.args[0]) != forwarding:
                m.omit(child, "lvsagent's sorry server uses the service's forwarding")
        elif word in _FLAGS or word in _FLAG_N:
            flag = word if word in _FLAGS else f"{scheduler}-{_FLAG_N[word]}"
            flags.append(flag)
            flag_at = origin(child)
        elif word == "ip_family":
            if child.args and child.args[0] == "inet6":
                m.omit(node, "lvsagent balances IPv4 only; the service is left out")
                runnable = False
        elif word in INHERITED or word == "real_server":
            continue
        elif word in advice.SERVICE:
            kind, text = advice.SERVICE[word]
            m.report(kind, child, text)
        else:
            m.omit(child, f"lvsagent has no equivalent of virtual_server {word}")
    table.set("protocol", protocol, "" if node.first("protocol") else
              "no protocol: keepalived 2.2.7 defaults to UDP")
    if node.first("protocol") is None:
        m.note(node, "no protocol: keepalived 2.2.7 balances UDP then (it says \"no protocol "
               "set - defaulting to UDP\"); so does the conversion; add protocol TCP if "
               "TCP was meant")
    _flags(m, node, table, scheduler, flags, flag_at)
    table.set("forwarding", forwarding,
              "" if node.first("lb_kind") or node.first("lvs_method") else
              "keepalived's default: NAT")
    return runnable


def _flags(
    m: Mapper, node: Node, table: Table, scheduler: str, flags: list[str], where: str
) -> None:
    kept = sorted({f for f in flags if f.startswith(scheduler + "-")})
    if len(kept) != len(set(flags)):
        m.note(node, f"scheduler flags other than {scheduler}'s do nothing; left out")
    if kept:
        table.set("scheduler_flags", list(kept), where)


def _granularity(m: Mapper, node: Node, table: Table) -> None:
    if not m.words(node, 1):
        return
    try:
        mask = ipaddress.IPv4Address(node.args[0])
    except ValueError:
        m.omit(node, f"lvsagent takes a dotted netmask, not {node.args[0]!r}")
        return
    host = int(mask) ^ 0xFFFFFFFF
    if host & (host + 1):
        m.error(node, f"{mask} is not a contiguous netmask")
        return
    table.set("persistence_netmask", str(mask), origin(node))


def _sorry(m: Mapper, node: Node, table: Table) -> None:
    if not node.args:
        m.error(node, "needs an address")
        return
    address = m.ipv4(node, node.args[0], "sorry server")
    port = table.get("port")
    if len(node.args) > 1:
        port = m.integer(node, 1, 65535, index=1)
    if address is None or port is None:
        if port is None and address is not None:
            m.omit(node, "lvsagent's sorry server needs a port: write sorry_server IP PORT")
        return
    table.set("sorry_server", f"{address}:{port}", origin(node))


def _real_servers(m: Mapper, node: Node, out: ServiceOut) -> None:
    table = out.table
    protocol = str(table.get("protocol"))
    base = inherited(m, node, {})
    reals: list[tuple[Node, Table, dict[str, Any]]] = []
    seen: set[tuple[str, int]] = set()
    for real in node.children("real_server"):
        converted = _real(m, real, table, protocol, base)
        if converted is None:
            continue
        rs_table, health = converted
        key = (str(rs_table.get("address")), int(str(rs_table.get("port"))))
        if key in seen:
            m.note(real, f"{key[0]}:{key[1]} is already a real server of this service; "
                   "keepalived keeps one")
            continue
        seen.add(key)
        reals.append((real, rs_table, health))
    shared = reals[0][2] if reals else _service_health(m, node, base, protocol)
    _health_tables(out, "virtual_server.health", shared, "the check of every real server below")
    for _, rs_table, health in reals:
        out.tables.append(rs_table)
        own = _diff(shared, health, int(str(rs_table.get("port"))))
        _health_tables(out, "virtual_server.real_server.health", own,
                       "this real server's check differs")
    table.set("instance", "")  # placeholder: the file-wide pass names the instance


def _service_health(m: Mapper, node: Node, base: dict[str, Any], protocol: str) -> dict[str, Any]:
    """A service without real servers still gets keepalived's timings written out."""
    empty = Node("real_server", (), node.file, node.line, [])
    return health_of(m, empty, "", 0, protocol, base)


def _real(
    m: Mapper, real: Node, service: Table, protocol: str, base: dict[str, Any]
) -> tuple[Table, dict[str, Any]] | None:
    if not real.args:
        m.error(real, "needs an address")
        return None
    address = m.ipv4(real, real.args[0], "real server")
    if address is None:
        return None
    if len(real.args) < 2:
        m.omit(real, "lvsagent needs the real server's port (keepalived uses the service's "
               "for a fwmark service): write real_server IP PORT")
        return None
    port = m.integer(real, 1, 65535, index=1)
    if port is None:
        return None
    if len(real.args) > 2:
        m.extra(real, 2)
    table = Table("virtual_server.real_server", array=True, origin=origin(real))
    table.set("address", str(address))
    table.set("port", port)
    for child in real.children():
        word = child.word
        if word == "weight":
            weight = m.integer(child, 0, 2**31 - 1)
            if weight is not None and weight > 65535:
                m.omit(child, "lvsagent's weights are 0..65535: scale the weights down")
            elif weight is not None:
                table.set("weight", weight, origin(child))
        elif word in ("uthreshold", "lthreshold"):
            limit = m.integer(child, 0, 2**32 - 1)
            if limit is not None:
                table.set(word[0] + "_threshold", limit, origin(child))
        elif word == "lvs_method":
            method = _METHODS.get(child.args[0]) if child.args else None
            if method is None:
                m.error(child, "keepalived knows NAT, DR or TUN (in capitals)")
            elif method != service.get("forwarding"):
                table.set("forwarding", method, origin(child))
        elif word in INHERITED or word in CHECKERS:
            continue
        elif word in advice.REAL_SERVER:
            kind, text = advice.REAL_SERVER[word]
            m.report(kind, child, text)
        else:
            m.omit(child, f"lvsagent has no equivalent of real_server {word}")
    upper, lower = table.get("u_threshold"), table.get("l_threshold")
    if isinstance(upper, int) and isinstance(lower, int) and 0 < upper < lower:
        table.drop("l_threshold")
        m.omit(real, "lthreshold above uthreshold is not in lvsagent; l_threshold left out")
    health = health_of(m, real, str(address), port, protocol, base)
    return table, health


def _diff(shared: dict[str, Any], health: dict[str, Any], own_port: int) -> dict[str, Any]:
    """The keys a real server must override: its table is merged key by key over the service's.

    A merge cannot unset a key, so where the service's check names a port and this
    server's does not, the override names the server's own port, which means the same.
    """
    out: dict[str, Any] = {}
    for key, value in health.items():
        if isinstance(value, dict):
            base = shared.get(key, {})
            sub = {k: v for k, v in value.items() if base.get(k) != v}
            if "port" in base and "port" not in value:
                sub["port"] = own_port
            if sub:
                out[key] = sub
        elif shared.get(key) != value:
            out[key] = value
    return out


def _health_tables(out: ServiceOut, name: str, health: dict[str, Any], comment: str) -> None:
    if not health:
        return
    table = Table(name, origin=comment)
    subs: list[Table] = []
    for key, value in health.items():
        if isinstance(value, dict):
            sub = Table(f"{name}.{key}")
            for k, v in value.items():
                sub.set(k, v)
            subs.append(sub)
        else:
            table.set(key, value)
    out.tables.append(table)
    out.tables.extend(subs)
