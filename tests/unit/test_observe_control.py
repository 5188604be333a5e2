"""The control socket and ``lvsagent status``: a real unix socket under a temporary directory."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path

import pytest

from lvsagent import cli
from lvsagent.observe.control import (
    ControlError,
    ControlServer,
    duration,
    format_status,
    request,
    status,
)
from lvsagent.observe.snapshot import (
    AgentSnapshot,
    GuardStatus,
    InstanceStatus,
    ReloadStatus,
    ServerStatus,
)

WAIT = 10.0

SNAP = AgentSnapshot(
    instances=(
        InstanceStatus(
            "VI_1", 51, "eth0", "BACKUP", 100, 80, master_seen="10.99.0.2",
            last_transition_at=1_000.0,
            last_transition_reason="higher priority 150 from 10.99.0.2 (ours 80)",
            transitions=1, adverts_sent=5, adverts_received=300,
            discards={"ip_ttl_err": 2, "auth_failure": 0},
        ),
        InstanceStatus("VI_2", 52, "eth1", "MASTER", 200, 200, split_brain=True),
    ),
    servers=(
        ServerStatus("10.99.0.100:80/tcp", "10.99.0.1", 80, True, 1, None, 0.0012, 0, 1),
        ServerStatus("10.99.0.100:80/tcp", "10.99.0.20", 80, False, 2,
                     "connect timeout 1.0 s, 3 of 3", None, 2, 0),
        ServerStatus("fwmark 5", "10.99.0.3", 0, None, 1),
    ),
    loop_guard=GuardStatus("bypass", True, "redirecting 10.99.0.100:80/tcp to the local server"),
    config_path="/etc/lvsagent/lvsagent.toml",
    started_at=400.0,
    loop_lag=0.0021,
)  # fmt: skip


class Daemon:
    """A ControlServer on an event loop in a thread, publishing ``snap``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.snap: AgentSnapshot | None = SNAP
        self.server = ControlServer(path, lambda: self.snap)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: object) -> None:
        fut: Future[None] = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        fut.result(WAIT)

    def close(self) -> None:
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)
        self.loop.close()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(str(tmp_path / "run" / "lvsagent" / "control.sock"))
    d.call(d.server.start())
    try:
        yield d
    finally:
        d.close()


def test_status_round_trip(daemon: Daemon) -> None:
    assert status(daemon.path) == SNAP


def test_socket_and_directory_modes(daemon: Daemon) -> None:
    assert stat.S_IMODE(os.stat(daemon.path).st_mode) == 0o660
    assert stat.S_IMODE(os.stat(os.path.dirname(daemon.path)).st_mode) == 0o755


def test_stop_removes_the_socket(tmp_path: Path) -> None:
    d = Daemon(str(tmp_path / "control.sock"))
    d.call(d.server.start())
    assert os.path.exists(d.path)
    d.close()
    assert not os.path.exists(d.path)
    with pytest.raises(ControlError) as info:
        status(d.path)
    assert info.value.unavailable


def test_a_stale_socket_is_replaced(tmp_path: Path) -> None:
    path = str(tmp_path / "control.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)  # a predecessor killed with -9 leaves exactly this: a file nobody listens on
    dead.close()
    d = Daemon(path)
    try:
        d.call(d.server.start())
        assert status(path) == SNAP
    finally:
        d.close()


def test_a_live_socket_is_not_taken_over(daemon: Daemon) -> None:
    second = Daemon(daemon.path)
    try:
        with pytest.raises(ControlError, match="another process answers"):
            second.call(second.server.start())
    finally:
        second.close()  # stop() of a server that never started leaves the path alone
    assert status(daemon.path) == SNAP


def test_a_file_in_the_way_is_not_removed(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    path.write_text("not a socket")
    d = Daemon(str(path))
    try:
        with pytest.raises(ControlError, match="not a socket"):
            d.call(d.server.start())
    finally:
        d.close()
    assert path.read_text() == "not a socket"


def test_unknown_commands_and_garbage_get_an_error(daemon: Daemon) -> None:
    assert "unknown command 'reboot'" in json.loads(request(daemon.path, "reboot"))["error"]
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.settimeout(WAIT)
    raw.connect(daemon.path)
    raw.sendall(b"\xff{{")
    raw.shutdown(socket.SHUT_WR)
    assert "expected one JSON object" in json.loads(raw.recv(4096))["error"]
    raw.close()


def test_a_starting_daemon_says_try_again(daemon: Daemon) -> None:
    daemon.snap = None
    with pytest.raises(ControlError, match="still starting") as info:
        status(daemon.path)
    assert info.value.unavailable


def test_duration() -> None:
    assert [duration(s) for s in (0, 42, 185, 7620, 4 * 86400 + 3 * 3600)] == [
        "0s", "42s", "3m05s", "2h07m", "4d03h",
    ]  # fmt: skip


def test_the_human_report() -> None:
    text = format_status(SNAP, now=1_600.0)
    lines = text.splitlines()
    assert lines[0] == (
        "lvsagent: up 20m00s, config /etc/lvsagent/lvsagent.toml, "
        "event-loop lag 2.1 ms (worst of the last minute)"
    )
    assert "  VI_1  vrid 51 on eth0: BACKUP, priority 100 (effective 80)" in lines
    assert "    master: 10.99.0.2" in lines
    transition = next(line for line in lines if "last transition" in line)
    assert transition.endswith("(10m00s ago): higher priority 150 from 10.99.0.2 (ours 80)")
    assert "    discarded: ip_ttl_err 2" in lines  # zero counts are left out
    assert "  VI_2  vrid 52 on eth1: MASTER, priority 200" in lines
    assert "    SPLIT BRAIN: another master advertises on eth1" in lines
    assert "    10.99.0.1:80   up         weight 1, kernel 1, check 1.2 ms" in lines
    assert (
        "    10.99.0.20:80  DOWN       weight 2, kernel 0  connect timeout 1.0 s, 3 of 3" in lines
    )
    assert "    10.99.0.3:0  unchecked  weight 1, not in IPVS" in lines
    assert lines[-1] == (
        "Loop guard: bypass, engaged (BACKUP state) "
        "(redirecting 10.99.0.100:80/tcp to the local server)"
    )


def test_a_refused_reload_is_the_second_line() -> None:
    refused = replace(SNAP, last_reload=ReloadStatus(1_300.0, False, "needs a restart: vrid"))
    lines = format_status(refused, now=1_600.0).splitlines()
    assert lines[1].startswith("last reload ") and lines[1].endswith(
        "(5m00s ago): REFUSED, still running the previous config (needs a restart: vrid)"
    )
    applied = replace(SNAP, last_reload=ReloadStatus(1_300.0, True, "applied"))
    assert format_status(applied, now=1_600.0).splitlines()[1].endswith("(5m00s ago): applied")
    assert format_status(SNAP, now=1_600.0).splitlines()[1] == ""  # none since the start


def test_an_empty_report() -> None:
    text = format_status(AgentSnapshot(config_path="x", started_at=0.0), now=5.0)
    assert text.count("(none configured)") == 2
    assert text.endswith("Loop guard: not reported")


# ----- the CLI verb -------------------------------------------------------------------------


def test_cli_status_prints_the_report(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", "--socket", daemon.path]) == cli.EX_OK
    out = capsys.readouterr().out
    assert "VI_1  vrid 51 on eth0: BACKUP, priority 100 (effective 80)" in out
    assert "Loop guard: bypass, engaged (BACKUP state)" in out


def test_cli_status_json(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", "--json", "--socket", daemon.path]) == cli.EX_OK
    assert AgentSnapshot.from_json(capsys.readouterr().out) == SNAP


def test_cli_status_reads_the_socket_from_the_config(
    daemon: Daemon, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "lvsagent.toml"
    config.write_text(
        f'[global]\ncontrol_socket = "{daemon.path}"\n\n'
        '[[vrrp_instance]]\nname = "VI_1"\ninterface = "eth0"\nvrid = 51\npriority = 100\n'
        'virtual_addresses = ["10.99.0.100/24"]\n'
    )
    assert cli.main(["status", "--json", "--config", str(config)]) == cli.EX_OK
    assert AgentSnapshot.from_json(capsys.readouterr().out) == SNAP


def test_cli_status_with_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[global]\nno_such_key = 1\n")
    assert cli.main(["status", "--config", str(config)]) == cli.EX_CONFIG


def test_cli_status_without_a_daemon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "nobody.sock")
    assert cli.main(["status", "--socket", path]) == cli.EX_UNAVAILABLE == 69
    err = capsys.readouterr().err
    assert err.startswith(f"lvsagent: no lvsagent answers on {path}")
    assert "is it running?" in err


def test_cli_status_with_a_daemon_that_talks_nonsense(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "odd.sock")

    async def odd(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.write(b'{"instances": 3}')
        await writer.drain()
        writer.close()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(
        asyncio.start_unix_server(odd, path=path), loop
    ).result(WAIT)
    try:
        assert cli.main(["status", "--socket", path]) == cli.EX_PROTOCOL
        assert "unexpected answer" in capsys.readouterr().err
    finally:
        server.close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT)
        loop.close()
