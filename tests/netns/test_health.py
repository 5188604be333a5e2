"""Health checks against real listeners in a namespace: die, refuse, hang, blackhole, come back.

Two namespaces on a veth link: ``mon`` (10.98.0.1) runs a HealthMonitor on an
asyncio loop in a thread that setns()ed into it, so every check socket is
made there; ``srv`` (10.98.0.2) holds the real servers.  Their listening
sockets are made in ``srv`` by a short-lived thread and then served from the
same loop (a socket keeps the namespace it was made in).  A blackhole is an
nft ``drop`` rule in srv's input chain: a silent drop, not a refusal.

Every wait is for an event (a verdict the monitor reports through
``on_change``, a log line), under a generous timeout; nothing asserts time.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from lvsagent.config.schema import (
    Config,
    HealthCheck,
    HttpCheck,
    RealServer,
    TcpCheck,
    VirtualServer,
)
from lvsagent.health.monitor import HealthMonitor
from lvsagent.ipvs.desired import DestId, dest_key, service_key
from tests.kernel.setns import enter
from tests.netns.lab import Netns, in_namespace, namespaces, veth

T = TypeVar("T")
SRV = ipaddress.IPv4Address("10.98.0.2")
VIP = ipaddress.IPv4Address("10.98.0.100")
WAIT = 15.0  # seconds; generous for a loaded 2-core machine, never a measurement

# Drained when they fail (keepalived's inhibit_on_failure), unless they do not answer at all.
FAST = HealthCheck(
    type="tcp", interval=0.2, retry=0, on_failure="drain", tcp=TcpCheck(connect_timeout=0.5)
)
DIES = RealServer(SRV, 8001, health=HealthCheck(
    type="tcp", interval=0.2, retry=1, delay_before_retry=0.1, rise=2, fall=2,
    on_failure="drain", tcp=TcpCheck(connect_timeout=0.5),
))  # fmt: skip
HANGS = RealServer(SRV, 8002, health=HealthCheck(
    type="http", interval=0.2, retry=0, on_failure="drain",
    http=HttpCheck(path="/health", timeout=0.5),
))  # fmt: skip
REFUSES = RealServer(SRV, 8003, health=FAST)
BLACKHOLED = RealServer(SRV, 8004, health=FAST)
REMOVED = RealServer(SRV, 8005, health=HealthCheck(
    type="tcp", interval=0.2, retry=0, on_failure="remove", tcp=TcpCheck(connect_timeout=0.5)
))  # fmt: skip
SERVICE = VirtualServer(
    VIP, 80, real_servers=(DIES, HANGS, REFUSES, BLACKHOLED, REMOVED), health=FAST
)
CONFIG = Config("health.toml", virtual_servers=(SERVICE,))


def ident(rs: RealServer) -> DestId:
    return (service_key(SERVICE), dest_key(rs))


def listening_socket(ns: Netns, port: int) -> socket.socket:
    def make() -> socket.socket:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((str(SRV), port))
        s.listen(64)
        s.setblocking(False)
        return s

    return in_namespace(ns, make)


@dataclass
class Lab:
    """The loop thread (in ``mon``), the monitor on it, and what it has reported."""

    mon: Netns
    srv: Netns
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    up: dict[DestId, bool | None] = field(default_factory=dict)
    weights: dict[DestId, int] = field(default_factory=dict)
    removed: frozenset[DestId] = frozenset()
    logs: list[str] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    http_mode: str = "ok"
    servers: dict[int, asyncio.Server] = field(default_factory=dict)
    monitor: HealthMonitor = field(init=False)
    thread: threading.Thread = field(init=False)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(WAIT)

    def report(self, _verdicts: object = None) -> None:
        """on_change, on the loop: copy the verdicts out for the test thread."""
        m = self.monitor
        with self.cond:
            self.up = {ident(rs): m.server_up(rs.address, rs.port) for rs in SERVICE.real_servers}
            self.weights = m.weights()
            self.removed = m.removed()
            self.cond.notify_all()

    def wait(self, what: str, pred: Callable[[], bool]) -> None:
        with self.cond:
            if not self.cond.wait_for(pred, WAIT):
                raise AssertionError(f"no {what} within {WAIT} s; log:\n" + "\n".join(self.logs))

    def wait_log(self, pattern: str) -> str:
        rx = re.compile(pattern)
        self.wait(f"log line {pattern!r}", lambda: any(rx.search(m) for m in self.logs))
        return next(m for m in self.logs if rx.search(m))

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            enter(f"/run/netns/{self.mon.name}")
            asyncio.set_event_loop(self.loop)
            self.monitor = HealthMonitor(CONFIG, self.report)
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="health-loop")
        self.thread.start()
        ready.wait(WAIT)
        self.report_now()

    def report_now(self) -> None:
        self.loop.call_soon_threadsafe(self.report)

    def run_monitor(self) -> None:
        asyncio.run_coroutine_threadsafe(self.monitor.run(), self.loop)

    def stop(self) -> None:
        """Close the listeners, cancel every task on the loop (the monitor's too), stop it."""

        async def close() -> None:
            for server in self.servers.values():
                server.close()
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.call(close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)
        self.loop.close()

    # ----- real servers (served from the same loop) ---------------------------------

    def listen(self, port: int) -> None:
        sock = listening_socket(self.srv, port)
        handler = self._http if port == HANGS.port else self._tcp

        async def serve() -> asyncio.Server:
            return await asyncio.start_server(handler, sock=sock)

        self.servers[port] = self.call(serve())

    def kill(self, port: int) -> None:
        async def close() -> None:
            self.servers.pop(port).close()

        self.call(close())

    async def _tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            if self.http_mode == "hang":
                await reader.read()  # accepted, then silence until the checker gives up
            else:
                writer.write(b"HTTP/1.0 200 OK\r\n\r\nok\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


class _Collect(logging.Handler):
    def __init__(self, lab: Lab) -> None:
        super().__init__(logging.INFO)
        self.lab = lab

    def emit(self, record: logging.LogRecord) -> None:
        with self.lab.cond:
            self.lab.logs.append(record.getMessage())
            self.lab.cond.notify_all()


@pytest.fixture
def lab() -> Iterator[Lab]:
    with namespaces("hmon", "hsrv") as (mon, srv):
        veth(mon, "eth0", "10.98.0.1/24", srv, "eth0", f"{SRV}/24")
        lab = Lab(mon, srv)
        handler = _Collect(lab)
        logger = logging.getLogger("lvsagent.health")
        logger.addHandler(handler)
        old_level = logger.level
        logger.setLevel(logging.INFO)
        lab.start()
        try:
            for rs in (DIES, HANGS, BLACKHOLED, REMOVED):  # REFUSES has no listener
                lab.listen(rs.port)
            lab.run_monitor()
            yield lab
        finally:
            lab.stop()
            logger.removeHandler(handler)
            logger.setLevel(old_level)


def all_up_but_the_refusing_one(lab: Lab) -> None:
    lab.wait("every listener UP", lambda: all(
        lab.up[ident(rs)] is True for rs in (DIES, HANGS, BLACKHOLED, REMOVED)
    ))  # fmt: skip
    lab.wait("the refusing server DOWN", lambda: lab.up[ident(REFUSES)] is False)


def test_alpha_start_then_every_listener_up(lab: Lab) -> None:
    all_up_but_the_refusing_one(lab)
    assert lab.weights == {ident(REFUSES): 0}
    assert lab.removed == frozenset()
    lab.wait_log(
        r"^RS 10\.98\.0\.2:8001 of 10\.98\.0\.100:80 UP \(connected, first check passed\)$"
    )


def test_refusing_server_never_gets_traffic(lab: Lab) -> None:
    line = lab.wait_log(r"RS 10\.98\.0\.2:8003 .* DOWN")
    assert (
        line == "RS 10.98.0.2:8003 of 10.98.0.100:80 DOWN (connection refused, first check failed)"
    )
    # Every server starts at weight 0 (alpha): only once the others have come up does
    # "still 0" say something about the refusing one.
    all_up_but_the_refusing_one(lab)
    assert lab.weights == {ident(REFUSES): 0}
    assert not any("8003" in m and " UP " in m for m in lab.logs)


def test_listener_dies_and_comes_back(lab: Lab) -> None:
    all_up_but_the_refusing_one(lab)
    lab.kill(DIES.port)
    lab.wait("the dead listener drained", lambda: lab.weights.get(ident(DIES)) == 0)
    assert lab.wait_log(r"8001 .* DOWN").endswith(
        "DOWN (connection refused, 2 of 2, after 1 retry)"
    )
    lab.listen(DIES.port)
    lab.wait("the listener back", lambda: ident(DIES) not in lab.weights)
    assert lab.wait_log(r"8001 .* UP \(connected, 2 of 2\)")


def test_http_server_that_accepts_then_hangs_times_out(lab: Lab) -> None:
    all_up_but_the_refusing_one(lab)
    lab.http_mode = "hang"
    lab.wait("the hanging server drained", lambda: lab.weights.get(ident(HANGS)) == 0)
    assert lab.wait_log(r"8002 .* DOWN").endswith("DOWN (read timeout 0.5 s, 1 of 1)")
    lab.http_mode = "ok"
    lab.wait("the HTTP server back", lambda: ident(HANGS) not in lab.weights)
    assert lab.wait_log(r"8002 .* UP \(status 200, 1 of 1\)")


def test_blackholed_server_times_out_is_removed_and_comes_back(lab: Lab) -> None:
    """A server that does not answer at all is removed, although on_failure is "drain":
    drained, the kernel would still forward it the packets of its connections, and a new
    connection from a client port whose old entry points at it."""
    all_up_but_the_refusing_one(lab)
    lab.srv.run("nft", "add table inet lvst_health")
    lab.srv.run("nft", "add chain inet lvst_health input { type filter hook input priority 0 ; }")
    lab.srv.run("nft", "add rule inet lvst_health input tcp dport 8004 drop")
    lab.wait("the blackholed server removed", lambda: ident(BLACKHOLED) in lab.removed)
    assert ident(BLACKHOLED) not in lab.weights
    assert lab.wait_log(r"8004 .* DOWN").endswith(
        "DOWN (connect timeout 0.5 s, 1 of 1); unreachable: removed from IPVS, not drained"
    )
    lab.srv.run("nft", "delete table inet lvst_health")
    lab.wait("the blackhole lifted", lambda: ident(BLACKHOLED) not in lab.removed)
    assert ident(BLACKHOLED) not in lab.weights


def test_on_failure_remove_takes_the_server_out_and_back(lab: Lab) -> None:
    all_up_but_the_refusing_one(lab)
    lab.kill(REMOVED.port)
    lab.wait("the server removed", lambda: ident(REMOVED) in lab.removed)
    assert ident(REMOVED) not in lab.weights
    lab.listen(REMOVED.port)
    lab.wait("the server back", lambda: ident(REMOVED) not in lab.removed)
