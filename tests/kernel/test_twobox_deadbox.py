"""A dead box and a split, in the two-box lab with lvsagent (bypass): a cable pulled on the
master or on the backup, with the issue's checks (30 s, 3 s connect timeout, retry 1), and a
partition that heals.

The failures must end by the takeover plus one connect timeout (or, for a backup box, which no
VRRP event reports, by the removal of its real server), and none may come back when the client
uses again the ports whose connections went to the dead box (watched 35 s: the lab's client
uses a source port again after ~25 s). A healed split leaves one master, and the client's ARP
entry for the VIP back on it.

    python -m tests.kernel.uml --timeout 900 -- "$PWD/.venv/bin/python" -m pytest -q -s \\
        tests/kernel/test_twobox_deadbox.py
"""

from __future__ import annotations

import re
import time

import pytest

from tests.kernel.twobox import (
    ADDRESS,
    CLIENT,
)
from tests.kernel.twobox_agents import PORT, wait_until
from tests.kernel.twobox_case import (
    ADVERT_INT,
    SETTLE_TIMEOUT,
    STATE_RE,
    VERSION,
    Scene,
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
    DEAD_BOX_TIMEOUT,
    PROBE_PORTS,
    client_vip_mac,
    connections_to,
    dead_box_config,
    fetch_at_once,
    once_out,
    reconfigured,
    served,
)
from tests.kernel.twobox_scenario import TAKEOVER_TIMEOUT, Failover
from tests.kernel.uml import lab_only

pytestmark = [
    lab_only(__file__),
    pytest.mark.timeout(300),
]

@modes("bypass")
@pytest.mark.parametrize("on_failure", ["drain", pytest.param(None, id="default")])
def test_link_down_on_the_master_then_it_returns(scene: Scene, on_failure: str | None) -> None:
    """A's cable is pulled: the box is gone. With the issue's checks (30 s, 3 s connect
    timeout, retry 1), B takes over from the silent A and re-checks A's real server at once,
    sending it no new connection meanwhile; the re-check times out and, A's silence being the
    evidence, A's server is DOWN at once (no retry) and removed, not drained (it does not
    answer: its connections cannot finish). So failures end no later than the takeover plus
    one connect timeout and none come back: not for the ports the client used right after the
    takeover and uses again once A's server is out, nor for the traffic's own ports, which
    come round every ~25 s (watched for 35 s). The cable goes back: A preempts, one master,
    no loop."""
    lab = scene.lab
    a_down = rf"RS {re.escape(ADDRESS['a'])}:{PORT} of \S+ DOWN"
    with reconfigured(scene, dead_box_config(on_failure)) as (a, b):
        traffic = start_traffic(lab)
        try:
            mark, mark_a = b.mark(), a.mark()
            lab.link_down(lab.a)
            fault_at = time.time()
            takeover = b.wait_state("MASTER", TAKEOVER_TIMEOUT, after=mark)
            first = fetch_at_once(lab, PROBE_PORTS)  # while A's server is being re-checked
            down_line = b.daemon.wait_for(a_down, SETTLE_TIMEOUT, after=mark)
            down = time.time()
            again, records = once_out(lab, lab.b, ADDRESS["a"], PROBE_PORTS, traffic, takeover)
            cut = Failover("lvsagent", "link", VERSION, ADVERT_INT, records, fault_at, takeover,
                           after=[lab.a.state(), lab.b.state()])  # fmt: skip
            cut.notes += [
                f"A's real server DOWN +{down - fault_at:.2f} s after the cut: {down_line}",
                f"client ports used right after the takeover: {dict(sorted(first.items()))}",
                f"the same once A's server was out: {dict(sorted(again.items()))}",
                f"box A while cut off: {last_state(a)}, {lab.a.state()}",
                traffic.describe_stalls(fault_at),
            ]
            a_cut_problems = guard_problems(scene, lab.a, "BACKUP")

            mark, mark_a = b.mark(), a.mark()
            lab.link_up(lab.a)
            back_at = time.time()
            back = a.wait_state("MASTER", SETTLE_TIMEOUT, after=mark_a)
            records, rebalanced = b_steps_back(lab, b, mark, traffic)
        finally:
            traffic.stop()
        ret = Failover("lvsagent", "link back", VERSION, ADVERT_INT, records, back_at, back,
                       after=[lab.a.state(), lab.b.state()])  # fmt: skip
        figure(scene.mode, f"link down (on_failure {on_failure or 'default'})", cut)
        figure(scene.mode, "link back up", ret)
        late = [r for r in cut.records if not r.ok and r.start > takeover + DEAD_BOX_TIMEOUT]
        assert late == [], (
            f"failed after the takeover + {DEAD_BOX_TIMEOUT} s: {failures(late)}\n{cut.report()}"
        )
        assert served(again), f"a client port used again reached the dead box: {again}"
        assert ret.failures_end is not None
        # Cut off, A lost its carrier: FAULT, the BACKUP kernel state (no VIP, bypass in place).
        assert a_cut_problems == [], a_cut_problems
        assert rebalanced == set(), why_rebalanced(lab, b, mark, rebalanced)
        assert_roles(scene, lab.a)


@modes("bypass")
def test_link_down_on_the_backup_its_server_and_its_connections_leave(scene: Scene) -> None:
    """B's cable is pulled while A is master: no VRRP event, so A keeps sending B half of the
    new connections until its own check of B (the issue's: 30 s, 3 s, retry 1) finds it gone.
    B's server, unreachable, is then removed although on_failure is "drain", and with it A's
    connection entries to B (net.ipv4.vs.expire_nodest_conn, which lvsagent sets): the client
    ports whose connections B swallowed are balanced afresh when used again, and no request
    fails after the removal (watched 35 s: the traffic's ports come round). The cable goes
    back: B is BACKUP, A still master."""
    lab = scene.lab
    b_down = rf"RS {re.escape(ADDRESS['b'])}:{PORT} of \S+ DOWN"
    b_out = rf"ipvs: - dest {re.escape(ADDRESS['b'])}:{PORT}\b"
    with reconfigured(scene, dead_box_config("drain")) as (a, b):
        assert lab.a.sysctl("net.ipv4.vs.expire_nodest_conn") == "1"
        traffic = start_traffic(lab)
        try:
            mark, mark_b = a.mark(), b.mark()
            lab.link_down(lab.b)
            fault_at = time.time()
            # A's verdict is a connect timeout, a delay and another timeout away at least.
            first = fetch_at_once(lab, PROBE_PORTS)
            entries = connections_to(lab.a, ADDRESS["b"])
            # Swallowed: failed, and balanced to B. A probe A itself answered too slowly (a
            # loaded UML) is not B's doing and would prove nothing about B's removal.
            failed = [p for p, who in first.items() if not who.startswith("box")]
            swallowed = [p for p in failed if f"{CLIENT}:{p}" in entries]
            down_line = a.daemon.wait_for(b_down, 60.0, after=mark)
            a.daemon.wait_for(b_out, 10.0, after=mark)
            removed = time.time()
            again, records = once_out(lab, lab.a, ADDRESS["b"], swallowed, traffic, removed)

            mark_b = b.mark()
            lab.link_up(lab.b)
            b.wait_state("BACKUP", SETTLE_TIMEOUT, after=mark_b)
            wait_all_served(traffic)
        finally:
            traffic.stop()
        cut = Failover("lvsagent", "link", VERSION, ADVERT_INT, records, fault_at, fault_at,
                       after=[lab.a.state(), lab.b.state()])  # fmt: skip
        cut.notes += [
            f"B's real server DOWN +{removed - fault_at:.2f} s after the cut: {down_line}",
            f"client ports B swallowed before that: {swallowed} (failed in all: {failed}); "
            f"A's entries to B then: {len(entries)}; used again after the removal: {again}",
            traffic.describe_stalls(fault_at),
        ]
        figure(scene.mode, "link down on the backup", cut)
        late = [r for r in records if not r.ok and r.start > removed]
        assert late == [], f"failed after B's removal: {failures(late)}\n{cut.report()}"
        # The probe would prove nothing had B swallowed none of its connections.
        assert swallowed, (first, entries)
        assert served(again), f"a client port used again reached the dead box: {again}"
        assert "not drained" in down_line, down_line
        assert_roles(scene, lab.a)


LOWER_MASTER_HEARD = r"lower-priority master \S+ \(priority \d+\) heard"


@modes("bypass")
def test_partition_then_heal_leaves_exactly_one_master(scene: Scene) -> None:
    """A and B stop hearing each other (both still reach the client): both become MASTER and
    each takes the other's real server out (unreachable: removed); B's gratuitous ARP moves
    the client to B. Healed: if A hears B's lower-priority advert (before B hears A's), it
    announces the VIP again, and the client comes back to A within 5 s (left at B, it would
    be served by B's bypass alone, its ARP entry kept fresh by that traffic); B goes back to
    BACKUP, A stays MASTER, and each box's bypass matches its role; every request is served
    afterwards."""
    lab = scene.lab
    a, b = scene.settled()
    traffic = start_traffic(lab)
    try:
        mark, mark_a = b.mark(), a.mark()
        lab.partition()
        fault_at = time.time()
        takeover = b.wait_state("MASTER", TAKEOVER_TIMEOUT, after=mark)
        records = wait_all_served(traffic)
        split = Failover("lvsagent", "partition", VERSION, ADVERT_INT, records, fault_at,
                         takeover, after=[lab.a.state(), lab.b.state()])  # fmt: skip
        split_masters = (last_state(a), last_state(b))
        wait_until(lambda: client_vip_mac(lab) == lab.b.mac, 10.0,
                   "the client's ARP entry for the VIP: box B's MAC after B's ARPs")  # fmt: skip

        mark = b.mark()
        heal_at = time.time()
        lab.heal()
        healed = b.wait_state("BACKUP", SETTLE_TIMEOUT, after=mark)
        wait_until(lambda: not lab.b.has_vip(), 10.0, "box B: VIP released")
        # A announces the VIP again when it hears B as a lower-priority master; when A's advert
        # reaches B first, B yields without another advert and A hears none (keepalived alike).
        heard = line_index(a.daemon.lines[mark_a:], LOWER_MASTER_HEARD)
        if heard is not None:
            wait_until(lambda: client_vip_mac(lab) == lab.a.mac, 5.0,
                       "the client's ARP entry for the VIP: A's MAC after the heal")  # fmt: skip
        back_to_a = time.time()
        records = wait_all_served(traffic)
        a_lines = a.daemon.lines[mark_a:]
    finally:
        traffic.stop()
    heal = Failover("lvsagent", "heal", VERSION, ADVERT_INT, records, heal_at, healed,
                    after=[lab.a.state(), lab.b.state()])  # fmt: skip
    figure(scene.mode, "partition", split)
    arp = (f"A heard B as master and the client's ARP entry was at A again by "
           f"+{back_to_a - heal_at:.2f} s" if heard is not None else "A did not hear B as master")
    figure(scene.mode, "heal", heal, f"B back to BACKUP +{healed - heal_at:.2f} s after the "
           f"heal; {arp}")  # fmt: skip
    assert split_masters == ("MASTER", "MASTER"), split_masters
    assert split.failures_end is not None and heal.failures_end is not None
    # A never left MASTER; B did once healed: exactly one master.
    assert not any(STATE_RE.search(line) for line in a_lines), a_lines
    assert last_state(a) == "MASTER" and last_state(b) == "BACKUP"
    assert_roles(scene, lab.a)
