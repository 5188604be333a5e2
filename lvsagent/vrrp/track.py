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


def evaluate(
    own_interface: str, tracked: tuple[TrackInterface, ...], up: Mapping[str, bool]
) -> TrackVerdict:
    fatal = [] if up.get(own_interface, False) else [own_interface]
    adjustment = 0
    changed = []
    for t in tracked:
        is_up = up.get(t.name, False)
        if t.weight == 0:
            if not is_up:
                fatal.append(t.name)
        elif t.weight > 0 and is_up:
            adjustment += t.weight
        elif t.weight < 0 and not is_up:
            adjustment += t.weight
            changed.append(f"{t.name} down (weight {t.weight})")
    if fatal:
        return TrackVerdict(True, adjustment, f"interface {', '.join(fatal)} down")
    if changed:
        return TrackVerdict(False, adjustment, f"tracked {', '.join(changed)}")
    return TrackVerdict(False, adjustment, "tracked interfaces up")
