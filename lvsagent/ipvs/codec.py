"""IPVS services and dests to netlink attributes and back, by hand with struct (pure).

pyroute2 costs ~0.25 ms of CPU a message, which made programming and dumping
1000 x 10 entries take seconds (batch.py has the figures).  Requests always carry
the whole entry (SET replaces it; pyroute2's own helpers would fill omitted
fields with *its* defaults: ``wlc``, DR, weight 1), and replies are read for
configured fields only (counters never make entries differ).  The reconciler's
requests (batch.py), its dumps (kernel.py) and the metrics collector's dumps use
these same functions.
"""

from __future__ import annotations

import ipaddress
import struct
from functools import lru_cache

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
from lvsagent.netlink import frames

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


AF_INET = 2  # Linux's address family number (socket.AF_INET), kept here to stay pure
# Attribute numbers of the nested service and dest (include/uapi/linux/ip_vs.h).
CMD_ATTR_SERVICE, CMD_ATTR_DEST = 1, 2
SVC_AF, SVC_PROTOCOL, SVC_ADDR, SVC_PORT, SVC_FWMARK = 1, 2, 3, 4, 5
SVC_SCHED_NAME, SVC_FLAGS, SVC_TIMEOUT, SVC_NETMASK = 6, 7, 8, 9
DEST_ADDR, DEST_PORT, DEST_FWD_METHOD, DEST_WEIGHT, DEST_U_THRESH, DEST_L_THRESH = 1, 2, 3, 4, 5, 6
DEST_ADDR_FAMILY, DEST_TUN_TYPE, DEST_TUN_PORT, DEST_TUN_FLAGS = 11, 13, 14, 15
_NLA = struct.Struct("=HH")
_U8, _U16, _U32, _BE16 = (struct.Struct(f) for f in ("=B", "=H", "=I", "!H"))
_FLAGS = struct.Struct("=II")


nla = frames.nla


@lru_cache(maxsize=4096)
def encode_selector(key: ServiceKey) -> bytes:
    """IPVS_CMD_ATTR_SERVICE with what identifies a service (fwmark: AF and mark only).

    Cached: every dest request and dest dump of the service repeats it.
    """
    af = nla(SVC_AF, _U16.pack(AF_INET))
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
        nla(DEST_ADDR_FAMILY, _U16.pack(AF_INET))
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
    return dict(frames.attributes(block))


def parse_service(block: bytes) -> tuple[Service | None, str]:
    """A GET_SERVICE reply's attributes as a Service without dests, or (None, why skipped).

    Addresses arrive as 16 bytes (union nf_inet_addr); IPv4 uses the first 4.
    """
    try:
        a = attributes(attributes(block)[CMD_ATTR_SERVICE])
        if _U16.unpack(a[SVC_AF])[0] != AF_INET:
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
        if DEST_ADDR_FAMILY in a and _U16.unpack(a[DEST_ADDR_FAMILY])[0] != AF_INET:
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
