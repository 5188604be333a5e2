"""The IPVS generic netlink family: its numbers, and both ends of the wire.

Services and dests are encoded and parsed here by hand, with struct: pyroute2
costs ~0.25 ms of CPU a message in the lab, which made programming and
dumping 1000 x 10 entries take seconds (batch.py has the figures).  Requests
always carry the whole entry (SET replaces it; pyroute2's own helpers would
fill omitted fields with *its* defaults: ``wlc``, DR, weight 1), and replies
are read for configured fields only (counters never make entries differ).

The sync daemon and timeouts (a few requests in a daemon's life) stay on
pyroute2, whose ``ipvsmsg`` has them as opaque blobs; IpvsMessage types them:

* ``IPVS_CMD_ATTR_DAEMON``: nested STATE u32 (1 master, 2 backup), MCAST_IFN
  string, SYNC_ID u32, SYNC_MAXLEN u16, MCAST_GROUP be32, MCAST_GROUP6,
  MCAST_PORT u16 (host order, as ipvsadm sends it), MCAST_TTL u8;
* ``IPVS_CMD_ATTR_TIMEOUT_TCP/_TCP_FIN/_UDP``: u32 seconds, 0 = unchanged.

``GET_INFO`` replies reuse attribute numbers 1 and 2 (VERSION, CONN_TAB_SIZE),
clashing with SERVICE and DEST: not offered.  Untyped pyroute2 stays in here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from lvsagent.ipvs.model import (
    FWD_METHOD,
    IP_VS_SVC_F_HASHED,
    IP_VS_SVC_F_PERSISTENT,
    IPPROTO,
    SCHED_FLAGS,
    Dest,
    DestKey,
    Service,
    ServiceKey,
)
from lvsagent.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    AsyncIPVS,
)
from lvsagent.netlink import genl_ipvs as _ipvs
from lvsagent.netlink import nla as _nla

# Commands (include/uapi/linux/ip_vs.h, enum IPVS_CMD_*).
CMD_NEW_SERVICE, CMD_SET_SERVICE, CMD_DEL_SERVICE, CMD_GET_SERVICE = 1, 2, 3, 4
CMD_NEW_DEST, CMD_SET_DEST, CMD_DEL_DEST, CMD_GET_DEST = 5, 6, 7, 8
CMD_NEW_DAEMON, CMD_DEL_DAEMON, CMD_GET_DAEMON, CMD_SET_CONFIG, CMD_GET_CONFIG = 9, 10, 11, 12, 13

# Request flags: add = create exclusive (EEXIST if present), like ipvsadm.
FLAGS_CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
FLAGS_REQUEST = NLM_F_REQUEST | NLM_F_ACK
FLAGS_DUMP = NLM_F_REQUEST | NLM_F_DUMP

SyncState = Literal["master", "backup"]
SYNC_STATE = {"master": 1, "backup": 2}  # IP_VS_STATE_MASTER / IP_VS_STATE_BACKUP
SYNC_PORT = 8848  # IP_VS_SYNC_PORT: the kernel's default base port
SYNC_GROUP = ipaddress.IPv4Address("224.0.0.81")  # IP_VS_SYNC_GROUP

Attrs = list[tuple[str, Any]]  # pyroute2's (name, value) attribute lists: untyped by nature


class IpvsMessage(_ipvs.ipvsmsg):  # type: ignore[misc]  # pyroute2 is untyped
    """pyroute2's ipvsmsg with typed daemon and timeout attributes."""

    # pyroute2 marks a class compiled with a class attribute that subclasses inherit: once
    # ipvsmsg was used, this class would silently decode and encode with ipvsmsg's table.
    _nlmsg_base__compiled_nla = False
    prefix = "IPVS_CMD_ATTR_"
    nla_map = (
        ("IPVS_CMD_ATTR_UNSPEC", "none"),
        ("IPVS_CMD_ATTR_SERVICE", "service"),
        ("IPVS_CMD_ATTR_DEST", "dest"),
        ("IPVS_CMD_ATTR_DAEMON", "daemon"),
        ("IPVS_CMD_ATTR_TIMEOUT_TCP", "uint32"),
        ("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", "uint32"),
        ("IPVS_CMD_ATTR_TIMEOUT_UDP", "uint32"),
    )

    # The nla_map type "daemon" names this nested class: pyroute2 resolves it by name.
    class daemon(_nla):  # type: ignore[misc]
        prefix = "IPVS_DAEMON_ATTR_"
        nla_map = (
            ("IPVS_DAEMON_ATTR_UNSPEC", "none"),
            ("IPVS_DAEMON_ATTR_STATE", "uint32"),
            ("IPVS_DAEMON_ATTR_MCAST_IFN", "asciiz"),
            ("IPVS_DAEMON_ATTR_SYNC_ID", "uint32"),
            ("IPVS_DAEMON_ATTR_SYNC_MAXLEN", "uint16"),
            ("IPVS_DAEMON_ATTR_MCAST_GROUP", "ip4addr"),
            ("IPVS_DAEMON_ATTR_MCAST_GROUP6", "ip6addr"),
            ("IPVS_DAEMON_ATTR_MCAST_PORT", "uint16"),
            ("IPVS_DAEMON_ATTR_MCAST_TTL", "uint8"),
        )


class IpvsSocket(AsyncIPVS):  # type: ignore[misc]  # pyroute2 is untyped
    """AsyncIPVS bound to IpvsMessage; requests take explicit attribute lists.

    pyroute2 replies arrive through a queue per sequence number, but the kernel
    runs one dump per socket at a time (a second one in flight is EBUSY): the
    lock serialises every request, and a dump holds it until fully read.
    """

    def __init__(self) -> None:
        super().__init__()
        self.request_lock = asyncio.Lock()

    async def setup_endpoint(self) -> None:
        if getattr(self.local, "transport", None) is not None:
            return
        await super().setup_endpoint()  # binds the "IPVS" family with pyroute2's ipvsmsg
        self.marshal.msg_map[self.prid] = IpvsMessage

    def _message(self, cmd: int, attrs: Attrs) -> IpvsMessage:
        msg = IpvsMessage()
        msg["cmd"] = cmd
        msg["version"] = _ipvs.GENL_VERSION
        msg["attrs"] = attrs
        return msg

    async def call(self, cmd: int, attrs: Attrs, flags: int = FLAGS_REQUEST) -> list[Any]:
        """One request; its replies (without the ack). Raises NetlinkError."""
        await self.setup_endpoint()
        replies = [
            m
            async for m in await self.nlm_request(
                self._message(cmd, attrs), msg_type=self.prid, msg_flags=flags
            )
        ]
        return [m for m in replies if m.get("cmd") is not None]

    async def stream(self, cmd: int, attrs: Attrs) -> AsyncIterator[Any]:
        """A dump, one reply at a time. The caller holds request_lock until it is exhausted."""
        await self.setup_endpoint()
        async for m in await self.nlm_request(
            self._message(cmd, attrs), msg_type=self.prid, msg_flags=FLAGS_DUMP
        ):
            yield m


@dataclass(frozen=True)
class SyncDaemon:
    """One running connection-sync thread set, as the kernel reports it."""

    state: SyncState
    ifname: str
    syncid: int
    maxlen: int = 0  # 0 = the kernel's choice (from the interface MTU)
    group: ipaddress.IPv4Address = SYNC_GROUP
    port: int = SYNC_PORT
    ttl: int = 1


@dataclass(frozen=True)
class Timeouts:
    """Connection timeouts in seconds (``ipvsadm --set tcp tcpfin udp``); 0 = unchanged."""

    tcp: int
    tcp_fin: int
    udp: int


def daemon_attrs(
    state: SyncState,
    ifname: str | None = None,
    syncid: int | None = None,
    *,
    maxlen: int | None = None,
    group: ipaddress.IPv4Address | None = None,
    port: int | None = None,
    ttl: int | None = None,
) -> Attrs:
    """The nested IPVS_CMD_ATTR_DAEMON; optional fields are sent only when given."""
    inner: Attrs = [("IPVS_DAEMON_ATTR_STATE", SYNC_STATE[state])]
    optional: Sequence[tuple[str, object]] = (
        ("IPVS_DAEMON_ATTR_MCAST_IFN", ifname),
        ("IPVS_DAEMON_ATTR_SYNC_ID", syncid),
        ("IPVS_DAEMON_ATTR_SYNC_MAXLEN", maxlen),
        ("IPVS_DAEMON_ATTR_MCAST_GROUP", None if group is None else str(group)),
        ("IPVS_DAEMON_ATTR_MCAST_PORT", port),
        ("IPVS_DAEMON_ATTR_MCAST_TTL", ttl),
    )
    inner += [(name, value) for name, value in optional if value is not None]
    return [("IPVS_CMD_ATTR_DAEMON", {"attrs": inner})]


def parse_daemon(msg: Any) -> SyncDaemon | None:
    """A GET_DAEMON dump reply as a SyncDaemon (None for an IPv6 group or unknown state)."""
    nested = msg.get_attr("IPVS_CMD_ATTR_DAEMON")
    if nested is None:
        return None
    states = {v: k for k, v in SYNC_STATE.items()}
    state = states.get(nested.get_attr("IPVS_DAEMON_ATTR_STATE"))
    group = nested.get_attr("IPVS_DAEMON_ATTR_MCAST_GROUP")
    if state is None or group is None:
        return None
    return SyncDaemon(
        state=state,  # type: ignore[arg-type]  # from SYNC_STATE's keys
        ifname=str(nested.get_attr("IPVS_DAEMON_ATTR_MCAST_IFN")),
        syncid=int(nested.get_attr("IPVS_DAEMON_ATTR_SYNC_ID")),
        maxlen=int(nested.get_attr("IPVS_DAEMON_ATTR_SYNC_MAXLEN") or 0),
        group=ipaddress.IPv4Address(group),
        port=int(nested.get_attr("IPVS_DAEMON_ATTR_MCAST_PORT") or 0),
        ttl=int(nested.get_attr("IPVS_DAEMON_ATTR_MCAST_TTL") or 0),
    )


def timeout_attrs(timeouts: Timeouts) -> Attrs:
    return [
        ("IPVS_CMD_ATTR_TIMEOUT_TCP", timeouts.tcp),
        ("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", timeouts.tcp_fin),
        ("IPVS_CMD_ATTR_TIMEOUT_UDP", timeouts.udp),
    ]


def parse_timeouts(msg: Any) -> Timeouts:
    return Timeouts(
        tcp=int(msg.get_attr("IPVS_CMD_ATTR_TIMEOUT_TCP") or 0),
        tcp_fin=int(msg.get_attr("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN") or 0),
        udp=int(msg.get_attr("IPVS_CMD_ATTR_TIMEOUT_UDP") or 0),
    )


# -- model <-> attributes: every configured field, always ----------------------------------

IP_VS_CONN_F_FWD_MASK = 0x0007
FLAGS_MASK_ALL = 0xFFFFFFFF  # replace every flag bit on SET (the kernel merges under the mask)
# ipvsadm's names for flag bits that mean nothing to the service's own scheduler.
GENERIC_FLAGS = {"ops": 0x0004, "flag-1": 0x0008, "flag-2": 0x0010, "flag-3": 0x0020}
_FORWARDING = {v: k for k, v in FWD_METHOD.items()}
_PROTOCOL = {v: k for k, v in IPPROTO.items()}


def flag_bits(service: Service) -> int:
    """The service's IP_VS_SVC_F_* bits: scheduler flags by name, plus PERSISTENT."""
    bits = IP_VS_SVC_F_PERSISTENT if service.persistence_timeout else 0
    for name in service.flags:
        if name in SCHED_FLAGS:
            bits |= SCHED_FLAGS[name]
        elif name in GENERIC_FLAGS:
            bits |= GENERIC_FLAGS[name]
        elif name.startswith("0x"):
            bits |= int(name, 16)
        else:
            raise ValueError(f"{service.key}: unknown IPVS service flag {name!r}")
    return bits


def flag_names(scheduler: str, bits: int) -> frozenset[str]:
    """Flag bits as names: the scheduler's own (``sh-port``), ipvsadm's, else hex."""
    bits &= ~(IP_VS_SVC_F_HASHED | IP_VS_SVC_F_PERSISTENT)
    own = {bit: name for name, bit in SCHED_FLAGS.items() if name.startswith(f"{scheduler}-")}
    generic = {bit: name for name, bit in GENERIC_FLAGS.items()}
    names = set()
    for shift in range(32):
        bit = bits & (1 << shift)
        if bit:
            names.add(own.get(bit) or generic.get(bit) or f"0x{bit:x}")
    return frozenset(names)


# Attribute numbers of the nested service and dest (include/uapi/linux/ip_vs.h).
CMD_ATTR_SERVICE, CMD_ATTR_DEST = 1, 2
SVC_AF, SVC_PROTOCOL, SVC_ADDR, SVC_PORT, SVC_FWMARK = 1, 2, 3, 4, 5
SVC_SCHED_NAME, SVC_FLAGS, SVC_TIMEOUT, SVC_NETMASK = 6, 7, 8, 9
DEST_ADDR, DEST_PORT, DEST_FWD_METHOD, DEST_WEIGHT, DEST_U_THRESH, DEST_L_THRESH = 1, 2, 3, 4, 5, 6
DEST_ADDR_FAMILY, DEST_TUN_TYPE, DEST_TUN_PORT, DEST_TUN_FLAGS = 11, 13, 14, 15
_NLA = struct.Struct("=HH")
_U8, _U16, _U32, _BE16 = (struct.Struct(f) for f in ("=B", "=H", "=I", "!H"))
_FLAGS = struct.Struct("=II")


def nla(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes (pyroute2 sets no NLA_F_NESTED; nor do we)."""
    size = _NLA.size + len(payload)
    return _NLA.pack(size, kind) + payload + b"\0" * (-size % 4)


@lru_cache(maxsize=4096)
def encode_selector(key: ServiceKey) -> bytes:
    """IPVS_CMD_ATTR_SERVICE with what identifies a service (fwmark: AF and mark only).

    Cached: every dest request and dest dump of the service repeats it.
    """
    af = nla(SVC_AF, _U16.pack(socket.AF_INET))
    if key.fwmark:
        return nla(CMD_ATTR_SERVICE, af + nla(SVC_FWMARK, _U32.pack(key.fwmark)))
    return nla(
        CMD_ATTR_SERVICE,
        af
        + nla(SVC_PROTOCOL, _U16.pack(IPPROTO[key.protocol]))
        + nla(SVC_ADDR, key.address.packed)
        + nla(SVC_PORT, _BE16.pack(key.port)),
    )


def encode_service(service: Service) -> bytes:
    """IPVS_CMD_ATTR_SERVICE with the whole entry: SET replaces it, nothing left to defaults."""
    return nla(
        CMD_ATTR_SERVICE,
        encode_selector(service.key)[_NLA.size :]  # the key's attributes, then the rest
        + nla(SVC_SCHED_NAME, service.scheduler.encode() + b"\0")
        + nla(SVC_FLAGS, _FLAGS.pack(flag_bits(service), FLAGS_MASK_ALL))
        + nla(SVC_TIMEOUT, _U32.pack(service.persistence_timeout))
        # Always sent: fwmark services are EINVAL without one.
        + nla(SVC_NETMASK, service.persistence_netmask.packed),
    )


def encode_dest_key(key: DestKey) -> bytes:
    """IPVS_CMD_ATTR_DEST with what identifies a dest within its service (for DEL)."""
    return nla(
        CMD_ATTR_DEST,
        nla(DEST_ADDR_FAMILY, _U16.pack(socket.AF_INET))
        + nla(DEST_ADDR, key.address.packed)
        + nla(DEST_PORT, _BE16.pack(key.port)),
    )


def encode_dest(dest: Dest) -> bytes:
    """IPVS_CMD_ATTR_DEST, whole (SET replaces it: a weight sent alone turns NAT into DR)."""
    return nla(
        CMD_ATTR_DEST,
        encode_dest_key(dest.key)[_NLA.size :]
        + nla(DEST_FWD_METHOD, _U32.pack(FWD_METHOD[dest.forwarding]))
        + nla(DEST_WEIGHT, _U32.pack(dest.weight))
        + nla(DEST_U_THRESH, _U32.pack(dest.u_threshold))
        + nla(DEST_L_THRESH, _U32.pack(dest.l_threshold))
        # IPIP, no port/flags: the model has no tunnel options (tun_port would be host order).
        + nla(DEST_TUN_TYPE, _U8.pack(0))
        + nla(DEST_TUN_PORT, _U16.pack(0))
        + nla(DEST_TUN_FLAGS, _U16.pack(0)),
    )


def attributes(block: bytes) -> dict[int, bytes]:
    """Netlink attributes by type (NLA_F_* bits dropped); stops at a malformed one."""
    found = {}
    offset, end = 0, len(block)
    while offset + 4 <= end:
        size, kind = _NLA.unpack_from(block, offset)
        if size < 4 or offset + size > end:
            break
        found[kind & 0x3FFF] = block[offset + 4 : offset + size]
        offset += (size + 3) & ~3
    return found


def parse_service(block: bytes) -> tuple[Service | None, str]:
    """A GET_SERVICE reply's attributes as a Service without dests, or (None, why skipped).

    Addresses arrive as 16 bytes (union nf_inet_addr); IPv4 uses the first 4.
    """
    try:
        a = attributes(attributes(block)[CMD_ATTR_SERVICE])
        if _U16.unpack(a[SVC_AF])[0] != socket.AF_INET:
            return None, "service-not-ipv4"
        fwmark = _U32.unpack(a[SVC_FWMARK])[0] if SVC_FWMARK in a else 0
        if fwmark:
            key = ServiceKey(fwmark=fwmark)
        else:
            protocol = _PROTOCOL.get(_U16.unpack(a[SVC_PROTOCOL])[0])
            if protocol is None:
                return None, "service-protocol"
            key = ServiceKey(
                protocol=protocol,  # type: ignore[arg-type]  # from IPPROTO's keys
                address=ipaddress.IPv4Address(a[SVC_ADDR][:4]),
                port=_BE16.unpack(a[SVC_PORT])[0],
            )
        scheduler = a[SVC_SCHED_NAME].split(b"\0", 1)[0].decode()
        bits = _FLAGS.unpack(a[SVC_FLAGS])[0]
        timeout = _U32.unpack(a[SVC_TIMEOUT])[0] if bits & IP_VS_SVC_F_PERSISTENT else 0
        netmask = ipaddress.IPv4Address(a[SVC_NETMASK][:4])
    except (KeyError, struct.error, ValueError):
        return None, "service-malformed"
    return Service(key, scheduler, flag_names(scheduler, bits), timeout, netmask), ""


def parse_dest(block: bytes) -> tuple[Dest | None, str]:
    """A GET_DEST reply's attributes as a Dest, or (None, why it was skipped)."""
    try:
        a = attributes(attributes(block)[CMD_ATTR_DEST])
        if DEST_ADDR_FAMILY in a and _U16.unpack(a[DEST_ADDR_FAMILY])[0] != socket.AF_INET:
            return None, "dest-not-ipv4"
        method = _U32.unpack(a[DEST_FWD_METHOD])[0] & IP_VS_CONN_F_FWD_MASK
        key = DestKey(ipaddress.IPv4Address(a[DEST_ADDR][:4]), _BE16.unpack(a[DEST_PORT])[0])
        weight, upper, lower = (
            _U32.unpack(a[n])[0] for n in (DEST_WEIGHT, DEST_U_THRESH, DEST_L_THRESH)
        )
    except (KeyError, struct.error, ValueError):
        return None, "dest-malformed"
    forwarding = _FORWARDING.get(method)
    if forwarding is None:
        return None, "dest-forwarding"
    return Dest(key, weight, forwarding, upper, lower), ""  # type: ignore[arg-type]  # FWD_METHOD
