"""The seed's two-box LVS in the kernel lab: a client, box A and box B on one bridge.

Why: the loop guard's proofs and figures are about this topology with real traffic — each box both
IPVS director (while MASTER) and real server, the loop between them, what a client sees when the
master is killed or stopped. This module builds it inside the lab (user-mode Linux: IPVS and
nf_tables), runs either agent on the boxes (lvsagent, or keepalived as the seed configures it:
tests/kernel/twobox_agents.py), drives client traffic (tests/kernel/twobox_traffic.py) and
injects the faults. Tests, `make bench` and `make demo` share it.

    with twobox_lab(tmp_path) as lab:
        a, b = lab.start_pair("keepalived")          # settled: A MASTER, B BACKUP + bypass
        with lab.traffic() as traffic:               # a new connection every 20 ms
            ...; a.kill9(); b.wait_state("MASTER", 15)
        print(describe(traffic.records, event))

Topology (all inside namespaces made here, inside the guest; nothing leaves it):

    client 172.16.0.10 ─┐
    box A  172.16.0.31 ─┼─ br0 (namespace "sw"; ports port0, port1, port2)
    box B  172.16.0.32 ─┘      VIP 172.16.0.30/24 on the master's eth0

Each box: eth0, lo up, net.ipv4.ip_forward=1 (the article's bypass scheme), arp_ignore=1 and
arp_announce=2 (the article's DR real-server settings), and a web server on 0.0.0.0:80 that
answers with the box's name ("boxa", "boxb").

Faults: Agent.kill9() / Agent.sigterm(); link_down(box) pulls the box's cable (its bridge port
goes down, the box sees carrier loss) or downs the box's own eth0; partition() cuts box A off
from box B while both still reach the client, with the bridge's port isolation (isolated ports
forward only to non-isolated ones: no ARP, VRRP, health check or DR-forwarded packet crosses;
the lab kernel has no bridge or netdev nf_tables for a filter rule).
"""

from __future__ import annotations

import functools
import re
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tests.kernel import setns
from tests.kernel.labnet import Netns, bridge, namespaces
from tests.kernel.twobox_agents import (
    PORT,
    VIP,
    Agent,
    AgentKind,
    bypass_runs,
    start_keepalived_on,
    start_lvsagent_on,
    wait_until,
)
from tests.kernel.twobox_traffic import Traffic
from tests.netns.lab import ROOT

IFACE = "eth0"
CLIENT = "172.16.0.10"
ADDRESS = {"a": "172.16.0.31", "b": "172.16.0.32"}
SERVICE = f"TCP  {VIP}:{PORT}"  # as ipvsadm -Ln prints it
FWMARK = 3  # the mark of the fwmark loop guard's service (the seed's "fwmark 3")
# Either form of the lab's virtual service in ``ipvsadm -Ln``: VIP:80, or the fwmark service.
_SERVICE_LINE = re.compile(rf"^(TCP  {re.escape(VIP)}:{PORT}|FWM  {FWMARK}) ", re.MULTILINE)
START_TIMEOUT = 30.0
in_netns = setns.run_in  # a namespace by path


@dataclass
class Box:
    """One box: its namespace, address, bridge port and web server."""

    label: str  # "a" or "b", as in etc/box-<label>.toml
    ns: Netns
    address: str
    port: str  # its bridge port in the "sw" namespace
    server: subprocess.Popen[str] | None = None

    @property
    def name(self) -> str:
        return f"box{self.label}"

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.ns.name}"

    @property
    def mac(self) -> str:
        """The MAC address of its eth0 (what the fwmark guard tells the peer apart by)."""
        out = self.ns.run("ip", "-o", "link", "show", IFACE).stdout
        found = re.search(r"link/ether (\S+)", out)
        if found is None:
            raise AssertionError(f"{self.name}: no MAC address on {IFACE}: {out}")
        return found.group(1)

    def has_vip(self) -> bool:
        out = self.ns.run("ip", "-4", "-o", "addr", "show", "dev", IFACE).stdout
        return f"inet {VIP}/" in out

    def ipvs(self) -> str:
        """``ipvsadm -Ln`` in this box."""
        return self.ns.run("ipvsadm", "-Ln").stdout

    def ruleset(self) -> str:
        return self.ns.run("nft", "list", "ruleset").stdout

    def has_lo_vip(self) -> bool:
        """The VIP as /32 on lo (the fwmark guard's "this box accepts the peer's forwards")."""
        out = self.ns.run("ip", "-4", "-o", "addr", "show", "dev", "lo").stdout
        return f"inet {VIP}/32" in out

    def sysctl(self, key: str) -> str:
        return self.ns.run("cat", f"/proc/sys/{key.replace('.', '/')}").stdout.strip()

    def sync_daemons(self) -> set[str]:
        """The IPVS connection-sync daemons running here: a subset of {"master", "backup"}."""
        out = self.ns.run("ipvsadm", "-Ln", "--daemon").stdout
        return set(re.findall(r"^(master|backup) sync daemon", out, re.MULTILINE))

    def marks_all_but(self, mac: str) -> bool:
        """An nft rule marks the service's packets with FWMARK unless they come from ``mac``."""
        ruleset = self.ruleset()
        return bool(
            re.search(rf"ether saddr != {re.escape(mac.lower())}\b.*meta mark set 0x0*{FWMARK}\b",
                      ruleset)
        )  # fmt: skip

    def has_redirect(self) -> bool:
        """A nat redirect of all the service's traffic is in place (the engaged bypass).

        lvsagent's released bypass keeps a redirect of what the peer's MAC sends
        (``ether saddr``): that one does not count, it is the MASTER's state.
        """
        lines = re.findall(r"^\s+.*\bredirect\b.*$", self.ruleset(), re.MULTILINE)
        return any("ether saddr" not in line for line in lines)

    def redirects_from(self, mac: str) -> bool:
        """A nat redirect of what ``mac`` sends (lvsagent's released bypass: the peer's
        forwards are served here, never balanced again, even with no agent running)."""
        lines = re.findall(r"^\s+.*\bredirect\b.*$", self.ruleset(), re.MULTILINE)
        return any(f"ether saddr {mac.lower()}" in line for line in lines)

    def diagnosis(self) -> str:
        """What a failed case needs to tell a loop, a stale ARP entry or a missing rule apart:
        addresses, neighbours, the IPVS table with its connections, the ruleset's counters."""
        parts = []
        for title, args in (
            ("addresses", ("ip", "-4", "-o", "addr")),
            ("neighbours", ("ip", "neigh")),
            ("ipvs", ("ipvsadm", "-Ln", "--stats")),
            ("ipvs connections (first 40)", ("ipvsadm", "-Lnc")),
            ("nft", ("nft", "list", "ruleset")),
            ("listening (Recv-Q: the accept queue)", ("ss", "-ltn")),
            ("sockets", ("ss", "-s")),
            ("tcp counters", ("nstat", "-asz", "TcpExtListenOverflows", "TcpExtListenDrops",
                              "TcpOutRsts", "TcpInErrs", "TcpExtTCPAbortOnData",
                              "IpInAddrErrors", "IpExtInNoRoutes")),
        ):  # fmt: skip
            out = self.ns.run(*args, check=False)
            text = "\n".join((out.stdout + out.stderr).splitlines()[:40])
            parts.append(f"--- {self.name}: {title}\n{text}")
        return "\n".join(parts)

    def has_service(self) -> bool:
        """The lab's virtual service (VIP:80 or the fwmark service) is in this box's IPVS."""
        return bool(_SERVICE_LINE.search(self.ipvs()))

    def state(self) -> str:
        """One line for a report: VIP, IPVS service, redirect."""
        listing = self.ipvs()
        dests = re.findall(r"->\s+(\S+)\s+Route\s+(\d+)", listing)
        table = (
            ", ".join(f"{d} w{w}" for d, w in dests) if _SERVICE_LINE.search(listing) else "none"
        )
        return (
            f"{self.name}: VIP {'yes' if self.has_vip() else 'no'}; IPVS {table}; "
            f"redirect {'yes' if self.has_redirect() else 'no'}"
        )


@dataclass
class TwoBox:
    """The running lab; everything it starts is stopped by the ExitStack, by PID."""

    sw: Netns
    client: Netns
    a: Box
    b: Box
    tmp: Path
    stack: ExitStack
    agents: list[Agent] = field(default_factory=list)

    def box(self, label: str) -> Box:
        return self.a if label == "a" else self.b

    def other(self, box: Box) -> Box:
        return self.b if box is self.a else self.a

    # ----- agents ----------------------------------------------------------------------------

    def start_lvsagent(self, label: str, **config: Any) -> Agent:
        """``lvsagent run`` on box ``label``; ``config``: lvsagent_config_text keywords.

        With ``loop_guard="fwmark"`` the services get the mark FWMARK and ``peer_mac`` defaults
        to the other box's MAC (pass ``peer_mac=None`` to leave it to be learned).
        """
        config.setdefault("interface", IFACE)
        if config.get("loop_guard") == "fwmark":
            config.setdefault("fwmark", FWMARK)
            config.setdefault("peer_mac", self.other(self.box(label)).mac)
        return self._track(start_lvsagent_on(self.box(label).ns, label, self.tmp, **config))

    def start_keepalived(self, label: str, **options: Any) -> Agent:
        """keepalived as the seed runs it on box ``label`` (version, advert_int, delay_loop)."""
        return self._track(
            start_keepalived_on(self.box(label).ns, label, self.tmp, interface=IFACE, **options)
        )

    def _track(self, agent: Agent) -> Agent:
        self.agents.append(agent)
        self.stack.callback(agent.stop)
        return agent

    def start_pair(
        self,
        kind: AgentKind,
        *,
        version: int = 2,
        advert_int: float = 1.0,
        expect_bypass: bool | None = None,
        **config: Any,
    ) -> tuple[Agent, Agent]:
        """Both boxes' agents, settled: A MASTER with the VIP, B BACKUP, both IPVS tables
        programmed, and with ``expect_bypass`` (default: keepalived, and lvsagent with the
        bypass loop guard, its default) a redirect on B and none on A. Extra keywords go to
        the agents' config (lvsagent_config_text keywords, or keepalived's delay_loop)."""
        start = self.start_keepalived if kind == "keepalived" else self.start_lvsagent
        a = start("a", version=version, advert_int=advert_int, **config)
        b = start("b", version=version, advert_int=advert_int, **config)
        a.wait_state("MASTER", START_TIMEOUT)
        b.wait_state("BACKUP", START_TIMEOUT)
        for box in (self.a, self.b):
            wait_until(functools.partial(ipvs_ready, box), START_TIMEOUT, f"{box.name}: IPVS")
        wait_until(self.a.has_vip, START_TIMEOUT, "box a: VIP")
        if kind == "keepalived":
            # Its notify scripts run asynchronously: wait for A's "del" (MASTER) and B's "add".
            for label, action in (("a", "del"), ("b", "add")):
                wait_until(
                    functools.partial(_last_bypass_run_is, self.tmp, label, action),
                    START_TIMEOUT,
                    f"box {label}: bypass script {action}",
                )
        if expect_bypass is None:
            expect_bypass = kind == "keepalived" or config.get("loop_guard", "bypass") == "bypass"
        if expect_bypass:
            wait_until(self.b.has_redirect, START_TIMEOUT, "box b: redirect rule")
            wait_until(lambda: not self.a.has_redirect(), START_TIMEOUT, "box a: no redirect")
        return a, b

    # ----- traffic ---------------------------------------------------------------------------

    def traffic(self, **options: Any) -> Traffic:
        """A (not yet started) traffic generator in the client namespace, to VIP:80."""
        return Traffic(f"/run/netns/{self.client.name}", VIP, PORT, **options)

    # ----- faults ----------------------------------------------------------------------------

    def link_down(self, box: Box, where: Literal["cable", "box"] = "cable") -> None:
        """The box's link goes down: "cable", its bridge port (the box sees carrier loss);
        "box", its own eth0."""
        if where == "cable":
            self.sw.run("ip", "link", "set", box.port, "down")
        else:
            box.ns.run("ip", "link", "set", IFACE, "down")

    def link_up(self, box: Box, where: Literal["cable", "box"] = "cable") -> None:
        if where == "cable":
            self.sw.run("ip", "link", "set", box.port, "up")
        else:
            box.ns.run("ip", "link", "set", IFACE, "up")

    def partition(self) -> None:
        """Box A and box B no longer reach each other; the client still reaches both."""
        for box in (self.a, self.b):
            self.sw.run("bridge", "link", "set", "dev", box.port, "isolated", "on")

    def heal(self) -> None:
        for box in (self.a, self.b):
            self.sw.run("bridge", "link", "set", "dev", box.port, "isolated", "off")


def _last_bypass_run_is(tmp: Path, label: str, action: str) -> bool:
    runs = bypass_runs(tmp, label)
    return bool(runs) and runs[-1][1] == action


def ipvs_ready(box: Box) -> bool:
    """Box ``box`` has the lab's service (VIP:80, or the fwmark service) with both real
    servers at a non-zero weight."""
    listing = box.ipvs()
    dests = re.findall(r"->\s+(\S+)\s+Route\s+(\d+)", listing)
    wanted = {f"{address}:{PORT}" for address in ADDRESS.values()}
    return bool(_SERVICE_LINE.search(listing)) and {d for d, w in dests if int(w) > 0} == wanted


# ----- IPVS counters ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Counters:
    conns: int
    inpkts: int
    outpkts: int
    inbytes: int
    outbytes: int


_STATS_ROW = re.compile(
    r"^\s*(?:(TCP|UDP|FWM)\s+|->\s+)(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$"
)


def ipvs_stats(box: Box) -> dict[str, Counters]:
    """``ipvsadm -Ln --stats --exact`` of a box: "TCP 172.16.0.30:80" for a service, and
    "TCP 172.16.0.30:80 -> 172.16.0.31:80" for each of its real servers.

    The kernel folds these counters in every 2 s: read them after that, e.g. once the
    master's own counters show the traffic. Packets that the backup re-balanced are its
    service's InPkts; with a working loop guard they stay 0.
    """
    out = box.ns.run("ipvsadm", "-Ln", "--stats", "--exact").stdout
    stats: dict[str, Counters] = {}
    service = ""
    for line in out.splitlines():
        m = _STATS_ROW.match(line)
        if not m:
            continue
        values = Counters(*(int(v) for v in m.groups()[2:]))
        if m.group(1):
            service = f"{m.group(1)} {m.group(2)}"
            stats[service] = values
        else:
            stats[f"{service} -> {m.group(2)}"] = values
    return stats


def client_endpoints(box: Box) -> set[str]:
    """The client ends (ip:port) of the box's IPVS connection entries: which connections it
    balanced (or, as a backup, received by the sync daemon)."""
    return {line.split()[3] for line in ipvs_connections(box)}


def own_entries(box: Box) -> list[tuple[str, str]]:
    """(client end, real server) of each entry the box's own IPVS scheduled, without those
    its backup sync daemon received: /proc/net/ip_vs_conn_sync's Origin column (the sync
    daemons run in every loop-guard mode, so a backup holds a copy of each of the master's)."""

    def end(ip: str, port: str) -> str:
        return ".".join(str(int(ip[i : i + 2], 16)) for i in range(0, 8, 2)) + f":{int(port, 16)}"

    out = box.ns.run("cat", "/proc/net/ip_vs_conn_sync").stdout
    rows = (line.split() for line in out.splitlines()[1:])
    return [(end(c[1], c[2]), end(c[5], c[6])) for c in rows
            if len(c) >= 9 and c[8].upper() == "LOCAL"]  # fmt: skip


def balanced_here(box: Box) -> set[str]:
    """The client ends of the entries the box's own IPVS scheduled (own_entries)."""
    return {client for client, _ in own_entries(box)}


def ipvs_connections(box: Box) -> list[str]:
    """The rows of the box's IPVS connection table (``ipvsadm -Lnc``), current at once."""
    out = box.ns.run("ipvsadm", "-Lnc").stdout
    return [line for line in out.splitlines() if re.match(r"^(TCP|UDP)\s", line)]


# ----- VRRP adverts as a box receives them -----------------------------------------------------


class Adverts:
    """A raw VRRP socket in a box's namespace: when the next advert from an address arrives.

    Used to kill a master right after the backup heard it, so that every run measures the whole
    Master_Down_Interval rather than a random part of it (as tests/bench/takeover.py does).
    """

    def __init__(self, box: Box) -> None:
        def make() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
            group = socket.inet_aton("224.0.0.18") + socket.inet_aton(box.address)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group)
            return sock

        self.sock = in_netns(box.netns_path, make)

    def next_from(self, source: str, timeout: float) -> None:
        """Discard what is queued, then block until an advert from ``source`` arrives."""
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recv(2048)
        except BlockingIOError:
            pass
        self.sock.settimeout(timeout)
        while True:
            try:
                _, (src, _) = self.sock.recvfrom(2048)
            except TimeoutError as exc:
                raise AssertionError(f"no VRRP advert from {source} within {timeout} s") from exc
            if src == source:
                return

    def close(self) -> None:
        self.sock.close()


# ----- the lab ---------------------------------------------------------------------------------


def _start_server(box: Box) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", box.ns.name, sys.executable, "-u", "-m",
         "tests.kernel.twobox_http", box.name, str(PORT)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=str(ROOT),
    )  # fmt: skip
    assert proc.stdout is not None
    first = proc.stdout.readline()  # blocks until it listens, or EOF if it died
    if first.strip() != "ready":
        proc.kill()
        proc.wait()
        raise AssertionError(f"{box.name}: web server did not start: {first!r}")
    # Whatever it writes later is read too: a pipe nobody drains fills up (64 KB) and then
    # blocks the writer, which stalled a box's web server in the lab after a failover.
    out = proc.stdout
    threading.Thread(target=lambda: deque(out, maxlen=0), name=f"{box.name}-http-out",
                     daemon=True).start()  # fmt: skip
    return proc


def _stop_server(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@contextmanager
def twobox_lab(tmp: Path) -> Iterator[TwoBox]:
    """Build the topology with both web servers up; take it all down afterwards."""
    with ExitStack() as stack:
        sw, client, ns_a, ns_b = stack.enter_context(namespaces("sw", "client", "boxa", "boxb"))
        bridge(sw, [client, ns_a, ns_b])  # eth0 in each; ports port0, port1, port2
        client.run("ip", "addr", "add", f"{CLIENT}/24", "dev", IFACE)
        boxes = []
        for i, (label, ns) in enumerate((("a", ns_a), ("b", ns_b)), start=1):
            box = Box(label, ns, ADDRESS[label], f"port{i}")
            ns.sysctl("net.ipv4.ip_forward", "1")
            for conf in ("all", IFACE):
                ns.sysctl(f"net.ipv4.conf.{conf}.arp_ignore", "1")
                ns.sysctl(f"net.ipv4.conf.{conf}.arp_announce", "2")
            ns.run("ip", "addr", "add", f"{box.address}/24", "dev", IFACE)
            box.server = _start_server(box)
            stack.callback(_stop_server, box.server)
            boxes.append(box)
        # Agents are registered on the stack later, so they stop before the web servers.
        yield TwoBox(sw, client, boxes[0], boxes[1], tmp, stack)
