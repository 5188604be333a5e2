"""Read the TOML config into schema.py's frozen types, or report every problem at once.

``check`` prints all problems of a file in one go, so nothing here stops at the
first one: each reader records a located Problem and moves on, and one
ConfigError carrying all of them is raised at the end.  Defaults are never
written here; a dataclass is built only from the keys the file gives, so
schema.py stays the single place where a default lives.  Rules that tie two
keys together read the other key's effective value, which for an absent key is
schema.py's default as read from the dataclass itself.

This module reads ``[global]`` and ``[[vrrp_instance]]``; services.py reads
``[[virtual_server]]``.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from typing import Any, get_args, get_type_hints

from lvsagent.config.errors import ConfigError, Problem, format_problems, syntax_problem
from lvsagent.config.fields import Checker, Section, decimal, effective, given, toml_type
from lvsagent.config.guard import (
    GUARD_KEYS,
    check_guard_rules,
    read_guard_globals,
    read_track_real_servers,
)
from lvsagent.config.locate import Locator
from lvsagent.config.schema import (
    Config,
    Global,
    LoopGuard,
    TrackInterface,
    V3Checksum,
    VrrpInstance,
)
from lvsagent.config.services import read_virtual_servers

__all__ = ["ConfigError", "Problem", "format_problems", "load_config", "parse_config"]

TOP_KEYS = ("global", "vrrp_instance", "virtual_server")
GLOBAL_KEYS = (
    "router_id", "loop_guard", "metrics_listen", "control_socket", "foreign_services",
    "ipvs_resync_interval", "ipvs_timeout_tcp", "ipvs_timeout_tcpfin", "ipvs_timeout_udp",
    *GUARD_KEYS,
)  # fmt: skip
INSTANCE_KEYS = (
    "name", "interface", "vrid", "priority", "advert_int", "version", "v3_checksum",
    "preempt", "nopreempt", "preempt_delay", "unicast_src", "unicast_peers", "unicast_ttl",
    "check_ttl", "auth_pass", "virtual_addresses", "track_interfaces", "track_real_servers",
    "garp_repeat", "garp_master_delay", "garp_master_repeat",
)  # fmt: skip
TRACK_KEYS = ("name", "weight")

_INSTANCE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}")


def load_config(path: str) -> Config:
    """Read and check one config file; raises ConfigError listing everything wrong with it."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise ConfigError([Problem(path, None, "", f"cannot read: {error.strerror}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError([Problem(path, line, "", "TOML files must be UTF-8")]) from None
    return parse_config(text, path)


def parse_config(text: str, path: str) -> Config:
    """Check TOML text that came from ``path`` (used only to name it in problems)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([syntax_problem(path, text, error)]) from None
    check = Checker(path, Locator(text))
    root = Section(check, "", data)
    root.unknown(TOP_KEYS)
    values: dict[str, Any] = {"path": path}
    table = root.table("global")
    if table is not None:
        values["global_"] = _read_global(table)
    sections = root.tables("vrrp_instance") or []
    if not sections and "vrrp_instance" not in root.rejected:
        check.problem("vrrp_instance", "the file must define at least one [[vrrp_instance]]")
    instances = _read_instances(sections)
    if instances:
        values["vrrp_instances"] = tuple(instances)
    names = [s.raw["name"] for s in sections if isinstance(s.raw.get("name"), str)]
    guard = values["global_"].loop_guard if "global_" in values else Global().loop_guard
    servers = read_virtual_servers(root, names, len(sections), guard)
    if servers:
        values["virtual_servers"] = tuple(servers)
    if check.problems:
        raise ConfigError(check.problems)
    config = Config(**values)
    check_guard_rules(check, config)
    if check.problems:
        raise ConfigError(check.problems)
    return config


def _options(cls: type, name: str) -> tuple[str, ...]:
    """The allowed strings of a field typed with an inline Literal in schema.py."""
    return tuple(get_args(get_type_hints(cls)[name]))


def _read_global(s: Section) -> Global:
    s.unknown(GLOBAL_KEYS)
    router_id = s.string("router_id")
    if router_id == "":
        s.problem("router_id", "must not be empty")
    return Global(
        **given(
            {
                "router_id": router_id or None,
                "loop_guard": s.choice("loop_guard", get_args(LoopGuard)),
                "metrics_listen": s.read("metrics_listen", s.check.listen),
                "control_socket": s.read("control_socket", s.check.socket_path),
                "foreign_services": s.choice(
                    "foreign_services", _options(Global, "foreign_services")
                ),
                "ipvs_resync_interval": s.number("ipvs_resync_interval", 1.0, 86400.0),
                **{
                    key: s.integer(key, 0, 2**31 - 1)
                    for key in ("ipvs_timeout_tcp", "ipvs_timeout_tcpfin", "ipvs_timeout_udp")
                },
                **read_guard_globals(s),
            }
        )
    )


def _read_instances(sections: list[Section]) -> list[VrrpInstance]:
    """Read each instance, then the rules between instances (unique name and VRID per link)."""
    instances: list[VrrpInstance] = []
    names: dict[str, str] = {}
    vrids: dict[tuple[str, int], str] = {}
    for s in sections:
        instance = _read_instance(s)
        if instance is None:
            continue
        instances.append(instance)
        first = names.setdefault(instance.name, s.key("name"))
        if first != s.key("name"):
            s.problem(
                "name",
                f"duplicate instance name {instance.name!r}; first at {s.check.where(first)}",
            )
        link = (instance.interface, instance.vrid)
        first = vrids.setdefault(link, s.key("vrid"))
        if first != s.key("vrid"):
            s.problem(
                "vrid",
                f"VRID {instance.vrid} on {instance.interface} is already used "
                f"by {s.check.where(first)}; a VRID names one virtual router per link",
            )
    return instances


def _read_instance(s: Section) -> VrrpInstance | None:
    s.unknown(INSTANCE_KEYS)
    check = s.check
    name = s.read("name", lambda k, v: _instance_name(check, k, v), required=True)
    interface = s.read("interface", lambda k, v: _ifname(check, k, v), required=True)
    vrid = s.integer("vrid", 1, 255, required=True)
    src = s.ipv4("unicast_src")
    kw = given(
        {
            "name": name,
            "interface": interface,
            "vrid": vrid,
            "priority": s.integer("priority", 1, 255),
            "advert_int": s.number("advert_int", 0, above=True),
            "version": s.read("version", lambda k, v: _version(check, k, v)),
            "v3_checksum": s.choice("v3_checksum", get_args(V3Checksum)),
            "preempt": s.boolean("preempt"),
            "preempt_delay": s.number("preempt_delay", 0, 1000),
            "unicast_src": src,
            "unicast_peers": s.read("unicast_peers", lambda k, v: _peers(check, k, v, src)),
            "unicast_ttl": s.integer("unicast_ttl", 1, 255),
            "check_ttl": s.boolean("check_ttl"),
            "auth_pass": s.read("auth_pass", lambda k, v: _auth_pass(check, k, v)),
            "virtual_addresses": s.read(
                "virtual_addresses", lambda k, v: _vips(check, k, v), required=True
            ),
            "track_interfaces": s.read("track_interfaces", lambda k, v: _tracks(check, k, v)),
            "track_real_servers": s.read(
                "track_real_servers", lambda k, v: read_track_real_servers(check, k, v)
            ),
            "garp_repeat": s.integer("garp_repeat", 1, 100),
            "garp_master_delay": s.number("garp_master_delay", 0),
            "garp_master_repeat": s.integer("garp_master_repeat", 0, 100),
        }
    )
    _preempt_rules(s, kw)
    _version_rules(s, kw)
    _unicast_rules(s, kw)
    if name is None or interface is None or vrid is None:
        return None
    return VrrpInstance(**kw)


def _preempt_rules(s: Section, kw: dict[str, Any]) -> None:
    """keepalived's ``nopreempt`` is accepted; it must not contradict ``preempt``."""
    nopreempt = s.boolean("nopreempt")
    if nopreempt is not None:
        if "preempt" in kw and kw["preempt"] == nopreempt:
            said = "true" if nopreempt else "false"
            s.problem("nopreempt", f"contradicts preempt = {said}; give only one of the two")
            s.rejected.add("nopreempt")
        elif not s.has("preempt"):
            kw["preempt"] = not nopreempt
    settled = not s.rejected & {"preempt", "nopreempt"}
    if "preempt_delay" in kw and settled and not effective(kw, VrrpInstance, "preempt"):
        off = "preempt = false" if s.has("preempt") else "nopreempt = true"
        s.problem("preempt_delay", f"only meaningful with preemption on, but {off}")


def _version_rules(s: Section, kw: dict[str, Any]) -> None:
    """v2 and v3 differ on the wire: interval units, checksum, and v3 dropped authentication."""
    if "version" in s.rejected:
        return  # already reported; guessing a version would only add noise
    version = effective(kw, VrrpInstance, "version")
    interval = kw.get("advert_int")
    if interval is not None:
        centis = round(interval * 100)
        if version == 2 and not (interval.is_integer() and 1 <= interval <= 255):
            s.problem("advert_int", f"VRRPv2 counts whole seconds 1..255, got {interval:g}")
        elif version == 3 and (abs(interval * 100 - centis) > 1e-6 or not 1 <= centis <= 4095):
            s.problem(
                "advert_int",
                f"VRRPv3 counts centiseconds: a multiple of 0.01 in 0.01..40.95, got {interval:g}",
            )
    if version == 2 and "v3_checksum" in kw:
        s.problem("v3_checksum", "only meaningful with version = 3; this instance is VRRPv2")
    if version == 3 and "auth_pass" in kw:
        s.problem(
            "auth_pass", "VRRPv3 has no authentication (RFC 5798); use version = 2 or drop it"
        )


def _unicast_rules(s: Section, kw: dict[str, Any]) -> None:
    """TTL settings matter only for unicast; multicast VRRP is link-local and always TTL 255."""
    if "unicast_peers" in s.rejected or kw.get("unicast_peers"):
        return
    if "unicast_ttl" in kw:
        s.problem("unicast_ttl", "only meaningful with unicast_peers; multicast always sends 255")
    if kw.get("check_ttl") is False:
        s.problem(
            "check_ttl",
            "false needs unicast_peers: multicast adverts must arrive with TTL 255 "
            "(RFC 5798 5.1.1.3, 7.1)",
        )


def _instance_name(check: Checker, key: str, value: object) -> str | None:
    text = check.string(key, value)
    if text is not None and not _INSTANCE_NAME.fullmatch(text):
        check.problem(key, f"expected 1-32 characters of A-Z a-z 0-9 _ . -, got {text!r}")
        return None
    return text


def _ifname(check: Checker, key: str, value: object) -> str | None:
    """A name the kernel would accept (dev_valid_name: < IFNAMSIZ bytes, no '/', ':', blanks)."""
    text = check.string(key, value)
    if text is None:
        return None
    if (
        not 1 <= len(text.encode()) <= 15
        or text in (".", "..")
        or any(ch in "/:" or ch.isspace() for ch in text)
    ):
        check.problem(
            key, f"not a Linux interface name (1-15 bytes, no '/', ':', blanks): {text!r}"
        )
        return None
    return text


def _version(check: Checker, key: str, value: object) -> int | None:
    number = check.integer(key, value, 0)
    if number is not None and number not in get_args(get_type_hints(VrrpInstance)["version"]):
        check.problem(key, f"VRRP version must be 2 or 3, got {number}")
        return None
    return number


def _auth_pass(check: Checker, key: str, value: object) -> str | None:
    text = check.string(key, value)
    if text is not None and not (1 <= len(text) <= 8 and text.isascii()):
        check.problem(key, "the VRRPv2 password is 1 to 8 ASCII characters")
        return None
    return text


def _peers(
    check: Checker, key: str, value: object, src: ipaddress.IPv4Address | None
) -> tuple[ipaddress.IPv4Address, ...] | None:
    elements = check.array(key, value)
    if elements is None:
        return None
    peers: dict[ipaddress.IPv4Address, str] = {}
    ok = True
    for path, element in elements:
        peer = check.ipv4(path, element)
        if peer is None:
            ok = False
        elif peer in peers:
            check.problem(path, f"duplicate peer {peer}; first at {check.where(peers[peer])}")
            ok = False
        elif peer == src:
            check.problem(path, f"{peer} is unicast_src, this router itself")
            ok = False
        else:
            peers[peer] = path
    return tuple(peers) if ok else None


def _vips(check: Checker, key: str, value: object) -> tuple[ipaddress.IPv4Interface, ...] | None:
    elements = check.array(key, value)
    if elements is None:
        return None
    if not elements:
        check.problem(key, "must list at least one address")
        return None
    vips: dict[ipaddress.IPv4Address, str] = {}
    found: list[ipaddress.IPv4Interface] = []
    for path, element in elements:
        vip = _vip(check, path, element)
        if vip is None:
            continue
        if vip.ip in vips:
            check.problem(path, f"duplicate address {vip.ip}; first at {check.where(vips[vip.ip])}")
            continue
        vips[vip.ip] = path
        found.append(vip)
    return tuple(found) if len(found) == len(elements) else None


def _vip(check: Checker, key: str, value: object) -> ipaddress.IPv4Interface | None:
    """``a.b.c.d`` or ``a.b.c.d/len``; no netmask spelling, /32 when no length is given."""
    text = check.string(key, value)
    if text is None:
        return None
    address, slash, length = text.partition("/")
    ip = check.ipv4(key, address)
    if ip is None:
        return None
    bits = decimal(length)
    if slash and (bits is None or bits > 32):
        check.problem(key, f"prefix length must be 0..32, got {length!r}")
        return None
    return ipaddress.IPv4Interface((ip, 32 if bits is None else bits))


def _tracks(check: Checker, key: str, value: object) -> tuple[TrackInterface, ...] | None:
    elements = check.array(key, value)
    if elements is None:
        return None
    tracks: dict[str, str] = {}
    found: list[TrackInterface] = []
    for path, element in elements:
        if isinstance(element, dict):
            s = Section(check, path, element)
            s.unknown(TRACK_KEYS)
            name = s.read("name", lambda k, v: _ifname(check, k, v), required=True)
            weight = s.integer("weight", -254, 254)
            name_key = s.key("name")
            if s.rejected:
                continue
        elif isinstance(element, str):
            name, weight, name_key = _ifname(check, path, element), None, path
        else:
            kind = toml_type(element)
            check.problem(path, f"expected a name or {{ name = ..., weight = ... }}, got {kind}")
            continue
        if name is None:
            continue
        if name in tracks:
            check.problem(
                name_key, f"{name} is tracked twice; first at {check.where(tracks[name])}"
            )
            continue
        tracks[name] = name_key
        found.append(TrackInterface(**given({"name": name, "weight": weight})))
    return tuple(found) if len(found) == len(elements) else None
