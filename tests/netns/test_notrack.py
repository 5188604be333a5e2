"""The agent's own health checks and VRRP leave nothing in conntrack, for real.

Why: the loop guard's nat and ct_keep chains keep conntrack on in the namespace, and
every check connection then held an entry for its TIME_WAIT (120 s): 10,000 servers
checked each second filled a default table, the kernel dropped packets, and VRRP
adverts failed to send.  Box A checks a real server on box B and its own (over lo),
and exchanges adverts with B; A's conntrack table is read from /proc in its namespace.
"""

from __future__ import annotations

import re
import subprocess
import sys

from tests.netns.conftest import Pair
from tests.netns.lab import Netns, agent_config

SERVICE = """
[[virtual_server]]
address = "10.99.0.100"
port = 80
[virtual_server.health]
type = "tcp"
interval = 0.3
[virtual_server.health.tcp]
connect_timeout = 1
[[virtual_server.real_server]]
address = "10.99.0.1"
port = 8080
[[virtual_server.real_server]]
address = "10.99.0.2"
port = 8080
"""


def web(ns: Netns, address: str, port: int = 8080) -> subprocess.Popen[str]:
    return ns.popen([sys.executable, "-m", "http.server", str(port), "--bind", address],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


CONTROL = """
import socket, time
for _ in range(100):  # until the server listens (it was just started)
    try:
        socket.create_connection(("10.99.0.2", 8081), 5).close()
        break
    except ConnectionRefusedError:
        time.sleep(0.1)
"""


def conntrack(ns: Netns) -> list[str]:
    return ns.run("cat", "/proc/net/nf_conntrack").stdout.splitlines()


def test_checks_and_adverts_leave_no_conntrack_entry(pair: Pair) -> None:
    servers = [web(pair.a, "10.99.0.1"), web(pair.b, "10.99.0.2"), web(pair.b, "10.99.0.2", 8081)]
    try:
        ca = agent_config(pair.tmp / "a.toml", interface="eth0", priority=100, version=3,
                          advert_int=0.1, extra=SERVICE)  # fmt: skip
        cb = agent_config(pair.tmp / "b.toml", interface="eth0", priority=50, version=3,
                          advert_int=0.1)  # fmt: skip
        da, _ = pair.settled_pair(ca, cb)
        mark = da.mark()
        da.wait_for(r"RS 10\.99\.0\.1:8080 of \S+ UP", 10)
        da.wait_for(r"RS 10\.99\.0\.2:8080 of \S+ UP", 10)
        # Conntrack is on here (the guard's table), so anything tracked shows: one
        # connection A makes to another port of B is the control.
        pair.a.run(sys.executable, "-c", CONTROL)
        # Several rounds of checks (0.3 s apart) and adverts both ways (0.1 s) meanwhile.
        da.assert_quiet(r"RS .* DOWN", 1.5, after=mark)
        entries = conntrack(pair.a)
        assert any("dport=8081" in e for e in entries), entries  # the control is tracked
        assert not [e for e in entries if re.search(r"port=8080\b", e)], entries
        assert not [e for e in entries if e.split()[3] == "112"], entries  # VRRP
    finally:
        for server in servers:
            server.kill()
            server.wait()
