"""Fixtures for the namespace layer: a pair of hosts on one link, and their agents."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.netns.lab import Daemon, Netns, agent_config, namespaces, start_agent, veth


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.geteuid() != 0:
        raise pytest.UsageError("the netns tests need root (network namespaces, raw sockets)")


@dataclass
class Pair:
    """Two hosts, ``a`` (10.99.0.1) and ``b`` (10.99.0.2), on one veth link named eth0."""

    a: Netns
    b: Netns
    tmp: Path
    daemons: list[Daemon] = field(default_factory=list)

    def track(self, d: Daemon) -> Daemon:
        self.daemons.append(d)
        return d

    def configs(
        self,
        *,
        version: int = 2,
        advert_int: float = 1.0,
        extra: str = "",
        a_extra: str = "",
        b_extra: str = "",
    ) -> tuple[Path, Path]:
        """A (priority 100) and B (priority 50) on eth0; ``extra`` goes to both files."""
        return (
            agent_config(self.tmp / "a.toml", interface="eth0", priority=100, version=version,
                         advert_int=advert_int, extra=f"{extra}\n{a_extra}"),
            agent_config(self.tmp / "b.toml", interface="eth0", priority=50, version=version,
                         advert_int=advert_int, extra=f"{extra}\n{b_extra}"),
        )  # fmt: skip

    def settled_pair(self, config_a: Path, config_b: Path) -> tuple[Daemon, Daemon]:
        """A as master first, then B as its backup: a known state to test from.

        Started together, whichever process happens to be up first may claim
        mastership for a moment; tests of what follows must not start there.
        """
        da = self.track(start_agent(self.a, config_a, "agent-a"))
        da.wait_for(r"-> MASTER", 10)
        db = self.track(start_agent(self.b, config_b, "agent-b"))
        db.wait_for(r"INIT -> BACKUP", 10)
        db.wait_for(r"master is 10\.99\.0\.1 ", 10)
        return da, db


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    with namespaces("a", "b") as (a, b):
        veth(a, "eth0", "10.99.0.1/24", b, "eth0", "10.99.0.2/24")
        p = Pair(a, b, tmp_path)
        try:
            yield p
        finally:
            for d in p.daemons:
                d.stop()


@pytest.fixture
def keepalived_bin() -> str:
    path = shutil.which("keepalived") or "/usr/sbin/keepalived"
    if not Path(path).exists():
        raise pytest.UsageError("keepalived is not installed: run `make deps`")
    return path
