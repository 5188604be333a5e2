"""The loop guard's kernel state on the host kernel, with real traffic, in namespaces.

The code under test runs in the test process, in a worker thread that entered
the namespace with setns() (a libnftables context and a socket bind to the
namespace of the thread that creates them).  Servers and clients are sockets
made in those threads and driven from here, so every wait is a socket call
that returns when the packet arrives (connect, recv), never a sleep.

Addresses: 10.98.0.0/24 between client and box, 10.98.2.0/24 between peer and
box, VIP 10.98.1.100 (routed to the box, not on any link); all inside
namespaces made here.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import pytest

from lvsagent.netfilter.loopback import reconcile_lo_vips, remove_lo_vips
from lvsagent.netfilter.nft import NftGuard
from lvsagent.netfilter.spec import GuardedService, GuardSpec, desired_sysctls
from lvsagent.netfilter.sysctl import (
    SysctlError,
    apply_sysctls,
    restore_sysctls,
)
from tests.kernel.setns import enter
from tests.netns.lab import Netns, namespaces, veth

T = TypeVar("T")
VIP = "10.98.1.100"
WEB = GuardedService("tcp", ipaddress.IPv4Address(VIP), 80, 3)
FOREIGN = "add table inet keep\nadd chain inet keep input { type filter hook input priority 0; }\n"


class InNs:
    """One thread living in a namespace: whatever it runs acts there."""

    def __init__(self, ns: Netns) -> None:
        self.pool = ThreadPoolExecutor(1, initializer=enter, initargs=(f"/run/netns/{ns.name}",))

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        return self.pool.submit(fn, *args).result()

    def close(self) -> None:
        self.pool.shutdown()


@contextmanager
def inside(*nss: Netns) -> Iterator[list[InNs]]:
    workers = [InNs(ns) for ns in nss]
    try:
        yield workers
    finally:
        for w in workers:
            w.close()


class EchoServer:
    """Echoes every connection on ``port`` (socket made in the box's namespace)."""

    def __init__(self, box: InNs, port: int) -> None:
        self.sock = box.call(socket.create_server, ("0.0.0.0", port))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn, suppress(OSError):
            while data := conn.recv(100):
                conn.sendall(data)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)


def connect(client: InNs, port: int) -> socket.socket:
    return client.call(socket.create_connection, (VIP, port), 5)


def echo(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    return sock.recv(100)


def nft_json(ns: Netns, *args: str) -> dict[str, Any]:
    return json.loads(ns.run("nft", "-j", "list", *args).stdout)  # type: ignore[no-any-return]


@pytest.fixture
def lab() -> Iterator[tuple[Netns, Netns]]:
    """client -- box; the client routes the VIP to the box, the box forwards (ip_forward)."""
    with namespaces("client", "box") as (client, box):
        veth(client, "eth0", "10.98.0.1/24", box, "eth0", "10.98.0.2/24")
        client.run("ip", "route", "add", f"{VIP}/32", "via", "10.98.0.2")
        box.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        yield client, box


def test_apply_is_idempotent_and_leaves_other_tables_alone(lab: tuple[Netns, Netns]) -> None:
    _, box = lab
    box.run("sh", "-c", f"printf '{FOREIGN}' | nft -f -")
    before = box.run("nft", "list", "table", "inet", "keep").stdout
    with inside(box) as (w,):
        guard = w.call(NftGuard, GuardSpec("bypass", (WEB,)))
        assert w.call(guard.apply, True) is True
        assert w.call(guard.apply, True) is False
        assert w.call(guard.apply, False) is True
        assert w.call(guard.apply, False) is False
        assert "redirect" not in box.run("nft", "list", "chain", "ip", "lvsagent", "bypass").stdout
        assert "ct state invalid" in box.run("nft", "list", "table", "ip", "lvsagent").stdout
        assert box.run("nft", "list", "table", "inet", "keep").stdout == before
        assert w.call(guard.remove) is True
        assert w.call(guard.remove) is False
    assert box.run("nft", "list", "tables").stdout.split() == ["table", "inet", "keep"]


@pytest.mark.parametrize("mode", ["bypass", "fwmark", "backup_only"])
def test_the_kernel_reads_back_every_modes_table_as_written(
    lab: tuple[Netns, Netns], mode: str
) -> None:
    """Each form the ruleset writes (peer rules with the SYN match, every-port services) is
    what nft reads back: else every 5 s check would "repair" a table that is fine."""
    _, box = lab
    vip = ipaddress.IPv4Address(VIP)
    services = (
        WEB,
        GuardedService("tcp", vip, None, 5),
        GuardedService("udp", vip, None, 6),
    )
    macs = ("02:00:00:00:00:0a", "02:00:00:00:00:0b")
    spec = GuardSpec(mode, services, macs)  # type: ignore[arg-type]
    with inside(box) as (w,):
        guard = w.call(NftGuard, spec)
        for active in (True, False, True, False):  # bypass ends released: the peer rule
            w.call(guard.apply, active)
            assert w.call(guard.apply, active) is False  # read back equal: nothing sent
            assert w.call(guard.check) is False, w.call(guard.state)
        listing = box.run("nft", "list", "chain", "ip", "lvsagent", "bypass").stdout
        assert "tcp flags syn / syn,ack" in listing, listing
        w.call(guard.remove)


def test_check_repairs_drift_made_by_hand(lab: tuple[Netns, Netns]) -> None:
    _, box = lab
    with inside(box) as (w,):
        guard = w.call(NftGuard, GuardSpec("bypass", (WEB,)))
        w.call(guard.apply, True)
        assert w.call(guard.check) is False
        box.run("nft", "flush", "chain", "ip", "lvsagent", "bypass")
        assert w.call(guard.check) is True
        assert "redirect" in box.run("nft", "list", "chain", "ip", "lvsagent", "bypass").stdout
        box.run("nft", "delete", "table", "ip", "lvsagent")
        assert w.call(guard.check) is True
        rules = [i["rule"] for i in nft_json(box, "table", "ip", "lvsagent")["nftables"]
                 if "rule" in i and i["rule"]["chain"] == "ct_keep"]  # fmt: skip
        box.run("nft", "delete", "rule", "ip", "lvsagent", "ct_keep", "handle",
                str(rules[0]["handle"]))  # fmt: skip
        assert w.call(guard.check) is True
        box.run("nft", "flush", "ruleset")
        assert w.call(guard.check) is True
        assert guard.repairs == 4
        assert w.call(guard.check) is False
        assert w.call(guard.state)["in_sync"] is True


def test_bypass_redirects_the_service_and_nothing_else(lab: tuple[Netns, Netns]) -> None:
    client, box = lab
    with inside(client, box) as (wc, wb):
        guard = wb.call(NftGuard, GuardSpec("bypass", (WEB,)))
        web, other = EchoServer(wb, 80), EchoServer(wb, 81)
        try:
            wb.call(guard.apply, True)
            with connect(wc, 80) as s:
                assert echo(s, b"hello") == b"hello"
            # Port 81 is no service: the box forwards it, has no route, answers ICMP.
            with pytest.raises(OSError) as info:
                connect(wc, 81)
            assert info.value.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH)
            counters = wb.call(guard.state)["counters"]
            assert counters[f"bypass {VIP}:80/tcp"]["packets"] >= 1
            wb.call(guard.apply, False)
            with pytest.raises(OSError):
                connect(wc, 80)
        finally:
            web.close()
            other.close()


def settle_destruction(ns: Netns) -> None:
    """Wait until nf_tables has really destroyed the rules a batch removed.

    A commit only queues the removed rules' destruction (and with it the
    release of their conntrack reference) on a work queue; closing any
    nfnetlink socket in the namespace flushes that work synchronously
    (nft_rcv_nl_event on NETLINK_URELEASE).  An ``nft`` run that has exited
    closed one.  Without this the flow is tested before the reference is gone,
    and the test passes even without the ct_keep chain.
    """
    ns.run("nft", "list", "tables")


def test_a_redirected_connection_survives_the_bypass_removal(lab: tuple[Netns, Netns]) -> None:
    """The conntrack fact: the ct_keep chain keeps redirected flows after apply(False)."""
    client, box = lab
    with inside(client, box) as (wc, wb):
        guard = wb.call(NftGuard, GuardSpec("bypass", (WEB,)))
        server = EchoServer(wb, 80)
        try:
            wb.call(guard.apply, True)
            with connect(wc, 80) as s:
                assert echo(s, b"before") == b"before"
                assert wb.call(guard.apply, False) is True  # to MASTER
                settle_destruction(box)
                assert echo(s, b"after") == b"after"
        finally:
            server.close()


def test_without_the_keeper_a_redirected_connection_breaks(lab: tuple[Netns, Netns]) -> None:
    """Pins the fact the ct_keep chain exists for: deleted by hand, the flow dies."""
    client, box = lab
    with inside(client, box) as (wc, wb):
        guard = wb.call(NftGuard, GuardSpec("bypass", (WEB,)))
        server = EchoServer(wb, 80)
        try:
            wb.call(guard.apply, True)
            with connect(wc, 80) as s:
                assert echo(s, b"before") == b"before"
                box.run("nft", "delete", "chain", "ip", "lvsagent", "ct_keep")
                box.run("nft", "flush", "chain", "ip", "lvsagent", "bypass")
                settle_destruction(box)
                s.settimeout(2)
                with pytest.raises(OSError):  # TimeoutError: the reply never comes back
                    echo(s, b"after")
        finally:
            server.close()


def mac_of(ns: Netns, ifname: str) -> str:
    return str(json.loads(ns.run("ip", "-j", "link", "show", ifname).stdout)[0]["address"])


@contextmanager
def client_peer_box() -> Iterator[tuple[Netns, Netns, Netns]]:
    """A box with a client on eth0 and the peer director on eth1, both routing VIP to it."""
    with namespaces("client", "peer", "box") as (client, peer, box):
        veth(client, "eth0", "10.98.0.1/24", box, "eth0", "10.98.0.2/24")
        veth(peer, "eth0", "10.98.2.1/24", box, "eth1", "10.98.2.2/24")
        client.run("ip", "route", "add", f"{VIP}/32", "via", "10.98.0.2")
        peer.run("ip", "route", "add", f"{VIP}/32", "via", "10.98.2.2")
        yield client, peer, box


def test_fwmark_marks_clients_not_the_peer(tmp_path: Path) -> None:
    with client_peer_box() as (client, peer, box):
        # A foreign table that counts marked packets after ours ran: proves the mark is set.
        box.run("sh", "-c", "printf 'add table inet probe\n"
                "add chain inet probe input { type filter hook input priority 0; }\n"
                "add rule inet probe input meta mark 3 counter\n' | nft -f -")  # fmt: skip
        spec = GuardSpec("fwmark", (WEB,), (mac_of(peer, "eth0"),))
        with inside(client, peer, box) as (wc, wp, wb):
            assert wb.call(reconcile_lo_vips, [WEB.vip]) is True
            guard = wb.call(NftGuard, spec)
            assert wb.call(guard.apply, False) is True
            server = EchoServer(wb, 80)
            try:
                with connect(wp, 80) as s:
                    assert echo(s, b"from the peer") == b"from the peer"
                marked = wb.call(guard.state)["counters"][f"fwmark 3 {VIP}:80/tcp"]["packets"]
                assert marked == 0
                assert "packets 0" in box.run("nft", "list", "table", "inet", "probe").stdout
                with connect(wc, 80) as s:
                    assert echo(s, b"from a client") == b"from a client"
                marked = wb.call(guard.state)["counters"][f"fwmark 3 {VIP}:80/tcp"]["packets"]
                assert marked >= 3  # SYN, ACK, data at least
                probe = box.run("nft", "list", "table", "inet", "probe").stdout
                found = re.search(r"counter packets (\d+)", probe)
                assert found and int(found.group(1)) >= 3, probe
            finally:
                server.close()


def test_lo_vips_converge_and_go(lab: tuple[Netns, Netns]) -> None:
    _, box = lab
    vip = ipaddress.IPv4Address(VIP)
    with inside(box) as (w,):
        assert w.call(reconcile_lo_vips, [vip]) is True
        assert w.call(reconcile_lo_vips, [vip]) is False
        assert box.has_address("lo", VIP) and box.has_address("lo", "127.0.0.1")

        async def in_a_running_loop() -> bool:  # as the daemon calls it
            return reconcile_lo_vips([vip])

        assert w.call(asyncio.run, in_a_running_loop()) is False
        assert w.call(remove_lo_vips, [vip]) is True
        assert w.call(remove_lo_vips, [vip]) is False
        assert not box.has_address("lo", VIP) and box.has_address("lo", "127.0.0.1")


def test_a_thousand_lo_vips_converge_a_window_at_a_time(lab: tuple[Netns, Netns]) -> None:
    """One VIP per virtual service: more than a netlink socket's acks fit in one read, and
    what is not ours (127.0.0.1, an address put there by hand) stays."""
    _, box = lab
    box.run("ip", "addr", "add", "10.77.0.1/32", "dev", "lo")
    vips = [ipaddress.IPv4Address(f"10.66.{i // 250}.{i % 250 + 1}") for i in range(1000)]
    with inside(box) as (w,):
        assert w.call(reconcile_lo_vips, vips[:600]) is True
        assert w.call(reconcile_lo_vips, vips, vips[:600]) is True  # 400 more
        assert w.call(reconcile_lo_vips, vips, vips) is False
        on_lo = box.addresses("lo")
        assert {f"{v}/32" for v in vips} <= on_lo and {"127.0.0.1/8", "10.77.0.1/32"} <= on_lo
        assert w.call(reconcile_lo_vips, vips[:10], vips) is True  # a reload kept 10
        assert box.addresses("lo") == {"127.0.0.1/8", "10.77.0.1/32"} | {
            f"{v}/32" for v in vips[:10]
        }
        assert w.call(remove_lo_vips, vips) is True
        assert box.addresses("lo") == {"127.0.0.1/8", "10.77.0.1/32"}


def read(ns: Netns, key: str) -> str:
    return ns.run("sysctl", "-n", key).stdout.strip()


def test_sysctls_round_trip_in_a_namespace(lab: tuple[Netns, Netns], tmp_path: Path) -> None:
    _, box = lab
    box.run("sysctl", "-qw", "net.ipv4.ip_forward=0")
    host_forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    saved = tmp_path / "run" / "sysctl-saved.json"
    with inside(box) as (w,):
        changes = w.call(apply_sysctls, desired_sysctls("fwmark", ["eth0"]), saved)
        assert {c.key for c in changes} == {"net.ipv4.ip_forward",
                                            "net.ipv4.conf.eth0.arp_ignore",
                                            "net.ipv4.conf.eth0.arp_announce"}  # fmt: skip
        assert read(box, "net.ipv4.ip_forward") == "1"
        assert read(box, "net.ipv4.conf.eth0.arp_announce") == "2"
        assert w.call(apply_sysctls, desired_sysctls("fwmark", ["eth0"]), saved) == []
        assert len(w.call(restore_sysctls, saved)) == 3
        assert read(box, "net.ipv4.ip_forward") == "0"
        assert read(box, "net.ipv4.conf.eth0.arp_ignore") == "0"
        assert not saved.exists()
        # The host kernel has no IPVS: backup_only says so and changes nothing.
        with pytest.raises(SysctlError, match="IPVS is not loaded"):
            w.call(apply_sysctls, desired_sysctls("backup_only", ["eth0"]), saved)
        assert read(box, "net.ipv4.ip_forward") == "0"
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == host_forward


def test_released_bypass_still_serves_the_peers_forwards_locally(tmp_path: Path) -> None:
    """MASTER with the peer's MAC known: a client's packets reach IPVS (no redirect), the
    peer's are served here.  This rule is what keeps a box whose agent was killed from
    balancing again what the new master balanced to it."""
    with client_peer_box() as (client, peer, box):
        spec = GuardSpec("bypass", (WEB,), (mac_of(peer, "eth0"),))
        with inside(client, peer, box) as (wc, wp, wb):
            guard = wb.call(NftGuard, spec)
            assert wb.call(guard.apply, False) is True
            server = EchoServer(wb, 80)  # on the box's own addresses, not on the VIP
            try:
                with connect(wp, 80) as s:
                    assert echo(s, b"from the peer") == b"from the peer"
                counters = wb.call(guard.state)["counters"]
                assert counters[f"bypass {VIP}:80/tcp from the peer"]["packets"] >= 1
                # A client's packets are not redirected: with no VIP here nothing answers.
                before = counters[f"bypass {VIP}:80/tcp from the peer"]["packets"]
                with pytest.raises(OSError):  # dropped: not ours, and no forwarding
                    wc.call(socket.create_connection, (VIP, 80), 1).close()
                after = wb.call(guard.state)["counters"][f"bypass {VIP}:80/tcp from the peer"]
                assert after["packets"] == before
            finally:
                server.close()
