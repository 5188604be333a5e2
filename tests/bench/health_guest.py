"""Detection latency as the issue defines it, INSIDE the kernel lab: from killing a real
server's listener to its weight 0 in the kernel's IPVS table.

Run by tests/bench/health.py through the lab runner; by hand:

    python -m tests.kernel.uml --timeout 300 -- "$PWD/.venv/bin/python" -m tests.bench.health_guest

A real ``lvsagent run`` (one VRRP instance, one DR service, one real server with a TCP
check, interval and connect_timeout INTERVAL and TIMEOUT, retry 0, rise = fall = 1) runs in
a namespace of its own; this process holds the real server's listener in the same
namespace.  Each run waits for weight 1 in the kernel, waits a random phase of the
interval, then either closes the listener (``kill``: the next SYN is refused) or drops
its port with an nft rule (``blackhole``: the SYN is never answered), and polls the
kernel's table over netlink every POLL s until the weight is 0.

Prints ``bench: ...`` lines; asserts nothing about time.  The namespace, with its IPVS
table and nft table, is made here and deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import random
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lvsagent.ipvs.kernel import IpvsKernel
from lvsagent.ipvs.model import DestKey, ServiceKey
from tests.bench.ipvs_guest import Netns, inside, netns, say
from tests.netns.lab import start_agent

INTERVAL = 1.0
TIMEOUT = 1.0
POLL = 0.001  # s between two reads of the kernel's table: the figure's resolution
VIP, REAL, PORT = "10.1.0.1", "10.2.0.1", 8080


def write_config(path: Path) -> Path:
    path.write_text(
        f"""[global]
router_id = "detect"

[[vrrp_instance]]
name = "VI_1"
interface = "veth0"
vrid = 51
priority = 255
advert_int = 1
virtual_addresses = ["192.0.2.100/24"]
garp_master_delay = 0

[[virtual_server]]
address = "{VIP}"
port = 80
protocol = "tcp"
scheduler = "rr"
forwarding = "dr"

[virtual_server.health]
type = "tcp"
interval = {INTERVAL}
retry = 0
alpha = false
[virtual_server.health.tcp]
connect_timeout = {TIMEOUT}

[[virtual_server.real_server]]
address = "{REAL}"
port = {PORT}
weight = 1
"""
    )
    return path


def listener() -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((REAL, PORT))
    s.listen(64)
    return s


async def weight(kernel: IpvsKernel) -> int | None:
    """The real server's weight in the kernel now (None: not there)."""
    table = await kernel.dump()
    key = ServiceKey(0, "tcp", ipaddress.IPv4Address(VIP), 80)
    dest = DestKey(ipaddress.IPv4Address(REAL), PORT)
    for service in table.services:
        if service.key == key:
            return next((d.weight for d in service.dests if d.key == dest), None)
    return None


async def until_weight(kernel: IpvsKernel, want: int, limit: float) -> float:
    """Poll the kernel until the weight is ``want``; the monotonic time it was first seen."""
    deadline = time.monotonic() + limit
    while (await weight(kernel)) != want:
        if time.monotonic() > deadline:
            raise TimeoutError(f"weight of {REAL}:{PORT} not {want} after {limit} s")
        await asyncio.sleep(POLL)
    return time.monotonic()


async def measure(ns: Netns, mode: str, reps: int) -> list[float]:
    latencies = []
    sock = listener()
    async with IpvsKernel() as kernel:
        try:
            for _ in range(reps):
                await until_weight(kernel, 1, 30.0)
                await asyncio.sleep(random.uniform(0, INTERVAL))
                if mode == "kill":
                    sock.close()
                else:
                    ns.run("nft", f"add table inet detect; add chain inet detect input "
                           f"{{ type filter hook input priority 0 ; }}; "
                           f"add rule inet detect input tcp dport {PORT} drop")  # fmt: skip
                start = time.monotonic()
                latencies.append(await until_weight(kernel, 0, 30.0) - start)
                if mode == "kill":
                    sock = listener()
                else:
                    ns.run("nft", "delete table inet detect")
        finally:
            sock.close()
    return latencies


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.health_guest")
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lvsagent-detect-") as tmp, netns("detect") as ns:
        ns.run("ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1")
        for link in ("veth0", "veth1"):
            ns.run("ip", "link", "set", link, "up")
        ns.run("ip", "addr", "add", "192.0.2.1/24", "dev", "veth0")
        ns.run("ip", "addr", "add", f"{REAL}/32", "dev", "lo")
        daemon = start_agent(ns, write_config(Path(tmp) / "detect.toml"), "detect", "info")
        try:
            daemon.wait_for(r"ipvs: start: done", 60.0, after=0)
            with inside(ns):
                for mode in ("kill", "blackhole"):
                    lat = asyncio.run(measure(ns, mode, args.reps))
                    name = "health_detect_latency" + ("" if mode == "kill" else "_blackhole")
                    target = (INTERVAL + TIMEOUT) * 1e3 + 50
                    say(
                        f"bench: {name} {max(lat) * 1e3:.0f} ms interval={INTERVAL} "
                        f"timeout={TIMEOUT} retry=0 fall=1 target={target:.0f}ms "
                        f"median={statistics.median(lat) * 1e3:.0f}ms runs={len(lat)} "
                        f"to=weight 0 in the kernel (lab) poll={POLL * 1e3:.0f}ms"
                    )
        finally:
            code = daemon.stop(timeout=30)
            if code != 0:
                say(f"daemon exit status {code}; last lines:\n" + "\n".join(daemon.lines[-10:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
