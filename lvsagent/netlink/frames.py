"""Netlink on the wire: message headers, attributes and acknowledgements (pure).

Every hand-framed request and reply goes through here: the IPVS batches and
dumps (ipvs/batch.py), the VIP fast path (vrrp/fastaddr.py) and the metrics'
IPVS counters (observe/ipvsstats.py).  Numbers from include/uapi/linux/netlink.h
and genetlink.h.  Readers are lenient the same way everywhere: a malformed tail
ends the walk, so a reply we cannot read leaves its request unconfirmed, which
each caller treats as failed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x01
NLM_F_ACK = 0x04
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_DUMP = 0x300
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2

NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, seq, pid
GENLHDR = struct.Struct("=BBH")  # cmd, version, reserved
NLA = struct.Struct("=HH")  # length, type
_I32 = struct.Struct("=i")


def align(size: int) -> int:
    return (size + 3) & ~3


def nla(kind: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes (no NLA_F_NESTED, as pyroute2 and ipvsadm send)."""
    size = NLA.size + len(payload)
    return NLA.pack(size, kind) + payload + b"\0" * (-size % 4)


def attributes(
    data: bytes | memoryview, offset: int = 0, strict: bool = False
) -> Iterator[tuple[int, bytes]]:
    """(type without flag bits, payload) of each attribute from ``offset`` on.

    A malformed attribute ends the walk, or with ``strict`` raises ValueError."""
    while offset + NLA.size <= len(data):
        length, kind = NLA.unpack_from(data, offset)
        if length < NLA.size or offset + length > len(data):
            if strict:
                raise ValueError(f"netlink attribute of length {length} at {offset} overruns")
            return
        yield kind & NLA_TYPE_MASK, bytes(data[offset + NLA.size : offset + length])
        offset += align(length)


def messages(data: bytes | memoryview) -> Iterator[tuple[int, int, int, int]]:
    """(type, seq, start of the payload, end of the message) of each message in a datagram."""
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, kind, _flags, seq, _pid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > len(data):
            return
        yield kind, seq, offset + NLMSGHDR.size, offset + length
        offset += align(length)


def error_code(data: bytes | memoryview, payload: int) -> int:
    """The errno of an NLMSG_ERROR whose payload starts at ``payload`` (0: an ack)."""
    return -int(_I32.unpack_from(data, payload)[0])


def acks(data: bytes | memoryview) -> list[tuple[int, int]]:
    """(seq, errno) of every NLMSG_ERROR in a datagram; errno 0 is an acknowledgement.

    An error message too short to hold its code is skipped (left unconfirmed)."""
    return [
        (seq, error_code(data, start))
        for kind, seq, start, end in messages(data)
        if kind == NLMSG_ERROR and end - start >= _I32.size
    ]
