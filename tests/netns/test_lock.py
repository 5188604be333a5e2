"""A second `lvsagent run` with the same state directory is refused before it changes anything.

Why: without it, a second agent started by hand beside a running one removed the live
master's VIP (it starts as BACKUP), engaged its loop guard, and then both claimed
MASTER and fought over the nft table.
"""

from __future__ import annotations

import re
import signal

from tests.netns.conftest import Pair
from tests.netns.lab import agent_config, start_agent

VIP = "10.99.0.100"


def test_a_second_agent_is_refused_naming_the_first(pair: Pair) -> None:
    cfg = agent_config(pair.tmp / "a.toml", interface="eth0", priority=100, version=3,
                       advert_int=0.1)  # fmt: skip
    first = pair.track(start_agent(pair.a, cfg, "agent-a"))
    first.wait_for(r"-> MASTER", 5)
    pair.a.wait_address("eth0", VIP, present=True, timeout=2)
    mark = first.mark()
    second = pair.track(start_agent(pair.a, cfg, "agent-a2", log_level="info"))
    assert second.exited(10) == 75
    text = "\n".join(second.lines)
    assert re.search(rf"another lvsagent \(PID {first.proc.pid}\) .*{pair.tmp}/a-state", text), text
    assert "nothing was changed" in text
    # Nothing of the second one reached the host: the first is master, undisturbed.
    assert not re.search(r"virtual address|loop guard|-> ", text)
    first.assert_quiet(r"-> |virtual address", 1.0, after=mark)
    assert pair.a.has_address("eth0", VIP)
    # Once the first is gone, the lock is free again (the kernel drops it even on kill -9).
    first.signal(signal.SIGKILL)
    first.exited(5)
    third = pair.track(start_agent(pair.a, cfg, "agent-a3"))
    third.wait_for(r"-> MASTER", 5)
