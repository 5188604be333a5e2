"""IPVS counters and rates for /metrics: a small, blocking generic-netlink dump.

Why not pyroute2 here: the Prometheus endpoint serves each scrape in a new
thread, and a pyroute2 socket belongs to the thread (and loop) that set it up
(pyroute2 0.9).  pyroute2 also costs ~0.5 ms of CPU a message, so a
1000 x 10 table would take seconds a scrape.  This reader opens a plain
AF_NETLINK socket in the calling thread, dumps, parses with struct, closes;
it reads only the statistics and the fields that label them, and makes no
change to the kernel.

Layout (include/uapi/linux/ip_vs.h): a GET_SERVICE dump gives one message per
service with a nested IPVS_CMD_ATTR_SERVICE; its STATS64 (or, on old kernels,
STATS) nests the counters without a prefix of their own.  Dests are dumped
per service, identified by echoing the service's own key attributes back.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from lvsagent.ipvs.codec import (
    CMD_ATTR_DEST,
    CMD_ATTR_SERVICE,
    DEST_ADDR,
    DEST_ADDR_FAMILY,
    DEST_PORT,
    DEST_WEIGHT,
    SVC_ADDR,
    SVC_AF,
    SVC_FWMARK,
    SVC_PORT,
    SVC_PROTOCOL,
)
from lvsagent.netlink import frames
from lvsagent.netlink.frames import (
    CTRL_ATTR_FAMILY_ID,
    CTRL_ATTR_FAMILY_NAME,
    CTRL_CMD_GETFAMILY,
    GENL_ID_CTRL,
    GENLHDR,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSGHDR,
)

NETLINK_GENERIC = 16
IPVS_GENL_VERSION = 1
IPVS_CMD_GET_SERVICE = 4
IPVS_CMD_GET_DEST = 8
# The statistics and connection counts: the attributes codec.py does not read.
SVC_STATS, SVC_STATS64 = 10, 12
DEST_ACTIVE_CONNS, DEST_INACT_CONNS, DEST_PERSIST_CONNS = 7, 8, 9
DEST_STATS, DEST_STATS64 = 10, 12

_SERVICE_KEY = (SVC_AF, SVC_PROTOCOL, SVC_ADDR, SVC_PORT, SVC_FWMARK)
_PROTOCOLS = {6: "tcp", 17: "udp", 132: "sctp"}
RECV_BUFFER = 1 << 16  # the kernel's dump messages stay below 32 KiB
TIMEOUT = 5.0  # a scrape must end even if the kernel never answers


@dataclass(frozen=True)
class Counters:
    """IPVS_STATS_ATTR_*: totals since the entry was added, and rates per second.

    The kernel refreshes rates every 2 s (an estimator), totals on each packet.
    """

    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0
    cps: int = 0
    inpps: int = 0
    outpps: int = 0
    inbps: int = 0
    outbps: int = 0


_COUNTER_FIELDS = tuple(Counters.__dataclass_fields__)  # attribute order = IPVS_STATS_ATTR 1..10


@dataclass(frozen=True)
class DestStats:
    address: str  # "ip:port", "[ip6]:port"
    weight: int
    active_conns: int
    inactive_conns: int
    persistent_conns: int
    counters: Counters


@dataclass(frozen=True)
class ServiceStats:
    label: str  # "10.0.0.1:80/tcp" (as the config labels it) or "fwmark 5" (metrics relabel)
    counters: Counters
    dests: tuple[DestStats, ...] = ()


def attributes(data: bytes, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each attribute in ``data[offset:]``; ValueError if one overruns."""
    return frames.attributes(data, offset, strict=True)


def _uint(payload: bytes) -> int:
    """A u8/u16/u32/u64 in host order, by its length (STATS mixes u32 and u64)."""
    return int.from_bytes(payload, sys.byteorder)


_AF_INET_U16 = struct.pack("=H", socket.AF_INET)
_ZERO = bytes(16)


def parse_counters(payload: bytes) -> Counters:
    values: dict[str, int] = {}
    for kind, value in attributes(payload):
        if 1 <= kind <= len(_COUNTER_FIELDS):
            values[_COUNTER_FIELDS[kind - 1]] = _uint(value)
    return Counters(**values)


def _address(family: int, raw: bytes) -> str:
    if family == socket.AF_INET6:
        return f"[{ipaddress.IPv6Address(raw[:16])}]"
    return str(ipaddress.IPv4Address(raw[:4]))


def _stats(attrs: dict[int, bytes], stats64: int, stats32: int) -> Counters:
    if stats64 in attrs:
        return parse_counters(attrs[stats64])
    return parse_counters(attrs[stats32]) if stats32 in attrs else Counters()


def fwmark_label(mark: int) -> str:
    """How a fwmark service is labelled here: the kernel knows it by its mark alone."""
    return f"fwmark {mark}"


def parse_service(nested: bytes) -> tuple[ServiceStats, list[tuple[int, bytes]]]:
    """A service's label and counters, and the key attributes that name it in a dest dump."""
    attrs = dict(attributes(nested))
    family = _uint(attrs.get(SVC_AF, _AF_INET_U16))
    fwmark = _uint(attrs.get(SVC_FWMARK, _ZERO))
    if fwmark:
        label = fwmark_label(fwmark)
    else:
        protocol = _PROTOCOLS.get(_uint(attrs.get(SVC_PROTOCOL, _ZERO)), "proto?")
        port = int.from_bytes(attrs.get(SVC_PORT, _ZERO), "big")  # __be16
        label = f"{_address(family, attrs.get(SVC_ADDR, bytes(16)))}:{port}/{protocol}"
    key = [(k, attrs[k]) for k in _SERVICE_KEY if k in attrs]
    return ServiceStats(label, _stats(attrs, SVC_STATS64, SVC_STATS)), key


def parse_dest(nested: bytes, service_family: int = socket.AF_INET) -> DestStats:
    attrs = dict(attributes(nested))
    family = _uint(attrs[DEST_ADDR_FAMILY]) if DEST_ADDR_FAMILY in attrs else service_family
    port = int.from_bytes(attrs.get(DEST_PORT, _ZERO), "big")  # __be16
    return DestStats(
        address=f"{_address(family, attrs.get(DEST_ADDR, bytes(16)))}:{port}",
        weight=_uint(attrs.get(DEST_WEIGHT, _ZERO)),
        active_conns=_uint(attrs.get(DEST_ACTIVE_CONNS, _ZERO)),
        inactive_conns=_uint(attrs.get(DEST_INACT_CONNS, _ZERO)),
        persistent_conns=_uint(attrs.get(DEST_PERSIST_CONNS, _ZERO)),
        counters=_stats(attrs, DEST_STATS64, DEST_STATS),
    )


encode_attribute = frames.nla


class GenlDumper:
    """One generic netlink socket, used by one thread from open to close."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        self.sock.settimeout(TIMEOUT)
        self.sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self.sock.close()

    def request(self, family: int, cmd: int, attrs: bytes, flags: int) -> Iterator[bytes]:
        """The attribute block of each reply, until DONE (a dump) or the ACK; OSError on error."""
        self._seq += 1
        body = GENLHDR.pack(cmd, IPVS_GENL_VERSION, 0) + attrs
        header = NLMSGHDR.pack(NLMSGHDR.size + len(body), family, flags, self._seq, 0)
        self.sock.send(header + body)
        while True:
            data = self.sock.recv(RECV_BUFFER)
            walked = 0
            for kind, seq, start, end in frames.messages(data):
                walked = frames.align(end)
                if seq != self._seq:
                    continue
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    code = frames.error_code(data, start)
                    if code == 0:  # the ACK of a non-dump request
                        return
                    raise OSError(code, os.strerror(code))
                if kind == family:
                    yield data[start + GENLHDR.size : end]
            if walked < len(data):
                raise OSError(errno.EPROTO, "malformed netlink reply")

    def family_id(self, name: str) -> int | None:
        """The id the kernel gave a genl family; None if it is not registered (not loaded)."""
        attr = encode_attribute(CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0")
        flags = NLM_F_REQUEST | NLM_F_ACK  # the ACK ends the reply; a lookup has no DONE
        try:
            replies = list(self.request(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, attr, flags))
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        for reply in replies:
            found = dict(attributes(reply)).get(CTRL_ATTR_FAMILY_ID)
            if found is not None:
                return _uint(found)
        return None


def read_ipvs_stats() -> list[ServiceStats] | None:
    """Every service with its dests' counters; None when this kernel has no IPVS.

    Blocking (milliseconds for a thousand services): call it from a thread,
    never from the event loop.  Raises OSError on other failures.
    """
    dumper = GenlDumper()
    try:
        family = dumper.family_id("IPVS")
        if family is None:
            return None
        heads: list[tuple[ServiceStats, list[tuple[int, bytes]]]] = []
        for reply in dumper.request(family, IPVS_CMD_GET_SERVICE, b"", NLM_F_REQUEST | NLM_F_DUMP):
            nested = dict(attributes(reply)).get(CMD_ATTR_SERVICE)
            if nested is not None:
                heads.append(parse_service(nested))
        services = []
        for head, key in heads:
            key_attrs = b"".join(encode_attribute(k, v) for k, v in key)
            request = encode_attribute(CMD_ATTR_SERVICE, key_attrs)
            family_of = _uint(dict(key).get(SVC_AF, _AF_INET_U16))
            dests = []
            try:
                for reply in dumper.request(
                    family, IPVS_CMD_GET_DEST, request, NLM_F_REQUEST | NLM_F_DUMP
                ):
                    nested = dict(attributes(reply)).get(CMD_ATTR_DEST)
                    if nested is not None:
                        dests.append(parse_dest(nested, family_of))
            except OSError as exc:
                if exc.errno not in (errno.ESRCH, errno.ENOENT):  # deleted since the first dump
                    raise
                continue
            services.append(ServiceStats(head.label, head.counters, tuple(dests)))
        return services
    finally:
        dumper.close()
