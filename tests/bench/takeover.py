"""Takeover time after kill -9 and after SIGTERM: lvsagent against keepalived, same run.

A pair of daemons of one kind (master priority 100, backup priority 50) on a
veth pair in two namespaces.  The clock starts when the master is stopped and
stops when the VIP appears on the backup's interface (seen through `ip monitor`,
the same way for both kinds).  For kill -9 the master is killed right after
the backup's side of the wire has seen one of its adverts, so that every run
measures the whole Master_Down_Interval instead of a random part of it.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.netns.lab import (
    Daemon,
    Netns,
    agent_config,
    keepalived_config,
    namespaces,
    start_agent,
    start_keepalived,
    veth,
)

VIP = "10.99.0.100"


@dataclass(frozen=True)
class Kind:
    name: str
    start: Callable[[Netns, Path, str, int, int, float], Daemon]
    master_line: str
    backup_line: str


def _agent(ns: Netns, tmp: Path, name: str, prio: int, version: int, interval: float) -> Daemon:
    cfg = agent_config(
        tmp / f"{name}.toml", interface="eth0", priority=prio, version=version, advert_int=interval
    )
    return start_agent(ns, cfg, name)


def _keepalived(
    ns: Netns, tmp: Path, name: str, prio: int, version: int, interval: float
) -> Daemon:
    cfg = keepalived_config(
        tmp / f"{name}.conf", interface="eth0", priority=prio, version=version, advert_int=interval
    )
    return start_keepalived(ns, cfg, tmp, name)


LVSAGENT = Kind("lvsagent", _agent, r"-> MASTER", r"INIT -> BACKUP")
KEEPALIVED = Kind("keepalived", _keepalived, r"Entering MASTER STATE", r"Entering BACKUP STATE")


class _Watch:
    """A line-buffered subprocess in a namespace whose stdout lines are timestamped on arrival."""

    def __init__(self, ns: Netns, args: list[str]) -> None:
        self.proc = ns.popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=1)
        self.lines: list[tuple[float, str]] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append((time.monotonic(), line))
                self.cond.notify_all()

    def wait(self, pred: Callable[[str], bool], after: int, timeout: float) -> tuple[float, int]:
        deadline = time.monotonic() + timeout
        with self.cond:
            i = after
            while True:
                while i < len(self.lines):
                    if pred(self.lines[i][1]):
                        return self.lines[i][0], i
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no matching line")
                self.cond.wait(left)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.thread.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def takeover_once(kind: Kind, version: int, interval: float, how: str, tmp: Path) -> float:
    """One takeover, in seconds."""
    with namespaces("a", "b") as (a, b):
        veth(a, "eth0", "10.99.0.1/24", b, "eth0", "10.99.0.2/24")
        master = kind.start(a, tmp, f"{kind.name}-a", 100, version, interval)
        backup = kind.start(b, tmp, f"{kind.name}-b", 50, version, interval)
        adverts = _Watch(
            b,
            [
                "tcpdump",
                "--immediate-mode",
                "-l",
                "-n",
                "-i",
                "eth0",
                "ip proto 112 and src 10.99.0.1",
            ],
        )
        addrs = _Watch(b, ["ip", "-4", "monitor", "address"])
        try:
            master.wait_for(kind.master_line, 15)
            backup.wait_for(kind.backup_line, 15)
            # Two adverts seen by the backup: the master is settled.
            _, i = adverts.wait(lambda s: "VRRP" in s, 0, 10)
            _, i = adverts.wait(lambda s: "VRRP" in s, i + 1, 10)
            mark = len(addrs.lines)
            if how == "kill9":
                adverts.wait(lambda s: "VRRP" in s, i + 1, 10)
                start = time.monotonic()
                master.hard_kill()
            else:
                start = time.monotonic()
                master.signal(signal.SIGTERM)
            end, _ = addrs.wait(lambda s: VIP in s and "Deleted" not in s, mark, 15)
            return end - start
        finally:
            adverts.close()
            addrs.close()
            master.stop()
            backup.stop()


@dataclass(frozen=True)
class Result:
    name: str
    ours_ms: float
    theirs_ms: float

    def line(self) -> str:
        return (
            f"bench: {self.name} {self.ours_ms:.0f} ms ratio "
            f"{self.ours_ms / self.theirs_ms:.2f} vs keepalived"
        )


def measure(version: int, interval: float, how: str, tmp: Path, reps: int) -> Result:
    label = f"{'1s' if interval == 1 else f'{round(interval * 1000)}ms'}"
    name = f"takeover_{how}_v{version}_{label}"
    medians = []
    for kind in (LVSAGENT, KEEPALIVED):
        runs = [takeover_once(kind, version, interval, how, tmp) * 1000 for _ in range(reps)]
        print(f"  {name} {kind.name}: " + ", ".join(f"{r:.1f}" for r in runs) + " ms", flush=True)
        medians.append(statistics.median(runs))
    return Result(name, medians[0], medians[1])
