"""Smoke tests of the kernel lab, run INSIDE the user-mode Linux guest.

Why: they prove that the lab kernel has what the later kernel tests stand on — IPVS with DR
forwarding, nf_tables NAT redirect, veth, bridges and namespaces carrying real TCP — and pin
the surprising facts of this kernel (each test's docstring says which) on the real code.
On the host (no IPVS) they skip;
run them with

    python -m tests.kernel.uml -- "$PWD/.venv/bin/python" -m pytest tests/kernel/test_lab.py

Every address lives in a namespace made here (192.0.2.0/24 and 198.51.100.0/24, documentation
ranges), inside a guest of our own: no packet leaves it. Waiting is on events (the server's
"Serving HTTP" line), never on sleeps.
"""

from __future__ import annotations

import re
from contextlib import ExitStack
from pathlib import Path

from tests.kernel.labnet import (
    SCHEDULERS,
    Netns,
    bridge,
    http_get,
    http_server,
    namespaces,
    site,
    veth,
)
from tests.kernel.uml import CONFIG_FRAGMENT, lab_only

pytestmark = lab_only(__file__)

def test_running_kernel_has_every_option_of_uml_config() -> None:
    """The guest runs the lab kernel built from uml.config, not some other UML."""
    import gzip

    config = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode()
    have = set(config.splitlines())
    wanted = re.findall(r"^(CONFIG_\w+=y)\s*$", CONFIG_FRAGMENT.read_text(), re.MULTILINE)
    assert wanted
    assert [line for line in wanted if line not in have] == []
    assert "CONFIG_MODULES=y" not in have


def test_ipvs_service_and_dr_dest_with_ipvsadm() -> None:
    with namespaces("lb") as (lb,):
        lb.run("ipvsadm", "-A", "-t", "192.0.2.100:80", "-s", "rr")
        lb.run("ipvsadm", "-a", "-t", "192.0.2.100:80", "-r", "192.0.2.11:80", "-g", "-w", "3")
        listing = lb.run("ipvsadm", "-L", "-n").stdout
        assert re.search(r"^TCP\s+192\.0\.2\.100:80 rr\s*$", listing, re.MULTILINE), listing
        assert re.search(r"->\s+192\.0\.2\.11:80\s+Route\s+3\s", listing), listing


def test_every_scheduler_is_built_in() -> None:
    with namespaces("lb") as (lb,):
        for port, sched in enumerate(SCHEDULERS, start=8000):
            lb.run("ipvsadm", "-A", "-t", f"192.0.2.100:{port}", "-s", sched)
        listing = lb.run("ipvsadm", "-L", "-n").stdout
        assert re.findall(r"^TCP\s+\S+ (\w+)", listing, re.MULTILINE) == list(SCHEDULERS)


def test_ipvs_tables_are_per_namespace() -> None:
    with namespaces("a", "b") as (a, b):
        a.run("ipvsadm", "-A", "-u", "192.0.2.100:53")
        assert "192.0.2.100:53" in a.run("ipvsadm", "-L", "-n").stdout
        assert "192.0.2.100" not in b.run("ipvsadm", "-L", "-n").stdout


def test_dest_add_needs_loopback_up() -> None:
    """Without `ip link set lo up` (no local routing table) `dest add` fails, EINVAL."""
    ns = Netns("nolo", lo_up=False)
    try:
        ns.run("ipvsadm", "-A", "-t", "192.0.2.100:80")
        failed = ns.run(
            "ipvsadm", "-a", "-t", "192.0.2.100:80", "-r", "192.0.2.11:80", "-g", check=False
        )
        assert failed.returncode != 0
        # ipvsadm's wording for EINVAL (libipvs's error table).
        assert "address not unicast" in failed.stderr, failed.stderr
    finally:
        ns.delete()


def test_tcp_across_a_bridge(tmp_path: Path) -> None:
    root = site(tmp_path, "server", "server\n")
    with namespaces("sw", "client", "server") as (sw, client, server):
        bridge(sw, [client, server])
        client.run("ip", "addr", "add", "192.0.2.1/24", "dev", "eth0")
        server.run("ip", "addr", "add", "192.0.2.2/24", "dev", "eth0")
        with http_server(server, "192.0.2.2", 8080, root):
            assert http_get(client, "http://192.0.2.2:8080/who") == "server\n"


def test_nft_redirect_carries_traffic(tmp_path: Path) -> None:
    """inet nat prerouting `tcp dport 80 redirect to :8080`: what the bypass rule stands on."""
    root = site(tmp_path, "lb", "redirected\n")
    with namespaces("client", "lb") as (client, lb):
        veth(client, "eth0", lb, "eth0")
        client.run("ip", "addr", "add", "198.51.100.1/24", "dev", "eth0")
        lb.run("ip", "addr", "add", "198.51.100.2/24", "dev", "eth0")
        lb.run(
            "nft",
            "-f",
            "-",
            stdin=(
                "add table inet x\n"
                "add chain inet x pre { type nat hook prerouting priority -100; }\n"
                "add rule inet x pre tcp dport 80 counter redirect to :8080\n"
            ),
        )
        with http_server(lb, "198.51.100.2", 8080, root):
            assert http_get(client, "http://198.51.100.2:80/who") == "redirected\n"
        rules = lb.run("nft", "list", "chain", "inet", "x", "pre").stdout
        packets = re.search(r"counter packets (\d+)", rules)
        assert packets and int(packets.group(1)) > 0, rules


def test_ipvs_direct_routing_carries_traffic(tmp_path: Path) -> None:
    """LVS-DR end to end: client -> director (VIP, IPVS) -> real server, reply direct."""
    root = site(tmp_path, "rs", "real server\n")
    vip = "192.0.2.100"
    with ExitStack() as stack:
        sw, client, director, real = stack.enter_context(
            namespaces("sw", "client", "director", "real")
        )
        bridge(sw, [client, director, real])
        client.run("ip", "addr", "add", "192.0.2.1/24", "dev", "eth0")
        director.run("ip", "addr", "add", "192.0.2.10/24", "dev", "eth0")
        director.run("ip", "addr", "add", f"{vip}/32", "dev", "eth0")
        # The real server holds the VIP on lo and must not answer ARP for it.
        for key, value in (("arp_ignore", "1"), ("arp_announce", "2")):
            real.sysctl(f"net.ipv4.conf.all.{key}", value)
            real.sysctl(f"net.ipv4.conf.eth0.{key}", value)
        real.run("ip", "addr", "add", "192.0.2.20/24", "dev", "eth0")
        real.run("ip", "addr", "add", f"{vip}/32", "dev", "lo")
        director.run("ipvsadm", "-A", "-t", f"{vip}:80", "-s", "rr")
        director.run("ipvsadm", "-a", "-t", f"{vip}:80", "-r", "192.0.2.20:80", "-g")
        stack.enter_context(http_server(real, vip, 80, root))
        assert http_get(client, f"http://{vip}/who") == "real server\n"
        # The director's connection table proves the request went through IPVS (its --stats
        # counters are folded in every 2 s: not a proof at once).
        table = director.run("ipvsadm", "-L", "-n", "-c").stdout
        assert re.search(rf"192\.0\.2\.1:\d+\s+{re.escape(vip)}:80\s+192\.0\.2\.20:80", table), (
            table
        )
