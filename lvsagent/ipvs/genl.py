"""The IPVS generic netlink family: its numbers, the pyroute2 socket, daemons, timeouts.

Services and dests are encoded and parsed by hand in codec.py (pure).  The sync
daemon and timeouts (a few requests in a daemon's life) stay on pyroute2, whose
``ipvsmsg`` has them as opaque blobs; IpvsMessage types them:

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
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from lvsagent.netlink.pyroute import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    AsyncIPVS,
)
from lvsagent.netlink.pyroute import genl_ipvs as _ipvs
from lvsagent.netlink.pyroute import nla as _nla

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
