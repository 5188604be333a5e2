"""The HTTPS check (keepalived's SSL_GET): the HTTP check's GET over TLS.

The TCP connect is checks.py's own, so a refused or silent server fails with
the same reasons as a TCP or HTTP check, and the socket closes with a RST
there too.  TLS then runs through asyncio's SSL transport (the handshake and
records are a state machine that ``ssl.SSLObject`` would otherwise need by
hand), bounded by the same ``timeout`` as the whole exchange.

Certificates: keepalived's SSL_GET verifies nothing, so by default neither
does this (an expired or self-signed certificate on a backend is common and
is not what a health check is asked about).  ``verify`` checks the chain
against ``ca_file`` (or the system's CAs) and, when a server name is known,
the name.  The name is also sent as SNI, so a server with several
certificates answers with the one clients get.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import ssl

from lvsagent.health.checks import (
    MAX_RESPONSE,
    _connect,
    _failed,
    _request,
    _seconds,
    _status,
    _Timeout,
)
from lvsagent.health.tracker import CheckResult

__all__ = ["check_https", "tls_context"]

READ_SIZE = 65536


@functools.lru_cache(maxsize=64)
def tls_context(verify: bool, ca_file: str | None, by_name: bool) -> ssl.SSLContext:
    """One context per kind of check, made once: loading a CA bundle costs milliseconds.

    ``by_name``: the certificate must also match the server name (only with one).
    Raises ssl.SSLError or OSError when the CA file cannot be loaded.
    """
    if not verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = by_name
    return context


async def check_https(
    address: ipaddress.IPv4Address,
    port: int,
    *,
    path: str = "/",
    status_codes: tuple[int, ...] = tuple(range(200, 300)),
    body_contains: str | None = None,
    host: str | None = None,
    timeout: float = 3.0,
    server_name: str | None = None,
    verify: bool = False,
    ca_file: str | None = None,
) -> CheckResult:
    """GET ``path`` over TLS; passes as the HTTP check does (status, then body if asked)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + timeout
    name = server_name if server_name is not None else host
    try:
        context = tls_context(verify, ca_file, name is not None)
    except (ssl.SSLError, OSError) as exc:
        return CheckResult(False, f"cannot load CA file {ca_file}: {exc}", 0.0)
    try:
        sock = await _connect(loop, address, port, deadline)
    except _Timeout:  # as the HTTP check says it: nothing answered
        why = f"connect timeout {_seconds(timeout)} s"
        return CheckResult(False, why, loop.time() - start, unreachable=True)
    except OSError as exc:
        return _failed(exc.errno or 0, loop.time() - start)
    writer: asyncio.StreamWriter | None = None
    stage = "TLS handshake"
    try:
        async with asyncio.timeout_at(deadline):
            reader, writer = await asyncio.open_connection(
                sock=sock, ssl=context, server_hostname=name or "",
                ssl_handshake_timeout=max(deadline - loop.time(), 0.001),
            )  # fmt: skip
            stage = "read"
            request = _request(address, port, path, host)
            ok, reason = await _get(reader, writer, request, status_codes, body_contains)
    except TimeoutError:
        ok, reason = False, f"{stage} timeout {_seconds(timeout)} s"
    except ssl.SSLCertVerificationError as exc:
        ok, reason = False, f"certificate not trusted: {exc.verify_message}"
    except ssl.SSLError as exc:
        ok, reason = False, f"{stage} failed: {exc.reason or exc}"
    except OSError as exc:  # e.g. the host went away after the connect
        if exc.errno:
            return _failed(exc.errno, loop.time() - start)
        ok, reason = False, f"{stage} failed: {exc}"
    finally:
        if writer is not None:
            writer.transport.abort()  # no close_notify wait: the server is done with us
        sock.close()
    return CheckResult(ok, reason, loop.time() - start)


async def _get(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    request: bytes,
    status_codes: tuple[int, ...],
    body_contains: str | None,
) -> tuple[bool, str]:
    writer.write(request)
    needle = body_contains.encode() if body_contains is not None else None
    data = b""
    while True:
        chunk = await reader.read(READ_SIZE)
        data += chunk
        verdict = judge(data, not chunk or len(data) >= MAX_RESPONSE, status_codes, needle)
        if verdict is not None:
            return verdict


def judge(
    data: bytes, ended: bool, status_codes: tuple[int, ...], needle: bytes | None
) -> tuple[bool, str] | None:
    """The verdict on a response that starts with ``data`` (``ended``: nothing more comes).

    None while more is needed: the status line is incomplete, or the body so far
    lacks ``needle``.  Pure, so each branch is tested without a server.
    """
    if b"\n" not in data and not ended:
        return None
    status = _status(data)
    if status is None:
        return False, "bad status line" if data else "no response"
    if status not in status_codes:
        return False, f"status {status}"
    if needle is None:
        return True, f"status {status}"
    _, sep, body = data.partition(b"\r\n\r\n")
    if sep and needle in body:
        return True, f"status {status}"
    if ended:
        return False, f"body lacks {needle.decode(errors='replace')!r}"
    return None
