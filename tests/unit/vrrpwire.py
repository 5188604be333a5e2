"""A VRRP advert as the receive path gets it from the raw socket: IPv4 header and all."""

from __future__ import annotations

import ipaddress
import struct

from lvsagent.vrrp.packet import Advert, encode

A = ipaddress.IPv4Address
PEER, GROUP = A("172.16.0.32"), A("224.0.0.18")


def datagram(adv: Advert, src: A = PEER, ttl: int = 255, dst: A = GROUP) -> bytes:
    msg = encode(adv, src, dst)
    head = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(msg), 0, 0, ttl, 112, 0, src.packed, dst.packed
    )
    return head + msg
