"""The IPVS reconciler's figures, measured INSIDE the kernel lab (the host has no IPVS).

Run by tests/bench/ipvs.py through the lab runner; by hand:

    python -m tests.kernel.uml --timeout 900 -- "$PWD/.venv/bin/python" -m tests.bench.ipvs_guest

One table of SERVICES x DESTS (DR, rr, weight 1) generated as a real config file, then:

* program: ``IpvsReconciler.reconcile("start")`` with a real ``IpvsKernel`` into an empty
  namespace — exactly the daemon's path (dump, plan, apply_many: hand-encoded requests, a
  window per sendmsg, see lvsagent/ipvs/batch.py) — against ``ipvsadm -R`` of the same table
  into another fresh namespace, same run; then the same with an acknowledgement asked for
  every request, and the pure parts (encoding, the reconciler's table update) timed alone;
* reload: one real server's weight changed in the desired table, one pass planned against
  the last pass, as the daemon does on SIGHUP (no dump);
* drift check: one pass over the unchanged table (dump + plan, no ops);
* rss: a real ``lvsagent run`` with that config, after its first reconcile and again
  STEADY_AFTER s later (the larger of the two).

Prints ``bench: <name> <value> <unit> ...`` lines (the figures) and plain lines (where the
time goes).  Benchmarks assert nothing about time; a phase that fails or runs out of the
time budget prints ``bench-error:`` and the later phases still run if there is time.
Every namespace is made here (10.0.0.0/8 addresses inside the guest only) and deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from lvsagent.config.loader import load_config
from lvsagent.ipvs import batch, codec
from lvsagent.ipvs.desired import desired_table
from lvsagent.ipvs.kernel import IpvsKernel
from lvsagent.ipvs.model import Table
from lvsagent.ipvs.plan import apply_ops, plan
from lvsagent.ipvs.reconciler import IpvsReconciler
from tests.kernel.labnet import Netns
from tests.kernel.setns import enter
from tests.netns.lab import start_agent

SERVICES = 1000
DESTS = 10


def say(line: str) -> None:
    print(line, flush=True)


# ----- namespaces ----------------------------------------------------------------------------


@contextmanager
def netns(role: str) -> Iterator[Netns]:
    ns = Netns(role)
    try:
        yield ns
    finally:
        ns.delete()


@contextmanager
def inside(ns: Netns) -> Iterator[None]:
    """Run this (single-threaded) process's netlink work in ``ns``, as the daemon would.

    Only the main thread moves; threads started meanwhile (asyncio's executor) inherit it.
    """
    home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter(f"/run/netns/{ns.name}")
        try:
            yield
        finally:
            enter(f"/proc/self/fd/{home}")
    finally:
        os.close(home)


# ----- the table -----------------------------------------------------------------------------


def service_address(i: int) -> str:
    return f"10.1.{i // 250}.{i % 250 + 1}"


def dest_address(j: int) -> str:
    return f"10.2.0.{j + 1}"


def write_config(path: Path, services: int, dests: int, resync: float) -> Path:
    """A real config: one VRRP instance (on veth0) and the whole table, DR, rr, weight 1."""
    parts = [
        f"""[global]
router_id = "bench"
ipvs_resync_interval = {resync}

[[vrrp_instance]]
name = "VI_1"
interface = "veth0"
vrid = 51
priority = 255
advert_int = 1
virtual_addresses = ["192.0.2.100/24"]
garp_master_delay = 0
"""
    ]
    for i in range(services):
        parts.append(
            f"""
[[virtual_server]]
address = "{service_address(i)}"
port = 80
protocol = "tcp"
scheduler = "rr"
forwarding = "dr"

[virtual_server.health]
type = "none"
"""
        )
        for j in range(dests):
            parts.append(
                f"""
[[virtual_server.real_server]]
address = "{dest_address(j)}"
port = 80
weight = 1
"""
            )
    path.write_text("".join(parts))
    return path


def ipvsadm_save(table: Table) -> list[str]:
    """The lines ``ipvsadm -Sn`` prints for ``table`` (DR, tcp services, no persistence)."""
    lines = []
    for service in table.services:
        vs = f"{service.key.address}:{service.key.port}"
        lines.append(f"-A -t {vs} -s {service.scheduler}")
        lines.extend(f"-a -t {vs} -r {d.key} -g -w {d.weight}" for d in service.dests)
    return lines


def ipvsadm_rules(table: Table) -> str:
    """The same table as ``ipvsadm -R`` input."""
    lines = []
    for service in table.services:
        vs = f"{service.key.address}:{service.key.port}"
        lines.append(f"-A -t {vs} -s {service.scheduler}")
        for dest in service.dests:
            assert dest.forwarding == "dr"
            lines.append(f"-a -t {vs} -r {dest.key} -g -w {dest.weight}")
    return "\n".join(lines) + "\n"


# ----- the daemon's code path, timed ---------------------------------------------------------


class TimedBatch(batch.BatchSocket):
    """The real batch socket, with the wall time of its windows added up (43 for 1000x10)."""

    windows_s = 0.0

    async def send_window(self, requests: Sequence[batch.Request]) -> list[int]:
        started = time.perf_counter()
        try:
            return await super().send_window(requests)
        finally:
            self.windows_s += time.perf_counter() - started


class DumpTimer(IpvsKernel):
    """The real IpvsKernel, with the wall time of dump() and of the windows added up.

    Only dumps and windows are timed: in UML a clock read is a real system call (~50 µs),
    so timing each of 11 000 ops would add a second to the pass it measures.
    """

    dump_s = 0.0

    def __init__(self, ack_each: bool = False) -> None:
        self.batch = TimedBatch(ack_each=ack_each)
        super().__init__(lambda: self.batch)

    async def dump(self) -> Table:
        started = time.perf_counter()
        try:
            return await super().dump()
        finally:
            self.dump_s += time.perf_counter() - started


@dataclass
class Pass:
    wall_s: float
    cpu_s: float
    ok: bool
    ops: int
    dump_s: float
    windows_s: float

    def where(self, name: str) -> str:
        return (
            f"{name}: {self.wall_s:.3f} s wall ({self.cpu_s:.3f} s CPU in this process, which"
            f" in UML includes the kernel's work), of which dump {self.dump_s:.3f} s, windows"
            f" {self.windows_s:.3f} s; ops applied {self.ops}; ok={self.ok}"
        )


async def timed_pass(rec: IpvsReconciler, kernel: DumpTimer, why: str, fresh: bool = True) -> Pass:
    kernel.dump_s = kernel.batch.windows_s = 0.0
    before = rec.ops_applied
    started, cpu = time.perf_counter(), time.process_time()
    ok = await rec.reconcile(why, fresh)
    return Pass(
        time.perf_counter() - started,
        time.process_time() - cpu,
        ok,
        rec.ops_applied - before,
        kernel.dump_s,
        kernel.batch.windows_s,
    )


def one_weight_changed(table: Table) -> Table:
    """The table with one real server's weight changed (the middle service, 4th dest)."""
    services = list(table.services)
    i = len(services) // 2
    dests = list(services[i].dests)
    j = min(3, len(dests) - 1)
    dests[j] = replace(dests[j], weight=dests[j].weight + 1)
    services[i] = replace(services[i], dests=tuple(dests))
    return Table(tuple(services))


def saved_table(ns: Netns) -> list[str]:
    """``ipvsadm -Sn``, sorted: the independent observer that both tables are the same."""
    return sorted(ns.run("ipvsadm", "-S", "-n").stdout.splitlines())


# ----- phases --------------------------------------------------------------------------------


@dataclass
class Budget:
    deadline: float

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def need(self, seconds: float, what: str) -> None:
        if self.left() < seconds:
            raise TimeoutError(f"{what}: {self.left():.0f} s left of the budget, want {seconds}")


@contextmanager
def ipvs_logging(enabled: bool) -> Iterator[None]:
    """The reconciler's per-op INFO lines on (as in the daemon) or off (to cost them)."""
    logger = logging.getLogger("lvsagent.ipvs")
    old = logger.level
    logger.setLevel(logging.INFO if enabled else logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(old)


After = Callable[[IpvsReconciler, DumpTimer], Awaitable[None]]


def program_once(
    table: Table,
    role: str,
    log_ops: bool,
    title: str,
    after: After | None,
    ack_each: bool = False,
) -> Pass:
    """reconcile('start') of ``table`` into a fresh namespace; ``after`` runs more passes there.

    Also checks the result with ``ipvsadm -Sn`` against ``table`` (lvsagent's own dump is
    not the judge of itself).
    """
    with netns(role) as ns, inside(ns), ipvs_logging(log_ops):

        async def go() -> Pass:
            kernel = DumpTimer(ack_each)
            async with kernel:
                rec = IpvsReconciler(kernel, table, "report", 30.0)
                program = await timed_pass(rec, kernel, "start")
                say(program.where(title))
                if saved_table(ns) != sorted(ipvsadm_save(table)):
                    say(f"bench-error: {role}: ipvsadm -Sn differs from the desired table")
                if after is not None:
                    await after(rec, kernel)
                return program

        return asyncio.run(go())


def phase_reconciler(table: Table, services: int, dests: int, budget: Budget) -> None:
    entries = services * (dests + 1)
    label = f"{services}x{dests}"
    rules = ipvsadm_rules(table)

    budget.need(60, "ipvsadm -R")
    with netns("ipvsadm") as ns:
        started = time.perf_counter()
        ns.run("ipvsadm", "-R", stdin=rules)
        baseline_s = time.perf_counter() - started
        if saved_table(ns) != sorted(ipvsadm_save(table)):
            say("bench-error: ipvsadm -R: ipvsadm -Sn differs from the desired table")
    say(
        f"ipvsadm -R of {entries} entries: {baseline_s:.3f} s "
        f"({entries / baseline_s:.0f} entries/s, includes `ip netns exec`)"
    )

    started = time.perf_counter()
    result = plan(table, Table(), "report")
    plan_s = time.perf_counter() - started
    say(f"plan() of the whole table against an empty dump, alone: {plan_s:.3f} s")
    assert len(result.ops) == entries, len(result.ops)

    # 1. Exactly the daemon's path, each op logged (to /dev/null) as the daemon logs it;
    #    then, on that full table, one reload pass and one drift-check pass.
    budget.need(120, "lvsagent program")

    async def reload_and_drift(rec: IpvsReconciler, kernel: DumpTimer) -> None:
        budget.need(30, "reload pass")
        rec.set_desired(one_weight_changed(table))
        reload = await timed_pass(rec, kernel, "config changed", fresh=False)
        say(reload.where("reload (one weight changed)"))
        say(f"bench: ipvs_reload_one_change_ops {reload.ops} count")
        say(f"bench: ipvs_reload_one_change {reload.wall_s * 1000:.0f} ms")
        budget.need(30, "drift check")
        drift = await timed_pass(rec, kernel, "resync")
        say(drift.where("drift check (unchanged table)"))
        say(f"bench: ipvs_drift_check_{label} {drift.wall_s:.2f} s")
        if drift.ops or not drift.ok:
            say(f"bench-error: drift check applied {drift.ops} ops, ok={drift.ok}")

    title = "program (reconcile 'start' into an empty table, ops logged)"
    program = program_once(table, "lvsagent", True, title, reload_and_drift)

    # 2. The pure parts alone: building every op's request (encoding), and the reconciler's
    #    remembered table after the pass (plan.apply_ops).  Windows (framing, sendmsg, the
    #    kernel's work, replies) were timed in the pass.
    codec.encode_selector.cache_clear()
    started = time.perf_counter()
    for op in result.ops:
        batch.request_for(op)
    encode_s = time.perf_counter() - started
    started = time.perf_counter()
    apply_ops(Table(), result.ops)
    remember_s = time.perf_counter() - started
    own_s = program.wall_s - program.dump_s - program.windows_s
    say(
        f"where the program time goes: dump {program.dump_s:.3f} s; windows of <="
        f" {batch.MAX_WINDOW} requests {program.windows_s:.3f} s"
        f" ({program.windows_s / entries * 1e6:.1f} µs/op: framing, sendmsg, the kernel's work,"
        f" replies); the rest, Python in this process, {own_s:.3f} s, of which (timed alone)"
        f" plan {plan_s:.3f} s, requests {encode_s:.3f} s ({encode_s / entries * 1e6:.1f} µs/op),"
        f" apply_ops {remember_s:.3f} s; ipvsadm -R: {baseline_s / entries * 1e6:.0f} µs/entry"
    )

    # 3. The same with an acknowledgement for every request: one recv each.
    if guarded("program with an ack each", lambda: budget.need(60, "ack-each program")):
        title = "program with an acknowledgement asked for every request"
        acked = program_once(table, "acked", True, title, None, ack_each=True)
        extra = acked.windows_s - program.windows_s
        say(f"an ack per request: windows {extra:+.3f} s ({extra / entries * 1e6:+.1f} µs/op)")
    ratio = program.wall_s / baseline_s
    say(
        f"bench: ipvs_program_{label} {program.wall_s:.2f} s ratio {ratio:.2f} "
        f"vs ipvsadm -R ({baseline_s:.2f} s)"
    )


def _status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


# How long the RSS phase lets the daemon run after its first pass before the second reading.
STEADY_AFTER = 12.0


def phase_rss(config: Path, services: int, dests: int, budget: Budget) -> None:
    entries = services * (dests + 1)
    budget.need(120, "rss daemon")
    with netns("rss") as ns:
        ns.run("ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1")
        ns.run("ip", "link", "set", "veth0", "up")
        ns.run("ip", "link", "set", "veth1", "up")
        ns.run("ip", "addr", "add", "192.0.2.1/24", "dev", "veth0")
        started = time.perf_counter()
        daemon = start_agent(ns, config, "rss", log_level="info")
        proc = daemon.proc
        try:
            daemon.wait_for(r"ipvs: start: applying \d+ change", budget.left(), after=0)
            first = time.perf_counter() - started
            rss_start = _status(proc.pid)["VmRSS"]
            say(
                f"daemon: {first:.2f} s from spawn to 'ipvs: start: applying' "
                f"(interpreter, imports, config load, first dump); VmRSS then {rss_start}"
            )
            daemon.wait_for(r"ipvs: start: done, \d+ change", budget.left(), after=0)
            done = time.perf_counter() - started
            status = _status(proc.pid)
            rss_kb = int(status["VmRSS"].split()[0])
            say(
                f"daemon: {done:.2f} s from spawn to 'ipvs: start: done' ({entries} entries) "
                f"({done - first:.2f} s programming); VmRSS {status['VmRSS']}, "
                f"VmHWM {status['VmHWM']}, VmData {status['VmData']}"
            )
            # Steady state: a few loop-guard checks (an nft readback of every rule each),
            # snapshots and scrapes-worth of work later, RSS must not have crept up.
            time.sleep(STEADY_AFTER)
            steady = _status(proc.pid)
            steady_kb = int(steady["VmRSS"].split()[0])
            say(
                f"daemon: {STEADY_AFTER:.0f} s later VmRSS {steady['VmRSS']}, "
                f"VmHWM {steady['VmHWM']}"
            )
            worst = max(rss_kb, steady_kb)
            say(f"bench: rss_{services}x{dests} {worst / 1024:.1f} MB")
        finally:
            code = daemon.stop(timeout=30)
            if code != 0:
                say(f"daemon exit status {code}; last lines:\n" + "\n".join(daemon.lines[-10:]))


def guarded(name: str, fn: Callable[[], None]) -> bool:
    try:
        fn()
    except Exception:
        say(f"bench-error: {name}: " + traceback.format_exc().strip().replace("\n", "\n  "))
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.ipvs_guest")
    p.add_argument("--services", type=int, default=SERVICES)
    p.add_argument("--dests", type=int, default=DESTS)
    p.add_argument("--budget", type=float, default=780.0, help="seconds for all phases")
    p.add_argument("--skip-rss", action="store_true")
    args = p.parse_args(argv)
    budget = Budget(time.monotonic() + args.budget)
    # The reconciler logs every op at INFO, as in the daemon: format them, write them nowhere.
    logging.basicConfig(
        level=logging.INFO,
        stream=open(os.devnull, "w"),  # noqa: SIM115 - lives as long as the process
        format="%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s",
    )
    logging.getLogger("pyroute2").setLevel(logging.WARNING)

    ok = True
    with tempfile.TemporaryDirectory(prefix="lvsagent-bench-") as tmp:
        started = time.perf_counter()
        config_path = write_config(
            Path(tmp) / "big.toml", args.services, args.dests, resync=86400.0
        )
        say(
            f"config: {config_path.stat().st_size / 1e6:.2f} MB of TOML written in "
            f"{time.perf_counter() - started:.2f} s"
        )
        started = time.perf_counter()
        config = load_config(str(config_path))
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        table = desired_table(config)
        say(
            f"config: load_config {load_s:.2f} s, desired_table {time.perf_counter() - started:.3f}"
            f" s ({len(config.virtual_servers)} virtual servers)"
        )
        say(f"bench: config_load_{args.services}x{args.dests} {load_s:.2f} s")
        del config

        ok &= guarded(
            "reconciler", lambda: phase_reconciler(table, args.services, args.dests, budget)
        )
        if not args.skip_rss:
            ok &= guarded("rss", lambda: phase_rss(config_path, args.services, args.dests, budget))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    say(f"guest bench process: max RSS {usage.ru_maxrss / 1024:.0f} MB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
