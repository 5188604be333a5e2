"""The pure parts of the HTTPS, UDP and DNS checks: verdicts and the DNS wire format."""

from __future__ import annotations

import random

from lvsagent.health.dns import query, read_reply
from lvsagent.health.tls import judge
from lvsagent.health.udp import judge_reply

CODES = tuple(range(200, 300))


def test_judge_waits_for_the_status_line_then_the_body() -> None:
    assert judge(b"HTTP/1.0 200", False, CODES, None) is None
    assert judge(b"HTTP/1.0 200 OK\r\n", False, CODES, None) == (True, "status 200")
    assert judge(b"HTTP/1.0 200 OK\r\n\r\nabc", False, CODES, b"xyz") is None
    assert judge(b"HTTP/1.0 200 OK\r\n\r\nxyz", False, CODES, b"xyz") == (True, "status 200")
    assert judge(b"HTTP/1.0 200 OK\r\n\r\nabc", True, CODES, b"xyz") == (
        False, "body lacks 'xyz'",
    )  # fmt: skip
    assert judge(b"", True, CODES, None) == (False, "no response")
    assert judge(b"SSH-2.0\r\n", False, CODES, None) == (False, "bad status line")
    assert judge(b"HTTP/1.1 301 Moved\r\n", False, CODES, None) == (False, "status 301")


def test_judge_reply_bounds_and_prefix() -> None:
    assert judge_reply(b"PONG", b"PO", 0, 10) == (True, "reply of 4 bytes")
    assert judge_reply(b"PONG", b"", 5, 10) == (False, "reply of 4 bytes, shorter than 5")
    assert judge_reply(b"PONG", b"", 0, 3) == (False, "reply of 4 bytes, longer than 3")
    assert judge_reply(b"PONG", b"PI", 0, 10) == (
        False, "reply of 4 bytes does not start with 5049",
    )  # fmt: skip


def test_query_is_a_standard_recursive_question() -> None:
    q = query(0x1234, "www.example.com", "A")
    assert q[:12] == bytes.fromhex("1234 0100 0001 0000 0000 0000")
    assert q[12:] == b"\x03www\x07example\x03com\x00" + bytes.fromhex("0001 0001")
    assert query(1, ".", "SOA")[12:] == b"\x00" + bytes.fromhex("0006 0001")
    assert query(1, "example.com.", "AAAA")[12:] == b"\x07example\x03com\x00" + bytes.fromhex(
        "001c 0001"
    )


def test_read_reply_takes_only_answers_to_our_query() -> None:
    ident = random.Random(1).getrandbits(16)
    head = bytes.fromhex("8183 0001 0002 0000 0000")
    assert read_reply(ident.to_bytes(2, "big") + head, ident) == (3, 2)
    assert read_reply((ident ^ 1).to_bytes(2, "big") + head, ident) is None  # another ID
    question = bytes.fromhex("0100 0001 0000 0000 0000")  # QR clear: a query, not a reply
    assert read_reply(ident.to_bytes(2, "big") + question, ident) is None
    assert read_reply(b"\x00\x01", 1) is None  # short
