"""The /metrics server under connections that never finish a request (loopback only).

Why: prometheus-client's server spent a thread and a descriptor on every connection,
for as long as the client liked; 1,500 idle ones gave 1,502 threads, and under a low
open-files limit the health checks could no longer open sockets.
"""

from __future__ import annotations

import contextlib
import os
import resource
import selectors
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from lvsagent.observe import scrape
from lvsagent.observe.metrics import Metrics
from lvsagent.observe.scrape import MAX_CONNECTIONS, ScrapeServer

IDLE = 1500
PARTIAL = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # never the blank line that ends it


@pytest.fixture
def server() -> Iterator[ScrapeServer]:
    s = ScrapeServer(lambda: b"lvsagent_up 1\n", "127.0.0.1", 0)
    s.start()
    try:
        yield s
    finally:
        s.close()


def get(server: ScrapeServer, path: str = "/metrics", method: str = "GET") -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{server.port}{path}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def flood(stack: contextlib.ExitStack, port: int) -> None:
    """IDLE connections at once, each sending the start of a request and no more.

    Non-blocking: a client that waited for each connect would spend a second on every
    one the listen queue dropped while the server was busy replacing idle ones.
    """
    with selectors.DefaultSelector() as sel:
        for _ in range(IDLE):
            c = stack.enter_context(socket.socket())
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            sel.register(c, selectors.EVENT_WRITE)
        left = IDLE
        while left:
            ready = sel.select(timeout=30)
            assert ready, f"{left} connections neither connected nor refused in 30 s"
            for key, _ in ready:
                sel.unregister(key.fileobj)
                left -= 1
                with contextlib.suppress(OSError):  # already replaced by a newer one
                    key.fileobj.send(PARTIAL)  # type: ignore[union-attr]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_idle_connections_cost_no_thread_and_a_scrape_still_works() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * IDLE)), hard))
    metrics = Metrics(lambda: None)
    try:
        address = metrics.start("127.0.0.1:0")
        assert address is not None
        url = f"http://127.0.0.1:{address[1]}/metrics"
        threads, fds = threading.active_count(), open_fds()
        with contextlib.ExitStack() as stack:
            flood(stack, address[1])
            with urllib.request.urlopen(url, timeout=10) as reply:
                assert reply.status == 200
                assert b"lvsagent_realserver_check_latency_seconds" in reply.read()
            assert threading.active_count() == threads
            # Ours are the IDLE client sockets; the server holds at most its cap, plus
            # the few it has just replaced and not yet closed.
            assert open_fds() - fds - IDLE <= 2 * MAX_CONNECTIONS
    finally:
        metrics.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_connection_that_sends_nothing_is_closed_after_the_request_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scrape, "REQUEST_TIMEOUT", 0.2)
    s = ScrapeServer(lambda: b"", "127.0.0.1", 0)
    s.start()
    try:
        with socket.create_connection(("127.0.0.1", s.port), 5) as c:
            c.settimeout(10)
            c.sendall(PARTIAL)
            assert c.recv(100) == b""  # closed by the server, with no answer
    finally:
        s.close()


def test_what_is_answered(server: ScrapeServer) -> None:
    assert get(server, "/") == (200, b"lvsagent_up 1\n")
    assert get(server, "/metrics?name[]=x") == (200, b"lvsagent_up 1\n")
    assert get(server, "/metrics", "HEAD") == (200, b"")
    assert get(server, "/other")[0] == 404
    assert get(server, "/metrics", "POST")[0] == 405


def test_a_render_that_fails_is_a_500_and_the_server_goes_on() -> None:
    calls: list[int] = []

    def render() -> bytes:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("collector broke")
        return b"ok\n"

    s = ScrapeServer(render, "127.0.0.1", 0)
    s.start()
    try:
        assert get(s)[0] == 500
        assert get(s) == (200, b"ok\n")
    finally:
        s.close()
