"""Read ``[[virtual_server]]`` tables: services, their real servers and health checks.

Split from loader.py to keep each module readable; the habits are the same:
every problem is recorded and reading goes on, dataclasses get only the keys
the file gives, and rules between keys use schema.py's defaults for absent ones.

A real server's ``health`` table is a set of overrides: it is merged key by key
over its virtual server's table (``tcp``, ``http`` and ``misc`` one level deeper) before
a HealthCheck is built, so ``[virtual_server.real_server.health.tcp] port = 8080``
changes the port and keeps the service's connect_timeout.
"""

from __future__ import annotations

import ipaddress
from typing import Any, get_args

from lvsagent.config.checkkeys import SUBTABLES, check_protocol, read_check_tables
from lvsagent.config.fields import U32_MAX, Checker, decimal, effective, given
from lvsagent.config.schema import (
    CheckType,
    DnsCheck,
    Forwarding,
    HealthCheck,
    HttpCheck,
    MiscCheck,
    OnFailure,
    RealServer,
    Scheduler,
    ServiceProtocol,
    TcpCheck,
    TlsCheck,
    UdpCheck,
    VirtualServer,
)
from lvsagent.config.scripts import read_misc
from lvsagent.config.section import Section

__all__ = ["build_health", "merge_health", "read_virtual_servers"]

SERVICE_KEYS = (
    "address", "port", "protocol", "fwmark", "scheduler", "scheduler_flags",
    "persistence_timeout", "persistence_netmask", "forwarding", "instance", "quorum",
    "quorum_hysteresis", "sorry_server", "health", "real_server",
)  # fmt: skip
REAL_KEYS = ("address", "port", "weight", "u_threshold", "l_threshold", "forwarding", "health")
HEALTH_KEYS = (
    "type", "interval", "retry", "delay_before_retry", "rise", "fall", "alpha", "on_failure",
    "tcp", "http", *SUBTABLES, "misc", "allow_tcp_check",
)  # fmt: skip
TCP_KEYS = ("connect_timeout", "port")
HTTP_KEYS = ("path", "status_codes", "body_contains", "host", "timeout", "port")
# The kernel's flags for the hashing schedulers (ipvsadm -b); the others take none.
SCHEDULER_FLAGS = {"sh": ("sh-fallback", "sh-port"), "mh": ("mh-fallback", "mh-port")}
PERSISTENCE_MAX = 2**31 - 1
# Upper bounds of the check's timings and counts.  keepalived's own where it has one
# (connect_timeout: 4294.967295 s); else a day for a period (keepalived's delay_loop
# is bounded only by its integer type) and 100 for a count, far past any use.
DAY = 86400.0
TIMEOUT_MAX = 4294.0
COUNT_MAX = 100


def read_virtual_servers(
    root: Section, instance_names: list[str], instance_count: int, loop_guard: str = "bypass"
) -> list[VirtualServer]:
    """Every virtual server, then the rule between them: one service per identity.

    With the fwmark loop guard a service names address, port and mark together;
    its kernel identity is then the mark.
    """
    servers: list[VirtualServer] = []
    first: dict[tuple[object, ...], str] = {}
    marked = loop_guard == "fwmark"
    for s in root.tables("virtual_server") or []:
        server = _read_service(s, instance_names, instance_count, marked)
        servers.append(server)
        if server.fwmark is not None and s.ok("fwmark") and (marked or not s.has("address")):
            identity: tuple[object, ...] = ("fwmark", server.fwmark)
            key = s.key("fwmark")
        elif server.address is not None and server.port is not None and not s.has("fwmark"):
            identity = (server.address, server.port, server.protocol)
            key = s.key("address")
        else:
            continue
        seen = first.setdefault(identity, key)
        if seen != key:
            s.check.problem(key, f"{server.label} is already defined at {s.check.where(seen)}")
    return servers


def _read_service(
    s: Section, instance_names: list[str], instance_count: int, marked: bool
) -> VirtualServer:
    s.unknown(SERVICE_KEYS)
    values: dict[str, Any] = {
        "address": s.ipv4("address"),
        "port": s.port("port"),
        "protocol": s.choice("protocol", get_args(ServiceProtocol)),
        "fwmark": s.integer("fwmark", 1, U32_MAX),
        "scheduler": s.choice("scheduler", get_args(Scheduler)),
        "persistence_timeout": s.integer("persistence_timeout", 0, PERSISTENCE_MAX),
        "persistence_netmask": s.read("persistence_netmask", lambda k, v: _netmask(s.check, k, v)),
        # keepalived spells these lb_kind DR / NAT / TUN.
        "forwarding": s.choice("forwarding", get_args(Forwarding), fold_case=True),
        "instance": _instance(s, instance_names, instance_count),
        "quorum": s.integer("quorum", 0, U32_MAX),
        "quorum_hysteresis": s.integer("quorum_hysteresis", 0, U32_MAX),
        "sorry_server": s.read("sorry_server", s.check.endpoint),
    }
    _form_rules(s, marked)
    if "scheduler" not in s.rejected:
        scheduler = effective(values, VirtualServer, "scheduler")
        values["scheduler_flags"] = s.read(
            "scheduler_flags", lambda k, v: _flags(s.check, k, v, scheduler)
        )
    health: dict[str, Any] = {}
    table = s.table("health")
    if table is not None:
        health = read_health(table)
        values["health"] = build_health(health)
    # A fwmark service's protocol is not IPVS's (the mark says what it balances).
    protocol = None
    if "protocol" not in s.rejected and (marked or not s.has("fwmark")):
        protocol = effective(values, VirtualServer, "protocol")
    sections = s.tables("real_server") or []
    if protocol is not None and (not sections or any(not r.has("health") for r in sections)):
        check_protocol(s, protocol, health, health)  # some real server uses this check
    reals: list[RealServer] = []
    first: dict[tuple[ipaddress.IPv4Address, int], str] = {}
    for r in sections:
        real = _read_real(r, health, protocol)
        if real is None:
            continue
        seen = first.setdefault((real.address, real.port), r.key("address"))
        if seen != r.key("address"):
            where = s.check.where(seen)
            r.problem("address", f"{real.address}:{real.port} is already a real server at {where}")
            continue
        reals.append(real)
    if reals:
        values["real_servers"] = tuple(reals)
    return VirtualServer(**given(values))


def _form_rules(s: Section, marked: bool) -> None:
    """A service is either VIP + port (+ protocol) or a firewall mark, never both or neither.

    Both is the fwmark loop guard's form (``marked``): address:port says what to mark.
    """
    by_address = s.has("address") or s.has("port")
    if by_address and s.has("fwmark") and not marked:
        s.problem("fwmark", "a virtual server is address + port or fwmark, not both")
    elif not by_address and not s.has("fwmark"):
        s.problem("", "needs address and port, or fwmark")
    elif by_address:
        for name in ("address", "port"):
            if not s.has(name):
                s.problem(name, "required key is missing (address and port go together)")


def _instance(s: Section, names: list[str], count: int) -> str | None:
    name = s.string("instance")
    if name is not None and name not in names:
        known = ", ".join(repr(n) for n in names) or "none"
        s.problem("instance", f"no vrrp_instance is named {name!r} (defined: {known})")
        return None
    if name is None and not s.has("instance"):
        if count == 1 and len(names) == 1:
            return names[0]  # the only instance is the obvious owner
        if count > 1:
            s.problem("instance", f"required: the file has {count} vrrp_instances; name one")
    return name


def _flags(check: Checker, key: str, value: object, scheduler: str) -> tuple[str, ...] | None:
    elements = check.array(key, value)
    if elements is None:
        return None
    allowed = SCHEDULER_FLAGS.get(scheduler, ())
    flags: list[str] = []
    for path, element in elements:
        flag = check.string(path, element)
        if flag is None:
            continue
        if flag in flags:
            check.problem(path, f"duplicate flag {flag!r}")
        elif flag not in allowed:
            expected = ", ".join(repr(f) for f in allowed) if allowed else "no flags"
            check.problem(path, f"scheduler {scheduler!r} takes {expected}; got {flag!r}")
        else:
            flags.append(flag)
    return tuple(flags) if len(flags) == len(elements) else None


def _netmask(check: Checker, key: str, value: object) -> ipaddress.IPv4Address | None:
    mask = check.ipv4(key, value)
    if mask is None:
        return None
    host_bits = int(mask) ^ U32_MAX
    if host_bits & (host_bits + 1):  # contiguous ones, then zeros: host bits are 2**n - 1
        check.problem(key, f"not a contiguous netmask: {mask}")
        return None
    return mask


def _read_real(
    s: Section, service_health: dict[str, Any], protocol: str | None
) -> RealServer | None:
    s.unknown(REAL_KEYS)
    address = s.ipv4("address", required=True)
    port = s.port("port", required=True)  # keepalived needs it for fwmark services too
    values: dict[str, Any] = {
        "address": address,
        "port": port,
        "weight": s.integer("weight", 0, 65535),
        "u_threshold": s.integer("u_threshold", 0, U32_MAX),
        "l_threshold": s.integer("l_threshold", 0, U32_MAX),
        "forwarding": s.choice("forwarding", get_args(Forwarding), fold_case=True),
    }
    upper = effective(values, RealServer, "u_threshold")
    lower = effective(values, RealServer, "l_threshold")
    if upper > 0 and lower > upper and not s.rejected & {"u_threshold", "l_threshold"}:
        s.problem("l_threshold", f"must not exceed u_threshold ({upper}), got {lower}")
    table = s.table("health")
    if table is not None:
        own = read_health(table)
        merged = merge_health(service_health, own)
        values["health"] = build_health(merged)
        if protocol is not None:
            check_protocol(s, protocol, merged, own)
    if address is None or port is None:
        return None
    return RealServer(**given(values))


def read_health(s: Section) -> dict[str, Any]:
    """The checked keys of one health table, as keyword arguments (tcp/http nested)."""
    s.unknown(HEALTH_KEYS)
    values: dict[str, Any] = {
        "type": s.choice("type", get_args(CheckType)),
        "interval": s.number("interval", 0, DAY, above=True),  # keepalived delay_loop
        "retry": s.integer("retry", 0, COUNT_MAX),
        "delay_before_retry": s.number("delay_before_retry", 0, DAY),
        "rise": s.integer("rise", 1, COUNT_MAX),
        "fall": s.integer("fall", 1, COUNT_MAX),
        "alpha": s.boolean("alpha"),
        "on_failure": s.choice("on_failure", get_args(OnFailure)),
        "allow_tcp_check": s.boolean("allow_tcp_check"),
        **read_check_tables(s),
    }
    tcp = s.table("tcp")
    if tcp is not None:
        tcp.unknown(TCP_KEYS)
        values["tcp"] = given(
            {
                "connect_timeout": tcp.number("connect_timeout", 0, TIMEOUT_MAX, above=True),
                "port": tcp.port("port"),
            }
        )
    http = s.table("http")
    if http is not None:
        http.unknown(HTTP_KEYS)
        check = http.check
        values["http"] = given(
            {
                "path": http.read("path", lambda k, v: _http_path(check, k, v)),
                "status_codes": http.read("status_codes", lambda k, v: _codes(check, k, v)),
                "body_contains": http.string("body_contains"),
                "host": http.read("host", lambda k, v: check.visible(k, v, "a Host header")),
                "timeout": http.number("timeout", 0, TIMEOUT_MAX, above=True),
                "port": http.port("port"),
            }
        )
    misc = s.table("misc")
    if misc is not None:
        values["misc"] = read_misc(misc)
    return given(values)


def merge_health(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A real server's overrides over its service's check, key by key, tcp/http included."""
    merged = {**base, **override}
    for sub in ("tcp", "http", *SUBTABLES, "misc"):
        if sub in base or sub in override:
            merged[sub] = {**base.get(sub, {}), **override.get(sub, {})}
    return merged


def build_health(values: dict[str, Any]) -> HealthCheck:
    args = dict(values)
    if "tcp" in args:
        args["tcp"] = TcpCheck(**args["tcp"])
    if "http" in args:
        args["http"] = HttpCheck(**args["http"])
    for name, cls in (("tls", TlsCheck), ("udp", UdpCheck), ("dns", DnsCheck)):
        if name in args:
            args[name] = cls(**args[name])
    if "misc" in args:
        # keepalived's misc_timeout defaults to the delay_loop: written out, so that
        # `check --print` shows it and loads back to the same value.
        misc = {"timeout": effective(args, HealthCheck, "interval"), **args["misc"]}
        args["misc"] = MiscCheck(**misc)
    return HealthCheck(**args)


def _http_path(check: Checker, key: str, value: object) -> str | None:
    path = check.visible(key, value, "a request path")
    if path is not None and not path.startswith("/"):
        check.problem(key, f"must start with '/', got {path!r}")
        return None
    return path


def _codes(check: Checker, key: str, value: object) -> tuple[int, ...] | None:
    """Status codes and ranges, keepalived's ``status_code 200-299 400 503`` as an array."""
    elements = check.array(key, value)
    if elements is None:
        return None
    if not elements:
        check.problem(key, "must list at least one status code")
        return None
    codes: list[int] = []
    good = 0
    for path, element in elements:
        span = _code_range(check, path, element)
        if span is None:
            continue
        overlap = sorted(set(span) & set(codes))
        if overlap:
            check.problem(path, f"duplicate status code {overlap[0]}")
            continue
        codes.extend(span)
        good += 1
    return tuple(codes) if good == len(elements) else None


def _code_range(check: Checker, path: str, element: object) -> range | None:
    if isinstance(element, str):
        lo, sep, hi = element.partition("-")
        first, last = decimal(lo.strip()), decimal(hi.strip())
        # ASCII digits only: int() would also read "２００" (fullwidth) as 200.
        if sep and first is not None and last is not None and 100 <= first <= last <= 599:
            return range(first, last + 1)
        check.problem(path, f'expected a status code or a range such as "200-299", got {element!r}')
        return None
    code = check.integer(path, element, 100, 599)
    return None if code is None else range(code, code + 1)
