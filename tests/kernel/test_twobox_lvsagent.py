"""The two-box LVS run by lvsagent, in the kernel lab, with real traffic, in every loop guard.

Why: tests/kernel/test_twobox_keepalived.py shows what the seed's keepalived setup does to a
client — after kill -9 of the master about a quarter of the requests keep failing, after a clean
stop about half, forever. These tests run the same topology and faults with `lvsagent run` on
both boxes, for each loop guard (``loop_guard = "bypass" | "fwmark" | "backup_only"``), and
assert what the issue promises: new connections spread over both boxes and are never
re-balanced by the backup; after every fault the failures END and every later request is
served; the boxes' kernel state (VIP, bypass, marks, sync daemons) matches their roles.

Outcomes are asserted (counts, "no failure after this point", states), never timings. The
figures — outage, failure rate while the fault lasted, when failures ended — are printed as
``lvsagent: ...`` lines (run with -s) next to keepalived's ``baseline: ...`` lines.

"No loop" is also checked where it is hardest (ReusedPorts): a client source port that box A
balanced to box B, used again once B is master. IPVS looks a packet up in its connection table
before anything else, whatever its mark, and A's old entry (FIN_WAIT, real server B) sends
B's forward straight back to B unless the guard keeps the peer's packets away from IPVS. The
lab's single client reuses its ports within ~25 s, a busy client or a NAT gateway in real life.

A dead box and a split are test_twobox_deadbox.py's; the lab, the fixtures and the helpers
both use are twobox_case.py's and twobox_probes.py's.

One lab per loop-guard mode and test module: the cases of a mode run in order on the same two
boxes, and each starts from a settled pair (A MASTER, B BACKUP), restarting whatever agent an
earlier case left stopped. Not every fault runs in every mode (runtime): bypass gets all of
them; fwmark the spread, kill -9, "no agent at all" and a learned peer MAC; backup_only the
spread and kill -9 with long-lived connections across the failover.

    python -m tests.kernel.uml --timeout 1200 -- "$PWD/.venv/bin/python" -m pytest -q -s \\
        tests/kernel/test_twobox_lvsagent.py
"""

from __future__ import annotations

import re
import time

import pytest

from tests.kernel.twobox import (
    ADDRESS,
    Adverts,
    balanced_here,
    client_endpoints,
    ipvs_stats,
)
from tests.kernel.twobox_agents import PORT, VIP, wait_until
from tests.kernel.twobox_case import (
    ADVERT_INT,
    IPVS_FOLD,
    PREEMPT_HOLD,
    SETTLE_TIMEOUT,
    VERSION,
    Scene,
    agent_config,
    assert_roles,
    b_steps_back,
    failures,
    figure,
    guard_problems,
    last_state,
    line_index,
    modes,
    start_traffic,
    wait_all_served,
    why_rebalanced,
)
from tests.kernel.twobox_probes import (
    Held,
    ReusedPorts,
    describe_reuse,
)
from tests.kernel.twobox_scenario import TAKEOVER_TIMEOUT, Failover
from tests.kernel.twobox_traffic import failure_rate, share, spread
from tests.kernel.uml import lab_only

pytestmark = [
    lab_only(__file__),
    pytest.mark.timeout(300),
]

# ----- the cases -----------------------------------------------------------------------------


def test_new_connections_spread_over_both_boxes_and_the_backup_rebalances_none(
    scene: Scene,
) -> None:
    lab = scene.lab
    scene.settled()
    before = {box.label: balanced_here(box) for box in (lab.a, lab.b)}
    master_conns = ipvs_stats(lab.a)

    traffic = lab.traffic()
    traffic.start(count=200)
    records = traffic.wait_done(60.0)
    counts = spread(records)
    print(f"\nlvsagent: {scene.mode} spread of 200 new connections: {dict(sorted(counts.items()))}")

    assert sum(1 for r in records if r.ok) == 200, failures(records)  # none hangs, none fails
    assert 0.4 <= share(records, "boxa") <= 0.6, counts
    assert 0.4 <= share(records, "boxb") <= 0.6, counts
    # Every connection was balanced once, by the master ...
    # (B holds the sync daemon's copies of them, which balanced_here leaves out.)
    new_a = balanced_here(lab.a) - before["a"]
    new_b = balanced_here(lab.b) - before["b"]
    # (The client reuses source ports quickly: one may repeat an entry from before, which is
    # then not new.)
    assert len(new_a) >= 100, len(new_a)
    assert new_b == set(), sorted(new_b)[:5]
    # ... and the backup's IPVS counters show none: read after the master's and one more fold.
    key = next(k for k in master_conns if "->" not in k)
    wait_until(lambda: ipvs_stats(lab.a)[key].conns >= master_conns[key].conns + len(new_a),
               10.0, f"box A's IPVS counters: {len(new_a)} more than {master_conns[key]}: "
               f"{ipvs_stats(lab.a)}")  # fmt: skip
    time.sleep(IPVS_FOLD)  # box B's namespace folds on its own 2 s timer
    rebalanced = {k: v for k, v in ipvs_stats(lab.b).items() if v.inpkts or v.conns}
    assert rebalanced == {}, rebalanced
    assert_roles(scene, lab.a)


def test_kill9_of_the_master_then_restart_ends_the_failures(scene: Scene) -> None:
    """kill -9 of A's agent (its web server stays up), B takes over, then A's agent is started
    again as systemd would: it comes up BACKUP with its guard engaged and its stale VIP gone,
    then preempts. The failures end; every request afterwards is served.

    Every mode: the killed A keeps its VIP and IPVS table, but its kernel still keeps what B
    forwards it away from IPVS (a redirect of what B's MAC sends; fwmark: B's packets are not
    marked either), so there is no loop even before the restart — also for client ports that
    A itself balanced to B before the kill (ReusedPorts; not in backup_only). backup_only
    needs the redirect most: the killed A's sync daemon is the master one, so its IPVS is
    on. There, connections opened before the kill and finished after the takeover (and others
    finished after A's return) are served: the sync daemon carried their entries, and the
    redirect, decided at a connection's first packet, does not touch them.
    """
    lab = scene.lab
    a, b = scene.settled()
    held_takeover = held_return = None
    if scene.mode == "backup_only":
        held_takeover, held_return = Held(lab, 4), Held(lab, 4)
        dest = held_takeover.destinations(lab.a) | held_return.destinations(lab.a)
        assert ADDRESS["a"] + f":{PORT}" in dest.values(), dest  # rr: some go to A itself
        wait_until(
            lambda: set(dest) <= client_endpoints(lab.b), 15.0, "the sync daemon: B has them"
        )
    reused = ReusedPorts(lab, 21000) if scene.mode != "backup_only" else None
    reuse: dict[int, str] = {}
    watch = Adverts(lab.b)
    traffic = start_traffic(lab)
    try:
        mark = b.mark()
        watch.next_from(lab.a.address, 10.0)
        fault_at = a.kill9()
        takeover = b.wait_state("MASTER", TAKEOVER_TIMEOUT, after=mark)
        notes = []
        if held_takeover is not None:
            answers = held_takeover.finish()
            notes.append(f"long-lived connections finished after the takeover: {answers}")
            assert all(x.startswith("box") for x in answers), answers
        if reused is not None:
            reuse = reused.again()
            notes.append(describe_reuse(reuse))
        # The killed agent left A's VIP and IPVS table. Let 2 s of traffic show what that does
        # (with no redirect of B's forwards: a loop), then restart A.
        traffic.wait_started_after(takeover, 100, 30.0)
        restart_at = time.time()
        loop_rate = failure_rate(traffic.records, takeover, restart_at)
        mark_b = b.mark()
        # preempt_delay holds A in BACKUP for a while after it hears B, so that its BACKUP
        # state is read in every run, not only when it happens to preempt late.
        a2 = scene.start(a.box[-1], instance={"preempt_delay": PREEMPT_HOLD})
        a2.wait_state("BACKUP", SETTLE_TIMEOUT)
        # Its first state: BACKUP, with the guard engaged before the stale VIP went (its log
        # order), and the kernel in the BACKUP state.
        backup_problems = guard_problems(scene, lab.a, "BACKUP")
        assert last_state(a2) == "BACKUP", "A preempted within preempt_delay"
        lines = a2.daemon.lines
        engaged = line_index(lines, r"loop guard \S+ engaged \(startup\)")
        removed = line_index(lines, rf"removed virtual address {re.escape(VIP)}")
        assert engaged is not None and removed is not None and engaged < removed, lines[-30:]
        assert backup_problems == [], backup_problems
        a2.wait_state("MASTER", SETTLE_TIMEOUT)
        b.wait_state("BACKUP", SETTLE_TIMEOUT, after=mark_b)
        records = wait_all_served(traffic)
    finally:
        traffic.stop()
        watch.close()
    if held_return is not None:
        answers = held_return.finish()
        notes.append(f"long-lived connections finished after A's return: {answers}")
        assert all(x.startswith("box") for x in answers), answers
    result = Failover("lvsagent", "kill9", VERSION, ADVERT_INT, records, fault_at, takeover,
                      after=[lab.a.state(), lab.b.state()], notes=notes)  # fmt: skip
    figure(
        scene.mode, "kill9", result,
        f"{loop_rate * 100:.1f} % failed between the takeover and the restart (+"
        f"{restart_at - fault_at:.1f} s)",
    )  # fmt: skip
    assert result.failures_end is not None, result.report()
    assert_roles(scene, lab.a)
    assert all(who.startswith("box") for who in reuse.values()), describe_reuse(reuse)


@modes("bypass")
def test_sigterm_of_the_master_leaves_a_working_real_server_then_it_returns(
    scene: Scene,
) -> None:
    """A clean stop of A's agent (maintenance; its web server stays up): B takes over, A stays
    in the BACKUP kernel state (bypass in place, no VIP) and serves what B sends it. Then A's
    agent starts again and preempts: one master again, and B, back to BACKUP, re-balances
    nothing."""
    lab = scene.lab
    a, b = scene.settled()
    reused = ReusedPorts(lab, 22000)
    traffic = start_traffic(lab)
    try:
        mark = b.mark()
        fault_at = a.sigterm()
        takeover = b.wait_state("MASTER", TAKEOVER_TIMEOUT, after=mark)
        # At once (A's guard is engaged before it lets B take over): A's entries live
        # ipvs_timeout_tcpfin (15 s) from their last packet, and its stop's rest and the
        # role checks below take seconds on a loaded host (a CI run lost them so).
        reuse = reused.again()
        assert a.daemon.proc.wait(15) == 0, a.daemon.lines[-20:]
        assert_roles(scene, lab.b)  # A: stopped, in the BACKUP state; B: MASTER
        records = wait_all_served(traffic)
        stop = Failover("lvsagent", "sigterm", VERSION, ADVERT_INT, records, fault_at, takeover,
                        after=[lab.a.state(), lab.b.state()])  # fmt: skip

        mark = b.mark()
        back_at = time.time()
        a2 = scene.start("a")
        back = a2.wait_state("MASTER", SETTLE_TIMEOUT)
        records, rebalanced = b_steps_back(lab, b, mark, traffic)
    finally:
        traffic.stop()
    ret = Failover("lvsagent", "return", VERSION, ADVERT_INT, records, back_at, back,
                   after=[lab.a.state(), lab.b.state()])  # fmt: skip
    stop.notes.append(describe_reuse(reuse))
    figure(scene.mode, "sigterm", stop)
    figure(scene.mode, "return after sigterm", ret)
    assert all(who.startswith("box") for who in reuse.values()), describe_reuse(reuse)
    assert stop.failures_end is not None and ret.failures_end is not None
    assert rebalanced == set(), why_rebalanced(lab, b, mark, rebalanced)
    assert_roles(scene, lab.a)


@modes("fwmark")
def test_fwmark_no_loop_with_no_agent_running(scene: Scene) -> None:
    """fwmark: kill -9 both agents (A first; B takes over, then B). Both boxes hold the VIP,
    the marking rule and the fwmark service, and nobody runs anything: new connections are
    still balanced exactly once — by whichever box the client reaches — and served by both."""
    lab = scene.lab
    a, b = scene.settled()
    watch = Adverts(lab.b)
    try:
        mark = b.mark()
        watch.next_from(lab.a.address, 10.0)
        a.kill9()
        b.wait_state("MASTER", TAKEOVER_TIMEOUT, after=mark)
    finally:
        watch.close()
    b.kill9()
    for agent in (a, b):
        agent.daemon.proc.wait(10)
    before = {box.label: balanced_here(box) for box in (lab.a, lab.b)}

    traffic = lab.traffic()
    traffic.start(count=200)
    records = traffic.wait_done(60.0)
    counts = spread(records)
    new = {box.label: balanced_here(box) - before[box.label] for box in (lab.a, lab.b)}
    print(
        f"\nlvsagent: fwmark with no agent running: {dict(sorted(counts.items()))}; "
        f"balanced by A {len(new['a'])}, by B {len(new['b'])}; {lab.a.state()}; {lab.b.state()}"
    )
    assert sum(1 for r in records if r.ok) == 200, failures(records)
    assert 0.4 <= share(records, "boxa") <= 0.6, counts
    # A connection balanced by both boxes would be a loop: each is in one table only.
    assert new["a"] & new["b"] == set(), sorted(new["a"] & new["b"])[:5]
    assert len(new["a"] | new["b"]) >= 100, (len(new["a"]), len(new["b"]))  # (reused ports)


@modes("fwmark")
def test_fwmark_with_a_learned_peer_mac(scene: Scene) -> None:
    """fwmark without peer_mac: each agent learns the other box's MAC and marks all but its
    packets: the spread and the backup's IPVS table as with a configured MAC."""
    lab = scene.lab
    for agent in scene.agents.values():
        agent.stop()
    scene.agents.clear()
    configured = scene.config
    scene.config = agent_config("fwmark", peer_mac=None)
    try:
        scene.settled(timeout=15.0)  # until both have the marking rule with the peer's MAC
        before = balanced_here(lab.b)
        traffic = lab.traffic()
        traffic.start(count=200)
        records = traffic.wait_done(60.0)
        counts = spread(records)
        print(f"\nlvsagent: fwmark (learned MAC) spread: {dict(sorted(counts.items()))}")
        assert sum(1 for r in records if r.ok) == 200, failures(records)
        assert 0.4 <= share(records, "boxa") <= 0.6, counts
        assert balanced_here(lab.b) - before == set()
    finally:
        scene.config = configured
