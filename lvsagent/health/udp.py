"""The UDP check (keepalived's UDP_CHECK), and the datagram exchange the DNS check uses.

UDP has no connection to open, so the only refusal there is is the kernel's:
an ICMP error (port unreachable: nothing listens; host unreachable: ARP got
no answer) reported on a *connected* UDP socket as ECONNREFUSED or
EHOSTUNREACH at the next recv.  keepalived's rule, kept here:

* without ``require_reply`` the check passes when no such error arrives
  within ``connect_timeout``: a server that says nothing is taken as up.
  A firewall that drops silently, or the kernel's ICMP rate limit (one error
  a second per peer by default, ``net.ipv4.icmp_ratelimit``), then reads as
  up too: prefer a reply where the protocol gives one.
* with ``require_reply`` (or ``reply``, bytes the reply must start with) only
  a datagram back within the timeout passes, of ``min_reply_length`` to
  ``max_reply_length`` bytes.

Non-blocking socket, one reader callback and one timer handle: the same least
cost per check as checks.py's TCP connect.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable

from lvsagent.health.checks import _failed, _seconds
from lvsagent.health.tracker import CheckResult

__all__ = ["check_udp", "exchange"]

MAX_DATAGRAM = 65535


async def exchange(
    address: ipaddress.IPv4Address,
    port: int,
    payload: bytes,
    deadline: float,
    wanted: Callable[[bytes], bool] = lambda reply: True,
) -> bytes | None:
    """Send ``payload``; the first datagram back that ``wanted`` takes, None at ``deadline``.

    Raises OSError for an ICMP error (or a send the kernel refuses): the errno
    says which.  Datagrams ``wanted`` refuses (a late answer to an earlier query)
    are read and dropped.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
    try:
        sock.connect((str(address), port))
        sock.send(payload)
        fd = sock.fileno()
        while True:
            fut: asyncio.Future[bool] = loop.create_future()
            loop.add_reader(fd, _settle, fut, True)
            timer = loop.call_at(deadline, _settle, fut, False)
            try:
                readable = await fut
            finally:
                loop.remove_reader(fd)
                timer.cancel()
            if not readable:
                return None
            try:
                reply = sock.recv(MAX_DATAGRAM)
            except BlockingIOError:
                continue
            if wanted(reply):
                return reply
    finally:
        sock.close()


def _settle(fut: asyncio.Future[bool], value: bool) -> None:
    if not fut.done():
        fut.set_result(value)


async def check_udp(
    address: ipaddress.IPv4Address,
    port: int,
    *,
    payload: bytes = b"",
    require_reply: bool = False,
    reply: bytes = b"",
    min_reply_length: int = 0,
    max_reply_length: int = 65507,
    connect_timeout: float = 3.0,
) -> CheckResult:
    """Passes on a fitting reply, or (without require_reply) on no ICMP error in time."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    needs_reply = require_reply or bool(reply)
    try:
        got = await exchange(address, port, payload, start + connect_timeout)
    except OSError as exc:
        return _failed(exc.errno or 0, loop.time() - start)  # host or port unreachable
    latency = loop.time() - start
    if got is None:
        if needs_reply:
            return CheckResult(False, f"no reply within {_seconds(connect_timeout)} s", latency)
        return CheckResult(True, f"no ICMP error within {_seconds(connect_timeout)} s", latency)
    return CheckResult(*judge_reply(got, reply, min_reply_length, max_reply_length), latency)


def judge_reply(got: bytes, reply: bytes, shortest: int, longest: int) -> tuple[bool, str]:
    """Whether a reply fits: its length within bounds, its first bytes ``reply`` (pure)."""
    size = len(got)
    if size < shortest:
        return False, f"reply of {size} bytes, shorter than {shortest}"
    if size > longest:
        return False, f"reply of {size} bytes, longer than {longest}"
    if not got.startswith(reply):
        return False, f"reply of {size} bytes does not start with {reply.hex()}"
    return True, f"reply of {size} bytes"
