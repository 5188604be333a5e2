"""The two-box scenarios as functions: steady spread, and a failover under traffic.

Why here and not in a test: the kernel tests assert on them, `make bench` prints their figures
(for keepalived now, for lvsagent when its loop guard is wired) and `make demo` can narrate them,
so each scenario runs the same way for all three and for either agent.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.kernel.twobox import Adverts, TwoBox, ipvs_stats
from tests.kernel.twobox_agents import Agent, AgentKind, bypass_runs
from tests.kernel.twobox_traffic import (
    Bucket,
    Record,
    failure_rate,
    failure_timeline,
    failures_end,
    outage,
    recovery,
    spread,
)

Fault = Literal["kill9", "sigterm", "link"]
TAKEOVER_TIMEOUT = 30.0


@dataclass
class Failover:
    """What the client saw around a fault on the master (box A), and the boxes afterwards."""

    kind: AgentKind
    fault: Fault
    version: int
    advert_int: float
    records: list[Record]
    fault_at: float
    takeover_seen: float  # when box B's "-> MASTER" line was read
    tail: float = 5.0  # seconds at the end of the run that tail_failure_rate covers
    after: list[str] = field(default_factory=list)  # each box's state at the end
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        interval = "1s" if self.advert_int == 1 else f"{round(self.advert_int * 1000)}ms"
        return f"{self.fault}_v{self.version}_{interval}"

    @property
    def outage(self) -> float | None:
        """Seconds without a successful request from the fault on (None: no recovery)."""
        return outage(self.records, self.fault_at)

    @property
    def recovered_at(self) -> float | None:
        return recovery(self.records, self.fault_at)

    @property
    def failure_rate_after(self) -> float:
        """The share of requests started from the takeover to the end that failed."""
        return failure_rate(self.records, self.takeover_seen)

    @property
    def tail_failure_rate(self) -> float:
        """The share that failed in the last ``tail`` seconds of the run: what "kept failing"
        means (the seed: a quarter after kill -9, half after SIGTERM, for keepalived)."""
        last = max(r.start for r in self.records)
        return failure_rate(self.records, last - self.tail)

    @property
    def failures_end(self) -> float | None:
        """Seconds from the fault to the last failed request; None if they never stopped."""
        return failures_end(self.records, self.fault_at)

    def timeline(self, width: float = 1.0) -> list[Bucket]:
        return failure_timeline(self.records, self.fault_at, width)

    def after_takeover(self) -> Counter[str]:
        return spread([r for r in self.records if r.start >= self.takeover_seen])

    def report(self) -> str:
        """Several lines for a person (pytest -s, the bench log)."""
        gap = self.outage
        end = self.failures_end
        back = self.recovered_at
        lines = [
            f"{self.kind} {self.label}: outage "
            + ("none" if gap is None else f"{gap * 1000:.0f} ms")
            + f"; takeover logged {self.takeover_seen - self.fault_at:.3f} s after the fault",
            f"  after the takeover: {self.failure_rate_after * 100:.1f} % failed "
            f"({dict(sorted(self.after_takeover().items()))}); in the last {self.tail:g} s: "
            f"{self.tail_failure_rate * 100:.1f} %; failures end: "
            + ("never, within the run" if end is None else f"+{end:.2f} s after the fault"),
            "  failure rate per second after the fault: "
            + " ".join(f"{b.rate * 100:.0f}%" for b in self.timeline()),
        ]
        if back is not None:
            lines.append(
                f"  first request started after the fault and served: +{back - self.fault_at:.3f} s"
            )
        lines += [f"  {line}" for line in self.after + self.notes]
        return "\n".join(lines)


def failover(
    lab: TwoBox,
    kind: AgentKind,
    fault: Fault,
    *,
    version: int = 2,
    advert_int: float = 1.0,
    interval: float = 0.02,
    timeout: float = 1.0,
    warmup: int = 100,
    observe: float = 10.0,
    until: Callable[[Agent, Agent], float] | None = None,
    **config: Any,
) -> Failover:
    """Settle both agents, run traffic, inject ``fault`` on box A, watch ``observe`` seconds.

    kill9: every process of A's agent is SIGKILLed right after box B heard one of its adverts
    (the whole Master_Down_Interval is measured); sigterm: a clean stop; link: A's cable is
    pulled. A's web server keeps running throughout. ``observe`` counts from the takeover (box
    B's MASTER line), or from the time ``until(a, b)`` returns, called after the takeover to
    wait for a later event (e.g. B's health check dropping A). ``config`` goes to the agents
    (start_pair).
    """
    a, b = lab.start_pair(kind, version=version, advert_int=advert_int, **config)
    watch = Adverts(lab.b) if fault == "kill9" else None
    traffic = lab.traffic(interval=interval, timeout=timeout)
    traffic.start()
    try:
        traffic.wait_successes(after=0.0, count=warmup, timeout=60.0)
        mark = b.mark()
        if fault == "kill9":
            assert watch is not None
            watch.next_from(lab.a.address, 10.0)
            fault_at = a.kill9()
        elif fault == "sigterm":
            fault_at = a.sigterm()
        else:
            lab.link_down(lab.a)
            fault_at = time.time()  # the cable is surely out once the command has returned
        takeover_seen = b.wait_state("MASTER", TAKEOVER_TIMEOUT, after=mark)
        observe_from = until(a, b) if until is not None else takeover_seen
        traffic.wait_started_after(
            observe_from, round(observe / interval), timeout=observe * 3 + 30.0
        )
    finally:
        records = traffic.stop()
        if watch is not None:
            watch.close()
    result = Failover(
        kind, fault, version, advert_int, records, fault_at, takeover_seen,
        after=[lab.a.state(), lab.b.state()],
    )  # fmt: skip
    if kind == "keepalived":
        for label in ("a", "b"):
            runs = [
                f"{action} at {t - fault_at:+.2f} s {rc}"
                for t, action, rc in bypass_runs(lab.tmp, label)
            ]
            result.notes.append(f"box{label} bypass script runs: {', '.join(runs) or 'none'}")
    return result


def backup_rebalanced(lab: TwoBox) -> int:
    """Packets box B's IPVS service took in (re-balanced); 0 with a working loop guard."""
    return sum(c.inpkts for name, c in ipvs_stats(lab.b).items() if "->" not in name)
