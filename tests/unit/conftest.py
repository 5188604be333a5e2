"""Unit tests never reach the host's nftables through the loop guard.

The guard keeps table ``ip lvsagent_notrack`` with real libnftables calls of its own;
a unit test that drives LoopGuard.check() would otherwise write that table into the
namespace the tests run in (the host's).  Every unit test gets a recording stand-in.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import lvsagent.guard.driver as guard_module
from lvsagent.netfilter.notrack import CheckTarget


class RecordingUntracked:
    """Records what the guard asks of the notrack table; ``fail`` makes check() refuse."""

    def __init__(self, targets: frozenset[CheckTarget]) -> None:
        self.targets = targets
        self.checks = 0
        self.fail: OSError | None = None

    def check(self) -> bool:
        self.checks += 1
        if self.fail is not None:
            raise self.fail
        return False

    def reconfigure(self, targets: frozenset[CheckTarget]) -> None:
        self.targets = targets

    def remove(self) -> None:
        self.targets = frozenset()


@pytest.fixture(autouse=True)
def no_host_notrack_table(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(guard_module, "Untracked", RecordingUntracked)
    yield
