"""`make bench` figures for the two-box LVS under traffic, measured inside the kernel lab.

What a client sees when box A's agent is killed (kill -9 of every process) or stopped (SIGTERM)
while its web server stays up: at advert 1 s (VRRPv2) and 0.1 s (VRRPv3). The scenario is
tests/kernel/twobox_scenario.failover, the same one the kernel tests assert on. Per case:

    bench: twobox_outage_<fault>_<v>_<interval> <ms> ms          longest time with no answer
    bench: twobox_failure_rate_after_<fault>_<v>_<interval> <%> pct   requests failing after
                                                                       the takeover
    bench: twobox_failures_end_after_<fault>_<v>_<interval> <s> s  fault to the last failure
                                                                   (inf: still failing at the end)
    bench: twobox_spread_a_pct <%> pct                            box A's share before the fault

Those run lvsagent with its default loop guard (bypass). The other two guards get the hard
case, kill -9 at advert 1 s (VRRPv2), with the same three figures suffixed by the mode, e.g.
``twobox_failures_end_after_kill9_v2_1s_backup_only`` (keepalived has no such modes: no ratio).

A dead box (tests/bench/twobox_linkdown.py): box A's cable is pulled, with the seed's checks
(every 30 s, 3 s connect timeout, retry 1) on both agents' defaults otherwise, watched 40 s
after the takeover, the client reusing its source ports (~25 s round):

    bench: twobox_linkdown_failures_end_s <s> s        the cut to the last failed request
    bench: twobox_linkdown_failures_end_after_takeover_s <s> s    the same from the takeover
                                                       (goal: at most the connect timeout)
    bench: twobox_linkdown_late_failures <n> requests  failed after the takeover + connect
                                                       timeout (goal 0)

each the median of at least 5 runs, and the worst with ``_worst`` appended.

Planned moves (tests/bench/twobox_planned.py): a stop of box A's agent and its return, with
connections held open across each and short requests all along, in each loop guard:

    bench: twobox_failed_requests_sigterm[_MODE] <n> requests      failed at the stop (goal 0)
    bench: twobox_failed_requests_preemption[_MODE] <n> requests   failed at the return (goal 0)

``run_twobox_bench("keepalived")`` gives the baseline: keepalived configured as in the seed,
with its bypass script. ``run_twobox_bench("lvsagent")`` measures keepalived too, in the same
boot, and adds to each lvsagent figure its ratio to keepalived's (ratio <= 1.0 is the target;
the outage is wanted under 0.5 s at advert_int 0.1 s).

The host has no IPVS, so run_twobox_bench boots the lab (tests.kernel.uml.run_in_uml) and runs
this module there with --guest, which prints each figure as a ``twobox-figure: {json}`` line.
By hand: ``python -m tests.bench.twobox [--agent lvsagent] [--reps 3]``. Benchmarks assert
nothing about time.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from tests.kernel.uml import KernelMissing, UmlError, run_in_uml

if TYPE_CHECKING:
    from tests.kernel.twobox_agents import AgentKind
    from tests.kernel.twobox_scenario import Failover, Fault

ROOT = Path(__file__).resolve().parents[2]
UML_TIMEOUT = 2700.0  # one boot for the whole two-box bench, the dead box's 10 runs included
BASELINE = "keepalived"
CASES = ((2, 1.0), (3, 0.1))  # (VRRP version, advert interval)
# lvsagent's other loop guards, measured on kill -9 at (2, 1.0) only.
OTHER_GUARDS = ("fwmark", "backup_only")
FAULTS: tuple[Fault, ...] = ("kill9", "sigterm")
FIGURE_PREFIX = "twobox-figure: "
AGENTS = ("keepalived", "lvsagent")


@dataclass(frozen=True)
class Figure:
    """One measured figure of one agent: a bench line's name, value and unit."""

    agent: str
    name: str
    value: float
    unit: str

    def line(self, baseline: Figure | None = None) -> str:
        text = f"bench: {self.name} {_number(self.value)} {self.unit}"
        if baseline is None:
            return f"{text} {self.agent}"
        if baseline.value == 0 or math.isinf(baseline.value):
            ratio = "n/a"
        else:
            ratio = f"{self.value / baseline.value:.2f}"
        return (
            f"{text} ratio {ratio} vs {baseline.agent} ({_number(baseline.value)} {baseline.unit})"
        )


def _number(value: float) -> str:
    if math.isinf(value):
        return "inf"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}"


def run_twobox_bench(
    agent: str = BASELINE,
    *,
    reps: int = 1,
    timeout: float = UML_TIMEOUT,
    stream: TextIO | None = None,
    only: str | None = None,
) -> list[str]:
    """Boot the lab, measure ``agent`` (and keepalived, for ratios), return ``bench:`` lines.

    ``reps`` runs per case, median reported. ``stream`` (default stderr) gets the guest's
    output as it comes, with a readable report of each run. Raises KernelMissing when no lab
    kernel is built, UmlError when the lab cannot run, RuntimeError when no figure came back.
    """
    agents = [BASELINE] if agent == BASELINE else [BASELINE, agent]
    figures = run_twobox_figures(agents, reps=reps, timeout=timeout, stream=stream, only=only)
    if agent == BASELINE:
        return [f.line() for f in figures if f.agent == BASELINE]
    theirs = {f.name: f for f in figures if f.agent == BASELINE}
    return [f.line(theirs.get(f.name)) for f in figures if f.agent == agent]


def run_twobox_figures(
    agents: Sequence[str],
    *,
    reps: int = 1,
    timeout: float = UML_TIMEOUT,
    stream: TextIO | None = None,
    only: str | None = None,
) -> list[Figure]:
    """Every figure of every agent in ``agents``, measured in one boot of the lab (``only``
    "linkdown" or "planned": just the dead box's, or the planned moves')."""
    cmd = [sys.executable, "-m", "tests.bench.twobox", "--guest", "--reps", str(reps)]
    if only is not None:
        cmd += ["--only", only]
    for name in agents:
        cmd += ["--agent", name]
    status, output = run_in_uml(
        cmd, timeout, cwd=ROOT, stream=stream if stream is not None else sys.stderr
    )
    figures = [
        Figure(**json.loads(line[len(FIGURE_PREFIX) :]))
        for line in output.splitlines()
        if line.startswith(FIGURE_PREFIX)
    ]
    if not figures:
        tail = "\n".join(output.splitlines()[-30:])
        raise RuntimeError(f"the two-box bench printed no figure (exit {status}):\n{tail}")
    return figures


# ----- inside the lab --------------------------------------------------------------------------


def _label(version: int, advert_int: float) -> str:
    return f"v{version}_{'1s' if advert_int == 1 else f'{round(advert_int * 1000)}ms'}"


def agent_kind(agent: str) -> AgentKind:
    if agent not in AGENTS:
        raise ValueError(f"unknown agent {agent!r}: {' or '.join(AGENTS)}")
    return cast("AgentKind", agent)


def run_once(workdir: Path, kind: AgentKind, fault: Fault, **options: Any) -> Failover | None:
    """One failover() in a fresh lab under ``workdir``; None (and a ``bench-error:`` line)
    when the run fails: one failed run costs its figure, not the whole bench."""
    from tests.kernel.twobox import twobox_lab
    from tests.kernel.twobox_scenario import failover

    workdir.mkdir()
    try:
        with twobox_lab(workdir) as lab:
            return failover(lab, kind, fault, **options)
    except (AssertionError, OSError, subprocess.SubprocessError) as exc:
        print(f"bench-error: {kind} {fault} in {workdir.name}: {exc}")
        return None


def measure_agent(agent: str, reps: int, tmp: Path) -> list[Figure]:
    """Inside the lab: every case for one agent, printing each run's report as it goes."""
    from tests.kernel.twobox_traffic import share

    kind = agent_kind(agent)
    figures: list[Figure] = []
    spread_a: list[float] = []
    cases: list[tuple[int, float, Fault, str | None]] = [
        (version, advert_int, fault, None) for version, advert_int in CASES for fault in FAULTS
    ]
    if agent == "lvsagent":
        cases += [(2, 1.0, "kill9", guard) for guard in OTHER_GUARDS]
    for version, advert_int, fault, guard in cases:
        outages, rates, ends = [], [], []
        name = f"{fault}_{_label(version, advert_int)}" + (f"_{guard}" if guard else "")
        extra = {"loop_guard": guard} if guard else {}
        for rep in range(reps):
            result = run_once(
                tmp / f"{agent}-{name}-{rep}", kind, fault, version=version,
                advert_int=advert_int, **extra,
            )  # fmt: skip
            if result is None:
                continue
            print(result.report(), flush=True)
            gap = result.outage
            outages.append(math.inf if gap is None else gap * 1000)
            rates.append(result.failure_rate_after * 100)
            end = result.failures_end
            ends.append(math.inf if end is None else end)
            if guard is None:
                before = [r for r in result.records if r.start < result.fault_at]
                spread_a.append(share(before, "boxa") * 100)
        if not outages:
            continue
        figures += [
            Figure(agent, f"twobox_outage_{name}", statistics.median(outages), "ms"),
            Figure(agent, f"twobox_failure_rate_after_{name}", statistics.median(rates), "pct"),
            Figure(agent, f"twobox_failures_end_after_{name}", statistics.median(ends), "s"),
        ]
    if spread_a:
        figures.append(Figure(agent, "twobox_spread_a_pct", statistics.median(spread_a), "pct"))
    return figures


def guest_main(agents: Sequence[str], reps: int, only: str | None = None) -> int:
    from tests.bench.twobox_linkdown import REPS, measure_linkdown
    from tests.bench.twobox_planned import measure_planned

    with tempfile.TemporaryDirectory(prefix="lvsagent-twobox-") as tmp:
        for agent in agents:
            figures = measure_agent(agent, reps, Path(tmp)) if only is None else []
            if only in (None, "planned"):
                figures += measure_planned(agent, Path(tmp))
            if only in (None, "linkdown"):
                # Its figures are about "in every run": at least REPS runs, worst and median.
                figures += measure_linkdown(agent, max(reps, REPS), Path(tmp))
            for figure in figures:
                print(FIGURE_PREFIX + json.dumps(asdict(figure)), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.twobox")
    p.add_argument("--agent", action="append", help="lvsagent or keepalived (default keepalived)")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--timeout", type=float, default=UML_TIMEOUT)
    p.add_argument("--guest", action="store_true", help="inside the lab: measure and print")
    p.add_argument("--only", choices=["linkdown", "planned"], help="only these cases")
    args = p.parse_args(argv)
    agents = args.agent or [BASELINE]
    if args.guest:
        return guest_main(agents, args.reps, args.only)
    if any(agent not in AGENTS for agent in agents):
        p.error(f"--agent: one of {', '.join(AGENTS)}")
    if len(agents) != 1:
        p.error("give one --agent (keepalived is measured alongside any other)")
    try:
        lines = run_twobox_bench(agents[0], reps=args.reps, timeout=args.timeout, only=args.only)
    except KernelMissing as exc:
        print(f"twobox bench: SKIPPED: {exc}", file=sys.stderr)
        return 77
    except (UmlError, RuntimeError) as exc:
        print(f"twobox bench: FAILED: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
