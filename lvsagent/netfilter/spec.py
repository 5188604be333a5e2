"""What the loop guard must guard: validated value objects (pure).

Validation happens here, at construction, and never later: libnftables takes a
malformed address such as ``10.0.0.300`` for a host name and resolves it
through DNS (verified with libnftables 1.0.6), so nothing that reaches the JSON builder may be
unchecked.  Every error is a ValueError naming the bad value.

MAC addresses are normalised to lower case, colon separated, sorted and
de-duplicated, which is the form ``nft -j list`` reads them back in: the desired
table then compares equal to a readback without further massaging.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import get_args

from lvsagent.config.schema import GuardMode as GuardMode  # re-exported: the guard names it so
from lvsagent.config.schema import ServiceProtocol

# The config's own literals: one declaration of what a mode and a protocol may be.
GuardProtocol = ServiceProtocol

_MAC = re.compile(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$")
_MAX_MARK = 0xFFFFFFFF


def normalize_mac(value: object) -> str:
    """``08:00:27:E1:3C:C5`` or ``08-00-27-e1-3c-c5`` -> ``08:00:27:e1:3c:c5``.

    The all-zero and broadcast addresses are refused: no real peer sends from
    them, and a rule excepting them would mark the peer's forwards too.
    """
    text = str(value).strip().lower()
    if not isinstance(value, str) or not _MAC.match(text):
        raise ValueError(f"peer MAC {value!r} is not a MAC address (want 08:00:27:e1:3c:c5)")
    mac = text.replace("-", ":")
    if mac in ("00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"):
        raise ValueError(f"peer MAC {value!r} cannot be a sender address")
    return mac


@dataclass(frozen=True)
class GuardedService:
    """One virtual service the guard covers: protocol, VIP, port (None: every port).

    ``fwmark`` is the mark of the fwmark virtual service that stands for it (keepalived's
    ``virtual_server fwmark 3`` in the design's configs); only fwmark mode needs it.  ``engaged``:
    the state of the VRRP instance this service follows, when services follow
    several (None: the table's one state, ``desired_guard_table``'s ``active``).
    """

    protocol: GuardProtocol
    vip: ipaddress.IPv4Address
    port: int | None = None
    fwmark: int | None = None
    engaged: bool | None = None

    def __post_init__(self) -> None:
        if self.protocol not in get_args(GuardProtocol):
            raise ValueError(f"protocol {self.protocol!r} is not tcp, udp or sctp")
        if not isinstance(self.vip, ipaddress.IPv4Address):
            try:
                # A string is accepted from callers that skip the config types,
                # but parsed here: never handed to libnftables as text.
                object.__setattr__(self, "vip", ipaddress.IPv4Address(str(self.vip)))
            except ValueError:
                raise ValueError(f"VIP {self.vip!r} is not an IPv4 address") from None
        if self.vip.is_unspecified or self.vip.is_multicast or self.vip.is_loopback:
            raise ValueError(f"VIP {self.vip} cannot be a virtual service address")
        if self.port is not None and (
            isinstance(self.port, bool) or not isinstance(self.port, int)
            or not 1 <= self.port <= 65535
        ):  # fmt: skip
            raise ValueError(f"port {self.port!r} of {self.vip} is not in 1..65535")
        if self.fwmark is not None and (
            isinstance(self.fwmark, bool) or not isinstance(self.fwmark, int)
            or not 1 <= self.fwmark <= _MAX_MARK
        ):  # fmt: skip
            raise ValueError(f"fwmark {self.fwmark!r} of {self.vip} is not in 1..{_MAX_MARK}")

    @property
    def label(self) -> str:
        """``172.16.0.30:80/tcp`` (``:*`` for every port): names the service in logs and rules."""
        port = "*" if self.port is None else str(self.port)
        return f"{self.vip}:{port}/{self.protocol}"


@dataclass(frozen=True)
class GuardSpec:
    """The loop guard's whole configuration: mode, services, and the peer directors' MACs."""

    mode: GuardMode
    services: tuple[GuardedService, ...] = ()
    peer_macs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in get_args(GuardMode):
            raise ValueError(f"loop_guard {self.mode!r} is not bypass, fwmark or backup_only")
        for svc in self.services:
            if not isinstance(svc, GuardedService):
                raise ValueError(f"service {svc!r} is not a GuardedService")
        macs = tuple(sorted({normalize_mac(m) for m in self.peer_macs}))
        object.__setattr__(self, "peer_macs", macs)
        object.__setattr__(self, "services", tuple(self.services))
        if self.mode == "fwmark":
            marks: dict[str, int] = {}
            for svc in self.services:
                if svc.fwmark is None:
                    raise ValueError(
                        f"service {svc.label} has no fwmark: loop_guard fwmark needs one each"
                    )
                if marks.setdefault(svc.label, svc.fwmark) != svc.fwmark:
                    raise ValueError(
                        f"service {svc.label} has two fwmarks ({marks[svc.label]} and {svc.fwmark})"
                    )

    def unique_services(self) -> list[GuardedService]:
        """Services in order, each match once (two config entries for one VIP:port share a rule)."""
        seen: set[tuple[str, ipaddress.IPv4Address, int | None]] = set()
        out = []
        for svc in self.services:
            key = (svc.protocol, svc.vip, svc.port)
            if key not in seen:
                seen.add(key)
                out.append(svc)
        return out

    @property
    def vips(self) -> tuple[ipaddress.IPv4Address, ...]:
        """Every VIP the services use, once, sorted: what fwmark mode puts on lo."""
        return tuple(sorted({s.vip for s in self.services}))


@dataclass(frozen=True, order=True)
class CheckTarget:
    """Where a health check of this box connects: a real server's address, the check's port."""

    address: ipaddress.IPv4Address
    port: int

    def __post_init__(self) -> None:
        if not isinstance(self.address, ipaddress.IPv4Address):
            raise ValueError(f"check target {self.address!r} is not an IPv4 address")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not (
            1 <= self.port <= 65535
        ):
            raise ValueError(f"check port {self.port!r} of {self.address} is not in 1..65535")

    def element(self) -> dict[str, object]:
        """The set element nft's JSON takes: address . port."""
        return {"concat": [str(self.address), self.port]}


# ----- the sysctls each mode wants (written by sysctl.py) -----------------------------------
#
# What each mode needs (the design this project follows: two boxes, each director and
# real server, keepalived-style sysctl.conf on both):
#
# - every mode: ``net.ipv4.ip_forward = 1``.  The design's sysctl.conf sets it for
#   both of its schemes; a director forwarding with LVS-NAT needs it, DR tolerates
#   it, and a backup that gets a packet for a VIP it does not hold then answers
#   with an ICMP error instead of dropping it silently.
# - fwmark: the VIP sits on ``lo`` on both boxes (loopback.py), so the VRRP
#   interface must not answer ARP for it on the backup:
#   ``net.ipv4.conf.<vrrp if>.arp_ignore = 1`` and ``arp_announce = 2``.  The design
#   sets them on the VRRP interface only, which suffices: the kernel uses the
#   larger of ``all`` and the interface's value.  ``all`` is left alone because it
#   would change ARP on every other interface of the box too; ``lo`` never does
#   ARP, so its values change nothing.
# - backup_only: ``net.ipv4.vs.backup_only = 1`` while engaged: IPVS stops balancing
#   while its sync daemon is in backup state; 0 while released.  The key exists only
#   where IPVS is loaded.
#
# And whatever the mode, once IPVS answers (ipvs_sysctls, set by the
# IPVS reconciler, since on a modular kernel the keys appear only then):
# ``net.ipv4.vs.expire_nodest_conn = 1``.  A removed real server leaves its
# connection entries behind, and with the kernel's default 0 IPVS drops every
# packet that matches one until the entry times out (a SYN_RECV 60 s, an
# established connection 15 minutes), a client's new connection from a reused
# source port included.  With 1 the kernel expires them when the server is
# removed, so those clients are balanced afresh (or reset, mid-stream), and a new
# connection whose old entry points at a drained (weight 0) server is balanced
# afresh too; connections to a drained server go on.  No connection IPVS could
# still deliver is lost: it only ends the ones whose server is gone.

IP_FORWARD = "net.ipv4.ip_forward"
BACKUP_ONLY = "net.ipv4.vs.backup_only"
EXPIRE_NODEST_CONN = "net.ipv4.vs.expire_nodest_conn"


def conf_key(ifname: str, param: str) -> str:
    """``net.ipv4.conf.<ifname>.<param>``; the interface name is checked (it becomes a path)."""
    if not ifname or ifname in (".", "..") or "/" in ifname or len(ifname) > 15:
        raise ValueError(f"interface name {ifname!r} is not a valid interface name")
    return f"net.ipv4.conf.{ifname}.{param}"


def desired_sysctls(
    mode: GuardMode, interfaces: Iterable[str], engaged: bool = True
) -> dict[str, str]:
    """The sysctls ``mode`` needs; ``interfaces`` are the VRRP instances' interfaces.

    backup_only's sysctl follows the role: 1 while engaged (with the backup sync daemon,
    IPVS balances nothing), 0 while released, so that a new master's IPVS balances from the
    transition on, whenever the sync daemons' switch, which runs behind it, ends."""
    wanted = {IP_FORWARD: "1"}
    for ifname in sorted(set(interfaces)):  # every mode puts the VIPs on lo: no ARP for them
        wanted[conf_key(ifname, "arp_ignore")] = "1"
        wanted[conf_key(ifname, "arp_announce")] = "2"
    if mode == "backup_only":
        wanted[BACKUP_ONLY] = "1" if engaged else "0"
    if mode not in ("bypass", "fwmark", "backup_only"):
        raise ValueError(f"loop_guard {mode!r} is not bypass, fwmark or backup_only")
    return wanted


def ipvs_sysctls(expire_nodest_conn: bool) -> dict[str, str]:
    """The IPVS sysctls lvsagent sets (``ipvs_expire_nodest_conn``; none when false)."""
    return {EXPIRE_NODEST_CONN: "1"} if expire_nodest_conn else {}
