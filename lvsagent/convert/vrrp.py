"""global_defs and vrrp_instance blocks to ``[global]`` and ``[[vrrp_instance]]``.

Where keepalived and lvsagent default differently the value keepalived would
use is written out; where keepalived changes a setting (a MASTER without a
priority becomes the address owner, 255; a VRRPv2 interval is rounded to whole
seconds; only 8 characters of auth_pass go on the wire) the TOML carries what
keepalived puts on the wire and a note says so.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from lvsagent.convert import advice
from lvsagent.convert.common import Mapper, origin
from lvsagent.convert.global_defs import Defaults
from lvsagent.convert.output import Table, Value
from lvsagent.convert.scripts import instance_word
from lvsagent.convert.tree import Node

__all__ = ["InstanceOut", "map_instances"]

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_IFNAME_BAD = re.compile(r"[/:\s]")


@dataclass
class InstanceOut:
    name: str
    table: Table
    node: Node
    vips: set[ipaddress.IPv4Address] = field(default_factory=set)


def map_instances(
    m: Mapper, root: Node, defaults: Defaults, defined: dict[str, set[str]]
) -> list[InstanceOut]:
    """``defined``: the names of the converted scripts, files and processes (by keyword)."""
    found: list[InstanceOut] = []
    names: set[str] = set()
    links: set[tuple[str, int]] = set()
    for node in root.children("vrrp_instance"):
        out = _instance(m, node, defaults, names, defined)
        if out is None:
            continue
        link = (str(out.table.get("interface")), int(str(out.table.get("vrid"))))
        if link in links:
            m.error(node, f"VRID {link[1]} on {link[0]} is used by another instance already; "
                    "keepalived refuses that too")
            continue
        links.add(link)
        names.add(out.name)
        found.append(out)
    return found


def _instance(
    m: Mapper, node: Node, defaults: Defaults, taken: set[str], defined: dict[str, set[str]]
) -> InstanceOut | None:
    raw = node.args[0] if node.args else ""
    name = _name(m, node, raw, taken)
    table = Table("vrrp_instance", array=True, origin=origin(node))
    table.set("name", name)
    out = InstanceOut(name, table, node)
    version = defaults.version
    state_master = False
    values: dict[str, Node] = {}
    for child in node.children():
        values[child.word] = child  # the last line of a keyword wins, as in keepalived
    if "version" in values:
        version = m.integer(values["version"], 2, 3) or version
    named = values.get("interface")
    iface = named.args[0] if named is not None and named.args else None
    for child in node.children():
        word = child.word
        if word == "interface":
            if m.words(child, 1) and _ifname(m, child, child.args[0]):
                table.set("interface", child.args[0], origin(child))
        elif word == "virtual_router_id":
            vrid = m.integer(child, 1, 255)
            if vrid is not None:
                table.set("vrid", vrid, origin(child))
        elif word == "priority":
            priority = m.integer(child, 1, 255)
            if priority is not None:
                table.set("priority", priority, origin(child))
        elif word == "state":
            state_master = bool(child.args) and child.args[0].upper() == "MASTER"
            kind, text = advice.INSTANCE["state"]
            m.report(kind, child, text)
        elif word == "advert_int":
            _advert(m, child, table, version)
        elif word == "version":
            table.set("version", version, origin(child))
        elif word == "authentication":
            _auth(m, child, table, version)
        elif word == "virtual_ipaddress":
            _vips(m, child, iface, out)
        elif word == "track_interface":
            _tracks(m, child, table)
        elif word in ("nopreempt", "preempt"):
            m.extra(child, 0)
            table.set("preempt", word == "preempt", origin(child))
        elif word == "preempt_delay":
            delay = m.timer(child, 0, 1000)
            if delay is not None:
                table.set("preempt_delay", delay, origin(child))
        elif word in ("unicast_src_ip", "mcast_src_ip"):
            if m.words(child, 1):
                address = m.ipv4(child, child.args[0], word)
                if address is not None:
                    table.set("unicast_src", str(address), origin(child))
        elif word == "unicast_peer":
            _peers(m, child, table)
        elif word == "unicast_ttl":
            ttl = m.integer(child, 0, 255)
            if ttl is not None:
                table.set("unicast_ttl", ttl, origin(child))
        elif word == "garp_master_delay":
            delay = m.integer(child, 0, 1000)
            if delay is not None:
                table.set("garp_master_delay", delay, origin(child))
        elif word == "garp_master_repeat":
            _garp_repeat(m, child, table, m.integer(child, 0, 100))
        elif word == "garp_lower_prio_repeat":
            count = m.integer(child, 0, 100)
            if count is not None:
                table.set("garp_lower_prio_repeat", count, origin(child))
        elif word == "lvs_sync_daemon_interface":
            if m.words(child, 1):
                m.note(child, "deprecated in keepalived, which turns it into global_defs "
                       "lvs_sync_daemon; converted the same way")
                defaults.sync = (child.args[0], None, child)
        elif word == "use_vmac":
            _vmac(m, child, table)
        elif word.startswith("notify") and _loop_script(child):
            m.note(child, "runs the two-box design's bypass_ipvs.sh, which lvsagent's "
                   'loop_guard = "bypass" (the default) does built in')
        elif instance_word(m, child, table, defined):
            pass
        elif word in advice.INSTANCE:
            kind, text = advice.INSTANCE[word]
            m.report(kind, child, text)
        else:
            m.omit(child, f"lvsagent has no equivalent of vrrp_instance {word}")
    return _finish(m, node, table, out, defaults, state_master)


def _finish(
    m: Mapper, node: Node, table: Table, out: InstanceOut, defaults: Defaults, master: bool
) -> InstanceOut | None:
    """Inherited defaults and keepalived's corrections; None when the instance cannot run."""
    if table.get("vrid") is None:
        m.error(node, "has no virtual_router_id; keepalived refuses such an instance")
        return None
    if table.get("interface") is None:
        m.omit(node, "has no interface; lvsagent needs the one the adverts and VIPs use: "
               "add interface and convert again")
        return None
    if not table.get("virtual_addresses"):
        m.omit(node, "has no IPv4 virtual address lvsagent can hold; the instance is left out")
        return None
    if table.get("version") is None and defaults.version != 2:
        table.set("version", defaults.version, "global_defs vrrp_version")
    if table.get("priority") is None and master:
        table.set("priority", 255, "state MASTER without priority: keepalived makes it 255")
        m.note(node, "state MASTER without a priority: keepalived runs it as the address "
               "owner, priority 255; so does the conversion")
    if table.get("preempt") is False and table.get("priority") == 255:
        table.drop("preempt")
        m.note(node, "keepalived resets nopreempt at priority 255; so does the conversion")
    if table.get("preempt_delay") is not None and table.get("preempt") is False:
        table.drop("preempt_delay")
        m.note(node, "preempt_delay has no effect with nopreempt; left out")
    if table.get("unicast_ttl") is not None and not table.get("unicast_peers"):
        table.drop("unicast_ttl")
        m.note(node, "unicast_ttl without unicast peers has no effect; left out")
    if table.get("unicast_ttl") == 0:
        table.drop("unicast_ttl")
        m.omit(node, "unicast_ttl 0 cannot be sent; lvsagent keeps 255")
    if table.get("garp_master_delay") is None and defaults.garp_delay is not None:
        table.set("garp_master_delay", defaults.garp_delay, "global_defs vrrp_garp_master_delay")
    if table.get("garp_repeat") is None and defaults.garp_repeat is not None:
        _garp_repeat(m, node, table, defaults.garp_repeat)
    lower = defaults.garp_lower_prio_repeat
    if table.get("garp_lower_prio_repeat") is None and lower is not None:
        table.set("garp_lower_prio_repeat", lower, "global_defs vrrp_garp_lower_prio_repeat")
    src = table.get("unicast_src")
    peers = table.get("unicast_peers")
    if isinstance(peers, list) and src in peers:
        table.set("unicast_peers", [p for p in peers if p != src] or [], "")
        m.note(node, f"{src} is this box's own unicast_src; keepalived never sends to itself")
        if not table.get("unicast_peers"):
            table.drop("unicast_peers")
    return out


def _loop_script(node: Node) -> bool:
    """A notify script that is the design's own loop guard (bypass_ipvs.sh add|del VIP)."""
    command = node.args[0].split() if node.args else []
    return bool(command) and command[0].rsplit("/", 1)[-1] == "bypass_ipvs.sh"


def _name(m: Mapper, node: Node, raw: str, taken: set[str]) -> str:
    name = raw if _NAME.fullmatch(raw) else re.sub(r"[^A-Za-z0-9_.-]", "_", raw)[:32] or "VI"
    base, n = name, 1
    while name in taken:
        n += 1
        name = f"{base[: 32 - len(str(n)) - 1]}_{n}"
    if name != raw:
        m.note(node, f"instance {raw!r} is named {name!r}: lvsagent names are 1-32 of "
               "A-Z a-z 0-9 _ . -, unique; the name is not on the wire")
    return name


def _ifname(m: Mapper, node: Node, name: str) -> bool:
    if 1 <= len(name.encode()) <= 15 and name not in (".", "..") and not _IFNAME_BAD.search(name):
        return True
    m.error(node, f"{name!r} is not a Linux interface name")
    return False


def _advert(m: Mapper, node: Node, table: Table, version: int) -> None:
    seconds = m.timer(node, 0.0, 255.0)
    if seconds is None:
        return
    if version == 2 and not seconds.is_integer():
        whole = max(1, int(seconds + 0.5))
        m.note(node, f"VRRPv2 counts whole seconds: keepalived rounds {seconds:g} to {whole}, "
               "and so does the conversion")
        seconds = float(whole)
    if version == 3:
        centis = max(1, min(4095, round(seconds * 100)))
        seconds = centis / 100
    if version == 2 and not 1 <= seconds <= 255:
        m.error(node, f"VRRPv2 advert_int must be 1..255 seconds, got {seconds:g}")
        return
    table.set("advert_int", int(seconds) if seconds.is_integer() else seconds, origin(node))


def _auth(m: Mapper, node: Node, table: Table, version: int) -> None:
    kind = node.first("auth_type")
    password = node.first("auth_pass")
    if kind is not None:
        m.extra(kind, 1)
    if password is not None:
        m.extra(password, 1)
    auth_type = kind.args[0].upper() if kind is not None and kind.args else ""
    if version == 3:
        m.note(node, "keepalived ignores authentication with VRRPv3; so does the conversion")
        return
    if auth_type == "AH":
        m.omit(node, "lvsagent has no IPsec AH authentication: use auth_type PASS on both "
               "boxes, or none")
        return
    if auth_type != "PASS" or password is None or not password.args:
        m.note(node, "keepalived sends no password without both auth_type PASS and auth_pass "
               "(each on its own line); neither does the converted instance")
        return
    secret = password.args[0]
    if len(secret.encode()) > 8:
        m.note(password, "keepalived sends only the first 8 characters of auth_pass; the "
               "converted password is those 8")
        secret = secret.encode()[:8].decode(errors="ignore")
    if not secret.isascii() or not secret:
        m.omit(password, "lvsagent's password is 1-8 ASCII characters; choose one on both boxes")
        return
    table.set("auth_pass", secret, origin(password, "authentication { auth_pass }"))


def _vips(m: Mapper, node: Node, interface: str | None, out: InstanceOut) -> None:
    vips: list[Value] = []
    for line in node.children():
        words = (line.word, *line.args)
        text = words[0]
        address, _, length = text.partition("/")
        ip = m.ipv4(line, address, "virtual address")
        if ip is None:
            continue
        if length and not (length.isdigit() and int(length) <= 32):
            m.error(line, f"{text!r}: the prefix length must be 0..32")
            continue
        options = dict(zip(words[1::2], words[2::2], strict=False))
        dev = options.get("dev")
        if dev is not None and interface is not None and dev != interface:
            m.omit(line, f"{text} is on {dev}, not the instance's {interface}; lvsagent puts "
                   "every VIP on the instance's interface: use an instance there")
            continue
        for word in sorted(set(options) - {"dev"}):
            if word in ("label", "brd"):
                m.note(line, f"lvsagent adds {text} without {word} (the {word} is not on the "
                       "wire; `ip addr` shows the address without it)")
            elif not (word == "scope" and options[word] == "global"):
                m.omit(line, f"lvsagent adds the address without {word} {options[word]}")
        if ip in out.vips:
            m.note(line, f"{ip} is listed twice; keepalived uses it once")
            continue
        out.vips.add(ip)
        vips.append(f"{ip}/{length}" if length else str(ip))
    if vips:
        out.table.set("virtual_addresses", vips, origin(node, "virtual_ipaddress"))


def _tracks(m: Mapper, node: Node, table: Table) -> None:
    tracks: list[Value] = []
    seen: set[str] = set()
    for line in node.children():
        name = line.word
        if not _ifname(m, line, name) or name in seen:
            continue
        seen.add(name)
        opts = dict(zip(line.args[::2], line.args[1::2], strict=False))
        if "reverse" in line.args:
            m.omit(line, "lvsagent has no reverse tracking; the weight applies as written")
        weight = opts.get("weight")
        if weight is not None and weight.lstrip("-").isdigit() and -254 <= int(weight) <= 254:
            tracks.append({"name": name, "weight": int(weight)} if int(weight) else name)
        else:
            tracks.append(name)
    if tracks:
        table.set("track_interfaces", tracks, origin(node, "track_interface"))


def _peers(m: Mapper, node: Node, table: Table) -> None:
    peers: list[Value] = []
    for line in node.children():
        ip = m.ipv4(line, line.word, "unicast peer")
        if ip is None:
            continue
        if line.args:
            m.omit(line, "lvsagent checks no TTL range per peer (min_ttl/max_ttl); "
                   "it checks TTL 255 unless check_ttl = false")
        if str(ip) in peers:
            m.note(line, f"{ip} is listed twice; keepalived sends to it once")
            continue
        peers.append(str(ip))
    if peers:
        table.set("unicast_peers", peers, origin(node, "unicast_peer"))


def _garp_repeat(m: Mapper, node: Node, table: Table, count: int | None) -> None:
    """keepalived's one count sizes both bursts: lvsagent's garp_repeat and garp_master_repeat."""
    if count is None:
        return
    if count == 0:
        m.omit(node, "lvsagent always sends at least one gratuitous ARP on becoming master")
    table.set("garp_repeat", max(1, count), origin(node))
    table.set("garp_master_repeat", count, origin(node))


def _vmac(m: Mapper, node: Node, table: Table) -> None:
    """``use_vmac [NAME]``: the same macvlan with the RFC's MAC; NAME as vmac_interface."""
    table.set("use_vmac", True, origin(node))
    if not node.args:
        return
    name = node.args[0]
    if 1 <= len(name.encode()) <= 15 and name.isprintable() and not set(name) & set("/: "):
        table.set("vmac_interface", name, origin(node))
    else:
        m.omit(node, f"{name!r} is not an interface name Linux takes; vrrp.VRID is used")
    m.extra(node, 1)
