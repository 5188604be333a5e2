"""pytest plugin for the Debian-kernel guest: the kernel lab's waits for an agent to start
and to stop, lengthened (``-p tests.distro.waits``, as ``make test-distro`` runs the guest's
pytest).

Why: those waits (30 s) cover a freshly started ``lvsagent run`` up to its first states,
which in the kernel lab, where processes run at the host's speed, takes a second or two.
Under TCG the daemon's imports alone take 10-30 s, more while the test's traffic competes
for the emulated CPUs, and the wait ran out with the agent still importing; a clean stop,
too, outlasted the 10 s after which the lab SIGKILLs. Only waits that bound an agent's start
or stop are lengthened, by name: what the tests assert (the outcomes, the
protocol's own timers, how long failures may go on) is unchanged. Outside the guest this
does nothing.
"""

from __future__ import annotations

import sys

import pytest

from tests.distro.qemu import inside_distro

# Module -> its constants that bound an agent's start (and are used for nothing else).
START_WAITS = {
    "tests.kernel.twobox": ("START_TIMEOUT",),  # start_pair: both agents to their roles
    "tests.kernel.agentlab": ("START_TIMEOUT",),  # an agent to its first IPVS pass
    "tests.kernel.test_agent_traffic": ("START_TIMEOUT",),  # the same, as its tests name it
}
# Functions whose default timeout is how long to wait for an agent to stop: Daemon.stop sends
# SIGTERM, then SIGKILL after it (15 s, systemd's TimeoutStopSec). The daemon bounds its own
# stop's work at 12 s; under TCG the interpreter's exit adds seconds on top.
STOP_WAITS = {"tests.netns.lab": ("Daemon.stop",)}
FACTOR = 4


def lengthen(modules: dict[str, object], factor: float = FACTOR) -> list[str]:
    """Multiply the START_WAITS constants of the loaded ``modules``; what was changed."""
    changed = []
    for name, constants in START_WAITS.items():
        module = modules.get(name)
        for constant in constants if module is not None else ():
            value = getattr(module, constant)
            setattr(module, constant, value * factor)
            changed.append(f"{name}.{constant} {value:g} -> {value * factor:g} s")
    for name, functions in STOP_WAITS.items():
        module = modules.get(name)
        for dotted in functions if module is not None else ():
            owner, attr = dotted.split(".")
            function = getattr(getattr(module, owner), attr)
            (value,) = function.__defaults__
            function.__defaults__ = (value * factor,)
            changed.append(f"{name}.{dotted} timeout {value:g} -> {value * factor:g} s")
    return changed


def pytest_collection_finish(session: pytest.Session) -> None:
    """After collection: the lab's modules are imported, no test has run."""
    if inside_distro():
        for line in lengthen(dict(sys.modules)):
            print(f"distro: start wait {line}")
