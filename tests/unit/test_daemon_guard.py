"""The daemon's loop guard driver: a failed transition is retried, never fatal; start is."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from lvsagent.config.loader import parse_config
from lvsagent.config.schema import Config
from lvsagent.guard.desired import check_targets
from lvsagent.guard.driver import GuardSurfaces, LoopGuard
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


LINGER = 0.2  # the old role's daemon after a switch (3 s in the daemon)


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


def made(config: Config, nft: Any, sync: Any = None, sysctls: Any = None) -> LoopGuard:
    """A guard whose kernel surfaces are the given fakes (sysctls: a list of the writes)."""
    writes = sysctls if sysctls is not None else []
    surfaces = GuardSurfaces(
        nft, RecordingUntracked, sync or (lambda: None),  # type: ignore[arg-type]
        sysctls=lambda desired, saved: writes.append(dict(desired)),
    )
    return LoopGuard(config, config.vrrp_instances[0], surfaces, sync_linger=LINGER)


@pytest.fixture
def guard() -> LoopGuard:
    return made(parse_config(CONFIG, "t.toml"), FlakyNft)


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


def test_a_restart_keeps_the_peer_mac_the_old_table_names() -> None:
    """The neighbour table has forgotten the peer (a long outage): the restarted agent's
    first table must still redirect what the peer sends, as the old one did."""
    guard = made(parse_config(CONFIG, "t.toml"), LeftTable)  # peer_address: none heard yet
    asyncio.run(guard._recall_peer_macs())
    assert guard.peer_macs == ("02:00:00:00:00:0b",)
    nft = guard.nft
    assert isinstance(nft, LeftTable) and nft.spec.peer_macs == ("02:00:00:00:00:0b",)


def test_a_configured_peer_mac_needs_no_recall() -> None:
    config = parse_config('[global]\npeer_mac = "02:00:00:00:00:0c"\n' + CONFIG, "t.toml")
    guard = made(config, LeftTable)
    asyncio.run(guard._recall_peer_macs())
    nft = guard.nft
    assert isinstance(nft, LeftTable) and nft.reads == 0
    assert guard.peer_macs == ("02:00:00:00:00:0c",)


def test_recalled_macs_keep_the_learning_going() -> None:
    """A MAC from the old table may be a replaced box's: the neighbour table still decides."""
    guard = made(parse_config(CONFIG, "t.toml"), LeftTable)
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


class Daemons:
    """IPVS sync daemons as the kernel keeps them; ``gate`` holds every answer back (a lost
    netlink ack: the real adapter then waits its DAEMON_REPLY_TIMEOUT)."""

    def __init__(self) -> None:
        self.running: set[str] = set()
        self.calls: list[tuple[str, str]] = []
        self.gate: asyncio.Event | None = None
        self.closed = False
        self.started = asyncio.Event()  # set at each start

    async def stop_sync_daemon(self, state: str) -> bool:
        if self.gate is not None:
            await self.gate.wait()
        self.calls.append(("stop", state))
        was = state in self.running
        self.running.discard(state)
        return was

    async def start_sync_daemon(self, state: str, ifname: str, syncid: int) -> bool:
        if self.gate is not None:
            await self.gate.wait()
        self.calls.append(("start", f"{state} {ifname} {syncid}"))
        new = state not in self.running
        self.running.add(state)
        self.started.set()
        return new

    def close(self) -> None:
        self.closed = True


class QuietNft:
    def __init__(self, spec: Any) -> None:
        self.applied: list[bool] = []

    def apply(self, active: bool, spec: Any = None) -> bool:
        self.applied.append(active)
        return True

    def check(self) -> bool:
        return False


def backup_only(daemons: Daemons, sysctls: list[dict[str, str]] | None = None) -> LoopGuard:
    config = parse_config('[global]\nloop_guard = "backup_only"\n' + CONFIG, "t.toml")
    return made(config, QuietNft, lambda: daemons, sysctls)


def test_a_transition_never_waits_for_the_sync_daemons() -> None:
    """The nft table changes at once; the daemons' lost answer holds only their own task."""
    daemons = Daemons()
    guard = backup_only(daemons)

    async def scenario() -> None:
        daemons.gate = asyncio.Event()  # every answer is late
        await asyncio.wait_for(guard.set(False, "VI_1 BACKUP -> MASTER"), 0.5)
        await asyncio.wait_for(guard.set(True, "VI_1 MASTER -> BACKUP"), 0.5)
        await asyncio.wait_for(guard.set(False, "VI_1 BACKUP -> MASTER"), 0.5)
        nft = guard.nft
        assert isinstance(nft, QuietNft) and nft.applied == [False, True, False]
        assert daemons.calls == []  # nothing answered yet
        daemons.gate.set()
        await guard.sync.settle()

    asyncio.run(scenario())
    # The first switch went through, then the wishes made meanwhile, the last one last:
    # each starts the new role's daemon before it stops the other.
    assert daemons.calls[:2] == [("start", "master eth0 51"), ("stop", "backup")]
    assert daemons.calls[-2:] == [("start", "master eth0 51"), ("stop", "backup")]
    assert daemons.running == {"master"} and guard.sync.role == "master"


def test_the_old_role_s_daemon_lingers_so_its_last_entries_go_across() -> None:
    """IPVS sends a partly filled sync buffer only when it is 2 s old and a stopped master
    daemon drops it: after a switch both daemons run for the linger, then only the new one;
    a switch back within the linger stops nothing."""
    daemons = Daemons()
    guard = backup_only(daemons)

    async def scenario() -> None:
        await guard.set(False, "VI_1 BACKUP -> MASTER")
        await guard.sync.settle()
        assert daemons.running == {"master"}
        daemons.started.clear()
        await guard.set(True, "VI_1 MASTER -> BACKUP")
        await asyncio.wait_for(daemons.started.wait(), 5.0)  # the backup daemon: first
        assert daemons.running == {"master", "backup"}  # the master's last buffer goes out
        await guard.sync.settle()
        assert daemons.running == {"backup"}
        daemons.started.clear()
        await guard.set(False, "VI_1 BACKUP -> MASTER")
        await asyncio.wait_for(daemons.started.wait(), 5.0)  # the master's linger begins
        await guard.set(True, "VI_1 MASTER -> BACKUP")  # back within the linger
        await guard.sync.settle()

    asyncio.run(scenario())
    assert daemons.running == {"backup"}
    assert ("stop", "backup") not in daemons.calls[-3:]  # never stopped across the flap


def test_the_check_restarts_a_daemon_someone_stopped() -> None:
    daemons = Daemons()
    guard = backup_only(daemons)

    async def scenario() -> None:
        await guard.set(True, "VI_1 startup")
        await guard.sync.settle()
        daemons.running.clear()  # ipvsadm --stop-daemon backup
        await guard.check()
        await guard.sync.settle()

    asyncio.run(scenario())
    assert daemons.running == {"backup"}
    assert daemons.calls[-2] == ("start", "backup eth0 51")


def test_a_stop_lets_the_backup_daemon_start_before_it_ends() -> None:
    """The stop's engage asks for the backup daemon: a master daemon left running would keep
    this box's IPVS balancing under backup_only after the agent is gone."""
    daemons = Daemons()
    guard = backup_only(daemons)

    async def scenario() -> None:
        await guard.set(False, "VI_1 BACKUP -> MASTER")
        await guard.sync.settle()
        daemons.gate = asyncio.Event()
        await guard.set(True, "VI_1 stopping")
        asyncio.get_running_loop().call_later(0.05, daemons.gate.set)
        await guard.stop(decommission=False)

    asyncio.run(scenario())
    assert daemons.running == {"backup"} and daemons.closed


def test_no_sync_daemon_when_turned_off() -> None:
    daemons = Daemons()
    off = "[global]\nipvs_sync_daemon = false\n" + CONFIG
    guard = made(parse_config(off, "t.toml"), QuietNft, lambda: daemons)

    async def scenario() -> None:
        await guard.set(False, "VI_1 BACKUP -> MASTER")
        await guard.check()
        await guard.sync.settle()

    asyncio.run(scenario())
    assert daemons.calls == [] and guard.status().detail.find("sync") == -1


def test_backup_only_s_sysctl_follows_the_role_in_the_transition_itself() -> None:
    """A new master's IPVS must balance from its transition on: with backup_only = 1 and the
    backup daemon still running (its switch runs behind the transition, and its answer can be
    late), IPVS would ignore the synced connections' packets and the local server reset them.
    An old master's goes to 1 only once the switch has ended: until then its IPVS forwards
    what clients whose ARP entry has not moved still send it."""
    daemons, writes = Daemons(), []
    guard = backup_only(daemons, writes)

    async def scenario() -> None:
        daemons.gate = asyncio.Event()  # the daemons' answers are late
        await guard.set(False, "VI_1 BACKUP -> MASTER")
        assert writes == [{"net.ipv4.vs.backup_only": "0"}]
        assert daemons.calls == []  # written before the switch, not after it
        await guard.set(True, "VI_1 MASTER -> BACKUP")
        assert writes[-1] == {"net.ipv4.vs.backup_only": "0"}  # the switch is under way
        daemons.gate.set()
        await guard.sync.settle()
        assert writes[-1] == {"net.ipv4.vs.backup_only": "1"}

    asyncio.run(scenario())
