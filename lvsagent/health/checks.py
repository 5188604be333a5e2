"""The checks themselves: a TCP connect and an HTTP GET, on the running asyncio loop.

Each returns a :class:`~lvsagent.health.tracker.CheckResult` and never
raises for anything the network does: a refused, reset, silent or wrong
server is a failed result whose reason an operator can read
("connection refused", "connect timeout 1.0 s", "status 503").

Why hand-written sockets and no HTTP library: one GET with a status line
and an optional substring is all a health check needs, and aiohttp would
be a heavy dependency (and a second event-loop-integrated stack) for it.
The request is HTTP/1.0 with ``Connection: close``, so the server may not
answer chunked and the body simply ends at EOF.

Why not ``asyncio.open_connection`` / ``wait_for``: at thousands of checks a
second the per-check cost matters (the bench measures it).  A non-blocking
connect with one writer callback and one timer handle is the least the
loop can do for a check.

Every check socket is closed with SO_LINGER 0 (a RST, as HAProxy does for
its checks): a health checker that closes first would otherwise leave a
TIME_WAIT entry per check, tens of thousands a minute at 1 s intervals.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
import struct
from dataclasses import replace

from lvsagent.config.schema import HealthCheck, HttpCheck
from lvsagent.health.tracker import CheckResult

__all__ = ["check_http", "check_tcp", "run_check"]

# Enough for a status line, headers and a status page; a longer body is not searched.
MAX_RESPONSE = 256 * 1024
_LINGER_RST = struct.pack("ii", 1, 0)

_REASONS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "connection timed out",  # the kernel gave up (SYN retries) first
}


# No answer from the server's host at all: nothing it has open can finish either.
# (A refusal or a reset is an answer: the host is there.)
_UNREACHABLE = frozenset(
    {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT, errno.ENETDOWN, errno.EHOSTDOWN}
)


def _reason(err: int) -> str:
    return _REASONS.get(err) or os.strerror(err).lower()


def _failed(err: int, latency: float) -> CheckResult:
    return CheckResult(False, _reason(err), latency, unreachable=err in _UNREACHABLE)


def _seconds(t: float) -> str:
    """``1.0``, ``0.5``, ``0.25``: the configured number, as keepalived's logs show it."""
    return f"{t:.1f}" if round(t, 1) == t else f"{t:g}"


class _Timeout(Exception):
    pass


async def _connect(
    loop: asyncio.AbstractEventLoop, address: ipaddress.IPv4Address, port: int, deadline: float
) -> socket.socket:
    """A connected non-blocking socket; raises OSError (errno) or _Timeout at ``deadline``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        err = sock.connect_ex((str(address), port))
        if err == errno.EINPROGRESS:
            fut: asyncio.Future[bool] = loop.create_future()
            fd = sock.fileno()
            loop.add_writer(fd, _settle, fut, True)
            timer = loop.call_at(deadline, _settle, fut, False)
            try:
                writable = await fut
            finally:
                loop.remove_writer(fd)
                timer.cancel()
            if not writable:
                raise _Timeout
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
        return sock
    except BaseException:
        sock.close()
        raise


def _settle(fut: asyncio.Future[bool], value: bool) -> None:
    if not fut.done():
        fut.set_result(value)


async def check_tcp(
    address: ipaddress.IPv4Address, port: int, connect_timeout: float
) -> CheckResult:
    """Passes when a TCP connection to ``address:port`` opens within ``connect_timeout``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        sock = await _connect(loop, address, port, start + connect_timeout)
    except _Timeout:
        reason = f"connect timeout {_seconds(connect_timeout)} s"
        return CheckResult(False, reason, loop.time() - start, unreachable=True)
    except OSError as exc:
        return _failed(exc.errno or 0, loop.time() - start)
    sock.close()
    return CheckResult(True, "connected", loop.time() - start)


async def check_http(
    address: ipaddress.IPv4Address,
    port: int,
    *,
    path: str = "/",
    status_codes: tuple[int, ...] = HttpCheck.status_codes,
    body_contains: str | None = None,
    host: str | None = None,
    timeout: float = 3.0,
) -> CheckResult:
    """GET ``path``: passes on an expected status and, if asked, a body with the substring.

    ``timeout`` bounds the whole exchange; the reason says which part ran
    out ("connect timeout 3.0 s" or "read timeout 3.0 s").  Without a Host
    name the server's address (and port, if not 80) is sent, as a browser would.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + timeout
    try:
        sock = await _connect(loop, address, port, deadline)
    except _Timeout:
        reason = f"connect timeout {_seconds(timeout)} s"
        return CheckResult(False, reason, loop.time() - start, unreachable=True)
    except OSError as exc:
        return _failed(exc.errno or 0, loop.time() - start)
    try:
        async with asyncio.timeout_at(deadline):
            ok, reason = await _exchange(loop, sock, _request(address, port, path, host),
                                         status_codes, body_contains)  # fmt: skip
    except TimeoutError:  # it connected: a slow server, not a missing one
        ok, reason = False, f"read timeout {_seconds(timeout)} s"
    except OSError as exc:  # e.g. the host went away after the connect
        return _failed(exc.errno or 0, loop.time() - start)
    finally:
        sock.close()
    return CheckResult(ok, reason, loop.time() - start)


def _request(address: ipaddress.IPv4Address, port: int, path: str, host: str | None) -> bytes:
    name = host if host is not None else (str(address) if port == 80 else f"{address}:{port}")
    return (
        f"GET {path} HTTP/1.0\r\nHost: {name}\r\nUser-Agent: lvsagent\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")


async def _exchange(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    request: bytes,
    status_codes: tuple[int, ...],
    body_contains: str | None,
) -> tuple[bool, str]:
    await loop.sock_sendall(sock, request)
    data = b""
    status: int | None = None
    needle = body_contains.encode() if body_contains is not None else None
    while True:
        chunk = await loop.sock_recv(sock, 65536)
        data += chunk
        full = not chunk or len(data) >= MAX_RESPONSE
        if status is None:
            if b"\n" not in data and not full:
                continue  # the status line is not complete yet
            status = _status(data)
            if status is None:
                return False, "bad status line" if data else "no response"
            if status not in status_codes:
                return False, f"status {status}"
            if needle is None:
                return True, f"status {status}"  # no need to wait for the body
        _, sep, body = data.partition(b"\r\n\r\n")
        if needle is not None and sep and needle in body:
            return True, f"status {status}"
        if full:
            return False, f"body lacks {body_contains!r}"


def _status(data: bytes) -> int | None:
    """The status code of a response that starts with ``data``; None if it is not HTTP."""
    line = data.split(b"\n", 1)[0].rstrip(b"\r")
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return None
    code = int(parts[1])
    return code if 100 <= code <= 999 else None


async def run_check(health: HealthCheck, address: ipaddress.IPv4Address, port: int) -> CheckResult:
    """One attempt of ``health``'s check against a real server (its port unless overridden).

    A check on another port says so in its reason: "RS 10.0.0.1:80 ... DOWN
    (connection refused)" would send the operator to a port that is serving.
    """
    if health.type == "tcp":
        tcp = health.tcp
        result = await check_tcp(address, tcp.port or port, tcp.connect_timeout)
        checked = tcp.port
    elif health.type == "http":
        h = health.http
        result = await check_http(
            address,
            h.port or port,
            path=h.path,
            status_codes=h.status_codes,
            body_contains=h.body_contains,
            host=h.host,
            timeout=h.timeout,
        )
        checked = h.port
    elif health.type in ("https", "udp", "dns"):
        from lvsagent.health.protocols import run_protocol_check  # imports this module

        result, checked = await run_protocol_check(health, address, port)
    else:
        return CheckResult(True, "not checked (type none)", 0.0)
    if checked is None or checked == port:
        return result
    return replace(result, reason=f"{result.reason} on port {checked}")
