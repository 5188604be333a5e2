"""`make bench` figures for planned moves: box A's agent stopped (SIGTERM), then started again
(it preempts), with connections held open across each move and short requests all along.

Why: a stop for an upgrade and the return after it are moves an operator plans; a client
should not notice either. What breaks at a move is a connection whose packets after it reach
the new master: unless that box's IPVS knows the connection (connection sync), it is reset.
The held connections (HELD per move, tests/kernel/twobox_probes.Held) send half a request
before the move and the rest after it; the traffic is the lab's, a new connection every 20 ms.

    twobox_failed_requests_sigterm[_MODE] <n> requests      held or short, failed at the stop
    twobox_failed_requests_preemption[_MODE] <n> requests   the same at the return

Goal 0 in every mode (lvsagent's default guard unsuffixed, the others suffixed), with
keepalived's figure (the seed's configuration, no sync daemon) from the same boot beside it.
One run each: the count is what a client lost, not a timing.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.bench.twobox import Figure, agent_kind

if TYPE_CHECKING:
    from tests.kernel.twobox import TwoBox
    from tests.kernel.twobox_probes import Held

HELD = 8  # connections held across each move; rr sends about half to each box
MODES = (None, "fwmark", "backup_only")  # lvsagent's guards (None: its default, bypass)
SETTLE = 30.0


def planned(workdir: Path, agent: str, **config: Any) -> tuple[int, int, list[str]] | None:
    """One stop and one return of box A's agent in a fresh lab: the failed (held + short)
    requests at each, and what the held connections answered; None if the run failed."""
    from tests.kernel.twobox import twobox_lab
    from tests.kernel.twobox_probes import Held
    from tests.kernel.twobox_scenario import TAKEOVER_TIMEOUT

    kind = agent_kind(agent)
    workdir.mkdir()
    try:
        with twobox_lab(workdir) as lab:
            a, b = lab.start_pair(kind, version=2, advert_int=1.0, **config)
            start = lab.start_keepalived if kind == "keepalived" else lab.start_lvsagent
            traffic = lab.traffic()
            traffic.start()
            try:
                traffic.wait_successes(after=0.0, count=100, timeout=60.0)
                held = hold(lab)
                mark = b.mark()
                stop_at = a.sigterm()
                took = b.wait_state("MASTER", TAKEOVER_TIMEOUT, after=mark)
                traffic.wait_started_after(took, 100, 60.0)
                where = held.destinations(lab.b) if isinstance(held, Held) else {}
                stopped = held.finish() if isinstance(held, Held) else held
                held = hold(lab)
                mark = b.mark()
                back_at = time.time()
                a = start("a", version=2, advert_int=1.0, **config)
                back = a.wait_state("MASTER", SETTLE)
                b.wait_state("BACKUP", SETTLE, after=mark)
                traffic.wait_started_after(back, 100, 60.0)
                returned = held.finish() if isinstance(held, Held) else held
            finally:
                records = traffic.stop()
    except (AssertionError, OSError, subprocess.SubprocessError) as exc:
        print(f"bench-error: {agent} planned moves in {workdir.name}: {exc}")
        return None
    lost = [r for r in records if not r.ok]
    at_stop = sum(stop_at - 2.0 <= r.start < back_at for r in lost)
    at_return = sum(r.start >= back_at for r in lost)
    broken = [x for x in stopped if not x.startswith("box")]
    broken_back = [x for x in returned if not x.startswith("box")]
    notes = [f"held across the stop: {stopped} (their real servers in the new master's IPVS: "
             f"{where})", f"held across the return: {returned}"]
    return at_stop + len(broken), at_return + len(broken_back), notes


def hold(lab: TwoBox) -> Held | list[str]:
    """HELD connections held open, or why none could be opened (each counts as failed: with
    keepalived a stopped master can leave new connections failing)."""
    from tests.kernel.twobox_probes import Held

    try:
        return Held(lab, HELD)
    except OSError as exc:
        return [f"not opened: {exc}"] * HELD


def measure_planned(agent: str, tmp: Path) -> list[Figure]:
    """Inside the lab: the planned moves of ``agent`` (lvsagent: each loop guard)."""
    figures = []
    for mode in MODES if agent == "lvsagent" else (None,):
        suffix = f"_{mode}" if mode else ""
        config = {"loop_guard": mode} if mode else {}
        result = planned(Path(tempfile.mkdtemp(dir=tmp)) / "lab", agent, **config)
        if result is None:
            continue
        at_stop, at_return, notes = result
        print(f"{agent}{suffix} planned moves: {at_stop} failed at the stop, {at_return} at "
              f"the return; " + "; ".join(notes), flush=True)  # fmt: skip
        figures += [
            Figure(agent, f"twobox_failed_requests_sigterm{suffix}", at_stop, "requests"),
            Figure(agent, f"twobox_failed_requests_preemption{suffix}", at_return, "requests"),
        ]
    return figures
