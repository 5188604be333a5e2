"""The agent lab: one director running the real ``lvsagent run``, two line servers, a client.

Shared by the kernel lab's agent tests (traffic, health, scripts, stop, metrics) and run
INSIDE the user-mode Linux guest.  Topology (192.0.2.0/24, a documentation range, inside
namespaces made here): client .1, director .10 (VRRP priority 255, VIP .100), rs1 .11 and
rs2 .12 (VIP on lo, arp_ignore=1, arp_announce=2), all on one bridge.  Every line a line
server receives is answered with its name, so one connection can stay open across a reload
or a restart and still say where it goes.  Sockets are made in their namespace by a
short-lived thread that setns()es into it; waiting is on log lines and replies.
"""

from __future__ import annotations

import re
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.kernel.labnet import Netns, bridge, namespaces
from tests.kernel.setns import run_in
from tests.netns.lab import Daemon, start_agent

VIP = "192.0.2.100"
PORT = 80
CLIENT = "192.0.2.1"
DIRECTOR = "192.0.2.10"
REAL = {"rs1": "192.0.2.11", "rs2": "192.0.2.12"}
SERVICE = f"TCP {VIP}:{PORT}"
IO_TIMEOUT = 10.0
START_TIMEOUT = 30.0



# ----- sockets in a namespace ----------------------------------------------------------------


def ns_socket(ns: Netns) -> socket.socket:
    """A TCP socket of namespace ``ns``, usable from any thread afterwards."""
    return run_in(f"/run/netns/{ns.name}", lambda: socket.socket(socket.AF_INET))


class LineServer:
    """Listens on port 80 in a real server's namespace; answers every line with its name.

    Bound to every address: DR traffic arrives for the VIP (on lo), health checks
    for the server's own address.
    """

    def __init__(self, ns: Netns, name: str) -> None:
        self.name = name
        self.ns = ns
        self.accepted = 0
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = ns_socket(ns)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("0.0.0.0", PORT))
        self._listener.listen(64)  # ready from here: no wait needed before the first connect
        self._acceptor = threading.Thread(target=self._accept, name=f"{name}-accept")
        self._acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # shutdown() by stop()
                return
            with self._lock:
                self.accepted += 1
                self._conns.append(conn)
                worker = threading.Thread(target=self._serve, args=(conn,), name=self.name)
                self._threads.append(worker)
            worker.start()

    def _serve(self, conn: socket.socket) -> None:
        reply = f"{self.name}\n".encode()
        with conn.makefile("rb") as lines:
            try:
                for _ in lines:
                    conn.sendall(reply)
            except OSError:
                return

    def stop(self) -> None:
        # shutdown() wakes a thread blocked in accept() or recv(); close() alone does not.
        for sock in (self._listener, *self._conns):
            with suppress(OSError):  # already shut by the peer
                sock.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(IO_TIMEOUT)
        with self._lock:
            threads = list(self._threads)
        for worker in threads:
            worker.join(IO_TIMEOUT)
        for sock in (self._listener, *self._conns):
            sock.close()


class Connection:
    """One client TCP connection to the VIP, kept open; ``ask()`` says which server answers."""

    def __init__(self, client: Netns) -> None:
        self.sock = ns_socket(client)
        self.sock.settimeout(IO_TIMEOUT)
        self.sock.connect((VIP, PORT))
        self._lines = self.sock.makefile("rb")

    def ask(self) -> str:
        self.sock.sendall(b"who\n")
        line = self._lines.readline()
        if not line.endswith(b"\n"):
            raise AssertionError(f"connection closed or cut short: {line!r}")
        return line.decode().strip()

    def close(self) -> None:
        self._lines.close()
        self.sock.close()


def ask_new(client: Netns, count: int) -> Counter[str]:
    """``count`` new connections, one after the other: which server answered each."""
    answers: Counter[str] = Counter()
    for _ in range(count):
        conn = Connection(client)
        try:
            answers[conn.ask()] += 1
        finally:
            conn.close()
    return answers


# ----- the daemon ----------------------------------------------------------------------------


def write_config(
    path: Path, weights: dict[str, int], resync: float = 30.0, health: str = 'type = "none"\n'
) -> Path:
    """The director's config: one VRRP instance owning the VIP, one DR rr service."""
    reals = "".join(
        f"""
[[virtual_server.real_server]]
address = "{REAL[name]}"
port = {PORT}
weight = {weights[name]}
"""
        for name in sorted(REAL)
    )
    path.write_text(
        f"""[global]
router_id = "director"
ipvs_resync_interval = {resync}

[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
vrid = 51
priority = 255
advert_int = 1
virtual_addresses = ["{VIP}/24"]
garp_master_delay = 0

[[virtual_server]]
address = "{VIP}"
port = {PORT}
protocol = "tcp"
scheduler = "rr"
forwarding = "dr"

[virtual_server.health]
{health}{reals}"""
    )
    return path


def dest_line(name: str, after: str) -> str:
    """The regex of the reconciler's log line for an op on real server ``name``."""
    return rf"ipvs: {re.escape(after)} dest {re.escape(REAL[name])}:{PORT} of {re.escape(SERVICE)}"


def wait_programmed(daemon: Daemon, why: str, after: int = 0) -> None:
    """The pass ``why`` added the service's two dests, and the instance is MASTER (VIP up)."""
    daemon.wait_for(rf"ipvs: {why}: applying \d+ change\(s\)", START_TIMEOUT, after=after)
    for name in REAL:
        daemon.wait_for(dest_line(name, "+"), START_TIMEOUT, after=after)


def wait_master(daemon: Daemon, after: int = 0) -> None:
    daemon.wait_for(r"VI_1 .*-> MASTER", START_TIMEOUT, after=after)


def ipvs_listing(director: Netns) -> str:
    return director.run("ipvsadm", "-L", "-n").stdout


def assert_table(director: Netns, weights: dict[str, int]) -> None:
    """``ipvsadm -Ln`` (an observer independent of lvsagent) shows the service and its dests."""
    listing = ipvs_listing(director)
    assert re.search(rf"^TCP\s+{re.escape(VIP)}:{PORT} rr\s*$", listing, re.MULTILINE), listing
    for name, address in REAL.items():
        row = rf"->\s+{re.escape(address)}:{PORT}\s+Route\s+{weights[name]}\s"
        assert re.search(row, listing), listing


def connection_entries(director: Netns) -> str:
    return director.run("ipvsadm", "-L", "-n", "-c").stdout


# ----- the lab -------------------------------------------------------------------------------


@dataclass
class Lab:
    client: Netns
    director: Netns
    servers: dict[str, LineServer]
    tmp: Path
    stack: ExitStack

    def agent(self, config: Path, name: str = "director") -> Daemon:
        """Start a daemon that is stopped (by its PID) when the test ends, whatever happens."""
        daemon = start_agent(self.director, config, name, log_level="info")
        self.stack.callback(daemon.stop)
        return daemon


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with ExitStack() as stack:
        sw, client, director, rs1, rs2 = stack.enter_context(
            namespaces("sw", "client", "director", "rs1", "rs2")
        )
        bridge(sw, [client, director, rs1, rs2])
        client.run("ip", "addr", "add", f"{CLIENT}/24", "dev", "eth0")
        director.run("ip", "addr", "add", f"{DIRECTOR}/24", "dev", "eth0")
        servers = {}
        for name, ns in (("rs1", rs1), ("rs2", rs2)):
            # A DR real server holds the VIP on lo and must neither answer nor announce it.
            for key, value in (("arp_ignore", "1"), ("arp_announce", "2")):
                ns.sysctl(f"net.ipv4.conf.all.{key}", value)
                ns.sysctl(f"net.ipv4.conf.eth0.{key}", value)
            ns.run("ip", "addr", "add", f"{REAL[name]}/24", "dev", "eth0")
            ns.run("ip", "addr", "add", f"{VIP}/32", "dev", "lo")
            server = LineServer(ns, name)
            stack.callback(server.stop)
            servers[name] = server
        # Callbacks run last-in first-out: daemons (registered later) stop before the servers.
        yield Lab(client, director, servers, tmp_path, stack)


def other(name: str) -> str:
    return "rs2" if name == "rs1" else "rs1"


def rs_line(name: str, verdict: str) -> str:
    """A health verdict's log line for real server ``name``."""
    return rf"RS {re.escape(REAL[name])}:{PORT} of \S+ {verdict}"
