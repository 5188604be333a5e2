"""Notify hooks and the notify FIFO, with real agents: never on the path of a transition.

Box B's notify_master sleeps forever.  When B takes over (it preempts A after a
reload raised its priority), its VIP, its loop-guard step and its adverts must not
wait for that script: box A, now B's backup with VRRPv3 adverts every 0.1 s (a
Master_Down_Interval of ~0.36 s), would take over again at the first gap in B's
adverts, and it must not while the hook hangs.  The hook is killed at
notify_timeout.  The generic ``notify`` gets keepalived's four arguments and runs
as ``nobody`` with no capability; the FIFO gets keepalived's lines, STOP included.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

from tests.netns.conftest import Pair
from tests.netns.lab import Netns, agent_config
from tests.netns.scriptlab import ScriptDir, fifo_reader, scripts  # noqa: F401

VIP = "10.99.0.100"
TIMEOUT = 4  # notify_timeout: the hung hook is killed this long after B's takeover
SERVICE = """
[[virtual_server]]
address = "10.99.0.100"
port = 80
[virtual_server.health]
type = "none"
[[virtual_server.real_server]]
address = "10.99.0.1"
port = 80
"""


def with_globals(path: Path, lines: str) -> Path:
    path.write_text(path.read_text().replace("[global]\n", f"[global]\n{lines}\n", 1))
    return path


def guard_rules(ns: Netns) -> list[str]:
    """The comments of the loop guard's rules in ``ns`` (each names its service)."""
    out = ns.run("nft", "-j", "list", "table", "ip", "lvsagent").stdout
    return [i["rule"].get("comment", "") for i in json.loads(out)["nftables"] if "rule" in i]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_hook_that_hangs_delays_no_advert_vip_or_guard_step(
    pair: Pair, scripts: ScriptDir  # noqa: F811
) -> None:
    hang = scripts.script("hang.sh", "sleep 1000000")
    record = scripts.script(
        "record.sh",
        f'echo "$* uid=$(id -u) $(grep CapEff /proc/self/status | tr -d "\\t")" '
        f">> {scripts.out}/notify.log",
    )
    fail = scripts.script("fail.sh", "exit 3")
    fifo = pair.tmp / "notify.fifo"
    hooks = f'notify_master = "{hang}"\nnotify = "{record}"\nnotify_stop = "{fail}"\n'
    ca = agent_config(pair.tmp / "a.toml", interface="eth0", priority=100, version=3,
                      advert_int=0.1, extra=SERVICE)  # fmt: skip
    cb = agent_config(pair.tmp / "b.toml", interface="eth0", priority=50, version=3,
                      advert_int=0.1, extra=hooks + SERVICE)  # fmt: skip
    with_globals(cb, f'notify_fifo = "{fifo}"\nnotify_timeout = {TIMEOUT}')
    with fifo_reader(fifo) as reader:
        da, db = pair.settled_pair(ca, cb)
        reader.wait_for('INSTANCE "VI_1" BACKUP 50', 5)

        # B outranks A after a reload and preempts it; A stays up, now B's backup.
        cb.write_text(cb.read_text().replace("priority = 50", "priority = 150"))
        mark_a, mark_b = da.mark(), db.mark()
        db.signal(signal.SIGHUP)
        db.wait_for(r"\): BACKUP -> MASTER \(preempting", 5, after=mark_b)
        da.wait_for(r"\): MASTER -> BACKUP \(higher priority 150", 5, after=mark_a)
        started = db.wait_for(r"notify VI_1 notify_master: started pid (\d+)", 5, after=mark_b)
        pid = int(re.search(r"pid (\d+)", started).group(1))  # type: ignore[union-attr]
        assert alive(pid)  # the hook hangs from here on
        pair.b.wait_address("eth0", VIP, present=True, timeout=2)
        # MASTER: the guard no longer redirects the service away from IPVS.
        assert f"bypass {VIP}:80/tcp" not in guard_rules(pair.b)
        reader.wait_for('INSTANCE "VI_1" MASTER 150', 2)
        # A takes over at the first gap of ~0.36 s in B's adverts: there must be none
        # while B's hook hangs.
        da.assert_quiet(r"-> MASTER", TIMEOUT - 1, after=mark_a)
        assert alive(pid)
        assert pair.b.has_address("eth0", VIP)

        killed = db.wait_for(r"VI_1 notify_master: .*hang\.sh: timed out and was killed", 10,
                             after=mark_b)  # fmt: skip
        assert "the state change itself is done" in killed
        assert not alive(pid)
        db.wait_for(r"VI_1 notify: .*record\.sh INSTANCE VI_1 MASTER 150: exit 0", 5,
                    after=mark_b)  # fmt: skip
        # keepalived's four arguments; run as nobody, with no capability at all.
        assert f"INSTANCE VI_1 MASTER 150 uid=65534 CapEff:{0:016x}" in scripts.lines(
            "notify.log"
        )

        mark_b = db.mark()
        assert db.stop() == 0
        reader.wait_for('INSTANCE "VI_1" STOP 150', 5)
        assert re.search(r"VI_1 notify_stop: .*fail\.sh: exit 3", "\n".join(db.lines[mark_b:]))
