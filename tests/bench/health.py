"""`make bench` figures for health checking.

``run_health_bench()`` returns these lines:

    bench: health_detect_latency <ms> ms interval=<s> timeout=<s> target=<ms>ms ...
    bench: health_detect_latency_blackhole <ms> ms interval=<s> timeout=<s> target=<ms>ms ...
    bench: health_verdict_latency <ms> ms ...            (the same, to the monitor's verdict)
    bench: health_verdict_latency_blackhole <ms> ms ...
    bench: health_capacity_1s_half_core <n> real servers ...
    bench: health_cpu_per_1000 <pct> % ...
    bench: vrrp_send_lag_p99_under_checks <ms> ms ...
    bench: vrrp_send_lag_p99_under_checks_churn <ms> ms ...  (10 % blackholed, reactions on)

- detection (health_detect_*): the issue's figure, from killing a listener to weight 0
  in the kernel's IPVS table, with a real daemon in the kernel lab
  (tests/bench/health_guest.py).  Killed = its socket closed (the next SYN is refused);
  blackholed = an nft drop rule.  The worst of several runs, each at a random phase of
  the check interval.  Target: interval + timeout + 50 ms.

The rest run on the host, each in a child process inside a namespace of our own
(``python -m tests.bench.health --child ...``), so that its CPU time (getrusage of the
process) is the monitor's alone:

- verdict (health_verdict_*): the same kill and blackhole, measured to the monitor's
  weight-0 verdict, without a daemon or a kernel: what the checking itself costs.
- capacity: N real servers on loopback aliases 127.1.x.y:80 (one wildcard
  listener in another process accepts for all of them), interval 1 s; N
  grows until the monitor needs more than half a core or stops keeping up
  (in both of two tries: the machine's cores are shared), and the figure is
  the largest N whose 20 s run fits as well.
- VRRP lag: in the same process as the checks, a VirtualRouter (VRRPv3,
  0.1 s adverts, as owner so it is master at once) is driven exactly as the
  daemon drives it (a timerfd deadline read on the loop) and sends each
  advert on a raw socket; the lag is when the send is done minus the
  router's deadline.  The churn run adds the daemon's reaction to verdicts
  (its own callback: the changed services rebuilt, a reconciler pass over
  them; IPVS ops taken by a null kernel, the host having none) while 10 %
  of the servers are blackholed for the middle third of the window and then
  let through.

Benchmarks assert nothing about time.  By hand: ``python -m tests.bench.health``
(``--no-lab`` leaves out the kernel-lab figure).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import json
import math
import random
import resource
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lvsagent import memory
from lvsagent.config.schema import Config, HealthCheck, RealServer, TcpCheck, VirtualServer
from lvsagent.daemon.app import Agent
from lvsagent.daemon.clock import DeadlineTimer
from lvsagent.health.monitor import HealthMonitor
from lvsagent.health.verdicts import Verdicts
from lvsagent.ipvs.desired import desired_table
from lvsagent.ipvs.genl import Timeouts
from lvsagent.ipvs.model import Table
from lvsagent.ipvs.reconciler import IpvsReconciler
from lvsagent.vrrp.machine import RouterParams, SendAdvert, VirtualRouter
from lvsagent.vrrp.packet import Advert, encode
from tests.kernel.uml import UmlError, run_in_uml
from tests.netns.lab import Netns, namespaces

STEPS = (1000, 2500, 5000, 6000, 7000, 8000, 10000, 12500, 15000, 20000)
CPU_BUDGET = 50.0  # % of one core
STEP_WINDOW = 5.0  # seconds measured per capacity step
LAG_WINDOW = 20.0  # seconds of the final run: 200 adverts at 0.1 s
CHURN = 0.1  # of the servers blackholed in the churn run's middle third
PER_SERVICE = 250  # real servers per virtual server in the capacity config
DETECT_PORT = 8080
ROOT = Path(__file__).resolve().parents[2]
LOCAL = ipaddress.IPv4Address("127.0.0.1")


def run_health_bench(
    *, reps: int = 5, steps: tuple[int, ...] = STEPS, lab: bool = True
) -> list[str]:
    lines = _kernel_detect_lines(reps) if lab else []
    with namespaces("hbench") as (ns,):
        lines += [_detect_line(ns, mode, reps) for mode in ("kill", "blackhole")]
        lines += _capacity_lines(ns, steps)
    return lines


def _kernel_detect_lines(reps: int) -> list[str]:
    """The issue's figure: kill to weight 0 in the kernel, a real daemon in the lab."""
    cmd = [sys.executable, "-m", "tests.bench.health_guest", "--reps", str(reps)]
    try:
        status, output = run_in_uml(cmd, 300.0, cwd=ROOT, stream=sys.stderr)
    except UmlError as exc:
        return [f"bench-error: health_detect_latency: the lab did not run: {exc}"]
    lines = [line for line in output.splitlines() if line.startswith("bench: ")]
    return lines or [f"bench-error: health_detect_latency: no figure (lab exit {status})"]


def _child(ns: Netns, *args: str) -> dict[str, Any]:
    out = ns.run(sys.executable, "-m", "tests.bench.health", "--child", *args)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _detect_line(ns: Netns, mode: str, reps: int) -> str:
    interval, timeout = 1.0, 1.0
    r = _child(ns, "detect", mode, str(reps), str(interval), str(timeout))
    worst, median = max(r["latencies"]) * 1e3, statistics.median(r["latencies"]) * 1e3
    name = "health_verdict_latency" + ("" if mode == "kill" else "_blackhole")
    target = (interval + timeout) * 1e3 + 50
    return (
        f"bench: {name} {worst:.0f} ms interval={interval} timeout={timeout} retry=0 fall=1 "
        f"target={target:.0f}ms median={median:.0f}ms runs={reps}"
    )


def _capacity_lines(ns: Netns, steps: tuple[int, ...]) -> list[str]:
    """Grow N until half a core is not enough; then one longer run at the largest N that fit."""
    listener = ns.popen(
        [sys.executable, "-m", "tests.bench.health", "--child", "listen"],
        stdout=subprocess.PIPE,
    )
    try:
        assert listener.stdout is not None
        listener.stdout.readline()  # "ready"
        fitted: list[int] = []
        for n in steps:
            if not _tries(ns, n, STEP_WINDOW):
                break
            fitted.append(n)
        # The figure is a size whose long run fits too: a step that only just fitted in its
        # short window may not, and then the one below it is tried.
        best, long = None, {}
        for n in reversed(fitted):
            long = _tries(ns, n, LAG_WINDOW)
            if long:
                best = n
                break
        if best is None:
            return ["bench-error: health capacity: not even the smallest step fits half a core"]
        churn = _child(ns, "capacity", str(best), str(LAG_WINDOW), "churn")
        print(
            f"health capacity {best} ({LAG_WINDOW} s, {CHURN:.0%} blackholed for a third): "
            f"{_summary(churn)}, {churn['transitions']} transitions, "
            f"{churn['ipvs_ops']} IPVS ops planned; {churn['reactions']} reactions "
            f"(longest {churn['reaction_max'] * 1e3:.1f} ms), {churn['passes']} reconciler "
            f"passes (longest {churn['pass_max'] * 1e3:.1f} ms)",
            file=sys.stderr,
        )
    finally:
        listener.terminate()
        listener.wait()
        if listener.stdout is not None:
            listener.stdout.close()
    more = ">=" if best == steps[-1] else ""
    lags = sorted(long["lags"])
    p99 = lags[math.ceil(0.99 * len(lags)) - 1] * 1e3  # nearest rank: a lag that happened
    churned = sorted(churn["lags"])
    p99_churn = churned[math.ceil(0.99 * len(churned)) - 1] * 1e3
    return [
        f"bench: health_capacity_1s_half_core {more}{best} real servers "
        f"cpu={long['cpu_pct']:.1f}% checks_per_s={long['checks_per_s']:.0f} target=5000",
        f"bench: health_cpu_per_1000 {long['cpu_pct'] / (best / 1000):.2f} % servers={best}",
        f"bench: vrrp_send_lag_p99_under_checks {p99:.2f} ms servers={best} "
        f"max={lags[-1] * 1e3:.2f}ms adverts={len(lags)} advert_int=0.1 target=10ms",
        f"bench: vrrp_send_lag_p99_under_checks_churn {p99_churn:.2f} ms servers={best} "
        f"max={churned[-1] * 1e3:.2f}ms adverts={len(churned)} blackholed={CHURN:.0%} "
        f"transitions={churn['transitions']} ipvs_ops={churn['ipvs_ops']} target=10ms",
    ]


def _tries(ns: Netns, n: int, window: float) -> dict[str, Any]:
    """A run of N servers that fits half a core, in one of two tries; {} if neither did.

    Two: this machine shares its cores, and a neighbour's burst during one window (the
    "preempted" count shows it) is not what N servers cost.
    """
    for _ in range(2):
        r = _child(ns, "capacity", str(n), str(window))
        print(f"health capacity {n} ({window:g} s): {_summary(r)}", file=sys.stderr)
        if _fits(r, n):
            return r
    return {}


def _fits(r: dict[str, Any], n: int) -> bool:
    """Half a core was enough: every server checked each second, none failing."""
    return r["cpu_pct"] <= CPU_BUDGET and r["checks_per_s"] >= 0.95 * n and not r["failed"]


def _summary(r: dict[str, Any]) -> str:
    lags = sorted(r["lags"]) or [0.0]
    return (
        f"cpu {r['cpu_pct']:.1f} %, {r['checks_per_s']:.0f} checks/s, {r['failed']} failed, "
        f"advert lag median {statistics.median(lags) * 1e3:.2f} ms max {lags[-1] * 1e3:.2f} ms, "
        f"longest GC pause {r['gc_max'] * 1e3:.1f} ms, preempted {r['preempted']} times"
    )


# ----- children (run inside the namespace) ------------------------------------------


def _listen() -> None:
    """Accept and close, for every 127.x address on port 80, until SIGTERM."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", 80))
    srv.listen(4096)
    srv.setblocking(False)
    print("ready", flush=True)
    ep = select.epoll()
    ep.register(srv.fileno(), select.EPOLLIN)
    while True:
        ep.poll()
        while True:
            try:
                conn, _ = srv.accept()
            except BlockingIOError:
                break
            conn.close()


def _tcp(interval: float, timeout: float, retry: int = 0) -> HealthCheck:
    return HealthCheck(
        type="tcp", interval=interval, retry=retry, delay_before_retry=interval,
        tcp=TcpCheck(connect_timeout=timeout),
    )  # fmt: skip


def _listener(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.2.0.1", port))
    s.listen(1024)
    return s


async def _detect(mode: str, reps: int, interval: float, timeout: float) -> dict[str, Any]:
    rs = RealServer(ipaddress.IPv4Address("127.2.0.1"), DETECT_PORT)
    vs = VirtualServer(
        ipaddress.IPv4Address("10.0.0.1"), 80, health=_tcp(interval, timeout), real_servers=(rs,)
    )
    changed = asyncio.Event()
    monitor = HealthMonitor(Config("bench", virtual_servers=(vs,)), lambda v: changed.set())
    loop = asyncio.get_running_loop()

    async def until(up: bool) -> float:
        while monitor.server_up(rs.address, rs.port) is not up:
            changed.clear()
            await changed.wait()
        return loop.time()

    latencies = []
    sock = _listener(DETECT_PORT)
    task = asyncio.create_task(monitor.run())
    try:
        for _ in range(reps):
            await until(True)
            await asyncio.sleep(random.uniform(0, interval))  # a random phase of the schedule
            if mode == "kill":
                sock.close()
                start = loop.time()
            else:
                await _nft("add table inet hbench; add chain inet hbench input "
                           "{ type filter hook input priority 0 ; }; "
                           f"add rule inet hbench input tcp dport {DETECT_PORT} drop")  # fmt: skip
                start = loop.time()
            latencies.append(await until(False) - start)
            if mode == "kill":
                sock = _listener(DETECT_PORT)
            else:
                await _nft("delete table inet hbench")
    finally:
        task.cancel()
        sock.close()
    return {"latencies": latencies}


async def _nft(script: str) -> None:
    proc = await asyncio.create_subprocess_exec("nft", script)
    if await proc.wait() != 0:
        raise RuntimeError(f"nft {script!r} failed")


def _capacity_config(n: int) -> Config:
    health = _tcp(1.0, 1.0, retry=1)
    services = []
    for first in range(0, n, PER_SERVICE):
        real = tuple(
            RealServer(ipaddress.IPv4Address(f"127.1.{i // 250}.{i % 250 + 1}"), 80)
            for i in range(first, min(n, first + PER_SERVICE))
        )
        vip = ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.200.0.0")) + len(services))
        services.append(VirtualServer(vip, 80, health=health, real_servers=real))
    return Config("bench", virtual_servers=tuple(services))


class _Adverts:
    """A master VirtualRouter driven like the daemon's: timerfd deadline, then on_timer, send."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.router = VirtualRouter(RouterParams(3, 51, 255, 0.1, LOCAL))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
        self.timer = DeadlineTimer()
        self.lags: list[float] = []
        self.recording = False
        self.router.start(loop.time())
        loop.add_reader(self.timer.fileno(), self._due)
        self.timer.arm(self.router.next_deadline())

    def _due(self) -> None:
        self.timer.consume()
        deadline = self.router.next_deadline()
        for action in self.router.on_timer(self.loop.time()):
            if isinstance(action, SendAdvert):
                adv = Advert(3, 51, action.priority, 10, (LOCAL,))
                self.sock.sendto(encode(adv, LOCAL, LOCAL), (str(LOCAL), 0))
                if self.recording and deadline is not None:
                    self.lags.append(self.loop.time() - deadline)
        self.timer.arm(self.router.next_deadline())

    def close(self) -> None:
        self.loop.remove_reader(self.timer.fileno())
        self.timer.close()
        self.sock.close()


class _GcPauses:
    """The longest garbage-collector pause, to tell our own stalls from the machine's."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._start = 0.0
        gc.callbacks.append(self._note)

    def _note(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.longest = max(self.longest, time.perf_counter() - self._start)


class _NullKernel:
    """Takes every IPVS op (the host has no IPVS): the reaction's Python cost, not netlink's."""

    async def dump(self) -> Table:
        return Table()

    async def apply_many(self, ops: Sequence[object]) -> list[bool]:
        return [True] * len(ops)

    async def get_timeouts(self) -> Timeouts:
        return Timeouts(900, 120, 300)

    async def set_timeouts(self, tcp: int, tcp_fin: int, udp: int) -> None:
        return None


async def _capacity(
    n: int, window: float, warmup: float = 2.5, churn: bool = False
) -> dict[str, Any]:
    """N servers checked for ``window`` s; ``churn``: the daemon's reaction path too.

    With churn, each verdict change goes the way the daemon's does (the whole
    desired table rebuilt from the config and the verdicts, then planned by the
    reconciler against its last pass), and CHURN of the servers are blackholed
    for the middle third of the window (down after their retry, then timing out
    every interval) and let through again (back up).
    """
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    loop = asyncio.get_running_loop()
    config = _capacity_config(n)
    reconciler = IpvsReconciler(_NullKernel(), desired_table(config), "report", 3600.0)
    # The daemon's own callback (Agent._verdicts_changed), wired as Agent.serve wires it.
    agent = Agent(config)
    reactions: list[float] = []  # how long each of the daemon's reactions held the loop

    def react(verdicts: Verdicts) -> None:
        started = time.perf_counter()
        agent._verdicts_changed(verdicts)
        reactions.append(time.perf_counter() - started)

    passes: list[float] = []
    reconcile = reconciler.reconcile

    async def timed_pass(why: str, fresh: bool = True) -> bool:
        started = time.perf_counter()
        try:
            return await reconcile(why, fresh)
        finally:
            passes.append(time.perf_counter() - started)

    reconciler.reconcile = timed_pass  # type: ignore[method-assign]
    monitor = HealthMonitor(config, react if churn else lambda v: None)
    agent.health, agent.reconciler = monitor, reconciler
    adverts = _Adverts(loop)
    tasks = [asyncio.create_task(monitor.run()), asyncio.create_task(reconciler.run())]
    blackholed = False
    try:
        await asyncio.sleep(warmup)  # first checks are spread over the first interval
        memory.settle()  # as the daemon does before its VRRP instances start
        monitor.drain_samples()
        reactions.clear()  # the first verdicts (every service at once) are start-up, not churn
        passes.clear()
        adverts.recording = True
        pauses = _GcPauses()
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        checks = failed = 0
        while (elapsed := time.monotonic() - t0) < window:
            await asyncio.sleep(0.25)  # drain before the sample buffer can overflow
            samples = monitor.drain_samples()
            checks += len(samples)
            failed += sum(not s.ok for s in samples)
            if churn and not blackholed and window / 3 <= elapsed < 2 * window / 3:
                await _nft(_blackhole(n))
                blackholed = True
            elif churn and blackholed and elapsed >= 2 * window / 3:
                await _nft("delete table inet hbench")
                blackholed = False
        r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - t0
    finally:
        for task in tasks:
            task.cancel()
        adverts.close()
        if blackholed:
            await _nft("delete table inet hbench")
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {
        "servers": n, "cpu_pct": 100 * cpu / wall, "checks_per_s": checks / wall,
        "failed": failed, "lags": adverts.lags, "concurrency": monitor.concurrency,
        "gc_max": pauses.longest, "preempted": r1.ru_nivcsw - r0.ru_nivcsw,
        "transitions": sum(h.transitions for h in monitor.snapshot()),
        "reactions": len(reactions), "reaction_max": max(reactions, default=0.0),
        "passes": len(passes), "pass_max": max(passes, default=0.0),
        "ipvs_ops": reconciler.ops_applied,
    }  # fmt: skip


def _blackhole(n: int) -> str:
    """An nft table dropping CHURN of the capacity config's servers (whole /24s of them)."""
    nets = max(1, round(n * CHURN / 250))
    daddrs = ", ".join(f"127.1.{i}.0/24" for i in range(nets))
    return (
        "add table inet hbench; add chain inet hbench input "
        "{ type filter hook input priority 0 ; }; "
        f"add rule inet hbench input ip daddr {{ {daddrs} }} tcp dport 80 drop"
    )


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--max-servers", type=int, default=STEPS[-1])
    p.add_argument("--no-lab", action="store_true", help="leave out the kernel-lab figure")
    args = p.parse_args()
    if not args.child:
        for line in run_health_bench(
            reps=args.reps,
            steps=tuple(s for s in STEPS if s <= args.max_servers),
            lab=not args.no_lab,
        ):
            print(line)
        return 0
    kind, *rest = args.child
    if kind == "listen":
        _listen()
        return 0
    if kind == "detect":
        result = asyncio.run(_detect(rest[0], int(rest[1]), float(rest[2]), float(rest[3])))
    else:
        churn = len(rest) > 2 and rest[2] == "churn"
        result = asyncio.run(_capacity(int(rest[0]), float(rest[1]), churn=churn))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
