"""VRRP v2 (RFC 3768) and v3 (RFC 5798 / RFC 9568) advertisements over IPv4.

Pure: bytes in, values out.  Remote bytes never raise anything but
:class:`Discard`, and every discard carries a named reason so it can be
counted (the names follow keepalived's counters where keepalived has one, so
existing dashboards map over).  Checks run in the fixed order of RFC 5798
section 7.1; the first failure wins.

``decode`` keeps every bit it was given (reserved bits, v2 auth data, which
v3 checksum form matched), so ``encode(decode(x)) == x`` holds for anything
that decodes.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

IPPROTO_VRRP = 112
VRRP_TYPE_ADVERTISEMENT = 1
AUTH_NONE = 0
AUTH_PASS = 1
V2_AUTH_DATA_LEN = 8
HEADER_LEN = 8

ChecksumMode = Literal["message_only", "pseudo_header"]


class Reason(StrEnum):
    """Why a received packet was discarded."""

    IP_HEADER = "ip_header_err"  # not an IPv4 header, or not protocol 112
    IP_TTL = "ip_ttl_err"  # RFC 5798 7.1: TTL must be 255
    PACKET_LEN = "packet_len_err"  # truncated, or length disagrees with the address count
    VERSION = "version_err"  # not the version this instance speaks
    TYPE = "invalid_type_rcvd"  # not an ADVERTISEMENT
    CHECKSUM = "checksum_err"
    VRID = "vrid_err"  # for another virtual router on this link
    AUTH_TYPE = "invalid_authtype"  # v2 auth type we do not speak at all
    AUTH_TYPE_MISMATCH = "authtype_mismatch"
    AUTH = "auth_failure"  # v2 password differs
    INTERVAL = "advert_interval_err"  # v2: interval differs from ours (RFC 3768 7.1)
    ADDR_LIST = "addr_list_err"  # v2: address list differs from ours (RFC 3768 7.1)
    OWN = "own_packet"  # our own advert looped back to us
    PEER = "unknown_peer"  # unicast from an address that is not a configured peer


# The count field is one byte, v3's interval twelve bits (centiseconds).
MAX_ADDRESSES = 255
V3_MAX_INTERVAL_CS = 0x0FFF


class EncodeError(ValueError):
    """Our own advert does not fit the wire format; the message says which field and why."""


class Discard(Exception):
    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Advert:
    """One decoded advertisement.  ``max_adver_int`` is always in centiseconds."""

    version: int
    vrid: int
    priority: int
    max_adver_int: int
    addresses: tuple[ipaddress.IPv4Address, ...]
    auth_type: int = AUTH_NONE  # v2 only
    auth_data: bytes = b"\0" * V2_AUTH_DATA_LEN  # v2 only
    reserved: int = 0  # v3's 4 reserved bits, kept so re-encoding is exact
    checksum_mode: ChecksumMode = "pseudo_header"  # v3 only; v2 has one form

    @property
    def interval(self) -> float:
        return self.max_adver_int / 100.0


@dataclass(frozen=True)
class IPv4Datagram:
    src: ipaddress.IPv4Address
    dst: ipaddress.IPv4Address
    ttl: int
    protocol: int
    payload: bytes


def internet_checksum(data: bytes) -> int:
    """RFC 1071 one's-complement sum; the same routine serves VRRP v2 and v3."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pseudo_header(src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address, length: int) -> bytes:
    return src.packed + dst.packed + struct.pack("!BBH", 0, IPPROTO_VRRP, length)


def _v3_checksum(
    message: bytes,
    mode: ChecksumMode,
    src: ipaddress.IPv4Address,
    dst: ipaddress.IPv4Address,
) -> int:
    prefix = _pseudo_header(src, dst, len(message)) if mode == "pseudo_header" else b""
    return internet_checksum(prefix + message)


def encode(
    adv: Advert,
    src: ipaddress.IPv4Address | None = None,
    dst: ipaddress.IPv4Address | None = None,
) -> bytes:
    """The VRRP message (no IP header; the kernel adds it).

    The v3 pseudo-header form needs the source and destination the packet
    will travel with, so a unicast sender encodes once per peer.
    """
    count = len(adv.addresses)
    if count > MAX_ADDRESSES:
        raise EncodeError(
            f"an advert carries at most {MAX_ADDRESSES} addresses (its count is one byte); "
            f"this one has {count}"
        )
    if adv.version == 3 and not 0 <= adv.max_adver_int <= V3_MAX_INTERVAL_CS:
        raise EncodeError(
            f"a VRRPv3 interval is 0-{V3_MAX_INTERVAL_CS} centiseconds; not {adv.max_adver_int}"
        )
    try:
        return _encode(adv, count, src, dst)
    except struct.error as exc:  # a field out of its range: vrid, priority, auth...
        raise EncodeError(f"advert for vrid {adv.vrid} does not encode: {exc}") from exc


def _encode(
    adv: Advert,
    count: int,
    src: ipaddress.IPv4Address | None,
    dst: ipaddress.IPv4Address | None,
) -> bytes:
    addrs = b"".join(a.packed for a in adv.addresses)
    if adv.version == 2:
        head = struct.pack(
            "!BBBBBBH",
            (2 << 4) | VRRP_TYPE_ADVERTISEMENT,
            adv.vrid,
            adv.priority,
            count,
            adv.auth_type,
            adv.max_adver_int // 100,
            0,
        )
        body = head + addrs + adv.auth_data
        csum = internet_checksum(body)
    else:
        rsvd_int = (adv.reserved << 12) | adv.max_adver_int
        head = struct.pack(
            "!BBBBHH",
            (3 << 4) | VRRP_TYPE_ADVERTISEMENT,
            adv.vrid,
            adv.priority,
            count,
            rsvd_int,
            0,
        )
        body = head + addrs
        if adv.checksum_mode == "pseudo_header" and (src is None or dst is None):
            raise ValueError("the VRRPv3 pseudo-header checksum needs src and dst")
        csum = _v3_checksum(
            body,
            adv.checksum_mode,
            src or ipaddress.IPv4Address(0),
            dst or ipaddress.IPv4Address(0),
        )
    return body[:6] + struct.pack("!H", csum) + body[8:]


def decode(
    message: bytes,
    src: ipaddress.IPv4Address,
    dst: ipaddress.IPv4Address,
) -> Advert:
    """Parse and verify a VRRP message; raise :class:`Discard` for anything unacceptable.

    This checks only what the bytes themselves can tell (length, version,
    type, checksum).  What depends on our configuration (TTL, VRID, auth,
    interval) is checked by :func:`lvsagent.vrrp.receive.accept`.
    """
    if len(message) < HEADER_LEN:
        raise Discard(Reason.PACKET_LEN, f"{len(message)} bytes, shorter than a VRRP header")
    vt, vrid, priority, count = message[0], message[1], message[2], message[3]
    version, kind = vt >> 4, vt & 0x0F
    if version not in (2, 3):
        raise Discard(Reason.VERSION, f"version {version}")
    if kind != VRRP_TYPE_ADVERTISEMENT:
        raise Discard(Reason.TYPE, f"type {kind}")
    auth_len = V2_AUTH_DATA_LEN if version == 2 else 0
    expected = HEADER_LEN + 4 * count + auth_len
    if len(message) != expected:
        raise Discard(Reason.PACKET_LEN, f"{len(message)} bytes, {count} addresses need {expected}")
    addresses = tuple(
        ipaddress.IPv4Address(message[HEADER_LEN + 4 * i : HEADER_LEN + 4 * i + 4])
        for i in range(count)
    )
    if version == 2:
        if internet_checksum(message) != 0:
            raise Discard(Reason.CHECKSUM, "v2 checksum")
        auth_type, adver_int = message[4], message[5]
        return Advert(
            version=2,
            vrid=vrid,
            priority=priority,
            max_adver_int=adver_int * 100,
            addresses=addresses,
            auth_type=auth_type,
            auth_data=message[-V2_AUTH_DATA_LEN:],
        )
    (rsvd_int,) = struct.unpack("!H", message[4:6])
    mode: ChecksumMode
    # RFC 9568 says message only; keepalived and others include the pseudo-header.
    if internet_checksum(_pseudo_header(src, dst, len(message)) + message) == 0:
        mode = "pseudo_header"
    elif internet_checksum(message) == 0:
        mode = "message_only"
    else:
        raise Discard(Reason.CHECKSUM, "v3 checksum matches neither form")
    return Advert(
        version=3,
        vrid=vrid,
        priority=priority,
        max_adver_int=rsvd_int & 0x0FFF,
        addresses=addresses,
        reserved=rsvd_int >> 12,
        checksum_mode=mode,
    )


def parse_ipv4(datagram: bytes) -> IPv4Datagram:
    """Split what a raw IPv4 socket hands us into header fields and payload."""
    if len(datagram) < 20 or datagram[0] >> 4 != 4:
        raise Discard(Reason.IP_HEADER, "not IPv4")
    ihl = (datagram[0] & 0x0F) * 4
    (total,) = struct.unpack("!H", datagram[2:4])
    if ihl < 20 or len(datagram) < ihl or total < ihl:
        raise Discard(Reason.IP_HEADER, "bad IPv4 header length")
    if datagram[9] != IPPROTO_VRRP:
        raise Discard(Reason.IP_HEADER, f"protocol {datagram[9]}")
    # Linux hands raw sockets the whole datagram; trust the shorter of the two lengths.
    payload = datagram[ihl : min(total, len(datagram))]
    return IPv4Datagram(
        src=ipaddress.IPv4Address(datagram[12:16]),
        dst=ipaddress.IPv4Address(datagram[16:20]),
        ttl=datagram[8],
        protocol=datagram[9],
        payload=payload,
    )


def pass_auth_data(password: str | None) -> tuple[int, bytes]:
    """RFC 2338's simple text password: up to 8 bytes, zero-padded."""
    if password is None:
        return AUTH_NONE, b"\0" * V2_AUTH_DATA_LEN
    raw = password.encode("ascii")[:V2_AUTH_DATA_LEN]
    return AUTH_PASS, raw.ljust(V2_AUTH_DATA_LEN, b"\0")
