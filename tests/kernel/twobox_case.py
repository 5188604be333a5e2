"""The two-box lab's cases for lvsagent, shared by their test modules: one lab per loop-guard
mode (the ``scene`` fixture, module-scoped), its agents' config, the roles' kernel state, the
waits for failures to end, and the figures each case prints.

A test module takes the fixtures and the mode parametrisation by importing ``scene``,
``logs_on_failure`` and ``pytest_generate_tests`` from here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.kernel.twobox import (
    Box,
    TwoBox,
    balanced_here,
    in_netns,
    ipvs_connections,
    ipvs_ready,
    twobox_lab,
)
from tests.kernel.twobox_agents import Agent, wait_until
from tests.kernel.twobox_scenario import Failover
from tests.kernel.twobox_traffic import Record, Traffic, spread

VERSION = 2
ADVERT_INT = 1.0  # the seed's advert_int, as in keepalived's baseline
SETTLE_TIMEOUT = 30.0
# A restarted after kill -9 stays BACKUP this long after hearing B (its preempt_delay for that
# start): time enough to read its kernel state in the BACKUP role.
PREEMPT_HOLD = 20.0  # 10 s was eaten once by the role checks under CI's load (13.5 s)
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

STATE_RE = re.compile(r"VI_1 \(vrid \d+ on \S+\): \S+ -> (MASTER|BACKUP|FAULT)\b")


def last_state(agent: Agent) -> str | None:
    """The state the agent last logged entering (None before the first transition)."""
    for line in reversed(agent.daemon.lines):
        if found := STATE_RE.search(line):
            return found.group(1)
    return None


def line_index(lines: list[str], pattern: str) -> int | None:
    """The index of the first of ``lines`` that ``pattern`` matches, if any."""
    rx = re.compile(pattern)
    return next((i for i, line in enumerate(lines) if rx.search(line)), None)


def guard_problems(scene: Scene, box: Box, role: str) -> list[str]:
    """How box ``box``'s kernel state differs from the loop guard's for ``role`` (MASTER or
    BACKUP; a stopped agent leaves BACKUP's): [] when it matches."""
    problems = []
    vip = box.has_vip()
    if vip != (role == "MASTER"):
        problems.append(f"VIP on {box.name}'s eth0: {vip}")
    # Every mode: the VIP on lo (a connection the box served as master still reaches it when
    # the new master forwards it), and the sync daemons following the role (the new master's
    # IPVS knows the connections); the old role's daemon lingers 3 s after a switch.
    if not box.has_lo_vip():
        problems.append(f"{box.name}: no VIP on lo")
    want = {"master"} if role == "MASTER" else {"backup"}
    if box.sync_daemons() != want:
        problems.append(f"{box.name}: sync daemons {box.sync_daemons()}, want {want}")
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
    b_before = balanced_here(lab.b)
    records = wait_all_served(traffic)
    return records, balanced_here(lab.b) - b_before


def why_rebalanced(lab: TwoBox, b: Agent, mark: int, ends: set[str]) -> str:
    """What B's kernel and agent say of client ends B's IPVS balanced as BACKUP: their IPVS
    and conntrack entries there (a conntrack entry left from before the redirect keeps a
    reused port's new SYN away from the NAT), and B's log since ``mark``."""
    from pyroute2 import Conntrack

    def dump() -> list[str]:
        try:
            with Conntrack() as ct:
                return [repr(e) for e in ct.dump_entries()
                        if f"{e.tuple_orig.saddr}:{e.tuple_orig.sport}" in ends]  # fmt: skip
        except Exception as exc:  # the diagnosis must not hide the assertion it explains
            return [f"(conntrack dump failed: {exc!r})"]

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
