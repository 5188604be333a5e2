"""A box whose own real server is dead hands the VIP over (track_real_servers), for real.

Two `lvsagent run` processes on a veth pair; box A tracks its own web server, which
is a real server of the virtual service, so the health checker decides A's fate:
weight 0 means FAULT while it is down (A's VIP goes to B), and A takes the VIP back
once its server passes again.  The host kernel has no IPVS: the reconciler's errors
are expected and beside the point here; VRRP, the checks and tracking are all real.
"""

from __future__ import annotations

import re
import subprocess

from tests.netns.conftest import Pair
from tests.netns.lab import agent_config, checked_service, web_server

VIP = "10.99.0.100"
SERVICE = checked_service(interval=0.5, connect_timeout=0.5)


def web(pair: Pair) -> subprocess.Popen[str]:
    """A's real server: a listener on its own address (stopped by the test, by PID)."""
    return web_server(pair.a, "10.99.0.1")


def test_dead_own_real_server_puts_the_box_in_fault_and_hands_the_vip_over(pair: Pair) -> None:
    track = f'track_real_servers = ["10.99.0.1:8080"]\n{SERVICE}'
    ca = agent_config(pair.tmp / "a.toml", interface="eth0", priority=100, extra=track)
    cb = agent_config(pair.tmp / "b.toml", interface="eth0", priority=50, extra=SERVICE)
    server = web(pair)
    try:
        da, db = pair.settled_pair(ca, cb)
        assert pair.a.has_address("eth0", VIP)

        mark_a, mark_b = da.mark(), db.mark()
        server.kill()
        server.wait()
        da.wait_for(r"RS 10\.99\.0\.1:8080 of \S+ DOWN", 10, after=mark_a)
        line = da.wait_for(r"\): MASTER -> FAULT \(", 5, after=mark_a)
        assert "10.99.0.1:8080" in line, line
        db.wait_for(r"BACKUP -> MASTER", 5, after=mark_b)
        pair.b.wait_address("eth0", VIP, present=True, timeout=2)
        assert not pair.a.has_address("eth0", VIP)

        mark_a = da.mark()
        server = web(pair)
        da.wait_for(r"RS 10\.99\.0\.1:8080 of \S+ UP", 10, after=mark_a)
        da.wait_for(r"\): FAULT -> BACKUP \(", 5, after=mark_a)
        da.wait_for(r"BACKUP -> MASTER", 10, after=mark_a)  # preempts: priority 100 > 50
        pair.a.wait_address("eth0", VIP, present=True, timeout=2)
    finally:
        server.kill()
        server.wait()


def test_a_negative_weight_lowers_the_priority_and_the_peer_preempts(pair: Pair) -> None:
    # keepalived's track_script weight -60: 100 - 60 = 40 < 50, so B (preempt) takes over;
    # A stays BACKUP, not FAULT, and takes the VIP back when its server returns.
    track = f'track_real_servers = [{{ address = "10.99.0.1:8080", weight = -60 }}]\n{SERVICE}'
    ca = agent_config(pair.tmp / "a.toml", interface="eth0", priority=100, extra=track)
    cb = agent_config(pair.tmp / "b.toml", interface="eth0", priority=50, extra=SERVICE)
    server = web(pair)
    try:
        da, db = pair.settled_pair(ca, cb)
        mark_a, mark_b = da.mark(), db.mark()
        server.kill()
        server.wait()
        line = da.wait_for(r"effective priority 100 -> 40 \(", 10, after=mark_a)
        assert "10.99.0.1:8080" in line, line
        assert "preempting lower-priority master 10.99.0.1 (40 < 50)" in db.wait_for(
            r"\): BACKUP -> MASTER \(", 10, after=mark_b
        )
        da.wait_for(r"\): MASTER -> BACKUP \(higher priority 50 from 10\.99\.0\.2", 5, after=mark_a)
        pair.b.wait_address("eth0", VIP, present=True, timeout=2)
        assert not pair.a.has_address("eth0", VIP)
        assert not [line for line in da.lines[mark_a:] if re.search(r"-> FAULT \(", line)]

        mark_a = da.mark()
        server = web(pair)
        da.wait_for(r"effective priority 40 -> 100 \(", 10, after=mark_a)
        da.wait_for(r"\): BACKUP -> MASTER \(", 10, after=mark_a)
        pair.a.wait_address("eth0", VIP, present=True, timeout=2)
    finally:
        server.kill()
        server.wait()
