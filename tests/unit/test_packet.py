"""Codec: golden vectors, every discard reason, and round-trip properties."""

from __future__ import annotations

import contextlib
import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsagent.vrrp.packet import (
    Advert,
    Discard,
    EncodeError,
    Reason,
    decode,
    encode,
    internet_checksum,
    parse_ipv4,
    pass_auth_data,
)

A = ipaddress.IPv4Address
SRC = A("192.0.2.1")
GROUP = A("224.0.0.18")

# RFC 9568 vector: v3, VRID 51, prio 200, one address 192.0.2.100,
# interval 100 cs, checksum over the message only (0x4402).
V3_MESSAGE_ONLY = bytes.fromhex("3133c80100644402c0000264")


def test_v3_golden_message_only_checksum() -> None:
    adv = decode(V3_MESSAGE_ONLY, SRC, GROUP)
    assert adv == Advert(
        version=3,
        vrid=51,
        priority=200,
        max_adver_int=100,
        addresses=(A("192.0.2.100"),),
        checksum_mode="message_only",
    )
    assert encode(adv) == V3_MESSAGE_ONLY


def test_v3_pseudo_header_checksum_depends_on_addresses() -> None:
    adv = Advert(3, 51, 200, 100, (A("192.0.2.100"),), checksum_mode="pseudo_header")
    wire = encode(adv, SRC, GROUP)
    assert wire[:6] == V3_MESSAGE_ONLY[:6] and wire[8:] == V3_MESSAGE_ONLY[8:]
    assert wire[6:8] != V3_MESSAGE_ONLY[6:8]
    assert decode(wire, SRC, GROUP).checksum_mode == "pseudo_header"
    # The same bytes from another source fail both forms.
    with pytest.raises(Discard) as exc:
        decode(wire, A("192.0.2.2"), GROUP)
    assert exc.value.reason is Reason.CHECKSUM


def test_v3_pseudo_header_needs_addresses() -> None:
    with pytest.raises(ValueError):
        encode(Advert(3, 1, 100, 100, (A("10.0.0.1"),)))


def test_v2_golden_pass_auth() -> None:
    # The seed's box A: VRID 51, priority 100, advert_int 1, PASS "1111", VIP 172.16.0.30.
    auth_type, auth_data = pass_auth_data("1111")
    adv = Advert(2, 51, 100, 100, (A("172.16.0.30"),), auth_type=auth_type, auth_data=auth_data)
    wire = encode(adv)
    head = bytes.fromhex("21 33 64 01 01 01")
    assert wire[:6] == head
    assert wire[8:12] == A("172.16.0.30").packed
    assert wire[12:] == b"1111\0\0\0\0"
    assert internet_checksum(wire) == 0
    # Hand-computed RFC 1071 sum of the message with a zero checksum field.
    words = [0x2133, 0x6401, 0x0101, 0xAC10, 0x001E, 0x3131, 0x3131, 0, 0]
    total = sum(words)
    total = (total & 0xFFFF) + (total >> 16)
    assert struct.unpack("!H", wire[6:8])[0] == ~total & 0xFFFF
    assert decode(wire, SRC, GROUP) == adv


def _v2(**kw: object) -> bytes:
    fields: dict[str, object] = dict(
        version=2, vrid=51, priority=100, max_adver_int=100, addresses=(A("172.16.0.30"),)
    )
    fields.update(kw)
    return encode(Advert(**fields))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", Reason.PACKET_LEN),
        (b"\x21\x33\x64", Reason.PACKET_LEN),
        (_v2()[:-1], Reason.PACKET_LEN),
        (_v2() + b"\0", Reason.PACKET_LEN),
        (bytes([0x41]) + _v2()[1:], Reason.VERSION),
        (bytes([0x22]) + _v2()[1:], Reason.TYPE),
        (_v2()[:6] + b"\0\0" + _v2()[8:], Reason.CHECKSUM),
        (V3_MESSAGE_ONLY[:-1] + b"\x65", Reason.CHECKSUM),
    ],
    ids=["empty", "short", "truncated", "trailing", "v4", "type2", "v2csum", "v3csum"],
)
def test_decode_discards_with_reason(data: bytes, reason: Reason) -> None:
    with pytest.raises(Discard) as exc:
        decode(data, SRC, GROUP)
    assert exc.value.reason is reason


def _ip_header(payload: bytes, ttl: int = 255, proto: int = 112) -> bytes:
    return (
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(payload),
            0,
            0,
            ttl,
            proto,
            0,
            SRC.packed,
            GROUP.packed,
        )
        + payload
    )


def test_parse_ipv4_fields() -> None:
    d = parse_ipv4(_ip_header(V3_MESSAGE_ONLY, ttl=254))
    assert (d.src, d.dst, d.ttl, d.payload) == (SRC, GROUP, 254, V3_MESSAGE_ONLY)


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x45" * 10, b"\x65" + b"\0" * 30, _ip_header(b"xx", proto=6), b"\x4f" + b"\0" * 21],
)
def test_parse_ipv4_rejects(raw: bytes) -> None:
    with pytest.raises(Discard) as exc:
        parse_ipv4(raw)
    assert exc.value.reason is Reason.IP_HEADER


addresses = st.lists(st.integers(0, 2**32 - 1).map(A), max_size=20).map(tuple)


@given(
    vrid=st.integers(1, 255),
    priority=st.integers(0, 255),
    interval=st.integers(1, 255),
    addrs=addresses,
    password=st.none() | st.text("abc123", min_size=1, max_size=8),
)
def test_v2_roundtrip(
    vrid: int, priority: int, interval: int, addrs: tuple[A, ...], password: str | None
) -> None:
    auth_type, auth_data = pass_auth_data(password)
    adv = Advert(2, vrid, priority, interval * 100, addrs, auth_type, auth_data)
    assert decode(encode(adv), SRC, GROUP) == adv


@given(
    vrid=st.integers(1, 255),
    priority=st.integers(0, 255),
    interval=st.integers(1, 4095),
    addrs=addresses,
    mode=st.sampled_from(["pseudo_header", "message_only"]),
)
def test_v3_roundtrip(
    vrid: int, priority: int, interval: int, addrs: tuple[A, ...], mode: str
) -> None:
    adv = Advert(3, vrid, priority, interval, addrs, checksum_mode=mode)  # type: ignore[arg-type]
    wire = encode(adv, SRC, GROUP)
    back = decode(wire, SRC, GROUP)
    # A message can satisfy both checksum forms only if the pseudo-header sums to zero;
    # whichever form decode picked must reproduce the same bytes.
    assert encode(back, SRC, GROUP) == wire
    assert back.priority == priority and back.addresses == addrs


@given(st.binary(max_size=200))
def test_decode_arbitrary_bytes_never_raises_else(data: bytes) -> None:
    try:
        adv = decode(data, SRC, GROUP)
    except Discard:
        return
    assert encode(adv, SRC, GROUP) == data


@given(st.binary(min_size=4, max_size=100), st.sampled_from([2, 3]), st.booleans())
def test_arbitrary_bytes_with_a_valid_checksum_roundtrip(
    body: bytes, version: int, pseudo: bool
) -> None:
    """Random header fields, reserved bits and auth data, checksum patched in: exact roundtrip."""
    count = (len(body) - 4) // 4
    extra = 8 if version == 2 else 0
    msg = bytes([version << 4 | 1, body[0], body[1], count]) + body[2:4] + b"\0\0"
    msg += (body[4 : 4 + 4 * count] + body[:extra]).ljust(4 * count + extra, b"\0")
    prefix = b""
    if version == 3 and pseudo:
        prefix = SRC.packed + GROUP.packed + struct.pack("!BBH", 0, 112, len(msg))
    csum = internet_checksum(prefix + msg)
    msg = msg[:6] + struct.pack("!H", csum) + msg[8:]
    adv = decode(msg, SRC, GROUP)
    assert encode(adv, SRC, GROUP) == msg


@given(st.binary(max_size=120), st.integers(0, 255))
def test_parse_ipv4_arbitrary(data: bytes, ttl: int) -> None:
    with contextlib.suppress(Discard):
        parse_ipv4(data)


# Captured from Debian's keepalived 2.2.7 configured as the seed's box A
# (172.16.0.31 -> 224.0.0.18, VRID 51, priority 100, advert_int 1, VIP 172.16.0.30).
KEEPALIVED_V2_PASS = bytes.fromhex("2133640101016b39ac10001e3131313100000000")
KEEPALIVED_V3 = bytes.fromhex("313364010064317aac10001e")
BOX_A, BOX_VIP = A("172.16.0.31"), A("172.16.0.30")


def test_golden_keepalived_v2_pass_capture() -> None:
    adv = decode(KEEPALIVED_V2_PASS, BOX_A, GROUP)
    assert (adv.version, adv.vrid, adv.priority, adv.interval) == (2, 51, 100, 1.0)
    assert adv.addresses == (BOX_VIP,)
    assert (adv.auth_type, adv.auth_data) == pass_auth_data("1111")
    ours = Advert(2, 51, 100, 100, (BOX_VIP,), *pass_auth_data("1111"))
    assert encode(ours) == KEEPALIVED_V2_PASS


def test_golden_keepalived_v3_capture_uses_the_pseudo_header() -> None:
    adv = decode(KEEPALIVED_V3, BOX_A, GROUP)
    assert adv.checksum_mode == "pseudo_header"
    assert (adv.version, adv.vrid, adv.priority, adv.max_adver_int) == (3, 51, 100, 100)
    # Our default send mode reproduces keepalived's bytes exactly.
    assert encode(Advert(3, 51, 100, 100, (BOX_VIP,)), BOX_A, GROUP) == KEEPALIVED_V3


@pytest.mark.parametrize(
    ("adv", "says"),
    [
        (Advert(3, 51, 100, 100, tuple(A(f"10.1.{n // 256}.{n % 256}") for n in range(256))),
         "at most 255 addresses"),
        (Advert(2, 51, 100, 100, tuple(A(f"10.1.{n // 256}.{n % 256}") for n in range(300)),
                *pass_auth_data("1111")), "this one has 300"),
        (Advert(3, 51, 100, 4096, (BOX_VIP,)), "0-4095 centiseconds"),
        (Advert(3, 51, 256, 100, (BOX_VIP,)), "does not encode"),
    ],
)  # fmt: skip
def test_an_advert_that_does_not_fit_the_wire_is_an_encode_error(adv: Advert, says: str) -> None:
    with pytest.raises(EncodeError, match=says):
        encode(adv, BOX_A, GROUP)
