"""Gratuitous ARP frames (pure).

A new master announces each virtual address so that switches and neighbours
move it to our MAC at once, instead of waiting for their ARP entries to age.
Linux updates an existing neighbour entry from such a request but creates
none unless ``arp_accept=1``, which is why the announcement is a request with
sender IP == target IP (RFC 5227 calls it an ARP Announcement).
"""

from __future__ import annotations

import ipaddress
import struct

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
BROADCAST = b"\xff" * 6


def parse_mac(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6:
        raise ValueError(f"not a MAC address: {text!r}")
    return bytes(int(p, 16) for p in parts)


def gratuitous_arp(mac: bytes, address: ipaddress.IPv4Address) -> bytes:
    """An Ethernet frame: ARP request, sender = target = ``address``, from ``mac``."""
    if len(mac) != 6:
        raise ValueError("a MAC address has 6 bytes")
    eth = BROADCAST + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, 1)  # Ethernet, IPv4, request
    arp += mac + address.packed + b"\0" * 6 + address.packed
    return eth + arp
