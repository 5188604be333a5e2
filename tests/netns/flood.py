"""Send a bounded stream of invalid VRRP packets to 224.0.0.18 from inside a test namespace.

Each packet is wrong in exactly one way; several claim priority 255 so that
accepting any of them by mistake would visibly change the election.
Usage: python -m tests.netns.flood IFNAME SRC COUNT
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
import sys

from lvsagent.vrrp.packet import Advert, encode, pass_auth_data

GROUP = ipaddress.IPv4Address("224.0.0.18")
VIP = (ipaddress.IPv4Address("10.99.0.100"),)


def variants(src: ipaddress.IPv4Address) -> list[tuple[bytes, int]]:
    """(message, ttl) pairs, each invalid for a v3 instance with VRID 51 or a v2 one with PASS."""
    good_v3 = encode(Advert(3, 51, 255, 10, VIP), src, GROUP)
    auth = pass_auth_data("2222")
    return [
        (good_v3, 1),  # TTL
        (good_v3[:6] + b"\x00\x00" + good_v3[8:], 255),  # checksum
        (encode(Advert(3, 52, 255, 10, VIP), src, GROUP), 255),  # VRID
        (good_v3[:-2], 255),  # truncated
        (bytes([0x41]) + good_v3[1:], 255),  # version
        (bytes([0x32]) + good_v3[1:], 255),  # type
        (encode(Advert(2, 51, 255, 100, VIP, *auth)), 255),  # v2 with a wrong password
        (b"\xff" * 3, 255),  # garbage
    ]


def main() -> int:
    ifname, src, count = sys.argv[1], ipaddress.IPv4Address(sys.argv[2]), int(sys.argv[3])
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
    s.setsockopt(socket.SOL_SOCKET, 25, ifname.encode())
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    packets = variants(src)
    ttl_now = -1
    sent = 0
    for msg, ttl in itertools.islice(itertools.cycle(packets), count):
        if ttl != ttl_now:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
            ttl_now = ttl
        s.sendto(msg, (str(GROUP), 0))
        sent += 1
    print(f"sent {sent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
