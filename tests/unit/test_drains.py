"""Drains: naming a server as status does, the state file, the daemon's book of them.

The book writes a real state file under a temporary directory; the control
socket test connects as another user to show that the socket's mode decides
who may drain (the kernel refuses the connect for anyone else).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from lvsagent.config.loader import parse_config
from lvsagent.config.schema import Config
from lvsagent.daemon.draining import DrainBook
from lvsagent.ipvs import drains
from lvsagent.ipvs.desired import desired_table, dest_key, service_key
from lvsagent.ipvs.drains import TargetError, resolve

BASE = """
[global]
state_dir = "{state}"
[[vrrp_instance]]
name = "VI_1"
interface = "lo"
vrid = 1
virtual_addresses = ["192.0.2.1/32"]
[[virtual_server]]
address = "192.0.2.1"
port = 80
[[virtual_server.real_server]]
address = "192.0.2.10"
port = 80
[[virtual_server.real_server]]
address = "192.0.2.11"
port = 80
weight = 3
[[virtual_server]]
address = "192.0.2.1"
port = 80
protocol = "udp"
[virtual_server.health]
type = "none"
[[virtual_server.real_server]]
address = "192.0.2.10"
port = 80
"""


def config(state: Path, text: str = BASE) -> Config:
    return parse_config(text.format(state=state), "d.toml")


def test_resolve_names_servers_as_status_does(tmp_path: Path) -> None:
    c = config(tmp_path)
    d = resolve(c, "192.0.2.1:80/tcp", "192.0.2.11", 5.0)
    tcp = c.virtual_servers[0]
    assert d.ident == (service_key(tcp), dest_key(tcp.real_servers[1]))
    assert (d.service, d.rs, d.since) == ("192.0.2.1:80/tcp", "192.0.2.11:80", 5.0)
    assert resolve(c, "192.0.2.1:80/UDP", "192.0.2.10:80", 0).service == "192.0.2.1:80/udp"
    with pytest.raises(TargetError, match=r"names 2 services .*: add the protocol"):
        resolve(c, "192.0.2.1:80", "192.0.2.10:80", 0)
    with pytest.raises(TargetError, match=r"no virtual server '10\.0\.0\.1:80' in d\.toml"):
        resolve(c, "10.0.0.1:80", "192.0.2.10:80", 0)
    with pytest.raises(TargetError, match=r"has no real server 192\.0\.2\.12:80 \(it has 192"):
        resolve(c, "192.0.2.1:80/tcp", "192.0.2.12:80", 0)


def test_the_state_file_round_trips_and_drops_what_the_config_lost(tmp_path: Path) -> None:
    c = config(tmp_path)
    a = resolve(c, "192.0.2.1:80/tcp", "192.0.2.11:80", 7.5)
    kept, dropped = drains.decode(drains.encode([a]), c)
    assert kept == {a.ident: a} and dropped == []
    smaller = config(tmp_path, BASE.replace('address = "192.0.2.11"', 'address = "192.0.2.12"'))
    kept, dropped = drains.decode(drains.encode([a]), smaller)
    assert kept == {} and "has no real server 192.0.2.11:80" in dropped[0]
    assert drains.decode(b"not json", c)[0] == {}


def test_a_drain_is_weight_zero_in_the_desired_table(tmp_path: Path) -> None:
    c = config(tmp_path)
    a = resolve(c, "192.0.2.1:80/tcp", "192.0.2.11:80", 0)
    table = desired_table(c, drains.weights({a.ident: a}))
    weights = {str(d.key): d.weight for d in table.services[0].dests}
    assert weights == {"192.0.2.10:80": 1, "192.0.2.11:80": 0}


def test_the_book_saves_before_it_confirms_and_reloads_keep_drains(tmp_path: Path) -> None:
    state = tmp_path / "state"
    changed: list[frozenset[object]] = []
    book = DrainBook(config(state), changed.append, clock=lambda: 100.0)
    request = {"cmd": "drain", "service": "192.0.2.1:80/tcp", "rs": "192.0.2.11:80"}
    answer = book.handle(request, "uid 0")
    assert answer["ok"] and "drained (weight 0 in IPVS" in answer["message"]
    saved = json.loads((state / drains.FILE_NAME).read_text())
    assert saved["drained"] == [{"service": "192.0.2.1:80/tcp", "rs": "192.0.2.11:80",
                                 "since": 100.0}]  # fmt: skip
    assert len(changed) == 1
    assert "already drained" in book.handle(request, "uid 0")["message"]
    again = DrainBook(config(state), changed.append)
    again.load()  # a restart
    assert list(again.drained) == list(book.drained)
    again.reconfigure(config(state))  # a reload of the same servers
    assert list(again.drained) == list(book.drained)
    answer = again.handle({**request, "cmd": "undrain"}, "uid 0")
    assert answer["ok"] and "undrained" in answer["message"]
    assert json.loads((state / drains.FILE_NAME).read_text())["drained"] == []
    unknown = again.handle({**request, "rs": "192.0.2.99:80"}, "uid 0")
    assert "has no real server 192.0.2.99:80" in unknown["error"]


def test_a_drain_that_cannot_be_saved_is_refused_and_not_applied(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o777)
    state.chmod(0o777)  # group- and world-writable: state_dir refuses it
    book = DrainBook(config(state), lambda services: None)
    answer = book.handle({"cmd": "drain", "service": "192.0.2.1:80/tcp", "rs": "192.0.2.10"},
                         "uid 0")  # fmt: skip
    assert answer["error"].startswith("drain not done: state_dir")
    assert book.drained == {}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another user")
def test_only_the_sockets_group_may_connect() -> None:
    # Under /tmp, every directory on the way searchable by others (pytest's tmp_path is not).
    where = Path(tempfile.mkdtemp(prefix="lvst-sock-", dir="/tmp"))
    where.chmod(0o755)
    path = where / "control.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    os.chmod(path, 0o660)
    os.chown(path, 0, 4242)  # a group "lvsagent" stand-in
    probe = (
        "import os, socket, sys\n"
        "os.setgroups([int(g) for g in sys.argv[2:]]); os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n    s.connect(sys.argv[1]); print('connected')\n"
        "except PermissionError: print('EACCES')\n"
    )

    def connect_as_nobody(*groups: int) -> str:
        cmd = [sys.executable, "-c", probe, str(path), *map(str, groups)]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()

    try:
        assert connect_as_nobody() == "EACCES"
        assert connect_as_nobody(4242) == "connected"
    finally:
        server.close()
        shutil.rmtree(where)
