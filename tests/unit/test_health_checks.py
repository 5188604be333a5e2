"""The TCP and HTTP checks against small servers on 127.0.0.1 (ephemeral ports).

Loopback only; silent drops by a firewall (a blackholed server) need a namespace
and nft, so they are in tests/netns/test_health.py (here, a listener whose accept
queue is full drops the SYNs).  No timing assertions: a timeout test only checks
that the reason names the timeout.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from lvsagent.config.schema import HealthCheck, HttpCheck, TcpCheck
from lvsagent.health import dns, udp
from lvsagent.health.checks import _failed, check_http, check_tcp, run_check
from lvsagent.health.tls import check_https
from lvsagent.health.tracker import CheckResult

LO = ipaddress.IPv4Address("127.0.0.1")
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def free_port() -> int:
    """A port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(coro: Coroutine[Any, Any, CheckResult]) -> CheckResult:
    return asyncio.run(coro)


async def serving(handler: Handler, probe: Callable[[int], Awaitable[CheckResult]]) -> CheckResult:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        return await probe(port)
    finally:
        server.close()


def responder(response: bytes, seen: list[bytes] | None = None) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        if seen is not None:
            seen.append(request)
        writer.write(response)
        await writer.drain()
        writer.close()

    return handle


async def http(response: bytes, seen: list[bytes] | None = None, **kw: Any) -> CheckResult:
    return await serving(responder(response, seen), lambda port: check_http(LO, port, **kw))


def test_tcp_connect_passes() -> None:
    async def quiet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    result = run(serving(quiet, lambda port: check_tcp(LO, port, 1.0)))
    assert (result.ok, result.reason) == (True, "connected")
    assert result.latency >= 0


def test_tcp_refused() -> None:
    result = run(check_tcp(LO, free_port(), 1.0))
    assert (result.ok, result.reason) == (False, "connection refused")
    assert not result.unreachable, "a refusal is an answer: the host is there"


def test_tcp_connect_timeout_is_unreachable() -> None:
    # backlog 0 takes one connection into the accept queue; the kernel then drops SYNs.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5.0):
            tcp = run(check_tcp(LO, port, 0.2))
            http_ = run(check_http(LO, port, timeout=0.2))
            https = run(check_https(LO, port, timeout=0.2))
    assert (tcp.ok, tcp.reason, tcp.unreachable) == (False, "connect timeout 0.2 s", True)
    assert (http_.ok, http_.reason, http_.unreachable) == (False, "connect timeout 0.2 s", True)
    assert (https.ok, https.reason, https.unreachable) == (False, "connect timeout 0.2 s", True)


def test_an_icmp_error_to_a_datagram_check_says_whether_the_host_is_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """UDP and DNS: host unreachable is unreachable, port unreachable (refused) an answer.
    (Silence is neither: a UDP service may answer nothing, so no reply stays a plain failure.)"""
    def icmp(err: int) -> Callable[..., Awaitable[bytes | None]]:
        async def exchange(*args: object, **kwargs: object) -> bytes | None:
            raise OSError(err, "")
        return exchange

    for err, unreachable in ((errno.EHOSTUNREACH, True), (errno.ECONNREFUSED, False)):
        monkeypatch.setattr(udp, "exchange", icmp(err))
        monkeypatch.setattr(dns, "exchange", icmp(err))
        got_udp = run(udp.check_udp(LO, 53, connect_timeout=0.2))
        got_dns = run(dns.check_dns(LO, 53, timeout=0.2))
        assert (got_udp.ok, got_udp.unreachable) == (False, unreachable), err
        assert (got_dns.ok, got_dns.unreachable) == (False, unreachable), err


@pytest.mark.parametrize(
    ("err", "reason", "unreachable"),
    [
        (errno.EHOSTUNREACH, "host unreachable", True),
        (errno.ENETUNREACH, "network unreachable", True),
        (errno.ETIMEDOUT, "connection timed out", True),
        (errno.ECONNREFUSED, "connection refused", False),
        (errno.ECONNRESET, "connection reset", False),
    ],
)
def test_which_errors_mean_nothing_answered(err: int, reason: str, unreachable: bool) -> None:
    assert _failed(err, 0.5) == CheckResult(False, reason, 0.5, unreachable=unreachable)


def test_http_status_200() -> None:
    result = run(http(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    assert (result.ok, result.reason) == (True, "status 200")


def test_http_unexpected_status() -> None:
    result = run(http(b"HTTP/1.0 503 Service Unavailable\r\n\r\n"))
    assert (result.ok, result.reason) == (False, "status 503")


def test_http_expected_codes_are_configurable() -> None:
    result = run(http(b"HTTP/1.0 301 Moved\r\n\r\n", status_codes=(200, 301)))
    assert (result.ok, result.reason) == (True, "status 301")


def test_http_body_substring() -> None:
    page = b"HTTP/1.0 200 OK\r\n\r\n<html>all systems go</html>"
    assert run(http(page, body_contains="systems go")).ok
    result = run(http(page, body_contains="healthy"))
    assert (result.ok, result.reason) == (False, "body lacks 'healthy'")


def test_http_substring_in_the_headers_does_not_count() -> None:
    result = run(http(b"HTTP/1.0 200 OK\r\nX-Note: healthy\r\n\r\nnope", body_contains="healthy"))
    assert not result.ok


def test_http_request_line_and_host_header() -> None:
    seen: list[bytes] = []
    run(http(b"HTTP/1.0 200 OK\r\n\r\n", seen, path="/health?x=1", host="www.example.org"))
    (request,) = seen
    assert request.startswith(b"GET /health?x=1 HTTP/1.0\r\n")
    assert b"\r\nHost: www.example.org\r\n" in request


def test_http_default_host_is_the_server_address_and_port() -> None:
    seen: list[bytes] = []

    async def probe(port: int) -> CheckResult:
        result = await check_http(LO, port)
        assert f"\r\nHost: 127.0.0.1:{port}\r\n".encode() in seen[0]
        return result

    assert run(serving(responder(b"HTTP/1.0 200 OK\r\n\r\n", seen), probe)).ok


def test_http_status_line_in_pieces() -> None:
    async def dribble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for piece in (b"HTT", b"P/1.0 2", b"00 OK\r", b"\n\r\n"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.close()

    result = run(serving(dribble, lambda port: check_http(LO, port)))
    assert (result.ok, result.reason) == (True, "status 200")


@pytest.mark.parametrize(
    ("response", "reason"),
    [(b"", "no response"), (b"SSH-2.0-OpenSSH_9.2\r\n", "bad status line")],
)
def test_http_not_http(response: bytes, reason: str) -> None:
    result = run(http(response))
    assert (result.ok, result.reason) == (False, reason)


def test_http_accepts_then_hangs_is_a_read_timeout() -> None:
    """A read timeout is not unreachable: the server connected (slow, not gone)."""
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the checker gives up and resets
        writer.close()

    result = run(serving(hang, lambda port: check_http(LO, port, timeout=0.25)))
    assert (result.ok, result.reason, result.unreachable) == (False, "read timeout 0.25 s", False)


def test_http_refused() -> None:
    result = run(check_http(LO, free_port()))
    assert (result.ok, result.reason) == (False, "connection refused")


def test_run_check_uses_the_port_override() -> None:
    async def quiet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    closed = free_port()
    tcp = HealthCheck(type="tcp", tcp=TcpCheck(connect_timeout=1.0))
    assert run(run_check(tcp, LO, closed)).reason == "connection refused"

    async def both(port: int) -> CheckResult:
        override = HealthCheck(type="tcp", tcp=TcpCheck(connect_timeout=1.0, port=port))
        return await run_check(override, LO, closed)

    assert run(serving(quiet, both)).ok

    async def via_http(port: int) -> CheckResult:
        h = HealthCheck(type="http", http=HttpCheck(port=port, path="/x", timeout=1.0))
        return await run_check(h, LO, closed)

    result = run(serving(responder(b"HTTP/1.0 200 OK\r\n\r\n"), via_http))
    assert result.ok and re.fullmatch(r"status 200 on port \d+", result.reason)
    # The log line of a failure names the port that failed, not the server's own.
    other = free_port()
    refused = HealthCheck(type="tcp", tcp=TcpCheck(connect_timeout=1.0, port=other))
    assert run(run_check(refused, LO, closed)).reason == f"connection refused on port {other}"


def test_type_none_is_a_pass_without_traffic() -> None:
    assert run(run_check(HealthCheck(type="none"), LO, free_port())).ok


def test_http_default_codes_are_any_2xx_as_keepalived() -> None:
    assert run(http(b"HTTP/1.0 204 No Content\r\n\r\n")).ok
    result = run(http(b"HTTP/1.0 301 Moved\r\n\r\n"))
    assert not result.ok and "301" in result.reason
