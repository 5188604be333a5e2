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
    own_interface: str, tracked: tuple[TrackInterface, ...], up: Mapping[str, bool | None]
) -> TrackVerdict:
    """``up`` holds each interface's state: None for one that does not exist.

    A missing interface counts as down, as in keepalived, but is named as missing:
    an operator told "down" looks at cables, while the fix is the config or the
    interface's creation.
    """
    down: list[str] = []
    gone: list[str] = []

    def fatal(name: str) -> None:
        (gone if up.get(name) is None else down).append(name)

    if not up.get(own_interface):
        fatal(own_interface)
    adjustment = 0
    changed = []
    for t in tracked:
        state = up.get(t.name)
        fault, adjust = weigh(t.weight, bool(state))
        if fault:
            fatal(t.name)
        adjustment += adjust
        if adjust < 0:
            what = "does not exist" if state is None else "down"
            changed.append(f"{t.name} {what} (weight {t.weight})")
    if down or gone:
        why = [f"interface {', '.join(down)} down"] if down else []
        why += [f"interface {', '.join(gone)} does not exist"] if gone else []
        return TrackVerdict(True, adjustment, "; ".join(why))
    if changed:
        return TrackVerdict(False, adjustment, f"tracked {', '.join(changed)}")
    return TrackVerdict(False, adjustment, "tracked interfaces up")
