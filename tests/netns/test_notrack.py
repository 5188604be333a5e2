"""The agent's own health checks and VRRP leave nothing in conntrack, for real.

Why: the loop guard's nat and ct_keep chains keep conntrack on in the namespace, and
every check connection then held an entry for its TIME_WAIT (120 s): 10,000 servers
checked each second filled a default table, the kernel dropped packets, and VRRP
adverts failed to send.  Box A checks a real server on box B and its own (over lo),
and exchanges adverts with B; A's conntrack table is read from /proc in its namespace.
The rules are in table ip lvsagent_notrack (lvsagent/netfilter/notrack.py).
"""

from __future__ import annotations

import re
import socket
import sys
import threading

from tests.kernel.setns import enter
from tests.netns.conftest import Pair
from tests.netns.lab import Netns, agent_config, checked_service, web_server

SERVICE = checked_service(interval=0.3, connect_timeout=1)


def listener(ns: Netns, address: str, port: int) -> socket.socket:
    """A listening socket made in ``ns`` (by a thread that entered it): up before we connect."""
    made: list[socket.socket] = []

    def make() -> None:
        enter(f"/run/netns/{ns.name}")
        s = socket.socket()
        s.bind((address, port))
        s.listen()
        made.append(s)

    t = threading.Thread(target=make)
    t.start()
    t.join()
    return made[0]


CONTROL = "import socket; socket.create_connection(('10.99.0.2', 8081), 5).close()"


def conntrack(ns: Netns) -> list[str]:
    return ns.run("cat", "/proc/net/nf_conntrack").stdout.splitlines()


def test_checks_and_adverts_leave_no_conntrack_entry(pair: Pair) -> None:
    servers = [web_server(pair.a, "10.99.0.1"), web_server(pair.b, "10.99.0.2")]
    control = listener(pair.b, "10.99.0.2", 8081)
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
        # The table as written: both checks in its set, and never "repaired" since.
        listing = pair.a.run("nft", "list", "set", "ip", "lvsagent_notrack", "checks").stdout
        assert "10.99.0.1 . 8080" in listing and "10.99.0.2 . 8080" in listing, listing
        assert not [line for line in da.lines if "repaired" in line]
    finally:
        control.close()
        for server in servers:
            server.kill()
            server.wait()
