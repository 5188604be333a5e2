"""Health checks driving the real kernel's IPVS, INSIDE the lab (issue #4's kernel test).

Why: the netns tests prove the checker against real listeners, the unit tests the
tracker; this proves the chain an operator relies on: a real server's check fails,
the daemon notices, IPVS drains it (weight 0) or removes it (``on_failure``), the
client's new connections stop reaching it, the failed server's own established
connection goes on under drain, and all of it comes back when the check passes.
Same topology as test_agent_traffic (client, director, rs1, rs2 on one bridge, DR);
waiting is on the daemon's log lines, on replies and on table reads, never on sleeps.

To fail the check while the server still serves, two tests check a port of its own
(``[virtual_server.health.tcp] port``) where a listener that only accepts runs beside
the line server: closing it is a health failure and nothing else.
"""

from __future__ import annotations

import re
import socket
import threading
from collections import Counter
from contextlib import suppress

import pytest

from tests.kernel.agentlab import (
    IO_TIMEOUT,
    PORT,
    REAL,
    START_TIMEOUT,
    VIP,
    Connection,
    Lab,
    LineServer,
    ask_new,
    assert_table,
    dest_line,
    ipvs_listing,
    ns_socket,
    rs_line,
    wait_master,
    wait_programmed,
    write_config,
)
from tests.kernel.labnet import Netns
from tests.kernel.uml import lab_only

pytestmark = [
    lab_only(__file__),
    pytest.mark.timeout(120),
]

HEALTH = """type = "tcp"
interval = 0.5
alpha = false
on_failure = "drain"
[virtual_server.health.tcp]
connect_timeout = 0.5
"""

CHECK_PORT = 8080


def check_port_health(on_failure: str) -> str:
    """HEALTH, checking CHECK_PORT instead of the service's port, with ``on_failure``."""
    return f"""type = "tcp"
interval = 0.5
alpha = false
on_failure = "{on_failure}"
[virtual_server.health.tcp]
connect_timeout = 0.5
port = {CHECK_PORT}
"""


class CheckListener:
    """CHECK_PORT in a real server's namespace: accepts and closes, serves nothing.

    Accepting matters: connections the checker opened and closed would otherwise fill
    the backlog, and a full backlog drops SYNs, a check failure the test did not make.
    """

    def __init__(self, ns: Netns, name: str) -> None:
        self._listener = ns_socket(ns)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("0.0.0.0", CHECK_PORT))
        self._listener.listen(64)  # refused no more from here
        self._acceptor = threading.Thread(target=self._accept, name=f"{name}-check")
        self._acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # shutdown() by stop()
                return
            conn.close()

    def stop(self) -> None:
        """Refused from here on; safe to call twice."""
        with suppress(OSError):  # already shut
            self._listener.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(IO_TIMEOUT)
        self._listener.close()


def check_listeners(lab: Lab) -> dict[str, CheckListener]:
    listeners = {}
    for name, server in lab.servers.items():
        listener = CheckListener(server.ns, name)
        lab.stack.callback(listener.stop)
        listeners[name] = listener
    return listeners


def dest_weights(director: Netns) -> dict[str, int]:
    """Every dest of the service in ``ipvsadm -Ln``, by server name: absent means removed."""
    listing = ipvs_listing(director)
    assert re.search(rf"^TCP\s+{re.escape(VIP)}:{PORT} rr\s*$", listing, re.MULTILINE), listing
    names = {address: name for name, address in REAL.items()}
    rows = re.findall(rf"->\s+(\S+):{PORT}\s+Route\s+(\d+)\s", listing)
    weights = {names.get(address, address): int(weight) for address, weight in rows}
    assert len(weights) == len(rows), listing
    return weights


def connection_to(lab: Lab, name: str) -> Connection:
    """A client connection through the VIP that real server ``name`` answers, kept open.

    rr alternates between the two live servers, so one of the first two lands there.
    """
    for _ in range(len(REAL)):
        conn = Connection(lab.client)
        if conn.ask() == name:
            lab.stack.callback(conn.close)
            return conn
        conn.close()
    raise AssertionError(f"no new connection reached {name} in {len(REAL)} tries")


def test_dead_real_server_is_drained_in_ipvs_and_comes_back(lab: Lab) -> None:
    config = write_config(lab.tmp / "director.toml", {"rs1": 1, "rs2": 1}, health=HEALTH)
    agent = lab.agent(config)
    wait_programmed(agent, "start")
    wait_master(agent)
    assert ask_new(lab.client, 4) == Counter({"rs1": 2, "rs2": 2})
    kept = Connection(lab.client)
    lab.stack.callback(kept.close)
    survivor = kept.ask()
    victim = "rs2" if survivor == "rs1" else "rs1"

    mark = agent.mark()
    namespace: Netns = lab.servers[victim].ns
    lab.servers[victim].stop()  # refused from now on
    agent.wait_for(rs_line(victim, "DOWN"), START_TIMEOUT, after=mark)
    agent.wait_for(
        rf"ipvs: ~ dest {re.escape(REAL[victim])}:{PORT} .* weight 1 -> 0",
        START_TIMEOUT,
        after=mark,
    )
    assert_table(lab.director, {victim: 0, survivor: 1})
    assert ask_new(lab.client, 6) == Counter({survivor: 6}), "new connections avoid the dead one"
    assert kept.ask() == survivor

    mark = agent.mark()
    revived = LineServer(namespace, victim)
    lab.stack.callback(revived.stop)
    lab.servers[victim] = revived
    agent.wait_for(rs_line(victim, "UP"), START_TIMEOUT, after=mark)
    agent.wait_for(
        rf"ipvs: ~ dest {re.escape(REAL[victim])}:{PORT} .* weight 0 -> 1",
        START_TIMEOUT,
        after=mark,
    )
    assert_table(lab.director, {"rs1": 1, "rs2": 1})
    assert ask_new(lab.client, 4) == Counter({"rs1": 2, "rs2": 2})


def test_drain_keeps_the_failed_servers_own_connection(lab: Lab) -> None:
    """Drain's promise on the failed server itself: its established connection goes on.

    Were drain a removal, the kernel would find the connection's dest unavailable and
    drop its packets (with or without expire_nodest_conn), so the kept connection's
    next ask would time out; the table read would also miss rs1 instead of reading 0.
    """
    checks = check_listeners(lab)
    config = write_config(
        lab.tmp / "director.toml", {"rs1": 1, "rs2": 1}, health=check_port_health("drain")
    )
    agent = lab.agent(config)
    wait_programmed(agent, "start")
    wait_master(agent)
    kept = connection_to(lab, "rs1")

    mark = agent.mark()
    checks["rs1"].stop()  # the check fails; rs1's line server goes on serving
    agent.wait_for(rs_line("rs1", "DOWN"), START_TIMEOUT, after=mark)
    agent.wait_for(dest_line("rs1", "~") + r" weight 1 -> 0$", START_TIMEOUT, after=mark)
    assert_table(lab.director, {"rs1": 0, "rs2": 1})

    assert kept.ask() == "rs1", "the drained server's established connection must go on"
    accepted = lab.servers["rs1"].accepted
    assert ask_new(lab.client, 6) == Counter({"rs2": 6}), "new connections avoid the drained one"
    assert lab.servers["rs1"].accepted == accepted, "no new connection reached rs1"
    assert kept.ask() == "rs1"

    mark = agent.mark()
    checks["rs1"] = CheckListener(lab.servers["rs1"].ns, "rs1")
    lab.stack.callback(checks["rs1"].stop)
    agent.wait_for(rs_line("rs1", "UP"), START_TIMEOUT, after=mark)
    agent.wait_for(dest_line("rs1", "~") + r" weight 0 -> 1$", START_TIMEOUT, after=mark)
    assert_table(lab.director, {"rs1": 1, "rs2": 1})
    assert ask_new(lab.client, 4) == Counter({"rs1": 2, "rs2": 2})
    assert kept.ask() == "rs1"


def test_remove_takes_the_failed_server_out_and_puts_it_back(lab: Lab) -> None:
    """on_failure = "remove": the dest is absent while down, back at its own weight after.

    rs1's weight is 3 (rr spreads evenly all the same), so putting it back at a default
    or remembered-as-zero weight would show in the table read.
    """
    checks = check_listeners(lab)
    weights = {"rs1": 3, "rs2": 1}
    config = write_config(lab.tmp / "director.toml", weights, health=check_port_health("remove"))
    agent = lab.agent(config)
    wait_programmed(agent, "start")
    wait_master(agent)
    assert dest_weights(lab.director) == weights
    assert ask_new(lab.client, 4) == Counter({"rs1": 2, "rs2": 2})

    mark = agent.mark()
    checks["rs1"].stop()  # the check fails; rs1's line server goes on serving
    agent.wait_for(rs_line("rs1", "DOWN"), START_TIMEOUT, after=mark)
    agent.wait_for(dest_line("rs1", "-") + "$", START_TIMEOUT, after=mark)
    assert dest_weights(lab.director) == {"rs2": 1}, "removed: absent, not at weight 0"

    # rs1 still answers anything that reaches it: only the table keeps the client off it.
    accepted = lab.servers["rs1"].accepted
    assert ask_new(lab.client, 6) == Counter({"rs2": 6}), "new connections avoid the removed one"
    assert lab.servers["rs1"].accepted == accepted, "no new connection reached rs1"

    mark = agent.mark()
    checks["rs1"] = CheckListener(lab.servers["rs1"].ns, "rs1")
    lab.stack.callback(checks["rs1"].stop)
    agent.wait_for(rs_line("rs1", "UP"), START_TIMEOUT, after=mark)
    agent.wait_for(dest_line("rs1", "+"), START_TIMEOUT, after=mark)
    assert dest_weights(lab.director) == weights
    assert ask_new(lab.client, 4) == Counter({"rs1": 2, "rs2": 2})
