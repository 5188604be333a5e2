"""The `make demo` story, told inside the kernel lab (tests/demo.py boots the lab and runs this).

The seed's two-box LVS, built by the lab's harness (tests/kernel/twobox.py): a client, box A
(172.16.0.31) and box B (172.16.0.32) on one bridge, VIP 172.16.0.30:80, each box both IPVS
director (while MASTER) and real server, with a web server answering with its name. Both boxes run
``lvsagent run`` with etc/box-a.toml / etc/box-b.toml as the harness adapts them (interface eth0,
loop_guard "bypass", health checks every second so that the story is quick).

The story: both agents up (who is MASTER, each box's bypass, the master's IPVS table); a new HTTP
connection from the client every 20 ms, counted per box every second; kill -9 of the master's
agent while its web server stays up, the takeover, the killed agent restarted as systemd would,
converging to BACKUP with its bypass; the old master preempting again; a summary from the
harness's analysis helpers. It narrates what it sees and asserts nothing about the agents: what
looks wrong is printed as a problem, listed again at the end, and makes the exit status 1.

    python -m tests.demo_lab [--restart-delay S]      (inside the lab only: it needs IPVS)

All traffic stays inside the namespaces the harness makes in the guest; every process started
here is stopped by PID when the story ends.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from tests.kernel.twobox import (
    ADDRESS,
    CLIENT,
    Adverts,
    Box,
    TwoBox,
    ipvs_ready,
    ipvs_stats,
    twobox_lab,
)
from tests.kernel.twobox_agents import PORT, STATE_LINE, VIP, Agent
from tests.kernel.twobox_traffic import (
    Record,
    Traffic,
    failure_rate,
    failures_end,
    outage,
    spread,
)
from tests.kernel.uml import inside_lab

INTERVAL = 0.02  # a new connection every 20 ms
REQUEST_TIMEOUT = 1.0  # a request caught in a loop fails after this
HEALTH_INTERVAL = 1.0
STEADY = 4.0  # seconds of traffic before the fault
STATE_TIMEOUT = 30.0
GUARD_TIMEOUT = 5.0  # for the bypass to follow a state change
SETTLE = 4.0  # seconds of traffic shown at the end
NFT_TABLE = ("ip", "lvsagent")  # the one table lvsagent owns (lvsagent.netfilter.ruleset)
# The agent's stderr lines: "2024-05-01T12:00:00.123 logger LEVEL message".
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}) (\S+) (\w+) (.*)$")
# What the story echoes of each agent's log: state changes, addresses, the loop guard, health
# changes and anything at WARNING or above.
SHOWN = re.compile(
    r" -> (INIT|BACKUP|MASTER|FAULT)\b|virtual address|loop guard|master is|stopping|stopped"
    r"|real server|health|^RS "
)
# pyroute2 warns at import that the lab kernel has no traffic control (/proc/net/psched):
# a property of the lab's kernel config, nothing lvsagent uses.
LAB_NOISE = re.compile(r"tcmsg|tc subsystem")
START = time.time()
_print_lock = threading.Lock()


def clock(t: float) -> str:
    return f"{t - START:7.3f} s"


def say(text: str, at: float | None = None) -> None:
    """One line of the story, stamped with seconds since the demo started."""
    with _print_lock:
        print(f"[{clock(time.time() if at is None else at)}] {text}", flush=True)


def block(lines: Sequence[str], indent: str = "              ") -> None:
    with _print_lock:
        for line in lines:
            print(f"{indent}{line}", flush=True)


def log_time(stamp: str) -> float:
    """The agent's log time stamp (local time, millisecond) as a wall-clock time."""
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f").timestamp()


@dataclass
class Follower:
    """Echoes one agent's notable log lines as they come, and remembers its VRRP state."""

    label: str  # "A" or "B"
    agent: Agent
    state: str = "INIT"
    seen: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> Follower:
        self.thread = threading.Thread(target=self._run, name=f"follow-{self.label}", daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        lines = self.agent.daemon.lines
        while True:
            done = self.stop.is_set() or self.agent.daemon.proc.poll() is not None
            while self.seen < len(lines):
                self._show(lines[self.seen])
                self.seen += 1
            if done:
                return
            time.sleep(0.02)

    def _show(self, line: str) -> None:
        m = LOG_LINE.match(line)
        if m is None:  # a traceback or other unformatted output: show it all
            say(f"box {self.label} agent | {line}")
            return
        stamp, logger, level, message = m.groups()
        if logger.startswith("pyroute2") and LAB_NOISE.search(message):
            return
        state = re.search(r" -> (INIT|BACKUP|MASTER|FAULT)\b", message)
        if state:
            self.state = state.group(1)
        if level in ("WARNING", "ERROR", "CRITICAL") or SHOWN.search(message):
            tag = "" if level == "INFO" or state else f"{level}: "
            say(f"box {self.label} agent | {tag}{message}", at=log_time(stamp))

    def finish(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(5)


class Ticker:
    """Every second: how the requests that ended in that second ended (box A, box B, failed)."""

    def __init__(self, traffic: Traffic) -> None:
        self.traffic = traffic
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ticker", daemon=True)

    def start(self) -> Ticker:
        self.thread.start()
        return self

    def _run(self) -> None:
        shown = 0
        while not self.stop.wait(1.0):
            records = list(self.traffic.records)
            new, shown = records[shown:], len(records)
            say("client      | " + tally(new))

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(5)


def tally(records: Sequence[Record]) -> str:
    """One line for a set of requests: box A 24  box B 25  failed 1 (timeout 1)."""
    counts = spread(records)
    failed = sum(v for k, v in counts.items() if not k.startswith("box"))
    text = f"box A {counts.get('boxa', 0):3d}  box B {counts.get('boxb', 0):3d}  failed {failed:3d}"
    return text + (f" ({tally_failures(records)})" if failed else "")


def shares(records: Sequence[Record]) -> str:
    counts = spread(records)
    served = counts.get("boxa", 0) + counts.get("boxb", 0)
    if not served:
        return "nothing served"
    return (
        f"box A {counts.get('boxa', 0)} ({100 * counts.get('boxa', 0) / served:.0f} %), "
        f"box B {counts.get('boxb', 0)} ({100 * counts.get('boxb', 0) / served:.0f} %), "
        f"failed {len(records) - served}"
    )


def between(records: Sequence[Record], start: float, end: float | None = None) -> list[Record]:
    return [r for r in records if r.start >= start and (end is None or r.start < end)]


# ----- looking at a box ------------------------------------------------------------------------


def nft_table(box: Box) -> str | None:
    """lvsagent's nft table on the box, or None when there is none."""
    done = box.ns.run("nft", "list", "table", *NFT_TABLE, check=False)
    return done.stdout if done.returncode == 0 else None


def redirect_rules(table: str) -> list[str]:
    """The engaged bypass's redirects; the MASTER's peer-only one (``ether saddr``) is not."""
    return [
        line.strip()
        for line in table.splitlines()
        if re.search(r"\bredirect\b", line) and "ether saddr" not in line
    ]


def bypass_text(box: Box) -> str:
    table = nft_table(box)
    if table is None:
        return f"no nft table {' '.join(NFT_TABLE)}"
    rules = redirect_rules(table)
    if not rules:
        peer = re.search(r"ether saddr (\S+)", table)
        also = f" (what the peer {peer.group(1)} forwards is served here)" if peer else ""
        return f"nft table {' '.join(NFT_TABLE)} present, redirect OFF{also}"
    return f"nft table {' '.join(NFT_TABLE)} present, redirect ON: {rules[0]}"


def bypass_on(box: Box) -> bool:
    table = nft_table(box)
    return table is not None and bool(redirect_rules(table))


def redirected(box: Box) -> int:
    """The packet counter of the bypass redirect rule (one packet per new connection)."""
    table = nft_table(box) or ""
    found = re.search(r"counter packets (\d+) .*\bredirect\b", table)
    return int(found.group(1)) if found else 0


def dest_conns(box: Box) -> dict[str, int]:
    """Connections the box's IPVS service scheduled to each real server, since it was made."""
    prefix = f"TCP {VIP}:{PORT} -> "
    return {
        name[len(prefix) :]: c.conns
        for name, c in ipvs_stats(box).items()
        if name.startswith(prefix)
    }


def ipvs_rows(box: Box) -> list[str]:
    return [line for line in box.ipvs().splitlines() if line.strip()]


def ipvs_brief(box: Box) -> str:
    dests = re.findall(r"->\s+(\S+)\s+Route\s+(\d+)", box.ipvs())
    if f"{VIP}:{PORT}" not in box.ipvs():
        return "no IPVS service"
    return "IPVS " + ", ".join(f"{d} weight {w}" for d, w in dests)


def poll(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> float | None:
    """When ``predicate`` first held (wall clock), or None if not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.time()
        if time.monotonic() > deadline:
            return None
        time.sleep(step)


# ----- the story -------------------------------------------------------------------------------


class Story:
    def __init__(self, lab: TwoBox, restart_delay: float) -> None:
        self.lab = lab
        self.restart_delay = restart_delay
        self.followers: dict[str, Follower] = {}
        self.agents: dict[str, Agent] = {}
        self.problems: list[str] = []
        self.events: dict[str, float] = {}

    # helpers

    def problem(self, text: str) -> None:
        self.problems.append(text)
        say(f"PROBLEM: {text}")

    def start_agent(self, label: str) -> Agent:
        agent = self.lab.start_lvsagent(label, loop_guard="bypass", health_interval=HEALTH_INTERVAL)
        old = self.followers.get(label.upper())
        if old is not None:
            old.finish()
        self.agents[label] = agent
        self.followers[label.upper()] = Follower(label.upper(), agent).start()
        return agent

    def wait_state(self, label: str, state: str, after: int = 0) -> float | None:
        """When box ``label``'s agent logged entering ``state`` (its own time stamp)."""
        agent = self.agents[label]
        pattern = STATE_LINE["lvsagent"].format(state=state)
        try:
            line = agent.daemon.wait_for(pattern, STATE_TIMEOUT, after=after)
        except AssertionError:
            self.problem(f"box {label.upper()}: no '-> {state}' within {STATE_TIMEOUT:g} s")
            return None
        # Let the follower echo the agent's own line first, so the story reads in order.
        follower = self.followers[label.upper()]
        index = agent.daemon.lines.index(line, after)
        poll(lambda: follower.seen > index or follower.stop.is_set(), 1.0, step=0.01)
        m = LOG_LINE.match(line)
        return log_time(m.group(1)) if m else time.time()

    def show_boxes(self, *labels: str) -> None:
        """Each box's VRRP state (from its agent's log), VIP, IPVS service and bypass, read
        from the kernel with ip, ipvsadm and nft."""
        lines = []
        for label in labels:
            box = self.lab.box(label)
            state = self.followers[label.upper()].state
            if self.agents[label].daemon.proc.poll() is not None:
                state = "no agent"
            lines += [
                f"box {label.upper()} ({box.address}): {state:8s}  VIP "
                f"{'yes' if box.has_vip() else 'no '}  {ipvs_brief(box)}",
                f"    bypass: {bypass_text(box)}",
            ]
        block(lines)

    def expect(self, why: str, checks: Sequence[tuple[str, Callable[[], bool]]]) -> None:
        """Wait up to GUARD_TIMEOUT for each check; report each that does not come true."""
        for what, predicate in checks:
            if poll(predicate, GUARD_TIMEOUT) is None:
                self.problem(f"{why}: not within {GUARD_TIMEOUT:g} s: {what}")

    def master_checks(self, label: str) -> list[tuple[str, Callable[[], bool]]]:
        box = self.lab.box(label)
        return [
            (f"box {label.upper()} holds the VIP", box.has_vip),
            (f"box {label.upper()} has no redirect", lambda: not bypass_on(box)),
        ]

    def backup_checks(self, label: str) -> list[tuple[str, Callable[[], bool]]]:
        box = self.lab.box(label)
        return [
            (f"box {label.upper()} has released the VIP", lambda: not box.has_vip()),
            (f"box {label.upper()} has its redirect", lambda: bypass_on(box)),
        ]

    # the steps

    def run(self) -> int:
        lab = self.lab
        say(
            f"the lab is up (user-mode Linux {_kernel()} with IPVS and nf_tables): client "
            f"{CLIENT}, box A {ADDRESS['a']} and box B {ADDRESS['b']} on one bridge, VIP "
            f"{VIP}:{PORT}; each box's web server answers with its name"
        )
        step(
            "1. both agents start: `lvsagent run` with etc/box-a.toml (priority 100) and "
            "etc/box-b.toml (priority 50); VRRPv2 every 1 s, loop_guard bypass, health check "
            f"every {HEALTH_INTERVAL:g} s"
        )
        self.start_agent("a")
        self.start_agent("b")
        if self.wait_state("a", "MASTER") is None or self.wait_state("b", "BACKUP") is None:
            return self.finish([])
        for box in (lab.a, lab.b):
            if poll(lambda box=box: ipvs_ready(box), STATE_TIMEOUT) is None:
                self.problem(f"box {box.label.upper()}: no IPVS service with both real servers")
        self.expect("after the election", self.master_checks("a") + self.backup_checks("b"))
        say("both agents up:")
        self.show_boxes("a", "b")
        say("IPVS table on the master, box A (`ipvsadm -Ln`):")
        block(ipvs_rows(lab.a))

        step(
            f"2. traffic: the client opens a new HTTP connection to {VIP}:{PORT} every "
            f"{INTERVAL * 1000:.0f} ms (each 'client' line: how the requests that ended in the "
            "last second ended)"
        )
        traffic = lab.traffic(interval=INTERVAL, timeout=REQUEST_TIMEOUT)
        watch = Adverts(lab.b)
        traffic.start()
        ticker = Ticker(traffic).start()
        try:
            self.traffic_story(traffic, watch)
        finally:
            ticker.finish()
            records = traffic.stop()
            watch.close()
        return self.finish(records)

    def traffic_story(self, traffic: Traffic, watch: Adverts) -> None:
        lab = self.lab
        began = time.time()
        time.sleep(STEADY)
        say(f"{STEADY:g} s of traffic: {shares(between(traffic.records, began))}")
        master = ipvs_stats(lab.a).get(f"TCP {VIP}:{PORT}")
        rebalanced = sum(c.inpkts for name, c in ipvs_stats(lab.b).items() if "->" not in name)
        if master is not None:
            say(
                f"IPVS counters: box A's service scheduled {master.conns} connections; box B's "
                f"(the backup's) took in {rebalanced} packets (nothing re-balanced: 0)"
            )
        if rebalanced:
            self.problem(f"the backup's IPVS service took in {rebalanced} packets (a loop)")

        # 3. kill -9 of the master's agent right after box B heard its advert: box B then waits
        # out its whole Master_Down_Interval, as after a crash at the worst moment.
        a_old = self.agents["a"]
        mark_b = self.agents["b"].mark()
        watch.next_from(lab.a.address, 10.0)
        kill_at = a_old.kill9()
        self.events["kill"] = kill_at
        step(
            f"3. kill -9 of box A's agent (pid {a_old.pid}), right after its last advert; box A's "
            "web server stays up",
            at=kill_at,
        )
        a_old.daemon.exited(10)
        self.followers["A"].finish()
        say("what the killed agent left behind on box A:")
        self.show_boxes("a")
        took_over = self.wait_state("b", "MASTER", after=mark_b)
        if took_over is None:
            return
        self.events["takeover"] = took_over
        say(f"=> box B took over {took_over - kill_at:.3f} s after the kill", at=took_over)
        self.expect("after the takeover", self.master_checks("b"))
        time.sleep(self.restart_delay)
        say(
            f"{self.restart_delay:g} s since the takeover, no agent on box A: "
            + shares(between(traffic.records, took_over))
        )
        self.show_boxes("a", "b")

        say(
            "box A's agent is restarted, as systemd's Restart=on-failure does (systemd waits "
            "RestartSec=1 s after the kill; the demo waited for the takeover and "
            f"{self.restart_delay:g} s more, to show the state in between)"
        )
        restart_at = time.time()
        self.events["restart"] = restart_at
        mark_b = self.agents["b"].mark()
        self.start_agent("a")
        backup_at = self.wait_state("a", "BACKUP")
        if backup_at is not None:
            self.events["a_backup"] = backup_at
            say(
                f"=> box A is BACKUP {backup_at - restart_at:.3f} s after the restart",
                at=backup_at,
            )
            guarded = poll(
                lambda: bypass_on(lab.a) and not lab.a.has_vip(), GUARD_TIMEOUT, step=0.01
            )
            if guarded is None:
                self.problem(
                    "restarted box A: bypass on and stale VIP gone, not within "
                    f"{GUARD_TIMEOUT:g} s of its BACKUP"
                )
            else:
                say("=> box A's kernel: bypass on, stale VIP gone", at=guarded)
            self.show_boxes("a")

        # 4. the old master preempts: box A has the higher priority.
        preempt_at = self.wait_state("a", "MASTER")
        if preempt_at is None:
            return
        self.events["preempt"] = preempt_at
        step(
            f"4. the old master is back: box A preempts box B, {preempt_at - restart_at:.3f} s "
            "after its restart",
            at=preempt_at,
        )
        self.wait_state("b", "BACKUP", after=mark_b)
        self.expect("after the preemption", self.master_checks("a") + self.backup_checks("b"))
        masters = [
            label.upper() for label in "ab" if self.followers[label.upper()].state == "MASTER"
        ]
        say(f"=> masters now: {', '.join(masters) or 'none'}")
        if masters != ["A"]:
            self.problem(f"after the preemption the masters are {masters or 'none'}, not [A]")
        self.show_boxes("a", "b")
        before = (dest_conns(lab.a), redirected(lab.b))
        time.sleep(SETTLE)
        say(f"the last {SETTLE:g} s: {shares(between(traffic.records, time.time() - SETTLE))}")
        after = (dest_conns(lab.a), redirected(lab.b))
        scheduled = {d: n - before[0].get(d, 0) for d, n in after[0].items()}
        say(
            "in about the same time box A's IPVS scheduled "
            + ", ".join(f"{n} to {d}" for d, n in sorted(scheduled.items()))
            + f"; box B's bypass redirected {after[1] - before[1]} connections "
            "(IPVS counters lag up to 2 s)"
        )

    def finish(self, records: list[Record]) -> int:
        for follower in self.followers.values():
            follower.finish()
        if records:
            self.summary(records)
        if self.problems:
            print("\nproblems seen:", flush=True)
            for p in self.problems:
                print(f"  - {p}", flush=True)
            return 1
        return 0

    def summary(self, records: list[Record]) -> None:
        ev = self.events
        counts = spread(records)
        if "kill" not in ev:
            block(["", f"summary (the story stopped before the kill): {shares(records)}"], "")
            return
        kill_at = ev["kill"]
        failed_total = sum(v for k, v in counts.items() if not k.startswith("box"))
        rows = [
            "",
            "summary",
            f"  requests:                   {len(records)}, one every {INTERVAL * 1000:.0f} ms",
            f"  served by box A:            {counts.get('boxa', 0)}",
            f"  served by box B:            {counts.get('boxb', 0)}",
            f"  failed:                     {failed_total}"
            + (f" ({tally_failures(records)})" if failed_total else ""),
            f"  before the kill:            {shares(between(records, 0, kill_at))}",
        ]
        horizon = ev.get("restart", kill_at + 30.0) - kill_at
        gap = outage(records, kill_at, horizon=horizon)
        rows.append(
            "  outage after kill -9:       "
            + ("nothing served afterwards" if gap is None else f"{gap * 1000:.0f} ms")
            + " (longest time with no successful answer, from the kill to the restart)"
        )
        if "takeover" in ev:
            rows.append(
                f"  box B MASTER:               +{ev['takeover'] - kill_at:.3f} s after the kill"
            )
        failed = [r for r in records if r.start >= kill_at - REQUEST_TIMEOUT and not r.ok]
        if failed and "takeover" in ev and failed[0].start >= ev["takeover"] - INTERVAL:
            rows.append(
                "                              (no request failed before the takeover: box A's "
                "kernel kept the VIP and the IPVS table the killed agent left, and served)"
            )
        if failed:
            first, last = failed[0], failed[-1]
            rows.append(
                f"  first failed request:       started {first.start - kill_at:+.3f} s from "
                f"the kill ({first.outcome})"
            )
            rows.append(
                f"  last failed request:        started {last.start - kill_at:+.3f} s from "
                f"the kill ({last.outcome})"
            )
        if "takeover" in ev and "restart" in ev:
            rows.append(
                "  takeover -> restart:        "
                f"{failure_rate(records, ev['takeover'], ev['restart']) * 100:.1f} % failed "
                f"(no agent on box A: {tally(between(records, ev['takeover'], ev['restart']))})"
            )
        if "restart" in ev and "a_backup" in ev:
            rows.append(
                "  restart -> A BACKUP:        "
                f"{failure_rate(records, ev['restart'], ev['a_backup']) * 100:.1f} % failed "
                f"({ev['a_backup'] - ev['restart']:.3f} s for the agent to start)"
            )
            rows.append(
                "  A BACKUP -> end:            "
                f"{failure_rate(records, ev['a_backup']) * 100:.1f} % failed "
                f"({tally(between(records, ev['a_backup']))})"
            )
        if "preempt" in ev:
            gap = outage(records, ev["preempt"])
            rows.append(
                "  outage at the preemption:   "
                + ("nothing served afterwards" if gap is None else f"{gap * 1000:.0f} ms")
            )
        end = failures_end(records, kill_at)
        rows.append(
            "  failures ended:             "
            + (
                "never (still failing at the end)"
                if end is None
                else f"+{end:.3f} s after the kill"
                + (
                    f", {end + kill_at - ev['a_backup']:+.3f} s from box A's BACKUP"
                    if "a_backup" in ev and end
                    else ""
                )
            )
        )
        block(rows, indent="")
        if end is None:
            self.problem("requests were still failing at the end of the demo")


def step(text: str, at: float | None = None) -> None:
    """A numbered step of the story: set apart by a blank line."""
    with _print_lock:
        print(flush=True)
    say(f"== {text}", at=at)


def tally_failures(records: Sequence[Record]) -> str:
    failed = {k: v for k, v in spread(records).items() if not k.startswith("box")}
    return ", ".join(f"{k} {v}" for k, v in sorted(failed.items()))


def _kernel() -> str:
    return Path("/proc/sys/kernel/osrelease").read_text().strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.demo_lab")
    parser.add_argument(
        "--restart-delay",
        type=float,
        default=2.0,
        help="seconds from the takeover to the restart of box A's agent (default 2)",
    )
    args = parser.parse_args(argv)
    if not inside_lab():
        print("tests.demo_lab runs inside the kernel lab: use `make demo`", file=sys.stderr)
        return 2
    try:
        with (
            tempfile.TemporaryDirectory(prefix="lvsagent-demo-") as tmp,
            twobox_lab(Path(tmp)) as lab,
        ):
            return Story(lab, args.restart_delay).run()
    except (AssertionError, OSError, subprocess.SubprocessError) as exc:
        # The lab or an agent did not do what the story needs: say what, without a traceback.
        print(f"\ndemo: FAILED: {exc}", flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
