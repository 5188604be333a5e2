"""Reload: VRRP tunables in place; a change only a restart can make refuses the whole reload.

A changed loop_guard is refused because the services were read for the other mode.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from lvsagent.config.loader import load_config
from lvsagent.config.schema import Config
from lvsagent.daemon.app import Agent
from lvsagent.daemon.reload import instance_changes, restart_reasons

BASE = """
[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
vrid = 51
virtual_addresses = ["10.0.0.100/24"]

[[virtual_server]]
address = "10.0.0.100"
port = 80
{extra}
[[virtual_server.real_server]]
address = "10.0.0.1"
port = 80
"""
FWMARK = '[global]\nloop_guard = "fwmark"\npeer_mac = "02:00:00:00:00:01"\n'


def test_a_changed_loop_guard_keeps_the_running_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "lvsagent.toml"
    path.write_text(BASE.format(extra=""))
    agent = Agent(load_config(path))
    running = agent.config
    path.write_text(FWMARK + BASE.format(extra="fwmark = 3\n"))
    with caplog.at_level(logging.ERROR, "lvsagent"):
        asyncio.run(agent.reloads.read_and_apply())
    assert agent.config is running
    assert agent.observer.config is running
    assert "loop_guard changed" in caplog.text and "bypass -> fwmark" in caplog.text


def configs(tmp_path: Path, before: str, after: str) -> tuple[Config, Config]:
    path = tmp_path / "lvsagent.toml"
    path.write_text(before)
    old = load_config(path)
    path.write_text(after)
    return old, load_config(path)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("priority = 100", "priority = 150"),
        ("advert_int = 1", "advert_int = 2"),
        ('["10.0.0.100/24"]', '["10.0.0.100/24", "10.0.0.101/24"]'),
        ("preempt = true", "preempt = false"),
    ],
)
def test_vrrp_tunables_are_applied_in_place(tmp_path: Path, old: str, new: str) -> None:
    tunables = "vrid = 51\npriority = 100\nadvert_int = 1\npreempt = true"
    text = BASE.format(extra="").replace("vrid = 51", tunables)
    before, after = configs(tmp_path, text, text.replace(old, new))
    assert restart_reasons(before, after) == []
    changes = instance_changes(before.vrrp_instances[0], after.vrrp_instances[0])
    key = "virtual_addresses" if "[" in old else old.split(" ")[0]
    assert len(changes) == 1 and changes[0].startswith(key)


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        ('interface = "eth0"', 'interface = "eth1"',
         "VRRP instance VI_1: interface changed (eth0 -> eth1)"),
        ("vrid = 51", "vrid = 52", "VRRP instance VI_1: vrid changed (51 -> 52)"),
        ('name = "VI_1"', 'name = "VI_2"\n', "VRRP instance VI_2 added"),
        ("[[virtual_server]]", '[global]\nmetrics_listen = "127.0.0.1:9999"\n[[virtual_server]]',
         "metrics_listen changed (127.0.0.1:9650 -> 127.0.0.1:9999)"),
    ],
)  # fmt: skip
def test_identity_and_start_only_settings_need_a_restart(
    tmp_path: Path, old: str, new: str, reason: str
) -> None:
    text = BASE.format(extra="")
    before, after = configs(tmp_path, text, text.replace(old, new))
    assert reason in restart_reasons(before, after)


def test_services_added_to_a_config_without_any_need_a_restart(tmp_path: Path) -> None:
    text = BASE.format(extra="")
    before, after = configs(tmp_path, text[: text.index("[[virtual_server]]")], text)
    assert any("virtual servers added" in r for r in restart_reasons(before, after))
    assert restart_reasons(after, before) == []  # all removed: IPVS removes them


def test_a_refused_reload_is_a_tagged_journal_entry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "lvsagent.toml"
    path.write_text(BASE.format(extra=""))
    agent = Agent(load_config(path))
    running = agent.config
    path.write_text(BASE.format(extra="").replace("vrid = 51", "vrid = 9"))
    with caplog.at_level(logging.ERROR, "lvsagent"):
        asyncio.run(agent.reloads.read_and_apply())
    assert agent.config is running
    tags = [getattr(r, "journal", {}).get("LVSAGENT_RELOAD") for r in caplog.records]
    assert "refused" in tags
    path.write_text("this is not toml [")
    caplog.clear()
    with caplog.at_level(logging.ERROR, "lvsagent"):
        asyncio.run(agent.reloads.read_and_apply())
    assert agent.config is running
    assert "refused" in [getattr(r, "journal", {}).get("LVSAGENT_RELOAD") for r in caplog.records]


class _Notes:
    loop_lag = 0.0

    def __init__(self) -> None:
        self.sent: list[str] = []

    def status(self, text: str) -> bool:
        return True

    def reloading(self) -> bool:
        self.sent.append("RELOADING=1")
        return True

    def ready(self, status: str | None = None) -> bool:
        self.sent.append("READY=1")
        return True


def test_a_reload_during_start_up_does_not_tell_systemd_it_is_ready(tmp_path: Path) -> None:
    path = tmp_path / "lvsagent.toml"
    path.write_text(BASE.format(extra=""))
    agent = Agent(load_config(path))
    notes = _Notes()
    agent.observer.notifier = notes  # type: ignore[assignment]
    asyncio.run(agent.reloads.reload())  # before the first IPVS pass: the unit is still activating
    assert notes.sent == []
    agent.first_pass.set()
    asyncio.run(agent.reloads.reload())
    assert notes.sent == ["RELOADING=1", "READY=1"]
