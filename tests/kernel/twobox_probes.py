"""Requests of the lab's own beside the traffic, for the two-box cases: from chosen client
ports (ReusedPorts: a port the old master balanced to the peer, used again), held half-sent
across a failover (Held), and the dead-box helpers (a config with the issue's checks, the
probe of the ports whose connections the dead box swallowed).
"""

from __future__ import annotations

import functools
import re
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from tests.kernel import setns
from tests.kernel.twobox import (
    CLIENT,
    Box,
    TwoBox,
    client_endpoints,
    in_netns,
    own_entries,
)
from tests.kernel.twobox_agents import PORT, VIP, Agent, wait_until
from tests.kernel.twobox_case import Scene
from tests.kernel.twobox_traffic import Record, Traffic

# ----- reused client ports -------------------------------------------------------------------


def fetch(port: int, timeout: float = 2.0) -> str:
    """One request to VIP:80 from client source port ``port``, in the calling thread's
    namespace: the box that answered, or why none did."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((CLIENT, port))
        s.settimeout(timeout)
        try:
            s.connect((VIP, PORT))
            s.sendall(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        except OSError as exc:
            return f"{type(exc).__name__}: {exc}"
    return data.partition(b"\r\n\r\n")[2].decode(errors="replace").strip() or "empty"


def fetch_from_ports(lab: TwoBox, ports: list[int]) -> dict[int, str]:
    """One request to VIP:80 from each client source port, one after the other: the box that
    answered, or why none did (2 s each at most)."""
    return in_netns(f"/run/netns/{lab.client.name}", lambda: {p: fetch(p) for p in ports})


def fetch_at_once(lab: TwoBox, ports: list[int], timeout: float = 3.0) -> dict[int, str]:
    """One request from each client source port, all at once (a thread each, in the client's
    namespace): ``timeout`` s at most. 3 s, not the traffic's 1 s: these blocking sockets
    cannot be given back a stall of the lab as the traffic's requests are (a CI run saw 20 of
    20 time out in one), and a port whose entry points to a dead box fails however long it
    waits (its SYN's retransmission takes the same entry)."""
    path = f"/run/netns/{lab.client.name}"
    with ThreadPoolExecutor(len(ports), initializer=setns.enter, initargs=(path,)) as pool:
        return dict(zip(ports, pool.map(functools.partial(fetch, timeout=timeout), ports),
                        strict=True))  # fmt: skip


def connections_to(box: Box, address: str) -> list[str]:
    """The client ends (ip:port) of the entries ``box``'s own IPVS scheduled to the real server
    at ``address`` (not the sync daemon's copies: a dead box's stay until they time out,
    harmless, as IPVS expires one at its first packet with expire_nodest_conn)."""
    return sorted(client for client, dest in own_entries(box) if dest == f"{address}:{PORT}")


# Linux's default net.ipv4.ip_local_port_range starts here; the lab's client keeps it.
EPHEMERAL_FIRST = 32768


class ReusedPorts:
    """Client ports that box A balanced to box B while A was master, used again after B took
    over: B balances about half of them to A, where A's IPVS still holds the old connection
    entry (FIN_WAIT, real server B). Unless the loop guard keeps the peer's forwards away from
    IPVS, A sends them straight back to B, which sends them to A: a loop for that connection,
    seen by the client as ICMP time exceeded ("No route to host").

    ``first`` must lie below the client's ephemeral ports (32768 up): the traffic's own
    connections use those, and an entry one of them left (or its copy from the peer's sync
    daemon) would steer a port of ours to its old real server, out of rr's turn (a CI run got
    12 of 20 answers from A)."""

    def __init__(self, lab: TwoBox, first: int, count: int = 20) -> None:
        self.lab = lab
        assert first + 2 * count <= EPHEMERAL_FIRST, first
        answers = fetch_from_ports(lab, list(range(first, first + 2 * count, 2)))  # no traffic
        self.made = time.monotonic()
        self.ports = [p for p, who in answers.items() if who == "boxb"]
        assert len(self.ports) >= count // 2 - 1, answers  # rr: every other one

    def again(self) -> dict[int, str]:
        """Each port once more (B is master now); checks first that A still has their entries."""
        stale = {f"{CLIENT}:{p}" for p in self.ports}
        missing = stale - client_endpoints(self.lab.a)
        age = time.monotonic() - self.made
        assert missing == set(), (
            f"A's IPVS no longer has entries for {sorted(missing)}, {age:.1f} s after they ended "
            "(the lab's ipvs_timeout_tcpfin is 15 s: the case took too long to use them again)"
        )
        return fetch_from_ports(self.lab, self.ports)


def describe_reuse(answers: dict[int, str]) -> str:
    served = {who: sum(1 for w in answers.values() if w == who) for who in ("boxa", "boxb")}
    failed = {p: who for p, who in answers.items() if not who.startswith("box")}
    return (
        f"{len(answers)} client ports A had balanced to B, reused after the takeover: served "
        f"by A {served['boxa']} (B balanced them to A, whose old entries point to B), by B "
        f"{served['boxb']}; failed: {failed or 'none'}"
    )


# ----- long-lived connections (backup_only) ---------------------------------------------------


class Held:
    """Connections to VIP:80 that send half a request now and the rest later: a long-lived flow
    whose packets after a failover take the new master's path."""

    def __init__(self, lab: TwoBox, count: int) -> None:
        def open_all() -> list[socket.socket]:
            socks = []
            for _ in range(count):
                s = socket.create_connection((VIP, PORT), timeout=5.0)
                s.sendall(b"GET / HTTP/1.0\r\n")
                socks.append(s)
            return socks

        self.socks = in_netns(f"/run/netns/{lab.client.name}", open_all)
        self.endpoints = [f"{CLIENT}:{s.getsockname()[1]}" for s in self.socks]

    def destinations(self, director: Box) -> dict[str, str]:
        """Each connection's real server, from the director's IPVS connection table."""
        rows = director.ns.run("ipvsadm", "-Lnc").stdout.splitlines()
        found = {}
        for row in rows:
            cols = row.split()
            if len(cols) >= 6 and cols[3] in self.endpoints:
                found[cols[3]] = cols[5]
        return found

    def finish(self) -> list[str]:
        """Send the rest of each request; what each connection answered (a box name, or why
        not)."""
        answers = []
        for s in self.socks:
            try:
                s.sendall(b"Host: vip\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
                answers.append(data.partition(b"\r\n\r\n")[2].decode().strip() or "empty")
            except OSError as exc:
                answers.append(f"error: {exc}")
            finally:
                s.close()
        return answers


# ----- a dead box ------------------------------------------------------------------------------

# The checks (the seed's keepalived TCP_CHECK): every 30 s, a 3 s connect timeout, one
# retry 1 s after a failed attempt.
DEAD_BOX_TIMEOUT = 3.0
# How long the traffic is watched after the takeover (or the removal) for failures that come
# back: the lab's client uses a source port again after ~25 s.
WATCH = 35.0
# Client source ports for requests of our own, outside the traffic's (ephemeral) range.
PROBE_PORTS = list(range(20000, 20040, 2))  # below EPHEMERAL_FIRST, as ReusedPorts' are


def dead_box_config(on_failure: str | None) -> dict[str, Any]:
    """The mode's lab config with the issue's checks; ``on_failure`` None: the default."""
    health: dict[str, Any] = {"retry": 1, "delay_before_retry": 1.0}
    if on_failure is not None:
        health["on_failure"] = on_failure
    return {
        "loop_guard": "bypass",
        "health_interval": 30.0,
        "connect_timeout": DEAD_BOX_TIMEOUT,
        "overrides": {
            "global": {"ipvs_timeout_tcpfin": 15},
            "virtual_server": [{"health": health}],
        },
    }


@contextmanager
def reconfigured(scene: Scene, config: dict[str, Any]) -> Iterator[tuple[Agent, Agent]]:
    """Both agents restarted with ``config`` for one case (settled); stopped afterwards, so
    that the next case's settled() starts them with the mode's own config again."""
    saved = scene.config

    def stop_all() -> None:
        for agent in scene.agents.values():
            agent.stop()
        scene.agents.clear()

    stop_all()
    scene.config = config
    try:
        yield scene.settled()
    finally:
        stop_all()
        scene.config = saved


def once_out(
    lab: TwoBox, director: Box, dead: str, ports: list[int], traffic: Traffic, since: float
) -> tuple[dict[int, str], list[Record]]:
    """The dead box's real server is out of ``director``'s IPVS: wait until its connection
    entries are gone too, use ``ports`` again, let the traffic run WATCH s past ``since``.
    Returns the ports' answers and the records so far, by start."""
    wait_until(lambda: not connections_to(director, dead), 10.0,
               f"{director.name}'s IPVS: no connection entry to {dead}")  # fmt: skip
    again = fetch_at_once(lab, ports)
    traffic.wait_started_after(since + WATCH, 1, WATCH + 30.0)
    return again, sorted(list(traffic.records), key=lambda r: r.start)


def served(answers: dict[int, str]) -> bool:
    return all(who.startswith("box") for who in answers.values())


def client_vip_mac(lab: TwoBox) -> str | None:
    """The MAC the client sends the VIP's traffic to (its neighbour entry), if it has one."""
    out = lab.client.run("ip", "neigh", "show", VIP, check=False).stdout
    found = re.search(r"lladdr (\S+)", out)
    return found.group(1) if found else None
