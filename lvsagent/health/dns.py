"""The DNS check (keepalived's DNS_CHECK): one query over UDP, a NOERROR answer to it.

As keepalived: a standard query with recursion desired, a random ID, one
question of the configured type and name (class IN); the reply must carry our
ID and the QR bit, and its RCODE must be NOERROR.  keepalived takes an empty
NOERROR (the name exists, no record of that type); ``require_answer`` also
wants at least one answer record.  A reply with another ID (a late answer to
an earlier query) is ignored and the wait goes on.

The message is built and read here by hand (RFC 1035 4.1): a header and one
question out, a header in.  Nothing past the header of the reply is parsed,
so no resource record an unhealthy server sends can trip the check up.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import struct

from lvsagent.config.checkkeys import DNS_TYPES
from lvsagent.health.checks import _failed, _seconds
from lvsagent.health.tracker import CheckResult
from lvsagent.health.udp import exchange

__all__ = ["check_dns", "query", "read_reply"]

_HEADER = struct.Struct("!HHHHHH")  # id, flags, qdcount, ancount, nscount, arcount
FLAG_QR = 0x8000
FLAG_RD = 0x0100
CLASS_IN = 1
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def query(ident: int, name: str, kind: str) -> bytes:
    """A standard query with RD set for ``name`` (dots between labels; "." is the root)."""
    labels = [part.encode("ascii") for part in name.rstrip(".").split(".") if part]
    qname = b"".join(bytes([len(label)]) + label for label in labels) + b"\0"
    head = _HEADER.pack(ident, FLAG_RD, 1, 0, 0, 0)
    return head + qname + struct.pack("!HH", DNS_TYPES[kind], CLASS_IN)


def read_reply(data: bytes, ident: int) -> tuple[int, int] | None:
    """(RCODE, answer count) of a reply to query ``ident``; None if it is not one."""
    if len(data) < _HEADER.size:
        return None
    got, flags, _qd, answers, _ns, _ar = _HEADER.unpack_from(data)
    if got != ident or not flags & FLAG_QR:
        return None
    return flags & 0x000F, answers


async def check_dns(
    address: ipaddress.IPv4Address,
    port: int,
    *,
    kind: str = "SOA",
    name: str = ".",
    require_answer: bool = False,
    timeout: float = 3.0,
    rng: random.Random | None = None,
) -> CheckResult:
    """Passes on a NOERROR reply to our query (with an answer, if ``require_answer``)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    ident = (rng or random).getrandbits(16)
    try:
        data = await exchange(
            address, port, query(ident, name, kind), start + timeout,
            lambda reply: read_reply(reply, ident) is not None,
        )  # fmt: skip
    except OSError as exc:
        return _failed(exc.errno or 0, loop.time() - start)  # host or port unreachable
    latency = loop.time() - start
    if data is None:
        return CheckResult(False, f"no answer within {_seconds(timeout)} s", latency)
    reply = read_reply(data, ident)
    assert reply is not None  # exchange returns only what read_reply takes
    rcode, answers = reply
    if rcode:
        return CheckResult(False, f"{kind} {name}: {RCODES.get(rcode, f'rcode {rcode}')}", latency)
    if require_answer and not answers:
        return CheckResult(False, f"{kind} {name}: NOERROR without an answer", latency)
    return CheckResult(True, f"{kind} {name}: NOERROR, {answers} answer(s)", latency)
