"""A reload that changes loop_guard is refused whole: the services were read for the other mode."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lvsagent.config.loader import load_config
from lvsagent.daemon.app import Agent

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
        agent._reload()
    assert agent.config is running
    assert agent.observer.config is running
    assert "loop_guard changed" in caplog.text and "bypass -> fwmark" in caplog.text
