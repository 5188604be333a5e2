"""keepalived's vrrp_sync_group as values: instances that change state together (pure).

The classic NAT director has two instances: the outside VIP and the inside
gateway address the real servers route through.  If only one moved, replies
would leave by the other box: so they are grouped, and

- one member in FAULT puts every member in FAULT, and the group leaves FAULT
  only when no member's own tracking faults (:func:`group_fault`, which the
  instance adds to its tracking);
- one member becoming MASTER takes the members that are BACKUP along, and one
  becoming BACKUP the members that are MASTER (:func:`followers`);
- a member whose master went silent takes over only if every other member is
  MASTER or has lost its master too (:func:`may_take_over`).  keepalived
  "prefers backup state to avoid thrashing": when the peer still holds one
  member, taking over another alone would make the group fight itself.

The group's own state, for its notify hooks, is derived from its members'
(:func:`group_state`).  This module reads snapshots of the members; the daemon
(daemon/sync.py) takes them from the instance runners and carries the results out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lvsagent.vrrp.machine import State
from lvsagent.vrrp.track import TrackVerdict

__all__ = ["Member", "followers", "group_fault", "group_state", "may_take_over"]


@dataclass(frozen=True)
class Member:
    """One instance of a group as the group sees it now."""

    state: State
    wants_master: bool = False  # a BACKUP whose master is silent, held back by the group
    fault: bool = False  # its own tracking says FAULT
    why: str = ""  # and why


def _others(name: str, members: Mapping[str, Member]) -> Iterable[tuple[str, Member]]:
    return ((n, m) for n, m in members.items() if n != name)


def may_take_over(name: str, members: Mapping[str, Member]) -> bool:
    """Whether ``name``'s expired Master_Down_Timer may make it MASTER now."""
    return all(
        m.state == State.MASTER or (m.state == State.BACKUP and m.wants_master)
        for _, m in _others(name, members)
    )


def followers(name: str, entered: State, members: Mapping[str, Member]) -> dict[str, State]:
    """The members that must follow ``name`` into ``entered``, and where to."""
    if entered == State.MASTER:
        return {n: State.MASTER for n, m in _others(name, members) if m.state == State.BACKUP}
    if entered == State.BACKUP:
        return {n: State.BACKUP for n, m in _others(name, members) if m.state == State.MASTER}
    return {}


def group_fault(group: str, name: str, members: Mapping[str, Member]) -> TrackVerdict | None:
    """FAULT for ``name`` while another member's own tracking faults; None otherwise."""
    faulted = [f"{n} ({m.why})" for n, m in _others(name, members) if m.fault]
    if not faulted:
        return None
    return TrackVerdict(True, 0, f"sync group {group}: {', '.join(faulted)} in FAULT")


def group_state(states: Iterable[State]) -> State | None:
    """The group's state: FAULT if any member is, else the state all members share;
    None while they differ (a group on its way between two states)."""
    found = set(states)
    if State.FAULT in found:
        return State.FAULT
    if len(found) == 1:
        return found.pop()
    return None
