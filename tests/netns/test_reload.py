"""SIGHUP between two real agents: VRRP tunables applied in place, identity changes refused.

Why: keepalived's reload applies a new priority or a new virtual address to the instances
it keeps; an operator moving off it must not have to restart (a priority-0 handover and a
preemption back: two failovers) to change one.  What a restart alone can change is refused
whole, and the running daemon keeps its state and addresses.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

from tests.netns.conftest import Pair
from tests.netns.lab import Daemon

VIP = "10.99.0.100"
VIP2 = "10.99.0.101"
TRANSITION = r"-> (MASTER|BACKUP|FAULT)"


def matching(daemon: Daemon, pattern: str, after: int) -> list[str]:
    return [line for line in daemon.lines[after:] if re.search(pattern, line)]


def rewrite(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def test_a_raised_priority_preempts_without_a_restart(pair: Pair) -> None:
    ca, cb = pair.configs(advert_int=0.1, version=3)
    da, db = pair.settled_pair(ca, cb)
    pid_b = db.proc.pid
    mark_a, mark_b = da.mark(), db.mark()
    rewrite(cb, "priority = 50", "priority = 150")
    db.signal(signal.SIGHUP)
    db.wait_for(r"reload: VI_1 .*: priority 50 -> 150", 5, after=mark_b)
    line = db.wait_for(r"BACKUP -> MASTER", 5, after=mark_b)
    assert "preempting lower-priority master 10.99.0.1 (100 < 150)" in line
    assert "higher priority 150 from 10.99.0.2" in da.wait_for(r"MASTER -> BACKUP", 5, after=mark_a)
    pair.b.wait_address("eth0", VIP, present=True, timeout=2)
    pair.a.wait_address("eth0", VIP, present=False, timeout=2)
    # The same process throughout: it was a reload, not a restart (no INIT state).
    assert db.proc.pid == pid_b and db.proc.poll() is None
    assert not matching(db, r"-> INIT|INIT ->", after=mark_b)


def test_virtual_addresses_added_and_removed_on_the_master_without_a_transition(
    pair: Pair,
) -> None:
    ca, cb = pair.configs(advert_int=0.1, version=3)
    da, db = pair.settled_pair(ca, cb)
    mark_a, mark_b = da.mark(), db.mark()
    rewrite(ca, f'["{VIP}/24"]', f'["{VIP}/24", "{VIP2}/24"]')
    da.signal(signal.SIGHUP)
    da.wait_for(rf"reload: VI_1 .*: virtual_addresses \+{re.escape(VIP2)}/24", 5, after=mark_a)
    pair.a.wait_address("eth0", VIP2, present=True, timeout=5)
    assert pair.a.has_address("eth0", VIP)
    da.wait_for(r"reload: .* applied", 5, after=mark_a)

    mark = da.mark()
    rewrite(ca, f'["{VIP}/24", "{VIP2}/24"]', f'["{VIP2}/24"]')
    da.signal(signal.SIGHUP)
    da.wait_for(rf"virtual_addresses -{re.escape(VIP)}/24", 5, after=mark)
    pair.a.wait_address("eth0", VIP, present=False, timeout=5)
    assert pair.a.has_address("eth0", VIP2)
    # No election happened on either side, and the backup never held either address.
    assert not matching(da, TRANSITION, after=mark_a)
    assert not matching(db, TRANSITION, after=mark_b)
    assert not pair.b.has_address("eth0", VIP) and not pair.b.has_address("eth0", VIP2)


def test_a_change_only_a_restart_can_make_is_refused_whole(pair: Pair) -> None:
    ca, cb = pair.configs(advert_int=0.1, version=3)
    da, db = pair.settled_pair(ca, cb)
    mark = da.mark()
    # A new VRID (needs a restart) together with a new priority (could be applied):
    # neither is applied.
    rewrite(ca, "vrid = 51", "vrid = 52")
    rewrite(ca, "priority = 100", "priority = 40")
    da.signal(signal.SIGHUP)
    refused = r"VRRP instance VI_1: vrid changed \(51 -> 52\): that needs a restart"
    da.wait_for(refused, 5, after=mark)
    da.wait_for(r"not applied: 1 change\(s\) need a restart", 5, after=mark)
    # Still master on VRID 51 with priority 100: the backup (50) keeps following it.
    mark_b = db.mark()
    db.assert_quiet(r"-> MASTER", 1.0, after=mark_b)
    assert not matching(da, TRANSITION, after=mark)
    assert not matching(da, r"priority 100 -> 40", after=mark)
    assert pair.a.has_address("eth0", VIP) and not pair.b.has_address("eth0", VIP)
