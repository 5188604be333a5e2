"""What tracked interfaces mean for a VRRP instance (pure).

keepalived's semantics, which operators already rely on: the instance's own
interface, and any tracked interface with weight 0, put the instance in FAULT
when down.  A negative weight is added to the priority while the interface is
down; a positive weight is added while it is up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lvsagent.config.schema import TrackInterface


@dataclass(frozen=True)
class TrackVerdict:
    fault: bool
    adjustment: int  # added to the configured priority
    why: str


def weigh(weight: int, up: bool) -> tuple[bool, int]:
    """keepalived's rule for one tracked object: (FAULT, priority adjustment).

    Weight 0: FAULT while down.  Positive: added while up.  Negative: added
    while down.  Interfaces and real servers (health/track.py) share it.
    """
    if weight == 0:
        return not up, 0
    return False, weight if (weight > 0) == up else 0


def evaluate(
    own_interface: str, tracked: tuple[TrackInterface, ...], up: Mapping[str, bool]
) -> TrackVerdict:
    fatal = [] if up.get(own_interface, False) else [own_interface]
    adjustment = 0
    changed = []
    for t in tracked:
        fault, adjust = weigh(t.weight, up.get(t.name, False))
        if fault:
            fatal.append(t.name)
        adjustment += adjust
        if adjust < 0:
            changed.append(f"{t.name} down (weight {t.weight})")
    if fatal:
        return TrackVerdict(True, adjustment, f"interface {', '.join(fatal)} down")
    if changed:
        return TrackVerdict(False, adjustment, f"tracked {', '.join(changed)}")
    return TrackVerdict(False, adjustment, "tracked interfaces up")
