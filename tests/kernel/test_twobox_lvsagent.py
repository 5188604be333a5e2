"""Issue 5's proof: the seed's two-box LVS run by lvsagent, in the kernel lab, with real traffic.

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

A dead box (a cable pulled, with the seed's checks: 30 s, 3 s connect timeout, retry 1) is
checked the same way: the failures must end by the takeover plus one connect timeout (or, for
a backup box, which no VRRP event reports, by the removal of its real server), and none may
come back when the client uses again the ports whose connections went to the dead box.

One lab per loop-guard mode: the cases of a mode run in order on the same two boxes, and each
starts from a settled pair (A MASTER, B BACKUP), restarting whatever agent an earlier case
left stopped. Not every fault runs in every mode (runtime): bypass gets all of them; fwmark the
spread, kill -9, "no agent at all" and a learned peer MAC; backup_only the spread and kill -9
with long-lived connections across the failover. About 9 minutes in the lab (the dead box's
three cases, the traffic watched 35 s after each, about 4.5 of them).

    python -m tests.kernel.uml --timeout 1200 -- "$PWD/.venv/bin/python" -m pytest -q -s \\
        tests/kernel/test_twobox_lvsagent.py
"""

from __future__ import annotations

import functools
import re
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.kernel import setns
from tests.kernel.twobox import (
    ADDRESS,
    CLIENT,
    Adverts,
    Box,
    TwoBox,
    client_endpoints,
    in_netns,
    ipvs_connections,
    ipvs_ready,
    ipvs_stats,
    twobox_lab,
)
from tests.kernel.twobox_agents import PORT, VIP, Agent, wait_until
from tests.kernel.twobox_scenario import TAKEOVER_TIMEOUT, Failover
from tests.kernel.twobox_traffic import Record, Traffic, failure_rate, share, spread
from tests.kernel.uml import lab_only

pytestmark = [
    lab_only(__file__),
    pytest.mark.timeout(300),
]

VERSION = 2
ADVERT_INT = 1.0  # the seed's advert_int, as in keepalived's baseline
SETTLE_TIMEOUT = 30.0
# A restarted after kill -9 stays BACKUP this long after hearing B (its preempt_delay for that
# start): time enough to read its kernel state in the BACKUP role.
PREEMPT_HOLD = 10.0
# "Failures have ended": this long without a failed request (by start time), on top of the
# traffic's per-request timeout (so that every request of the stretch has finished).
QUIET = 2.0
# Then this much more traffic, all of which must be served.
CONFIRM = 2.0
# The kernel folds IPVS counters into what ipvsadm shows every 2 s, per network namespace.
IPVS_FOLD = 2.2


def agent_config(mode: str, **extra: Any) -> dict[str, Any]:
    """lvsagent_config_text keywords for the lab: the mode, and quick health checks (each real
    server every second, 1 s connect timeout, no retry), so that a dead box is drained soon.

    IPVS keeps a direct-routing connection in FIN_WAIT for ipvs_timeout_tcpfin (kernel: 120 s)
    after it ends, and a SYN from the same client address and port takes that entry's real
    server again, even one drained since (or, in fwmark mode, loops: ReusedPorts). The lab's
    one client reuses a source port after ~1200 connections (~25 s at 50 a second), so with
    the kernel's 120 s, entries from an earlier case or phase would steer a later one's
    connections at random. 15 s is shorter than that cycle and longer than ReusedPorts needs.
    """
    config: dict[str, Any] = {
        "loop_guard": mode,
        "health_interval": 1.0,
        "connect_timeout": 1.0,
        "overrides": {
            "global": {"ipvs_timeout_tcpfin": 15},
            "virtual_server": [{"health": {"retry": 0}}],
        },
    }
    config.update(extra)
    return config


# ----- the lab of one mode, shared by its cases ----------------------------------------------


@dataclass
class Scene:
    lab: TwoBox
    mode: str
    config: dict[str, Any]
    agents: dict[str, Agent] = field(default_factory=dict)

    def start(self, label: str, instance: dict[str, Any] | None = None) -> Agent:
        """(Re)start box ``label``'s agent with the mode's config, as systemd would;
        ``instance``: keys laid over its VRRP instance for this start only."""
        config = self.config
        if instance is not None:
            overrides = {**config.get("overrides", {}), "vrrp_instance": [instance]}
            config = {**config, "overrides": overrides}
        agent = self.lab.start_lvsagent(label, version=VERSION, advert_int=ADVERT_INT, **config)
        self.agents[label] = agent
        return agent

    def running(self, label: str) -> bool:
        agent = self.agents.get(label)
        return agent is not None and agent.daemon.proc.poll() is None

    def settled(self, timeout: float = SETTLE_TIMEOUT) -> tuple[Agent, Agent]:
        """A pair like start_pair's: A MASTER, B BACKUP, IPVS programmed, guards in place.

        Restarts an agent an earlier case stopped; A, with the higher priority, preempts.
        Links an earlier (failed) case left down or partitioned come back first.
        """
        self.lab.link_up(self.lab.a)
        self.lab.link_up(self.lab.b)
        self.lab.heal()
        if not self.agents:
            a, b = self.lab.start_pair(
                "lvsagent", version=VERSION, advert_int=ADVERT_INT, **self.config
            )
            self.agents.update(a=a, b=b)
        for label in ("a", "b"):
            if not self.running(label):
                self.start(label)
        a, b = self.agents["a"], self.agents["b"]
        wait_until(lambda: last_state(a) == "MASTER", SETTLE_TIMEOUT, "box a: MASTER")
        wait_until(lambda: last_state(b) == "BACKUP", SETTLE_TIMEOUT, "box b: BACKUP")
        for box in (self.lab.a, self.lab.b):
            wait_until(lambda box=box: ipvs_ready(box), SETTLE_TIMEOUT, f"{box.name}: IPVS")
        self.wait_guard(self.lab.a, "MASTER", timeout)
        self.wait_guard(self.lab.b, "BACKUP", timeout)
        return a, b

    def wait_guard(self, box: Box, role: str, timeout: float) -> None:
        """Until box ``box``'s kernel state is the loop guard's for ``role``."""
        problems: list[str] = []

        def matches() -> bool:
            problems[:] = guard_problems(self, box, role)
            return not problems

        try:
            wait_until(matches, timeout, f"{box.name}'s loop guard as {role}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {problems}") from None


MODES = ("bypass", "fwmark", "backup_only")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each case runs in the modes its ``@modes`` names (all by default): cases that do not
    apply to a mode are not generated at all, rather than generated and skipped."""
    if "scene" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("modes")
        wanted = marker.args if marker is not None else MODES
        metafunc.parametrize("scene", [m for m in MODES if m in wanted], indirect=True,
                             scope="module")  # fmt: skip


def modes(*names: str) -> pytest.MarkDecorator:
    return pytest.mark.modes(*names)


@pytest.fixture(scope="module")
def scene(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scene]:
    mode: str = request.param
    with twobox_lab(tmp_path_factory.mktemp(f"twobox-{mode}")) as lab:
        yield Scene(lab, mode, agent_config(mode))


@pytest.fixture(autouse=True)
def logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a failed case, the agents' last log lines (pytest -s shows them)."""
    failed = request.session.testsfailed
    yield
    scene: Scene | None = request.node.funcargs.get("scene")
    if scene is None or request.session.testsfailed == failed:
        return
    for label, agent in sorted(scene.agents.items()):
        print(f"\n----- box {label}'s agent, last lines:\n" + "\n".join(agent.daemon.lines[-40:]))
    lab = scene.lab
    print(f"\n----- kernel state\n{lab.a.diagnosis()}\n{lab.b.diagnosis()}")
    neigh = lab.client.run("ip", "neigh", check=False).stdout
    print(f"--- client: neighbours\n{neigh}")


# ----- states --------------------------------------------------------------------------------

_STATE = re.compile(r"VI_1 \(vrid \d+ on \S+\): \S+ -> (MASTER|BACKUP|FAULT)\b")


def last_state(agent: Agent) -> str | None:
    """The state the agent last logged entering (None before the first transition)."""
    for line in reversed(agent.daemon.lines):
        if found := _STATE.search(line):
            return found.group(1)
    return None


def guard_problems(scene: Scene, box: Box, role: str) -> list[str]:
    """How box ``box``'s kernel state differs from the loop guard's for ``role`` (MASTER or
    BACKUP; a stopped agent leaves BACKUP's): [] when it matches."""
    problems = []
    vip = box.has_vip()
    if vip != (role == "MASTER"):
        problems.append(f"VIP on {box.name}'s eth0: {vip}")
    if scene.mode == "bypass":
        # Engaged (BACKUP): all of the service's traffic is redirected. Released (MASTER): only
        # what the peer's MAC sends (configured or learned), so that a box whose agent dies
        # never balances the new master's forwards again.
        if box.has_redirect() != (role != "MASTER"):
            problems.append(f"{box.name}: bypass {'engaged' if role == 'MASTER' else 'released'}")
        peer = scene.lab.other(box)
        if role == "MASTER" and not box.redirects_from(peer.mac):
            problems.append(f"{box.name}: no redirect of what {peer.name} ({peer.mac}) sends")
    elif scene.mode == "fwmark":
        peer = scene.lab.other(box)
        if box.has_redirect():
            problems.append(f"{box.name}: a redirect in fwmark mode")
        if not box.has_lo_vip():
            problems.append(f"{box.name}: no VIP on lo")
        if not box.marks_all_but(peer.mac):
            problems.append(f"{box.name}: no rule marking all but {peer.mac}: {box.ruleset()}")
    else:
        peer = scene.lab.other(box)
        if box.has_redirect():
            problems.append(f"{box.name}: a redirect of all traffic in backup_only mode")
        if not box.redirects_from(peer.mac):
            problems.append(f"{box.name}: no redirect of what {peer.name} ({peer.mac}) sends")
        # 1 while engaged (with the backup daemon IPVS balances nothing), 0 as master.
        want_sysctl = "0" if role == "MASTER" else "1"
        if box.sysctl("net.ipv4.vs.backup_only") != want_sysctl:
            problems.append(f"{box.name}: net.ipv4.vs.backup_only is not {want_sysctl}")
        want = {"master"} if role == "MASTER" else {"backup"}
        if box.sync_daemons() != want:
            problems.append(f"{box.name}: sync daemons {box.sync_daemons()}, want {want}")
    return problems


def assert_roles(scene: Scene, master: Box) -> None:
    """Exactly one master (``master``), and both boxes' guards match their roles (waited
    for: the sync daemons follow a transition in a task of their own, behind it)."""
    scene.wait_guard(master, "MASTER", SETTLE_TIMEOUT)
    scene.wait_guard(scene.lab.other(master), "BACKUP", SETTLE_TIMEOUT)


# ----- traffic figures -----------------------------------------------------------------------


def wait_failures_end(traffic: Traffic, timeout: float = SETTLE_TIMEOUT) -> float:
    """From now, until the requests started since have gone QUIET s without a failure;
    returns the start of that failure-free stretch (just after the last failure, or now).

    Call it once the roles have settled (after the state lines were seen). A request started
    before that may fail: it was in flight while the VIP moved (its handshake reached one box,
    its request the other; only connection sync saves those). Counting from an earlier event
    raced: a quiet stretch found before the switch let such a request, finishing later, fail
    "after" it. Failures after now are allowed only if they end; wait_all_served() then
    proves every later request served.
    """
    after = time.time()
    margin = QUIET + traffic.timeout
    found: list[float] = []

    def quiet(records: list[Record]) -> bool:
        # Only requests older than every open one: those are all finished, so a stretch
        # among them is really free of failures (one still open may yet time out).
        open_since = traffic.oldest_in_flight()
        later = [r for r in records if after <= r.start < open_since]
        if not later:
            return False
        last_failure = max((r.start for r in later if not r.ok), default=after)
        if max(r.start for r in later) - last_failure < margin:
            return False
        found.append(last_failure)  # a failure after this stretch is one to report, not skip
        return True

    traffic.wait(quiet, timeout, f"{QUIET} s without a failed request after {after:.3f}")
    return found[0]


def wait_all_served(traffic: Traffic) -> list[Record]:
    """wait_failures_end(), then CONFIRM s more traffic: every request started after the last
    failure must have been served.

    Returns the records so far (sorted by start); the traffic goes on.
    """
    since = wait_failures_end(traffic)
    traffic.wait_started_after(time.time(), round(CONFIRM / traffic.interval), 30.0)
    records = sorted(list(traffic.records), key=lambda r: r.start)
    failed = [r for r in records if r.start > since and not r.ok]
    assert failed == [], f"failed after {since:.3f}: {failures(failed)}; all: {spread(records)}"
    return records


def failures(records: list[Record]) -> str:
    """The failed requests among ``records``: what and when (wall clock, as the logs)."""
    failed = [r for r in records if not r.ok]
    when = " ".join(
        f"{time.strftime('%H:%M:%S', time.localtime(r.start))}.{int(r.start % 1 * 1000):03d}"
        f" {r.outcome} ({r.latency:.3f} s)"
        for r in failed[:10]
    )
    return f"{spread(failed)}: {when}" if failed else "none"


def figure(mode: str, fault: str, result: Failover, extra: str = "") -> None:
    """The case's figures in one greppable line (compare keepalived's ``baseline:``), then the
    details."""
    gap = result.outage
    end = result.failures_end
    print(
        f"\nlvsagent: {mode} {fault}: outage "
        + ("none" if gap is None else f"{gap * 1000:.0f} ms")
        + f", {result.failure_rate_after * 100:.1f} % of requests failed after the takeover"
        + f" ({result.tail_failure_rate * 100:.1f} % in the last {result.tail:g} s), failures end "
        + ("never (within the run)" if end is None else f"+{end:.2f} s")
        + (f"; {extra}" if extra else "")
    )
    print(result.report())


def b_steps_back(
    lab: TwoBox, b: Agent, mark: int, traffic: Traffic
) -> tuple[list[Record], set[str]]:
    """A is back and MASTER: B's agent back to BACKUP (a state line after ``mark``), then every
    request served (wait_all_served's records) and the client ends B's IPVS balanced in the
    meantime (none, when B re-balances nothing)."""
    b.wait_state("BACKUP", SETTLE_TIMEOUT, after=mark)
    b_before = client_endpoints(lab.b)
    records = wait_all_served(traffic)
    return records, client_endpoints(lab.b) - b_before


def why_rebalanced(lab: TwoBox, b: Agent, mark: int, ends: set[str]) -> str:
    """What B's kernel and agent say of client ends B's IPVS balanced as BACKUP: their IPVS
    and conntrack entries there (a conntrack entry left from before the redirect keeps a
    reused port's new SYN away from the NAT), and B's log since ``mark``."""
    from pyroute2 import Conntrack

    def dump() -> list[str]:
        with Conntrack() as ct:
            return [repr(e) for e in ct.dump_entries()
                    if f"{e.tuple_orig.saddr}:{e.tuple_orig.sport}" in ends]  # fmt: skip

    ipvs = [" ".join(row.split()) for row in ipvs_connections(lab.b)
            if any(e in row.split() for e in ends)]  # fmt: skip
    log = "\n".join(b.daemon.lines[mark:][-40:])
    return (f"B's IPVS entries: {ipvs}\nB's conntrack entries: {in_netns(lab.b.netns_path, dump)}"
            f"\nB's log:\n{log}")  # fmt: skip


def start_traffic(lab: TwoBox) -> Traffic:
    traffic = lab.traffic()
    traffic.start()
    traffic.wait_successes(after=0.0, count=100, timeout=60.0)
    return traffic


# ----- reused client ports -------------------------------------------------------------------


def fetch(port: int, timeout: float = 2.0) -> str:
    """One request to VIP:80 from client source port ``port``, in the calling thread's
    namespace: the box that answered, or why none did."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((CLIENT, port))
        s.settimeout(timeout)
        try:
            s.connect((VIP, PORT))
            s.sendall(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        except OSError as exc:
            return f"{type(exc).__name__}: {exc}"
    return data.partition(b"\r\n\r\n")[2].decode(errors="replace").strip() or "empty"


def fetch_from_ports(lab: TwoBox, ports: list[int]) -> dict[int, str]:
    """One request to VIP:80 from each client source port, one after the other: the box that
    answered, or why none did (2 s each at most)."""
    return in_netns(f"/run/netns/{lab.client.name}", lambda: {p: fetch(p) for p in ports})


def fetch_at_once(lab: TwoBox, ports: list[int], timeout: float = 1.0) -> dict[int, str]:
    """One request from each client source port, all at once (a thread each, in the client's
    namespace), as the traffic's: ``timeout`` s at most."""
    path = f"/run/netns/{lab.client.name}"
    with ThreadPoolExecutor(len(ports), initializer=setns.enter, initargs=(path,)) as pool:
        return dict(zip(ports, pool.map(functools.partial(fetch, timeout=timeout), ports),
                        strict=True))  # fmt: skip


def connections_to(box: Box, address: str) -> list[str]:
    """The client ends (ip:port) of ``box``'s IPVS connection entries whose real server is at
    ``address``."""
    rows = (line.split() for line in ipvs_connections(box))
    return sorted(cols[3] for cols in rows if cols[5] == f"{address}:{PORT}")


class ReusedPorts:
    """Client ports that box A balanced to box B while A was master, used again after B took
    over: B balances about half of them to A, where A's IPVS still holds the old connection
    entry (FIN_WAIT, real server B). Unless the loop guard keeps the peer's forwards away from
    IPVS, A sends them straight back to B, which sends them to A: a loop for that connection,
    seen by the client as ICMP time exceeded ("No route to host")."""

    def __init__(self, lab: TwoBox, first: int, count: int = 20) -> None:
        self.lab = lab
        answers = fetch_from_ports(lab, list(range(first, first + 2 * count, 2)))  # no traffic
        self.ports = [p for p, who in answers.items() if who == "boxb"]
        assert len(self.ports) >= count // 2 - 1, answers  # rr: every other one

    def again(self) -> dict[int, str]:
        """Each port once more (B is master now); checks first that A still has their entries."""
        stale = {f"{CLIENT}:{p}" for p in self.ports}
        missing = stale - client_endpoints(self.lab.a)
        assert missing == set(), f"A's IPVS no longer has entries for {sorted(missing)}"
        return fetch_from_ports(self.lab, self.ports)


def describe_reuse(answers: dict[int, str]) -> str:
    served = {who: sum(1 for w in answers.values() if w == who) for who in ("boxa", "boxb")}
    failed = {p: who for p, who in answers.items() if not who.startswith("box")}
    return (
        f"{len(answers)} client ports A had balanced to B, reused after the takeover: served "
        f"by A {served['boxa']} (B balanced them to A, whose old entries point to B), by B "
        f"{served['boxb']}; failed: {failed or 'none'}"
    )


# ----- long-lived connections (backup_only) ---------------------------------------------------


class Held:
    """Connections to VIP:80 that send half a request now and the rest later: a long-lived flow
    whose packets after a failover take the new master's path."""

    def __init__(self, lab: TwoBox, count: int) -> None:
        def open_all() -> list[socket.socket]:
            socks = []
            for _ in range(count):
                s = socket.create_connection((VIP, PORT), timeout=5.0)
                s.sendall(b"GET / HTTP/1.0\r\n")
                socks.append(s)
            return socks

        self.socks = in_netns(f"/run/netns/{lab.client.name}", open_all)
        self.endpoints = [f"{CLIENT}:{s.getsockname()[1]}" for s in self.socks]

    def destinations(self, director: Box) -> dict[str, str]:
        """Each connection's real server, from the director's IPVS connection table."""
        rows = director.ns.run("ipvsadm", "-Lnc").stdout.splitlines()
        found = {}
        for row in rows:
            cols = row.split()
            if len(cols) >= 6 and cols[3] in self.endpoints:
                found[cols[3]] = cols[5]
        return found

    def finish(self) -> list[str]:
        """Send the rest of each request; what each connection answered (a box name, or why
        not)."""
        answers = []
        for s in self.socks:
            try:
                s.sendall(b"Host: vip\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
                answers.append(data.partition(b"\r\n\r\n")[2].decode().strip() or "empty")
            except OSError as exc:
                answers.append(f"error: {exc}")
            finally:
                s.close()
        return answers


# ----- the cases -----------------------------------------------------------------------------


def test_new_connections_spread_over_both_boxes_and_the_backup_rebalances_none(
    scene: Scene,
) -> None:
    lab = scene.lab
    scene.settled()
    before = {box.label: client_endpoints(box) for box in (lab.a, lab.b)}
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
    new_a = client_endpoints(lab.a) - before["a"]
    new_b = client_endpoints(lab.b) - before["b"]
    # (The client reuses source ports quickly: one may repeat an entry from before, which is
    # then not new.)
    assert len(new_a) >= 100, len(new_a)
    if scene.mode != "backup_only":  # (its backup holds the synced copies of the master's)
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
    reused = ReusedPorts(lab, 41000) if scene.mode != "backup_only" else None
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
        engaged = _index(lines, r"loop guard \S+ engaged \(startup\)")
        removed = _index(lines, rf"removed virtual address {re.escape(VIP)}")
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


def _index(lines: list[str], pattern: str) -> int | None:
    rx = re.compile(pattern)
    return next((i for i, line in enumerate(lines) if rx.search(line)), None)


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
    reused = ReusedPorts(lab, 42000)
    traffic = start_traffic(lab)
    try:
        mark = b.mark()
        fault_at = a.sigterm()
        takeover = b.wait_state("MASTER", TAKEOVER_TIMEOUT, after=mark)
        assert a.daemon.proc.wait(15) == 0, a.daemon.lines[-20:]
        assert_roles(scene, lab.b)  # A: stopped, in the BACKUP state; B: MASTER
        reuse = reused.again()
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


# ----- a dead box ------------------------------------------------------------------------------

# The checks (the seed's keepalived TCP_CHECK): every 30 s, a 3 s connect timeout, one
# retry 1 s after a failed attempt.
DEAD_BOX_TIMEOUT = 3.0
# How long the traffic is watched after the takeover (or the removal) for failures that come
# back: the lab's client uses a source port again after ~25 s.
WATCH = 35.0
# Client source ports for requests of our own, outside the traffic's (ephemeral) range.
PROBE_PORTS = list(range(20000, 20040, 2))


def dead_box_config(on_failure: str | None) -> dict[str, Any]:
    """The mode's lab config with the issue's checks; ``on_failure`` None: the default."""
    health: dict[str, Any] = {"retry": 1, "delay_before_retry": 1.0}
    if on_failure is not None:
        health["on_failure"] = on_failure
    return {
        "loop_guard": "bypass",
        "health_interval": 30.0,
        "connect_timeout": DEAD_BOX_TIMEOUT,
        "overrides": {
            "global": {"ipvs_timeout_tcpfin": 15},
            "virtual_server": [{"health": health}],
        },
    }


@contextmanager
def reconfigured(scene: Scene, config: dict[str, Any]) -> Iterator[tuple[Agent, Agent]]:
    """Both agents restarted with ``config`` for one case (settled); stopped afterwards, so
    that the next case's settled() starts them with the mode's own config again."""
    saved = scene.config

    def stop_all() -> None:
        for agent in scene.agents.values():
            agent.stop()
        scene.agents.clear()

    stop_all()
    scene.config = config
    try:
        yield scene.settled()
    finally:
        stop_all()
        scene.config = saved


def once_out(
    lab: TwoBox, director: Box, dead: str, ports: list[int], traffic: Traffic, since: float
) -> tuple[dict[int, str], list[Record]]:
    """The dead box's real server is out of ``director``'s IPVS: wait until its connection
    entries are gone too, use ``ports`` again, let the traffic run WATCH s past ``since``.
    Returns the ports' answers and the records so far, by start."""
    wait_until(lambda: not connections_to(director, dead), 10.0,
               f"{director.name}'s IPVS: no connection entry to {dead}")  # fmt: skip
    again = fetch_at_once(lab, ports)
    traffic.wait_started_after(since + WATCH, 1, WATCH + 30.0)
    return again, sorted(list(traffic.records), key=lambda r: r.start)


def served(answers: dict[int, str]) -> bool:
    return all(who.startswith("box") for who in answers.values())


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
            # Swallowed: failed, and balanced to B. A probe A itself answered too slowly (1 s,
            # a loaded UML) is not B's doing and would prove nothing about B's removal.
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
        ]
        figure(scene.mode, "link down on the backup", cut)
        late = [r for r in records if not r.ok and r.start > removed]
        assert late == [], f"failed after B's removal: {failures(late)}\n{cut.report()}"
        # The probe would prove nothing had B swallowed none of its connections.
        assert swallowed, (first, entries)
        assert served(again), f"a client port used again reached the dead box: {again}"
        assert "not drained" in down_line, down_line
        assert_roles(scene, lab.a)


def client_vip_mac(lab: TwoBox) -> str | None:
    """The MAC the client sends the VIP's traffic to (its neighbour entry), if it has one."""
    out = lab.client.run("ip", "neigh", "show", VIP, check=False).stdout
    found = re.search(r"lladdr (\S+)", out)
    return found.group(1) if found else None


@modes("bypass")
def test_partition_then_heal_leaves_exactly_one_master(scene: Scene) -> None:
    """A and B stop hearing each other (both still reach the client): both become MASTER and
    each takes the other's real server out (unreachable: removed); B's gratuitous ARP moves
    the client to B. Healed: A hears B's lower-priority adverts and announces the VIP again,
    so the client comes back to A (left at B, it would be served by B's bypass alone, its
    ARP entry kept fresh by that traffic); B goes back to BACKUP, A stays MASTER, and each
    box's bypass matches its role; every request is served afterwards."""
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
        wait_until(lambda: client_vip_mac(lab) == lab.a.mac, 5.0,
                   "the client's ARP entry for the VIP: box A's MAC after the heal")  # fmt: skip
        back_to_a = time.time()
        records = wait_all_served(traffic)
        a_lines = a.daemon.lines[mark_a:]
    finally:
        traffic.stop()
    heal = Failover("lvsagent", "heal", VERSION, ADVERT_INT, records, heal_at, healed,
                    after=[lab.a.state(), lab.b.state()])  # fmt: skip
    figure(scene.mode, "partition", split)
    figure(scene.mode, "heal", heal, f"B back to BACKUP +{healed - heal_at:.2f} s after the heal, "
           f"the client's ARP entry at A again by +{back_to_a - heal_at:.2f} s")  # fmt: skip
    assert split_masters == ("MASTER", "MASTER"), split_masters
    assert split.failures_end is not None and heal.failures_end is not None
    # A never left MASTER; B did once healed: exactly one master.
    assert not any(_STATE.search(line) for line in a_lines), a_lines
    assert last_state(a) == "MASTER" and last_state(b) == "BACKUP"
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
    before = {box.label: client_endpoints(box) for box in (lab.a, lab.b)}

    traffic = lab.traffic()
    traffic.start(count=200)
    records = traffic.wait_done(60.0)
    counts = spread(records)
    new = {box.label: client_endpoints(box) - before[box.label] for box in (lab.a, lab.b)}
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
        before = client_endpoints(lab.b)
        traffic = lab.traffic()
        traffic.start(count=200)
        records = traffic.wait_done(60.0)
        counts = spread(records)
        print(f"\nlvsagent: fwmark (learned MAC) spread: {dict(sorted(counts.items()))}")
        assert sum(1 for r in records if r.ok) == 200, failures(records)
        assert 0.4 <= share(records, "boxa") <= 0.6, counts
        assert client_endpoints(lab.b) - before == set()
    finally:
        scene.config = configured
