"""The baseline: the seed's two-box LVS run by keepalived, in the kernel lab, with real traffic.

Why: with keepalived, configured as the design article configures it (VRRP,
the IPVS virtual server with TCP_CHECK real servers, and the bypass_ipvs.sh script on
notify_master/backup/fault), about a quarter of all requests kept failing after a kill -9 of the
master, and half after a clean stop. These tests reproduce that setup (tests/kernel/twobox.py)
and measure it.

THE FAILURE FIGURES PRINTED HERE (`baseline: ...` lines: outage, share of requests failing
after the takeover, when failures end) ARE WHAT LVSAGENT MUST BEAT. They are printed, not
asserted: timing is never asserted. What is asserted is what keepalived robustly does in the
lab — the takeover happens, rr spreads evenly, the backup's bypass keeps IPVS out of it, and
after a kill or a stop of the master the boxes are left in the state that loops (which also
proves that the harness sees a loop when there is one).

Run inside the lab (on the host they skip):

    python -m tests.kernel.uml --timeout 900 -- "$PWD/.venv/bin/python" -m pytest -q -s \\
        tests/kernel/test_twobox_keepalived.py
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kernel.twobox import (
    ADDRESS,
    TwoBox,
    client_endpoints,
    ipvs_connections,
    ipvs_stats,
    twobox_lab,
)  # fmt: skip
from tests.kernel.twobox_agents import Agent, wait_until
from tests.kernel.twobox_scenario import Failover, backup_rebalanced, failover
from tests.kernel.twobox_traffic import share, spread
from tests.kernel.uml import lab_only

pytestmark = [
    lab_only(__file__),
    pytest.mark.skipif(shutil.which("keepalived") is None, reason="needs Debian's keepalived"),
    pytest.mark.keepalived,
    pytest.mark.timeout(240),
]

SERVICE = "TCP 172.16.0.30:80"
# "Kept failing": far above what a working pair loses (nothing), far below the seed's figures.
LOOPING = 0.05


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[TwoBox]:
    with twobox_lab(tmp_path) as built:
        yield built


def baseline(result: Failover) -> None:
    """The figures lvsagent must beat, in one greppable line, then the details."""
    gap = result.outage
    end = result.failures_end
    print(
        f"\nbaseline: keepalived {result.label}: "
        f"outage {'none' if gap is None else f'{gap * 1000:.0f} ms'}, "
        f"{result.failure_rate_after * 100:.1f} % of requests failed after the takeover "
        f"({result.tail_failure_rate * 100:.1f} % in the last {result.tail:g} s), "
        f"failures end {'never (within the run)' if end is None else f'+{end:.2f} s'}"
    )
    print(result.report())


def assert_both_served_after_takeover(result: Failover) -> None:
    served = result.after_takeover()
    assert served["boxa"] > 0 and served["boxb"] > 0, served


def test_new_connections_spread_across_both_boxes_and_the_backup_does_not_rebalance(
    lab: TwoBox,
) -> None:
    lab.start_pair("keepalived")

    traffic = lab.traffic()
    traffic.start(count=200)
    records = traffic.wait_done(60.0)

    counts = spread(records)
    print(f"\nbaseline: keepalived spread of 200 new connections: {dict(sorted(counts.items()))}")
    assert sum(1 for r in records if r.ok) == 200, counts  # none hangs, none fails
    assert 0.4 <= share(records, "boxa") <= 0.6, counts
    assert 0.4 <= share(records, "boxb") <= 0.6, counts
    # Every connection went through the master's IPVS (its counters fold in every 2 s): at
    # least its SYN, request and FIN.  Not "200 new connections": the client reuses source
    # ports quickly, and IPVS may give a SYN that matches an entry it still holds to that
    # entry's server without counting a new connection (seen in 2 runs of 24: conns 193,
    # inpkts 1200 = 200 x 6).  Each client end in its table was new once.
    ends = client_endpoints(lab.a)
    assert len(ends) >= 100, len(ends)
    try:
        wait_until(
            lambda: (a := ipvs_stats(lab.a)[SERVICE]).inpkts >= 3 * 200 and a.conns >= len(ends),
            10.0, f"A's IPVS counters: >= 600 packets in, >= {len(ends)} connections",
        )  # fmt: skip
    except AssertionError as exc:
        raise AssertionError(f"{exc}: A {ipvs_stats(lab.a)}, B {ipvs_stats(lab.b)}") from None
    # ... and none through the backup's: its bypass redirects before IPVS sees a packet.
    assert backup_rebalanced(lab) == 0, ipvs_stats(lab.b)
    assert ipvs_connections(lab.b) == []
    assert lab.b.has_redirect() and not lab.a.has_redirect()


def test_kill9_of_the_master_leaves_a_loop_that_keeps_failing(lab: TwoBox) -> None:
    """kill -9 of every keepalived process on box A; its web server stays up.

    A keeps the VIP and its IPVS table with no bypass (it was MASTER); B takes over and drops
    its own bypass: each box now re-balances what the other forwards it.
    """
    result = failover(lab, "keepalived", "kill9")
    baseline(result)

    assert lab.a.has_vip() and lab.b.has_vip(), result.after
    assert re.search(rf"{ADDRESS['b']}:80\s+Route\s+1", lab.a.ipvs()), lab.a.ipvs()
    assert not lab.a.has_redirect() and not lab.b.has_redirect(), result.after
    assert_both_served_after_takeover(result)
    assert result.tail_failure_rate > LOOPING, result.report()


def test_sigterm_of_the_master_leaves_a_loop_that_keeps_failing(lab: TwoBox) -> None:
    """A clean stop of keepalived on box A; its web server stays up.

    keepalived gives up the VIP and removes its IPVS service, but runs no notify script on
    the way out: A has no bypass, and B, now MASTER, still sends it half the new connections.
    A does not hold the VIP and forwards them back (ip_forward=1): they loop until TTL.
    """
    result = failover(lab, "keepalived", "sigterm")
    baseline(result)

    assert not lab.a.has_vip() and lab.b.has_vip(), result.after
    assert SERVICE.replace("TCP ", "") not in lab.a.ipvs(), lab.a.ipvs()
    assert not lab.a.has_redirect() and not lab.b.has_redirect(), result.after
    assert result.after_takeover()["boxb"] > 0
    assert result.tail_failure_rate > LOOPING, result.report()


def test_link_down_on_the_master_fails_requests_until_the_next_health_check(
    lab: TwoBox,
) -> None:
    """A's cable is pulled (its bridge port goes down); its web server stays up, unreachable.

    B takes over and keeps sending half the new connections to A's real server until its
    TCP_CHECK (every delay_loop = 30 s, as in the seed) fails and removes it.
    """

    def until_b_drops_a(a: Agent, b: Agent) -> float:
        b.daemon.wait_for(rf"Removing service \[{re.escape(ADDRESS['a'])}\]:tcp:80", 45.0)
        return time.time()

    result = failover(lab, "keepalived", "link", observe=3.0, until=until_b_drops_a)
    baseline(result)

    assert lab.b.has_vip() and not lab.a.has_vip(), result.after
    # Once the check removed A, failures fall off; whether they reach zero within the
    # observed 3 s depends on connection entries reused from before (seen both ways), so
    # only the fall below the 50 % of the unreachable half is asserted.
    assert result.tail_failure_rate < 0.45, result.report()
    print(f"baseline: keepalived link down: failures end {result.failures_end}")
