"""The sync groups as the daemon runs them: members' snapshots in, follow orders and hooks out.

Every instance is a task of its own; a group's decision needs all members' states,
which are read here from their runners (one event loop: a read is consistent),
and carried out by posting to the members, each of which acts in its own task
and order.  The rules are vrrp/syncgroup.py's.

The group's hooks and FIFO line fire when the state the members share changes
(FAULT as soon as one member is in FAULT), and STOP when all stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Protocol

from lvsagent.config.schema import Config, SyncGroup
from lvsagent.vrrp import syncgroup
from lvsagent.vrrp.machine import State
from lvsagent.vrrp.track import TrackVerdict

__all__ = ["GroupNotify", "SyncGroups"]

log = logging.getLogger("lvsagent.vrrp")


class Runner(Protocol):
    """What the groups read from and post to an instance runner (daemon/instance.py)."""

    @property
    def own(self) -> TrackVerdict: ...

    def member(self) -> syncgroup.Member: ...

    def follow(self, state: State, why: str) -> None: ...

    def links_changed(self) -> None: ...


# The group entered a state: (group, state).  The daemon runs its hooks.
GroupNotify = Callable[[SyncGroup, State], None]


class SyncGroups:
    def __init__(self, config: Config, notify: GroupNotify | None = None) -> None:
        self.groups = {name: g for g in config.sync_groups for name in g.instances}
        self.notify = notify
        self.runners: Mapping[str, Runner] = {}
        self._state: dict[str, State | None] = {g.name: None for g in config.sync_groups}

    def reconfigure(self, config: Config) -> None:
        """A reload: new hooks (the daemon refuses a change of membership)."""
        self.groups = {name: g for g in config.sync_groups for name in g.instances}

    def bind(self, runners: Mapping[str, Runner]) -> None:
        """The runners by instance name, once they are all built and before any runs."""
        self.runners = runners

    def _members(self, group: SyncGroup) -> dict[str, syncgroup.Member]:
        return {n: self.runners[n].member() for n in group.instances if n in self.runners}

    def group_verdict(self, name: str) -> TrackVerdict | None:
        group = self.groups.get(name)
        if group is None:
            return None
        return syncgroup.group_fault(group.name, name, self._members(group))

    def may_take_over(self, name: str) -> bool:
        group = self.groups.get(name)
        if group is None:
            return True
        allowed = syncgroup.may_take_over(name, self._members(group))
        if not allowed:
            log.info(
                "%s: its master is silent, but sync group %s stays BACKUP until the other "
                "members' masters are too (keepalived's rule against a group split "
                "between the boxes)",
                name, group.name,
            )  # fmt: skip
        return allowed

    def transitioned(self, name: str, state: State) -> None:
        group = self.groups.get(name)
        if group is None:
            return
        members = self._members(group)
        for other, target in syncgroup.followers(name, state, members).items():
            self.runners[other].follow(
                target, f"sync group {group.name}: {name} became {state.value}"
            )
        self._group_changed(group, members)

    def own_fault_changed(self, name: str) -> None:
        """A member's own tracking went in or out of FAULT: the others re-evaluate theirs."""
        group = self.groups.get(name)
        if group is None:
            return
        for other in group.instances:
            if other != name and other in self.runners:
                self.runners[other].links_changed()

    def _group_changed(self, group: SyncGroup, members: Mapping[str, syncgroup.Member]) -> None:
        state = syncgroup.group_state(m.state for m in members.values())
        if state is None or state == self._state[group.name]:
            return
        self._state[group.name] = state
        log.warning(
            "sync group %s: %s (%s)",
            group.name,
            "STOP" if state == State.INITIALIZE else state.value,
            ", ".join(f"{n} {m.state.value}" for n, m in members.items()),
        )
        if self.notify is not None:
            self.notify(group, state)
