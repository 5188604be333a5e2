"""The two-box design on Debian's kernel: kill -9 of the master's agent under client traffic.

Runs only inside the Debian-kernel guest (``make test-distro``), with the kernel lab's
topology and failover scenario (tests/kernel/twobox*.py): box A MASTER and box B BACKUP, each
both director and real server, bypass loop guard; every process of A's agent is SIGKILLed
while a client opens new connections to the VIP; A's web server stays up. On this kernel
every module the agents use was loaded on demand, by the kernel or by them.

What must hold is what the kernel lab proves for this fault: B takes over, the failures end
(a stretch of QUIET seconds with every request served, as the lab's "failures end, then
confirm") and, from the takeover on, B balances to A too, while the killed A, which keeps its
VIP and its IPVS table, still redirects what B forwards it to its own server instead of
balancing it again (no loop). The lab's own case then restarts A under traffic; that third
start of the daemon is left to the lab (under TCG it starves the emulated CPUs, and requests
then time out for that, not for the failover). The client opens a connection every 50 ms
(the lab: 20 ms) for the same reason; its 1 s request timeout is the lab's, so a SYN lost in a
loop still counts as a failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.distro.guest import distro_only
from tests.kernel.twobox import Adverts, TwoBox, twobox_lab
from tests.kernel.twobox_scenario import TAKEOVER_TIMEOUT, Failover
from tests.kernel.twobox_traffic import Record, Traffic

pytestmark = [distro_only(__file__), pytest.mark.timeout(600)]

# The lab's agent settings for its two-box cases: a dead real server is drained within
# seconds, and IPVS forgets a finished connection in 15 s (tests/kernel/twobox_case.py).
CONFIG = {
    "loop_guard": "bypass",
    "health_interval": 1.0,
    "connect_timeout": 1.0,
    "overrides": {
        "global": {"ipvs_timeout_tcpfin": 15},
        "virtual_server": [{"health": {"retry": 0}}],
    },
}
INTERVAL = 0.05
QUIET = 5.0
ENDS_WITHIN = 120.0


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[TwoBox]:
    with twobox_lab(tmp_path) as two:
        yield two


def quiet_since(traffic: Traffic, after: float) -> Callable[[list[Record]], bool]:
    """Whether the finished requests started since ``after`` end in QUIET s without a failure.

    Only requests older than every one still open count: a newer one may yet time out.
    """

    def check(records: list[Record]) -> bool:
        settled = [r for r in records if after <= r.start < traffic.oldest_in_flight()]
        if not settled:
            return False
        last_failure = max((r.start for r in settled if not r.ok), default=after)
        return max(r.start for r in settled) - last_failure >= QUIET

    return check


def test_kill9_of_the_masters_agent_the_failures_end_and_nothing_loops(lab: TwoBox) -> None:
    a, b = lab.start_pair("lvsagent", **CONFIG)
    watch = Adverts(lab.b)
    traffic = lab.traffic(interval=INTERVAL)
    traffic.start()
    try:
        traffic.wait_successes(after=0.0, count=100, timeout=120.0)
        mark = b.mark()
        watch.next_from(lab.a.address, 10.0)  # the whole Master_Down_Interval is measured
        fault_at = a.kill9()
        takeover = b.wait_state("MASTER", TAKEOVER_TIMEOUT, after=mark)
        traffic.wait(quiet_since(traffic, takeover), ENDS_WITHIN, f"{QUIET} s all served")
    finally:
        records = traffic.stop()
        watch.close()
    result = Failover("lvsagent", "kill9", 2, 1.0, records, fault_at, takeover,
                      after=[lab.a.state(), lab.b.state()])  # fmt: skip
    print(f"\ndistro: {result.report()}")

    served = result.after_takeover()
    assert served["boxa"] > 0 and served["boxb"] > 0, result.report()
    # B is master with its guard released; the killed A kept its VIP and the redirect of B's
    # forwards (so B's share for A is served there, not balanced again).
    assert lab.b.has_vip() and not lab.b.has_redirect(), result.after
    assert lab.a.redirects_from(lab.b.mac), result.after
