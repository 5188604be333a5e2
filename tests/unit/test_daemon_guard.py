"""The daemon's loop guard driver: a failed transition is retried, never fatal; start is."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import lvsagent.daemon.guard as guard_module
from lvsagent.config.loader import parse_config
from lvsagent.daemon.guard import LoopGuard, check_targets
from lvsagent.netfilter.nft import NftError
from tests.unit.conftest import RecordingUntracked

CONFIG = """
[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
vrid = 51
virtual_addresses = ["10.0.0.100/24"]
[[virtual_server]]
address = "10.0.0.100"
port = 80
[[virtual_server.real_server]]
address = "10.0.0.1"
port = 80
"""


class FlakyNft:
    """Refuses the first ``failures`` applies, then records what it is asked for."""

    def __init__(self, spec: Any, failures: int = 1) -> None:
        self.failures = failures
        self.applied: list[bool] = []

    def apply(self, active: bool) -> bool:
        if self.failures:
            self.failures -= 1
            raise NftError("apply", "Operation not permitted")
        self.applied.append(active)
        return True

    def check(self) -> bool:
        return False


@pytest.fixture
def guard(monkeypatch: pytest.MonkeyPatch) -> LoopGuard:
    monkeypatch.setattr(guard_module, "NftGuard", FlakyNft)
    config = parse_config(CONFIG, "t.toml")
    return LoopGuard(config, config.vrrp_instances[0])


def test_a_failed_release_is_logged_and_converged_by_the_next_check(
    guard: LoopGuard, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        asyncio.run(guard.set(False, "VI_1 BACKUP -> MASTER"))
    assert "cannot release it" in caplog.text
    assert guard.engaged is False
    asyncio.run(guard.check())
    nft = guard.nft
    assert isinstance(nft, FlakyNft) and nft.applied == [False]


def test_a_failure_at_startup_stops_the_start(guard: LoopGuard) -> None:
    async def start() -> None:
        await guard._set(engaged=True, why="startup")

    with pytest.raises(NftError):
        asyncio.run(start())


class LeftTable:
    """A kernel table a killed agent left, naming the peer's MAC; records reconfigures."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self.reads = 0

    def peer_macs_in_kernel(self) -> tuple[str, ...]:
        self.reads += 1
        return ("02:00:00:00:00:0b",)

    def reconfigure(self, spec: Any) -> bool:
        self.spec = spec
        return False


def test_a_restart_keeps_the_peer_mac_the_old_table_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """The neighbour table has forgotten the peer (a long outage): the restarted agent's
    first table must still redirect what the peer sends, as the old one did."""
    monkeypatch.setattr(guard_module, "NftGuard", LeftTable)
    config = parse_config(CONFIG, "t.toml")
    guard = LoopGuard(config, config.vrrp_instances[0])  # peer_address: none heard yet
    asyncio.run(guard._recall_peer_macs())
    assert guard.peer_macs == ("02:00:00:00:00:0b",)
    nft = guard.nft
    assert isinstance(nft, LeftTable) and nft.spec.peer_macs == ("02:00:00:00:00:0b",)


def test_a_configured_peer_mac_needs_no_recall(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard_module, "NftGuard", LeftTable)
    config = parse_config('[global]\npeer_mac = "02:00:00:00:00:0c"\n' + CONFIG, "t.toml")
    guard = LoopGuard(config, config.vrrp_instances[0])
    asyncio.run(guard._recall_peer_macs())
    nft = guard.nft
    assert isinstance(nft, LeftTable) and nft.reads == 0
    assert guard.peer_macs == ("02:00:00:00:00:0c",)


def test_recalled_macs_keep_the_learning_going(monkeypatch: pytest.MonkeyPatch) -> None:
    """A MAC from the old table may be a replaced box's: the neighbour table still decides."""
    monkeypatch.setattr(guard_module, "NftGuard", LeftTable)
    config = parse_config(CONFIG, "t.toml")
    guard = LoopGuard(config, config.vrrp_instances[0])
    asyncio.run(guard._recall_peer_macs())
    assert guard._peer_confirmed is False
    asyncio.run(guard.learn_peer_mac("02:00:00:00:00:0d"))  # the new box, seen live
    assert guard._peer_confirmed is True
    assert guard.peer_macs == ("02:00:00:00:00:0b", "02:00:00:00:00:0d")


def test_the_tables_check_targets_are_where_the_checks_connect() -> None:
    config = parse_config(
        CONFIG
        + '[virtual_server.health]\ntype = "http"\n[virtual_server.health.http]\nport = 8080\n'
        + '[[virtual_server.real_server]]\naddress = "10.0.0.2"\nport = 80\n'
        + '[virtual_server.real_server.health]\ntype = "tcp"\n'
        + '[[virtual_server]]\naddress = "10.0.0.101"\nport = 80\n'
        + '[virtual_server.health]\ntype = "none"\n'
        + '[[virtual_server.real_server]]\naddress = "10.0.0.3"\nport = 80\n',
        "t.toml",
    )
    assert [(str(t.address), t.port) for t in sorted(check_targets(config))] == [
        ("10.0.0.1", 8080),  # the http check's port
        ("10.0.0.2", 80),  # its own tcp check: the server's port
    ]  # no check of type none: nothing to leave out of conntrack


def test_a_notrack_table_that_cannot_be_written_is_logged_and_retried(
    guard: LoopGuard, caplog: pytest.LogCaptureFixture
) -> None:
    untracked = guard.untracked
    assert isinstance(untracked, RecordingUntracked)
    untracked.fail = OSError(95, "Operation not supported")
    asyncio.run(guard.set(True, "VI_1 startup"))
    with caplog.at_level(logging.ERROR):
        asyncio.run(guard.check())
        asyncio.run(guard.check())
    assert untracked.checks == 2  # each check tries again
    assert "cannot keep VRRP and the health checks out of conntrack" in caplog.text
