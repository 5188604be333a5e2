"""Read ``[[vrrp_instance]]`` tables, and the rules between instances.

Split from loader.py (which reads the file and ``[global]``) to keep each module
about one section; the habits are the same: every problem is recorded and reading
goes on, dataclasses get only the keys the file gives, and rules between keys use
schema.py's defaults for absent ones.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, get_args, get_type_hints

from lvsagent.config.fields import Checker, decimal, effective, given
from lvsagent.config.guard import read_track_real_servers, read_tracked
from lvsagent.config.locate import item
from lvsagent.config.schema import TrackInterface, V3Checksum, VrrpInstance
from lvsagent.config.scripts import HOOK_KEYS, TRACK_KEYS, read_hooks, read_refs
from lvsagent.config.section import Section

__all__ = ["INSTANCE_KEYS", "MAX_VIPS", "read_instances"]

INSTANCE_KEYS = (
    "name", "interface", "vrid", "priority", "advert_int", "version", "v3_checksum",
    "preempt", "nopreempt", "preempt_delay", "unicast_src", "unicast_peers", "unicast_ttl",
    "check_ttl", "auth_pass", "virtual_addresses", "track_interfaces", "track_real_servers",
    "garp_repeat", "garp_master_delay", "garp_master_repeat", "garp_lower_prio_repeat",
    "use_vmac", "vmac_interface", *TRACK_KEYS, *HOOK_KEYS,
)  # fmt: skip

# The advert's "Count IPvX Addr" field is one byte.  255 addresses make a 1056-byte
# v2 packet (20 IP + 8 header + 1020 addresses + 8 authentication; v3 1048), within
# one unfragmented frame on any link with an MTU of at least 1056, Ethernet's 1500 too.
MAX_VIPS = 255

_INSTANCE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}")


def read_instances(sections: list[Section]) -> list[VrrpInstance]:
    """Read each instance, then the rules between instances (unique name and VRID per link)."""
    instances: list[VrrpInstance] = []
    names: dict[str, str] = {}
    vrids: dict[tuple[str, int], str] = {}
    owners = _Owners()
    for s in sections:
        instance = _read_instance(s)
        if instance is None:
            continue
        instances.append(instance)
        owners.add(s, instance)
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


class _Owners:
    """Which key holds each address across instances: a VIP belongs to one instance only,
    and is never a router's own address.

    Two instances with one VIP would add and remove it in turn, each by its own
    state.  A VIP equal to unicast_src is this box's own address: in BACKUP it
    would be removed from the box, and VRRP's source with it.  One equal to a
    unicast peer is the other box's own address, which this box would then
    claim.  Each clash is reported at the key written later in the file.
    """

    def __init__(self) -> None:
        self.vips: dict[ipaddress.IPv4Address, str] = {}
        self.own: dict[ipaddress.IPv4Address, tuple[str, str]] = {}  # -> (key, what it is)

    def add(self, s: Section, inst: VrrpInstance) -> None:
        check = s.check
        mine: list[tuple[ipaddress.IPv4Address, str, str]] = []
        if inst.unicast_src is not None:
            mine.append(
                (inst.unicast_src, s.key("unicast_src"), "unicast_src, this box's own address")
            )
        peers = s.key("unicast_peers")
        for index, peer in enumerate(inst.unicast_peers):
            mine.append((peer, item(peers, index), "a unicast peer, the other box's own address"))
        for ip, key, what in mine:
            self.own.setdefault(ip, (key, what))
            if ip in self.vips:
                first = check.where(self.vips[ip])
                check.problem(key, f"{ip} is a virtual address at {first}; {what} cannot be one")
        vips = s.key("virtual_addresses")
        for index, vip in enumerate(inst.virtual_addresses):
            key = item(vips, index)
            if vip.ip in self.vips:
                first = check.where(self.vips[vip.ip])
                check.problem(
                    key,
                    f"{vip.ip} is already a virtual address at {first}; it belongs to one instance",
                )
                continue
            self.vips[vip.ip] = key
            if vip.ip in self.own:
                where, what = self.own[vip.ip]
                check.problem(
                    key,
                    f"{vip.ip} is {what} ({check.where(where)}); a virtual address "
                    "moves between the boxes",
                )


def _read_instance(s: Section) -> VrrpInstance | None:
    s.unknown(INSTANCE_KEYS)
    check = s.check
    name = s.read("name", lambda k, v: _instance_name(check, k, v), required=True)
    interface = s.read("interface", check.ifname, required=True)
    vrid = s.integer("vrid", 1, 255, required=True)
    src = s.ipv4("unicast_src")
    kw = given(
        {
            "name": name,
            "interface": interface,
            "vrid": vrid,
            "priority": s.integer("priority", 1, 255),
            "advert_int": s.number("advert_int", 0, above=True),  # per version: below
            "version": s.read("version", lambda k, v: _version(check, k, v)),
            "v3_checksum": s.choice("v3_checksum", get_args(V3Checksum)),
            "preempt": s.boolean("preempt"),
            "preempt_delay": s.number("preempt_delay", 0, 1000),  # keepalived's bounds
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
            "garp_master_delay": s.number("garp_master_delay", 0, 4294),  # keepalived's
            "garp_master_repeat": s.integer("garp_master_repeat", 0, 100),
            "garp_lower_prio_repeat": s.integer("garp_lower_prio_repeat", 0, 100),
            "use_vmac": s.boolean("use_vmac"),
            "vmac_interface": s.read("vmac_interface", check.ifname),
            **{key: s.read(key, lambda k, v: read_refs(check, k, v)) for key in TRACK_KEYS},
            "hooks": read_hooks(s),
        }
    )
    if "vmac_interface" in kw and s.raw.get("use_vmac") is not True:
        s.problem("vmac_interface", "names the use_vmac interface: set use_vmac = true too")
    if kw.get("vmac_interface") is not None and kw.get("vmac_interface") == interface:
        s.problem("vmac_interface", f"must differ from interface ({interface}): it is made on it")
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
        # Below 41 s only: round() of a huge float (1e308 * 100 is inf) raises.
        centis = round(interval * 100) if interval < 41 else 0
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
    if len(elements) > MAX_VIPS:
        check.problem(
            key,
            f"{len(elements)} addresses; an advert carries at most {MAX_VIPS} (its count "
            "field is one byte): split them over several instances",
        )
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
    found = read_tracked(check, key, value, "name", check.ifname, "a name", str)
    if found is None:
        return None
    return tuple(TrackInterface(**given({"name": n, "weight": w})) for n, w in found)
