"""Starting a sync daemon is bounded: the kernel's answer to a daemon request can go missing.

In the lab about one daemon request in three got no acknowledgement; an unbounded start
would stall whoever waits on it (a transition, a check) for good.  These tests keep the
request unanswered and read the daemons back, as IpvsKernel does on timeout.
"""

from __future__ import annotations

import asyncio
import errno
from typing import Any

import pytest

import lvsagent.ipvs.kernel as kernel_module
from lvsagent.ipvs.genl import SyncDaemon
from lvsagent.ipvs.kernel import IpvsError, IpvsKernel


def unanswered(monkeypatch: pytest.MonkeyPatch, running: list[SyncDaemon]) -> IpvsKernel:
    """A kernel whose start request never gets its answer, and whose dump shows ``running``."""

    async def never(*_: Any) -> bool:
        await asyncio.Event().wait()
        return True

    async def dump() -> list[SyncDaemon]:
        return running

    monkeypatch.setattr(kernel_module, "DAEMON_REPLY_TIMEOUT", 0.01)
    k = IpvsKernel()
    monkeypatch.setattr(k, "_start", never)
    monkeypatch.setattr(k, "sync_daemons", dump)
    return k


def start(k: IpvsKernel) -> bool:
    async def run() -> bool:
        # A generous bound of the test's own: without one in start_sync_daemon, this fails.
        return await asyncio.wait_for(k.start_sync_daemon("master", "eth0", 51), 5.0)

    return asyncio.run(run())


def test_a_start_whose_answer_is_lost_but_which_runs_counts_as_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    k = unanswered(monkeypatch, [SyncDaemon("master", "eth0", 51)])
    assert start(k) is True


def test_a_start_with_no_answer_and_no_daemon_is_an_error_that_says_what_to_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    others = [SyncDaemon("backup", "eth0", 51), SyncDaemon("master", "eth1", 51)]
    k = unanswered(monkeypatch, others)
    with pytest.raises(IpvsError) as caught:
        start(k)
    assert caught.value.errno == errno.ETIMEDOUT
    assert "ipvsadm -L --daemon" in str(caught.value)
