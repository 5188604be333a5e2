"""Kernel-lab tests: a failure is reported the moment it happens, not only at the end.

Why: the lab guest has one deadline for the whole session (make test-kernel's
KERNEL_TIMEOUT). If a later test hangs into it, the runner kills the guest and pytest's
end-of-session report, with every earlier failure's traceback, is never written.

The agent tests' ``lab`` fixture (agentlab.py) is registered here, once, and so are the
two-box cases' ``scene`` (one lab per loop-guard mode), its mode parametrisation and the
agents' logs after a failed case (twobox_case.py); they act only where a test takes ``scene``.
"""

from __future__ import annotations

import sys

import pytest

from tests.kernel.agentlab import lab  # noqa: F401  (the agent lab fixture, for every agent test)
from tests.kernel.twobox_case import (  # noqa: F401  (the two-box cases' fixtures and modes)
    logs_on_failure,
    pytest_generate_tests,
    scene,
)
from tests.kernel.uml import inside_lab


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed and inside_lab():
        sys.stdout.write(
            f"\n----- FAILED {report.nodeid} ({report.when}), reported at once -----\n"
            f"{report.longreprtext}\n----- end of {report.nodeid} -----\n"
        )
        sys.stdout.flush()
