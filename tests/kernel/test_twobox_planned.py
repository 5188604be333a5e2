"""Planned moves keep connections: a clean stop of the master's agent and its return (it
preempts) move the VIP without breaking a connection, in every mode.

Why: an operator restarts an agent for an upgrade or a reboot and expects its clients not to
notice. Across each move, connections opened before it and finished after it (held half-sent:
Held) must be answered. Each one's packets after the move reach the new master, whose IPVS
knows it from the sync daemons and sends it on to the same real server, where the VIP on lo
and IPVS's own entry (the bypass redirect takes opening SYNs only) deliver it.

At the stop, in a quiet lab, the held connections are opened just before the SIGTERM and
used again as soon as the peer is master: younger than a sync round (the kernel sends a sync
buffer once it is 2 s old or full), the stopping master's handoff (lvsagent/daemon/
stopping.py) must carry them across. The return (a preemption, which has no handoff) runs
with traffic; the case waits until the peer has the held connections' entries, and the short
requests are counted in the figures, not asserted: one younger than a sync round can still
fail at a return (`make bench`: twobox_failed_requests_*, with traffic at both moves).

    python -m tests.kernel.uml --timeout 900 -- "$PWD/.venv/bin/python" -m pytest -q -s \\
        tests/kernel/test_twobox_planned.py
"""

from __future__ import annotations

import time

import pytest

from tests.kernel.twobox import Box, client_endpoints
from tests.kernel.twobox_agents import wait_until
from tests.kernel.twobox_case import (
    ADVERT_INT,
    SETTLE_TIMEOUT,
    VERSION,
    Scene,
    assert_roles,
    failures,
    figure,
    start_traffic,
    wait_all_served,
)
from tests.kernel.twobox_probes import Held
from tests.kernel.twobox_scenario import TAKEOVER_TIMEOUT, Failover
from tests.kernel.uml import lab_only

pytestmark = [lab_only(__file__), pytest.mark.timeout(300)]

HELD = 8  # connections held across each move; rr sends about half to each box


def synced(held: Held, peer: Box) -> None:
    """Until the peer's IPVS has the held connections' entries (its backup sync daemon got
    them): this case proves that a connection the new master knows survives the move. One
    younger than a sync round (IPVS sends a sync buffer within about 2 s) can still be lost:
    `make bench`'s twobox_failed_requests_* count those, the client's view of a move."""
    wait_until(lambda: set(held.endpoints) <= client_endpoints(peer), 15.0,
               f"{peer.name}'s IPVS: the held connections' synced entries")  # fmt: skip


def test_a_stop_and_a_return_of_the_master_break_no_connection(scene: Scene) -> None:
    lab = scene.lab
    a, b = scene.settled()
    # The stop in a quiet lab: no traffic fills a sync buffer, so the kernel would send the
    # young connections' entries only once the buffer is 2 s old; they are used again as
    # soon as B is master. Without the handoff, those A served itself were reset (4 of 8).
    young = Held(lab, HELD)
    mark, mark_a = b.mark(), a.mark()
    stop_at = a.sigterm()
    takeover = b.wait_state("MASTER", TAKEOVER_TIMEOUT, after=mark)
    stopped = young.finish()
    assert a.daemon.proc.wait(20) == 0, a.daemon.lines[-20:]
    handoff = a.daemon.wait_for(r"stopping: \d+ real server\(s\) of this box quiesced",
                                1.0, after=mark_a)  # fmt: skip
    where = (young.destinations(lab.a), young.destinations(lab.b))

    traffic = start_traffic(lab)
    try:
        traffic.wait_successes(time.time(), 50, 30.0)
        across_return = Held(lab, HELD)
        synced(across_return, lab.a)  # the stopped agent left its backup daemon running
        mark = b.mark()
        back_at = time.time()
        a2 = scene.start("a")
        back = a2.wait_state("MASTER", SETTLE_TIMEOUT)
        b.wait_state("BACKUP", SETTLE_TIMEOUT, after=mark)
        traffic.wait_started_after(back, 50, 30.0)
        synced_return = (across_return.destinations(lab.b), across_return.destinations(lab.a))
        returned = across_return.finish()
        records = wait_all_served(traffic)
    finally:
        traffic.stop()
    ret = Failover("lvsagent", "return", VERSION, ADVERT_INT, records, back_at, back,
                   after=[lab.a.state(), lab.b.state()])  # fmt: skip
    failed = [r for r in records if not r.ok]
    print(f"\nlvsagent: {scene.mode} planned stop (quiet): B master +{takeover - stop_at:.2f} s "
          f"after the SIGTERM; young connections answered: {stopped}; their real servers in "
          f"A's and B's IPVS: {where}; A: {handoff}")  # fmt: skip
    print(f"lvsagent: {scene.mode} short requests failed at the return: {len(failed)} "
          f"{failures(failed) if failed else ''}")
    figure(scene.mode, "planned return", ret, f"held connections answered: {returned}; their "
           f"real servers in the old and the new master's IPVS: {synced_return}")  # fmt: skip
    assert all(x.startswith("box") for x in stopped), stopped
    assert all(x.startswith("box") for x in returned), returned
    assert_roles(scene, lab.a)
