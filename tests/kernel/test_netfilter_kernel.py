"""The loop guard against the real IPVS, INSIDE the kernel lab (the host has no IPVS).

Why: on the host the guard's rules can only be shown to match and redirect; here they are
shown to keep a packet away from IPVS, which is the whole point.  A box namespace holds an
IPVS service on the VIP (the VIP on lo, as a two-box backup or a DR real server has it) that
sends everything to another namespace's real server: a reply from that real server means
IPVS balanced the request, a reply from the box's own server means the guard kept it local.
The connection table (``ipvsadm -L -n -c``, immediate, unlike the 2 s stats) is the
independent witness.

    python -m tests.kernel.uml --timeout 600 -- "$PWD/.venv/bin/python" -m pytest \
        -q tests/kernel/test_netfilter_kernel.py

Addresses: 192.0.2.0/24 on one bridge, VIP 192.0.2.100, inside namespaces made here.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from lvsagent.netfilter.loopback import reconcile_lo_vips
from lvsagent.netfilter.nft import NftGuard
from lvsagent.netfilter.spec import GuardedService, GuardSpec, desired_sysctls
from lvsagent.netfilter.sysctl import apply_sysctls, read_sysctl, restore_sysctls
from tests.kernel.labnet import Netns, bridge, http_get, http_server, namespaces, site
from tests.kernel.setns import enter
from tests.kernel.uml import lab_only

pytestmark = [
    lab_only(__file__),
    pytest.mark.timeout(120),
]

T = TypeVar("T")
VIP = "192.0.2.100"
WEB = GuardedService("tcp", ipaddress.IPv4Address(VIP), 80, 3)


def call_in(ns: Netns, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` in a thread that entered ``ns``; libnftables binds to it at creation."""
    with ThreadPoolExecutor(1, initializer=enter, initargs=(f"/run/netns/{ns.name}",)) as pool:
        return pool.submit(fn, *args).result()


@dataclass
class Lab:
    client: Netns
    peer: Netns  # the other director: its MAC is the one fwmark mode leaves unmarked
    box: Netns  # the director under test, with IPVS and the guard
    real: Netns  # where the box's IPVS sends everything


def hide_vip_on_lo(ns: Netns) -> None:
    """A DR real server: VIP on lo, no ARP for it on eth0."""
    for key, value in desired_sysctls("fwmark", ["eth0"]).items():
        ns.sysctl(key, value)
    ns.run("ip", "addr", "add", f"{VIP}/32", "dev", "lo")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with ExitStack() as stack:
        sw, client, peer, box, real = stack.enter_context(
            namespaces("sw", "client", "peer", "box", "real")
        )
        bridge(sw, [client, peer, box, real])
        for ns, last in ((client, 1), (peer, 31), (box, 32), (real, 33)):
            ns.run("ip", "addr", "add", f"192.0.2.{last}/24", "dev", "eth0")
        for sender in (client, peer):  # as the master forwards: VIP to the box's MAC
            sender.run("ip", "route", "add", f"{VIP}/32", "via", "192.0.2.32")
        hide_vip_on_lo(real)
        stack.enter_context(http_server(real, "0.0.0.0", 80, site(tmp_path, "real", "real\n")))
        stack.enter_context(http_server(box, "0.0.0.0", 80, site(tmp_path, "box", "box\n")))
        yield Lab(client, peer, box, real)


def ipvs_connections(ns: Netns) -> list[str]:
    out = ns.run("ipvsadm", "-L", "-n", "-c").stdout
    return [line for line in out.splitlines() if re.search(rf"{re.escape(VIP)}:80", line)]


def test_bypass_keeps_the_backup_from_balancing(lab: Lab) -> None:
    box = lab.box
    hide_vip_on_lo(box)
    box.run("ipvsadm", "-A", "-t", f"{VIP}:80", "-s", "rr")
    box.run("ipvsadm", "-a", "-t", f"{VIP}:80", "-r", "192.0.2.33:80", "-g")
    guard = call_in(box, NftGuard, GuardSpec("bypass", (WEB,)))
    assert call_in(box, guard.apply, True) is True  # BACKUP
    for _ in range(3):
        assert http_get(lab.client, f"http://{VIP}/who") == "box\n"
    assert ipvs_connections(box) == []
    counters = call_in(box, guard.state)["counters"]
    assert counters[f"bypass {VIP}:80/tcp"]["packets"] >= 3
    # The control: MASTER, no bypass, and IPVS balances to the real server.
    assert call_in(box, guard.apply, False) is True
    assert http_get(lab.client, f"http://{VIP}/who") == "real\n"
    assert len(ipvs_connections(box)) == 1


def test_fwmark_balances_clients_and_serves_the_peer_locally(lab: Lab) -> None:
    """The seed's first scheme: an fwmark service sees only what the peer did not send."""
    box = lab.box
    for key, value in desired_sysctls("fwmark", ["eth0"]).items():
        box.sysctl(key, value)
    assert call_in(box, reconcile_lo_vips, [WEB.vip]) is True
    box.run("ipvsadm", "-A", "-f", "3", "-s", "rr")
    box.run("ipvsadm", "-a", "-f", "3", "-r", "192.0.2.33:80", "-g")
    peer_mac = json.loads(lab.peer.run("ip", "-j", "link", "show", "eth0").stdout)[0]["address"]
    guard = call_in(box, NftGuard, GuardSpec("fwmark", (WEB,), (peer_mac,)))
    assert call_in(box, guard.apply, False) is True
    assert http_get(lab.peer, f"http://{VIP}/who") == "box\n"
    assert ipvs_connections(box) == []
    assert http_get(lab.client, f"http://{VIP}/who") == "real\n"
    assert len(ipvs_connections(box)) == 1


def test_backup_only_sysctl_round_trip_where_ipvs_exists(tmp_path: Path, lab: Lab) -> None:
    saved = tmp_path / "saved.json"
    desired = desired_sysctls("backup_only", ["eth0"])
    root = Path("/proc/sys")
    before = call_in(lab.box, read_sysctl, "net.ipv4.vs.backup_only", root)
    assert before == "0"
    changes = call_in(lab.box, apply_sysctls, desired, saved)
    assert "net.ipv4.vs.backup_only" in {c.key for c in changes}
    assert lab.box.run("sysctl", "-n", "net.ipv4.vs.backup_only").stdout.strip() == "1"
    assert lab.client.run("sysctl", "-n", "net.ipv4.vs.backup_only").stdout.strip() == "0"
    call_in(lab.box, restore_sysctls, saved)
    assert lab.box.run("sysctl", "-n", "net.ipv4.vs.backup_only").stdout.strip() == "0"
