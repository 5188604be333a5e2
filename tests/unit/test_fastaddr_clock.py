"""The two hand-written kernel interfaces: pre-built address requests, and the timerfd clock."""

from __future__ import annotations

import errno
import ipaddress
import select
import socket
import struct
import time

from lvsagent.daemon.clock import DeadlineTimer
from lvsagent.vrrp.fastaddr import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    RTM_DELADDR,
    RTM_NEWADDR,
    ack_errors,
    address_request,
)


def test_address_request_is_what_ip_addr_add_sends() -> None:
    msg = address_request(RTM_NEWADDR, 7, 3, ipaddress.IPv4Interface("10.99.0.100/24"))
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", msg)
    assert (length, kind, seq, pid) == (len(msg), RTM_NEWADDR, 7, 0)
    assert flags == NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    family, prefixlen, ifa_flags, scope, index = struct.unpack_from("=BBBBI", msg, 16)
    assert (family, prefixlen, ifa_flags, scope, index) == (socket.AF_INET, 24, 0, 0, 3)
    # IFA_LOCAL then IFA_ADDRESS, both the VIP.
    assert msg[24:] == struct.pack("=HH", 8, 2) + bytes([10, 99, 0, 100]) + struct.pack(
        "=HH", 8, 1
    ) + bytes([10, 99, 0, 100])


def test_delete_request_has_no_create_flags() -> None:
    msg = address_request(RTM_DELADDR, 1, 3, ipaddress.IPv4Interface("10.99.0.100/32"))
    _, kind, flags, _, _ = struct.unpack_from("=IHHII", msg)
    assert kind == RTM_DELADDR and flags == NLM_F_REQUEST | NLM_F_ACK


def _ack(seq: int, code: int) -> bytes:
    body = struct.pack("=i", -code) + struct.pack("=IHHII", 16, 20, 0, seq, 0)
    return struct.pack("=IHHII", 16 + len(body), 2, 0, seq, 0) + body


def test_ack_errors_reads_every_ack_in_a_buffer() -> None:
    data = _ack(1, 0) + _ack(2, errno.EEXIST) + _ack(3, errno.EPERM)
    assert ack_errors(data) == {1: 0, 2: errno.EEXIST, 3: errno.EPERM}
    assert ack_errors(b"\x01\x02") == {}


def _readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def test_deadline_timer_fires_at_its_deadline_and_can_be_disarmed() -> None:
    t = DeadlineTimer()
    try:
        t.arm(time.monotonic() + 0.05)
        assert not _readable(t.fileno(), 0)
        assert _readable(t.fileno(), 5)
        t.consume()
        assert not _readable(t.fileno(), 0)
        t.arm(time.monotonic() - 1)  # a past deadline fires at once
        assert _readable(t.fileno(), 1)
        t.consume()
        t.arm(time.monotonic() + 0.05)
        t.arm(None)
        assert not _readable(t.fileno(), 0.2)
    finally:
        t.close()
