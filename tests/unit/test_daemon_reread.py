"""SIGHUP reads and parses the file off the event loop, and every refusal shows.

Why: the loop sends the adverts.  A config read that blocks it (a FIFO, a hung
network mount, 100k keys to parse) delays adverts past the peer's
Master_Down_Interval: a needless failover, or VRRP stopped for good.  And a file that
crashed the parser used to leave `lvsagent status` and
lvsagent_config_last_reload_successful showing the previous reload's result.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from lvsagent.config import loader
from lvsagent.config.loader import load_config
from lvsagent.config.schema import Config
from lvsagent.daemon.app import Agent

WAIT = 10.0  # a bound on waiting for an event, never a timing being measured

BASE = """
[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
vrid = 51
priority = 100
virtual_addresses = ["10.0.0.100/24"]
"""


def patch_loader(monkeypatch: pytest.MonkeyPatch, load: Callable[[str], Config]) -> None:
    """Replace the file loader wherever the reload path looks it up."""
    monkeypatch.setattr(loader, "load_config", load)
    monkeypatch.setattr("lvsagent.daemon.app.load_config", load, raising=False)


async def reload_once(agent: Agent) -> None:
    """Send the reload signal and wait for the verdict (applied or refused)."""
    verdict = asyncio.Event()
    record = agent.reloads.reloaded

    def reloaded(ok: bool, detail: str) -> None:
        record(ok, detail)
        verdict.set()

    agent.reloads.reloaded = reloaded  # type: ignore[method-assign]
    agent.reloads.on_signal()
    await asyncio.wait_for(verdict.wait(), WAIT)


def agent_for(path: Path) -> Agent:
    path.write_text(BASE)
    return Agent(load_config(path))


def test_the_loop_keeps_running_while_the_file_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "lvsagent.toml"
    free: list[bool] = []

    async def scenario() -> None:
        agent = agent_for(path)
        loop = asyncio.get_running_loop()
        loop_ran = threading.Event()

        def slow_load(p: str) -> Config:
            # A callback for the loop, then wait for it: only a free loop can run it.
            loop.call_soon_threadsafe(loop_ran.set)
            free.append(loop_ran.wait(WAIT))
            return load_config(p)

        patch_loader(monkeypatch, slow_load)
        path.write_text(BASE.replace("priority = 100", "priority = 150"))
        await reload_once(agent)
        assert agent.config.vrrp_instances[0].priority == 150

    asyncio.run(scenario())
    assert free == [True]


@pytest.mark.timeout(60)
def test_a_fifo_is_refused_at_once_and_the_refusal_shows(tmp_path: Path) -> None:
    path = tmp_path / "lvsagent.toml"

    async def scenario() -> Agent:
        agent = agent_for(path)
        path.unlink()
        os.mkfifo(path)  # nobody writes: a blocking open would never return
        await reload_once(agent)
        return agent

    agent = asyncio.run(scenario())
    status = agent.observer.last_reload
    assert status is not None and not status.ok
    assert "not a regular file (a FIFO)" in status.detail


def test_a_file_that_crashed_the_parser_is_a_refusal_in_status_and_journal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "lvsagent.toml"

    async def scenario() -> Agent:
        agent = agent_for(path)
        path.write_text(BASE + "odd = " + "[" * 600 + "]" * 600 + "\n")
        with caplog.at_level(logging.ERROR, "lvsagent"):
            await reload_once(agent)
        return agent

    agent = asyncio.run(scenario())
    status = agent.observer.last_reload
    assert status is not None and not status.ok
    assert "nested too deeply" in status.detail
    tags = [getattr(r, "journal", {}).get("LVSAGENT_RELOAD") for r in caplog.records]
    assert "refused" in tags


def test_signals_during_a_read_give_one_more_read_not_one_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "lvsagent.toml"
    reads: list[str] = []

    async def scenario() -> None:
        agent = agent_for(path)
        loop = asyncio.get_running_loop()
        started, release = asyncio.Event(), threading.Event()

        def held_load(p: str) -> Config:
            reads.append(p)
            loop.call_soon_threadsafe(started.set)
            release.wait(WAIT)
            return load_config(p)

        patch_loader(monkeypatch, held_load)
        agent.reloads.on_signal()
        await asyncio.wait_for(started.wait(), WAIT)
        for _ in range(3):
            agent.reloads.on_signal()  # while the first read is held
        task = agent.reloads._rereading
        assert task is not None
        release.set()
        await asyncio.wait_for(task, WAIT)

    asyncio.run(scenario())
    assert len(reads) == 2
