"""keepalived's MISC_CHECK: a real server's health decided by a command's exit status.

Exit 0 passes; anything else fails, and so does a run killed at its timeout (the
check's ``timeout``, else its interval, as keepalived uses its delay_loop).  With
``dynamic`` (misc_dynamic), exit 2..255 passes too and sets the server's IPVS
weight to the status minus 2 (0..253); exit 0 then keeps the weight the last such
status set, exit 1 fails.

The command gets no arguments of its own (keepalived passes none: write them in
``script``); it finds the real server it checks in its environment, as
LVSAGENT_RS_ADDRESS and LVSAGENT_RS_PORT.  It runs as every script does
(scripts/runner.py): its own user or script_user, no shell, killed at its timeout.
"""

from __future__ import annotations

import ipaddress

from lvsagent.config.schema import HealthCheck
from lvsagent.health.checks import run_check
from lvsagent.health.monitor import Check
from lvsagent.health.tracker import CheckResult
from lvsagent.scripts.runner import ScriptRun, ScriptRunner

__all__ = ["misc_result", "with_misc"]

DYNAMIC = range(2, 256)


def misc_result(run: ScriptRun, dynamic: bool) -> CheckResult:
    """One run as a check result: pass or fail, the reason, and a dynamic weight if any."""
    reason = run.describe()
    if run.ok:
        return CheckResult(True, reason, run.duration)
    if dynamic and run.status in DYNAMIC and run.status is not None:
        return CheckResult(True, f"{reason}: weight {run.status - 2}", run.duration,
                           weight=run.status - 2)  # fmt: skip
    return CheckResult(False, reason, run.duration)


def with_misc(runner: ScriptRunner, other: Check = run_check) -> Check:
    """The monitor's check: MISC_CHECKs through ``runner``, every other type through ``other``."""

    async def check(health: HealthCheck, address: ipaddress.IPv4Address, port: int) -> CheckResult:
        if health.type != "misc":
            return await other(health, address, port)
        misc = health.misc
        if misc.script is None:  # the loader refuses this
            return CheckResult(False, "MISC_CHECK without a script", 0.0)
        run = await runner.run(
            misc.script,
            misc.timeout if misc.timeout is not None else health.interval,
            kind="misc_check",
            name=f"{address}:{port}",
            env={"LVSAGENT_RS_ADDRESS": str(address), "LVSAGENT_RS_PORT": str(port)},
        )
        return misc_result(run, misc.dynamic)

    return check
