"""What the state machine asks of the daemon: values, carried out in list order (pure).

A decision is a list of these; the daemon's thin layer (daemon/instance.py) sends
the adverts and ARPs, moves the addresses and steps the loop guard in exactly
that order, which is what makes "guard engaged before the VIP goes" a property
of the list that unit tests can read.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    INITIALIZE = "INIT"
    BACKUP = "BACKUP"
    MASTER = "MASTER"
    FAULT = "FAULT"


@dataclass(frozen=True)
class SendAdvert:
    priority: int


@dataclass(frozen=True)
class AddAddresses:
    pass


@dataclass(frozen=True)
class RemoveAddresses:
    pass


@dataclass(frozen=True)
class SendGratuitousArp:
    repeat: int


@dataclass(frozen=True)
class SetLoopGuard:
    """Engage (BACKUP, FAULT, stopped) or release (MASTER) the two-box loop guard.

    Its place in the action list is the point: engaged before the addresses go,
    released only after they are up and announced, so no moment exists in which
    this box both balances and receives balanced traffic (see guard/driver.py).
    """

    engaged: bool


@dataclass(frozen=True)
class Transition:
    old: State
    new: State
    reason: str


Action = (
    SendAdvert | AddAddresses | RemoveAddresses | SendGratuitousArp | SetLoopGuard | Transition
)
