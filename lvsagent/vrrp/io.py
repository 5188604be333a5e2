"""The VRRP wire: one raw IPv4 socket per instance, and a packet socket for ARP.

An adapter only: it sends what it is given and hands back raw datagrams.  All
decisions (which packets count, what to send) are made by the pure modules.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct

from lvsagent.vrrp.addresses import InterfaceError
from lvsagent.vrrp.arp import ETH_P_ARP, gratuitous_arp, parse_mac
from lvsagent.vrrp.packet import IPPROTO_VRRP

VRRP_GROUP = ipaddress.IPv4Address("224.0.0.18")
SO_BINDTODEVICE = 25
IP_MULTICAST_ALL = 49


class VrrpSocket:
    """Raw sockets for protocol 112 on one interface: one to send, one to receive.

    Two sockets because a raw socket bound to an address only receives
    datagrams *addressed* to it, yet we must bind the source (it is in the v3
    pseudo-header and is our tie-break identity) and still hear 224.0.0.18.
    The kernel writes the IP header on send (TTL from IP_TTL or
    IP_MULTICAST_TTL); on receive the IPv4 header comes with the payload,
    which is how we read the TTL that RFC 5798 requires to be 255.
    """

    def __init__(
        self,
        ifname: str,
        ifindex: int,
        source: ipaddress.IPv4Address,
        unicast: bool,
        ttl: int = 255,
        tx: tuple[str, int] | None = None,
    ) -> None:
        """``tx``: (name, index) of another interface to send from (use_vmac's macvlan);
        adverts are still received on ``ifname``."""
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_VRRP)
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_VRRP)
        tx_name, tx_index = tx or (ifname, ifindex)
        try:
            mreqn = struct.pack("4s4si", VRRP_GROUP.packed, source.packed, ifindex)
            tx_mreqn = struct.pack("4s4si", VRRP_GROUP.packed, source.packed, tx_index)
            for sock, name in ((self.tx, tx_name), (self.rx, ifname)):
                sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, name.encode())
                sock.setblocking(False)
            try:
                self.tx.bind((str(source), 0))
            except OSError as exc:
                if exc.errno != errno.EADDRNOTAVAIL:
                    raise
                # A config problem, not an OS failure: 78, not retried by systemd.
                raise InterfaceError(
                    f"cannot send VRRP from {source} on {ifname}: no interface of this box "
                    f"has that address; add {source} to {ifname} or fix unicast_src"
                ) from None
            if unicast:
                self.tx.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            else:
                self.tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, tx_mreqn)
                self.tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
                self.tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
                self.rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            # Only the groups joined on this socket, not every socket's groups.
            self.rx.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        except BaseException:
            self.close()
            raise

    def fileno(self) -> int:
        return self.rx.fileno()

    def send(self, message: bytes, dst: ipaddress.IPv4Address) -> None:
        self.tx.sendto(message, (str(dst), 0))

    def recv(self) -> bytes | None:
        """One whole datagram, or None when nothing is waiting."""
        try:
            return self.rx.recv(65535)
        except BlockingIOError:
            return None

    def close(self) -> None:
        self.tx.close()
        self.rx.close()


class ArpSender:
    """Sends gratuitous ARP on one interface through an AF_PACKET socket that receives nothing.

    Protocol 0: the socket is bound to the interface but registers no receive
    hook.  Bound to ETH_P_ARP it would get a copy of every ARP frame on the link
    (never read), and, worse, the kernel marks such a socket ENETDOWN when its
    link goes down and keeps that error pending until the next send: the first
    announcement after a link flap, a takeover's, then failed.  Each frame is
    sent with its protocol named in the address instead.
    """

    def __init__(self, ifname: str, mac: str) -> None:
        self.mac = parse_mac(mac)
        self.ifname = ifname
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self.sock.bind((ifname, 0))
        except BaseException:
            self.sock.close()
            raise

    def announce(self, addresses: list[ipaddress.IPv4Address], repeat: int) -> None:
        frames = [gratuitous_arp(self.mac, a) for a in addresses]
        where = (self.ifname, ETH_P_ARP)
        for _ in range(repeat):
            for frame in frames:
                self.sock.sendto(frame, where)

    def close(self) -> None:
        self.sock.close()
