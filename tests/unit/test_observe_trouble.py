"""Trouble where operators look: IPVS that cannot be programmed, quorum lost, drains.

The reconciler's own record of a failing kernel (up, why, since when), and how
`lvsagent status` and /metrics show it.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Sequence

from lvsagent.ipvs.genl import Timeouts
from lvsagent.ipvs.model import Table
from lvsagent.ipvs.plan import Op
from lvsagent.ipvs.reconciler import IpvsReconciler
from lvsagent.observe.control import format_status
from lvsagent.observe.metrics import Metrics
from lvsagent.observe.snapshot import AgentSnapshot, IpvsStatus, ServerStatus, ServiceStatus


class NoModuleYet:
    """A kernel without IPVS until ``loaded``."""

    loaded = False

    async def dump(self) -> Table:
        if not self.loaded:
            raise OSError(errno.ENOENT, "IPVS open generic netlink family: modprobe ip_vs")
        return Table()

    async def apply_many(self, ops: Sequence[Op]) -> Sequence[bool | OSError | None]:
        return [True] * len(ops)

    async def get_timeouts(self) -> Timeouts:
        return Timeouts(0, 0, 0)

    async def set_timeouts(self, tcp: int, tcp_fin: int, udp: int) -> None:
        pass


def test_the_reconciler_says_why_ipvs_fails_and_since_when() -> None:
    kernel = NoModuleYet()
    rec = IpvsReconciler(kernel, Table(), "report", 30.0)
    assert rec.up is None
    assert not asyncio.run(rec.reconcile("start"))
    assert rec.up is False and "modprobe ip_vs" in rec.trouble
    since = rec.trouble_since
    assert since is not None
    asyncio.run(rec.reconcile("retry"))
    assert rec.trouble_since == since  # the trouble's start, not the last retry
    kernel.loaded = True
    assert asyncio.run(rec.reconcile("retry"))
    assert (rec.up, rec.trouble, rec.trouble_since, rec.errors) == (True, "", None, 2)


SNAP = AgentSnapshot(
    servers=(ServerStatus("10.0.0.100:80/tcp", "10.0.0.1", 80, True, 1, drained_since=100.0),),
    ipvs=IpvsStatus(False, 4, "cannot read the IPVS table: no module", 100.0),
    services=(ServiceStatus("10.0.0.100:80/tcp", True, "10.0.0.9:80"),),
)


def test_status_puts_ipvs_quorum_and_drains_in_capitals() -> None:
    text = format_status(SNAP, 160.0)
    assert "  IPVS: FAILING since " in text and "(1m00s ago): cannot read the IPVS table" in text
    assert "  10.0.0.100:80/tcp  QUORUM LOST: sorry server 10.0.0.9:80 serves" in text
    assert "DRAINED by an operator since " in text
    fine = AgentSnapshot(ipvs=IpvsStatus(True, 4))
    assert "IPVS: programmed as configured (4 error(s) since the start)" in format_status(fine, 0)


def test_metrics_have_ipvs_up_errors_quorum_and_drains() -> None:
    text = Metrics(lambda: SNAP).render().decode()
    for line in (
        "lvsagent_ipvs_up 0.0",
        "lvsagent_ipvs_reconcile_errors_total 4.0",
        'lvsagent_service_quorum_lost{service="10.0.0.100:80/tcp"} 1.0',
        'lvsagent_service_sorry_server_active{service="10.0.0.100:80/tcp"} 1.0',
        'lvsagent_realserver_drained{rs="10.0.0.1:80",service="10.0.0.100:80/tcp"} 1.0',
    ):
        assert line in text, line
    assert "lvsagent_ipvs_up" not in Metrics(lambda: AgentSnapshot()).render().decode()
