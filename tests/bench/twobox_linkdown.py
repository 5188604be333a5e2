"""`make bench` figures for a dead box: box A's cable pulled while it is master.

Why a case of its own: after kill -9 or SIGTERM box A's web server stays up, so whatever box B
sends it is served; with the cable out it is gone, and what a client sees then depends on how
soon box B stops sending it connections, and on whether connections B sent it come back to
haunt the client when it reuses a source port (the lab's one client does, every ~25 s).

Both agents run with the seed's checks, as the issue measured them: a TCP check every 30 s,
3 s connect timeout, one retry after 1 s (keepalived's TCP_CHECK default, written out for
lvsagent); everything else at each agent's defaults (keepalived removes a failed server and
leaves net.ipv4.vs.expire_nodest_conn at the kernel's 0). The scenario is
tests/kernel/twobox_scenario.failover with fault "link", watched WATCH s after the takeover.
Figures per agent (medians of the runs, and the worst with ``_worst`` appended):

    twobox_linkdown_failures_end_s                 the cut to the start of the last failure
    twobox_linkdown_failures_end_after_takeover_s  the same, from box B's takeover
    twobox_linkdown_late_failures                  failed requests started after the takeover
                                                   plus one connect timeout (goal 0)

A run whose failures had not ended by the end of the window counts its failures_end as inf.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from tests.bench.twobox import Figure, agent_kind, run_once

CONNECT_TIMEOUT = 3.0
INTERVAL = 30.0
RETRY = 1
WATCH = 40.0  # s after the takeover: the 40 s window, more than one port round
REPS = 5  # runs at least, whatever the rest of the bench does: the goal is "in every run"


def agent_config(agent: str) -> dict[str, Any]:
    """failover() keywords: the seed's checks for either agent."""
    if agent == "keepalived":
        # keepalived_conf_text: TCP_CHECK connect_timeout 3, retry at keepalived's default 1.
        return {"delay_loop": INTERVAL}
    return {
        "health_interval": INTERVAL,
        "connect_timeout": CONNECT_TIMEOUT,
        "overrides": {"virtual_server": [{"health": {"retry": RETRY, "delay_before_retry": 1.0}}]},
    }


def measure_linkdown(agent: str, reps: int, tmp: Path) -> list[Figure]:
    """Inside the lab: ``reps`` runs of the dead-box case for one agent, each in a fresh lab."""
    kind = agent_kind(agent)
    ends: list[float] = []
    after_takeover: list[float] = []
    late: list[float] = []
    for rep in range(reps):
        result = run_once(
            tmp / f"{agent}-linkdown-{rep}", kind, "link", version=2, advert_int=1.0,
            observe=WATCH, **agent_config(agent),
        )  # fmt: skip
        if result is None:
            continue
        end = result.failures_end
        ends.append(math.inf if end is None else end)
        takeover = result.takeover_seen - result.fault_at
        after_takeover.append(math.inf if end is None else end - takeover)
        limit = result.takeover_seen + CONNECT_TIMEOUT
        failed_late = [r for r in result.records if not r.ok and r.start > limit]
        late.append(len(failed_late))
        print(result.report(), flush=True)
        if failed_late:
            # All ending together (start + latency) is the client stalled, not the network.
            print(f"{agent} linkdown run {rep + 1}: late failures (start after the cut, outcome, "
                  "end after the cut): " + ", ".join(
                      f"+{r.start - result.fault_at:.3f} {r.outcome} +{r.end - result.fault_at:.3f}"
                      for r in failed_late[:40]), flush=True)  # fmt: skip
        print(f"{agent} linkdown run {rep + 1}: takeover +{takeover:.2f} s, failures end "
              f"+{ends[-1]:.2f} s, {late[-1]:.0f} failed after takeover + "
              f"{CONNECT_TIMEOUT:g} s", flush=True)  # fmt: skip
    figures: list[Figure] = []
    for name, values, unit in (
        ("twobox_linkdown_failures_end_s", ends, "s"),
        ("twobox_linkdown_failures_end_after_takeover_s", after_takeover, "s"),
        ("twobox_linkdown_late_failures", late, "requests"),
    ):
        if values:
            figures.append(Figure(agent, name, statistics.median(values), unit))
            figures.append(Figure(agent, f"{name}_worst", max(values), unit))
    return figures
