"""A transition's action list, timed in every loop-guard mode: the guard must not hold it.

One VRRP instance's runner in a namespace of its own (a veth pair inside it), with
the real nft table of each mode written by libnftables; the IPVS sync daemons are
a stand-in and backup_only's sysctl is not written (the host kernel has no IPVS; that
write is one /proc file), the daemons answering at once or never (a lost
netlink ack: the kernel adapter waits DAEMON_REPLY_TIMEOUT, 2 s, before it reads
the daemons back).  Each round carries out the two lists the state machine emits
for a takeover (BACKUP -> MASTER: add the VIP, advert, gratuitous ARP, release
the guard) and for a step back (MASTER -> BACKUP: engage, remove the VIP),
and times each ``InstanceRunner.execute``; the loop idles 2 ms between lists, so the
sync daemons' task runs (and, with a lost ack, hangs) while later lists execute.

    bench: guard_transition_p99_<mode> <ms> ms (goal < 20 ms; N lists, max <ms>)
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

from lvsagent.config.loader import parse_config
from lvsagent.daemon.instance import InstanceRunner
from lvsagent.guard.driver import GuardSurfaces, LoopGuard, kernel_surfaces
from lvsagent.ipvs.kernel import DAEMON_REPLY_TIMEOUT
from lvsagent.netlink.pyroute import AsyncIPRoute
from lvsagent.vrrp import addresses
from lvsagent.vrrp.machine import (
    Action,
    AddAddresses,
    RemoveAddresses,
    SendAdvert,
    SendGratuitousArp,
    SetLoopGuard,
    State,
    Transition,
)
from tests.netns.lab import in_namespace, namespaces

ROUNDS = 100
GOAL_MS = 20.0
CONFIG = """
[global]
loop_guard = "{mode}"
peer_mac = "02:00:00:00:00:0b"
state_dir = "{state_dir}"
[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
vrid = 51
priority = 100
virtual_addresses = ["10.98.0.100/24"]
[[virtual_server]]
address = "10.98.0.100"
port = 80
{fwmark}
[[virtual_server.real_server]]
address = "10.98.0.1"
port = 80
[[virtual_server.real_server]]
address = "10.98.0.2"
port = 80
"""
# In the order vrrp/machine.py emits them (_to_master, _to_backup).
TAKEOVER: list[Action] = [
    Transition(State.BACKUP, State.MASTER, "bench"),
    AddAddresses(),
    SendAdvert(100),
    SendGratuitousArp(1),
    SetLoopGuard(False),
]
STEP_BACK: list[Action] = [
    Transition(State.MASTER, State.BACKUP, "bench"),
    SetLoopGuard(True),
    RemoveAddresses(),
]


class StandInDaemons:
    """IPVS sync daemons that answer at once, or lose every stop's answer."""

    def __init__(self, lost_ack: bool) -> None:
        self.lost_ack = lost_ack
        self.switches = 0

    async def stop_sync_daemon(self, state: str) -> bool:
        if self.lost_ack:
            await asyncio.sleep(DAEMON_REPLY_TIMEOUT)
        return True

    async def start_sync_daemon(self, state: str, ifname: str, syncid: int) -> bool:
        self.switches += 1
        return True

    def close(self) -> None:
        pass


def _no_ipvs_sysctls(desired: object, saved: str) -> None:
    """backup_only's sysctl exists only with IPVS, which the host kernel lacks: not written."""


async def _time_lists(mode: str, lost_ack: bool, state_dir: Path) -> tuple[list[float], int]:
    config = parse_config(CONFIG.format(
        mode=mode, state_dir=state_dir, fwmark="fwmark = 3" if mode == "fwmark" else ""
    ), "bench.toml")
    inst = config.vrrp_instances[0]
    daemons = StandInDaemons(lost_ack)
    real = kernel_surfaces()
    surfaces = GuardSurfaces(real.nft, real.untracked, lambda: daemons, sysctls=_no_ipvs_sysctls)
    guard = LoopGuard(config, inst, surfaces)
    times: list[float] = []
    async with AsyncIPRoute() as ipr:
        link = await addresses.read_link(ipr, "eth0")
        runner = InstanceRunner(inst, link, ipr, guard.hook(inst.name))
        try:
            await guard.set(True, "bench start")
            await guard.sync.settle()
            for _ in range(ROUNDS):
                for actions in (TAKEOVER, STEP_BACK):
                    start = time.perf_counter()
                    await runner.execute(actions)
                    times.append((time.perf_counter() - start) * 1000)
                    await asyncio.sleep(0.002)  # the loop idles between transitions, as live
            await guard.sync.settle()
        finally:
            runner.close()
            guard.nft.remove()
            guard.untracked.remove()
            guard.sync.close()
    return times, daemons.switches


def run_guardstep_bench(tmp: Path) -> list[str]:
    lines = []
    cases = [("bypass", False), ("fwmark", False), ("backup_only", False), ("backup_only", True)]
    with namespaces("g") as (ns,):
        ns.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
        for ifname in ("eth0", "eth1"):
            ns.run("ip", "link", "set", ifname, "up")
        ns.run("ip", "addr", "add", "10.98.0.1/24", "dev", "eth0")
        for mode, lost in cases:
            state_dir = tmp / f"guardstep-{mode}-{lost}"
            state_dir.mkdir(mode=0o700)
            times, switches = in_namespace(
                ns, lambda m=mode, lo=lost, d=state_dir: asyncio.run(_time_lists(m, lo, d))
            )
            name = f"{mode}_lost_sync_ack" if lost else mode
            p99 = statistics.quantiles(times, n=100)[98]
            lines.append(
                f"bench: guard_transition_p99_{name} {p99:.2f} ms (goal < {GOAL_MS:.0f} ms; "
                f"{len(times)} lists, median {statistics.median(times):.2f} ms, "
                f"max {max(times):.2f} ms, sync switches {switches})"
            )
    return lines


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print("\n".join(run_guardstep_bench(Path(tmp))))
