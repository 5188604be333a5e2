"""Accept or discard one received datagram for one VRRP instance (pure).

The checks that depend on our own configuration live here rather than in the
socket loop, so that each has a unit test that can fail (a wrong-VRID check
buried in an I/O goroutine is how seesaw ended up with a test that could not).
Order, after RFC 5798 section 7.1: TTL, then the codec's own checks (length,
version, type, checksum), then VRID, authentication and interval.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from lvsagent.vrrp.packet import (
    AUTH_NONE,
    AUTH_PASS,
    Advert,
    Discard,
    IPv4Datagram,
    Reason,
    decode,
    parse_ipv4,
)


@dataclass(frozen=True)
class RxPolicy:
    """What this instance will accept."""

    version: int
    vrid: int
    adver_int_cs: int
    auth_type: int = AUTH_NONE
    auth_data: bytes = b"\0" * 8
    require_ttl_255: bool = True
    own_addresses: frozenset[ipaddress.IPv4Address] = frozenset()
    unicast_peers: frozenset[ipaddress.IPv4Address] = frozenset()


def accept(raw: bytes, policy: RxPolicy) -> tuple[Advert, IPv4Datagram]:
    """Return the advert and its IP envelope, or raise :class:`Discard` with a reason."""
    ip = parse_ipv4(raw)
    if ip.src in policy.own_addresses:
        raise Discard(Reason.OWN, f"from our own address {ip.src}")
    if policy.unicast_peers and ip.src not in policy.unicast_peers:
        raise Discard(Reason.PEER, f"from {ip.src}, not a configured unicast peer")
    # RFC 5798 7.1: "MUST verify that the IPv4 TTL ... is 255"
    if policy.require_ttl_255 and ip.ttl != 255:
        raise Discard(Reason.IP_TTL, f"TTL {ip.ttl} from {ip.src}")
    adv = decode(ip.payload, ip.src, ip.dst)
    if adv.version != policy.version:
        raise Discard(Reason.VERSION, f"v{adv.version} from {ip.src}, we speak v{policy.version}")
    # RFC 5798 7.1: "MUST verify that the VRID is configured on the receiving interface"
    if adv.vrid != policy.vrid:
        raise Discard(Reason.VRID, f"VRID {adv.vrid} from {ip.src}")
    if adv.version == 2:
        _check_v2_auth(adv, policy, ip.src)
        # RFC 3768 7.1: "MUST verify that the Adver Interval in the packet is
        # the same as the locally configured for this virtual router"
        if adv.max_adver_int != policy.adver_int_cs:
            raise Discard(
                Reason.INTERVAL,
                f"interval {adv.interval:g} s from {ip.src}, ours {policy.adver_int_cs / 100:g} s",
            )
    return adv, ip


def _check_v2_auth(adv: Advert, policy: RxPolicy, src: ipaddress.IPv4Address) -> None:
    if adv.auth_type not in (AUTH_NONE, AUTH_PASS):
        raise Discard(Reason.AUTH_TYPE, f"auth type {adv.auth_type} from {src}")
    if adv.auth_type != policy.auth_type:
        raise Discard(
            Reason.AUTH_TYPE_MISMATCH,
            f"auth type {adv.auth_type} from {src}, ours {policy.auth_type}",
        )
    if adv.auth_type == AUTH_PASS and adv.auth_data != policy.auth_data:
        raise Discard(Reason.AUTH, f"password mismatch from {src}")
