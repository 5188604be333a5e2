"""The IPVS adapter's lab helpers: a loop in a namespace, ipvsadm's view, model shortcuts.

Shared by the adapter's kernel tests (test_ipvs_kernel.py, test_ipvs_batch.py), run INSIDE
the user-mode Linux guest: ipvsadm reads the kernel independently of pyroute2 and of us.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Coroutine
from typing import Any, TypeVar

from lvsagent.ipvs.model import Dest, DestKey, Service, ServiceKey, Table
from tests.kernel.labnet import Netns
from tests.kernel.setns import run_in

T = TypeVar("T")
A = ipaddress.IPv4Address
VIP = "192.0.2.100"
TCP = 6


def arun(coro: Coroutine[Any, Any, T], ns: Netns) -> T:
    """Run ``coro`` on a fresh loop in a thread that has entered ``ns``.

    Every socket keeps the namespace it was created in, so the adapter needs no
    namespace support of its own.  (pyroute2's own ``netns=`` forks a helper process to
    create its socket, which hung about one run in two under pytest's output capture.)
    """
    return run_in(f"/run/netns/{ns.name}", lambda: asyncio.run(coro))


def saved(ns: Netns) -> list[str]:
    """``ipvsadm -Sn``: the table as ipvsadm would restore it (independent of pyroute2)."""
    return ns.run("ipvsadm", "-S", "-n").stdout.splitlines()


def thresholds(ns: Netns, port: int) -> list[tuple[str, int, int]]:
    """(dest, upper, lower) of TCP VIP:port from ``ipvsadm -Ln --thresholds``."""
    listing = ns.run("ipvsadm", "-L", "-n", "--thresholds", "-t", f"{VIP}:{port}").stdout
    rows = re.findall(r"->\s+(\S+)\s+(\d+)\s+(\d+)", listing)
    return [(d, int(u), int(lo)) for d, u, lo in rows]


def tcp(port: int, address: str = VIP) -> ServiceKey:
    return ServiceKey(protocol="tcp", address=A(address), port=port)


def dest(address: str, port: int = 80, **fields: Any) -> Dest:
    return Dest(DestKey(A(address), port), **fields)


def sample_table() -> Table:
    """Every scheduler, flag, protocol, forwarding method and threshold the model can say."""
    services = [
        Service(tcp(80), "rr", dests=(dest("192.0.2.11"), dest("192.0.2.12", weight=3))),
        Service(tcp(81), "wrr", dests=(dest("192.0.2.11", 8080, forwarding="nat", weight=5),)),
        Service(tcp(82), "lc", dests=(dest("192.0.2.13", forwarding="tun", weight=0),)),
        Service(tcp(83), "wlc", dests=(dest("192.0.2.11", u_threshold=100, l_threshold=50),)),
        Service(tcp(84), "sh", frozenset({"sh-port"}), dests=(dest("192.0.2.11"),)),
        Service(tcp(85), "mh", frozenset({"mh-fallback", "mh-port"}), dests=(dest("192.0.2.12"),)),
        Service(
            ServiceKey(protocol="udp", address=A(VIP), port=53),
            "rr",
            dests=(dest("192.0.2.11", 53),),
        ),
        Service(
            ServiceKey(fwmark=7),
            "wlc",
            dests=(dest("192.0.2.11", 0), dest("192.0.2.12", 0, weight=2)),
        ),
        Service(tcp(443), "rr", persistence_timeout=600, persistence_netmask=A("255.255.255.0")),
        Service(ServiceKey(fwmark=8), "rr", persistence_timeout=30, dests=(dest("192.0.2.14", 0),)),
    ]
    return Table(tuple(sorted((s for s in services), key=lambda s: s.key)))
